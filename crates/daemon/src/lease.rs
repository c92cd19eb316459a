//! Leases on [`EtcdServer`]: Grant and Revoke go through Raft; KeepAlive and
//! TimeToLive are answered by the leader's lessor (forwarded there from a
//! follower, `lease_peer.rs`); Leases by the local one (every member applies
//! every grant and revoke); the expiry loop on
//! the leader proposes a Revoke for every expired lease, so every member deletes
//! the same keys at the same revision.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_lease::{Renewed, LEASE_CHECKPOINT_BATCH_MAX};
use etcd_proto::etcdrs::lease_peer_client::LeasePeerClient;
use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use etcd_server::apply_core::{lease_duties, LeaseDuties, LEASE_DUTY_INTERVAL_MS};
use etcd_server::{Applied, ServerError};

use crate::clock::monotonic_ms;
use crate::config::ServerConfig;
use crate::lease_peer::{remote_attempt, Attempt, RenewNow};
use crate::server::EtcdServer;

/// How often the leader looks for expired leases (etcd: 500 ms).
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(LEASE_DUTY_INTERVAL_MS);

/// How long a new leader waits to apply what was committed before answering a
/// lease request (etcd's `applyTimeout`).
const APPLY_WAIT_MAX: Duration = Duration::from_secs(1);

/// The client-visible error of a lessor failure.
fn lease_error(err: &etcd_lease::LeaseError) -> ServerError {
    ServerError::from_lease(err).unwrap_or_else(|| {
        tracing::error!(error = %err, "lessor failed");
        ServerError::Stopped
    })
}

/// etcd's minimum TTL: 1.5 election timeouts, rounded up to whole seconds.
pub(crate) fn min_ttl_secs(cfg: &ServerConfig) -> i64 {
    let ticks = (3 * cfg.election_ticks() / 2) as u32;
    let min_ttl = cfg.heartbeat_interval * ticks;
    min_ttl.as_secs_f64().ceil() as i64
}

/// The apply half's settings from the server's configuration.
pub(crate) fn apply_core_config(cfg: &ServerConfig) -> etcd_server::apply_core::ApplyCoreConfig {
    etcd_server::apply_core::ApplyCoreConfig {
        snapshot_count: cfg.snapshot_count.max(1),
        batch_limit: cfg.backend_batch_limit,
        batch_interval_ms: cfg.backend_batch_interval.as_millis() as u64,
        promote_extend_ms: cfg.election_timeout.as_millis() as u64,
        min_lease_ttl_secs: min_ttl_secs(cfg),
        lease_checkpoint: cfg.lease_checkpoint,
        auth_token_ttl_ms: cfg.auth_token_ttl.as_millis() as u64,
        compaction_batch_limit: cfg.compaction_batch_limit,
    }
}

impl EtcdServer {
    /// Grants a lease through Raft; an ID of 0 lets the server choose one.
    pub async fn lease_grant(
        &self,
        mut request: LeaseGrantRequest,
        info: &etcd_auth::AuthInfo,
    ) -> Result<Applied, ServerError> {
        self.check_quota(crate::alarms::LEASE_COST_BYTES).await?;
        if request.id == 0 {
            request.id = (self.next_id() & (i64::MAX as u64)) as i64;
        }
        let internal = InternalRaftRequest { lease_grant: Some(request), ..Default::default() };
        self.propose_as(internal, info).await
    }

    /// Records leases' remaining TTLs through Raft (lease checkpointing).
    pub(crate) async fn lease_checkpoint(
        &self,
        checkpoints: Vec<LeaseCheckpoint>,
    ) -> Result<Applied, ServerError> {
        let request = LeaseCheckpointRequest { checkpoints };
        let internal =
            InternalRaftRequest { lease_checkpoint: Some(request), ..Default::default() };
        self.propose(internal).await
    }

    /// Revokes a lease through Raft, deleting its keys in one revision; with
    /// auth on, `info` needs write permission on every key of the lease.
    pub async fn lease_revoke(
        &self,
        id: i64,
        info: &etcd_auth::AuthInfo,
    ) -> Result<Applied, ServerError> {
        let request = LeaseRevokeRequest { id };
        let internal = InternalRaftRequest { lease_revoke: Some(request), ..Default::default() };
        self.propose_as(internal, info).await
    }

    /// Renews a lease through the leader (this member, or the one it forwards
    /// to); returns its TTL, 0 when it does not exist (as etcd's KeepAlive answers).
    pub async fn lease_renew(&self, id: i64) -> Result<i64, ServerError> {
        self.on_leader(
            || self.renew_here(id),
            |leader, channel, left| self.renew_forwarded(leader, channel, id, left),
        )
        .await
    }

    /// A KeepAlive answered without waiting, when it can be: this member leads
    /// and has applied everything committed. Otherwise (or when the renewal
    /// must first record that the lease's checkpoint is cleared) the caller
    /// awaits [`EtcdServer::lease_renew`] or [`EtcdServer::lease_renew_cleared`],
    /// which this answers exactly as.
    pub fn lease_renew_now(&self, id: i64) -> RenewNow {
        let committed = self.shared.commit_index.load(Ordering::Relaxed);
        if self.is_stopped() || !self.is_leader() || *self.shared.applied_index.borrow() < committed
        {
            return RenewNow::Wait;
        }
        match self.renew_step(id) {
            Attempt::Done(Ok(Renewed { ttl, clear_checkpoint: false })) => {
                RenewNow::Answered(Ok(ttl))
            }
            Attempt::Done(Ok(Renewed { ttl, clear_checkpoint: true })) => RenewNow::Clear(ttl),
            Attempt::Done(Err(err)) => RenewNow::Answered(Err(err)),
            Attempt::Retry => RenewNow::Wait,
        }
    }

    /// The end of a renewal that cleared the lease's checkpoint: the clearing
    /// recorded through Raft before the TTL is answered.
    pub async fn lease_renew_cleared(&self, id: i64, ttl: i64) -> Result<i64, ServerError> {
        // Recorded before answering (as etcd), so no later leader can start
        // the renewed lease from the old remaining TTL.
        let cleared = LeaseCheckpoint { id, remaining_ttl: 0 };
        self.lease_checkpoint(vec![cleared]).await.map(|_| ttl)
    }

    /// A lease's granted and remaining TTL (and keys when asked) as the leader's
    /// lessor knows them; `Ok(None)` when it does not exist.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Option<LeaseTimeToLiveResponse>, ServerError> {
        let answer = self
            .on_leader(
                || self.time_to_live_here(id, keys),
                |_, channel, left| async move {
                    let mut client = LeasePeerClient::new(channel);
                    let request = self.forwarded(LeaseTimeToLiveRequest { id, keys }, left);
                    remote_attempt(client.time_to_live(request).await)
                },
            )
            .await;
        match answer {
            Ok(response) => Ok(Some(response)),
            Err(ServerError::LeaseNotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// KeepAlive on this member's lessor, if it leads (after applying what was
    /// committed before, so a lease granted just before a leader change is known).
    pub(crate) async fn renew_here(&self, id: i64) -> Attempt<i64> {
        if !self.is_leader() {
            return Attempt::Retry;
        }
        if let Err(err) = self.wait_applied_to_commit().await {
            return Attempt::Done(Err(err));
        }
        match self.renew_step(id) {
            Attempt::Done(Ok(Renewed { ttl, clear_checkpoint: true })) => {
                Attempt::Done(self.lease_renew_cleared(id, ttl).await)
            }
            Attempt::Done(renewed) => Attempt::Done(renewed.map(|r| r.ttl)),
            Attempt::Retry => Attempt::Retry,
        }
    }

    /// Renews in this member's lessor; `Retry` when it is not the primary. A
    /// lease it does not know renews to TTL 0: etcd answers such a KeepAlive
    /// with TTL 0 rather than an error.
    fn renew_step(&self, id: i64) -> Attempt<Renewed> {
        match self.lessor.lock().expect("lessor lock").renew(id, monotonic_ms()) {
            Ok(renewed) => Attempt::Done(Ok(renewed)),
            Err(etcd_lease::LeaseError::NotFound) => {
                Attempt::Done(Ok(Renewed { ttl: 0, clear_checkpoint: false }))
            }
            Err(etcd_lease::LeaseError::NotPrimary) => Attempt::Retry,
            Err(err) => Attempt::Done(Err(lease_error(&err))),
        }
    }

    /// TimeToLive from this member's lessor, if it leads.
    pub(crate) async fn time_to_live_here(
        &self,
        id: i64,
        keys: bool,
    ) -> Attempt<LeaseTimeToLiveResponse> {
        if !self.is_leader() {
            return Attempt::Retry;
        }
        if let Err(err) = self.wait_applied_to_commit().await {
            return Attempt::Done(Err(err));
        }
        let lessor = self.lessor.lock().expect("lessor lock");
        if !lessor.is_primary() {
            return Attempt::Retry;
        }
        match lessor.time_to_live(id, monotonic_ms(), keys) {
            Ok(info) => Attempt::Done(Ok(LeaseTimeToLiveResponse {
                header: None,
                id: info.id,
                ttl: info.remaining_ttl,
                granted_ttl: info.granted_ttl,
                keys: info.keys,
            })),
            Err(err) => Attempt::Done(Err(lease_error(&err))),
        }
    }

    /// Waits (up to etcd's one second) until this member has applied every entry
    /// committed when it was called.
    async fn wait_applied_to_commit(&self) -> Result<(), ServerError> {
        let committed = self.shared.commit_index.load(Ordering::Relaxed);
        let mut applied = self.shared.applied_index.subscribe();
        let outcome =
            tokio::time::timeout(APPLY_WAIT_MAX, applied.wait_for(|a| *a >= committed)).await;
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::TimeoutWaitAppliedIndex),
        }
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
            let LeaseDuties { expired, checkpoints } = {
                let mut lessor = self.lessor.lock().expect("lessor lock");
                lease_duties(&mut lessor, monotonic_ms(), self.is_leader())
            };
            for batch in checkpoints.chunks(LEASE_CHECKPOINT_BATCH_MAX) {
                let batch: Vec<LeaseCheckpoint> = batch
                    .iter()
                    .map(|&(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                    .collect();
                let server = self.clone();
                tokio::spawn(async move {
                    if let Err(err) = server.lease_checkpoint(batch).await {
                        tracing::warn!(error = %err, "failed to record lease checkpoints");
                    }
                });
            }
            // A leader cut off from the quorum still believes it leads until
            // check-quorum deposes it; its lessor must not revoke leases the new
            // leader keeps alive. So leadership is confirmed through the quorum
            // (a ReadIndex) before revoking, as etcd 3.5.13 does.
            if !expired.is_empty() && (self.read_barrier().await.is_err() || !self.is_leader()) {
                tracing::info!(
                    expired = expired.len(),
                    "not revoking expired leases: leadership not confirmed"
                );
                continue;
            }
            for id in expired {
                let server = self.clone();
                tokio::spawn(async move {
                    // The member revokes as root (etcd's `WithRoot`), so expiry
                    // works whatever permissions the lease's keys have.
                    match server.lease_revoke(id, &server.root_credentials()).await {
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
