//! [`RaftNode`]: the `RawNode` plus its in-memory log, and the Ready cycle.

use raft::eraftpb::SnapshotMetadata;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry, HardState, Message, Snapshot};
use raft::storage::MemStorage;

use crate::storage::RaftStorage;
use raft::{Config, RawNode, ReadOnlyOption, StateRole, Storage};

use crate::Error;

/// The timing and identity of one Raft member. Ticks are in units of the heartbeat
/// interval's driver tick (the daemon ticks every heartbeat interval).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's ID (non-zero).
    pub id: u64,
    /// Ticks without a leader before a follower campaigns (randomized by raft-rs in
    /// `[election_tick, 2 * election_tick)`).
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// The index the state machine has already applied (the backend's consistent index).
    pub applied: u64,
    /// Run a pre-vote before campaigning (etcd's `--pre-vote`; on since etcd 3.5).
    pub pre_vote: bool,
    /// Seeds the randomized election timeouts: the same seed and the same inputs
    /// give the same elections (the simulator relies on it; the daemon seeds it
    /// from the OS).
    pub seed: u64,
}

/// What the WAL replay recovered, handed to [`RaftNode::restore`].
#[derive(Debug, Clone, Default)]
pub struct RestoreState {
    /// Index and term of the newest snapshot (0, 0 when none was taken).
    pub snapshot_index: u64,
    /// Term of the snapshot's last entry.
    pub snapshot_term: u64,
    /// Membership as of the snapshot.
    pub conf_state: ConfState,
    /// The newest persisted hard state.
    pub hard_state: HardState,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl RestoreState {
    /// When the state machine is ahead of the log (`applied` past its last
    /// index), makes the state machine the snapshot: a leader's snapshot was
    /// installed into the backend and the process stopped before the log
    /// recorded it. The backend holds only committed entries, so it is a
    /// snapshot of them; the log's entries it covers are dropped. Returns
    /// whether it did (the caller then records the snapshot in its log).
    pub fn cover_applied(mut self, applied: u64, applied_term: u64) -> (RestoreState, bool) {
        let last = self.entries.last().map_or(self.snapshot_index, |e| e.index);
        if applied <= last {
            return (self, false);
        }
        self.snapshot_index = applied;
        self.snapshot_term = applied_term;
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(applied);
        self.hard_state.term = self.hard_state.term.max(applied_term);
        (self, true)
    }
}

/// A member's role, as reported to the sink when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Following a leader (or waiting for one).
    Follower,
    /// Campaigning.
    Candidate,
    /// Running a pre-vote.
    PreCandidate,
    /// Leading.
    Leader,
}

impl From<StateRole> for Role {
    fn from(role: StateRole) -> Self {
        match role {
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

/// A change to the Raft configuration (simple, one member at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a voter, or promote a learner to voter.
    AddVoter,
    /// Add a learner (receives the log, does not vote).
    AddLearner,
    /// Remove a member.
    Remove,
}

fn conf_change(kind: MembershipChange, node_id: u64) -> ConfChange {
    let mut cc = ConfChange { node_id, ..Default::default() };
    cc.set_change_type(match kind {
        MembershipChange::AddVoter => ConfChangeType::AddNode,
        MembershipChange::AddLearner => ConfChangeType::AddLearnerNode,
        MembershipChange::Remove => ConfChangeType::RemoveNode,
    });
    cc
}

/// A committed conf-change entry written outside Raft, as Raft itself would encode
/// it: `--force-new-cluster` appends such entries to the log before Raft starts.
pub fn conf_change_entry(
    index: u64,
    term: u64,
    kind: MembershipChange,
    node_id: u64,
    context: Vec<u8>,
) -> Entry {
    use protobuf::Message as _;
    let data = conf_change(kind, node_id)
        .write_to_bytes()
        .expect("invariant: a conf change of two integers always encodes");
    let mut entry =
        Entry { index, term, data: data.into(), context: context.into(), ..Default::default() };
    entry.set_entry_type(raft::eraftpb::EntryType::EntryConfChange);
    entry
}

/// One Raft member: a raft-rs `RawNode` over an in-memory copy of the persisted log.
pub struct RaftNode {
    pub(crate) raw: RawNode<RaftStorage>,
    /// The source of election timeouts. raft-rs draws them from its thread RNG;
    /// every time it restarts the election clock we replace its draw with ours,
    /// so elections depend on the seed alone.
    rng: SplitMix64,
    /// The newest Ready handed to an asynchronous log writer, and the newest
    /// one it reported written (`persisted <= queued`).
    pub(crate) queued: u64,
    pub(crate) persisted: u64,
    /// A hard state whose only change, the commit index, waits to go with the
    /// next write to the asynchronous log writer.
    pub(crate) unwritten_hard_state: Option<HardState>,
}

/// A small seeded generator (SplitMix64): deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[low, high)` (`high > low`).
    pub fn below(&mut self, low: u64, high: u64) -> u64 {
        assert!(high > low, "invariant: a non-empty range");
        low + self.next_u64() % (high - low)
    }
}

fn raft_config(cfg: &NodeConfig) -> Config {
    Config {
        id: cfg.id,
        election_tick: cfg.election_tick,
        heartbeat_tick: cfg.heartbeat_tick,
        applied: cfg.applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: cfg.pre_vote,
        min_election_tick: cfg.election_tick,
        max_election_tick: cfg.election_tick * 2,
        read_only_option: ReadOnlyOption::Safe,
        skip_bcast_commit: false,
        // Off: raft-rs's batching merges new entries into an append already
        // queued for the same peer whenever that append carries no entries,
        // without checking that the new entries follow its previous index. After
        // a probe rejection lowered the peer's next index, the merged message
        // claimed entry N sat at N+1 and the follower's log went wrong (found by
        // the simulator, seed 1; crates/sim/tests/regressions.rs).
        batch_append: false,
        priority: 0,
        max_uncommitted_size: 64 * 1024 * 1024,
        max_committed_size_per_ready: 16 * 1024 * 1024,
    }
}

fn snapshot_metadata(index: u64, term: u64, conf_state: ConfState) -> SnapshotMetadata {
    let mut metadata = SnapshotMetadata { index, term, ..Default::default() };
    metadata.set_conf_state(conf_state);
    metadata
}

fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl RaftNode {
    /// Starts a brand-new member whose initial membership is `voters`. Every member of
    /// a new cluster must bootstrap with the same voters.
    pub fn bootstrap(cfg: &NodeConfig, voters: &[u64]) -> Result<RaftNode, Error> {
        assert!(voters.contains(&cfg.id), "invariant: a bootstrapping member is a voter");
        RaftNode::bootstrap_with(cfg, ConfState::from((voters.to_vec(), vec![])))
    }

    /// Starts a brand-new member with an empty log whose configuration is
    /// `conf_state` (a member joining an existing cluster: the leader sends it the
    /// log, or a snapshot).
    pub fn bootstrap_with(cfg: &NodeConfig, conf_state: ConfState) -> Result<RaftNode, Error> {
        assert!(
            conf_state.voters.contains(&cfg.id) || conf_state.learners.contains(&cfg.id),
            "invariant: a starting member is in its own configuration"
        );
        let storage = RaftStorage::new(MemStorage::new_with_conf_state(conf_state));
        let raw = RawNode::new(&raft_config(cfg), storage, &discard_logger())?;
        Ok(RaftNode::seeded(raw, cfg.seed))
    }

    /// Restarts a member from what its WAL held.
    pub fn restore(cfg: &NodeConfig, state: RestoreState) -> Result<RaftNode, Error> {
        let storage = MemStorage::new();
        {
            let mut core = storage.wl();
            if state.snapshot_index > 0 {
                let mut snapshot = Snapshot::default();
                let meta = snapshot.mut_metadata();
                meta.index = state.snapshot_index;
                meta.term = state.snapshot_term;
                meta.set_conf_state(state.conf_state.clone());
                core.apply_snapshot(snapshot)?;
            } else {
                core.set_conf_state(state.conf_state.clone());
            }
            core.append(&state.entries)?;
            let mut hard_state = state.hard_state.clone();
            hard_state.commit = hard_state.commit.max(state.snapshot_index).max(cfg.applied);
            core.set_hardstate(hard_state);
        }
        let storage = RaftStorage::new(storage);
        if state.snapshot_index > 0 {
            storage.set_snapshot(snapshot_metadata(
                state.snapshot_index,
                state.snapshot_term,
                state.conf_state.clone(),
            ));
        }
        let raw = RawNode::new(&raft_config(cfg), storage, &discard_logger())?;
        Ok(RaftNode::seeded(raw, cfg.seed))
    }

    fn seeded(raw: RawNode<RaftStorage>, seed: u64) -> RaftNode {
        let mut node = RaftNode {
            raw,
            rng: SplitMix64::new(seed),
            queued: 0,
            persisted: 0,
            unwritten_hard_state: None,
        };
        node.redraw_election_timeout();
        node
    }

    /// raft-rs restarts the election clock (`election_elapsed` = 0) whenever it
    /// draws a new timeout, so after every operation that saw the clock at zero
    /// the timeout is redrawn from the seeded source. (A follower that just heard
    /// its leader redraws too, which changes nothing but the draw.)
    fn redraw_election_timeout(&mut self) {
        let raft = &mut self.raw.raft;
        if raft.election_elapsed == 0 {
            let low = raft.election_timeout() as u64;
            let timeout = self.rng.below(low, 2 * low);
            raft.set_randomized_election_timeout(timeout as usize);
        }
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.redraw_election_timeout();
    }

    /// Starts an election now (used by a single-member cluster to avoid waiting).
    pub fn campaign(&mut self) -> Result<(), Error> {
        let result = self.raw.campaign();
        self.redraw_election_timeout();
        Ok(result?)
    }

    /// Proposes an entry; it is committed (or lost) asynchronously.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), Error> {
        match self.raw.propose(vec![], data) {
            Ok(()) => Ok(()),
            Err(raft::Error::ProposalDropped) => Err(Error::ProposalDropped),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes several entries at once: one append to each follower carries
    /// them all (and a follower forwards them to the leader in one message).
    /// All or none are dropped.
    pub fn propose_many(&mut self, data: Vec<Vec<u8>>) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let mut message = Message::default();
        message.set_msg_type(raft::eraftpb::MessageType::MsgPropose);
        message.from = self.raw.raft.id;
        message.set_entries(
            data.into_iter().map(|d| Entry { data: d.into(), ..Default::default() }).collect(),
        );
        match self.raw.raft.step(message) {
            Ok(()) => Ok(()),
            Err(raft::Error::ProposalDropped) => Err(Error::ProposalDropped),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes a membership change; `context` travels in the entry's context (our
    /// own encoding, so appliers never decode raft-rs's protobuf-2 bytes).
    pub fn propose_membership_change(
        &mut self,
        kind: MembershipChange,
        node_id: u64,
        context: Vec<u8>,
    ) -> Result<(), Error> {
        match self.raw.propose_conf_change(context, conf_change(kind, node_id)) {
            Ok(()) => Ok(()),
            Err(raft::Error::ProposalDropped) => Err(Error::ProposalDropped),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies a committed membership change to Raft's configuration.
    pub fn apply_membership_change(
        &mut self,
        kind: MembershipChange,
        node_id: u64,
    ) -> Result<ConfState, Error> {
        let conf_state = self.raw.apply_conf_change(&conf_change(kind, node_id));
        self.redraw_election_timeout();
        let conf_state = conf_state?;
        self.raw.mut_store().mem.wl().set_conf_state(conf_state.clone());
        Ok(conf_state)
    }

    /// How far a peer's log matches the leader's, and the leader's commit index
    /// (`None` unless this member leads and tracks that peer).
    pub fn peer_progress(&self, id: u64) -> Option<(u64, u64)> {
        if self.role() != Role::Leader {
            return None;
        }
        let matched = self.raw.raft.prs().get(id)?.matched;
        Some((matched, self.commit_index()))
    }

    /// Requests a read index; the answer arrives through [`crate::ReadySink::read_states`]
    /// carrying the same `ctx`, or never (the caller retries).
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.raw.read_index(ctx);
    }

    /// Delivers a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        let result = self.raw.step(message);
        self.redraw_election_timeout();
        Ok(result?)
    }

    /// Tells Raft a peer could not be reached, so it probes instead of streaming.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// Asks the leader to hand leadership to `to` (ignored by non-leaders).
    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
        self.redraw_election_timeout();
    }

    /// Whether this member is a learner in the current configuration.
    pub fn is_learner(&self) -> bool {
        self.conf_state().learners.contains(&self.id())
    }

    /// This member's ID.
    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    /// The leader this member knows of (0 when none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.raw.raft.state.into()
    }

    /// The current membership.
    pub fn conf_state(&self) -> ConfState {
        self.raw.store().initial_state().expect("invariant: MemStorage never fails").conf_state
    }

    /// The term of the entry at `index`, if the in-memory log still has it.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.raw.store().term(index).ok()
    }

    /// The index of the newest snapshot recorded or installed (0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }

    /// Records that the backend is durable at `index` (term `term`), so a lagging
    /// follower can be sent a snapshot of it.
    pub fn record_snapshot(&mut self, index: u64, term: u64) {
        let conf_state = self.conf_state();
        self.raw.store().set_snapshot(snapshot_metadata(index, term, conf_state));
    }

    /// Tells Raft how sending a snapshot to `id` ended.
    pub fn report_snapshot(&mut self, id: u64, delivered: bool) {
        let status =
            if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(id, status);
    }

    /// Drops in-memory entries below `index` once a snapshot covers them.
    pub fn compact_log(&mut self, index: u64) -> Result<(), Error> {
        let last = self.raw.store().last_index()?;
        self.raw.mut_store().mem.wl().compact(index.min(last))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn single(applied: u64) -> NodeConfig {
        NodeConfig { id: 1, election_tick: 10, heartbeat_tick: 1, applied, pre_vote: true, seed: 1 }
    }

    /// The election timeouts come from the seed, not from raft-rs's thread RNG.
    #[test]
    fn election_timeouts_follow_the_seed() {
        let draws = |seed: u64| {
            let cfg = NodeConfig { seed, ..single(0) };
            let mut node = RaftNode::bootstrap(&cfg, &[1, 2, 3]).expect("bootstrap");
            let mut seen = Vec::new();
            for _ in 0..200 {
                node.tick();
                let timeout = node.raw.raft.randomized_election_timeout();
                assert!((10..20).contains(&timeout), "timeout {timeout} outside [e, 2e)");
                seen.push((timeout, node.term()));
            }
            seen
        };
        assert_eq!(draws(7), draws(7), "the same seed gives the same elections");
        assert_ne!(draws(7), draws(8), "another seed gives other timeouts");
    }

    /// A backend ahead of the log (a snapshot install cut short) becomes the
    /// snapshot, so Raft does not refuse a commit index past its log.
    #[test]
    fn a_backend_ahead_of_the_log_becomes_the_snapshot() {
        let entry = |index| Entry { index, term: 1, ..Default::default() };
        let state = RestoreState {
            conf_state: ConfState::from((vec![1, 2, 3], vec![])),
            hard_state: HardState { term: 1, commit: 10, ..Default::default() },
            entries: (1..=12).map(entry).collect(),
            ..Default::default()
        };
        let (same, covered) = state.clone().cover_applied(11, 1);
        assert!(!covered && same.entries.len() == 12, "the log holds the applied index");
        let (ahead, covered) = state.cover_applied(40, 2);
        assert!(covered);
        assert_eq!(
            (ahead.snapshot_index, ahead.snapshot_term, ahead.hard_state.commit),
            (40, 2, 40)
        );
        assert!(ahead.entries.is_empty());
        let cfg = NodeConfig { id: 1, ..single(40) };
        let node = RaftNode::restore(&cfg, ahead).expect("raft accepts it");
        assert_eq!(node.commit_index(), 40);
    }
}
