//! Automatic compaction, a leader-only duty (`--auto-compaction-mode`,
//! `--auto-compaction-retention`). Only the leader proposes compactions, through
//! Raft, so every member compacts at the same revision; when leadership moves,
//! the new leader's compactor takes over.
//!
//! Periodic mode follows etcd's schedule: the store revision is sampled every tenth
//! of the retention (of at most an hour); once a retention period has passed since
//! the last compaction, the store is compacted at the revision sampled one
//! retention ago. Revision mode keeps the newest `retention` revisions and checks
//! every five minutes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::CompactionRequest;
use etcd_server::ServerError;
use tokio::time::Instant;

use crate::config::AutoCompaction;
use crate::server::EtcdServer;

/// How often revision mode checks (etcd's fixed five minutes).
const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

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
        match mode {
            AutoCompaction::Periodic(period) => self.run_periodic(period).await,
            AutoCompaction::Revision(retain) => self.run_revision(retain).await,
        }
    }

    async fn run_periodic(self: Arc<Self>, period: Duration) {
        let retry = period.min(HOUR) / 10;
        let retentions = (period.as_secs_f64() / retry.as_secs_f64()) as usize + 1;
        let compact_interval = period.min(HOUR);
        let mut samples: VecDeque<i64> = VecDeque::new();
        let mut last_success = Instant::now();
        let mut wait = period;
        while !self.is_stopped() {
            samples.push_back(self.kv().current_revision());
            if samples.len() > retentions {
                samples.pop_front();
            }
            tokio::time::sleep(retry).await;
            if !self.is_leader() || last_success.elapsed() < wait {
                continue;
            }
            wait = compact_interval;
            let revision = samples[0];
            tracing::info!(revision, compact_period = ?period, "starting auto periodic compaction");
            match self.compact_to(revision).await {
                Ok(()) => {
                    tracing::info!(revision, "completed auto periodic compaction");
                    last_success = Instant::now();
                }
                Err(err) => {
                    tracing::warn!(revision, error = %err, retry_interval = ?retry, "failed auto periodic compaction")
                }
            }
        }
    }

    async fn run_revision(self: Arc<Self>, retain: i64) {
        let mut last = 0;
        while !self.is_stopped() {
            tokio::time::sleep(REVISION_CHECK_INTERVAL).await;
            let revision = self.kv().current_revision() - retain;
            if !self.is_leader() || revision <= 0 || revision == last {
                continue;
            }
            tracing::info!(
                revision,
                revision_retention = retain,
                "starting auto revision compaction"
            );
            match self.compact_to(revision).await {
                Ok(()) => last = revision,
                Err(err) => {
                    tracing::warn!(revision, error = %err, "failed auto revision compaction")
                }
            }
        }
    }
}
