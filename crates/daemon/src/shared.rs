//! State shared between the gRPC handlers and the raft and apply loops.

use etcd_server::waiters::Waiters;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use etcd_server::{Applied, ServerError};
use tokio::sync::watch;

use crate::inputs::Waiter;

/// Published progress and the waiters of in-flight proposals.
pub(crate) struct Shared {
    /// The known leader (0 when none).
    pub leader_id: AtomicU64,
    /// The current Raft term.
    pub term: AtomicU64,
    /// Whether this member is a learner (set when the configuration changes).
    pub is_learner: std::sync::atomic::AtomicBool,
    /// The backend file's size, refreshed after every applied batch (so the quota
    /// check on the write path reads an atomic instead of the filesystem).
    pub db_size_bytes: AtomicU64,
    /// The backend's bytes in use as last measured (a page walk, so cached), and
    /// the quota costs of the writes admitted since.
    pub db_in_use: Mutex<Option<InUse>>,
    /// The highest committed index seen.
    pub commit_index: AtomicU64,
    /// The index of the last entry whose effects readers can see.
    pub applied_index: watch::Sender<u64>,
    /// How many compactions finished removing their rows (a physical
    /// compaction's answer waits for the next one).
    pub compactions_finished: watch::Sender<u64>,
    /// Proposals waiting for their entry to be applied, by request ID.
    pub waiters: Mutex<Waiters<Waiter>>,
    pub metrics: crate::metrics::Metrics,
}

/// A measurement of the backend's bytes in use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InUse {
    pub bytes: u64,
    pub at: std::time::Instant,
    /// Quota costs of the writes admitted since the measurement.
    pub admitted: u64,
}

impl Shared {
    pub fn new(applied_index: u64, extensive_metrics: bool) -> Shared {
        Shared {
            leader_id: AtomicU64::new(0),
            term: AtomicU64::new(0),
            is_learner: std::sync::atomic::AtomicBool::new(false),
            db_size_bytes: AtomicU64::new(0),
            db_in_use: Mutex::new(None),
            commit_index: AtomicU64::new(applied_index),
            applied_index: watch::Sender::new(applied_index),
            compactions_finished: watch::Sender::new(0),
            waiters: Mutex::new(Waiters::default()),
            metrics: crate::metrics::Metrics::new(extensive_metrics),
        }
    }

    /// Fails every proposal waiting here with `err` (this member lost its leader).
    pub fn fail_waiters(&self, err: &ServerError) {
        let failed = self.waiters.lock().expect("waiters lock").fail_all(err);
        if !failed.is_empty() {
            tracing::info!(pending = failed.len(), error = %err, "failing pending proposals");
        }
        let now = std::time::Instant::now();
        for (waiter, applied) in failed {
            let _ = waiter.send((applied, now));
        }
    }

    /// Hands a result to the waiter of its proposal, if this member has one.
    pub fn wake(&self, applied: Applied) {
        let woken = self.waiters.lock().expect("waiters lock").applied(applied);
        if let Some((waiter, applied)) = woken {
            let _ = waiter.send((applied, std::time::Instant::now()));
        }
    }
}
