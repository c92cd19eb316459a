//! The Raft half of a member, deterministic: the Raft node, the ReadIndex queue,
//! what a leader change means for waiting requests, snapshot recording and
//! install, the initial election tick advance. No threads, no clock, no RNG:
//! time arrives as a millisecond argument, randomness from the seed in
//! [`etcd_raftnode::NodeConfig`], and the disk and network sit behind [`RaftIo`], whose calls
//! are made in the order Raft's safety requires. What clients see comes out as
//! [`Effect`]s.
//!
//! The daemon drives one on its raft thread (inputs from channels, `RaftIo` on
//! the WAL and the peer transport); the simulator drives many on simulated disks
//! and networks. Each turn: any number of [`RaftCore::step`]s, then
//! [`RaftCore::run_ready`], which does the I/O and returns the effects.

use etcd_raftnode::{ConfState, MembershipChange, Message, MessageType, RaftNode, Role};

pub use crate::raft_io::RaftIo;
use crate::raft_io::Sink;
use crate::read_queue::ReadQueue;
use crate::ServerError;

/// Heartbeats without a leader after which this member's pending proposals fail.
const LEADERLESS_GRACE_TICKS: u64 = 2;
/// How long without a leader before this member asks its peers whether it was
/// removed, and how often after that.
const PROBE_PEERS_AFTER_MS: u64 = 3_000;
/// How long a starting member looks for peer streams to advance its election
/// ticks (etcd's connection read timeout).
const TICK_ADVANCE_WINDOW_MS: u64 = 5_000;

/// What the rest of the member asks of the Raft half.
#[derive(Debug)]
pub enum Input {
    /// One heartbeat interval passed.
    Tick,
    /// A message from a peer.
    Message(Message),
    /// A peer could not be reached.
    Unreachable {
        /// The peer.
        peer: u64,
    },
    /// Propose an encoded request whose waiter is known by `id`.
    Propose {
        /// The request ID.
        id: u64,
        /// The encoded `InternalRaftRequest`.
        data: Vec<u8>,
    },
    /// Propose a membership change whose waiter is known by `id`.
    ProposeMembershipChange {
        /// The request ID.
        id: u64,
        /// The change.
        kind: MembershipChange,
        /// The member it concerns.
        node_id: u64,
        /// Carried in the entry's context.
        context: Vec<u8>,
    },
    /// A linearizable reader wants the index it must see applied.
    ReadIndex {
        /// The reader, as the caller knows it.
        reader: u64,
    },
    /// The backend is durable up to `index`: record a snapshot and release the log.
    Snapshot {
        /// The backend's consistent index.
        index: u64,
        /// Its term.
        term: u64,
    },
    /// Hand leadership to another member.
    TransferLeader {
        /// The member to lead.
        to: u64,
    },
    /// A committed membership change was applied to the members table; apply it
    /// to Raft's configuration.
    ApplyMembershipChange {
        /// The change.
        kind: MembershipChange,
        /// The member it concerns.
        node_id: u64,
    },
    /// How sending a snapshot to a peer ended.
    ReportSnapshot {
        /// The peer.
        to: u64,
        /// Whether it got there.
        delivered: bool,
    },
    /// The log writer finished every write up to Ready `number` (only with an
    /// I/O that [`RaftIo::persists_async`]).
    Persisted {
        /// The newest Ready written.
        number: u64,
    },
}

/// What came of a turn, for the requests waiting on this member.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// These readers may read once `index` is applied.
    ReadsReady {
        /// The readers.
        readers: Vec<u64>,
        /// The read index.
        index: u64,
    },
    /// These readers cannot be answered here.
    ReadsFailed {
        /// The readers.
        readers: Vec<u64>,
        /// Why.
        error: ServerError,
    },
    /// A proposal was refused before reaching the log.
    ProposalFailed {
        /// Its request ID.
        id: u64,
        /// Why.
        error: ServerError,
    },
    /// Every proposal waiting on this member fails (it lost its leader).
    FailPendingProposals(ServerError),
    /// The membership changed: whether this member is a learner now.
    ConfigurationChanged {
        /// Voters after the change.
        voters: Vec<u64>,
        /// Learners after the change.
        learners: Vec<u64>,
    },
    /// This member has known no leader for a while: ask every peer whether it
    /// was removed (a removed member that the leader dropped before telling it
    /// hears nothing more, and a learner never campaigns).
    ProbePeers,
    /// A received snapshot was replaced by a newer one before Raft used it.
    SnapshotDropped {
        /// What [`Input::Message`] carried.
        data: Vec<u8>,
    },
}

/// How a member's Raft half behaves, beyond Raft's own options.
#[derive(Debug, Clone)]
pub struct RaftCoreConfig {
    /// The heartbeat interval in milliseconds (one tick).
    pub heartbeat_ms: u64,
    /// The election timeout in ticks.
    pub election_ticks: usize,
    /// Entries kept in memory behind a snapshot for followers that lag a little.
    pub catch_up_entries: u64,
    /// Keep every log segment (etcd's `--max-wals=0`).
    pub keep_all_log_segments: bool,
    /// etcd's `--initial-election-tick-advance`.
    pub initial_election_tick_advance: bool,
    /// The first ReadIndex context counter (contexts must not repeat those of
    /// an earlier run of this member that a leader may still hold).
    pub read_context_start: u64,
}

/// The Raft half of one member.
pub struct RaftCore {
    node: RaftNode,
    cfg: RaftCoreConfig,
    reads: ReadQueue,
    /// The leader and role as last reported.
    leader: u64,
    role: Role,
    /// The leader as of the previous turn (0: none).
    last_leader: u64,
    /// Since when this member knows no leader.
    leaderless_since: Option<u64>,
    /// Whether the pending proposals were failed since the leader was lost.
    failed_proposals: bool,
    /// When peers were last asked whether this member was removed.
    last_probe: Option<u64>,
    /// Until when to look for the peer streams that let a starting member skip
    /// most of its first election timeout.
    tick_advance_until: Option<u64>,
    /// The leader's snapshot received from a peer, by index, waiting for Raft.
    incoming_snapshot: Option<(u64, Vec<u8>)>,
    /// Proposals of this turn, proposed together in `run_ready`.
    proposals: Vec<(u64, Vec<u8>)>,
    /// The last index handed to the state machine (it only grows).
    handed_to_apply: u64,
    effects: Vec<Effect>,
}

impl RaftCore {
    /// Wraps a bootstrapped or restored Raft node whose state machine has
    /// applied up to `applied`; `now` is the current time in milliseconds.
    pub fn new(node: RaftNode, applied: u64, cfg: RaftCoreConfig, now: u64) -> RaftCore {
        let reads = ReadQueue {
            member_id: node.id(),
            next_ctx: cfg.read_context_start,
            waiting: Vec::new(),
            in_flight: None,
            short_retries_until: None,
        };
        let tick_advance_until =
            cfg.initial_election_tick_advance.then_some(now + TICK_ADVANCE_WINDOW_MS);
        let mut core = RaftCore {
            handed_to_apply: applied,
            node,
            cfg,
            reads,
            leader: 0,
            role: Role::Follower,
            last_leader: 0,
            leaderless_since: None,
            failed_proposals: false,
            last_probe: None,
            tick_advance_until,
            incoming_snapshot: None,
            proposals: Vec::new(),
            effects: Vec::new(),
        };
        if core.node.conf_state().voters == [core.node.id()] {
            // The only voter need not wait an election timeout to lead.
            if let Err(err) = core.node.campaign() {
                tracing::warn!(error = %err, "raft: campaign failed");
            }
        }
        core
    }

    /// Takes one input. Its I/O happens in the next [`RaftCore::run_ready`]
    /// (a snapshot record at once).
    pub fn step(&mut self, input: Input, io: &mut impl RaftIo) {
        match input {
            Input::Tick => self.node.tick(),
            Input::Message(message) => self.receive(message),
            Input::Unreachable { peer } => self.node.report_unreachable(peer),
            // Proposed together at the start of the next Ready cycle: one append
            // per follower for the whole turn's proposals.
            Input::Propose { id, data } => self.proposals.push((id, data)),
            Input::ProposeMembershipChange { id, kind, node_id, context } => {
                if self.node.propose_membership_change(kind, node_id, context).is_err() {
                    let error = ServerError::NoLeader;
                    self.effects.push(Effect::ProposalFailed { id, error });
                }
            }
            Input::ReadIndex { reader } => {
                if self.leader == 0 {
                    let error = ServerError::NoLeader;
                    self.effects.push(Effect::ReadsFailed { readers: vec![reader], error });
                } else {
                    self.reads.waiting.push(reader);
                }
            }
            Input::Snapshot { index, term } => self.record_snapshot(index, term, io),
            Input::TransferLeader { to } => self.node.transfer_leader(to),
            Input::ApplyMembershipChange { kind, node_id } => {
                match self.node.apply_membership_change(kind, node_id) {
                    Ok(conf_state) => self.effects.push(Effect::ConfigurationChanged {
                        voters: conf_state.voters,
                        learners: conf_state.learners,
                    }),
                    Err(err) => tracing::warn!(error = %err, "raft refused a membership change"),
                }
            }
            Input::ReportSnapshot { to, delivered } => self.node.report_snapshot(to, delivered),
            Input::Persisted { number } => self.node.on_persisted(number),
        }
    }

    fn receive(&mut self, mut message: Message) {
        if message.get_msg_type() == MessageType::MsgSnapshot {
            // The data (the backend, or where the transport put it) waits for the
            // install; Raft only needs the metadata.
            let index = message.get_snapshot().get_metadata().index;
            let data = std::mem::take(&mut message.mut_snapshot().data).to_vec();
            tracing::info!(
                from = %format!("{:x}", message.from),
                index,
                "received a snapshot from the leader"
            );
            if let Some((_, data)) = self.incoming_snapshot.replace((index, data)) {
                self.effects.push(Effect::SnapshotDropped { data });
            }
        }
        if let Err(err) = self.node.step(message) {
            tracing::debug!(error = %err, "raft rejected a peer message");
        }
    }

    /// Runs every pending Ready cycle (sends, persists, hands committed entries
    /// on), answers reads, follows leadership, and returns what happened.
    pub fn run_ready(&mut self, now: u64, io: &mut impl RaftIo) -> Vec<Effect> {
        self.advance_ticks_once_connected(io.active_peers(), now);
        self.propose_pending();
        self.reads.send_if_due(&mut self.node, now);
        let mut sink = Sink {
            io,
            incoming_snapshot: &mut self.incoming_snapshot,
            outgoing_snapshots: Vec::new(),
            read_states: Vec::new(),
            soft_state: (&mut self.leader, &mut self.role),
            handed_to_apply: &mut self.handed_to_apply,
        };
        loop {
            match self.node.process_ready(&mut sink) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(err) => panic!("raft rejected its own state: {err}"),
            }
        }
        let Sink { outgoing_snapshots, read_states, .. } = sink;
        self.reads.answer(read_states, &mut self.effects);
        self.follow_leadership(now);
        for message in outgoing_snapshots {
            io.send_snapshot(message);
        }
        assert!(
            self.handed_to_apply <= self.node.commit_index(),
            "invariant: entries handed to apply ({}) are committed ({})",
            self.handed_to_apply,
            self.node.commit_index()
        );
        std::mem::take(&mut self.effects)
    }

    fn propose_pending(&mut self) {
        let (ids, data): (Vec<u64>, Vec<Vec<u8>>) =
            std::mem::take(&mut self.proposals).into_iter().unzip();
        if self.node.propose_many(data).is_err() {
            for id in ids {
                let error = ServerError::NoLeader;
                self.effects.push(Effect::ProposalFailed { id, error });
            }
        }
    }

    /// What a leader change means for the requests waiting here. Without a
    /// leader, linearizable reads fail at once and this member's pending
    /// proposals once no leader appeared for [`LEADERLESS_GRACE_TICKS`]
    /// heartbeats (a leader transfer or a quick election would still commit
    /// them), so clients retry on another member instead of waiting for their
    /// deadline here. A proposal that fails this way may still be committed by
    /// the next leader, as after a timeout. With a new leader, the read index
    /// batch in flight is asked of it at once.
    fn follow_leadership(&mut self, now: u64) {
        if self.leader == 0 {
            let readers = self.reads.take_all();
            if !readers.is_empty() {
                self.effects.push(Effect::ReadsFailed { readers, error: ServerError::NoLeader });
            }
            let since = *self.leaderless_since.get_or_insert(now);
            let probe_due =
                self.last_probe.map_or(since, |at| at.max(since)) + PROBE_PEERS_AFTER_MS;
            if now >= probe_due {
                self.effects.push(Effect::ProbePeers);
                self.last_probe = Some(now);
            }
            let grace = self.cfg.heartbeat_ms * LEADERLESS_GRACE_TICKS;
            if !self.failed_proposals && now.saturating_sub(since) >= grace {
                self.effects.push(Effect::FailPendingProposals(ServerError::LeaderChanged));
                self.failed_proposals = true;
            }
        } else {
            if self.leader != self.last_leader {
                self.reads.resend_now(now);
            }
            self.leaderless_since = None;
            self.failed_proposals = false;
        }
        self.last_leader = self.leader;
    }

    /// etcd's initial election tick advance: once a starting member has streams
    /// to more than one peer, it fast-forwards all but two ticks of its election
    /// timeout, so a new cluster elects within a few heartbeats instead of a
    /// whole timeout. A running leader's next heartbeat (every tick) still
    /// arrives in time, and pre-vote keeps a member that guessed wrong from
    /// deposing it. Given up after 5 s without peers.
    fn advance_ticks_once_connected(&mut self, active: usize, now: u64) {
        let Some(until) = self.tick_advance_until else { return };
        if active > 1 {
            let ticks = self.cfg.election_ticks.saturating_sub(2);
            tracing::info!(
                local_member_id = %format!("{:x}", self.node.id()),
                forward_ticks = ticks,
                election_ticks = self.cfg.election_ticks,
                active_remote_members = active,
                "initialized peer connections; fast-forwarding election ticks"
            );
            for _ in 0..ticks {
                self.node.tick();
            }
            self.tick_advance_until = None;
        } else if now >= until || self.leader != 0 {
            self.tick_advance_until = None;
        }
    }

    fn record_snapshot(&mut self, index: u64, term: u64, io: &mut impl RaftIo) {
        if index <= self.node.snapshot_index() {
            // The apply side asked for this before a newer snapshot from the
            // leader was installed (its request was queued behind the install);
            // recording it now would put an older marker after the newer one,
            // and a restart would replay from the older one without the entries
            // the install replaced.
            tracing::info!(
                index,
                newer = self.node.snapshot_index(),
                "skipped an outdated snapshot"
            );
            return;
        }
        io.save_snapshot(index, term, &self.node.conf_state());
        self.node.record_snapshot(index, term);
        if !self.cfg.keep_all_log_segments {
            io.release_log(index);
        }
        if let Err(err) = self.node.compact_log(index.saturating_sub(self.cfg.catch_up_entries)) {
            tracing::warn!(error = %err, index, "could not compact the in-memory raft log");
        }
        tracing::info!(index, term, "saved snapshot");
    }

    /// This member's ID.
    pub fn id(&self) -> u64 {
        self.node.id()
    }

    /// The leader as last reported (0: none).
    pub fn leader(&self) -> u64 {
        self.leader
    }

    /// This member's role as last reported.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.term()
    }

    /// Whether a write handed to an asynchronous log writer is not reported yet.
    pub fn write_in_flight(&self) -> bool {
        self.node.write_in_flight()
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> u64 {
        self.node.commit_index()
    }

    /// The current membership.
    pub fn conf_state(&self) -> ConfState {
        self.node.conf_state()
    }

    /// Whether this member is a learner.
    pub fn is_learner(&self) -> bool {
        self.node.is_learner()
    }

    /// How far a peer's log matches, and the leader's commit (leader only).
    pub fn peer_progress(&self, id: u64) -> Option<(u64, u64)> {
        self.node.peer_progress(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_raftnode::NodeConfig;
    use etcd_raftnode::{Entry, HardState};

    /// A member's disk and network in memory: what it persisted, applied, sent.
    #[derive(Default)]
    struct MemIo {
        outbox: Vec<Message>,
        persisted: Vec<Entry>,
        applied: Vec<Entry>,
        leader: u64,
        syncs: usize,
    }

    impl RaftIo for MemIo {
        fn send(&mut self, messages: Vec<Message>) {
            self.outbox.extend(messages);
        }
        fn send_snapshot(&mut self, _: Message) {
            unreachable!("these tests never lag a follower behind a snapshot");
        }
        fn persist(&mut self, entries: &[Entry], _: Option<&HardState>, must_sync: bool) {
            if let Some(first) = entries.first() {
                self.persisted.retain(|e| e.index < first.index);
            }
            self.persisted.extend_from_slice(entries);
            self.syncs += usize::from(must_sync);
        }
        fn apply(&mut self, committed: Vec<Entry>) {
            for entry in &committed {
                assert!(
                    self.persisted.iter().any(|p| p.index == entry.index),
                    "entry {} applied before this member persisted it",
                    entry.index
                );
            }
            self.applied.extend(committed);
        }
        fn install_backend(&mut self, _: u64, _: Vec<u8>) {
            unreachable!("no snapshots here");
        }
        fn save_snapshot(&mut self, _: u64, _: u64, _: &ConfState) {}
        fn release_log(&mut self, _: u64) {}
        fn active_peers(&self) -> usize {
            0
        }
        fn leader_changed(&mut self, leader: u64, _: Role) {
            self.leader = leader;
        }
    }

    fn config() -> RaftCoreConfig {
        RaftCoreConfig {
            heartbeat_ms: 100,
            election_ticks: 10,
            catch_up_entries: 100,
            keep_all_log_segments: false,
            initial_election_tick_advance: false,
            read_context_start: 0,
        }
    }

    fn member(id: u64, voters: &[u64], seed: u64) -> (RaftCore, MemIo) {
        let node_cfg = NodeConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 0,
            pre_vote: true,
            seed,
        };
        let node = RaftNode::bootstrap(&node_cfg, voters).expect("bootstrap");
        (RaftCore::new(node, 0, config(), 0), MemIo::default())
    }

    /// Three members on a network that delivers everything except to and from
    /// `cut` members; 100 ms per round.
    struct Trio {
        members: Vec<(RaftCore, MemIo)>,
        cut: Vec<u64>,
        now: u64,
        effects: Vec<(u64, Effect)>,
    }

    impl Trio {
        fn new(seed: u64) -> Trio {
            let members = (1..=3).map(|id| member(id, &[1, 2, 3], seed * 10 + id)).collect();
            Trio { members, cut: Vec::new(), now: 0, effects: Vec::new() }
        }

        fn round(&mut self) {
            self.now += 100;
            for (core, io) in &mut self.members {
                core.step(Input::Tick, io);
            }
            for _ in 0..5 {
                let mut mail = Vec::new();
                for (core, io) in &mut self.members {
                    for effect in core.run_ready(self.now, io) {
                        self.effects.push((core.id(), effect));
                    }
                    mail.append(&mut io.outbox);
                }
                for message in mail {
                    if self.cut.contains(&message.from) || self.cut.contains(&message.to) {
                        continue;
                    }
                    let (core, io) = &mut self.members[message.to as usize - 1];
                    core.step(Input::Message(message), io);
                }
            }
        }

        fn leader(&self) -> Option<u64> {
            self.members.iter().find(|(core, _)| core.role() == Role::Leader).map(|(c, _)| c.id())
        }

        fn elect(&mut self) -> u64 {
            for _ in 0..100 {
                self.round();
                if let Some(leader) = self.leader() {
                    return leader;
                }
            }
            panic!("no leader after 100 rounds");
        }
    }

    #[test]
    fn single_member_leads_commits_and_answers_reads() {
        let (mut core, mut io) = member(1, &[1], 1);
        core.run_ready(0, &mut io);
        assert_eq!((core.role(), io.leader), (Role::Leader, 1));
        core.step(Input::Propose { id: 7, data: b"x".to_vec() }, &mut io);
        core.step(Input::ReadIndex { reader: 1 }, &mut io);
        let effects = core.run_ready(1, &mut io);
        assert_eq!(io.applied.last().map(|e| e.data.to_vec()), Some(b"x".to_vec()));
        assert!(io.syncs > 0, "entries were fsynced");
        let index = io.applied.last().expect("applied").index;
        assert!(
            effects.iter().any(|e| matches!(e, Effect::ReadsReady { readers, index: i }
                if readers == &[1] && *i >= index - 1)),
            "the read was answered: {effects:?}"
        );
    }

    #[test]
    fn a_member_without_a_leader_refuses_at_once() {
        let (mut core, mut io) = member(1, &[1, 2, 3], 1);
        core.step(Input::ReadIndex { reader: 5 }, &mut io);
        core.step(Input::Propose { id: 9, data: b"x".to_vec() }, &mut io);
        let effects = core.run_ready(0, &mut io);
        assert!(effects
            .contains(&Effect::ReadsFailed { readers: vec![5], error: ServerError::NoLeader }));
        assert!(effects.contains(&Effect::ProposalFailed { id: 9, error: ServerError::NoLeader }));
    }

    #[test]
    fn a_cut_off_leader_fails_its_waiting_requests() {
        let mut trio = Trio::new(1);
        let leader = trio.elect();
        trio.cut = vec![leader];
        {
            let (core, io) = &mut trio.members[leader as usize - 1];
            core.step(Input::ReadIndex { reader: 42 }, io);
            core.step(Input::Propose { id: 43, data: b"lost?".to_vec() }, io);
        }
        for _ in 0..40 {
            trio.round();
        }
        let mine: Vec<&Effect> =
            trio.effects.iter().filter(|(id, _)| *id == leader).map(|(_, e)| e).collect();
        assert!(
            mine.iter()
                .any(|e| matches!(e, Effect::ReadsFailed { readers, .. } if readers == &[42])),
            "the read failed: {mine:?}"
        );
        assert!(mine.contains(&&Effect::FailPendingProposals(ServerError::LeaderChanged)));
        let others = trio.leader().expect("the other two elect a leader");
        assert_ne!(others, leader);
    }

    #[test]
    fn the_same_seed_gives_the_same_elections() {
        let history = |seed: u64| {
            let mut trio = Trio::new(seed);
            let mut seen = Vec::new();
            for round in 0..60 {
                if round == 30 {
                    trio.cut = trio.leader().into_iter().collect();
                }
                trio.round();
                seen.push(
                    trio.members.iter().map(|(c, _)| (c.role(), c.term())).collect::<Vec<_>>(),
                );
            }
            seen
        };
        assert_eq!(history(3), history(3));
        assert_ne!(history(3), history(4), "other seeds elect differently");
    }
}
