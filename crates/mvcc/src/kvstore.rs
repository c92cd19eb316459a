//! The store: open (index rebuild), concurrent reads, HashKV.
//!
//! ## Visibility scheme
//!
//! `shared` (an `RwLock`) holds the key index together with the *published*
//! current and compacted revisions. The apply batch ([`crate::Batch`]) adds
//! its revisions to the shared index as it goes (each change under a short
//! write lock), but only publishes its new current revision when it ends:
//! after the redb commit, or, when it parks its write transaction instead,
//! together with the encodings of the revisions it put (`recent.rs`). A
//! reader takes the read lock, reads the published revisions, looks the
//! index up *at the published revision*, opens its redb read transaction and
//! takes the parked encodings it needs, then drops the lock and fetches the
//! values. Unpublished revisions are newer than the published revision, so
//! the index lookup ignores them; every revision up to the published one is
//! in the read's snapshot or among the encodings it took.
//!
//! Readers that scan the `key` table instead (HashKV, watchers catching up
//! from the backend) hold batches off and commit the parked transaction
//! first.
//!
//! Compaction is the one change that removes data. A batch that compacts
//! records the compaction (`scheduledCompactRev`) in its write transaction
//! and changes the index only at commit, holding the write lock across the
//! redb commit, the index compaction and the publication of the new
//! compacted revision. So a reader holding the read lock sees either the old
//! index and compacted revision or both new; it never reads below the
//! compacted revision, so the rows still there do not matter to it. Those
//! rows go afterwards, in batches of their own transactions
//! ([`KvStore::compact_step`], etcd's `--experimental-compaction-batch-limit`),
//! so a compaction of millions of revisions never stalls the apply loop; the
//! last batch records `finishedCompactRev`, and a restart before it resumes
//! the batches.
//!
//! If a batch is dropped without committing, the revisions it added to the
//! index are removed again (the write transaction is discarded by redb). If
//! its transaction held parked writes of earlier batches, those are
//! discarded with it, and the store goes back to the last commit (a storage
//! failure's path: the member stops, and its WAL replays them).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use etcd_proto::etcdserverpb::{RangeRequest, RangeResponse};
use etcd_proto::mvccpb::{event::EventType, Event, KeyValue};
use etcd_storage::{schema, Backend, ReadTables, ReadTxn};

use crate::error::MvccError;
use crate::index::{Index, KeyRange};
use crate::key_index::KeyIndex;
use crate::kv_view::KvView;
use crate::range;
use crate::recent::{Recent, Values};
use crate::revision::Revision;

/// State shared between readers and the batch.
#[derive(Debug)]
pub(crate) struct Shared {
    pub index: Index,
    /// Newest committed revision (what readers see).
    pub current_rev: i64,
    /// Revision of the last compaction; -1 if the store was never compacted (as in etcd).
    pub compact_rev: i64,
    /// Encodings of published revisions a commit may not cover yet (`recent.rs`).
    pub recent: Recent,
}

/// The result of [`KvStore::hash_kv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32C (Castagnoli) over the `key` table bucket name and the
    /// key/value bytes of every revision up to `hash_revision` that a
    /// compaction at `hash_revision` would keep (etcd's HashByRev).
    pub hash: u32,
    /// The store's compacted revision (-1 if never compacted, as etcd reports it).
    pub compact_revision: i64,
    /// The revision hashed up to.
    pub hash_revision: i64,
    /// The store's current revision when the hash was taken (the response header revision in etcd).
    pub current_revision: i64,
}

/// The multi-version key-value store. `Send + Sync`: share it as `Arc<KvStore>`.
#[derive(Debug)]
pub struct KvStore {
    pub(crate) backend: Arc<Backend>,
    pub(crate) shared: RwLock<Shared>,
    pub(crate) batch_lock: Mutex<()>,
    /// The compaction whose rows are still being removed. Locked after
    /// `batch_lock` and `shared`, never before.
    pub(crate) physical: Mutex<Option<PhysicalCompaction>>,
    pub(crate) ops: OpCounters,
}

/// A compaction whose index change is done and whose `key` rows are removed
/// batch by batch.
#[derive(Debug)]
pub(crate) struct PhysicalCompaction {
    /// The compacted revision.
    pub rev: i64,
    /// The revisions `<= rev` the compaction keeps.
    pub keep: HashSet<Revision>,
    /// The `key` table position the next batch starts at.
    pub resume: Vec<u8>,
}

/// What one [`KvStore::compact_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactStep {
    /// No compaction has rows left to remove.
    Idle,
    /// A batch removed; more follow.
    More {
        /// Rows this batch removed.
        removed: u64,
    },
    /// The last batch of a compaction removed.
    Finished {
        /// The compacted revision.
        revision: i64,
        /// Rows this batch removed.
        removed: u64,
    },
}

/// Rows of the `key` table one compaction batch visits when no limit is set
/// (etcd's default `--experimental-compaction-batch-limit`).
pub const DEFAULT_COMPACTION_BATCH_LIMIT: usize = 1000;

/// Operations the store has served, as etcd counts them for its
/// `etcd_mvcc_{range,put,delete,txn}_total` metrics: every range, put and
/// delete-range, inside txns too, and every txn of more than one operation.
#[derive(Debug, Default)]
pub(crate) struct OpCounters {
    pub ranges: std::sync::atomic::AtomicU64,
    pub puts: std::sync::atomic::AtomicU64,
    pub deletes: std::sync::atomic::AtomicU64,
    pub txns: std::sync::atomic::AtomicU64,
}

/// One chunk of a streamed range ([`KvStore::range_chunk`]).
#[derive(Debug)]
pub struct RangeChunk {
    /// The chunk's keys, in key order, unfiltered.
    pub kvs: Vec<KeyValue>,
    /// The first key of the next chunk (none: the range is done).
    pub next: Option<Vec<u8>>,
}

/// A reading of [`OpCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Ranges, committed reads and those inside txns.
    pub ranges: u64,
    /// Puts, inside txns too.
    pub puts: u64,
    /// Delete-ranges, inside txns too.
    pub deletes: u64,
    /// Txns of more than one compare or operation.
    pub txns: u64,
}

impl OpCounters {
    pub(crate) fn count(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl KvStore {
    /// Opens the store on `backend`, rebuilding the key index from the `key`
    /// table. The current revision is the newest stored revision, or the
    /// compacted revision if that is newer (compaction may have removed the
    /// newest rows), or 1 for an empty store (the first write gets revision 2).
    pub fn open(backend: Arc<Backend>) -> Result<KvStore, MvccError> {
        let (shared, physical) = load(&backend)?;
        Ok(KvStore {
            backend,
            shared: RwLock::new(shared),
            batch_lock: Mutex::new(()),
            physical: Mutex::new(physical),
            ops: OpCounters::default(),
        })
    }

    /// Rebuilds the index and revisions from the backend after its contents were
    /// replaced wholesale (a snapshot from the leader was installed).
    pub fn reload(&self) -> Result<(), MvccError> {
        let _no_batch = self.batch_lock.lock().expect("batch lock poisoned");
        self.reload_unlocked()
    }

    /// [`KvStore::reload`] for the holder of the batch lock.
    pub(crate) fn reload_unlocked(&self) -> Result<(), MvccError> {
        let (shared, physical) = load(&self.backend)?;
        *self.write_shared() = shared;
        *self.physical.lock().expect("compaction lock poisoned") = physical;
        Ok(())
    }

    /// The revision of the compaction whose rows are still being removed.
    pub fn compaction_in_progress(&self) -> Option<i64> {
        self.physical.lock().expect("compaction lock poisoned").as_ref().map(|p| p.rev)
    }

    /// Removes one batch of the rows a compaction left: visits at most `limit`
    /// rows of the `key` table in their own write transaction (not fsynced: a
    /// restart resumes from `scheduledCompactRev`), and records
    /// `finishedCompactRev` with the last batch. Waits while a batch is open.
    pub fn compact_step(&self, limit: usize) -> Result<CompactStep, MvccError> {
        let _no_batch = self.batch_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut physical = self.physical.lock().expect("compaction lock poisoned");
        let Some(p) = physical.as_mut() else {
            return Ok(CompactStep::Idle);
        };
        let end = Revision::new(p.rev + 1, 0).to_key(false);
        let txn = self.backend.begin_write()?;
        let keep = &p.keep;
        let retained = txn.key_retain_range(&p.resume, &end, limit.max(1), &mut |k| {
            Revision::from_key(k).is_some_and(|(r, _)| keep.contains(&r))
        })?;
        match retained.resume_after {
            Some(mut last) => {
                txn.commit(false)?;
                last.push(0); // the first key after it
                p.resume = last;
                Ok(CompactStep::More { removed: retained.removed })
            }
            None => {
                let rev = p.rev;
                txn.meta_put(
                    schema::META_FINISHED_COMPACT_REV,
                    &Revision::new(rev, 0).to_key(false),
                )?;
                txn.commit(false)?;
                *physical = None;
                Ok(CompactStep::Finished { revision: rev, removed: retained.removed })
            }
        }
    }

    /// Removes every row compactions left, batch after batch, and makes that
    /// durable (tools that need the compaction finished before they go on).
    pub fn finish_compaction(&self) -> Result<(), MvccError> {
        while self.compact_step(DEFAULT_COMPACTION_BATCH_LIMIT)? != CompactStep::Idle {}
        self.backend.begin_write()?.commit(true)?;
        Ok(())
    }
}

/// A compaction revision recorded in meta entry `name` (-1 if none).
fn meta_compaction(rtx: &ReadTxn, name: &str) -> Result<i64, MvccError> {
    match rtx.meta_get(name)? {
        None => Ok(-1),
        Some(b) => Ok(Revision::from_key(&b)
            .ok_or_else(|| MvccError::Corrupt(format!("bad {name}")))?
            .0
            .main),
    }
}

/// Reads the index and revisions a store on `backend` starts from, and the
/// compaction whose rows are left to remove, if any.
fn load(backend: &Backend) -> Result<(Shared, Option<PhysicalCompaction>), MvccError> {
    {
        let rtx = backend.begin_read()?;
        let mut compact_rev = meta_compaction(&rtx, schema::META_FINISHED_COMPACT_REV)?;
        let scheduled = meta_compaction(&rtx, schema::META_SCHEDULED_COMPACT_REV)?;
        let mut index = Index::new();
        let mut current_rev = 1i64;
        let mut last_main = i64::MIN;
        scan_revisions(&rtx, &[], None, &mut |rev, tombstone, v| {
            let kv = KvView::parse(v)?;
            assert!(rev.main >= last_main, "the key table is not in revision order");
            last_main = rev.main;
            current_rev = rev.main;
            match index.key_index_mut(kv.key) {
                Some(ki) if tombstone => {
                    ki.tombstone(rev);
                }
                Some(ki) => ki.put(rev),
                None if tombstone => {}
                None => index.insert(
                    kv.key.to_vec(),
                    KeyIndex::restore(Revision::new(kv.create_revision, 0), rev, kv.version),
                ),
            }
            Ok(true)
        })?;
        drop(rtx);
        let mut physical = None;
        if scheduled > compact_rev {
            // Stopped between the index change and the last batch: the index
            // is compacted again and the batches resume from the start.
            let keep = index.compact(scheduled);
            physical = Some(PhysicalCompaction { rev: scheduled, keep, resume: Vec::new() });
            compact_rev = scheduled;
        }
        let current_rev = current_rev.max(compact_rev);
        Ok((Shared { index, current_rev, compact_rev, recent: Recent::default() }, physical))
    }
}

/// Called with a row's revision, tombstone flag and encoded `KeyValue`;
/// returns whether to go on.
type RowVisitor<'a> = dyn FnMut(Revision, bool, &[u8]) -> Result<bool, MvccError> + 'a;

/// Visits the key table's rows in `[start, end)` (no upper bound: `None`) in
/// revision order, with each row's revision and tombstone flag; `f` says
/// whether to go on. A bad revision key, or an error from `f`, ends the scan
/// with that error.
fn scan_revisions(
    rtx: &impl ReadTables,
    start: &[u8],
    end: Option<&[u8]>,
    f: &mut RowVisitor<'_>,
) -> Result<(), MvccError> {
    let mut failed = None;
    rtx.key_scan(start, end, &mut |k, v| {
        let step = Revision::from_key(k)
            .ok_or_else(|| MvccError::Corrupt(format!("bad revision key {k:?}")))
            .and_then(|(rev, tombstone)| f(rev, tombstone, v));
        step.unwrap_or_else(|e| {
            failed = Some(e);
            false
        })
    })?;
    failed.map_or(Ok(()), Err)
}

impl KvStore {
    pub(crate) fn read_shared(&self) -> RwLockReadGuard<'_, Shared> {
        self.shared.read().expect("mvcc index lock poisoned")
    }

    pub(crate) fn write_shared(&self) -> RwLockWriteGuard<'_, Shared> {
        self.shared.write().expect("mvcc index lock poisoned")
    }

    /// Holds batches off and commits the parked write transaction: until the
    /// guard drops, a read transaction sees every published revision (for
    /// readers that scan the `key` table instead of fetching planned revisions).
    fn parked_committed(&self) -> Result<std::sync::MutexGuard<'_, ()>, MvccError> {
        let no_batch = self.batch_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.backend.flush()?;
        Ok(no_batch)
    }

    /// The backend this store was opened on.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Newest committed revision (1 for an empty store, as in etcd).
    pub fn current_revision(&self) -> i64 {
        self.read_shared().current_rev
    }

    /// Revision of the last compaction, 0 if the store was never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.read_shared().compact_rev.max(0)
    }

    /// `(current, compacted)` read together; compacted is -1 if never compacted.
    pub fn revisions(&self) -> (i64, i64) {
        let g = self.read_shared();
        (g.current_rev, g.compact_rev)
    }

    /// Answers a Range on the committed state (header left `None`; the
    /// header revision etcd sends is [`KvStore::current_revision`] as of the
    /// read, returned here as the second value).
    pub fn range_with_rev(&self, req: &RangeRequest) -> Result<(RangeResponse, i64), MvccError> {
        OpCounters::count(&self.ops.ranges);
        self.range_uncounted(req)
    }

    /// A range's answer already encoded, all but the header: the bytes of a
    /// `RangeResponse`'s `kvs`, `more` and `count` fields (prepending the
    /// encoded header gives the whole response), with the current revision.
    /// A plain range in key order is copied from the stored encodings, so a
    /// huge answer is held once, as bytes; any other is decoded, shaped and
    /// encoded.
    pub fn range_encoded(&self, req: &RangeRequest) -> Result<(Vec<u8>, i64), MvccError> {
        OpCounters::count(&self.ops.ranges);
        if !range::plain(req) {
            use prost::Message as _;
            let (response, current) = self.range_uncounted(req)?;
            debug_assert!(response.header.is_none());
            return Ok((response.encode_to_vec(), current));
        }
        let (plan, values, current) = self.plan_range(req)?;
        Ok((range::fetch_encoded(&values, req, &plan)?, current))
    }

    /// A range's plan under the index lock, with its values' source taken
    /// before the lock is let go, and the current revision: the read sees
    /// exactly the revision the plan was made at.
    fn plan_range(&self, req: &RangeRequest) -> Result<(range::RangePlan, Values, i64), MvccError> {
        let g = self.read_shared();
        let plan = range::plan(req, &g.index, g.current_rev, g.compact_rev)?;
        let values = g.recent.values(&self.backend, &plan.revs)?;
        Ok((plan, values, g.current_rev))
    }

    fn range_uncounted(&self, req: &RangeRequest) -> Result<(RangeResponse, i64), MvccError> {
        let (plan, values, current) = self.plan_range(req)?;
        let kvs = range::fetch(&values, &plan.revs)?;
        Ok((range::finish(req, &plan, kvs), current))
    }

    /// The revision a read asking for `req_rev` is served at (0: the current
    /// one), with the current revision: what a streamed range pins.
    pub fn read_revision(&self, req_rev: i64) -> Result<(i64, i64), MvccError> {
        let g = self.read_shared();
        let at = range::read_revision(req_rev, g.current_rev, g.compact_rev)?;
        Ok((at, g.current_rev))
    }

    /// Number of keys of `[key, range_end)` (etcd's encoding) that exist at `at`.
    pub fn count_at(&self, key: &[u8], range_end: &[u8], at: i64) -> Result<i64, MvccError> {
        let g = self.read_shared();
        range::read_revision(at, g.current_rev, g.compact_rev)?;
        Ok(g.index.count(KeyRange::new(key, range_end), at) as i64)
    }

    /// One chunk of a streamed range: at most `max` keys of `[from, range_end)`
    /// existing at `at`, in key order, with their values unless `keys_only`, not
    /// filtered; `next` is where the following chunk starts (none: the range is
    /// done). Each chunk is its own short read, so a stream over millions of keys
    /// holds one chunk at a time; a compaction past `at` meanwhile fails it.
    pub fn range_chunk(
        &self,
        from: &[u8],
        range_end: &[u8],
        at: i64,
        max: usize,
        keys_only: bool,
    ) -> Result<RangeChunk, MvccError> {
        OpCounters::count(&self.ops.ranges);
        let (found, revs, values) = {
            let g = self.read_shared();
            range::read_revision(at, g.current_rev, g.compact_rev)?;
            let found = g.index.range_limited(KeyRange::new(from, range_end), at, max);
            let revs: Vec<Revision> = found.iter().map(|(_, kr)| kr.modified).collect();
            let values = g.recent.values(&self.backend, &revs)?;
            (found, revs, values)
        };
        let mut kvs = range::fetch(&values, &revs)?;
        if keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        let next = match found.last() {
            Some((key, _)) if found.len() == max && !range_end.is_empty() => {
                let mut next = key.clone();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        Ok(RangeChunk { kvs, next })
    }

    /// The operations served so far (for etcd's mvcc metrics).
    pub fn op_counts(&self) -> OpCounts {
        use std::sync::atomic::Ordering::Relaxed;
        OpCounts {
            ranges: self.ops.ranges.load(Relaxed),
            puts: self.ops.puts.load(Relaxed),
            deletes: self.ops.deletes.load(Relaxed),
            txns: self.ops.txns.load(Relaxed),
        }
    }

    /// Answers a Range on the committed state; the header is left `None`.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.range_with_rev(req).map(|(r, _)| r)
    }

    /// etcd's HashKV: a hash of the MVCC history up to `rev` (0 = current).
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv, MvccError> {
        let (keep, rtx, current, compacted, rev) = {
            let _no_batch = self.parked_committed()?;
            let g = self.read_shared();
            let (current, compacted) = (g.current_rev, g.compact_rev);
            if rev > 0 && rev <= compacted {
                return Err(MvccError::Compacted);
            }
            if rev > 0 && rev > current {
                return Err(MvccError::FutureRev);
            }
            let rev = if rev == 0 { current } else { rev };
            let keep: HashSet<Revision> = g.index.keep(rev);
            (keep, self.backend.read_committed()?, current, compacted, rev)
        };
        let lower = Revision::new(compacted + 1, 0);
        let mut h = crc32c::crc32c(b"key");
        let mut bad = false;
        rtx.key_scan(&[], None, &mut |k, v| {
            let Some((r, _)) = Revision::from_key(k) else {
                bad = true;
                return false;
            };
            if r.main > rev {
                return false;
            }
            if r < lower && !keep.is_empty() && !keep.contains(&r) {
                return true;
            }
            h = crc32c::crc32c_append(h, k);
            h = crc32c::crc32c_append(h, v);
            true
        })?;
        if bad {
            return Err(MvccError::Corrupt("bad revision key in key table".into()));
        }
        Ok(HashKv {
            hash: h,
            compact_revision: compacted,
            hash_revision: rev,
            current_revision: current,
        })
    }

    /// Every change with `from <= main revision <= to` (`to` is capped at the
    /// current revision), in revision order, read from the backend (for
    /// watchers catching up). Delete events hold the key and the deletion
    /// revision; `prev_kv` is not filled. Fails with `Compacted` if `from` is
    /// below the compacted revision, as etcd's watch does. The compacted
    /// revision itself reads as its compaction leaves it, without its deletes,
    /// whether or not the compaction's batches have removed them yet.
    pub fn events_range(&self, from: i64, to: i64) -> Result<Vec<Event>, MvccError> {
        let (rtx, to, compacted) = {
            let _no_batch = self.parked_committed()?;
            let g = self.read_shared();
            if from < g.compact_rev {
                return Err(MvccError::Compacted);
            }
            (self.backend.read_committed()?, to.min(g.current_rev), g.compact_rev)
        };
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let start = Revision::new(from.max(0), 0).to_key(false);
        let end = Revision::new(to + 1, 0).to_key(false);
        scan_revisions(&rtx, &start, Some(&end), &mut |r, tombstone, v| {
            if tombstone && r.main <= compacted {
                return Ok(true); // a compaction at this revision removes it
            }
            let kv = range::decode_kv(v)?;
            out.push(if tombstone {
                Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue { mod_revision: r.main, ..kv }),
                    prev_kv: None,
                }
            } else {
                Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None }
            });
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every key live at the current revision that carries a lease, with its
    /// lease id, in key order (to re-attach keys to leases after a restart or
    /// a snapshot). Streams the key table in revision order, keeping only
    /// leased keys: memory follows the leased keys, not the database.
    pub fn leased_keys(&self) -> Result<Vec<(Vec<u8>, i64)>, MvccError> {
        let rtx = self.backend.begin_read()?;
        let mut leased: std::collections::BTreeMap<Vec<u8>, i64> = Default::default();
        scan_revisions(&rtx, &[], None, &mut |_, tombstone, v| {
            let kv = KvView::parse(v)?;
            if tombstone || kv.lease == 0 {
                leased.remove(kv.key);
            } else {
                leased.insert(kv.key.to_vec(), kv.lease);
            }
            Ok(true)
        })?;
        Ok(leased.into_iter().collect())
    }

    /// Number of keys with history in the index (live or awaiting compaction).
    pub fn index_len(&self) -> usize {
        self.read_shared().index.len()
    }
}
