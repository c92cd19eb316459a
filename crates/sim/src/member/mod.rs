//! One simulated member: the daemon's two cores (Raft half and apply half) on a
//! simulated disk, with the waiter registry and read queue the daemon keeps
//! around them. Crashing it drops every in-memory structure; restarting it
//! recovers from what the disk kept, as the daemon's bootstrap does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use etcd_proto::etcdrs::member_change::Kind;
use etcd_proto::etcdrs::{InternalRaftRequest, Member, MemberChange, RequestHeader};
use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use etcd_proto::mvccpb::Event;
use etcd_raftnode::{
    encode_conf_state, ConfState, HardState, MembershipChange, Message, NodeConfig, RaftNode,
    RestoreState, Role,
};
use etcd_server::apply_core::{lease_duties, ApplyCore, ApplyCoreConfig, ApplyResult};
use etcd_server::membership::MemberEvent;
use etcd_server::raft_core::{Effect, Input, RaftCore, RaftCoreConfig};
use etcd_server::waiters::Waiters;
use etcd_server::wal_entries::to_raft_entry;
use etcd_server::watch::WatchHub;
use etcd_server::{Applier, Response, ServerError};
use etcd_storage::Backend;
use prost::Message as _;

mod io;

use io::Io;

use crate::check::Call;
use crate::disk::{SimFile, SimFs, SimStorage};
use etcd_wal::{SnapshotMarker, Wal};

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

struct Running {
    /// The real WAL code on the member's simulated disk.
    wal: Wal<SimFs>,
    raft: RaftCore,
    apply: ApplyCore,
    /// Where applied events meet this member's watchers.
    hub: WatchHub,
    backend: Arc<Backend>,
    /// Proposals waiting for their entry: request ID -> operation.
    waiters: Waiters<u64>,
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
        let Some(running) = self.running.as_ref() else { return false };
        running
            .backend
            .begin_read()
            .and_then(|txn| etcd_storage::ReadTables::members_removed_list(&txn))
            .is_ok_and(|removed| removed.contains(&peer))
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
            let state = RestoreState {
                snapshot_index: marker.index,
                snapshot_term: marker.term,
                conf_state: ConfState::default(),
                hard_state: HardState {
                    term: hs.term,
                    vote: hs.vote,
                    commit: hs.commit,
                    ..Default::default()
                },
                entries: replay.entries.into_iter().map(to_raft_entry).collect(),
            };
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
        let cfg = apply_config();
        let lessor = etcd_server::apply_core::recover_lessor(&backend, &kv, &cfg).expect("lessor");
        let auth = etcd_auth::AuthStore::load(&backend.begin_read().expect("read"), 300_000)
            .expect("auth");
        let applier = Applier::new(
            backend.clone(),
            kv.clone(),
            Arc::new(Mutex::new(lessor)),
            Arc::new(RwLock::new(auth)),
        )
        .expect("applier");
        let applied = applier.consistent_index();
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
            let members = etcd_server::membership::read(&backend).expect("members");
            let mut state = state;
            state.conf_state = etcd_server::membership::conf_state(&members);
            // As the daemon's recovery: a backend ahead of the log holds a
            // snapshot the log did not record; it is recorded now.
            let txn = backend.begin_read().expect("read");
            let (index, term) = etcd_storage::consistent_index(&txn).expect("consistent index");
            drop(txn);
            let (state, covered) = state.cover_applied(index, term);
            if covered {
                let conf_state = encode_conf_state(&state.conf_state);
                let marker = SnapshotMarker { index, term, conf_state };
                wal.save_snapshot(&marker).and_then(|()| wal.sync()).expect("marker recorded");
                snapshot_index = index;
            }
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
        let apply = ApplyCore::new(applier, kv, backend.clone(), cfg, snapshot_index, now);
        let hub = WatchHub::new(apply.kv().current_revision());
        self.running = Some(Running {
            wal,
            raft,
            apply,
            hub,
            backend,
            waiters: Waiters::default(),
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
        let mut lost: Vec<u64> =
            waiters.fail_all(&ServerError::Stopped).into_iter().map(|(op, _)| op).collect();
        lost.extend(running.readers.into_values().map(|(op, _)| op));
        lost.extend(running.ready_reads.into_iter().map(|(_, op, _)| op));
        lost
    }

    /// The leader this member knows of, and its term.
    pub fn leader_and_term(&self) -> Option<(u64, u64, Role)> {
        self.running.as_ref().map(|r| (r.raft.leader(), r.raft.term(), r.raft.role()))
    }

    /// A client's write (put, delete or compare-and-swap), as operation `op`.
    pub fn write(&mut self, op: u64, key: &[u8], call: &Call) {
        let Some(running) = self.running.as_mut() else { return };
        running.next_request += 1;
        let id = running.next_request;
        let mut request = InternalRaftRequest {
            header: Some(RequestHeader { id, ..Default::default() }),
            ..Default::default()
        };
        let put = |value: &[u8]| PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        match call {
            Call::Put(value) => request.put = Some(put(value)),
            Call::Delete => {
                request.delete_range =
                    Some(DeleteRangeRequest { key: key.to_vec(), ..Default::default() })
            }
            Call::Cas { expect, new } => {
                let (target, target_union) = match expect {
                    Some(value) => (CompareTarget::Value, TargetUnion::Value(value.clone())),
                    None => (CompareTarget::Version, TargetUnion::Version(0)),
                };
                let compare = Compare {
                    result: CompareResult::Equal as i32,
                    target: target as i32,
                    key: key.to_vec(),
                    target_union: Some(target_union),
                    ..Default::default()
                };
                let success = RequestOp { request: Some(Request::RequestPut(put(new))) };
                request.txn = Some(TxnRequest {
                    compare: vec![compare],
                    success: vec![success],
                    failure: vec![],
                });
            }
            Call::Get => unreachable!("reads are not proposed"),
        }
        running.waiters.register(id, op);
        self.input(Input::Propose { id, data: request.encode_to_vec() });
    }

    /// Proposes a compaction at `revision` (nobody waits for it).
    pub fn compact(&mut self, revision: i64) {
        let Some(running) = self.running.as_mut() else { return };
        running.next_request += 1;
        let id = running.next_request;
        let request = InternalRaftRequest {
            header: Some(RequestHeader { id, ..Default::default() }),
            compaction: Some(CompactionRequest { revision, physical: false }),
            ..Default::default()
        };
        self.input(Input::Propose { id, data: request.encode_to_vec() });
    }

    /// A serializable read: the local store's revision and the key's value.
    pub fn read_serializable(&self, key: &[u8]) -> Option<(i64, Option<Vec<u8>>)> {
        let running = self.running.as_ref()?;
        let value = read_key(&running.apply, key).ok()?;
        Some((running.apply.kv().current_revision(), value))
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

    /// A client's linearizable read of `key`, as operation `op`.
    pub fn read(&mut self, op: u64, key: &[u8]) {
        let Some(running) = self.running.as_mut() else { return };
        let leads = running.raft.role() == Role::Leader;
        if self.bugs.read_without_read_index || (self.bugs.leader_reads_locally && leads) {
            let reply = read_key(&running.apply, key);
            self.answer_read(op, reply);
            return;
        }
        running.next_reader += 1;
        let reader = running.next_reader;
        running.readers.insert(reader, (op, key.to_vec()));
        self.input(Input::ReadIndex { reader });
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
        let (effects, results) = self.with_io(|raft, io| raft.run_ready(now, io));
        let running = self.running.as_mut().expect("checked above");
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
                if let Some((op, applied)) = running.waiters.applied(applied) {
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
                Effect::ProposalFailed { id, error } => {
                    if let Some(op) = running.waiters.forget(id) {
                        self.replies.push((op, Reply::Refused(error)));
                    }
                }
                Effect::FailPendingProposals(error) => {
                    for (op, failed) in running.waiters.fail_all(&error) {
                        let error = failed.result.expect_err("failed with the error");
                        self.replies.push((op, Reply::Unknown(error)));
                    }
                }
                Effect::ProbePeers => self.probing = true,
                Effect::ConfigurationChanged { .. } | Effect::SnapshotDropped { .. } => {}
            }
        }
        let applied = running.apply.applied_index();
        let (due, waiting): (Vec<_>, Vec<_>) =
            running.ready_reads.drain(..).partition(|(index, _, _)| *index <= applied);
        running.ready_reads = waiting;
        for (_, op, key) in due {
            let reply = read_key(&running.apply, &key);
            self.fatal = self.fatal.take().or(reply.as_ref().err().map(|e| format!("{e}")));
            self.replies.push((op, reply.map_or_else(Reply::Refused, Reply::Read)));
        }
        for id in revoke {
            self.propose_untracked(InternalRaftRequest {
                lease_revoke: Some(LeaseRevokeRequest { id }),
                ..Default::default()
            });
        }
    }

    /// Answers a read; a storage failure stops the member (the daemon aborts:
    /// redb serves nothing more after an I/O error until reopened).
    fn answer_read(&mut self, op: u64, read: Result<Option<Vec<u8>>, ServerError>) {
        if let Err(err) = &read {
            self.fatal = Some(format!("the backend failed a read: {err}"));
        }
        self.replies.push((op, read.map_or_else(Reply::Refused, Reply::Read)));
    }

    /// Proposes a request nobody waits for (a revoke of an expired lease).
    fn propose_untracked(&mut self, mut request: InternalRaftRequest) {
        let Some(running) = self.running.as_mut() else { return };
        running.next_request += 1;
        let id = running.next_request;
        request.header = Some(RequestHeader { id, ..Default::default() });
        self.input(Input::Propose { id, data: request.encode_to_vec() });
    }

    /// The leader's lease duty (every 500 ms, as the daemon's expiry loop):
    /// expired leases are revoked once a ReadIndex confirms this member still
    /// leads; a member that does not lead demotes its lessor.
    pub fn lease_duty(&mut self, now: u64) {
        let Some(running) = self.running.as_mut() else { return };
        let leading = running.raft.role() == Role::Leader;
        let now = if self.bugs.expire_leases_early { now + 1_500 } else { now };
        let duties = {
            let mut lessor = running.apply.lessor().lock().expect("lessor lock");
            lease_duties(&mut lessor, now, leading)
        };
        if duties.expired.is_empty() {
            return;
        }
        if crate::tracing() {
            eprintln!("{now:>6} member {} lease duty: expired {:?}", self.id, duties.expired);
        }
        running.next_reader += 1;
        let reader = running.next_reader;
        running.revokes.insert(reader, duties.expired);
        self.input(Input::ReadIndex { reader });
    }

    /// A client's lease grant, as operation `op`.
    pub fn grant(&mut self, op: u64, lease: i64, ttl_secs: i64) {
        let Some(running) = self.running.as_mut() else { return };
        running.next_request += 1;
        let id = running.next_request;
        let request = InternalRaftRequest {
            header: Some(RequestHeader { id, ..Default::default() }),
            lease_grant: Some(LeaseGrantRequest { ttl: ttl_secs, id: lease }),
            ..Default::default()
        };
        running.waiters.register(id, op);
        self.input(Input::Propose { id, data: request.encode_to_vec() });
    }

    /// A client's put of `key` attached to `lease`, as operation `op`.
    pub fn put_with_lease(&mut self, op: u64, key: &[u8], value: &[u8], lease: i64) {
        let Some(running) = self.running.as_mut() else { return };
        running.next_request += 1;
        let id = running.next_request;
        let put =
            PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() };
        let request = InternalRaftRequest {
            header: Some(RequestHeader { id, ..Default::default() }),
            put: Some(put),
            ..Default::default()
        };
        running.waiters.register(id, op);
        self.input(Input::Propose { id, data: request.encode_to_vec() });
    }

    /// A keep-alive on this member's lessor, as the daemon's `renew_here`: only
    /// a leader whose lessor tracks deadlines renews.
    pub fn keepalive(&mut self, lease: i64, now: u64) -> KeepAlive {
        let Some(running) = self.running.as_mut() else { return KeepAlive::NotLeader };
        if running.raft.role() != Role::Leader {
            return KeepAlive::NotLeader;
        }
        let mut lessor = running.apply.lessor().lock().expect("lessor lock");
        match lessor.renew(lease, now) {
            Ok(_) => KeepAlive::Renewed,
            Err(etcd_lease::LeaseError::NotPrimary) => KeepAlive::NotLeader,
            Err(_) => KeepAlive::NotFound,
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
