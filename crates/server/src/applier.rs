//! The applier: committed Raft entries in, state changes and results out.
//!
//! A batch of entries is applied in ONE backend write transaction, and the
//! consistent index (the index of the last applied entry) is written into that same
//! transaction. After a crash the backend therefore holds exactly the effects of
//! the entries up to its consistent index, and replaying the WAL from there applies
//! every later entry exactly once. (etcd 3.5's data-loss bug came from writing the
//! consistent index outside the apply transaction.)
//!
//! Results are deterministic: every member computes the same result for the same
//! entry. Only a storage failure is an `Err`, and the caller must treat it as fatal.

use std::sync::Arc;

use etcd_mvcc::{Batch, KvStore, MvccError};
use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse,
};
use etcd_proto::mvccpb::Event;
use etcd_raftnode::{Entry, EntryType};
use etcd_storage::Backend;
use prost::Message;

use crate::ServerError;

/// The successful result of one applied request (headers are filled by the caller).
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Result of a Range inside the log (not used by the KV service, reads bypass Raft).
    Range(RangeResponse),
    /// Result of a Put.
    Put(PutResponse),
    /// Result of a DeleteRange.
    DeleteRange(DeleteRangeResponse),
    /// Result of a Txn.
    Txn(TxnResponse),
    /// Result of a Compact.
    Compact(CompactionResponse),
}

/// One applied request, for the waiter of the member that proposed it.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The proposal's request ID.
    pub id: u64,
    /// The outcome.
    pub result: Result<Response, ServerError>,
    /// The store revision right after this request.
    pub revision: i64,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Results of the requests in the batch, in log order.
    pub applied: Vec<Applied>,
    /// Watch events, grouped per revision, in order.
    pub events: Vec<(i64, Vec<Event>)>,
    /// The index of the last entry in the batch (the new consistent index).
    pub applied_index: u64,
    /// Its term.
    pub applied_term: u64,
}

/// Applies committed entries to the MVCC store.
pub struct Applier {
    backend: Arc<Backend>,
    kv: Arc<KvStore>,
    consistent_index: u64,
}

/// A storage failure during apply: the member cannot continue.
#[derive(Debug, thiserror::Error)]
#[error("apply failed: {0}")]
pub struct ApplyFailure(#[from] pub MvccError);

impl Applier {
    /// Creates an applier that resumes after the backend's consistent index.
    pub fn new(backend: Arc<Backend>, kv: Arc<KvStore>) -> Result<Applier, ApplyFailure> {
        let consistent_index = {
            let txn = backend.begin_read().map_err(MvccError::from)?;
            etcd_storage::consistent_index(&txn).map_err(MvccError::from)?.0
        };
        Ok(Applier { backend, kv, consistent_index })
    }

    /// The index of the last entry whose effects are in the backend.
    pub fn consistent_index(&self) -> u64 {
        self.consistent_index
    }

    /// Applies a batch of committed entries in one backend transaction. `durable`
    /// asks for an fsync of the backend (before a snapshot releases WAL segments).
    pub fn apply(
        &mut self,
        entries: &[Entry],
        durable: bool,
    ) -> Result<BatchOutcome, ApplyFailure> {
        let mut outcome = BatchOutcome::default();
        let fresh: Vec<&Entry> =
            entries.iter().filter(|e| e.index > self.consistent_index).collect();
        let Some(last) = fresh.last() else {
            return Ok(outcome);
        };
        let mut batch = self.kv.begin_batch(&self.backend)?;
        for entry in &fresh {
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let request = match InternalRaftRequest::decode(entry.data.as_ref()) {
                Ok(request) => request,
                Err(err) => panic!(
                    "invariant: committed entry {} is not an InternalRaftRequest: {err}",
                    entry.index
                ),
            };
            let id = request.header.as_ref().map_or(request.id, |h| h.id);
            let result = apply_request(&mut batch, request)?;
            outcome.applied.push(Applied { id, result, revision: batch.revision() });
        }
        etcd_storage::set_consistent_index(batch.write_txn(), last.index, last.term)
            .map_err(MvccError::from)?;
        outcome.events = batch.commit(durable)?;
        self.consistent_index = last.index;
        outcome.applied_index = last.index;
        outcome.applied_term = last.term;
        Ok(outcome)
    }
}

/// Leases are not implemented yet, so no lease exists.
fn no_lease_exists(_: i64) -> bool {
    false
}

fn client_result<T>(
    result: Result<T, MvccError>,
    wrap: fn(T) -> Response,
) -> Result<Result<Response, ServerError>, ApplyFailure> {
    match result {
        Ok(value) => Ok(Ok(wrap(value))),
        Err(err) => match ServerError::from_mvcc(&err) {
            Some(client) => Ok(Err(client)),
            None => Err(ApplyFailure(err)),
        },
    }
}

fn apply_request(
    batch: &mut Batch<'_>,
    request: InternalRaftRequest,
) -> Result<Result<Response, ServerError>, ApplyFailure> {
    if let Some(put) = request.put {
        return client_result(batch.put(&put, &no_lease_exists), Response::Put);
    }
    if let Some(delete) = request.delete_range {
        return client_result(batch.delete_range(&delete), Response::DeleteRange);
    }
    if let Some(txn) = request.txn {
        return client_result(batch.txn(&txn, &no_lease_exists), Response::Txn);
    }
    if let Some(compaction) = request.compaction {
        return client_result(batch.compact(compaction.revision), Response::Compact);
    }
    // A request kind this version does not apply: every member skips it alike.
    Ok(Err(ServerError::NotCapable))
}
