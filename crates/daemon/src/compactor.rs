//! Automatic compaction (`--auto-compaction-mode`, `--auto-compaction-retention`):
//! the shell that runs the core's schedule ([`etcd_server::compactor`]) on a
//! timer and proposes what it asks for. Only the leader proposes, through
//! Raft, so every member compacts at the same revision.

use std::sync::Arc;
use std::time::Duration;

use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::CompactionRequest;
use etcd_server::compactor::{CompactionMode, Compactor, REVISION_CHECK_MS};
use etcd_server::ServerError;

use crate::clock::monotonic_ms;
use crate::config::AutoCompaction;
use crate::server::EtcdServer;

impl EtcdServer {
    async fn compact_to(&self, revision: i64) -> Result<(), ServerError> {
        let request = InternalRaftRequest {
            compaction: Some(CompactionRequest { revision, physical: false }),
            ..Default::default()
        };
        match self.propose(request).await?.result {
            Ok(_) | Err(ServerError::Compacted) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Runs the configured automatic compaction until the server stops.
    pub(crate) async fn run_auto_compaction(self: Arc<Self>, mode: AutoCompaction) {
        let mode = match mode {
            AutoCompaction::Periodic(period) => {
                CompactionMode::Periodic { retention_ms: period.as_millis() as u64 }
            }
            AutoCompaction::Revision(retain) => {
                CompactionMode::Revision { retain, check_ms: REVISION_CHECK_MS }
            }
        };
        let mut compactor = Compactor::new(mode, monotonic_ms());
        while !self.is_stopped() {
            let wait = compactor.next_check().saturating_sub(monotonic_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let revision = self.kv().current_revision();
            let Some(target) = compactor.tick(monotonic_ms(), revision, self.is_leader()) else {
                continue;
            };
            match mode {
                CompactionMode::Periodic { retention_ms } => tracing::info!(
                    revision = target,
                    compact_period = ?Duration::from_millis(retention_ms),
                    "starting auto periodic compaction"
                ),
                CompactionMode::Revision { retain, .. } => tracing::info!(
                    revision = target,
                    revision_retention = retain,
                    "starting auto revision compaction"
                ),
            }
            let outcome = self.compact_to(target).await;
            compactor.finished(target, outcome.is_ok(), monotonic_ms());
            match outcome {
                Ok(()) => tracing::info!(revision = target, "completed auto compaction"),
                Err(err) => tracing::warn!(
                    revision = target,
                    error = %err,
                    "failed auto compaction; retrying at the next check"
                ),
            }
        }
    }
}
