//! The member core on its own: whole members (both halves and what
//! coordinates them) stepped by hand on in-memory backends, with a network
//! that delivers every message at once unless a member is cut off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use etcd_proto::etcdrs::member_change::Kind;
use etcd_proto::etcdrs::{InternalRaftRequest, Member};
use etcd_proto::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest};
use etcd_raftnode::{
    ConfState, Entry, HardState, Message, MessageType, NodeConfig, RaftNode, Role,
};
use etcd_server::apply_core::{ApplyCore, ApplyCoreConfig, LEASE_DUTY_INTERVAL_MS};
use etcd_server::compactor::{CompactionMode, Compactor};
use etcd_server::member_core::{MemberCore, MemberEffect, MemberInput, MemberIo};
use etcd_server::raft_core::{Input, RaftCore, RaftCoreConfig};
use etcd_server::{Response, ServerError};
use etcd_storage::Backend;

const HEARTBEAT_MS: u64 = 100;

/// One member's disk and network: what it sent, what it persisted.
#[derive(Default)]
struct Io {
    outbox: Vec<Message>,
    /// Entries appended to the log (index order).
    logged: Vec<u64>,
    fsyncs: u64,
    /// Snapshots recorded in the log.
    snapshots: Vec<u64>,
    /// Indexes the log was allowed to drop up to.
    released: Vec<u64>,
    /// Entries about to be applied.
    applying: Vec<u64>,
    /// (index, revision) after each applied batch.
    applied: Vec<(u64, i64)>,
}

impl MemberIo for Io {
    fn send(&mut self, messages: Vec<Message>) {
        self.outbox.extend(messages);
    }
    fn send_snapshot(&mut self, _: Message, _: &Backend) -> Result<(), String> {
        Err("these tests send no snapshots".into())
    }
    fn persist(&mut self, entries: &[Entry], _: Option<&HardState>, must_sync: bool) {
        self.logged.extend(entries.iter().map(|e| e.index));
        self.fsyncs += u64::from(must_sync);
    }
    fn save_snapshot(&mut self, index: u64, _: u64, _: &ConfState) {
        self.snapshots.push(index);
    }
    fn release_log(&mut self, index: u64) {
        self.released.push(index);
    }
    fn active_peers(&self) -> usize {
        0
    }
    fn replace_backend(&mut self, _: &Backend, _: Vec<u8>) -> Result<(), String> {
        Err("these tests install no snapshots".into())
    }
    fn applying(&mut self, entries: &[Entry]) {
        self.applying.extend(entries.iter().map(|e| e.index));
    }
    fn applied(&mut self, index: u64, revision: i64, _: &[(i64, Vec<etcd_proto::mvccpb::Event>)]) {
        if index > 0 {
            self.applied.push((index, revision));
        }
    }
}

struct Node {
    core: MemberCore<u64>,
    io: Io,
    /// What its waiters were told: (waiter, effect).
    told: Vec<MemberEffect<u64>>,
    /// What each released read saw of key "k" when it was released.
    reads: Vec<(u64, Option<String>)>,
}

fn record(id: u64) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_urls: vec![format!("http://m{id}:2380")],
        ..Default::default()
    }
}

fn apply_config() -> ApplyCoreConfig {
    ApplyCoreConfig {
        snapshot_count: 1_000,
        batch_limit: 10,
        batch_interval_ms: 100,
        promote_extend_ms: 1_000,
        min_lease_ttl_secs: 1,
        lease_checkpoint: None,
        auth_token_ttl_ms: 300_000,
        compaction_batch_limit: 2,
    }
}

fn node(id: u64, voters: &[u64], cfg: ApplyCoreConfig, compaction: CompactionMode) -> Node {
    let backend = Arc::new(
        Backend::open_on(redb::backends::InMemoryBackend::new(), Path::new("test")).expect("db"),
    );
    let txn = backend.begin_write().expect("write");
    let members: Vec<Member> = voters.iter().map(|&v| record(v)).collect();
    etcd_server::membership::save(&txn, &members).expect("members");
    txn.commit(true).expect("commit");
    let kv = Arc::new(etcd_mvcc::KvStore::open(backend.clone()).expect("store"));
    let apply = ApplyCore::open(kv, backend, cfg, 0, 0).expect("apply half");
    let node_cfg = NodeConfig {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        applied: 0,
        pre_vote: true,
        seed: id,
    };
    let raft_node = RaftNode::bootstrap(&node_cfg, voters).expect("bootstrap");
    let raft_cfg = RaftCoreConfig {
        heartbeat_ms: HEARTBEAT_MS,
        election_ticks: 10,
        catch_up_entries: 50,
        keep_all_log_segments: false,
        initial_election_tick_advance: false,
        read_context_start: 0,
    };
    let raft = RaftCore::new(raft_node, 0, raft_cfg, 0);
    let core = MemberCore::new(raft, apply, Compactor::new(compaction, 0), id << 48, 0);
    Node { core, io: Io::default(), told: Vec::new(), reads: Vec::new() }
}

/// Members on a network that delivers at once, a millisecond clock.
struct Cluster {
    nodes: BTreeMap<u64, Node>,
    /// Members cut off from every other.
    cut: BTreeSet<u64>,
    /// A member whose log appends are lost (heartbeats still arrive).
    appends_lost_to: Option<u64>,
    now: u64,
}

const NO_COMPACTION: CompactionMode =
    CompactionMode::Revision { retain: 1_000_000, check_ms: 3_600_000 };

impl Cluster {
    fn new(ids: &[u64]) -> Cluster {
        Cluster::with(ids, apply_config(), NO_COMPACTION)
    }

    fn with(ids: &[u64], cfg: ApplyCoreConfig, compaction: CompactionMode) -> Cluster {
        let nodes = ids.iter().map(|&id| (id, node(id, ids, cfg.clone(), compaction))).collect();
        Cluster { nodes, cut: BTreeSet::new(), appends_lost_to: None, now: 0 }
    }

    fn step(&mut self, id: u64, input: MemberInput<u64>) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("member");
        let effects = node.core.step(input, now, &mut node.io);
        for effect in &effects {
            if let MemberEffect::ReadReady { waiter } = effect {
                let request = RangeRequest { key: "k".into(), ..Default::default() };
                let response = node.core.apply().kv().range(&request).expect("range");
                let value = response.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value));
                node.reads.push((*waiter, value.map(|v| v.into_owned())));
            }
        }
        node.told.extend(effects);
    }

    /// Runs `ms` milliseconds: ticks, Ready cycles, deliveries.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for &id in &ids {
                if self.now.is_multiple_of(HEARTBEAT_MS) {
                    self.step(id, MemberInput::Raft(Input::Tick));
                }
                if self.now.is_multiple_of(LEASE_DUTY_INTERVAL_MS) {
                    self.step(id, MemberInput::LeaseDuty);
                    self.step(id, MemberInput::CompactionDuty);
                }
                self.step(id, MemberInput::Ready);
            }
            for &id in &ids {
                let outbox =
                    std::mem::take(&mut self.nodes.get_mut(&id).expect("member").io.outbox);
                for message in outbox {
                    let to = message.to;
                    if self.cut.contains(&id) || self.cut.contains(&to) {
                        continue;
                    }
                    let append = message.get_msg_type() == MessageType::MsgAppend;
                    if append && self.appends_lost_to == Some(to) {
                        continue;
                    }
                    if self.nodes.contains_key(&to) {
                        self.step(to, MemberInput::Raft(Input::Message(message)));
                    }
                }
            }
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(id, n)| n.core.raft().role() == Role::Leader && !self.cut.contains(id))
            .map(|(id, _)| *id)
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("member")
    }

    fn put(&mut self, id: u64, waiter: u64, key: &str, value: &str) {
        self.put_lease(id, waiter, key, value, 0);
    }

    fn put_lease(&mut self, id: u64, waiter: u64, key: &str, value: &str, lease: i64) {
        let put = PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
        let request = InternalRaftRequest { put: Some(put), ..Default::default() };
        self.step(id, MemberInput::Propose { request: Box::new(request), waiter: Some(waiter) });
    }

    /// Grants lease `lease` of `ttl` seconds on member `id` and puts `key`
    /// on it (waiters 1 and 2), both applied.
    fn grant_and_put(&mut self, id: u64, lease: i64, ttl: i64, key: &str) {
        let grant = LeaseGrantRequest { ttl, id: lease };
        let request = InternalRaftRequest { lease_grant: Some(grant), ..Default::default() };
        self.step(id, MemberInput::Propose { request: Box::new(request), waiter: Some(1) });
        self.run(20);
        self.put_lease(id, 2, key, "v", lease);
        self.run(20);
        assert!(matches!(told(self, id, 2), Some(MemberEffect::Applied { .. })));
    }

    fn get(&self, id: u64, key: &str) -> Option<String> {
        let request = RangeRequest { key: key.into(), ..Default::default() };
        let response = self.nodes[&id].core.apply().kv().range(&request).expect("range");
        response.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }
}

/// What waiter `w` was told on member `id`, if anything.
fn told(cluster: &Cluster, id: u64, w: u64) -> Option<&MemberEffect<u64>> {
    cluster.nodes[&id].told.iter().find(|effect| match effect {
        MemberEffect::Applied { waiter, .. }
        | MemberEffect::Refused { waiter, .. }
        | MemberEffect::Failed { waiter, .. }
        | MemberEffect::ReadReady { waiter }
        | MemberEffect::ReadFailed { waiter, .. } => *waiter == w,
        MemberEffect::ProbePeers => false,
    })
}

#[test]
fn a_single_member_applies_a_put_and_tells_its_waiter_after_the_fsync() {
    let mut cluster = Cluster::new(&[1]);
    cluster.run(5);
    assert_eq!(cluster.leader(), Some(1), "the only voter leads at once");
    cluster.put(1, 7, "a", "1");
    assert!(told(&cluster, 1, 7).is_none(), "nothing before the Ready cycle");
    cluster.run(1);
    match told(&cluster, 1, 7) {
        Some(MemberEffect::Applied { applied, .. }) => {
            assert!(matches!(applied.result, Ok(Response::Put(_))));
            assert_eq!(applied.revision, 2);
        }
        other => panic!("expected the put applied, got {other:?}"),
    }
    let io = &cluster.nodes[&1].io;
    let index = *io.applying.last().expect("applied an entry");
    assert!(io.logged.contains(&index), "applied only what was logged");
    assert!(io.fsyncs > 0);
    assert_eq!(cluster.get(1, "a").as_deref(), Some("1"));
    assert_eq!(cluster.nodes[&1].core.hub().revision(), 2, "the watch hub saw the revision");
}

#[test]
fn a_linearizable_read_on_a_follower_waits_until_the_follower_applied_the_read_index() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.run(3_000);
    let leader = cluster.leader().expect("a leader");
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).expect("a follower");
    // The follower does not get the put's entry: the other two commit it.
    cluster.appends_lost_to = Some(follower);
    cluster.put(leader, 1, "k", "v");
    while told(&cluster, leader, 1).is_none() {
        cluster.run(1);
    }
    // Acknowledged; a read that starts now on the follower must see it, so
    // it waits until the follower has the entry and applied it.
    cluster.step(follower, MemberInput::Read { waiter: 2 });
    cluster.run(300);
    assert!(told(&cluster, follower, 2).is_none(), "the read index is not applied here yet");
    assert_eq!(cluster.get(follower, "k"), None);
    cluster.appends_lost_to = None;
    cluster.run(300);
    assert!(matches!(told(&cluster, follower, 2), Some(MemberEffect::ReadReady { .. })));
    assert_eq!(cluster.nodes[&follower].reads, vec![(2, Some("v".to_string()))]);
    // Through the follower too: its own put, then its own read.
    cluster.put(follower, 3, "k", "w");
    while told(&cluster, follower, 3).is_none() {
        cluster.run(1);
    }
    cluster.step(follower, MemberInput::Read { waiter: 4 });
    cluster.run(50);
    assert_eq!(cluster.nodes[&follower].reads[1], (4, Some("w".to_string())));
    // Every member applied the same entries in the same order.
    let last: Vec<_> =
        cluster.nodes.values().map(|n| *n.io.applied.last().expect("applied")).collect();
    assert!(last.windows(2).all(|w| w[0] == w[1]), "{last:?}");
}

#[test]
fn a_member_cut_off_fails_its_reads_and_proposals_and_a_new_leader_takes_over() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.run(3_000);
    let old = cluster.leader().expect("a leader");
    cluster.cut.insert(old);
    cluster.put(old, 1, "lost?", "x");
    cluster.step(old, MemberInput::Read { waiter: 2 });
    cluster.run(5_000);
    let new = cluster.leader().expect("the others elect a leader");
    assert_ne!(new, old);
    assert!(
        matches!(told(&cluster, old, 1), Some(MemberEffect::Failed { .. })),
        "a proposal in flight on a member that lost its leader fails (outcome unknown)"
    );
    assert!(
        matches!(
            told(&cluster, old, 2),
            Some(MemberEffect::ReadFailed { error: ServerError::NoLeader, .. })
                | Some(MemberEffect::ReadFailed { error: ServerError::Timeout, .. })
        ),
        "{:?}",
        told(&cluster, old, 2)
    );
    assert_ne!(cluster.node(old).core.raft().role(), Role::Leader, "check-quorum deposed it");
    cluster.put(new, 3, "after", "y");
    cluster.run(50);
    assert!(matches!(told(&cluster, new, 3), Some(MemberEffect::Applied { .. })));
    cluster.cut.clear();
    cluster.run(3_000);
    assert_eq!(cluster.get(old, "after").as_deref(), Some("y"), "it catches up once healed");
    let lost = cluster.get(new, "lost?");
    assert!(lost.is_none(), "the cut-off leader's proposal never committed: {lost:?}");
}

#[test]
fn the_lease_duty_revokes_an_expired_lease_once_the_quorum_confirms_the_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.run(3_000);
    let leader = cluster.leader().expect("a leader");
    cluster.grant_and_put(leader, 42, 1, "leased");
    assert_eq!(cluster.get(leader, "leased").as_deref(), Some("v"));
    // Kept alive past its TTL, it stays.
    for _ in 0..4 {
        cluster.run(500);
        let now = cluster.now;
        assert_eq!(cluster.node(leader).core.renew(42, now), Ok(()));
    }
    assert_eq!(cluster.get(leader, "leased").as_deref(), Some("v"));
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).expect("a follower");
    let now = cluster.now;
    assert_eq!(
        cluster.node(follower).core.renew(42, now),
        Err(etcd_lease::LeaseError::NotPrimary),
        "only the leader renews"
    );
    // Let go: expired after its TTL and revoked by the duty on every member.
    cluster.run(2_500);
    for id in [1, 2, 3] {
        assert_eq!(cluster.get(id, "leased"), None, "member {id}");
    }
}

#[test]
fn the_leader_cut_off_revokes_nothing_while_the_new_leader_extends_the_lease() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.run(3_000);
    let old = cluster.leader().expect("a leader");
    cluster.grant_and_put(old, 9, 3, "leased");
    // The old leader, cut off, still believes it leads for a while; its
    // expired leases would be revoked only through the quorum it lost.
    cluster.cut.insert(old);
    cluster.run(2_500);
    let new = cluster.leader().expect("a new leader");
    assert_ne!(new, old);
    let now = cluster.now;
    assert_eq!(cluster.node(new).core.renew(9, now), Ok(()), "the new leader's lessor renews");
    assert_eq!(cluster.get(new, "leased").as_deref(), Some("v"));
    assert_eq!(cluster.get(old, "leased").as_deref(), Some("v"));
}

#[test]
fn the_compactor_proposes_on_the_leader_and_the_rows_go_in_batches_between_readies() {
    let cfg = ApplyCoreConfig { compaction_batch_limit: 2, ..apply_config() };
    let mode = CompactionMode::Revision { retain: 5, check_ms: 500 };
    let mut cluster = Cluster::with(&[1, 2, 3], cfg, mode);
    cluster.run(3_000);
    let leader = cluster.leader().expect("a leader");
    for i in 0..30 {
        cluster.put(leader, 100 + i, "k", &format!("v{i}"));
        cluster.run(2);
    }
    cluster.run(2_000);
    for (id, node) in &cluster.nodes {
        let kv = node.core.apply().kv();
        let revision = kv.current_revision();
        assert!(kv.compact_revision() >= revision - 5 - 1, "member {id}: compacted near the head");
        assert!(kv.compaction_in_progress().is_none(), "member {id}: its batches finished");
        let old = RangeRequest { key: "k".into(), revision: 2, ..Default::default() };
        assert!(kv.range(&old).is_err(), "member {id}: the old revision is gone");
    }
}

#[test]
fn a_removed_member_learns_it_and_the_others_refuse_it() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.run(3_000);
    let leader = cluster.leader().expect("a leader");
    let gone = *cluster.nodes.keys().find(|&&id| id != leader).expect("a follower");
    cluster
        .step(leader, MemberInput::ChangeMembership { kind: Kind::Remove, member: record(gone) });
    cluster.run(500);
    assert!(cluster.node(gone).core.removed(), "it applied its own removal");
    for id in [1, 2, 3].into_iter().filter(|&id| id != gone) {
        assert!(cluster.node(id).core.knows_removed(gone), "member {id}");
        assert_eq!(cluster.node(id).core.raft().conf_state().voters.len(), 2, "member {id}");
    }
    cluster.nodes.remove(&gone);
    cluster.put(leader, 1, "two", "left");
    cluster.run(50);
    assert!(matches!(told(&cluster, leader, 1), Some(MemberEffect::Applied { .. })));
}

#[test]
fn a_snapshot_is_recorded_every_snapshot_count_entries_and_the_log_released() {
    let cfg = ApplyCoreConfig { snapshot_count: 10, ..apply_config() };
    let mut cluster = Cluster::with(&[1], cfg, NO_COMPACTION);
    cluster.run(5);
    for i in 0..25 {
        cluster.put(1, i, "k", "v");
        cluster.run(1);
    }
    let io = &cluster.nodes[&1].io;
    assert!(io.snapshots.len() >= 2, "snapshots at {:?}", io.snapshots);
    assert!(io.snapshots.windows(2).all(|w| w[1] - w[0] >= 10), "{:?}", io.snapshots);
    assert!(!io.released.is_empty(), "the log is released behind them");
    let applied = cluster.nodes[&1].core.apply().applied_index();
    assert!(io.snapshots.iter().all(|&s| s <= applied), "only applied, durable indexes");
}

#[test]
fn waiters_still_waiting_when_a_member_stops_are_handed_back() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.run(3_000);
    let leader = cluster.leader().expect("a leader");
    cluster.cut.insert(leader);
    cluster.put(leader, 1, "a", "1");
    cluster.step(leader, MemberInput::Read { waiter: 2 });
    cluster.run(10);
    let node = cluster.nodes.remove(&leader).expect("leader");
    let mut waiting = node.core.into_waiting();
    waiting.sort();
    assert_eq!(waiting, vec![1, 2]);
}
