//! The apply loop: committed entries in, MVCC changes out, on its own thread. It
//! merges queued batches into one backend transaction, then publishes the applied
//! index (releasing linearizable reads) and wakes the proposers' waiters. Every
//! `snapshot_count` entries it makes the backend durable and asks the raft loop to
//! record a snapshot, which lets the WAL drop what the backend now holds.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use etcd_server::Applier;
use tokio::sync::mpsc;

use crate::raft_loop::{ApplyTask, RaftInput};
use crate::shared::Shared;
use crate::watch_hub::WatchHub;

/// Entries merged into one backend transaction at most.
const ENTRIES_PER_BATCH_MAX: usize = 8192;

pub(crate) struct ApplyLoop {
    pub applier: Applier,
    pub tasks: Receiver<ApplyTask>,
    pub shared: Arc<Shared>,
    pub watch_hub: Arc<WatchHub>,
    pub kv: Arc<etcd_mvcc::KvStore>,
    pub raft_tx: mpsc::Sender<RaftInput>,
    pub member_events: mpsc::Sender<etcd_server::membership::MemberEvent>,
    pub snapshot_count: u64,
    pub snapshot_index: u64,
}

impl ApplyLoop {
    /// Runs until the raft loop drops its sender.
    pub fn run(mut self) {
        while let Ok(mut entries) = self.tasks.recv() {
            while entries.len() < ENTRIES_PER_BATCH_MAX {
                match self.tasks.try_recv() {
                    Ok(more) => entries.extend(more),
                    Err(_) => break,
                }
            }
            let last_index = entries.last().map_or(0, |e| e.index);
            let durable = last_index.saturating_sub(self.snapshot_index) >= self.snapshot_count;
            let outcome = match self.applier.apply(&entries, durable, crate::clock::monotonic_ms())
            {
                Ok(outcome) => outcome,
                Err(err) => {
                    tracing::error!(error = %err, "failed to apply committed entries; the member stops now");
                    std::process::abort();
                }
            };
            self.watch_hub.publish(outcome.events, self.kv.current_revision());
            self.shared.applied_index.send_replace(self.applier.consistent_index());
            for event in outcome.member_events {
                if self.member_events.blocking_send(event).is_err() {
                    break;
                }
            }
            for applied in outcome.applied {
                self.shared.wake(applied);
            }
            if durable && outcome.applied_index > 0 {
                self.snapshot_index = outcome.applied_index;
                let input = RaftInput::Snapshot {
                    index: outcome.applied_index,
                    term: outcome.applied_term,
                };
                if self.raft_tx.blocking_send(input).is_err() {
                    break;
                }
            }
        }
        tracing::info!("apply loop stopped");
    }
}
