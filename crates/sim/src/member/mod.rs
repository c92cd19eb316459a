//! One simulated member: the server's member core
//! ([`etcd_server::member_core::MemberCore`]) on a simulated disk, recovered at
//! each start as the daemon's bootstrap recovers. Crashing it drops every
//! in-memory structure; restarting it recovers from what the disk kept. Client
//! operations become the core's inputs, and its effects become replies.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_proto::etcdrs::member_change::Kind;
use etcd_proto::etcdrs::Member;
use etcd_proto::etcdserverpb::RangeRequest;
use etcd_proto::mvccpb::Event;
use etcd_raftnode::{ConfState, Message, NodeConfig, RaftNode, ReadyWrite, RestoreState, Role};
use etcd_server::apply_core::{ApplyCore, ApplyCoreConfig};
use etcd_server::compactor::{CompactionMode, Compactor};
use etcd_server::member_core::{MemberCore, MemberEffect, MemberInput};
use etcd_server::raft_core::{Input, RaftCore, RaftCoreConfig};
use etcd_server::wal_entries::{self, restore_state, snapshot_marker};
use etcd_server::watch::WatchHub;
use etcd_server::{Response, ServerError};
use etcd_storage::Backend;

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

/// Who waits on the member core: a client's operation, and for a read the key
/// it reads.
type Op = (u64, Vec<u8>);

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
    /// The real WAL code on the member's simulated disk.
    wal: Wal<SimFs>,
    core: MemberCore<Op>,
    /// Writes queued for the log writer (with `async_writes`), lost at a crash.
    writes: Vec<ReadyWrite>,
    /// See `Io::flushed`.
    flushed: Option<u64>,
}

/// The log writer's write in progress (with `async_writes`).
#[derive(Debug)]
pub struct Writing {
    /// When its fsync completes.
    pub until: u64,
    /// The newest Ready it covers, reported to the core then.
    pub number: u64,
    /// Messages that leave then.
    pub after: Vec<Message>,
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
    /// It applied its own removal, or a peer refused it as removed.
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
    /// Whether it writes its WAL as the daemon does, on a writer of its own
    /// (Readies' writes queue, the raft thread goes on, the writer's fsync
    /// takes its time and reports), or in the raft thread's turn. Chosen per
    /// member from the seed, so runs mix both.
    pub async_writes: bool,
    /// The log writer's write in progress.
    pub writing: Option<Writing>,
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
            async_writes: (seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)).count_ones() % 2 == 1,
            writing: None,
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
        self.removed || self.running.as_ref().is_some_and(|r| r.core.removed())
    }

    /// Whether this member has applied the removal of `peer` (its transport
    /// would then refuse the peer's streams, and the peer stop).
    pub fn knows_removed(&self, peer: u64) -> bool {
        self.running.as_ref().is_some_and(|r| r.core.knows_removed(peer))
    }

    /// Stops this member for good: a peer refused it as removed.
    pub fn refused_as_removed(&mut self) {
        self.removed = true;
    }

    /// The members table as this member has applied it.
    pub fn members(&self) -> Option<Vec<Member>> {
        let running = self.running.as_ref()?;
        etcd_server::membership::read(running.core.backend()).ok()
    }

    /// Proposes a membership change (nobody waits for it).
    pub fn change_membership(&mut self, kind: Kind, member: Member) {
        self.step(MemberInput::ChangeMembership { kind, member }, self.now);
    }

    /// Whether the member runs.
    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Starts (or restarts) the member from its disk. An error reading its
    /// WAL (an I/O error, not corruption) keeps it down, as the daemon exits
    /// with it; its supervisor tries again later.
    pub fn start(&mut self, now: u64) -> Result<(), String> {
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
        let fresh = !Wal::exists_on(&self.fs, &wal_dir)
            .map_err(|e| format!("cannot read the WAL directory: {e}"))?;
        let (mut wal, state) = if fresh {
            let wal = Wal::create_on(self.fs.clone(), &wal_dir, b"sim", WAL_SEGMENT_BYTES)
                .expect("simulated WAL created");
            (wal, RestoreState::default())
        } else {
            let (mut wal, replay) = match Wal::open_on(self.fs.clone(), &wal_dir) {
                Ok(opened) => opened,
                Err(etcd_wal::Error::Io(err)) => return Err(format!("cannot read the WAL: {err}")),
                Err(err) => panic!("the WAL replays after a crash: {err:?}"),
            };
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
        let compactor = Compactor::new(self.compaction, now);
        let first_request = (self.id << 48) | (self.restarts << 32);
        let core = MemberCore::new(raft, apply, compactor, first_request, now);
        self.running = Some(Running { wal, core, writes: Vec::new(), flushed: None });
        Ok(())
    }

    /// The process dies with the power: memory is gone, the log loses what was
    /// not fsynced, the backend keeps any subset of its unsynced writes, some
    /// torn (`seed` decides). Returns the
    /// operations that were in flight here (their outcome is unknown).
    pub fn crash(&mut self, seed: u64) -> Vec<u64> {
        self.file.crash(seed);
        self.fs.crash(seed ^ 0x0005_eed0_f10c);
        self.outbox.clear();
        self.writing = None;
        let Some(running) = self.running.take() else { return Vec::new() };
        running.core.into_waiting().into_iter().map(|(op, _)| op).collect()
    }

    /// The leader this member knows of, and its term.
    pub fn leader_and_term(&self) -> Option<(u64, u64, Role)> {
        self.running.as_ref().map(|r| {
            let raft = r.core.raft();
            (raft.leader(), raft.term(), raft.role())
        })
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
        Some(f(running.core.hub(), running.core.apply().kv()))
    }

    /// Rewrites the backend compactly and swaps it in, as the daemon's
    /// defragmentation does between two applied batches: a durable copy, then
    /// an atomic switch (the rename). A read error while copying leaves the
    /// backend as it was (the daemon answers the defragment with an error).
    pub fn defragment(&mut self) {
        let Some(running) = self.running.as_ref() else { return };
        let copy = SimFile::default();
        let backend = running.core.backend();
        if backend.copy_to_storage(SimStorage(copy.clone())).is_err() {
            return;
        }
        let fresh = SimFile::with_bytes(copy.durable_bytes());
        backend.replace_with_storage(SimStorage(fresh.clone())).expect("invariant: the copy opens");
        self.file = fresh;
    }

    /// The next `n` reads of its WAL fail (they happen when it starts).
    pub fn fail_wal_reads(&self, n: u32) {
        self.fs.fail_reads(n);
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
        self.fs.fail_reads(0);
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
        self.running.as_ref().map(|r| r.core.apply().kv().current_revision())
    }

    /// Hands the member a Raft input (a tick, a peer's message, a report).
    pub fn input(&mut self, input: Input) {
        self.step(MemberInput::Raft(input), self.now);
    }

    /// Steps the core (which must run) with its I/O on this member's disk and
    /// network, and turns its effects into replies.
    fn step(&mut self, input: MemberInput<Op>, now: u64) {
        let running = self.running.as_mut().expect("invariant: inputs go to running members");
        let mut io = Io {
            id: self.id,
            wal: &mut running.wal,
            file: &mut self.file,
            fsynced_at: &mut self.fsync_cut,
            outbox: &mut self.outbox,
            observed: &mut self.observed,
            now,
            writes: self.async_writes.then_some(&mut running.writes),
            flushed: &mut running.flushed,
        };
        let effects = running.core.step(input, now, &mut io);
        for effect in effects {
            match effect {
                MemberEffect::Applied { waiter: (op, _), applied } => {
                    let reply = match applied.result {
                        Ok(Response::Txn(txn)) => Reply::Cas(txn.succeeded),
                        Ok(_) => Reply::Done,
                        Err(err) => Reply::Unknown(err),
                    };
                    self.replies.push((op, reply));
                }
                MemberEffect::Refused { waiter: (op, _), error }
                | MemberEffect::ReadFailed { waiter: (op, _), error } => {
                    self.replies.push((op, Reply::Refused(error)))
                }
                MemberEffect::Failed { waiter: (op, _), error } => {
                    self.replies.push((op, Reply::Unknown(error)))
                }
                MemberEffect::ReadReady { waiter: (op, key) } => {
                    let running = self.running.as_ref().expect("running");
                    let read = read_key(running.core.apply(), &key);
                    self.answer_read(op, read);
                }
                MemberEffect::ProbePeers => self.probing = true,
            }
        }
        // Queued writes a synchronous one wrote ahead of itself: the writer
        // reports them.
        if let Some(number) = self.running.as_mut().and_then(|r| r.flushed.take()) {
            self.step(MemberInput::Raft(Input::Persisted { number }), now);
        }
    }

    /// The log writer's turn: appends every queued write, with one fsync if any
    /// must be durable. Returns the newest Ready written, the messages that
    /// waited for it and whether it fsynced; none if nothing was queued.
    pub fn write_queued(&mut self) -> Option<(u64, Vec<Message>, bool)> {
        let running = self.running.as_mut()?;
        if running.writes.is_empty() {
            return None;
        }
        let (mut number, mut after, mut synced) = (0, Vec::new(), false);
        for write in running.writes.drain(..) {
            wal_entries::append(&mut running.wal, &write.entries, write.hard_state.as_ref())
                .expect("simulated WAL append");
            number = write.number;
            after.extend(write.after);
            synced |= write.must_sync;
        }
        if synced {
            running.wal.sync().expect("simulated WAL fsync");
        }
        Some((number, after, synced))
    }

    /// The storage failure after which the daemon aborts, if one happened:
    /// the world crashes the member.
    pub fn take_fatal(&mut self) -> Option<String> {
        self.running.as_mut().and_then(|r| r.core.take_fatal())
    }

    /// Runs the member's Ready cycles and answers what can be answered.
    pub fn run_ready(&mut self, now: u64) {
        if self.running.is_none() {
            return;
        }
        self.now = now;
        self.step(MemberInput::Ready, now);
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
