//! A seeded, deterministic simulation of a cluster: three members built from
//! the server's Raft and apply cores on simulated disks, a simulated network
//! (delays, drops, duplicates, reordering, partitions), crash-restarts that lose
//! what was not fsynced, and clients issuing puts and linearizable reads. After
//! every run the checkers judge the history. Time is a millisecond counter and
//! every random choice comes from the seed, so a seed replays bit for bit.

pub mod check;
mod clients;
pub mod disk;
mod faults;
pub mod leases;
pub mod member;
pub mod watches;

use std::collections::BTreeMap;

use etcd_raftnode::{Message, Role, SplitMix64};
use etcd_server::raft_core::Input;

use check::{Call, Op, RaftSafety};
use etcd_server::watch::{KeyRange, WatchSpec, Watcher};
use member::{Bugs, Observed, Reply, SimMember, Writing, HEARTBEAT_MS};

/// Whether `SIM_TRACE` is set: then every delivered message, operation and
/// apply is printed to stderr (read once).
pub(crate) fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SIM_TRACE").is_some())
}

/// The bugs `--inject` can switch on, by name.
pub const BUGS: &[&str] = &[
    "ack-before-fsync",
    "read-without-read-index",
    "deposed-leader-reads",
    "apply-twice-after-restart",
    "skip-watch-event",
    "expire-leases-early",
];

/// What one seed's run is like.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated milliseconds of client traffic and faults.
    pub duration_ms: u64,
    /// Clients, each with one operation in flight at a time.
    pub clients: u64,
    /// Injected bugs.
    pub bugs: Bugs,
}

impl Default for Options {
    fn default() -> Options {
        Options { duration_ms: 20_000, clients: 4, bugs: Bugs::default() }
    }
}

/// Turns `--inject` names into [`Bugs`].
pub fn bugs(names: &[String]) -> Result<Bugs, String> {
    let mut bugs = Bugs::default();
    for name in names {
        match name.as_str() {
            "ack-before-fsync" => bugs.ack_before_fsync = true,
            "read-without-read-index" => bugs.read_without_read_index = true,
            "deposed-leader-reads" => bugs.leader_reads_locally = true,
            "apply-twice-after-restart" => bugs.apply_twice_after_restart = true,
            "skip-watch-event" => bugs.skip_watch_event = true,
            "expire-leases-early" => bugs.expire_leases_early = true,
            other => return Err(format!("unknown bug {other:?}; --list-bugs lists them")),
        }
    }
    Ok(bugs)
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Operations completed with an answer.
    pub completed: u64,
    /// Operations whose outcome is unknown.
    pub unknown: u64,
    /// Faults injected.
    pub faults: u64,
    /// The highest Raft index applied anywhere.
    pub last_index: u64,
    /// Leases kept alive and then revoked after their deadline, as checked.
    pub leases_expired: u64,
    /// Watch batches with events, as checked.
    pub watch_batches: u64,
    /// A digest of every observation, to show two runs of a seed are identical.
    pub digest: u64,
}

/// Members of the initial cluster.
const MEMBERS: u64 = 3;
const KEYS: u64 = 3;
/// A client gives up on an operation after this long (its outcome is unknown).
const OP_TIMEOUT_MS: u64 = 3_000;

struct InFlight {
    op: Op,
    deadline: u64,
}

struct World {
    rng: SplitMix64,
    now: u64,
    members: BTreeMap<u64, SimMember>,
    /// Messages in flight by delivery time (then send order).
    network: BTreeMap<(u64, u64), Message>,
    sent: u64,
    /// Members cut off from the others until the given time.
    isolated: BTreeMap<u64, u64>,
    /// One-way link failures: messages from the first member to the second
    /// are lost until the given time.
    one_way: BTreeMap<(u64, u64), u64>,
    /// Members down until the given time.
    down: BTreeMap<u64, u64>,
    drop_per_mille: u64,
    history: Vec<Op>,
    in_flight: BTreeMap<u64, InFlight>,
    /// Clients idle until the given time.
    idle_until: Vec<u64>,
    next_op: u64,
    safety: RaftSafety,
    /// What each client last read or wrote per key (for its compare-and-swaps).
    last_seen: BTreeMap<(u64, Vec<u8>), Option<Vec<u8>>>,
    /// The highest revision a serializable read saw per member run.
    serializable: BTreeMap<(u64, u64), i64>,
    summary: Summary,
    /// How many observations of each member the checkers have seen.
    applied_seen: BTreeMap<u64, usize>,
    /// The next ID for a member that joins.
    next_member: u64,
    /// Answers of members whose fsync is still in progress, by member.
    held: BTreeMap<u64, Vec<(u64, Reply)>>,
    /// Messages those members sent after their fsync began.
    held_messages: BTreeMap<u64, Vec<Message>>,
    /// The lease client.
    lease_client: leases::LeaseClient,
    /// The newest term with a leader, and since when it leads.
    leader_term: u64,
    leader_since: u64,
    /// Every revision's events, for the watch checks.
    reference: watches::Reference,
    /// The watch clients.
    watch_clients: Vec<watches::WatchClient>,
    /// Injected bug `skip-watch-event`: an event still to drop.
    skip_watch_event: bool,
    /// Members added but not started yet, with when to give up on them.
    pending_joins: BTreeMap<u64, u64>,
    /// Options the members were made with (for members that join).
    seed: u64,
    bugs: Bugs,
}

fn mix(digest: &mut u64, value: u64) {
    *digest = (*digest ^ value).wrapping_mul(0x0000_0100_0000_01B3);
}

impl World {
    fn new(seed: u64, options: &Options) -> World {
        let voters: Vec<u64> = (1..=MEMBERS).collect();
        let members = voters
            .iter()
            .map(|&id| (id, SimMember::new(id, &voters, seed ^ (id << 56), options.bugs)))
            .collect();
        World {
            rng: SplitMix64::new(seed),
            now: 0,
            members,
            network: BTreeMap::new(),
            sent: 0,
            isolated: BTreeMap::new(),
            one_way: BTreeMap::new(),
            down: BTreeMap::new(),
            drop_per_mille: 0,
            history: Vec::new(),
            in_flight: BTreeMap::new(),
            idle_until: vec![0; options.clients as usize],
            next_op: 0,
            safety: RaftSafety::default(),
            last_seen: BTreeMap::new(),
            serializable: BTreeMap::new(),
            summary: Summary { digest: 0xcbf2_9ce4_8422_2325, ..Summary::default() },
            applied_seen: BTreeMap::new(),
            next_member: MEMBERS + 1,
            pending_joins: BTreeMap::new(),
            reference: watches::Reference::default(),
            held: BTreeMap::new(),
            held_messages: BTreeMap::new(),
            lease_client: leases::LeaseClient::default(),
            leader_term: 0,
            leader_since: 0,
            watch_clients: vec![
                watches::WatchClient::new(1, KeyRange::From(b"k".to_vec()), true),
                watches::WatchClient::new(2, KeyRange::Single(b"k1".to_vec()), false),
            ],
            skip_watch_event: options.bugs.skip_watch_event,
            seed,
            bugs: options.bugs,
        }
    }

    fn member(&mut self, id: u64) -> &mut SimMember {
        self.members.get_mut(&id).expect("invariant: a known member")
    }

    /// The members now (removed ones are gone).
    fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    /// A random member.
    fn pick(&mut self) -> u64 {
        let ids = self.ids();
        ids[self.rng.below(0, ids.len() as u64) as usize]
    }

    fn leader(&self) -> Option<u64> {
        self.members
            .iter()
            .find(|(_, m)| matches!(m.leader_and_term(), Some((_, _, Role::Leader))))
            .map(|(&id, _)| id)
    }

    /// Whether a message from `from` to `to` is lost to a partition.
    fn cut(&self, from: u64, to: u64) -> bool {
        self.isolated.contains_key(&from)
            || self.isolated.contains_key(&to)
            || self.one_way.contains_key(&(from, to))
    }

    /// Whether a request from `a` to `b` and its answer would get through.
    fn round_trip(&self, a: u64, b: u64) -> bool {
        !self.cut(a, b) && !self.cut(b, a)
    }

    /// One simulated millisecond.
    fn step(&mut self, faults: bool) -> Result<(), String> {
        self.now += 1;
        let now = self.now;
        if faults {
            self.maybe_fault();
        }
        self.heal();
        // Fsyncs that took their time complete, and what waited for them goes out.
        for id in self.ids() {
            if self.member(id).busy_until <= now {
                let waiting = self.held_messages.remove(&id).unwrap_or_default();
                self.send(waiting);
                for (op, reply) in self.held.remove(&id).unwrap_or_default() {
                    if self.lease_client.by_op(op).is_some() {
                        self.lease_reply(op, reply);
                    } else {
                        self.finish(op, reply);
                    }
                }
            }
        }
        self.writers(now);
        if now.is_multiple_of(10) {
            self.start_joiners();
        }
        // Deliver what is due.
        while let Some((&(at, seq), _)) = self.network.first_key_value() {
            if at > now {
                break;
            }
            let message = self.network.remove(&(at, seq)).expect("first key");
            let (from, to) = (message.from, message.to);
            let known = self.members.contains_key(&to);
            if known && self.member(to).is_up() && self.member(to).busy_until > now {
                // Its raft thread is in an fsync: the message waits in the channel.
                let until = self.member(to).busy_until;
                self.network.insert((until, seq), message);
                continue;
            }
            let lost = !known || self.cut(from, to) || !self.member(to).is_up();
            if message.get_msg_type() == etcd_raftnode::MessageType::MsgSnapshot {
                // The sender learns how the stream ended, as from the transport.
                if self.members.get(&from).is_some_and(SimMember::is_up) {
                    let report = Input::ReportSnapshot { to, delivered: !lost };
                    self.member(from).input(report);
                }
            }
            if lost {
                continue;
            }
            if self.member(to).knows_removed(from) {
                // The receiver's transport refuses a removed member's stream
                // with "the member has been permanently removed from the
                // cluster", and the removed member stops.
                if let Some(sender) = self.members.get_mut(&from) {
                    sender.refused_as_removed();
                }
                continue;
            }
            mix(&mut self.summary.digest, seq);
            if crate::tracing() {
                eprintln!(
                    "{now:>6} {from}->{to} {:?} term {} log_term {} index {} commit {} entries {:?} reject {}",
                    message.get_msg_type(),
                    message.term,
                    message.log_term,
                    message.index,
                    message.commit,
                    message.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
                    message.reject
                );
            }
            self.member(to).input(Input::Message(message));
        }
        for id in self.ids() {
            let busy = self.member(id).busy_until > now;
            if now % HEARTBEAT_MS == (id * 7) % HEARTBEAT_MS && self.member(id).is_up() && !busy {
                self.member(id).input(Input::Tick);
            }
        }
        for id in self.ids() {
            if self.member(id).busy_until > now {
                continue;
            }
            self.member(id).run_ready(now);
            self.collect(id)?;
            if let Some(why) = self.member(id).take_fatal() {
                // The daemon aborts on a storage failure while applying; it is
                // restarted (by its supervisor) on what its disk kept.
                if tracing() {
                    eprintln!("{now:>6} member {id} stops: {why}");
                }
                let until = now + self.rng.below(100, 1_000);
                self.crash(id, until);
                continue;
            }
            if std::mem::take(&mut self.member(id).probing) {
                // An empty batch to every peer, refused by those that applied
                // this member's removal (the transport's probe).
                let refused = self.members.iter().any(|(&peer, m)| {
                    peer != id && self.round_trip(id, peer) && m.knows_removed(id)
                });
                if refused {
                    self.member(id).refused_as_removed();
                }
            }
            if self.member(id).removed() {
                // It applied its own removal and stops for good, as etcd does.
                if tracing() {
                    eprintln!("{now:>6} member {id} was removed and stops");
                }
                self.crash(id, u64::MAX);
                self.down.remove(&id);
                self.members.remove(&id);
            }
        }
        self.watch()?;
        self.leases(faults)?;
        self.clients(faults)
    }

    /// Sends what a member queued, gathers its replies, checks what it applied.
    fn collect(&mut self, id: u64) -> Result<(), String> {
        let now = self.now;
        let outbox = std::mem::take(&mut self.member(id).outbox);
        // The disk: a turn that fsynced keeps the member busy for the fsync's
        // latency (usually 0-2 ms, now and then a 20-100 ms stall), and what it
        // sent after the fsync leaves only then.
        let cut = self.member(id).fsync_cut.take();
        if self.member(id).power_failed() {
            // The power failed at this turn's first fsync: what was sent
            // before it left, nothing after it did, and no answer got out.
            let mut outbox = outbox;
            outbox.truncate(cut.unwrap_or(0));
            self.send(outbox);
            self.collect_observations(id, now)?;
            let answered = std::mem::take(&mut self.member(id).replies);
            for (op, _) in answered {
                self.finish(op, Reply::Unknown(etcd_server::ServerError::Stopped));
            }
            if tracing() {
                eprintln!("{now:>6} the power fails during member {id}'s fsync");
            }
            let until = now + self.rng.below(100, 1_000);
            self.crash(id, until);
            return Ok(());
        }
        let fsync_ms = match cut {
            None => 0,
            Some(_) if self.rng.below(0, 100) == 0 => self.rng.below(20, 100),
            Some(_) => self.rng.below(0, 3),
        };
        self.member(id).busy_until = now + fsync_ms;
        let mut outbox = outbox;
        if let Some(cut) = cut.filter(|_| fsync_ms > 0) {
            // What was sent after the fsync leaves when it completes (and not
            // at all if the member crashes first).
            let waiting = outbox.split_off(cut.min(outbox.len()));
            self.held_messages.entry(id).or_default().extend(waiting);
        }
        self.send(outbox);
        self.collect_observations(id, now)
    }

    /// The log writers of members that write their WAL as the daemon does
    /// (`SimMember::async_writes`): a write whose fsync completed lets out the
    /// messages that waited for it and tells the core (unless the raft thread
    /// is itself in an fsync); an idle writer takes everything queued since,
    /// with one fsync that takes its time as the raft thread's would. The raft
    /// thread meanwhile goes on with ticks, messages and Ready cycles.
    fn writers(&mut self, now: u64) {
        for id in self.ids() {
            if !self.member(id).is_up() || self.member(id).busy_until > now {
                continue;
            }
            if self.member(id).writing.as_ref().is_some_and(|w| w.until <= now) {
                self.finish_write(id);
            }
            if self.member(id).writing.is_some() {
                continue;
            }
            let Some((number, after, synced)) = self.member(id).write_queued() else { continue };
            if self.member(id).power_failed() {
                // The power failed at the writer's fsync: nothing that waited
                // for it leaves.
                if tracing() {
                    eprintln!("{now:>6} the power fails during member {id}'s WAL writer fsync");
                }
                let until = now + self.rng.below(100, 1_000);
                self.crash(id, until);
                continue;
            }
            let fsync_ms = match synced {
                false => 0,
                true if self.rng.below(0, 100) == 0 => self.rng.below(20, 100),
                true => self.rng.below(0, 3),
            };
            self.member(id).writing = Some(Writing { until: now + fsync_ms, number, after });
            if fsync_ms == 0 {
                self.finish_write(id);
            }
        }
    }

    fn finish_write(&mut self, id: u64) {
        let Some(write) = self.member(id).writing.take() else { return };
        if tracing() {
            eprintln!(
                "{:>6} member {id}'s WAL writer wrote up to Ready {}",
                self.now, write.number
            );
        }
        self.send(write.after);
        self.member(id).input(Input::Persisted { number: write.number });
    }

    /// Puts messages on the network: each is dropped, delayed, or duplicated.
    fn send(&mut self, outbox: Vec<Message>) {
        let now = self.now;
        for message in outbox {
            let snapshot = message.get_msg_type() == etcd_raftnode::MessageType::MsgSnapshot;
            if !snapshot && self.rng.below(0, 1000) < self.drop_per_mille {
                // (A snapshot is a stream of its own: it arrives or its sender
                // is told it failed, at delivery time.)
                continue;
            }
            let delay = self.rng.below(1, 12);
            self.sent += 1;
            // Raft's own messages may arrive twice; a proposal forwarded to the
            // leader may not: the transport's stream delivers at most once, and
            // raft-rs appends a duplicate as a second write (etcd neither).
            let duplicable = message.get_msg_type() != etcd_raftnode::MessageType::MsgPropose;
            if duplicable && self.rng.below(0, 1000) < 5 {
                // A duplicate, later.
                self.network.insert((now + delay + 20, self.sent), message.clone());
                self.sent += 1;
            }
            self.network.insert((now + delay, self.sent), message);
        }
    }

    /// Checks what a member applied and who it believes leads, and hands on
    /// its answers (held while its fsync is in progress).
    fn collect_observations(&mut self, id: u64, now: u64) -> Result<(), String> {
        let fsyncing = self.member(id).busy_until > now;
        let member = self.members.get_mut(&id).expect("known member");
        if let Some((_, term, Role::Leader)) = member.leader_and_term() {
            self.safety.leader(term, id)?;
            if term > self.leader_term {
                // A new leader's lessor restarts every lease's clock.
                self.leader_term = term;
                self.leader_since = now;
            }
        }
        let seen = self.applied_seen.get(&id).copied().unwrap_or(0);
        for observed in &member.observed[seen..] {
            match observed {
                Observed::Applied { index, term, data } => {
                    self.safety.applied(id, *index, *term, data)?;
                    self.summary.last_index = self.summary.last_index.max(*index);
                    mix(&mut self.summary.digest, *index ^ (*term << 40));
                }
                Observed::Revision { index, revision } => {
                    self.safety.revision(id, *index, *revision)?;
                }
                Observed::Events { revision, events } => {
                    self.reference.record(id, *revision, events)?;
                    for event in events {
                        let deleted =
                            event.r#type == etcd_proto::mvccpb::event::EventType::Delete as i32;
                        if let (true, Some(kv)) = (deleted, &event.kv) {
                            self.lease_client.key_deleted(&kv.key, self.now)?;
                        }
                    }
                }
                Observed::Installed { index } => {
                    self.safety.installed(id, *index);
                    mix(&mut self.summary.digest, *index);
                }
            }
        }
        self.applied_seen.insert(id, member.observed.len());
        let replies = std::mem::take(&mut member.replies);
        if fsyncing {
            // Answered only once the fsync completes (a crash before that
            // leaves these operations unknown).
            self.held.entry(id).or_default().extend(replies);
            return Ok(());
        }
        for (op, reply) in replies {
            if self.lease_client.by_op(op).is_some() {
                self.lease_reply(op, reply);
            } else {
                self.finish(op, reply);
            }
        }
        Ok(())
    }
}

/// Runs one seed; `Err` names the first violated property with the history
/// around it. A panic inside a member (an invariant assertion, or raft-rs
/// refusing its recovered state) is a failure of the seed, not of the run.
pub fn run(seed: u64, options: &Options) -> Result<Summary, String> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_SIMULATION.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
    IN_SIMULATION.with(|flag| flag.set(true));
    let outcome = std::panic::catch_unwind(|| simulate(seed, options));
    IN_SIMULATION.with(|flag| flag.set(false));
    outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "(no message)".to_string());
        Err(format!("invariant: a member panicked: {message}"))
    })
}

thread_local! {
    /// Whether this thread runs a simulation (its panics are reported as
    /// failures, not printed).
    static IN_SIMULATION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn simulate(seed: u64, options: &Options) -> Result<Summary, String> {
    let mut world = World::new(seed, options);
    for id in world.ids() {
        world.member(id).start(0).expect("a new member starts on an empty disk");
    }
    while world.now < options.duration_ms {
        world.step(true)?;
    }
    // Quiet time: faults heal, every operation finishes, then each member is
    // read on every key to see that acknowledged writes survived everywhere.
    world.heal_all();
    let healed = world.now;
    for _ in 0..OP_TIMEOUT_MS + 2_000 {
        world.step(false)?;
    }
    if tracing() {
        for (id, member) in &world.members {
            let members = member.members().unwrap_or_default();
            let table: Vec<(u64, bool)> = members.iter().map(|m| (m.id, m.is_learner)).collect();
            eprintln!("member {id}: {:?} table {table:?}", member.leader_and_term());
        }
    }
    let final_reads = world.next_op;
    let finalists = world.ids();
    for &member in &finalists {
        for key in 0..KEYS {
            world.next_op += 1;
            let id = world.next_op;
            let op = Op {
                id,
                client: 1_000 + member,
                key: format!("k{key}").into_bytes(),
                call: Call::Get,
                ret: None,
                invoked: world.now,
                completed: None,
            };
            let deadline = world.now + OP_TIMEOUT_MS;
            world.in_flight.insert(id, InFlight { op, deadline });
            world.member(member).read(id, format!("k{key}").as_bytes());
        }
    }
    for _ in 0..OP_TIMEOUT_MS {
        world.step(false)?;
    }
    let answered = world.history.iter().filter(|op| op.id > final_reads).count() as u64;
    let asked = finalists.len() as u64 * KEYS;
    if answered < asked {
        return Err(format!(
            "liveness: after healing, only {answered} of {asked} final reads were answered"
        ));
    }
    world.lease_client.check_expired(healed.max(world.leader_since), world.now)?;
    world.summary.leases_expired = world.lease_client.expired();
    world.summary.watch_batches = world.watch_clients.iter().map(|c| c.batches).sum();
    check::linearizable(&world.history)?;
    Ok(world.summary)
}

fn watches_new(hub: &etcd_server::watch::WatchHub, spec: WatchSpec) -> Watcher {
    Watcher::new(hub, spec)
}
