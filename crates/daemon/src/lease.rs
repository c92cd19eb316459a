//! Leases on [`EtcdServer`]: Grant and Revoke go through Raft; KeepAlive,
//! TimeToLive and Leases are answered by the leader's lessor; the expiry loop on
//! the leader proposes a Revoke for every expired lease, so every member deletes
//! the same keys at the same revision.

use std::sync::Arc;
use std::time::Duration;

use etcd_lease::{LeaseInfo, Lessor, LEASE_REVOKE_RATE};
use etcd_mvcc::KvStore;
use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use etcd_server::{Applied, ServerError};
use etcd_storage::Backend;

use crate::clock::monotonic_ms;
use crate::config::ServerConfig;
use crate::server::EtcdServer;

/// How often the leader looks for expired leases (etcd: 500 ms).
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// etcd's minimum TTL: 1.5 election timeouts, rounded up to whole seconds.
pub(crate) fn min_ttl_secs(cfg: &ServerConfig) -> i64 {
    let ticks = (3 * cfg.election_ticks() / 2) as u32;
    let min_ttl = cfg.heartbeat_interval * ticks;
    min_ttl.as_secs_f64().ceil() as i64
}

/// Rebuilds the lessor from the backend after a (re)start, re-attaching live keys.
pub(crate) fn recover_lessor(
    cfg: &ServerConfig,
    backend: &Backend,
    kv: &KvStore,
) -> Result<Lessor, String> {
    let keys = kv.leased_keys().map_err(|e| e.to_string())?;
    let txn = backend.begin_read().map_err(|e| e.to_string())?;
    Lessor::recover(&txn, keys, min_ttl_secs(cfg)).map_err(|e| e.to_string())
}

impl EtcdServer {
    /// Makes this member's lessor track expiries iff it leads (refreshing every
    /// lease's deadline when it starts leading, so nothing expires at once).
    fn sync_lessor_role(&self) {
        let leader = self.is_leader();
        let mut lessor = self.lessor.lock().expect("lessor lock");
        if leader && !lessor.is_primary() {
            let extend_ms = self.config().election_timeout.as_millis() as u64;
            lessor.promote_with_extend(monotonic_ms(), extend_ms);
        } else if !leader && lessor.is_primary() {
            lessor.demote();
        }
    }

    /// Grants a lease through Raft; an ID of 0 lets the server choose one.
    pub async fn lease_grant(
        &self,
        mut request: LeaseGrantRequest,
    ) -> Result<Applied, ServerError> {
        self.check_quota(crate::alarms::LEASE_COST_BYTES).await?;
        if request.id == 0 {
            request.id = (self.next_id() & (i64::MAX as u64)) as i64;
        }
        let internal = InternalRaftRequest { lease_grant: Some(request), ..Default::default() };
        self.propose(internal).await
    }

    /// Revokes a lease through Raft, deleting its keys in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<Applied, ServerError> {
        let request = LeaseRevokeRequest { id };
        let internal = InternalRaftRequest { lease_revoke: Some(request), ..Default::default() };
        self.propose(internal).await
    }

    /// Renews a lease on the leader; returns its TTL (0 when it does not exist, as
    /// etcd's KeepAlive answers).
    pub fn lease_renew(&self, id: i64) -> Result<i64, ServerError> {
        self.sync_lessor_role();
        let renewed = self.lessor.lock().expect("lessor lock").renew(id, monotonic_ms());
        match renewed {
            Ok(ttl) => Ok(ttl),
            Err(etcd_lease::LeaseError::NotFound) => Ok(0),
            Err(err) => Err(ServerError::from_lease(&err).unwrap_or(ServerError::Stopped)),
        }
    }

    /// A lease's granted and remaining TTL (and keys when asked); `None` when it
    /// does not exist.
    pub fn lease_time_to_live(&self, id: i64, keys: bool) -> Option<LeaseInfo> {
        self.sync_lessor_role();
        self.lessor.lock().expect("lessor lock").time_to_live(id, monotonic_ms(), keys).ok()
    }

    /// Every lease ID, sorted.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.lessor.lock().expect("lessor lock").leases()
    }

    /// The leader-only expiry loop; runs until the server stops.
    pub(crate) async fn run_lease_expiry(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
        loop {
            ticker.tick().await;
            if self.is_stopped() {
                return;
            }
            self.sync_lessor_role();
            let expired = {
                let mut lessor = self.lessor.lock().expect("lessor lock");
                if !lessor.is_primary() {
                    continue;
                }
                lessor.expired(monotonic_ms(), LEASE_REVOKE_RATE / 2)
            };
            for id in expired {
                let server = self.clone();
                tokio::spawn(async move {
                    match server.lease_revoke(id).await {
                        Ok(_) => {
                            tracing::debug!(lease = %format!("{id:x}"), "revoked expired lease")
                        }
                        Err(err) => {
                            tracing::warn!(lease = %format!("{id:x}"), error = %err, "failed to revoke expired lease; will retry")
                        }
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        let cfg = ServerConfig::single("t", "/nonexistent".into());
        assert_eq!(min_ttl_secs(&cfg), 2, "etcd's default: 1.5 s -> 2 s");
    }
}
