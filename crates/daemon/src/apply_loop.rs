//! The apply loop: the shell around the member's apply half
//! ([`etcd_server::apply_core::ApplyCore`]), a task on the runtime that serves
//! clients (so a proposer it wakes runs next on the same worker, with no
//! cross-thread wake-up; it yields after every batch). It merges queued
//! batches into one backend transaction, then publishes the events to watchers
//! and the applied index (releasing linearizable reads), wakes the proposers'
//! waiters and asks the raft loop for the snapshots the core schedules.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use etcd_mvcc::CompactStep;
use etcd_server::apply_core::ApplyCore;
use etcd_server::membership::MemberEvent;
use tokio::sync::mpsc;

use crate::inputs::{fatal, ApplyReceiver, ApplyTask, RaftInput};
use crate::shared::Shared;
use etcd_server::watch::WatchHub;

/// Entries merged into one backend transaction at most.
const ENTRIES_PER_BATCH_MAX: usize = 8192;

/// How often applying re-reads the backend file's size (a `stat` per batch
/// cost about 1% of the apply loop). etcd's quota sees the size its last
/// batch commit left, up to `--backend-batch-interval` (100 ms) old; this is
/// no staler.
const DB_SIZE_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

pub(crate) struct ApplyLoop {
    pub member_id: u64,
    pub core: ApplyCore,
    pub tasks: ApplyReceiver,
    pub shared: Arc<Shared>,
    pub watch_hub: Arc<WatchHub>,
    pub raft_tx: mpsc::Sender<RaftInput>,
    pub member_events: mpsc::Sender<MemberEvent>,
    pub warning_apply_duration: std::time::Duration,
    /// When the compaction being removed in batches started.
    pub compaction_started: Option<std::time::Instant>,
    /// When applying last read the backend's size.
    pub db_size_read: std::time::Instant,
}

impl ApplyLoop {
    /// Runs until the raft loop drops its sender.
    pub async fn run(mut self) {
        let mut pending: Option<ApplyTask> = None;
        loop {
            let task = match pending.take() {
                Some(task) => task,
                None if self.core.kv().compaction_in_progress().is_some() => {
                    match self.tasks.try_recv() {
                        Ok(task) => task,
                        Err(std::sync::mpsc::TryRecvError::Empty) => {
                            // Nothing to apply: the compaction's next batch,
                            // then the worker's other tasks.
                            self.compact_step();
                            tokio::task::yield_now().await;
                            continue;
                        }
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                    }
                }
                None => {
                    let due = self.core.durable_due().map(|at| {
                        let wait = at.saturating_sub(crate::clock::monotonic_ms());
                        tokio::time::Instant::now() + std::time::Duration::from_millis(wait)
                    });
                    tokio::select! {
                        task = self.tasks.recv() => match task {
                            Some(task) => task,
                            None => break,
                        },
                        () = sleep_until(due) => {
                            self.make_durable();
                            continue;
                        }
                    }
                }
            };
            let keep_going = match task {
                ApplyTask::Entries(mut entries, handed_on) => {
                    let stages = &self.shared.metrics.write_stages;
                    stages.apply_queue.observe(handed_on.elapsed().as_secs_f64());
                    // Merge queued batches into one transaction, up to any other task.
                    while entries.len() < ENTRIES_PER_BATCH_MAX {
                        match self.tasks.try_recv() {
                            Ok(ApplyTask::Entries(more, _)) => entries.extend(more),
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.apply(&entries).await
                }
                ApplyTask::Install { index, path, done } => {
                    self.install(index, &path).await;
                    let _ = done.send(());
                    true
                }
                ApplyTask::Defragment(reply) => {
                    let rewritten =
                        off_the_workers(|| crate::defrag::rewrite(self.core.kv().backend()));
                    self.record_db_size();
                    let _ = reply.send(rewritten);
                    true
                }
            };
            if !keep_going {
                break;
            }
            // Under load, one batch of a compaction between applies: it moves
            // on without holding the applies up for more than a batch.
            if self.core.kv().compaction_in_progress().is_some() {
                self.compact_step();
            }
            // The proposers just woken (and anything else queued on this
            // worker) run before the next batch.
            tokio::task::yield_now().await;
        }
        // A clean stop leaves everything applied in the backend, as etcd's
        // does: tools that read the data dir offline rely on it.
        if self.core.durable_due().is_some() {
            self.make_durable();
        }
        tracing::info!("apply loop stopped");
    }

    /// Makes what was applied durable after a quiet batch interval, as etcd's
    /// batch transaction commits on its interval whether or not more comes.
    fn make_durable(&mut self) {
        match self.core.make_durable(crate::clock::monotonic_ms()) {
            Ok(took) => self.shared.metrics.backend_commit_seconds.observe(took.as_secs_f64()),
            Err(err) => fatal("failed to make the applied entries durable", err),
        }
    }

    /// Removes one batch of a compaction's rows (timed as etcd times them);
    /// wakes physical compactions waiting for the end.
    fn compact_step(&mut self) {
        let started = std::time::Instant::now();
        let first = *self.compaction_started.get_or_insert(started);
        let metrics = &self.shared.metrics;
        match self.core.compact_step() {
            Ok(CompactStep::More { removed }) => {
                metrics.compaction_keys.inc_by(removed);
                metrics.compaction_pause_ms.observe(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(CompactStep::Finished { revision, removed }) => {
                metrics.compaction_keys.inc_by(removed);
                let took = first.elapsed();
                metrics.compaction_total_ms.observe(took.as_secs_f64() * 1000.0);
                self.compaction_started = None;
                tracing::info!(compact_revision = revision, took = ?took, "finished scheduled compaction");
                self.record_db_size();
                self.shared.compactions_finished.send_modify(|n| *n += 1);
            }
            Ok(CompactStep::Idle) => {}
            Err(err) => fatal("failed to compact", err),
        }
    }

    fn record_db_size(&mut self) {
        self.db_size_read = std::time::Instant::now();
        let size = self.core.kv().backend().size_bytes().unwrap_or(0);
        self.shared.db_size_bytes.store(size, std::sync::atomic::Ordering::Relaxed);
    }

    /// Applies entries; false once the raft loop is gone.
    async fn apply(&mut self, entries: &[etcd_raftnode::Entry]) -> bool {
        let leading = self.shared.leader_id.load(Ordering::Relaxed) == self.member_id;
        let started = std::time::Instant::now();
        let result = match self.core.apply(entries, crate::clock::monotonic_ms(), leading) {
            Ok(result) => result,
            Err(err) => fatal("failed to apply committed entries", err),
        };
        let outcome = result.outcome;
        self.shared.metrics.write_stages.apply.observe(started.elapsed().as_secs_f64());
        // etcd warns per request; the applier runs a batch in one transaction, so
        // the batch is what is timed (without its backend commit, which etcd too
        // leaves out: its commits are batched apart from the requests).
        let took = started.elapsed().saturating_sub(outcome.commit_duration);
        if took > self.warning_apply_duration {
            self.shared.metrics.slow_applies.inc();
            tracing::warn!(
                took = ?took,
                expected_duration = ?self.warning_apply_duration,
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
        self.watch_hub.publish(outcome.events, self.core.kv().current_revision());
        if self.db_size_read.elapsed() >= DB_SIZE_REFRESH {
            self.record_db_size();
        }
        self.shared.applied_index.send_replace(self.core.applied_index());
        for event in outcome.member_events {
            if self.member_events.send(event).await.is_err() {
                return false;
            }
        }
        for applied in outcome.applied {
            self.shared.wake(applied);
        }
        if let Some((index, term)) = result.snapshot {
            if self.raft_tx.send(RaftInput::Snapshot { index, term }).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Replaces the backend with a leader's snapshot and reloads everything that
    /// was derived from it.
    async fn install(&mut self, index: u64, path: &std::path::Path) {
        let members = off_the_workers(|| {
            if let Err(err) = self.core.kv().backend().replace_with(path) {
                fatal("failed to install the received snapshot", err);
            }
            match self.core.installed(index) {
                Ok(members) => members,
                Err(err) => fatal("failed to load the installed snapshot", err),
            }
        });
        // The follow-up task reconciles the transport's peers with these.
        let _ = self.member_events.send(MemberEvent::Reset(members)).await;
        let revision = self.core.kv().current_revision();
        self.watch_hub.reset(revision);
        // The snapshot may have brought a compaction of its own, or none.
        self.shared.compactions_finished.send_modify(|n| *n += 1);
        self.record_db_size();
        self.shared.applied_index.send_replace(self.core.applied_index());
        tracing::info!(
            index,
            revision,
            consistent_index = self.core.applied_index(),
            "loaded the leader's snapshot"
        );
    }
}

/// Runs `work` that takes long (a backend rewrite or swap: seconds on a large
/// backend) without holding a runtime worker from the other tasks: on a
/// multi-threaded runtime the worker's queue moves to another thread
/// meanwhile. A current-thread runtime (tests) has nowhere to move it, so
/// the work runs in place.
fn off_the_workers<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
