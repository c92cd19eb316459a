//! The apply batch: every mutation of the store happens inside one, and one
//! batch is one redb write transaction (see the visibility scheme in
//! `kvstore.rs`).
//!
//! Revision rule (etcd's): each Put, each DeleteRange that deletes at least
//! one key, and each Txn that changes something takes the next main
//! revision; the changes inside it get sub revisions 0, 1, 2, ...
//! Requests that change nothing do not consume a revision.
//!
//! Errors: `Compacted`, `FutureRev`, `LeaseNotFound` and `KeyNotFound` are
//! returned before anything is changed; the batch stays usable. A `Storage`
//! or `Corrupt` error may leave the request half-applied in the write
//! transaction: the batch is then poisoned, `commit` refuses, and it must be
//! dropped (which also undoes its index changes).

use std::collections::HashSet;
use std::sync::MutexGuard;

use etcd_proto::etcdserverpb::{
    CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use etcd_proto::mvccpb::{event::EventType, Event, KeyValue};
use etcd_storage::{schema, WriteTxn};
use prost::bytes::Bytes;
use prost::Message;

use crate::error::MvccError;
use crate::index::KeyRange;
use crate::kvstore::{KvStore, OpCounters, PhysicalCompaction};
use crate::range;
use crate::recent::PARK_LIMIT_BYTES;
use crate::revision::Revision;

/// A key whose lease attachment changed in this batch (for the lessor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseChange {
    /// The key.
    pub key: Vec<u8>,
    /// Lease the key was attached to before the change (0 = none).
    pub old_lease: i64,
    /// Lease the key is attached to after the change (0 = none, e.g. deleted).
    pub new_lease: i64,
}

/// What applying a write asks of the caller's leases.
pub trait Leases {
    /// Whether lease `id` is granted.
    fn exists(&self, id: i64) -> bool;

    /// The lease `key` is attached to now (0 for none), or `None` when this
    /// view cannot tell; a put then reads the key's previous value for it.
    fn lease_of(&self, _key: &[u8]) -> Option<i64> {
        None
    }
}

/// A bare existence check (tests, and writes that attach no lease).
impl<F: Fn(i64) -> bool> Leases for F {
    fn exists(&self, id: i64) -> bool {
        self(id)
    }
}

/// What [`Batch::commit`] did.
#[derive(Debug)]
pub struct Finished {
    /// The batch's events grouped per revision, in revision order.
    pub events: Vec<(i64, Vec<Event>)>,
    /// Whether the backend committed (otherwise the transaction is parked).
    pub committed: bool,
}

/// The changes of one request (one main revision) being applied.
pub(crate) struct Op {
    pub main: i64,
    pub events: Vec<Event>,
}

/// One apply batch. Created by [`KvStore::begin_batch`]; at most one exists at a time.
pub struct Batch<'a> {
    pub(crate) store: &'a KvStore,
    _exclusive: MutexGuard<'a, ()>,
    txn: Option<WriteTxn>,
    /// Published revision when the batch began; index revisions above it are this batch's.
    base_rev: i64,
    /// Revision after the requests applied so far.
    pub(crate) rev: i64,
    /// Compacted revision including a compaction done in this batch.
    pub(crate) compact_rev: i64,
    pending_compact: Option<i64>,
    touched: HashSet<Vec<u8>>,
    /// Encodings of the revisions put, for readers while the transaction is parked.
    encoded: Vec<(Revision, Bytes)>,
    events: Vec<(i64, Vec<Event>)>,
    lease_changes: Vec<LeaseChange>,
    poisoned: bool,
    finished: bool,
    /// Whether the transaction holds parked writes of earlier batches.
    resumed: bool,
    /// Whether [`Batch::write_txn`] was handed out (for writes of the caller's).
    written_through: std::cell::Cell<bool>,
}

impl KvStore {
    /// Starts the apply batch. `backend` must be the backend the store was
    /// opened on (it is accepted for symmetry with the server's call site;
    /// the store's own handle is used). Blocks while another batch is open.
    pub fn begin_batch(&self, backend: &etcd_storage::Backend) -> Result<Batch<'_>, MvccError> {
        debug_assert!(
            std::ptr::eq(backend, &*self.backend),
            "begin_batch called with a different backend"
        );
        let guard = self.batch_lock.lock().unwrap_or_else(|e| e.into_inner());
        let txn = self.backend.begin_write()?;
        let resumed = txn.mark() > self.backend.committed_mark();
        let (rev, compact_rev) = self.revisions();
        Ok(Batch {
            store: self,
            _exclusive: guard,
            txn: Some(txn),
            base_rev: rev,
            rev,
            compact_rev,
            pending_compact: None,
            touched: HashSet::new(),
            encoded: Vec::new(),
            events: Vec::new(),
            lease_changes: Vec::new(),
            poisoned: false,
            finished: false,
            resumed,
            written_through: std::cell::Cell::new(false),
        })
    }
}

impl<'a> Batch<'a> {
    /// The redb write transaction, for the server's own writes (consistent
    /// index, members, leases) that must commit atomically with this batch.
    pub fn write_txn(&self) -> &WriteTxn {
        self.written_through.set(true);
        self.tx()
    }

    /// The write transaction, for the batch's own reads and writes.
    pub(crate) fn tx(&self) -> &WriteTxn {
        self.txn.as_ref().expect("write transaction present until commit")
    }

    /// Whether this batch may have changed anything in its transaction (a
    /// storage error may have left part of a write behind).
    fn changed(&self) -> bool {
        !self.touched.is_empty()
            || self.pending_compact.is_some()
            || self.written_through.get()
            || self.poisoned
    }

    /// Store revision after the requests applied so far (the header revision
    /// of the response to the request just applied).
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// Compacted revision including a compaction applied in this batch (0 if never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev.max(0)
    }

    /// Takes the lease attachment changes recorded since the last call.
    pub fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }

    pub(crate) fn guard<T>(&mut self, r: Result<T, MvccError>) -> Result<T, MvccError> {
        if matches!(r, Err(MvccError::Storage(_) | MvccError::Corrupt(_))) {
            self.poisoned = true;
        }
        r
    }

    pub(crate) fn begin_op(&self) -> Op {
        Op { main: self.rev + 1, events: Vec::new() }
    }

    pub(crate) fn end_op(&mut self, op: Op) {
        if !op.events.is_empty() {
            self.rev = op.main;
            self.events.push((op.main, op.events));
        }
    }

    /// The revision reads inside `op` are served at: the op's own revision
    /// once it has changed something (read-your-writes), else the batch's.
    pub(crate) fn read_rev(&self, op: &Op) -> i64 {
        if op.events.is_empty() {
            self.rev
        } else {
            op.main
        }
    }

    /// Whether `key` exists at the batch's current revision.
    pub(crate) fn key_exists(&self, key: &[u8]) -> bool {
        self.store.read_shared().index.get(key, self.rev).is_some()
    }

    /// Applies a Put. A non-zero lease must exist in `leases`.
    pub fn put(&mut self, req: &PutRequest, leases: &dyn Leases) -> Result<PutResponse, MvccError> {
        if req.lease != 0 && !leases.exists(req.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        if (req.ignore_value || req.ignore_lease) && !self.key_exists(&req.key) {
            return Err(MvccError::KeyNotFound);
        }
        let mut op = self.begin_op();
        let r = self.put_in(&mut op, req, leases);
        let r = self.guard(r);
        self.end_op(op);
        r
    }

    /// Applies a DeleteRange (`deleted == 0` consumes no revision).
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let mut op = self.begin_op();
        let r = self.delete_in(&mut op, req);
        let r = self.guard(r);
        self.end_op(op);
        r
    }

    /// Reads inside the batch: sees every request applied so far.
    pub fn range(&mut self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let op = self.begin_op();
        let r = self.range_in(&op, req);
        self.guard(r)
    }

    pub(crate) fn range_in(&self, op: &Op, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        OpCounters::count(&self.store.ops.ranges);
        let at = self.read_rev(op);
        let plan = {
            let g = self.store.read_shared();
            range::plan(req, &g.index, at, self.compact_rev)?
        };
        let kvs = range::fetch(self.tx(), &plan.revs)?;
        Ok(range::finish(req, &plan, kvs))
    }

    /// The live entries of a range at the op's read revision, with values.
    fn live_kvs(&self, op: &Op, range: KeyRange<'_>) -> Result<Vec<KeyValue>, MvccError> {
        let at = self.read_rev(op);
        let revs = self.store.read_shared().index.revisions(range, at);
        range::fetch(self.tx(), &revs)
    }

    /// Put inside an op; key existence and lease checks are the caller's.
    ///
    /// The previous value is read only when the request needs it (`prev_kv`,
    /// `ignore_value`, `ignore_lease`) or `leases` cannot name the key's old
    /// lease: the index knows the key's creation and version, and a watcher
    /// that wants the previous value reads it at the revision before (as
    /// etcd does), so most puts never touch the old value.
    pub(crate) fn put_in(
        &mut self,
        op: &mut Op,
        req: &PutRequest,
        leases: &dyn Leases,
    ) -> Result<PutResponse, MvccError> {
        OpCounters::count(&self.store.ops.puts);
        let rev = Revision::new(op.main, op.events.len() as i64);
        let known_lease = if req.prev_kv || req.ignore_value || req.ignore_lease {
            None
        } else {
            leases.lease_of(&req.key)
        };
        let (kv, old_lease, prev) = match known_lease {
            Some(old_lease) => {
                let live = self.store.read_shared().index.get(&req.key, self.read_rev(op));
                let kv = KeyValue {
                    key: req.key.clone(),
                    create_revision: live.map_or(rev.main, |l| l.created.main),
                    mod_revision: rev.main,
                    version: live.map_or(0, |l| l.version) + 1,
                    value: req.value.clone(),
                    lease: req.lease,
                };
                (kv, if live.is_some() { old_lease } else { 0 }, None)
            }
            None => {
                let prev = self.live_kvs(op, KeyRange::new(&req.key, &[]))?.pop();
                let (value, lease) = match (&prev, req.ignore_value, req.ignore_lease) {
                    (None, true, _) | (None, _, true) => return Err(MvccError::KeyNotFound),
                    (p, iv, il) => (
                        if iv {
                            p.as_ref().map(|p| p.value.clone()).unwrap_or_default()
                        } else {
                            req.value.clone()
                        },
                        if il { p.as_ref().map_or(0, |p| p.lease) } else { req.lease },
                    ),
                };
                let kv = KeyValue {
                    key: req.key.clone(),
                    create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
                    mod_revision: rev.main,
                    version: prev.as_ref().map_or(0, |p| p.version) + 1,
                    value,
                    lease,
                };
                (kv, prev.as_ref().map_or(0, |p| p.lease), prev)
            }
        };
        let lease = kv.lease;
        let encoded = kv.encode_to_vec();
        self.tx().key_put(&rev.to_key(false), &encoded)?;
        self.encoded.push((rev, Bytes::from(encoded)));
        self.store.write_shared().index.put(&req.key, rev);
        self.touched.insert(req.key.clone());
        if old_lease != 0 || lease != 0 {
            self.lease_changes.push(LeaseChange {
                key: req.key.clone(),
                old_lease,
                new_lease: lease,
            });
        }
        op.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(PutResponse { header: None, prev_kv: if req.prev_kv { prev } else { None } })
    }

    pub(crate) fn delete_in(
        &mut self,
        op: &mut Op,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        OpCounters::count(&self.store.ops.deletes);
        let prev = self.live_kvs(op, KeyRange::new(&req.key, &req.range_end))?;
        for kv in &prev {
            let rev = Revision::new(op.main, op.events.len() as i64);
            let tomb = KeyValue { key: kv.key.clone(), ..Default::default() };
            self.tx().key_put(&rev.to_key(true), &tomb.encode_to_vec())?;
            if !self.store.write_shared().index.tombstone(&kv.key, rev) {
                return Err(MvccError::Corrupt("tombstone of a key that is not live".into()));
            }
            self.touched.insert(kv.key.clone());
            if kv.lease != 0 {
                self.lease_changes.push(LeaseChange {
                    key: kv.key.clone(),
                    old_lease: kv.lease,
                    new_lease: 0,
                });
            }
            op.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue { mod_revision: rev.main, ..tomb }),
                prev_kv: Some(kv.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: prev.len() as i64,
            prev_kvs: if req.prev_kv { prev } else { Vec::new() },
        })
    }

    /// Applies a Txn (see `txn.rs` for the rules).
    pub fn txn(&mut self, req: &TxnRequest, leases: &dyn Leases) -> Result<TxnResponse, MvccError> {
        let r = self.apply_txn_request(req, leases);
        if r.as_ref().is_ok_and(|resp| req.compare.len() + resp.responses.len() > 1) {
            OpCounters::count(&self.store.ops.txns);
        }
        self.guard(r)
    }

    /// Compacts the store at `rev`: every revision `<= rev` that is not the
    /// newest revision `<= rev` of a key still alive at `rev` is removed.
    /// Reads below `rev` fail with `Compacted` from now on (in this batch) and
    /// for readers once the batch commits. Does not consume a revision.
    pub fn compact(&mut self, rev: i64) -> Result<CompactionResponse, MvccError> {
        if rev <= self.compact_rev {
            return Err(MvccError::Compacted);
        }
        if rev > self.rev {
            return Err(MvccError::FutureRev);
        }
        let r = self
            .tx()
            .meta_put(schema::META_SCHEDULED_COMPACT_REV, &Revision::new(rev, 0).to_key(false));
        self.guard(r.map_err(MvccError::from))?;
        self.compact_rev = rev;
        self.pending_compact = Some(rev);
        Ok(CompactionResponse { header: None })
    }

    /// Ends the batch and publishes its revision (and compaction) to readers:
    /// commits the write transaction when asked to be durable, when it
    /// compacts, or when the encodings readers would otherwise be served from
    /// memory pass [`PARK_LIMIT_BYTES`]; otherwise parks it (see `recent.rs`),
    /// and a later batch or a reader that needs the backend itself commits it.
    /// Returns the events of the batch grouped per revision, in revision
    /// order. Each event carries `prev_kv` (the key's previous value, if it
    /// existed); a watcher that did not ask for it must clear it. A Delete
    /// event's `kv` holds the key and the deletion revision as `mod_revision`,
    /// as etcd's does.
    pub fn commit(mut self, durable: bool) -> Result<Finished, MvccError> {
        if self.poisoned {
            return Err(MvccError::Corrupt(
                "batch poisoned by an earlier storage error; drop it".into(),
            ));
        }
        let mut txn = self.txn.take().expect("write transaction present until commit");
        txn.set_mark(self.rev);
        let store = self.store;
        let encoded = std::mem::take(&mut self.encoded);
        let encoded_bytes: usize = encoded.iter().map(|(_, e)| e.len()).sum();
        if !durable && self.pending_compact.is_none() {
            let mut g = store.write_shared();
            if g.recent.bytes() + encoded_bytes <= PARK_LIMIT_BYTES {
                assert!(self.rev >= g.current_rev, "invariant: revisions only grow");
                g.recent.add(encoded);
                g.recent.trim(store.backend.committed_mark());
                g.current_rev = self.rev;
                drop(g);
                txn.park();
                self.finished = true;
                return Ok(Finished { events: std::mem::take(&mut self.events), committed: false });
            }
        }
        if let Some(c) = self.pending_compact {
            let mut g = store.write_shared();
            if let Err(e) = txn.commit(durable) {
                g.index.rollback(self.touched.iter().map(Vec::as_slice), self.base_rev);
                self.finished = true;
                return Err(e.into());
            }
            let keep = g.index.compact(c);
            g.compact_rev = c;
            g.current_rev = self.rev;
            g.recent.clear();
            // A compaction still removing rows is superseded: this one's
            // batches start over and remove what the older one would have.
            *store.physical.lock().expect("compaction lock poisoned") =
                Some(PhysicalCompaction { rev: c, keep, resume: Vec::new() });
        } else {
            if let Err(e) = txn.commit(durable) {
                return Err(e.into()); // Drop undoes the index changes
            }
            let mut g = store.write_shared();
            g.current_rev = self.rev;
            g.recent.clear();
        }
        self.finished = true;
        Ok(Finished { events: std::mem::take(&mut self.events), committed: true })
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if !self.changed() {
            // Nothing of this batch to undo: the parked writes stay parked.
            if let Some(txn) = self.txn.take() {
                txn.park();
            }
            return;
        }
        // Aborts the transaction, with the parked writes of earlier batches it
        // resumed, whose revisions were published.
        drop(self.txn.take());
        if self.resumed {
            // Back to the last commit: the index is rebuilt from the backend
            // (a storage failure's path; the member stops after it).
            if let Err(e) = self.store.reload_unlocked() {
                panic!("failed to reload the store after a discarded batch: {e}");
            }
        } else if !self.touched.is_empty() {
            let mut g = self.store.write_shared();
            g.index.rollback(self.touched.iter().map(Vec::as_slice), self.base_rev);
        }
    }
}
