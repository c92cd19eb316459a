//! The lessor of an etcd-rs member: etcd's lease bookkeeping as a
//! deterministic state machine. It owns the set of granted leases (id and
//! TTL), the keys attached to each lease, the `lease` table of
//! [`etcd_storage`] (one row per lease, encoding below) and, on the leader
//! only, each lease's expiry deadline and the queue that finds expired
//! leases. It must not know about Raft, the MVCC store, gRPC, clocks or
//! tokio: callers apply Grant/Revoke inside their own backend write
//! transaction, tell it which keys gained or lost a lease, pass the current
//! time as a monotonic millisecond count (`now_ms`), and propose the
//! revokes it reports as expired.
//!
//! ## Roles
//!
//! Every member applies Grant and Revoke (through Raft, in the same write
//! transaction as the MVCC changes) and tracks attached keys. Only the
//! *primary* (the leader, after [`Lessor::promote`]) tracks expiries: on
//! promotion every lease gets a fresh deadline of now + TTL (plus an
//! optional extension, and a spread when at least [`LEASE_REVOKE_RATE`]
//! leases would pile up, as etcd does); on [`Lessor::demote`] all deadlines
//! are dropped and leases never expire on that member. KeepAlive
//! ([`Lessor::renew`]) is served by the primary alone, without Raft.
//!
//! [`Lessor::expired`] hands out each expired lease id once, then holds it
//! back for [`EXPIRED_LEASE_RETRY_INTERVAL_MS`] (etcd's 3 s retry interval)
//! so that a revoke that got lost (e.g. a dropped proposal) is proposed
//! again, but the same revoke is not proposed on every tick. The lease's own
//! deadline stays in the past meanwhile, so a KeepAlive cannot resurrect a
//! lease whose revoke is in flight.
//!
//! ## Persistence
//!
//! The `lease` table maps the lease id (`i64` key) to a 16-byte value:
//! `id` as 8 bytes big-endian two's complement, followed by the granted
//! `ttl` in seconds (after the minimum-TTL rule) as 8 bytes big-endian two's
//! complement ([`encode_lease`] / [`decode_lease`]); with persisted
//! checkpoints a third 8-byte field holds the last checkpointed remaining TTL
//! ([`encode_lease_with_remaining`]). Deadlines are never persisted: after a
//! restart every lease starts again from its checkpointed remaining TTL, or
//! its full TTL, when its member is promoted.
//!
//! ## Checkpoints
//!
//! With [`Checkpointing`] on, the primary schedules a checkpoint of every
//! lease whose remaining TTL exceeds the interval, one interval after its
//! deadline was set; [`Lessor::due_checkpoints`] hands them out for the
//! caller to propose, and every member applies them with
//! [`Lessor::checkpoint`]. A promotion then starts each lease from its
//! checkpointed remaining TTL, so a leader change does not give every lease
//! its full TTL again; a renewal asks the caller to clear the checkpoint.
//!
//! All state lives in `BTreeMap`/`BTreeSet`s, so iteration order (and thus
//! everything observable) is deterministic.
#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use etcd_storage::{ReadTables, StorageError, WriteTxn};

/// Largest TTL (seconds) a lease may be granted with (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// How long (ms) [`Lessor::expired`] holds back an id it has already
/// reported before reporting it again if it is still not revoked (etcd's
/// `defaultExpiredleaseRetryInterval`).
pub const EXPIRED_LEASE_RETRY_INTERVAL_MS: u64 = 3_000;

/// etcd's `leaseRevokeRate`: the maximum number of leases to revoke per
/// second. The caller should ask [`Lessor::expired`] for at most half of it
/// per 500 ms tick; [`Lessor::promote`] spreads expiries when at least this
/// many leases exist.
pub const LEASE_REVOKE_RATE: usize = 1000;

/// Length of an encoded `lease` table value without a checkpointed remaining TTL.
pub const LEASE_VALUE_LEN: usize = 16;
/// Length of an encoded `lease` table value with a checkpointed remaining TTL.
pub const LEASE_VALUE_WITH_REMAINING_LEN: usize = 24;

/// Encodes the `lease` table value of lease `id` with TTL `ttl_secs`.
pub fn encode_lease(id: i64, ttl_secs: i64) -> [u8; LEASE_VALUE_LEN] {
    let mut b = [0u8; LEASE_VALUE_LEN];
    b[..8].copy_from_slice(&id.to_be_bytes());
    b[8..].copy_from_slice(&ttl_secs.to_be_bytes());
    b
}

/// Encodes a `lease` table value that also records a checkpointed remaining TTL
/// (with `--experimental-enable-lease-checkpoint-persist`).
pub fn encode_lease_with_remaining(
    id: i64,
    ttl_secs: i64,
    remaining_secs: i64,
) -> [u8; LEASE_VALUE_WITH_REMAINING_LEN] {
    let mut b = [0u8; LEASE_VALUE_WITH_REMAINING_LEN];
    b[..LEASE_VALUE_LEN].copy_from_slice(&encode_lease(id, ttl_secs));
    b[LEASE_VALUE_LEN..].copy_from_slice(&remaining_secs.to_be_bytes());
    b
}

/// Decodes a `lease` table value into `(id, ttl_secs)`; `None` if malformed.
pub fn decode_lease(b: &[u8]) -> Option<(i64, i64)> {
    decode_lease_with_remaining(b).map(|(id, ttl, _)| (id, ttl))
}

/// Decodes a `lease` table value into `(id, ttl_secs, remaining_secs)`, the
/// remaining TTL 0 (unset) when none was recorded; `None` if malformed.
pub fn decode_lease_with_remaining(b: &[u8]) -> Option<(i64, i64, i64)> {
    if b.len() != LEASE_VALUE_LEN && b.len() != LEASE_VALUE_WITH_REMAINING_LEN {
        return None;
    }
    let id = i64::from_be_bytes(b[..8].try_into().ok()?);
    let ttl = i64::from_be_bytes(b[8..16].try_into().ok()?);
    let remaining = match b.get(16..24) {
        Some(r) => i64::from_be_bytes(r.try_into().ok()?),
        None => 0,
    };
    Some((id, ttl, remaining))
}

/// etcd's `defaultLeaseCheckpointInterval`: how long after a lease's deadline
/// was set the leader records its remaining TTL through Raft.
pub const LEASE_CHECKPOINT_INTERVAL_MS: u64 = 5 * 60 * 1000;
/// etcd's `maxLeaseCheckpointBatchSize`: checkpoints in one Raft entry at most.
pub const LEASE_CHECKPOINT_BATCH_MAX: usize = 1000;
/// etcd's `leaseCheckpointRate`: checkpoints recorded per second at most.
pub const LEASE_CHECKPOINT_RATE: usize = 1000;

/// Lease checkpointing (`--experimental-enable-lease-checkpoint`): the leader
/// periodically records each lease's remaining TTL through Raft, so a new
/// leader starts it from there instead of from its full TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointing {
    /// How long after a deadline is set its remaining TTL is recorded.
    pub interval_ms: u64,
    /// Also store remaining TTLs in the `lease` table, so they survive a
    /// restart of the whole cluster (`--experimental-enable-lease-checkpoint-persist`).
    pub persist: bool,
}

/// Errors of the lessor. The API layer prefixes `etcdserver: ` and maps
/// them to gRPC codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The lease does not exist (or, for [`Lessor::renew`], has expired and
    /// is waiting to be revoked). Also returned when granting id 0, as etcd does.
    #[error("lease not found")]
    NotFound,
    /// A lease with this id is already granted.
    #[error("lease already exists")]
    LeaseExists,
    /// The requested TTL exceeds [`MAX_LEASE_TTL`].
    #[error("too large lease TTL")]
    TtlTooLarge,
    /// The operation needs the primary lessor (the leader) and this member is not it.
    #[error("not a primary lessor")]
    NotPrimary,
    /// The backend failed, or the lease table holds a malformed row.
    #[error("lease storage: {0}")]
    Storage(String),
}

impl From<StorageError> for LeaseError {
    fn from(e: StorageError) -> Self {
        LeaseError::Storage(e.to_string())
    }
}

/// What a KeepAlive did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    /// The lease's TTL: it now expires that many seconds from now.
    pub ttl: i64,
    /// The lease had a checkpointed remaining TTL: propose a checkpoint of 0.
    pub clear_checkpoint: bool,
}

/// What is known about one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// The TTL the lease was granted with (seconds, after the minimum-TTL rule).
    pub granted_ttl: i64,
    /// Seconds until expiry, truncated toward zero as etcd computes it
    /// (`int64(Remaining().Seconds())`); may be zero or negative for an
    /// expired lease whose revoke is pending. On a member that does not track
    /// expiries (not primary) this is the granted TTL.
    pub remaining_ttl: i64,
    /// Attached keys, sorted (empty unless asked for in [`Lessor::time_to_live`]).
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Lease {
    /// Granted TTL in seconds.
    ttl: i64,
    /// The last checkpointed remaining TTL in seconds; 0 when unset (the next
    /// promotion then starts the lease from its full TTL).
    remaining_ttl: i64,
    /// Deadline (ms) while primary; `None` = never expires on this member.
    expiry_ms: Option<u64>,
    /// The time under which this lease sits in the expiry queue, if it does.
    check_at_ms: Option<u64>,
    keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.max(0)).unwrap_or(0).saturating_mul(1000)
    }

    /// What a promotion starts the lease from: the checkpointed remaining TTL
    /// when there is one, else the full TTL (etcd's `RemainingTTL`).
    fn remaining_or_ttl_secs(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }

    fn remaining_or_ttl_ms(&self) -> u64 {
        u64::try_from(self.remaining_or_ttl_secs().max(0)).unwrap_or(0).saturating_mul(1000)
    }
}

/// The lease state machine. See the crate documentation.
#[derive(Debug, Clone)]
pub struct Lessor {
    leases: BTreeMap<i64, Lease>,
    /// `(check_at_ms, id)` for every lease while primary; empty otherwise.
    queue: BTreeSet<(u64, i64)>,
    primary: bool,
    min_ttl_secs: i64,
    retry_interval_ms: u64,
    checkpointing: Option<Checkpointing>,
    /// `(due_ms, id)` of the checkpoints to record while primary.
    checkpoints: BTreeSet<(u64, i64)>,
    /// The lease each attached key is attached to (the inverse of the
    /// leases' key sets), so a put learns the key's old lease without
    /// reading its previous value.
    attached: BTreeMap<Vec<u8>, i64>,
}

impl Lessor {
    /// An empty, non-primary lessor granting at least `min_ttl_secs`.
    pub fn new(min_ttl_secs: i64) -> Lessor {
        Lessor {
            leases: BTreeMap::new(),
            queue: BTreeSet::new(),
            primary: false,
            min_ttl_secs,
            retry_interval_ms: EXPIRED_LEASE_RETRY_INTERVAL_MS,
            checkpointing: None,
            checkpoints: BTreeSet::new(),
            attached: BTreeMap::new(),
        }
    }

    /// Turns lease checkpointing on (off by default, as in etcd).
    pub fn set_checkpointing(&mut self, checkpointing: Option<Checkpointing>) {
        self.checkpointing = checkpointing;
        if checkpointing.is_none() {
            self.checkpoints.clear();
        }
    }

    /// The checkpointing configuration, if on.
    pub fn checkpointing(&self) -> Option<Checkpointing> {
        self.checkpointing
    }

    /// Rebuilds the lessor (non-primary) from the backend's `lease` table and
    /// the `(key, lease id)` pairs of the live keys. Stored TTLs below
    /// `min_ttl_secs` are raised to it (in memory only). Pairs naming lease 0
    /// or an unknown lease are ignored (etcd logs and skips them).
    pub fn recover(
        txn: &impl ReadTables,
        keys: impl IntoIterator<Item = (Vec<u8>, i64)>,
        min_ttl_secs: i64,
    ) -> Result<Lessor, LeaseError> {
        let mut le = Lessor::new(min_ttl_secs);
        for (key_id, value) in txn.leases_list()? {
            let (id, ttl, remaining_ttl) = decode_lease_with_remaining(&value).ok_or_else(|| {
                LeaseError::Storage(format!(
                    "lease {key_id}: value has {} bytes, want {LEASE_VALUE_LEN} or {LEASE_VALUE_WITH_REMAINING_LEN}",
                    value.len()
                ))
            })?;
            if id != key_id {
                return Err(LeaseError::Storage(format!("lease {key_id}: value names lease {id}")));
            }
            le.leases.insert(
                id,
                Lease {
                    ttl: ttl.max(min_ttl_secs),
                    remaining_ttl,
                    expiry_ms: None,
                    check_at_ms: None,
                    keys: BTreeSet::new(),
                },
            );
        }
        for (key, id) in keys {
            le.attach(id, &key);
        }
        Ok(le)
    }

    /// Sets how long an id reported by [`Lessor::expired`] is held back
    /// before being reported again (default [`EXPIRED_LEASE_RETRY_INTERVAL_MS`]).
    pub fn set_expired_retry_interval_ms(&mut self, ms: u64) {
        self.retry_interval_ms = ms;
    }

    /// The minimum TTL (seconds) leases are granted with.
    pub fn min_ttl_secs(&self) -> i64 {
        self.min_ttl_secs
    }

    /// Apply-time Grant. A TTL below the minimum is raised to it. Persists the
    /// lease through `txn`; if this member is primary the lease expires at
    /// `now_ms` + TTL. Errors: [`LeaseError::NotFound`] for id 0,
    /// [`LeaseError::TtlTooLarge`], [`LeaseError::LeaseExists`], storage.
    pub fn grant(
        &mut self,
        txn: &WriteTxn,
        id: i64,
        ttl_secs: i64,
        now_ms: u64,
    ) -> Result<LeaseInfo, LeaseError> {
        if id == 0 {
            return Err(LeaseError::NotFound);
        }
        if ttl_secs > MAX_LEASE_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::LeaseExists);
        }
        let ttl = ttl_secs.max(self.min_ttl_secs);
        txn.lease_put(id, &encode_lease(id, ttl))?;
        let mut lease = Lease {
            ttl,
            remaining_ttl: 0,
            expiry_ms: None,
            check_at_ms: None,
            keys: BTreeSet::new(),
        };
        if self.primary {
            let expiry = now_ms.saturating_add(lease.ttl_ms());
            lease.expiry_ms = Some(expiry);
            lease.check_at_ms = Some(expiry);
            self.queue.insert((expiry, id));
        }
        self.leases.insert(id, lease);
        if self.primary {
            self.schedule_checkpoint(id, now_ms);
        }
        Ok(LeaseInfo { id, granted_ttl: ttl, remaining_ttl: ttl, keys: Vec::new() })
    }

    /// Apply-time Revoke. Removes the lease from memory and from the `lease`
    /// table; returns its attached keys, sorted, for the caller to delete in
    /// the same transaction. Error: [`LeaseError::NotFound`], storage.
    pub fn revoke(&mut self, txn: &WriteTxn, id: i64) -> Result<Vec<Vec<u8>>, LeaseError> {
        if !self.leases.contains_key(&id) {
            return Err(LeaseError::NotFound);
        }
        txn.lease_delete(id)?;
        let lease = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        if let Some(at) = lease.check_at_ms {
            self.queue.remove(&(at, id));
        }
        for key in &lease.keys {
            self.attached.remove(key);
        }
        Ok(lease.keys.into_iter().collect())
    }

    /// Whether lease `id` is granted.
    pub fn exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Number of granted leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is granted.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Attaches `key` to lease `id`; no-op for id 0 or an unknown lease.
    /// A key is attached to at most one lease: attaching it to another first
    /// detaches it from the one it had.
    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key.to_vec());
            if let Some(old) = self.attached.insert(key.to_vec(), id).filter(|&old| old != id) {
                if let Some(l) = self.leases.get_mut(&old) {
                    l.keys.remove(key);
                }
            }
        }
    }

    /// Detaches `key` from lease `id`; no-op if it is not attached.
    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            if l.keys.remove(key) {
                let removed = self.attached.remove(key);
                assert_eq!(removed, Some(id), "invariant: a key's lease is recorded both ways");
            }
        }
    }

    /// The lease `key` is attached to (0 for none).
    pub fn lease_of(&self, key: &[u8]) -> i64 {
        self.attached.get(key).copied().unwrap_or(0)
    }

    /// Leader-only KeepAlive: the lease now expires at `now_ms` + TTL; returns
    /// the TTL and whether a checkpointed remaining TTL must be cleared through
    /// Raft (so a later leader does not cut the renewed lease short; etcd
    /// records that before it answers). Errors: [`LeaseError::NotPrimary`] if
    /// not primary; [`LeaseError::NotFound`] if the lease does not exist or has
    /// already expired (its revoke is pending; etcd waits for that revoke and
    /// then answers "not found", here the caller gets the answer at once).
    pub fn renew(&mut self, id: i64, now_ms: u64) -> Result<Renewed, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let checkpointing = self.checkpointing.is_some();
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        if lease.expiry_ms.is_some_and(|e| e <= now_ms) {
            return Err(LeaseError::NotFound);
        }
        let expiry = now_ms.saturating_add(lease.ttl_ms());
        lease.expiry_ms = Some(expiry);
        if let Some(old) = lease.check_at_ms.replace(expiry) {
            self.queue.remove(&(old, id));
        }
        self.queue.insert((expiry, id));
        Ok(Renewed { ttl: lease.ttl, clear_checkpoint: checkpointing && lease.remaining_ttl > 0 })
    }

    /// Apply-time checkpoint: records lease `id`'s remaining TTL (0 clears it),
    /// which the next promotion starts the lease from. With persistence on, the
    /// `lease` table row records it too. An unknown lease is skipped (it may have
    /// been revoked since the checkpoint was proposed).
    pub fn checkpoint(
        &mut self,
        txn: &WriteTxn,
        id: i64,
        remaining_secs: i64,
        now_ms: u64,
    ) -> Result<(), LeaseError> {
        let persist = self.checkpointing.is_some_and(|c| c.persist);
        let Some(lease) = self.leases.get_mut(&id) else { return Ok(()) };
        lease.remaining_ttl = remaining_secs;
        if persist {
            txn.lease_put(id, &encode_lease_with_remaining(id, lease.ttl, remaining_secs))?;
        }
        if self.primary {
            self.schedule_checkpoint(id, now_ms);
        }
        Ok(())
    }

    /// Queues a checkpoint of `id` one interval from now, when its remaining TTL
    /// is longer than the interval (etcd's `scheduleCheckpointIfNeeded`).
    fn schedule_checkpoint(&mut self, id: i64, now_ms: u64) {
        let Some(checkpointing) = self.checkpointing else { return };
        let Some(lease) = self.leases.get(&id) else { return };
        let interval_secs = i64::try_from(checkpointing.interval_ms / 1000).unwrap_or(i64::MAX);
        if lease.remaining_or_ttl_secs() > interval_secs {
            self.checkpoints.insert((now_ms.saturating_add(checkpointing.interval_ms), id));
        }
    }

    /// Up to `max` checkpoints due at `now_ms` (primary only): each lease's
    /// remaining TTL in whole seconds, rounded up, for the caller to propose.
    /// Leases that are gone, expired, or have their full TTL left are skipped.
    pub fn due_checkpoints(&mut self, now_ms: u64, max: usize) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        if !self.primary || self.checkpointing.is_none() {
            return out;
        }
        while out.len() < max {
            let Some(&(at, id)) = self.checkpoints.first() else { break };
            if at > now_ms {
                break;
            }
            self.checkpoints.pop_first();
            let Some(lease) = self.leases.get(&id) else { continue };
            let Some(expiry) = lease.expiry_ms.filter(|&e| e > now_ms) else { continue };
            let remaining = i64::try_from((expiry - now_ms).div_ceil(1000)).unwrap_or(i64::MAX);
            if remaining >= lease.ttl {
                continue;
            }
            out.push((id, remaining));
        }
        out
    }

    /// Becomes primary: every lease expires at `now_ms` + its TTL.
    /// Same as [`Lessor::promote_with_extend`] with no extension.
    pub fn promote(&mut self, now_ms: u64) {
        self.promote_with_extend(now_ms, 0);
    }

    /// Becomes primary: every lease expires at `now_ms` + `extend_ms` + its
    /// TTL (etcd extends by the election timeout). With at least
    /// [`LEASE_REVOKE_RATE`] leases, deadlines that would pile up are spread
    /// so that no more than 3/4 of the revoke rate expire per second, exactly
    /// as etcd's `Promote` does (in milliseconds, leases ordered by deadline
    /// then id).
    pub fn promote_with_extend(&mut self, now_ms: u64, extend_ms: u64) {
        self.primary = true;
        self.queue.clear();
        let base = now_ms.saturating_add(extend_ms);
        for l in self.leases.values_mut() {
            l.expiry_ms = Some(base.saturating_add(l.remaining_or_ttl_ms()));
        }
        if self.leases.len() >= LEASE_REVOKE_RATE {
            self.spread_expiries(now_ms, extend_ms);
        }
        for (id, l) in self.leases.iter_mut() {
            let at = l.expiry_ms.unwrap_or(u64::MAX);
            l.check_at_ms = Some(at);
            self.queue.insert((at, *id));
        }
        self.checkpoints.clear();
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        for id in ids {
            self.schedule_checkpoint(id, now_ms);
        }
    }

    fn spread_expiries(&mut self, now_ms: u64, extend_ms: u64) {
        let mut order: Vec<(u64, i64)> = self
            .leases
            .iter()
            .map(|(id, l)| (l.expiry_ms.unwrap_or(u64::MAX).saturating_sub(now_ms), *id))
            .collect();
        order.sort_unstable();
        let target = (3 * LEASE_REVOKE_RATE / 4) as u64;
        let mut base_window = order[0].0;
        let mut next_window = base_window.saturating_add(1000);
        let mut expires: u64 = 0;
        for (remaining, id) in order {
            if remaining > next_window {
                base_window = remaining;
                next_window = base_window.saturating_add(1000);
                expires = 1;
                continue;
            }
            expires += 1;
            if expires <= target {
                continue;
            }
            let delay = (1000 * expires / target).saturating_sub(remaining - base_window);
            next_window = base_window.saturating_add(delay);
            if let Some(l) = self.leases.get_mut(&id) {
                let ttl_ms = l.remaining_or_ttl_ms();
                l.expiry_ms = Some(
                    now_ms.saturating_add(delay).saturating_add(extend_ms).saturating_add(ttl_ms),
                );
            }
        }
    }

    /// Stops being primary: no lease expires on this member until the next
    /// promotion.
    pub fn demote(&mut self) {
        self.primary = false;
        self.queue.clear();
        self.checkpoints.clear();
        for l in self.leases.values_mut() {
            l.expiry_ms = None;
            l.check_at_ms = None;
        }
    }

    /// Whether this lessor is primary (tracks expiries, serves KeepAlive).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Up to `max` ids of leases expired at `now_ms` (primary only; empty
    /// otherwise), earliest first. Each returned id is held back for the retry
    /// interval before it can be returned again, unless renewed or revoked
    /// meanwhile. Costs O(log n) per queue entry looked at; never scans all leases.
    pub fn expired(&mut self, now_ms: u64, max: usize) -> Vec<i64> {
        let mut out = Vec::new();
        if !self.primary {
            return out;
        }
        while out.len() < max {
            let Some(&(at, id)) = self.queue.first() else { break };
            if at > now_ms {
                break;
            }
            self.queue.pop_first();
            let Some(lease) = self.leases.get_mut(&id) else { continue };
            let next = match lease.expiry_ms {
                Some(e) if e <= now_ms => {
                    out.push(id);
                    now_ms.saturating_add(self.retry_interval_ms.max(1))
                }
                Some(e) => e,
                None => {
                    lease.check_at_ms = None;
                    continue;
                }
            };
            lease.check_at_ms = Some(next);
            self.queue.insert((next, id));
        }
        out
    }

    /// The earliest time (ms) at which [`Lessor::expired`] may return something,
    /// if any lease is tracked.
    pub fn next_check_ms(&self) -> Option<u64> {
        self.queue.first().map(|&(at, _)| at)
    }

    /// TimeToLive of lease `id` at `now_ms`, with its sorted keys if
    /// `with_keys`. Error: [`LeaseError::NotFound`] (the API answers TTL -1).
    pub fn time_to_live(
        &self,
        id: i64,
        now_ms: u64,
        with_keys: bool,
    ) -> Result<LeaseInfo, LeaseError> {
        let l = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        let remaining_ttl = match l.expiry_ms {
            // Truncation toward zero, like Go's int64(duration.Seconds()).
            Some(e) => i64::try_from((i128::from(e) - i128::from(now_ms)) / 1000).unwrap_or(0),
            None => l.ttl,
        };
        Ok(LeaseInfo {
            id,
            granted_ttl: l.ttl,
            remaining_ttl,
            keys: if with_keys { l.keys.iter().cloned().collect() } else { Vec::new() },
        })
    }

    /// The keys attached to lease `id`, sorted (none if it does not exist).
    pub fn keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.leases.get(&id).map(|l| l.keys.iter().cloned().collect()).unwrap_or_default()
    }

    /// Ids of every granted lease, sorted.
    pub fn leases(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests;
