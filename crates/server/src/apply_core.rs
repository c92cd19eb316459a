//! The apply half of a member, deterministic: committed entries in, state
//! changes out, and the schedule of durable backend commits and snapshots.
//! Time arrives as a millisecond argument. The daemon runs it on its apply
//! thread; the simulator calls it right after the Raft half hands entries on.
//!
//! The backend is made durable at least every `batch_interval_ms` or
//! `batch_limit` entries (etcd's bbolt batch); every `snapshot_count` entries
//! the batch is durable and a snapshot is due, which lets the log drop what the
//! backend now holds.

use std::sync::Arc;

use etcd_lease::Lessor;
use etcd_mvcc::KvStore;
use etcd_proto::etcdrs::Member;
use etcd_raftnode::Entry;
use etcd_storage::Backend;

use crate::applier::{ApplyFailure, BatchOutcome};
use crate::{Applier, ApplyContext};

/// How often the backend is made durable and snapshots are taken.
#[derive(Debug, Clone)]
pub struct ApplyCoreConfig {
    /// Entries between snapshots (etcd's `--snapshot-count`, at least 1).
    pub snapshot_count: u64,
    /// Entries between durable commits at most (`--backend-batch-limit`).
    pub batch_limit: u64,
    /// Milliseconds between durable commits at most (`--backend-batch-interval`).
    pub batch_interval_ms: u64,
    /// How much longer than their TTL leases live after a promotion (etcd: one
    /// election timeout).
    pub promote_extend_ms: u64,
    /// The lessor's minimum TTL in seconds, for leases recovered from a backend.
    pub min_lease_ttl_secs: i64,
    /// Whether and how the lessor checkpoints remaining TTLs.
    pub lease_checkpoint: Option<etcd_lease::Checkpointing>,
    /// How long simple auth tokens live, in milliseconds.
    pub auth_token_ttl_ms: u64,
    /// Rows of the `key` table one compaction batch visits
    /// (`--experimental-compaction-batch-limit`).
    pub compaction_batch_limit: usize,
}

/// What applying one batch did.
#[derive(Debug)]
pub struct ApplyResult {
    /// The applier's outcome: results, events, membership changes.
    pub outcome: BatchOutcome,
    /// A snapshot is due at this index and term: the backend is durable there.
    pub snapshot: Option<(u64, u64)>,
}

/// The apply half of one member.
pub struct ApplyCore {
    applier: Applier,
    kv: Arc<KvStore>,
    backend: Arc<Backend>,
    cfg: ApplyCoreConfig,
    snapshot_index: u64,
    /// Index and time of the last durable backend commit.
    durable_index: u64,
    durable_at: u64,
}

impl ApplyCore {
    /// Opens the apply half on a backend and its store: the lessor and the
    /// auth store are loaded from it, and applying resumes after its
    /// consistent index; the log's newest snapshot is at `snapshot_index`.
    pub fn open(
        kv: Arc<KvStore>,
        backend: Arc<Backend>,
        cfg: ApplyCoreConfig,
        snapshot_index: u64,
        now: u64,
    ) -> Result<ApplyCore, String> {
        let lessor = recover_lessor(&backend, &kv, &cfg)?;
        let auth = backend
            .begin_read()
            .and_then(|txn| etcd_auth::AuthStore::load(&txn, cfg.auth_token_ttl_ms))
            .map_err(|e| e.to_string())?;
        let applier = Applier::new(
            backend.clone(),
            kv.clone(),
            Arc::new(std::sync::Mutex::new(lessor)),
            Arc::new(std::sync::RwLock::new(auth)),
        )
        .map_err(|e| e.to_string())?;
        let durable_index = applier.consistent_index();
        Ok(ApplyCore { applier, kv, backend, cfg, snapshot_index, durable_index, durable_at: now })
    }

    /// The auth store the applier changes (shared with the API's checks).
    pub fn auth(&self) -> &Arc<std::sync::RwLock<etcd_auth::AuthStore>> {
        self.applier.auth()
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applier.consistent_index()
    }

    /// The store.
    pub fn kv(&self) -> &Arc<KvStore> {
        &self.kv
    }

    /// The lessor the applier attaches keys in.
    pub fn lessor(&self) -> &Arc<std::sync::Mutex<Lessor>> {
        self.applier.lessor()
    }

    /// Applies committed entries in one backend transaction. `leading`: whether
    /// this member leads now (only a leader's lessor tracks deadlines).
    pub fn apply(
        &mut self,
        entries: &[Entry],
        now: u64,
        leading: bool,
    ) -> Result<ApplyResult, ApplyFailure> {
        let last_index = entries.last().map_or(0, |e| e.index);
        let snapshot_due =
            last_index.saturating_sub(self.snapshot_index) >= self.cfg.snapshot_count;
        let durable = snapshot_due
            || last_index.saturating_sub(self.durable_index) >= self.cfg.batch_limit
            || now.saturating_sub(self.durable_at) >= self.cfg.batch_interval_ms;
        if !leading {
            // Deadlines are the leader's alone: a deposed leader's lessor stops
            // tracking them before it applies anything of the new term.
            let mut lessor = self.applier.lessor().lock().expect("lessor lock");
            if lessor.is_primary() {
                lessor.demote();
            }
        }
        let context = ApplyContext {
            durable,
            now_ms: now,
            leading,
            promote_extend_ms: self.cfg.promote_extend_ms,
        };
        let before = self.applier.consistent_index();
        let outcome = self.applier.apply(entries, &context)?;
        assert!(
            self.applier.consistent_index() >= before,
            "invariant: the consistent index only grows ({before} -> {})",
            self.applier.consistent_index()
        );
        if durable && outcome.applied_index > 0 {
            self.durable_index = outcome.applied_index;
            self.durable_at = now;
        }
        let mut snapshot = None;
        if snapshot_due && outcome.applied_index > 0 {
            self.snapshot_index = outcome.applied_index;
            snapshot = Some((outcome.applied_index, outcome.applied_term));
        }
        Ok(ApplyResult { outcome, snapshot })
    }

    /// When the backend is next due to be made durable with nothing to apply:
    /// `batch_interval_ms` after the last durable commit, if entries were
    /// applied since (etcd's batch transaction commits on its interval, idle or
    /// not). None: everything applied is durable.
    pub fn durable_due(&self) -> Option<u64> {
        (self.applier.consistent_index() > self.durable_index)
            .then(|| self.durable_at.saturating_add(self.cfg.batch_interval_ms))
    }

    /// Makes everything applied durable: commits the parked transaction, if
    /// any, with an fsync. Returns how long the commit took.
    pub fn make_durable(&mut self, now: u64) -> Result<std::time::Duration, String> {
        let started = std::time::Instant::now();
        self.backend
            .begin_write()
            .and_then(|txn| txn.commit(true))
            .map_err(|e| format!("failed to commit the backend: {e}"))?;
        self.durable_index = self.applier.consistent_index();
        self.durable_at = now;
        Ok(started.elapsed())
    }

    /// Removes one batch of the rows a compaction left ([`KvStore::compact_step`]);
    /// the shell calls it between applies while a compaction is in progress.
    pub fn compact_step(&mut self) -> Result<etcd_mvcc::CompactStep, String> {
        self.kv
            .compact_step(self.cfg.compaction_batch_limit)
            .map_err(|e| format!("failed to remove compacted revisions: {e}"))
    }

    /// Reloads everything derived from the backend after it was replaced with
    /// the leader's snapshot at `index`; returns the snapshot's members.
    pub fn installed(&mut self, index: u64) -> Result<Vec<Member>, String> {
        self.kv.reload().map_err(|e| format!("failed to load the installed snapshot: {e}"))?;
        self.applier.reload().map_err(|e| {
            format!("failed to read the installed snapshot's consistent index: {e}")
        })?;
        let lessor = recover_lessor(&self.backend, &self.kv, &self.cfg)
            .map_err(|e| format!("failed to load the installed snapshot's leases: {e}"))?;
        *self.applier.lessor().lock().expect("lessor lock") = lessor;
        let members = crate::membership::read(&self.backend)
            .map_err(|e| format!("failed to load the installed snapshot's members: {e}"))?;
        assert!(
            self.applier.consistent_index() >= index,
            "invariant: an installed snapshot holds its own index ({} < {index})",
            self.applier.consistent_index()
        );
        self.snapshot_index = index;
        self.durable_index = self.applier.consistent_index();
        Ok(members)
    }
}

/// Rebuilds the lessor from the backend (at start, or after an install),
/// re-attaching live keys.
pub fn recover_lessor(
    backend: &Backend,
    kv: &KvStore,
    cfg: &ApplyCoreConfig,
) -> Result<Lessor, String> {
    let keys = kv.leased_keys().map_err(|e| e.to_string())?;
    let txn = backend.begin_read().map_err(|e| e.to_string())?;
    let mut lessor =
        Lessor::recover(&txn, keys, cfg.min_lease_ttl_secs).map_err(|e| e.to_string())?;
    lessor.set_checkpointing(cfg.lease_checkpoint);
    Ok(lessor)
}

/// Stamps an outgoing snapshot message with what the backend copy it carries
/// holds: its consistent index and term, and the membership of its members
/// table. raft-rs asked for its newest recorded snapshot, but the copy is taken
/// later and may be further along; a receiver recording the older index would
/// hold a backend ahead of its log, and could not restart before the log caught
/// up (found by the simulator, seed 22). etcd sends its applied index too.
pub fn stamp_snapshot(message: &mut etcd_raftnode::Message, copy: &Backend) -> Result<(), String> {
    let txn = copy.begin_read().map_err(|e| e.to_string())?;
    let (index, term) = etcd_storage::consistent_index(&txn).map_err(|e| e.to_string())?;
    let members = crate::membership::load(&txn)?;
    let metadata = message.mut_snapshot().mut_metadata();
    assert!(
        index >= metadata.index,
        "invariant: a backend copy holds the snapshot Raft asked for ({index} < {})",
        metadata.index
    );
    metadata.index = index;
    metadata.term = term;
    metadata.set_conf_state(crate::membership::conf_state(&members));
    Ok(())
}

/// How often the leader looks for expired leases and due checkpoints (etcd's
/// 500 ms).
pub const LEASE_DUTY_INTERVAL_MS: u64 = 500;

/// What a member's lessor asks of it now: leases past their deadline to revoke
/// and remaining TTLs to checkpoint, within etcd's rates per duty interval
/// (half the per-second rates). Only a leader's lessor has any; a member that
/// does not lead demotes its lessor first (a deposed leader stops tracking
/// deadlines). The caller confirms leadership through the quorum before it
/// proposes the revokes: a leader cut off from the quorum still believes it
/// leads until check-quorum deposes it.
pub fn lease_duties(lessor: &mut Lessor, now: u64, leading: bool) -> LeaseDuties {
    if !leading && lessor.is_primary() {
        lessor.demote();
    }
    if !lessor.is_primary() {
        return LeaseDuties::default();
    }
    LeaseDuties {
        checkpoints: lessor.due_checkpoints(now, etcd_lease::LEASE_CHECKPOINT_RATE / 2),
        expired: lessor.expired(now, etcd_lease::LEASE_REVOKE_RATE / 2),
    }
}

/// See [`lease_duties`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LeaseDuties {
    /// Leases past their deadline.
    pub expired: Vec<i64>,
    /// (lease, remaining TTL) to record.
    pub checkpoints: Vec<(i64, i64)>,
}
