//! One simulated member: the daemon's two cores (Raft half and apply half) on a
//! simulated disk, with the waiter registry and read queue the daemon keeps
//! around them. Crashing it drops every in-memory structure; restarting it
//! recovers from what the disk kept, as the daemon's bootstrap does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_proto::etcdrs::member_change::Kind;
use etcd_proto::etcdrs::{InternalRaftRequest, Member, MemberChange, RequestHeader};
use etcd_proto::etcdserverpb::{LeaseRevokeRequest, RangeRequest};
use etcd_proto::mvccpb::Event;
use etcd_raftnode::{
    ConfState, MembershipChange, Message, NodeConfig, RaftNode, RestoreState, Role,
};
use etcd_server::apply_core::{ApplyCore, ApplyCoreConfig, ApplyResult};
use etcd_server::compactor::{CompactionMode, Compactor};
use etcd_server::membership::MemberEvent;
use etcd_server::raft_core::{Effect, Input, RaftCore, RaftCoreConfig};
use etcd_server::waiters::Waiters;
use etcd_server::wal_entries::{restore_state, snapshot_marker};
use etcd_server::watch::WatchHub;
use etcd_server::{Response, ServerError};
use etcd_storage::Backend;
use prost::Message as _;

mod io;
mod requests;

use io::Io;

use crate::disk::{SimFile, SimFs, SimStorage};
use etcd_wal::Wal;

/// WAL segments are cut at this size in the simulator (the server's 64 MiB
/// preallocation would only cost memory here), so segment cuts and releases
/// happen often.
const WAL_SEGMENT_BYTES: u64 = 64 * 1024;

/// Milliseconds per tick (etcd's default heartbeat) and ticks per election.
pub const HEARTBEAT_MS: u64 = 100;
const ELECTION_TICKS: usize = 10;

/// How a keep-alive went on one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Renewed for its whole TTL.
    Renewed,
    /// The lease does not exist (it expired, or never was).
    NotFound,
    /// This member does not lead: the request goes to the leader.
    NotLeader,
}

/// What a client asked of a member, as the member answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A put or delete was applied.
    Done,
    /// A transaction was applied; whether its compare succeeded.
    Cas(bool),
    /// A read: the key's value, if any.
    Read(Option<Vec<u8>>),
    /// Refused before reaching the log (certainly not applied).
    Refused(ServerError),
    /// Failed while in flight (may or may not be applied).
    Unknown(ServerError),
}

/// What a member did to its state machine, in order, for the checkers.
#[derive(Debug, Clone)]
pub enum Observed {
    /// Applied the entry at `index`.
    Applied {
        /// Its index.
        index: u64,
        /// Its term.
        term: u64,
        /// Its data.
        data: Vec<u8>,
    },
    /// After applying up to `index` its store is at `revision`.
    Revision {
        /// The last applied index.
        index: u64,
        /// The store's revision then.
        revision: i64,
    },
    /// Applied the events of `revision`.
    Events {
        /// The revision.
        revision: i64,
        /// Its events, in order.
        events: Vec<Event>,
    },
    /// Replaced its backend with the leader's snapshot at `index`.
    Installed {
        /// The snapshot's index.
        index: u64,
    },
}

/// The bugs the simulator can switch on, to prove its checkers catch them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bugs {
    /// The log's fsyncs do nothing: writes are acknowledged before they are durable.
    pub ack_before_fsync: bool,
    /// Linearizable reads are served from the local store without ReadIndex.
    pub read_without_read_index: bool,
    /// A member that believes it leads serves linearizable reads locally (a
    /// deposed leader that has not noticed yet serves stale data).
    pub leader_reads_locally: bool,
    /// A restarted member's consistent index lags its data by one entry (as
    /// when it is not written with the data), so that entry is applied twice.
    pub apply_twice_after_restart: bool,
    /// A watch client loses one event of the first batch that has any.
    pub skip_watch_event: bool,
    /// The leader's lessor looks 1.5 s into the future for expired leases.
    pub expire_leases_early: bool,
}

/// The members whose removal the backend records (read once per change, not
/// per message: every delivered message asks).
fn removed_members(backend: &Backend) -> BTreeSet<u64> {
    backend
        .begin_read()
        .and_then(|txn| etcd_storage::ReadTables::members_removed_list(&txn))
        .map(|ids| ids.into_iter().collect())
        .unwrap_or_default()
}

/// Who waits for a proposal.
#[derive(Debug, Clone, Copy)]
enum Waiter {
    /// A client's operation.
    Client(u64),
    /// The member's automatic compaction, to this revision.
    Compaction(i64),
}

/// The automatic compaction a member runs (the same for every member of a
/// seed, as one configuration serves a cluster): periodic with a retention of
/// 1-4 s, or revision mode keeping 20-200 revisions checked every 0.5-2 s.
fn compaction_mode(seed: u64) -> CompactionMode {
    let pick = |bits: u32, n: u64| (seed >> bits) % n;
    match pick(8, 2) {
        0 => CompactionMode::Periodic { retention_ms: 1_000 + pick(16, 3_000) },
        _ => CompactionMode::Revision {
            retain: 20 + pick(24, 180) as i64,
            check_ms: 500 + pick(32, 1_500),
        },
    }
}

struct Running {
    /// Members whose removal this member applied.
    removed_peers: BTreeSet<u64>,
    /// The real WAL code on the member's simulated disk.
    wal: Wal<SimFs>,
    raft: RaftCore,
    apply: ApplyCore,
    /// Where applied events meet this member's watchers.
    hub: WatchHub,
    backend: Arc<Backend>,
    /// Proposals waiting for their entry: request ID -> who waits.
    waiters: Waiters<Waiter>,
    /// Automatic compaction's schedule (the daemon's compactor task).
    compactor: Compactor,
    /// Readers waiting for a read index: reader -> (operation, key).
    readers: BTreeMap<u64, (u64, Vec<u8>)>,
    /// The lessor's leadership confirmations: reader -> expired leases to
    /// revoke once the quorum confirms this member leads.
    revokes: BTreeMap<u64, Vec<i64>>,
    /// Readers with a read index, waiting for it to be applied.
    ready_reads: Vec<(u64, u64, Vec<u8>)>,
    next_reader: u64,
    next_request: u64,
}

/// The members-table record of simulated member `id`.
pub fn sim_member_record(id: u64) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_urls: vec![format!("http://m{id}:2380")],
        ..Default::default()
    }
}

/// A member of the simulated cluster.
pub struct SimMember {
    /// Its ID.
    pub id: u64,
    voters: Vec<u64>,
    /// A member that joins a running cluster: the members table it starts with.
    joining: Option<Vec<Member>>,
    /// It applied its own removal.
    removed: bool,
    /// Its core asked to probe its peers (the world delivers the probe).
    pub probing: bool,
    /// Set by a turn whose Ready cycles fsynced: the outbox's length then.
    /// Messages queued before it left before the fsync (a leader's appends);
    /// those after it wait for the disk, and the member is busy until then.
    pub fsync_cut: Option<usize>,
    /// The member's raft thread is in an fsync until then: it takes no tick,
    /// message or Ready cycle.
    pub busy_until: u64,
    /// A storage failure after which the daemon aborts: the world crashes it.
    pub fatal: Option<String>,
    /// The disk holding its WAL (the real WAL code, on a simulated filesystem).
    fs: SimFs,
    file: SimFile,
    running: Option<Running>,
    /// Messages to peers, collected for the network.
    pub outbox: Vec<Message>,
    /// Answers to clients: (operation, reply).
    pub replies: Vec<(u64, Reply)>,
    /// What the checkers look at.
    pub observed: Vec<Observed>,
    bugs: Bugs,
    seed: u64,
    /// Its automatic compaction (from the seed's bits the member ID leaves
    /// alone, so the same on every member of a run).
    compaction: CompactionMode,
    restarts: u64,
    /// The simulated time of the current step.
    now: u64,
}

fn apply_config() -> ApplyCoreConfig {
    ApplyCoreConfig {
        snapshot_count: 200,
        batch_limit: 50,
        batch_interval_ms: 100,
        promote_extend_ms: HEARTBEAT_MS * ELECTION_TICKS as u64,
        min_lease_ttl_secs: 2,
        lease_checkpoint: None,
        auth_token_ttl_ms: 300_000,
        // Small batches: a compaction's rows go over many steps, across
        // crashes, snapshots and newer compactions.
        compaction_batch_limit: 3,
    }
}

impl SimMember {
    /// A new member of a new cluster of `voters`.
    pub fn new(id: u64, voters: &[u64], seed: u64, bugs: Bugs) -> SimMember {
        let fs = SimFs::default();
        fs.set_skip_fsync(bugs.ack_before_fsync);
        SimMember {
            id,
            voters: voters.to_vec(),
            joining: None,
            removed: false,
            probing: false,
            fsync_cut: None,
            busy_until: 0,
            fatal: None,
            fs,
            file: SimFile::default(),
            running: None,
            outbox: Vec::new(),
            replies: Vec::new(),
            observed: Vec::new(),
            bugs,
            seed,
            compaction: compaction_mode(seed),
            restarts: 0,
            now: 0,
        }
    }

    /// A new member joining a running cluster whose members (itself included,
    /// as a learner) are `members`.
    pub fn joining(id: u64, members: Vec<Member>, seed: u64, bugs: Bugs) -> SimMember {
        SimMember { joining: Some(members), ..SimMember::new(id, &[], seed, bugs) }
    }

    /// Whether it applied its own removal (it stops for good).
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// Whether this member has applied the removal of `peer` (its transport
    /// would then refuse the peer's streams, and the peer stop).
    pub fn knows_removed(&self, peer: u64) -> bool {
        self.running.as_ref().is_some_and(|r| r.removed_peers.contains(&peer))
    }

    /// Stops this member for good: a peer refused it as removed.
    pub fn refused_as_removed(&mut self) {
        self.removed = true;
    }

    /// The members table as this member has applied it.
    pub fn members(&self) -> Option<Vec<Member>> {
        let running = self.running.as_ref()?;
        etcd_server::membership::read(&running.backend).ok()
    }

    /// Proposes a membership change (nobody waits for it).
    pub fn change_membership(&mut self, kind: Kind, member: Member) {
        let Some(running) = self.running.as_mut() else { return };
        running.next_request += 1;
        let id = running.next_request;
        let raft_kind = match kind {
            Kind::AddLearner => MembershipChange::AddLearner,
            Kind::Add | Kind::Promote => MembershipChange::AddVoter,
            Kind::Remove => MembershipChange::Remove,
            Kind::Update => return,
        };
        let node_id = member.id;
        let change = MemberChange {
            header: Some(RequestHeader { id, ..Default::default() }),
            kind: kind as i32,
            member: Some(member),
        };
        let context = change.encode_to_vec();
        self.input(Input::ProposeMembershipChange { id, kind: raft_kind, node_id, context });
    }

    /// Whether the member runs.
    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Starts (or restarts) the member from its disk.
    pub fn start(&mut self, now: u64) {
        assert!(self.running.is_none(), "invariant: a member starts once");
        self.now = now;
        self.file.revive();
        let label = Path::new("sim").join(format!("member-{}", self.id));
        let backend = Arc::new(
            Backend::open_on(SimStorage(self.file.clone()), &label).expect("simulated backend"),
        );
        let kv = Arc::new(etcd_mvcc::KvStore::open(backend.clone()).expect("store opens"));
        // Never started: no WAL on the disk (the WAL is created durably at the
        // first start; a member that only voted has a hard state to keep).
        let wal_dir = PathBuf::from(format!("/sim/m{}/wal", self.id));
        let fresh = !Wal::exists_on(&self.fs, &wal_dir);
        let (mut wal, state) = if fresh {
            let wal = Wal::create_on(self.fs.clone(), &wal_dir, b"sim", WAL_SEGMENT_BYTES)
                .expect("simulated WAL created");
            (wal, RestoreState::default())
        } else {
            let (mut wal, replay) =
                Wal::open_on(self.fs.clone(), &wal_dir).expect("the WAL replays after a crash");
            wal.set_segment_bytes_max(WAL_SEGMENT_BYTES);
            if crate::tracing() && replay.torn_bytes > 0 {
                eprintln!(
                    "{now:>6} member {} WAL: cut a torn tail of {} bytes",
                    self.id, replay.torn_bytes
                );
            }
            let marker = replay.snapshot.unwrap_or_default();
            let hs = replay.hard_state.unwrap_or_default();
            // The membership comes from the backend below, as in the daemon.
            let state = restore_state(&marker, &hs, replay.entries, ConfState::default());
            (wal, state)
        };
        let mut snapshot_index = state.snapshot_index;
        if fresh && etcd_server::membership::read(&backend).map_or(true, |m| m.is_empty()) {
            let members: Vec<Member> = match &self.joining {
                Some(members) => members.clone(),
                None => self.voters.iter().map(|&id| sim_member_record(id)).collect(),
            };
            let txn = backend.begin_write().expect("write");
            etcd_server::membership::save(&txn, &members).expect("members saved");
            txn.commit(true).expect("commit");
        }
        if self.bugs.apply_twice_after_restart && self.restarts > 0 {
            let txn = backend.begin_read().expect("read");
            let (index, term) = etcd_storage::consistent_index(&txn).expect("consistent index");
            drop(txn);
            if index > 1 {
                let txn = backend.begin_write().expect("write");
                etcd_storage::set_consistent_index(&txn, index - 1, term).expect("rewind");
                txn.commit(true).expect("commit");
            }
        }
        let state = if fresh {
            state
        } else {
            // The membership as of the backend, and (as the daemon's recovery) a
            // backend ahead of the log taken as the snapshot, recorded now.
            let members = etcd_server::membership::read(&backend).expect("members");
            let mut state = state;
            state.conf_state = etcd_server::membership::conf_state(&members);
            let txn = backend.begin_read().expect("read");
            let (index, term) = etcd_storage::consistent_index(&txn).expect("consistent index");
            drop(txn);
            let (state, covered) = state.cover_applied(index, term);
            if covered {
                let marker = snapshot_marker(index, term, &state.conf_state);
                wal.save_snapshot(&marker).and_then(|()| wal.sync()).expect("marker recorded");
                snapshot_index = index;
            }
            state
        };
        let apply = ApplyCore::open(kv, backend.clone(), apply_config(), snapshot_index, now)
            .expect("the apply half opens");
        let applied = apply.applied_index();
        self.restarts += 1;
        let node_cfg = NodeConfig {
            id: self.id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: 1,
            applied,
            pre_vote: true,
            seed: self.seed.wrapping_mul(31).wrapping_add(self.restarts),
        };
        let node = if fresh {
            match &self.joining {
                Some(members) => {
                    let conf_state = etcd_server::membership::conf_state(members);
                    RaftNode::bootstrap_with(&node_cfg, conf_state).expect("join")
                }
                None => RaftNode::bootstrap(&node_cfg, &self.voters).expect("bootstrap"),
            }
        } else {
            RaftNode::restore(&node_cfg, state).expect("restore")
        };
        let raft_cfg = RaftCoreConfig {
            heartbeat_ms: HEARTBEAT_MS,
            election_ticks: ELECTION_TICKS,
            catch_up_entries: 50,
            keep_all_log_segments: false,
            initial_election_tick_advance: false,
            read_context_start: self.restarts << 32,
        };
        let raft = RaftCore::new(node, applied, raft_cfg, now);
        let hub = WatchHub::new(apply.kv().current_revision());
        self.running = Some(Running {
            removed_peers: removed_members(&backend),
            wal,
            raft,
            apply,
            hub,
            backend,
            waiters: Waiters::default(),
            compactor: Compactor::new(self.compaction, now),
            readers: BTreeMap::new(),
            revokes: BTreeMap::new(),
            ready_reads: Vec::new(),
            next_reader: 0,
            next_request: (self.id << 48) | (self.restarts << 32),
        });
    }

    /// The process dies with the power: memory is gone, the log loses what was
    /// not fsynced, the backend keeps any subset of its unsynced writes, some
    /// torn (`seed` decides). Returns the
    /// operations that were in flight here (their outcome is unknown).
    pub fn crash(&mut self, seed: u64) -> Vec<u64> {
        self.file.crash(seed);
        self.fs.crash(seed ^ 0x0005_eed0_f10c);
        self.outbox.clear();
        let Some(running) = self.running.take() else { return Vec::new() };
        let mut waiters = running.waiters;
        let mut lost: Vec<u64> = waiters
            .fail_all(&ServerError::Stopped)
            .into_iter()
            .filter_map(|(waiter, _)| match waiter {
                Waiter::Client(op) => Some(op),
                Waiter::Compaction(_) => None,
            })
            .collect();
        lost.extend(running.readers.into_values().map(|(op, _)| op));
        lost.extend(running.ready_reads.into_iter().map(|(_, op, _)| op));
        lost
    }

    /// The leader this member knows of, and its term.
    pub fn leader_and_term(&self) -> Option<(u64, u64, Role)> {
        self.running.as_ref().map(|r| (r.raft.leader(), r.raft.term(), r.raft.role()))
    }

    /// The next `n` reads of its backend fail.
    pub fn fail_reads(&self, n: u32) {
        if self.running.is_some() {
            self.file.fail_reads(n);
        }
    }

    /// Runs `f` with this member's watch hub and store (none while down).
    pub fn with_watch<T>(&self, f: impl FnOnce(&WatchHub, &etcd_mvcc::KvStore) -> T) -> Option<T> {
        let running = self.running.as_ref()?;
        Some(f(&running.hub, running.apply.kv()))
    }

    /// Rewrites the backend compactly and swaps it in, as the daemon's
    /// defragmentation does between two applied batches: a durable copy, then
    /// an atomic switch (the rename). A read error while copying leaves the
    /// backend as it was (the daemon answers the defragment with an error).
    pub fn defragment(&mut self) {
        let Some(running) = self.running.as_ref() else { return };
        let copy = SimFile::default();
        if running.backend.copy_to_storage(SimStorage(copy.clone())).is_err() {
            return;
        }
        let fresh = SimFile::with_bytes(copy.durable_bytes());
        running
            .backend
            .replace_with_storage(SimStorage(fresh.clone()))
            .expect("invariant: the copy opens");
        self.file = fresh;
    }

    /// The power fails at this member's next fsync (see [`SimFs::fail_at_next_fsync`]).
    pub fn fail_at_next_fsync(&self) {
        if self.running.is_some() {
            self.fs.fail_at_next_fsync(self.file.clone());
        }
    }

    /// Cancels a power failure armed by [`SimMember::fail_at_next_fsync`] and
    /// read errors still to come (the world heals).
    pub fn disarm_power_failure(&self) {
        self.fs.disarm();
        self.file.fail_reads(0);
    }

    /// Whether the power failed during its last turn: it must crash now.
    pub fn power_failed(&self) -> bool {
        self.fs.is_dead()
    }

    /// How many times this member has started.
    pub fn incarnation(&self) -> u64 {
        self.restarts
    }

    /// The store's current revision, if running.
    pub fn revision(&self) -> Option<i64> {
        self.running.as_ref().map(|r| r.apply.kv().current_revision())
    }

    /// Hands the member an input (a tick, a peer's message, a request).
    pub fn input(&mut self, input: Input) {
        let (_, results) = self.with_io(|raft, io| raft.step(input, io));
        assert!(results.is_empty(), "invariant: entries are applied in Ready cycles only");
    }

    fn with_io<T>(
        &mut self,
        f: impl FnOnce(&mut RaftCore, &mut Io<'_>) -> T,
    ) -> (T, Vec<ApplyResult>) {
        let running = self.running.as_mut().expect("invariant: inputs go to running members");
        let mut io = Io {
            id: self.id,
            wal: &mut running.wal,
            file: &mut self.file,
            backend: &running.backend,
            apply: &mut running.apply,
            hub: &running.hub,
            removed: &mut self.removed,
            fsynced_at: &mut self.fsync_cut,
            fatal: &mut self.fatal,
            failed_snapshots: Vec::new(),
            outbox: &mut self.outbox,
            results: Vec::new(),
            observed: &mut self.observed,
            leader: running.raft.leader(),
            now: self.now,
        };
        let out = f(&mut running.raft, &mut io);
        let results = std::mem::take(&mut io.results);
        let failed = std::mem::take(&mut io.failed_snapshots);
        for to in failed {
            running.raft.step(Input::ReportSnapshot { to, delivered: false }, &mut io);
        }
        (out, results)
    }

    /// Runs the member's Ready cycles and answers what can be answered.
    pub fn run_ready(&mut self, now: u64) {
        if self.running.is_none() {
            return;
        }
        self.now = now;
        let observed_before = self.observed.len();
        let (effects, results) = self.with_io(|raft, io| raft.run_ready(now, io));
        let running = self.running.as_mut().expect("checked above");
        let membership_changed = results.iter().any(|r| !r.outcome.member_events.is_empty())
            || self.observed[observed_before..]
                .iter()
                .any(|o| matches!(o, Observed::Installed { .. }));
        if membership_changed {
            running.removed_peers = removed_members(&running.backend);
        }
        let mut snapshots = Vec::new();
        let mut changes = Vec::new();
        let mut revoke = Vec::new();
        for result in results {
            if crate::tracing() {
                eprintln!(
                    "{now:>6} member {} applied to {} rev {}",
                    self.id,
                    result.outcome.applied_index,
                    running.apply.kv().current_revision()
                );
            }
            for applied in result.outcome.applied {
                let waiting = running.waiters.applied(applied);
                if let Some((Waiter::Compaction(revision), applied)) = &waiting {
                    let ok = matches!(applied.result, Ok(_) | Err(ServerError::Compacted));
                    running.compactor.finished(*revision, ok, now);
                }
                if let Some((Waiter::Client(op), applied)) = waiting {
                    let reply = match applied.result {
                        Ok(Response::Txn(txn)) => Reply::Cas(txn.succeeded),
                        Ok(_) => Reply::Done,
                        Err(err) => Reply::Unknown(err),
                    };
                    self.replies.push((op, reply));
                }
            }
            if let Some((index, term)) = result.snapshot {
                snapshots.push((index, term));
            }
            for event in &result.outcome.member_events {
                if let Some((kind, node_id)) = event.raft_change() {
                    changes.push(Input::ApplyMembershipChange { kind, node_id });
                }
                if *event == MemberEvent::Removed(self.id) {
                    self.removed = true;
                }
            }
        }
        for (index, term) in snapshots {
            self.input(Input::Snapshot { index, term });
        }
        for change in changes {
            self.input(change);
        }
        let running = self.running.as_mut().expect("checked above");
        for effect in effects {
            match effect {
                Effect::ReadsReady { readers, index } => {
                    if crate::tracing() {
                        eprintln!("{now:>6} member {} read index {index} for {readers:?} (applied {}, commit {})", self.id, running.apply.applied_index(), running.raft.commit_index());
                    }
                    for reader in readers {
                        if let Some((op, key)) = running.readers.remove(&reader) {
                            running.ready_reads.push((index, op, key));
                        } else if let Some(ids) = running.revokes.remove(&reader) {
                            if running.raft.role() == Role::Leader {
                                revoke.extend(ids);
                            }
                        }
                    }
                }
                Effect::ReadsFailed { readers, error } => {
                    for reader in &readers {
                        running.revokes.remove(reader);
                    }
                    for reader in readers {
                        if let Some((op, _)) = running.readers.remove(&reader) {
                            self.replies.push((op, Reply::Refused(error.clone())));
                        }
                    }
                }
                Effect::ProposalFailed { id, error } => match running.waiters.forget(id) {
                    Some(Waiter::Client(op)) => self.replies.push((op, Reply::Refused(error))),
                    Some(Waiter::Compaction(revision)) => {
                        running.compactor.finished(revision, false, now)
                    }
                    None => {}
                },
                Effect::FailPendingProposals(error) => {
                    for (waiter, failed) in running.waiters.fail_all(&error) {
                        let error = failed.result.expect_err("failed with the error");
                        match waiter {
                            Waiter::Client(op) => self.replies.push((op, Reply::Unknown(error))),
                            Waiter::Compaction(revision) => {
                                running.compactor.finished(revision, false, now)
                            }
                        }
                    }
                }
                Effect::ProbePeers => self.probing = true,
                Effect::ConfigurationChanged { .. } | Effect::SnapshotDropped { .. } => {}
            }
        }
        if running.apply.kv().compaction_in_progress().is_some() && self.fatal.is_none() {
            // One batch of a compaction's rows per step, as the daemon's apply
            // loop does between applies.
            if let Err(err) = running.apply.compact_step() {
                self.fatal = Some(err);
            }
        }
        let applied = running.apply.applied_index();
        let (due, waiting): (Vec<_>, Vec<_>) =
            running.ready_reads.drain(..).partition(|(index, _, _)| *index <= applied);
        running.ready_reads = waiting;
        let reads: Vec<_> =
            due.into_iter().map(|(_, op, key)| (op, read_key(&running.apply, &key))).collect();
        for (op, read) in reads {
            self.answer_read(op, read);
        }
        for id in revoke {
            let revoke = LeaseRevokeRequest { id };
            self.propose(
                InternalRaftRequest { lease_revoke: Some(revoke), ..Default::default() },
                None,
            );
        }
    }
}

/// A read of `key` from the store; a storage error fails it (the client gets
/// an error, as from the daemon).
fn read_key(apply: &ApplyCore, key: &[u8]) -> Result<Option<Vec<u8>>, ServerError> {
    let request = RangeRequest { key: key.to_vec(), ..Default::default() };
    let response = apply.kv().range(&request).map_err(|_| ServerError::Stopped)?;
    if crate::tracing() {
        eprintln!(
            "       read {:?} at rev {}: {:?}",
            String::from_utf8_lossy(key),
            apply.kv().current_revision(),
            response
                .kvs
                .iter()
                .map(|kv| (kv.mod_revision, String::from_utf8_lossy(&kv.value).into_owned()))
                .collect::<Vec<_>>()
        );
    }
    Ok(response.kvs.into_iter().next().map(|kv| kv.value))
}
