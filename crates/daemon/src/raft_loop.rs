//! The raft loop: the only owner of the `RaftNode` and the WAL. It runs on its own
//! thread (with its own single-threaded runtime, since it blocks on fsync) and, per
//! turn, drains many inputs, ticks, and runs Ready cycles: one WAL write and at
//! most one fsync per Ready, so concurrent proposals share an fsync.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_raftnode::{
    encode_conf_state, Entry, HardState, MembershipChange, Message, RaftNode, ReadState, ReadySink,
    Role, Snapshot,
};
use etcd_server::{Applied, ServerError};
use etcd_wal::{SnapshotMarker, Wal};
use tokio::sync::{mpsc, oneshot};

use crate::bootstrap::to_wal_entry;
use crate::shared::Shared;

/// Inputs accepted per turn before running a Ready cycle: bounds a turn's latency.
const INPUTS_PER_TURN_MAX: usize = 4096;
/// An unanswered ReadIndex is re-sent after this long (raft-rs silently drops one
/// sent before the leader committed an entry of its term).
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);
/// Right after a leader change the retry is this much shorter: a new leader drops
/// every ReadIndex until it has committed an entry of its term, which takes
/// about one round trip.
const READ_INDEX_RETRY_AFTER_LEADER_CHANGE: Duration = Duration::from_millis(50);
/// How long after a leader change the short retry applies.
const LEADER_CHANGE_WINDOW: Duration = Duration::from_secs(2);

/// Heartbeats without a leader after which this member's pending proposals fail.
const LEADERLESS_GRACE_TICKS: u32 = 2;

/// What other tasks ask of the raft loop.
pub(crate) enum RaftInput {
    /// Propose an encoded `InternalRaftRequest` whose waiter is registered under `id`.
    Propose { id: u64, data: Vec<u8> },
    /// Ask for a read index; answered with the index to wait for.
    ReadIndex(Reader),
    /// The backend is durable up to `index`: record a snapshot and release the WAL.
    Snapshot { index: u64, term: u64 },
    /// Hand leadership to another member; answered once it leads (or not).
    TransferLeader { to: u64 },
    /// Propose a membership change whose waiter is registered under `id`.
    ProposeMembershipChange { id: u64, kind: MembershipChange, node_id: u64, context: Vec<u8> },
    /// A committed membership change was applied to the members table; apply it to
    /// Raft's configuration.
    ApplyMembershipChange { kind: MembershipChange, node_id: u64 },
    /// How sending a snapshot to a peer ended.
    ReportSnapshot { to: u64, delivered: bool },
    /// How far a peer's log matches (leader only): (matched, leader commit).
    PeerProgress { id: u64, reply: oneshot::Sender<Option<(u64, u64)>> },
    /// Rewrite the backend compactly, in order with the entries being applied.
    Defragment(crate::defrag::Reply),
    /// Stop after this turn (graceful shutdown).
    Stop,
}

/// Work handed to the apply loop, in log order.
pub(crate) enum ApplyTask {
    /// Committed entries to apply.
    Entries(Vec<Entry>),
    /// A leader's snapshot to install: the received backend file, at `index`; the
    /// raft loop waits on `done` before recording the snapshot.
    Install { index: u64, path: std::path::PathBuf, done: std::sync::mpsc::SyncSender<()> },
    /// Rewrite the backend between batches (see `defrag.rs`).
    Defragment(crate::defrag::Reply),
}

/// Where Raft messages for other members go (the peer transport).
pub trait PeerSender: Send + Sync {
    /// Queues messages for their destinations without blocking.
    fn send(&self, messages: Vec<Message>);
    /// Peers that could not be reached since the last call.
    fn take_unreachable(&self) -> Vec<u64>;
    /// Peers with a stream up now.
    fn active_peers(&self) -> usize;
}

impl PeerSender for etcd_transport::PeerTransport {
    fn send(&self, messages: Vec<Message>) {
        etcd_transport::PeerTransport::send(self, messages);
    }
    fn take_unreachable(&self) -> Vec<u64> {
        etcd_transport::PeerTransport::take_unreachable(self)
    }
    fn active_peers(&self) -> usize {
        etcd_transport::PeerTransport::active_peers(self)
    }
}

struct RaftIo<'a> {
    wal: &'a mut Wal,
    peers: &'a dyn PeerSender,
    /// The received backend file of the leader's snapshot, by index.
    incoming_snapshot: &'a mut Option<(u64, std::path::PathBuf)>,
    /// Snapshot messages waiting for their data to be attached.
    outgoing_snapshots: Vec<Message>,
    apply_tx: &'a SyncSender<ApplyTask>,
    shared: &'a Shared,
    read_states: Vec<ReadState>,
}

/// Stops the process: for failures after which continuing could lose or corrupt data.
pub(crate) fn fatal(what: &str, err: impl std::fmt::Display) -> ! {
    tracing::error!(error = %err, "{what}; the member cannot continue safely and stops now");
    std::process::abort();
}

impl RaftIo<'_> {
    /// Installs the leader's snapshot: the apply loop swaps in its backend (after
    /// every entry queued before it), then the WAL records it.
    fn install(&mut self, snapshot: &Snapshot) {
        let index = snapshot.get_metadata().index;
        let path = match self.incoming_snapshot.take() {
            Some((received, path)) if received == index => path,
            _ => fatal("raft produced a snapshot this member did not receive", index),
        };
        let (done, installed) = std::sync::mpsc::sync_channel(1);
        if self.apply_tx.send(ApplyTask::Install { index, path, done }).is_err()
            || installed.recv().is_err()
        {
            fatal("the apply loop stopped while installing a snapshot", index);
        }
        let marker = SnapshotMarker {
            index,
            term: snapshot.get_metadata().term,
            conf_state: encode_conf_state(snapshot.get_metadata().get_conf_state()),
        };
        if let Err(err) = self.wal.save_snapshot(&marker).and_then(|()| self.wal.sync()) {
            fatal("failed to record an installed snapshot in the WAL", err);
        }
        tracing::info!(index, "installed a snapshot from the leader");
    }
}

impl ReadySink for RaftIo<'_> {
    fn send(&mut self, mut messages: Vec<Message>) {
        let is_snapshot = |m: &Message| m.get_msg_type() == etcd_raftnode::MessageType::MsgSnapshot;
        if messages.iter().any(is_snapshot) {
            let (snapshots, rest): (Vec<Message>, Vec<Message>) =
                messages.into_iter().partition(is_snapshot);
            self.outgoing_snapshots.extend(snapshots);
            messages = rest;
        }
        self.peers.send(messages);
    }

    fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
        must_sync: bool,
    ) {
        if let Some(snapshot) = snapshot {
            self.install(snapshot);
        }
        let entries: Vec<etcd_wal::Entry> = entries.iter().map(to_wal_entry).collect();
        let hard_state = hard_state.map(|hs| etcd_wal::HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        });
        if let Err(err) = self.wal.append(&entries, hard_state.as_ref()) {
            fatal("failed to append to the WAL", err);
        }
        if must_sync {
            let started = Instant::now();
            if let Err(err) = self.wal.sync() {
                fatal("failed to fsync the WAL", err);
            }
            self.shared.metrics.wal_fsync_seconds.observe(started.elapsed().as_secs_f64());
        }
    }

    fn apply(&mut self, committed: Vec<Entry>) {
        if let Some(last) = committed.last() {
            self.shared.commit_index.fetch_max(last.index, Ordering::Relaxed);
        }
        if self.apply_tx.send(ApplyTask::Entries(committed)).is_err() {
            fatal("the apply loop stopped", "channel closed");
        }
    }

    fn read_states(&mut self, states: Vec<ReadState>) {
        self.read_states.extend(states);
    }

    fn soft_state(&mut self, leader_id: u64, role: Role) {
        let previous = self.shared.leader_id.swap(leader_id, Ordering::Relaxed);
        if previous != leader_id {
            if leader_id != 0 {
                self.shared.metrics.leader_changes.inc();
            }
            tracing::info!(
                leader = %format!("{leader_id:x}"),
                role = ?role,
                "raft.node: leader changed"
            );
        }
    }
}

/// A linearizable reader waiting for the index it must see applied.
type Reader = oneshot::Sender<Result<u64, ServerError>>;

/// ReadIndex requests: those waiting to be sent, and the batch in flight with its
/// context and when it was (re)sent.
struct ReadQueue {
    /// This member: contexts must be unique across members, because the leader
    /// ignores a ReadIndex whose context equals one it already has pending.
    member_id: u64,
    next_ctx: u64,
    waiting: Vec<Reader>,
    in_flight: Option<([u8; 16], Vec<Reader>, Instant)>,
    /// Until when retries are short (a leader change happened just before).
    short_retries_until: Option<Instant>,
}

impl ReadQueue {
    fn new(member_id: u64) -> ReadQueue {
        // A time-based start, so a restarted member's contexts do not repeat
        // those of its previous run that a leader may still hold.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        ReadQueue {
            member_id,
            next_ctx: start,
            waiting: Vec::new(),
            in_flight: None,
            short_retries_until: None,
        }
    }

    fn send_if_due(&mut self, node: &mut RaftNode) {
        let now = Instant::now();
        let retry = match self.short_retries_until {
            Some(until) if now < until => READ_INDEX_RETRY_AFTER_LEADER_CHANGE,
            _ => READ_INDEX_RETRY,
        };
        let due = match &self.in_flight {
            None => !self.waiting.is_empty(),
            Some((_, _, sent)) => now.duration_since(*sent) >= retry,
        };
        if !due {
            return;
        }
        self.next_ctx = self.next_ctx.wrapping_add(1);
        let mut ctx = [0u8; 16];
        ctx[..8].copy_from_slice(&self.member_id.to_be_bytes());
        ctx[8..].copy_from_slice(&self.next_ctx.to_be_bytes());
        let mut batch = self.in_flight.take().map(|(_, b, _)| b).unwrap_or_default();
        batch.append(&mut self.waiting);
        node.read_index(ctx.to_vec());
        self.in_flight = Some((ctx, batch, now));
    }

    /// Fails every reader, waiting or in flight (this member lost its leader:
    /// nobody can confirm a read index, and the client may find a leader elsewhere).
    fn fail_all(&mut self, err: &ServerError) {
        let in_flight = self.in_flight.take().map(|(_, batch, _)| batch).unwrap_or_default();
        for reader in self.waiting.drain(..).chain(in_flight) {
            let _ = reader.send(Err(err.clone()));
        }
    }

    /// Makes the batch in flight due now (a new leader knows nothing of it), and
    /// retries soon for a while (the new leader may drop it until it commits).
    fn resend_now(&mut self) {
        let now = Instant::now();
        self.short_retries_until = Some(now + LEADER_CHANGE_WINDOW);
        if let Some((_, _, sent)) = &mut self.in_flight {
            *sent = now.checked_sub(READ_INDEX_RETRY).unwrap_or(*sent);
        }
    }

    fn answer(&mut self, states: Vec<ReadState>) {
        for state in states {
            let matches = self
                .in_flight
                .as_ref()
                .is_some_and(|(ctx, _, _)| state.request_ctx == ctx.as_slice());
            if matches {
                let (_, batch, _) = self.in_flight.take().expect("checked above");
                for reader in batch {
                    let _ = reader.send(Ok(state.index));
                }
            }
        }
    }
}

pub(crate) struct RaftLoop {
    pub node: RaftNode,
    pub wal: Wal,
    pub inputs: mpsc::Receiver<RaftInput>,
    pub messages: mpsc::Receiver<Message>,
    pub peers: Arc<dyn PeerSender>,
    pub apply_tx: SyncSender<ApplyTask>,
    pub snapshots: crate::snapshot::SnapshotSender,
    pub incoming_snapshot: Option<(u64, std::path::PathBuf)>,
    /// Entries kept in memory behind a snapshot, for followers that lag a little
    /// (`--experimental-snapshot-catchup-entries`).
    pub catch_up_entries: u64,
    /// `--max-wals=0`: keep every WAL segment (etcd's "unlimited"); otherwise
    /// the segments a snapshot covers go at once, fewer than any maximum.
    pub keep_all_wal_segments: bool,
    /// `--initial-election-tick-advance`: until when to look for the peer
    /// streams that let a starting member skip most of its first election
    /// timeout (none: not asked, or done).
    pub tick_advance_until: Option<Instant>,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    pub shared: Arc<Shared>,
    pub heartbeat: Duration,
    /// The leader as of the previous turn (0: none).
    pub last_leader: u64,
    /// Since when this member knows no leader.
    pub leaderless_since: Option<Instant>,
    /// Whether the pending proposals were failed since the leader was lost.
    pub failed_waiters: bool,
}

impl RaftLoop {
    /// Runs until every input sender is dropped.
    pub async fn run(mut self) {
        let voters = self.node.conf_state().voters;
        self.shared.is_learner.store(self.node.is_learner(), Ordering::Relaxed);
        if voters == [self.node.id()] {
            // The only voter need not wait an election timeout to lead.
            if let Err(err) = self.node.campaign() {
                tracing::warn!(error = %err, "raft: campaign failed");
            }
        }
        let mut ticker = tokio::time::interval(self.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reads = ReadQueue::new(self.node.id());
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.node.tick(),
                input = self.inputs.recv() => match input {
                    Some(RaftInput::Stop) | None => stopping = true,
                    Some(input) => self.handle(input, &mut reads),
                },
                Some(message) = self.messages.recv() => self.step(message),
            }
            for _ in 0..INPUTS_PER_TURN_MAX {
                match self.messages.try_recv() {
                    Ok(message) => self.step(message),
                    Err(_) => break,
                }
            }
            for peer in self.peers.take_unreachable() {
                self.node.report_unreachable(peer);
            }
            for _ in 0..INPUTS_PER_TURN_MAX {
                match self.inputs.try_recv() {
                    Ok(RaftInput::Stop) => stopping = true,
                    Ok(input) => self.handle(input, &mut reads),
                    Err(_) => break,
                }
            }
            self.advance_ticks_once_connected();
            reads.send_if_due(&mut self.node);
            self.run_ready(&mut reads);
            if stopping {
                break;
            }
        }
        if let Err(err) = self.wal.sync() {
            fatal("failed to fsync the WAL at shutdown", err);
        }
        tracing::info!("raft loop stopped");
    }

    /// etcd's initial election tick advance: once a starting member has streams
    /// to more than one peer, it fast-forwards all but two ticks of its election
    /// timeout, so a new cluster elects within a few heartbeats instead of a whole
    /// timeout. A running leader's next heartbeat (every tick) still arrives in
    /// time, and pre-vote keeps a member that guessed wrong from deposing it.
    /// Given up after 5 s (etcd's connection read timeout) without peers.
    fn advance_ticks_once_connected(&mut self) {
        let Some(until) = self.tick_advance_until else { return };
        let active = self.peers.active_peers();
        if active > 1 {
            let ticks = self.election_ticks.saturating_sub(2);
            tracing::info!(
                local_member_id = %format!("{:x}", self.node.id()),
                forward_ticks = ticks,
                election_ticks = self.election_ticks,
                active_remote_members = active,
                "initialized peer connections; fast-forwarding election ticks"
            );
            for _ in 0..ticks {
                self.node.tick();
            }
            self.tick_advance_until = None;
        } else if Instant::now() >= until || self.shared.leader_id.load(Ordering::Relaxed) != 0 {
            self.tick_advance_until = None;
        }
    }

    fn run_ready(&mut self, reads: &mut ReadQueue) {
        let mut io = RaftIo {
            wal: &mut self.wal,
            peers: self.peers.as_ref(),
            incoming_snapshot: &mut self.incoming_snapshot,
            outgoing_snapshots: Vec::new(),
            apply_tx: &self.apply_tx,
            shared: &self.shared,
            read_states: Vec::new(),
        };
        loop {
            match self.node.process_ready(&mut io) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(err) => fatal("raft rejected its own state", err),
            }
        }
        reads.answer(std::mem::take(&mut io.read_states));
        let outgoing_snapshots = std::mem::take(&mut io.outgoing_snapshots);
        self.follow_leadership(reads);
        for message in outgoing_snapshots {
            self.snapshots.send(message);
        }
        self.shared.term.store(self.node.term(), Ordering::Relaxed);
        self.shared.commit_index.fetch_max(self.node.commit_index(), Ordering::Relaxed);
    }

    /// What a leader change means for the requests waiting here. Without a
    /// leader (an election, or this member cut off from the quorum, or a leader
    /// that stepped down for lack of one), linearizable reads fail at once and
    /// this member's pending proposals once no leader appeared for
    /// [`LEADERLESS_GRACE_TICKS`] heartbeats (a leader transfer or a quick
    /// election would still commit them), with etcd's errors, so clients retry on
    /// another member instead of waiting for their deadline here (etcd 3.5 holds
    /// proposals until its request timeout). A proposal that fails this way may
    /// still be committed by the next leader, as after a timeout. With a new
    /// leader, the read index batch in flight is asked of it at once.
    fn follow_leadership(&mut self, reads: &mut ReadQueue) {
        let leader = self.shared.leader_id.load(Ordering::Relaxed);
        if leader == 0 {
            reads.fail_all(&ServerError::NoLeader);
            let now = Instant::now();
            let since = *self.leaderless_since.get_or_insert(now);
            if !self.failed_waiters && now - since >= self.heartbeat * LEADERLESS_GRACE_TICKS {
                self.shared.fail_waiters(&ServerError::LeaderChanged);
                self.failed_waiters = true;
            }
        } else {
            if leader != self.last_leader {
                reads.resend_now();
            }
            self.leaderless_since = None;
            self.failed_waiters = false;
        }
        self.last_leader = leader;
    }

    fn handle(&mut self, input: RaftInput, reads: &mut ReadQueue) {
        match input {
            RaftInput::Propose { id, data } => {
                if self.node.propose(data).is_err() {
                    self.shared.wake(Applied {
                        id,
                        result: Err(ServerError::NoLeader),
                        revision: 0,
                    });
                }
            }
            RaftInput::ReadIndex(reply) => {
                if self.shared.leader_id.load(Ordering::Relaxed) == 0 {
                    let _ = reply.send(Err(ServerError::NoLeader));
                } else {
                    reads.waiting.push(reply);
                }
            }
            RaftInput::Snapshot { index, term } => self.snapshot(index, term),
            RaftInput::TransferLeader { to } => self.node.transfer_leader(to),
            RaftInput::ProposeMembershipChange { id, kind, node_id, context } => {
                if self.node.propose_membership_change(kind, node_id, context).is_err() {
                    self.shared.wake(Applied {
                        id,
                        result: Err(ServerError::NoLeader),
                        revision: 0,
                    });
                }
            }
            RaftInput::ApplyMembershipChange { kind, node_id } => {
                match self.node.apply_membership_change(kind, node_id) {
                    Ok(conf_state) => {
                        let learner = conf_state.learners.contains(&self.node.id());
                        self.shared.is_learner.store(learner, Ordering::Relaxed);
                        tracing::info!(
                            change = ?kind,
                            member = %format!("{node_id:x}"),
                            voters = ?conf_state.voters.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>(),
                            learners = ?conf_state.learners.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>(),
                            "applied a membership change"
                        )
                    }
                    Err(err) => tracing::warn!(error = %err, "raft refused a membership change"),
                }
            }
            RaftInput::ReportSnapshot { to, delivered } => self.node.report_snapshot(to, delivered),
            RaftInput::PeerProgress { id, reply } => {
                let _ = reply.send(self.node.peer_progress(id));
            }
            RaftInput::Defragment(reply) => {
                if let Err(std::sync::mpsc::SendError(ApplyTask::Defragment(reply))) =
                    self.apply_tx.send(ApplyTask::Defragment(reply))
                {
                    let _ = reply.send(Err(ServerError::Stopped));
                }
            }
            RaftInput::Stop => unreachable!("handled by the loop"),
        }
    }

    fn step(&mut self, mut message: Message) {
        if message.get_msg_type() == etcd_raftnode::MessageType::MsgSnapshot {
            // The transport wrote the backend to a file and put its path in `data`;
            // Raft only needs the metadata, the file waits for the install.
            let index = message.get_snapshot().get_metadata().index;
            let data = std::mem::take(&mut message.mut_snapshot().data);
            let path = std::path::PathBuf::from(String::from_utf8_lossy(&data).into_owned());
            tracing::info!(
                from = %format!("{:x}", message.from),
                index,
                file = %path.display(),
                "received a snapshot from the leader"
            );
            if let Some((_, stale)) = self.incoming_snapshot.replace((index, path)) {
                let _ = std::fs::remove_file(stale);
            }
        }
        if let Err(err) = self.node.step(message) {
            tracing::debug!(error = %err, "raft rejected a peer message");
        }
    }

    fn snapshot(&mut self, index: u64, term: u64) {
        let conf_state = encode_conf_state(&self.node.conf_state());
        let marker = SnapshotMarker { index, term, conf_state };
        if let Err(err) = self.wal.save_snapshot(&marker).and_then(|()| self.wal.sync()) {
            fatal("failed to record a snapshot in the WAL", err);
        }
        self.node.record_snapshot(index, term);
        if self.keep_all_wal_segments {
            // --max-wals=0: nothing is purged.
        } else if let Err(err) = self.wal.release_to(index) {
            tracing::warn!(error = %err, index, "could not release old WAL segments; will retry at the next snapshot");
        }
        if let Err(err) = self.node.compact_log(index.saturating_sub(self.catch_up_entries)) {
            tracing::warn!(error = %err, index, "could not compact the in-memory raft log");
        }
        tracing::info!(index, term, "saved snapshot");
    }
}
