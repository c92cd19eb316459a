//! One member as a single deterministic state machine: the Raft half and the
//! apply half together with everything that coordinates them (the waiter
//! registry, linearizable readers waiting for their read index to be applied,
//! snapshot scheduling, membership follow-up, the lessor's expiry duty, the
//! compactor's schedule and its batches). Driven by
//! [`MemberCore::step`]`(input, now, io) -> effects`; its disk and network are
//! behind [`MemberIo`]. No threads, clock or RNG: the simulator runs one per
//! simulated member, and the unit tests below run it on its own.
//!
//! The daemon runs the same two halves on two threads instead (applying
//! overlaps the next fsync there), with channels where this calls in place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use etcd_lease::LeaseError;
use etcd_proto::etcdrs::member_change::Kind;
use etcd_proto::etcdrs::{InternalRaftRequest, Member, MemberChange, RequestHeader};
use etcd_proto::etcdserverpb::{CompactionRequest, LeaseRevokeRequest};
use etcd_proto::mvccpb::Event;
use etcd_raftnode::{ConfState, Entry, HardState, MembershipChange, Message, ReadyWrite, Role};
use etcd_storage::Backend;
use prost::Message as _;

use crate::apply_core::{lease_duties, ApplyCore, ApplyResult};
use crate::compactor::Compactor;
use crate::membership::MemberEvent;
use crate::raft_core::{Effect, Input, RaftCore, RaftIo};
use crate::waiters::Waiters;
use crate::watch::WatchHub;
use crate::{Applied, ServerError};

/// A member's disk and network, as the member core uses them.
pub trait MemberIo {
    /// Queues messages for peers.
    fn send(&mut self, messages: Vec<Message>);
    /// Attaches a copy of `backend` to a snapshot message (stamped with
    /// [`crate::apply_core::stamp_snapshot`]) and sends it; an error (the copy
    /// failed) is reported to Raft, which retries.
    fn send_snapshot(&mut self, message: Message, backend: &Backend) -> Result<(), String>;
    /// Appends entries and the hard state to the log; fsyncs when `must_sync`.
    fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>, must_sync: bool);
    /// Whether the log is written by a writer of its own (see
    /// [`RaftIo::persists_async`]): Readies' writes go to
    /// [`MemberIo::persist_async`] and come back as `Input::Persisted`.
    fn persists_async(&self) -> bool {
        false
    }
    /// Queues a Ready's writes for the writer (see [`RaftIo::persist_async`]).
    fn persist_async(&mut self, write: ReadyWrite) {
        let _ = write;
        unreachable!("persist_async is called only on an I/O that persists_async");
    }
    /// Records a snapshot durably in the log.
    fn save_snapshot(&mut self, index: u64, term: u64, conf_state: &ConfState);
    /// Lets the log drop what a snapshot at `index` covers.
    fn release_log(&mut self, index: u64);
    /// Peers with a stream up now.
    fn active_peers(&self) -> usize;
    /// Replaces the backend's storage with a leader's snapshot (what the
    /// snapshot message carried).
    fn replace_backend(&mut self, backend: &Backend, data: Vec<u8>) -> Result<(), String>;
    /// Committed entries about to be applied (for observers; nothing by default).
    fn applying(&mut self, _entries: &[Entry]) {}
    /// A batch was applied up to `index` (0: nothing new), leaving the store at
    /// `revision` with these events (for observers; nothing by default).
    fn applied(&mut self, _index: u64, _revision: i64, _events: &[(i64, Vec<Event>)]) {}
    /// A leader's snapshot at `index` was installed (for observers).
    fn installed(&mut self, _index: u64) {}
}

/// What the member is asked to do.
#[derive(Debug)]
pub enum MemberInput<W> {
    /// An input of the Raft half as it is (a tick, a peer's message, an
    /// unreachable peer, a snapshot report, leader transfer).
    Raft(Input),
    /// Propose a request; `waiter` (if any) is told its outcome.
    Propose {
        /// The request (its header's ID is assigned here; boxed: it is large).
        request: Box<InternalRaftRequest>,
        /// Who waits.
        waiter: Option<W>,
    },
    /// Propose a membership change (nobody waits; its application is seen in
    /// the members table).
    ChangeMembership {
        /// The change.
        kind: Kind,
        /// The member it concerns.
        member: Member,
    },
    /// A linearizable read: `waiter` is told when it may read (every entry up
    /// to a read index the quorum confirmed is applied here).
    Read {
        /// Who reads.
        waiter: W,
    },
    /// The lessor's expiry duty (every [`crate::apply_core::LEASE_DUTY_INTERVAL_MS`]):
    /// a leader's expired leases are revoked once a ReadIndex confirms it
    /// still leads; a member that does not lead demotes its lessor.
    LeaseDuty,
    /// Automatic compaction's schedule: a leader proposes when it says so.
    CompactionDuty,
    /// Run the Ready cycles: persist, send, apply, answer.
    Ready,
}

/// What came of a step, for the waiters and the shell.
#[derive(Debug)]
pub enum MemberEffect<W> {
    /// A proposal's entry was applied here, with its result.
    Applied {
        /// Who waited.
        waiter: W,
        /// What applying it did.
        applied: Applied,
    },
    /// A proposal was refused before reaching the log (it never applies).
    Refused {
        /// Who waited.
        waiter: W,
        /// Why.
        error: ServerError,
    },
    /// A proposal failed in flight (this member lost its leader): it may or
    /// may not be applied.
    Failed {
        /// Who waited.
        waiter: W,
        /// Why.
        error: ServerError,
    },
    /// A linearizable read may be served from the store now.
    ReadReady {
        /// Who reads.
        waiter: W,
    },
    /// A linearizable read cannot be served here.
    ReadFailed {
        /// Who reads.
        waiter: W,
        /// Why.
        error: ServerError,
    },
    /// Ask every peer whether this member was removed (see
    /// [`Effect::ProbePeers`]).
    ProbePeers,
}

/// Who waits for a proposal.
#[derive(Debug)]
enum Pending<W> {
    /// Somebody outside.
    Waiter(W),
    /// The member's automatic compaction, to this revision.
    Compaction(i64),
}

/// Who waits for a read index.
#[derive(Debug)]
enum Reader<W> {
    /// A linearizable read.
    Waiter(W),
    /// The lessor's expired leases, revoked once leadership is confirmed.
    Revoke(Vec<i64>),
}

/// The members whose removal the backend records.
fn removed_members(backend: &Backend) -> BTreeSet<u64> {
    backend
        .begin_read()
        .and_then(|txn| etcd_storage::ReadTables::members_removed_list(&txn))
        .map(|ids| ids.into_iter().collect())
        .unwrap_or_default()
}

/// One member.
pub struct MemberCore<W> {
    id: u64,
    raft: RaftCore,
    apply: ApplyCore,
    backend: Arc<Backend>,
    /// Where applied events meet this member's watchers.
    hub: WatchHub,
    waiters: Waiters<Pending<W>>,
    /// Readers waiting for a read index, by the number Raft knows them by.
    readers: BTreeMap<u64, Reader<W>>,
    /// Reads with a read index, waiting for it to be applied.
    ready_reads: Vec<(u64, W)>,
    compactor: Compactor,
    /// Members whose removal this member applied.
    removed_peers: BTreeSet<u64>,
    /// It applied its own removal (or a snapshot without it).
    removed: bool,
    /// A storage failure after which continuing could lose data: the member
    /// applies nothing more and must stop.
    fatal: Option<String>,
    /// Leader snapshots installed so far.
    installs: u64,
    next_reader: u64,
    next_request: u64,
    now: u64,
}

impl<W> MemberCore<W> {
    /// Puts a member together from its recovered halves; request IDs start
    /// after `first_request` (unique per run of the member).
    pub fn new(
        raft: RaftCore,
        apply: ApplyCore,
        compactor: Compactor,
        first_request: u64,
        now: u64,
    ) -> MemberCore<W> {
        let backend = apply.kv().backend().clone();
        let hub = WatchHub::new(apply.kv().current_revision());
        MemberCore {
            id: raft.id(),
            removed_peers: removed_members(&backend),
            raft,
            apply,
            backend,
            hub,
            waiters: Waiters::default(),
            readers: BTreeMap::new(),
            ready_reads: Vec::new(),
            compactor,
            removed: false,
            fatal: None,
            installs: 0,
            next_reader: 0,
            next_request: first_request,
            now,
        }
    }

    /// Takes one input at `now` (milliseconds).
    pub fn step(
        &mut self,
        input: MemberInput<W>,
        now: u64,
        io: &mut impl MemberIo,
    ) -> Vec<MemberEffect<W>> {
        match input {
            MemberInput::Raft(input) => self.raft_input(input, io),
            MemberInput::Propose { request, waiter } => {
                self.propose(*request, waiter.map(Pending::Waiter), io)
            }
            MemberInput::ChangeMembership { kind, member } => {
                self.change_membership(kind, member, io)
            }
            MemberInput::Read { waiter } => self.read_index(Reader::Waiter(waiter), io),
            MemberInput::LeaseDuty => self.lease_duty(now, io),
            MemberInput::CompactionDuty => self.compaction_duty(now, io),
            MemberInput::Ready => return self.run_ready(now, io),
        }
        Vec::new()
    }

    fn raft_input(&mut self, input: Input, io: &mut impl MemberIo) {
        let ((), results) = self.with_raft(io, |raft, io| raft.step(input, io));
        assert!(results.is_empty(), "invariant: entries are applied in Ready cycles only");
    }

    /// Runs `f` on the Raft half with the apply half behind its I/O; returns
    /// what was applied meanwhile. Snapshots that could not be copied are
    /// reported to Raft.
    fn with_raft<I: MemberIo, T>(
        &mut self,
        io: &mut I,
        f: impl FnOnce(&mut RaftCore, &mut Halves<'_, I>) -> T,
    ) -> (T, Vec<ApplyResult>) {
        let mut halves = Halves {
            io,
            id: self.id,
            apply: &mut self.apply,
            backend: &self.backend,
            hub: &self.hub,
            removed: &mut self.removed,
            fatal: &mut self.fatal,
            failed_snapshots: Vec::new(),
            results: Vec::new(),
            installs: 0,
            leader: self.raft.leader(),
            now: self.now,
        };
        let out = f(&mut self.raft, &mut halves);
        for to in std::mem::take(&mut halves.failed_snapshots) {
            self.raft.step(Input::ReportSnapshot { to, delivered: false }, &mut halves);
        }
        self.installs += halves.installs;
        (out, halves.results)
    }

    fn propose(
        &mut self,
        mut request: InternalRaftRequest,
        waiter: Option<Pending<W>>,
        io: &mut impl MemberIo,
    ) {
        self.next_request += 1;
        let id = self.next_request;
        request.header = Some(RequestHeader { id, ..Default::default() });
        if let Some(waiter) = waiter {
            self.waiters.register(id, waiter);
        }
        self.raft_input(Input::Propose { id, data: request.encode_to_vec() }, io);
    }

    fn change_membership(&mut self, kind: Kind, member: Member, io: &mut impl MemberIo) {
        self.next_request += 1;
        let id = self.next_request;
        let raft_kind = match kind {
            Kind::AddLearner => MembershipChange::AddLearner,
            Kind::Add | Kind::Promote => MembershipChange::AddVoter,
            Kind::Remove => MembershipChange::Remove,
            // A URL update changes no configuration of Raft's.
            Kind::Update => return,
        };
        let node_id = member.id;
        let change = MemberChange {
            header: Some(RequestHeader { id, ..Default::default() }),
            kind: kind as i32,
            member: Some(member),
        };
        let context = change.encode_to_vec();
        self.raft_input(
            Input::ProposeMembershipChange { id, kind: raft_kind, node_id, context },
            io,
        );
    }

    fn read_index(&mut self, reader: Reader<W>, io: &mut impl MemberIo) {
        self.next_reader += 1;
        self.readers.insert(self.next_reader, reader);
        self.raft_input(Input::ReadIndex { reader: self.next_reader }, io);
    }

    fn lease_duty(&mut self, now: u64, io: &mut impl MemberIo) {
        let leading = self.raft.role() == Role::Leader;
        let duties = {
            let mut lessor = self.apply.lessor().lock().expect("lessor lock");
            lease_duties(&mut lessor, now, leading)
        };
        if !duties.expired.is_empty() {
            self.read_index(Reader::Revoke(duties.expired), io);
        }
    }

    fn compaction_duty(&mut self, now: u64, io: &mut impl MemberIo) {
        let leading = self.raft.role() == Role::Leader;
        let revision = self.apply.kv().current_revision();
        if let Some(target) = self.compactor.tick(now, revision, leading) {
            let compaction = CompactionRequest { revision: target, physical: false };
            let request =
                InternalRaftRequest { compaction: Some(compaction), ..Default::default() };
            self.propose(request, Some(Pending::Compaction(target)), io);
        }
    }

    fn run_ready(&mut self, now: u64, io: &mut impl MemberIo) -> Vec<MemberEffect<W>> {
        self.now = now;
        let installs_before = self.installs;
        let (raft_effects, results) = self.with_raft(io, |raft, io| raft.run_ready(now, io));
        assert!(
            self.apply.applied_index() <= self.raft.commit_index(),
            "invariant: applied ({}) <= committed ({})",
            self.apply.applied_index(),
            self.raft.commit_index()
        );
        let quiet_and_due = results.is_empty()
            && self.fatal.is_none()
            && self.apply.durable_due().is_some_and(|due| due <= now);
        if quiet_and_due {
            // As the daemon's apply loop when nothing comes: what was applied
            // becomes durable within a batch interval.
            if let Err(why) = self.apply.make_durable(now) {
                self.stop(why);
            }
        }
        let membership_changed = self.installs > installs_before
            || results.iter().any(|r| !r.outcome.member_events.is_empty());
        if membership_changed {
            self.removed_peers = removed_members(&self.backend);
        }
        let mut effects = Vec::new();
        let mut snapshots = Vec::new();
        let mut changes = Vec::new();
        for result in results {
            for applied in result.outcome.applied {
                match self.waiters.applied(applied) {
                    Some((Pending::Compaction(revision), applied)) => {
                        let ok = matches!(applied.result, Ok(_) | Err(ServerError::Compacted));
                        self.compactor.finished(revision, ok, now);
                    }
                    Some((Pending::Waiter(waiter), applied)) => {
                        effects.push(MemberEffect::Applied { waiter, applied })
                    }
                    None => {}
                }
            }
            snapshots.extend(result.snapshot);
            for event in &result.outcome.member_events {
                changes.extend(event.raft_change());
                if *event == MemberEvent::Removed(self.id) {
                    self.removed = true;
                }
            }
        }
        for (index, term) in snapshots {
            self.raft_input(Input::Snapshot { index, term }, io);
        }
        for (kind, node_id) in changes {
            self.raft_input(Input::ApplyMembershipChange { kind, node_id }, io);
        }
        let mut revoke = Vec::new();
        for effect in raft_effects {
            match effect {
                Effect::ReadsReady { readers, index } => {
                    for reader in readers {
                        match self.readers.remove(&reader) {
                            Some(Reader::Waiter(waiter)) => self.ready_reads.push((index, waiter)),
                            Some(Reader::Revoke(ids)) if self.raft.role() == Role::Leader => {
                                revoke.extend(ids)
                            }
                            Some(Reader::Revoke(_)) | None => {}
                        }
                    }
                }
                Effect::ReadsFailed { readers, error } => {
                    for reader in readers {
                        if let Some(Reader::Waiter(waiter)) = self.readers.remove(&reader) {
                            effects.push(MemberEffect::ReadFailed { waiter, error: error.clone() });
                        }
                    }
                }
                Effect::ProposalFailed { id, error } => match self.waiters.forget(id) {
                    Some(Pending::Waiter(waiter)) => {
                        effects.push(MemberEffect::Refused { waiter, error })
                    }
                    Some(Pending::Compaction(revision)) => {
                        self.compactor.finished(revision, false, now)
                    }
                    None => {}
                },
                Effect::FailPendingProposals(error) => {
                    for (waiter, failed) in self.waiters.fail_all(&error) {
                        let error = failed.result.expect_err("failed with the error");
                        match waiter {
                            Pending::Waiter(waiter) => {
                                effects.push(MemberEffect::Failed { waiter, error })
                            }
                            Pending::Compaction(revision) => {
                                self.compactor.finished(revision, false, now)
                            }
                        }
                    }
                }
                Effect::ProbePeers => effects.push(MemberEffect::ProbePeers),
                // Raft's configuration is in the members table already, and a
                // dropped snapshot's data is the message's own.
                Effect::ConfigurationChanged { .. } | Effect::SnapshotDropped { .. } => {}
            }
        }
        if self.apply.kv().compaction_in_progress().is_some() && self.fatal.is_none() {
            // One batch of a compaction's rows per Ready, between applies.
            if let Err(err) = self.apply.compact_step() {
                self.fatal = Some(err);
            }
        }
        let applied = self.apply.applied_index();
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.ready_reads.drain(..).partition(|(index, _)| *index <= applied);
        self.ready_reads = waiting;
        effects.extend(due.into_iter().map(|(_, waiter)| MemberEffect::ReadReady { waiter }));
        for id in revoke {
            let revoke = LeaseRevokeRequest { id };
            let request = InternalRaftRequest { lease_revoke: Some(revoke), ..Default::default() };
            self.propose(request, None, io);
        }
        effects
    }

    /// A keep-alive on this member's lessor: only a leader whose lessor
    /// tracks deadlines renews (`NotPrimary`: ask the leader).
    pub fn renew(&mut self, lease: i64, now: u64) -> Result<(), LeaseError> {
        if self.raft.role() != Role::Leader {
            return Err(LeaseError::NotPrimary);
        }
        let mut lessor = self.apply.lessor().lock().expect("lessor lock");
        lessor.renew(lease, now).map(|_| ())
    }

    /// Stops applying: the shell met a storage failure after which
    /// continuing could lose data (the first reason is kept).
    pub fn stop(&mut self, why: String) {
        self.fatal.get_or_insert(why);
    }

    /// The storage failure that stops this member, if any (taken once).
    pub fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    /// Whether it applied its own removal (it stops for good).
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// Whether it applied the removal of `peer` (its transport refuses the
    /// peer, which then stops).
    pub fn knows_removed(&self, peer: u64) -> bool {
        self.removed_peers.contains(&peer)
    }

    /// Every waiter still waiting, in the order they came (the member stops:
    /// their outcome is unknown).
    pub fn into_waiting(mut self) -> Vec<W> {
        let mut lost: Vec<W> = self
            .waiters
            .fail_all(&ServerError::Stopped)
            .into_iter()
            .filter_map(|(pending, _)| match pending {
                Pending::Waiter(waiter) => Some(waiter),
                Pending::Compaction(_) => None,
            })
            .collect();
        lost.extend(self.readers.into_values().filter_map(|reader| match reader {
            Reader::Waiter(waiter) => Some(waiter),
            Reader::Revoke(_) => None,
        }));
        lost.extend(self.ready_reads.into_iter().map(|(_, waiter)| waiter));
        lost
    }

    /// The Raft half.
    pub fn raft(&self) -> &RaftCore {
        &self.raft
    }

    /// The apply half.
    pub fn apply(&self) -> &ApplyCore {
        &self.apply
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The watch hub.
    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }
}

/// The Raft half's I/O: the shell's disk and network, with the apply half
/// run in place of handing entries to another thread.
struct Halves<'a, I> {
    io: &'a mut I,
    id: u64,
    apply: &'a mut ApplyCore,
    backend: &'a Arc<Backend>,
    hub: &'a WatchHub,
    removed: &'a mut bool,
    fatal: &'a mut Option<String>,
    /// Peers whose snapshot could not be copied.
    failed_snapshots: Vec<u64>,
    results: Vec<ApplyResult>,
    installs: u64,
    leader: u64,
    now: u64,
}

impl<I: MemberIo> RaftIo for Halves<'_, I> {
    fn send(&mut self, messages: Vec<Message>) {
        self.io.send(messages);
    }

    fn send_snapshot(&mut self, message: Message) {
        let to = message.to;
        if self.io.send_snapshot(message, self.backend).is_err() {
            self.failed_snapshots.push(to);
        }
    }

    fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>, must_sync: bool) {
        self.io.persist(entries, hard_state, must_sync);
    }

    fn persists_async(&self) -> bool {
        self.io.persists_async()
    }

    fn persist_async(&mut self, write: ReadyWrite) {
        self.io.persist_async(write);
    }

    fn apply(&mut self, committed: Vec<Entry>) {
        if self.fatal.is_some() {
            return;
        }
        self.io.applying(&committed);
        let leading = self.leader == self.id;
        let mut result = match self.apply.apply(&committed, self.now, leading) {
            Ok(result) => result,
            Err(err) => {
                // Continuing could apply later entries over a lost batch (the
                // daemon aborts).
                *self.fatal = Some(format!("failed to apply committed entries: {err}"));
                return;
            }
        };
        let events = std::mem::take(&mut result.outcome.events);
        let revision = self.apply.kv().current_revision();
        self.io.applied(result.outcome.applied_index, revision, &events);
        self.hub.publish(events, revision);
        self.results.push(result);
    }

    fn install_backend(&mut self, index: u64, data: Vec<u8>) {
        if let Err(err) = self.io.replace_backend(self.backend, data) {
            *self.fatal = Some(format!("failed to install the received snapshot: {err}"));
            return;
        }
        let members = match self.apply.installed(index) {
            Ok(members) => members,
            Err(err) => {
                *self.fatal = Some(err);
                return;
            }
        };
        self.hub.reset(self.apply.kv().current_revision());
        if !members.iter().any(|m| m.id == self.id) {
            // The snapshot's cluster no longer has this member: it was removed.
            *self.removed = true;
        }
        self.installs += 1;
        self.io.installed(index);
    }

    fn save_snapshot(&mut self, index: u64, term: u64, conf_state: &ConfState) {
        self.io.save_snapshot(index, term, conf_state);
    }

    fn release_log(&mut self, index: u64) {
        self.io.release_log(index);
    }

    fn active_peers(&self) -> usize {
        self.io.active_peers()
    }

    fn leader_changed(&mut self, leader: u64, _role: Role) {
        self.leader = leader;
    }
}
