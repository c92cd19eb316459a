//! The raft loop: the shell around the member's Raft half
//! ([`etcd_server::raft_core::RaftCore`]) on its own thread (with its own
//! single-threaded runtime, which also runs the peers' sender tasks). Per turn
//! it drains many inputs and messages into the core, then runs the Ready
//! cycles, handing each Ready's writes to the WAL writer's thread
//! (`wal_writer.rs`: one fsync for whatever queued up meanwhile, so concurrent
//! proposals share it) without waiting, and turns the core's
//! effects into answers for the waiting requests. A write the writer finished
//! comes back as an input, after which Raft may commit and apply it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_raftnode::{ConfState, Entry, HardState, Message, ReadyWrite, Role};
use etcd_server::raft_core::{Effect, Input, RaftCore, RaftIo};
use etcd_server::wal_entries::snapshot_marker;
use etcd_server::{Applied, ServerError};
use tokio::sync::mpsc;

use crate::inputs::{fatal, ApplySender, ApplyTask, PeerSender, RaftInput, Reader};
use crate::shared::Shared;
use crate::wal_writer::WalWriter;

/// Inputs accepted per turn before running a Ready cycle: bounds a turn's latency.
const INPUTS_PER_TURN_MAX: usize = 4096;

/// How long inputs and peers' messages wait at most for a write in flight (a
/// stalled disk must not hold proposals up for longer than this before they are
/// appended and sent to followers, which can commit them without this member's
/// fsync, nor a follower's answers to its leader).
const INPUTS_HELD_MAX: Duration = Duration::from_millis(5);

/// The WAL writer and the peer transport as the Raft half uses them.
struct DaemonIo<'a> {
    wal: &'a WalWriter,
    peers: &'a dyn PeerSender,
    snapshots: &'a crate::snapshot::SnapshotSender,
    apply_tx: &'a ApplySender,
    shared: &'a Shared,
}

impl RaftIo for DaemonIo<'_> {
    fn send(&mut self, messages: Vec<Message>) {
        self.peers.send(messages);
    }

    fn send_snapshot(&mut self, message: Message) {
        self.snapshots.send(message);
    }

    fn persists_async(&self) -> bool {
        true
    }

    fn persist_async(&mut self, write: ReadyWrite) {
        self.wal.append(write);
    }

    /// The writes of a member that writes in its own turn (anyone but a
    /// leader with followers) and of a Ready that installs a leader's snapshot;
    /// made after whatever the writer has queued.
    fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>, must_sync: bool) {
        self.wal.persist(entries, hard_state, must_sync);
    }

    fn apply(&mut self, committed: Vec<Entry>) {
        if let Some(last) = committed.last() {
            self.shared.commit_index.fetch_max(last.index, Ordering::Relaxed);
        }
        if self.apply_tx.send(ApplyTask::Entries(committed, Instant::now())).is_err() {
            fatal("the apply loop stopped", "channel closed");
        }
    }

    /// The transport wrote the leader's backend to a file and put its path in
    /// the message's data; the apply loop swaps it in after every entry queued
    /// before it.
    fn install_backend(&mut self, index: u64, data: Vec<u8>) {
        let path = std::path::PathBuf::from(String::from_utf8_lossy(&data).into_owned());
        let (done, installed) = std::sync::mpsc::sync_channel(1);
        if self.apply_tx.send(ApplyTask::Install { index, path, done }).is_err()
            || installed.recv().is_err()
        {
            fatal("the apply loop stopped while installing a snapshot", index);
        }
    }

    fn save_snapshot(&mut self, index: u64, term: u64, conf_state: &ConfState) {
        self.wal.save_snapshot(snapshot_marker(index, term, conf_state));
    }

    fn release_log(&mut self, index: u64) {
        self.wal.release_to(index);
    }

    fn active_peers(&self) -> usize {
        self.peers.active_peers()
    }

    fn leader_changed(&mut self, leader: u64, role: Role) {
        let previous = self.shared.leader_id.swap(leader, Ordering::Relaxed);
        if previous != leader {
            if leader != 0 {
                self.shared.metrics.leader_changes.inc();
            }
            tracing::info!(leader = %format!("{leader:x}"), role = ?role, "raft.node: leader changed");
        }
    }
}

pub(crate) struct RaftLoop {
    pub core: RaftCore,
    pub wal: WalWriter,
    /// The newest Ready the WAL writer finished, as it finishes them.
    pub persisted: mpsc::UnboundedReceiver<u64>,
    pub inputs: mpsc::Receiver<RaftInput>,
    pub messages: mpsc::Receiver<Message>,
    pub peers: Arc<dyn PeerSender>,
    pub apply_tx: ApplySender,
    pub snapshots: crate::snapshot::SnapshotSender,
    pub shared: Arc<Shared>,
    pub heartbeat: Duration,
    /// Linearizable readers by the number the core knows them by.
    pub readers: HashMap<u64, Reader>,
    pub next_reader: u64,
}

impl RaftLoop {
    /// Runs until every input sender is dropped.
    pub async fn run(mut self) {
        self.shared.is_learner.store(self.core.is_learner(), Ordering::Relaxed);
        let mut ticker = tokio::time::interval(self.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        let mut writing_since: Option<Instant> = None;
        loop {
            let mut turn = Vec::new();
            // While a write is in flight, inputs and peers' messages wait for
            // it, up to INPUTS_HELD_MAX: those arriving during an fsync then
            // share the next Ready and write, as when this thread did the fsync
            // itself, instead of each costing a wake-up, a Ready and a write of
            // its own. Ticks and the writer's reports go on regardless, and a
            // stall longer than that lets everything in again.
            let hold_until = writing_since.map(|since| since + INPUTS_HELD_MAX);
            let holding = hold_until.is_some_and(|until| until > Instant::now());
            tokio::select! {
                _ = ticker.tick() => turn.push(Input::Tick),
                input = self.inputs.recv(), if !holding => match input {
                    Some(RaftInput::Stop) | None => stopping = true,
                    Some(input) => turn.extend(self.input(input)),
                },
                Some(message) = self.messages.recv(), if !holding => turn.push(Input::Message(message)),
                Some(number) = self.persisted.recv() => turn.push(Input::Persisted { number }),
                () = tokio::time::sleep_until(hold_until.unwrap_or_else(Instant::now).into()), if holding => {}
            }
            // Only the newest written Ready matters: it covers those before it.
            let mut written = None;
            while let Ok(number) = self.persisted.try_recv() {
                written = Some(number);
            }
            turn.extend(written.map(|number| Input::Persisted { number }));
            // A write reported lets the held inputs in.
            let reported = turn.iter().any(|i| matches!(i, Input::Persisted { .. }));
            let holding = holding && !reported;
            for _ in 0..INPUTS_PER_TURN_MAX {
                if holding {
                    break;
                }
                match self.messages.try_recv() {
                    Ok(message) => turn.push(Input::Message(message)),
                    Err(_) => break,
                }
            }
            turn.extend(
                self.peers.take_unreachable().into_iter().map(|peer| Input::Unreachable { peer }),
            );
            for _ in 0..INPUTS_PER_TURN_MAX {
                if holding {
                    break;
                }
                match self.inputs.try_recv() {
                    Ok(RaftInput::Stop) => stopping = true,
                    Ok(input) => turn.extend(self.input(input)),
                    Err(_) => break,
                }
            }
            self.run_turn(turn);
            // The peers' sender tasks share this thread: they send this turn's
            // messages now, not once a busy loop's cooperative budget runs out.
            tokio::task::yield_now().await;
            writing_since = match writing_since {
                _ if !self.core.write_in_flight() => None,
                Some(since) if !reported => Some(since),
                _ => Some(Instant::now()),
            };
            if stopping {
                break;
            }
        }
        self.wal.stop();
        tracing::info!("raft loop stopped");
    }

    /// Steps the core with a turn's inputs, runs its Ready cycles and carries
    /// out its effects.
    fn run_turn(&mut self, turn: Vec<Input>) {
        let started = Instant::now();
        let mut io = DaemonIo {
            wal: &mut self.wal,
            peers: self.peers.as_ref(),
            snapshots: &self.snapshots,
            apply_tx: &self.apply_tx,
            shared: &self.shared,
        };
        for input in turn {
            self.core.step(input, &mut io);
        }
        let effects = self.core.run_ready(crate::clock::monotonic_ms(), &mut io);
        for effect in effects {
            self.effect(effect);
        }
        self.shared.term.store(self.core.term(), Ordering::Relaxed);
        self.shared.commit_index.fetch_max(self.core.commit_index(), Ordering::Relaxed);
        self.shared.metrics.write_stages.raft_turn.observe(started.elapsed().as_secs_f64());
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::ReadsReady { readers, index } => {
                for reader in readers.iter().filter_map(|r| self.readers.remove(r)) {
                    let _ = reader.send(Ok(index));
                }
            }
            Effect::ReadsFailed { readers, error } => {
                for reader in readers.iter().filter_map(|r| self.readers.remove(r)) {
                    let _ = reader.send(Err(error.clone()));
                }
            }
            Effect::ProposalFailed { id, error } => {
                self.shared.wake(Applied { id, result: Err(error), revision: 0 });
            }
            Effect::FailPendingProposals(error) => self.shared.fail_waiters(&error),
            Effect::ConfigurationChanged { voters, learners } => {
                let learner = learners.contains(&self.core.id());
                self.shared.is_learner.store(learner, Ordering::Relaxed);
                tracing::info!(
                    voters = ?voters.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>(),
                    learners = ?learners.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>(),
                    "applied a membership change"
                );
            }
            Effect::ProbePeers => self.peers.probe(),
            Effect::SnapshotDropped { data } => {
                let _ = std::fs::remove_file(String::from_utf8_lossy(&data).as_ref());
            }
        }
    }

    /// Turns a request from another task into the core's input; queries and
    /// pass-throughs are answered here.
    fn input(&mut self, input: RaftInput) -> Option<Input> {
        Some(match input {
            RaftInput::Propose { id, data, at } => {
                let queued = at.elapsed().as_secs_f64();
                self.shared.metrics.write_stages.propose_queue.observe(queued);
                Input::Propose { id, data }
            }
            RaftInput::ReadIndex(reply) => {
                self.next_reader += 1;
                self.readers.insert(self.next_reader, reply);
                Input::ReadIndex { reader: self.next_reader }
            }
            RaftInput::Snapshot { index, term } => Input::Snapshot { index, term },
            RaftInput::TransferLeader { to } => Input::TransferLeader { to },
            RaftInput::ProposeMembershipChange { id, kind, node_id, context } => {
                Input::ProposeMembershipChange { id, kind, node_id, context }
            }
            RaftInput::ApplyMembershipChange { kind, node_id } => {
                Input::ApplyMembershipChange { kind, node_id }
            }
            RaftInput::ReportSnapshot { to, delivered } => Input::ReportSnapshot { to, delivered },
            RaftInput::PeerProgress { id, reply } => {
                let _ = reply.send(self.core.peer_progress(id));
                return None;
            }
            RaftInput::Defragment(reply) => {
                if let Err(ApplyTask::Defragment(reply)) =
                    self.apply_tx.send(ApplyTask::Defragment(reply))
                {
                    let _ = reply.send(Err(ServerError::Stopped));
                }
                return None;
            }
            RaftInput::Stop => unreachable!("handled by the loop"),
        })
    }
}
