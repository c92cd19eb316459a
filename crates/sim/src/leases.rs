//! A lease client and the lease guarantees. It grants leases (3 s TTL), puts
//! one key on each, keeps them alive for a while through random members (a
//! member that does not lead forwards to the leader, as the daemon does), then
//! lets them go. Checked:
//! - no early expiry: a lease's key is not deleted (the revoke applied) before
//!   its grant's or latest keep-alive's invocation plus the TTL, and a
//!   keep-alive never finds a lease gone before then;
//! - eventual expiry: a lease nobody keeps alive is revoked (its key gone) once
//!   the cluster has been healthy for a while after its deadline.

use std::collections::BTreeMap;

/// TTL of the simulated leases (etcd's minimum is 1.5 election timeouts: 2 s).
pub const TTL_SECS: i64 = 3;
const TTL_MS: u64 = TTL_SECS as u64 * 1_000;

/// Where a lease is in its life, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The grant is in flight (operation).
    Granting(u64),
    /// The grant was applied; the put of its key is in flight (operation).
    Putting(u64),
    /// Granted with its key put; kept alive until `keep_until`.
    Alive,
    /// Given up (a grant or put failed): nothing is checked.
    Abandoned,
}

/// One simulated lease.
#[derive(Debug, Clone)]
pub struct SimLease {
    /// Its ID.
    pub id: i64,
    /// Its one key.
    pub key: Vec<u8>,
    /// Where it is.
    pub stage: Stage,
    /// When its grant was invoked.
    granted_at: u64,
    /// Invocation times of keep-alives that renewed it.
    renewed: Vec<u64>,
    /// The client keeps it alive until then.
    pub keep_until: u64,
    /// When the next keep-alive is due.
    pub next_keepalive: u64,
    /// When its key was deleted (the revoke applied), if it was.
    revoked_at: Option<u64>,
}

/// The lease client.
#[derive(Default)]
pub struct LeaseClient {
    /// Every lease it made.
    pub leases: BTreeMap<i64, SimLease>,
    next: i64,
    /// When to make the next lease.
    pub next_grant: u64,
}

impl LeaseClient {
    /// Starts a new lease: its ID and key (the caller proposes the grant as
    /// operation `op`).
    pub fn start(&mut self, op: u64, now: u64, keep_for: u64) -> (i64, Vec<u8>) {
        self.next += 1;
        let id = 7_000 + self.next;
        let key = format!("lease{}", self.next).into_bytes();
        let lease = SimLease {
            id,
            key: key.clone(),
            stage: Stage::Granting(op),
            granted_at: now,
            renewed: Vec::new(),
            keep_until: now + keep_for,
            next_keepalive: now + 1_000,
            revoked_at: None,
        };
        self.leases.insert(id, lease);
        (id, key)
    }

    /// The lease whose grant or put is operation `op`.
    pub fn by_op(&mut self, op: u64) -> Option<&mut SimLease> {
        self.leases
            .values_mut()
            .find(|l| matches!(l.stage, Stage::Granting(o) | Stage::Putting(o) if o == op))
    }

    /// A keep-alive invoked at `at` renewed `lease`.
    pub fn renewed(&mut self, lease: i64, at: u64) {
        if let Some(l) = self.leases.get_mut(&lease) {
            l.renewed.push(at);
        }
    }

    /// The latest moment the lease was known alive: its deadline is at least
    /// this plus the TTL.
    fn alive_at(lease: &SimLease) -> u64 {
        lease.renewed.last().copied().unwrap_or(lease.granted_at).max(lease.granted_at)
    }

    /// A keep-alive at `now` found the lease gone.
    pub fn not_found(&mut self, lease: i64, now: u64) -> Result<(), String> {
        let Some(l) = self.leases.get(&lease) else { return Ok(()) };
        if l.stage != Stage::Alive {
            return Ok(());
        }
        let deadline = Self::alive_at(l) + TTL_MS;
        if now < deadline {
            return Err(format!(
                "leases: a keep-alive at {now} found lease {lease:x} gone, but it was alive at {} \
                 with a {TTL_SECS} s TTL (deadline {deadline})",
                Self::alive_at(l)
            ));
        }
        Ok(())
    }

    /// A member applied the deletion of `key` at `now`.
    pub fn key_deleted(&mut self, key: &[u8], now: u64) -> Result<(), String> {
        let Some(l) = self.leases.values_mut().find(|l| l.key == key) else { return Ok(()) };
        if l.revoked_at.is_some() || l.stage == Stage::Abandoned {
            return Ok(());
        }
        l.revoked_at = Some(now);
        let deadline = Self::alive_at(l) + TTL_MS;
        if matches!(l.stage, Stage::Alive) && now < deadline {
            return Err(format!(
                "leases: lease {:x} was revoked at {now}, but it was alive at {} with a {TTL_SECS} s \
                 TTL (deadline {deadline}); renewals at {:?}",
                l.id,
                Self::alive_at(l),
                l.renewed
            ));
        }
        Ok(())
    }

    /// Leases that were alive and then revoked.
    pub fn expired(&self) -> u64 {
        self.leases.values().filter(|l| l.stage == Stage::Alive && l.revoked_at.is_some()).count()
            as u64
    }

    /// At the end of a run: every lease let go must have been revoked by `now`
    /// if its deadline passed long enough ago, counting from `settled` (when
    /// faults healed, or the last leader took over, whichever is later: a new
    /// leader's lessor gives every lease its TTL again, plus an election
    /// timeout).
    pub fn check_expired(&self, settled: u64, now: u64) -> Result<(), String> {
        for l in self.leases.values() {
            if l.stage != Stage::Alive || l.revoked_at.is_some() {
                continue;
            }
            let deadline = Self::alive_at(l).max(l.keep_until) + TTL_MS;
            if deadline.max(settled + TTL_MS + 1_000) + 1_500 <= now {
                return Err(format!(
                    "leases: lease {:x}, let go at {} (last alive at {}), was never revoked \
                     (now {now}, settled at {settled})",
                    l.id,
                    l.keep_until,
                    Self::alive_at(l)
                ));
            }
        }
        Ok(())
    }
}
