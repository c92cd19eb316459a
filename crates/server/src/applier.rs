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

use std::sync::{Arc, Mutex, RwLock};

use etcd_auth::AuthStore;
use etcd_lease::{LeaseError, Lessor};
use etcd_mvcc::{Batch, KvStore, Leases, MvccError};
use etcd_proto::etcdrs::{InternalRaftRequest, Member, MemberChange};
use etcd_proto::etcdserverpb::request_op::Request as Op;
use etcd_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use etcd_proto::mvccpb::Event;
use etcd_raftnode::{Entry, EntryType};
use etcd_storage::Backend;
use prost::Message;

use crate::alarms::{self, Alarms};
use crate::auth::{self, AuthReply};
use crate::membership::{self, MemberEvent};
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
    /// Result of a LeaseGrant.
    LeaseGrant(LeaseGrantResponse),
    /// Result of a LeaseRevoke.
    LeaseRevoke(LeaseRevokeResponse),
    /// Result of an alarm request.
    Alarm(AlarmResponse),
    /// Lease checkpoints were recorded.
    LeaseCheckpoint,
    /// A member's attributes were recorded.
    MemberAttributes,
    /// Result of an auth request.
    Auth(AuthReply),
    /// A membership change: the member it concerned and every member after it.
    Members {
        /// The added, removed, promoted or updated member.
        member: Member,
        /// The members after the change, by ID.
        members: Vec<Member>,
    },
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

/// The member's circumstances while a batch is applied. What the batch does to
/// the store never depends on them; only the lessor's deadlines do.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyContext {
    /// Commit the backend durably (before a snapshot releases WAL segments).
    pub durable: bool,
    /// A monotonic clock reading: starts the expiry clock of leases granted
    /// while this member's lessor is primary.
    pub now_ms: u64,
    /// Whether this member leads now.
    pub leading: bool,
    /// How much longer than their TTL leases live after a promotion (etcd: one
    /// election timeout).
    pub promote_extend_ms: u64,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Results of the requests in the batch, in log order.
    pub applied: Vec<Applied>,
    /// Watch events, grouped per revision, in order.
    pub events: Vec<(i64, Vec<Event>)>,
    /// Membership changes applied, in order, for Raft and the transport.
    pub member_events: Vec<MemberEvent>,
    /// The index of the last entry in the batch (the new consistent index).
    pub applied_index: u64,
    /// Its term.
    pub applied_term: u64,
    /// How long committing the backend transaction took (zero: it was parked).
    pub commit_duration: std::time::Duration,
    /// Whether a new leader's first entry promoted the lessor.
    pub promoted_lessor: bool,
}

/// Applies committed entries to the MVCC store and the lessor.
pub struct Applier {
    backend: Arc<Backend>,
    kv: Arc<KvStore>,
    lessor: Arc<Mutex<Lessor>>,
    auth: Arc<RwLock<AuthStore>>,
    consistent_index: u64,
    alarms: Alarms,
}

/// A storage failure during apply: the member cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum ApplyFailure {
    /// The MVCC store or backend failed.
    #[error("apply failed: {0}")]
    Mvcc(#[from] MvccError),
    /// The lease table failed.
    #[error("apply failed: {0}")]
    Lease(LeaseError),
    /// The members table failed.
    #[error("apply failed: members table: {0}")]
    Membership(String),
    /// The stored alarms failed.
    #[error("apply failed: alarms: {0}")]
    Alarms(String),
    /// The auth tables failed.
    #[error("apply failed: auth tables: {0}")]
    Auth(etcd_storage::StorageError),
}

impl Applier {
    /// Creates an applier that resumes after the backend's consistent index.
    pub fn new(
        backend: Arc<Backend>,
        kv: Arc<KvStore>,
        lessor: Arc<Mutex<Lessor>>,
        auth: Arc<RwLock<AuthStore>>,
    ) -> Result<Applier, ApplyFailure> {
        let (consistent_index, alarms) = {
            let txn = backend.begin_read().map_err(MvccError::from)?;
            let index = etcd_storage::consistent_index(&txn).map_err(MvccError::from)?.0;
            (index, Alarms::load(&txn).map_err(ApplyFailure::Alarms)?)
        };
        Ok(Applier { backend, kv, lessor, auth, consistent_index, alarms })
    }

    /// The index of the last entry whose effects are in the backend.
    pub fn consistent_index(&self) -> u64 {
        self.consistent_index
    }

    /// Re-reads the consistent index after the backend was replaced wholesale.
    pub fn reload(&mut self) -> Result<(), ApplyFailure> {
        let txn = self.backend.begin_read().map_err(MvccError::from)?;
        self.consistent_index = etcd_storage::consistent_index(&txn).map_err(MvccError::from)?.0;
        self.alarms = Alarms::load(&txn).map_err(ApplyFailure::Alarms)?;
        self.auth.write().expect("auth lock").reload(&txn).map_err(ApplyFailure::Auth)?;
        Ok(())
    }

    /// The auth store this applier changes.
    pub fn auth(&self) -> &Arc<RwLock<AuthStore>> {
        &self.auth
    }

    /// The lessor this applier attaches keys in.
    pub fn lessor(&self) -> &Arc<Mutex<Lessor>> {
        &self.lessor
    }

    /// Applies a batch of committed entries in one backend transaction.
    pub fn apply(
        &mut self,
        entries: &[Entry],
        context: &ApplyContext,
    ) -> Result<BatchOutcome, ApplyFailure> {
        let ApplyContext { durable, now_ms, leading, promote_extend_ms } = *context;
        let mut outcome = BatchOutcome::default();
        let fresh: Vec<&Entry> =
            entries.iter().filter(|e| e.index > self.consistent_index).collect();
        let Some(last) = fresh.last() else {
            return Ok(outcome);
        };
        let mut batch = self.kv.begin_batch(&self.backend)?;
        for entry in &fresh {
            if entry.get_entry_type() != EntryType::EntryNormal {
                apply_conf_change(&mut batch, entry, &mut outcome)?;
                continue;
            }
            if entry.data.is_empty() {
                // A new leader's first entry: once it applied everything from the
                // earlier terms, its lessor starts tracking deadlines (etcd's
                // promotion point), so grants applied after it get their full TTL.
                if leading {
                    self.lessor
                        .lock()
                        .expect("lessor lock")
                        .promote_with_extend(now_ms, promote_extend_ms);
                    outcome.promoted_lessor = true;
                }
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
            let mut lessor = self.lessor.lock().expect("lessor lock");
            let result = if let Some(change) = &request.member_change {
                membership_result(
                    membership::apply_change(batch.write_txn(), change)?,
                    &mut outcome,
                )
            } else if auth::is_auth_request(&request) {
                let mut store = self.auth.write().expect("auth lock");
                auth::apply(&mut store, batch.write_txn(), &request, entry.index, now_ms)
                    .map_err(ApplyFailure::Auth)?
                    .map(Response::Auth)
            } else {
                let store = self.auth.read().expect("auth lock");
                apply_request(&mut batch, &mut lessor, &mut self.alarms, &store, request, now_ms)?
            };
            for change in batch.take_lease_changes() {
                lessor.detach(change.old_lease, &change.key);
                lessor.attach(change.new_lease, &change.key);
            }
            outcome.applied.push(Applied { id, result, revision: batch.revision() });
        }
        etcd_storage::set_consistent_index(batch.write_txn(), last.index, last.term)
            .map_err(MvccError::from)?;
        let committing = std::time::Instant::now();
        let finished = batch.commit(durable)?;
        outcome.events = finished.events;
        if finished.committed {
            outcome.commit_duration = committing.elapsed();
        }
        self.consistent_index = last.index;
        outcome.applied_index = last.index;
        outcome.applied_term = last.term;
        Ok(outcome)
    }
}

/// A conf-change entry: its context says which member changes; Raft's own
/// encoding in `data` is never decoded (it came over the network).
fn apply_conf_change(
    batch: &mut Batch<'_>,
    entry: &Entry,
    outcome: &mut BatchOutcome,
) -> Result<(), ApplyFailure> {
    if entry.context.is_empty() {
        return Ok(());
    }
    let change = match MemberChange::decode(entry.context.as_ref()) {
        Ok(change) => change,
        Err(err) => {
            panic!("invariant: conf change entry {} carries no MemberChange: {err}", entry.index)
        }
    };
    let id = change.header.as_ref().map_or(0, |h| h.id);
    let result = membership_result(membership::apply_change(batch.write_txn(), &change)?, outcome);
    outcome.applied.push(Applied { id, result, revision: batch.revision() });
    Ok(())
}

fn membership_result(
    result: Result<membership::Changed, ServerError>,
    outcome: &mut BatchOutcome,
) -> Result<Response, ServerError> {
    let (members, member, event) = result?;
    outcome.member_events.push(event);
    Ok(Response::Members { member, members })
}

fn client_result<T>(
    result: Result<T, MvccError>,
    wrap: fn(T) -> Response,
) -> Result<Result<Response, ServerError>, ApplyFailure> {
    match result {
        Ok(value) => Ok(Ok(wrap(value))),
        Err(err) => match ServerError::from_mvcc(&err) {
            Some(client) => Ok(Err(client)),
            None => Err(ApplyFailure::Mvcc(err)),
        },
    }
}

fn lease_result<T>(result: Result<T, LeaseError>) -> Result<Result<T, ServerError>, ApplyFailure> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(err) => match ServerError::from_lease(&err) {
            Some(client) => Ok(Err(client)),
            None => Err(ApplyFailure::Lease(err)),
        },
    }
}

/// Revokes a lease: its keys are deleted in ONE revision (as etcd does), which
/// produces their delete events for watchers.
fn revoke(
    batch: &mut Batch<'_>,
    lessor: &mut Lessor,
    id: i64,
) -> Result<Result<Response, ServerError>, ApplyFailure> {
    let keys = match lease_result(lessor.revoke(batch.write_txn(), id))? {
        Ok(keys) => keys,
        Err(client) => return Ok(Err(client)),
    };
    if !keys.is_empty() {
        let deletes = keys
            .into_iter()
            .map(|key| RequestOp {
                request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                    key,
                    ..Default::default()
                })),
            })
            .collect();
        let txn = TxnRequest { compare: vec![], success: deletes, failure: vec![] };
        if let Err(err) = batch.txn(&txn, &|_| true) {
            return Err(ApplyFailure::Mvcc(err));
        }
    }
    Ok(Ok(Response::LeaseRevoke(LeaseRevokeResponse::default())))
}

/// The lessor as the store sees it while applying: which leases exist and
/// which lease each key is attached to (so a put need not read its old value).
struct LessorLeases<'a>(&'a Lessor);

impl Leases for LessorLeases<'_> {
    fn exists(&self, id: i64) -> bool {
        self.0.exists(id)
    }

    fn lease_of(&self, key: &[u8]) -> Option<i64> {
        Some(self.0.lease_of(key))
    }
}

fn apply_request(
    batch: &mut Batch<'_>,
    lessor: &mut Lessor,
    alarms: &mut Alarms,
    auth_store: &AuthStore,
    request: InternalRaftRequest,
    now_ms: u64,
) -> Result<Result<Response, ServerError>, ApplyFailure> {
    // etcd's order: the CORRUPT gate, the NOSPACE gate, the auth checks, the request.
    if alarms.corrupt() {
        let writes = request.put.is_some()
            || request.delete_range.is_some()
            || request.txn.is_some()
            || request.compaction.is_some()
            || request.lease_grant.is_some()
            || request.lease_revoke.is_some();
        if writes {
            return Ok(Err(ServerError::Corrupt));
        }
    }
    if alarms.no_space() {
        let grows = request.put.is_some()
            || request.lease_grant.is_some()
            || request.txn.as_ref().is_some_and(alarms::txn_puts);
        if grows {
            return Ok(Err(ServerError::NoSpace));
        }
    }
    if let Err(err) = auth::check_request(auth_store, lessor, &request) {
        return Ok(Err(ServerError::Auth(err)));
    }
    if let Some(alarm) = request.alarm {
        let response = alarms.apply(batch.write_txn(), &alarm).map_err(ApplyFailure::Alarms)?;
        return Ok(Ok(Response::Alarm(response)));
    }
    let leases = LessorLeases(lessor);
    if let Some(put) = request.put {
        return client_result(batch.put(&put, &leases), Response::Put);
    }
    if let Some(delete) = request.delete_range {
        return client_result(batch.delete_range(&delete), Response::DeleteRange);
    }
    if let Some(txn) = request.txn {
        return client_result(batch.txn(&txn, &leases), Response::Txn);
    }
    if let Some(compaction) = request.compaction {
        return client_result(batch.compact(compaction.revision), Response::Compact);
    }
    if let Some(grant) = request.lease_grant {
        let granted = lease_result(lessor.grant(batch.write_txn(), grant.id, grant.ttl, now_ms))?;
        return Ok(granted.map(|info| {
            Response::LeaseGrant(LeaseGrantResponse {
                id: info.id,
                ttl: info.granted_ttl,
                ..Default::default()
            })
        }));
    }
    if let Some(checkpoint) = request.lease_checkpoint {
        for c in &checkpoint.checkpoints {
            let recorded = lessor.checkpoint(batch.write_txn(), c.id, c.remaining_ttl, now_ms);
            if let Err(client) = lease_result(recorded)? {
                return Ok(Err(client));
            }
        }
        return Ok(Ok(Response::LeaseCheckpoint));
    }
    if let Some(lease_revoke) = request.lease_revoke {
        return revoke(batch, lessor, lease_revoke.id);
    }
    if let Some(attributes) = request.member_attributes {
        return crate::membership::apply_attributes(batch.write_txn(), &attributes);
    }
    // A request kind this version does not apply: every member skips it alike.
    Ok(Err(ServerError::NotCapable))
}
