//! The apply loop: committed entries in, MVCC changes out, on its own thread. It
//! merges queued batches into one backend transaction, then publishes the applied
//! index (releasing linearizable reads) and wakes the proposers' waiters.
//!
//! Commits are not fsynced one by one: the WAL already holds every committed
//! entry. The backend is made durable at least every `--backend-batch-interval`
//! (100 ms) or `--backend-batch-limit` entries, as etcd commits its bbolt batch,
//! so a restart after `kill -9` re-applies at most that much of the WAL before it
//! serves. Every `snapshot_count` entries it also asks the raft loop to record a
//! snapshot, which lets the WAL drop what the backend now holds.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use etcd_server::membership::MemberEvent;
use etcd_server::{Applier, ApplyContext};
use tokio::sync::mpsc;

use crate::raft_loop::{fatal, ApplyTask, RaftInput};
use crate::shared::Shared;
use crate::watch_hub::WatchHub;

/// Entries merged into one backend transaction at most.
const ENTRIES_PER_BATCH_MAX: usize = 8192;

pub(crate) struct ApplyLoop {
    pub member_id: u64,
    pub applier: Applier,
    pub tasks: Receiver<ApplyTask>,
    pub shared: Arc<Shared>,
    pub watch_hub: Arc<WatchHub>,
    pub kv: Arc<etcd_mvcc::KvStore>,
    pub raft_tx: mpsc::Sender<RaftInput>,
    pub member_events: mpsc::Sender<MemberEvent>,
    pub snapshot_count: u64,
    pub snapshot_index: u64,
    /// Index and time of the last durable backend commit.
    pub durable_index: u64,
    pub durable_at: std::time::Instant,
    pub cfg: crate::config::ServerConfig,
}

impl ApplyLoop {
    /// Runs until the raft loop drops its sender.
    pub fn run(mut self) {
        let mut pending: Option<ApplyTask> = None;
        loop {
            let task = match pending.take() {
                Some(task) => task,
                None => match self.tasks.recv() {
                    Ok(task) => task,
                    Err(_) => break,
                },
            };
            let keep_going = match task {
                ApplyTask::Entries(mut entries) => {
                    // Merge queued batches into one transaction, up to any other task.
                    while entries.len() < ENTRIES_PER_BATCH_MAX {
                        match self.tasks.try_recv() {
                            Ok(ApplyTask::Entries(more)) => entries.extend(more),
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.apply(&entries)
                }
                ApplyTask::Install { index, path, done } => {
                    self.install(index, &path);
                    let _ = done.send(());
                    true
                }
                ApplyTask::Defragment(reply) => {
                    let rewritten = crate::defrag::rewrite(self.kv.backend());
                    self.record_db_size();
                    let _ = reply.send(rewritten);
                    true
                }
            };
            if !keep_going {
                break;
            }
        }
        tracing::info!("apply loop stopped");
    }

    fn record_db_size(&self) {
        let size = self.kv.backend().size_bytes().unwrap_or(0);
        self.shared.db_size_bytes.store(size, std::sync::atomic::Ordering::Relaxed);
    }

    /// Applies entries; false once the raft loop is gone.
    fn apply(&mut self, entries: &[etcd_raftnode::Entry]) -> bool {
        let last_index = entries.last().map_or(0, |e| e.index);
        let snapshot_due = last_index.saturating_sub(self.snapshot_index) >= self.snapshot_count;
        let durable = snapshot_due
            || last_index.saturating_sub(self.durable_index) >= self.cfg.backend_batch_limit
            || self.durable_at.elapsed() >= self.cfg.backend_batch_interval;
        let leading = self.shared.leader_id.load(Ordering::Relaxed) == self.member_id;
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
            now_ms: crate::clock::monotonic_ms(),
            leading,
            promote_extend_ms: self.cfg.election_timeout.as_millis() as u64,
        };
        let started = std::time::Instant::now();
        let outcome = match self.applier.apply(entries, &context) {
            Ok(outcome) => outcome,
            Err(err) => fatal("failed to apply committed entries", err),
        };
        // etcd warns per request; the applier runs a batch in one transaction, so
        // the batch is what is timed (without its backend commit, which etcd too
        // leaves out: its commits are batched apart from the requests).
        let took = started.elapsed().saturating_sub(outcome.commit_duration);
        if took > self.cfg.warning_apply_duration {
            self.shared.metrics.slow_applies.inc();
            tracing::warn!(
                took = ?took,
                expected_duration = ?self.cfg.warning_apply_duration,
                entries = entries.len(),
                first_index = entries.first().map_or(0, |e| e.index),
                "apply request took too long"
            );
        }
        if !outcome.commit_duration.is_zero() {
            let seconds = outcome.commit_duration.as_secs_f64();
            self.shared.metrics.backend_commit_seconds.observe(seconds);
        }
        if outcome.promoted_lessor {
            tracing::info!("this member leads: its lessor tracks lease expiries now");
        }
        self.watch_hub.publish(outcome.events, self.kv.current_revision());
        self.record_db_size();
        self.shared.applied_index.send_replace(self.applier.consistent_index());
        for event in outcome.member_events {
            if self.member_events.blocking_send(event).is_err() {
                return false;
            }
        }
        for applied in outcome.applied {
            self.shared.wake(applied);
        }
        if durable && outcome.applied_index > 0 {
            self.durable_index = outcome.applied_index;
            self.durable_at = std::time::Instant::now();
        }
        if snapshot_due && outcome.applied_index > 0 {
            self.snapshot_index = outcome.applied_index;
            let input =
                RaftInput::Snapshot { index: outcome.applied_index, term: outcome.applied_term };
            if self.raft_tx.blocking_send(input).is_err() {
                return false;
            }
        }
        true
    }

    /// Replaces the backend with a leader's snapshot and reloads everything that
    /// was derived from it.
    fn install(&mut self, index: u64, path: &std::path::Path) {
        let backend = self.kv.backend();
        if let Err(err) = backend.replace_with(path) {
            fatal("failed to install the received snapshot", err);
        }
        if let Err(err) = self.kv.reload() {
            fatal("failed to load the installed snapshot", err);
        }
        if let Err(err) = self.applier.reload() {
            fatal("failed to read the installed snapshot's consistent index", err);
        }
        let lessor = crate::lease::recover_lessor(&self.cfg, backend, &self.kv);
        match lessor {
            Ok(lessor) => *self.applier.lessor().lock().expect("lessor lock") = lessor,
            Err(err) => fatal("failed to load the installed snapshot's leases", err),
        }
        match etcd_server::membership::read(backend) {
            // The follow-up task reconciles the transport's peers with these.
            Ok(members) => {
                let _ = self.member_events.blocking_send(MemberEvent::Reset(members));
            }
            Err(err) => fatal("failed to load the installed snapshot's members", err),
        }
        let revision = self.kv.current_revision();
        self.watch_hub.reset(revision);
        self.record_db_size();
        self.shared.applied_index.send_replace(self.applier.consistent_index());
        self.snapshot_index = index;
        tracing::info!(
            index,
            revision,
            consistent_index = self.applier.consistent_index(),
            "loaded the leader's snapshot"
        );
    }
}
