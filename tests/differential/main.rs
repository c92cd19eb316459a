//! Differential test against real etcd: a seeded generator of random operation
//! sequences (puts, ranges with every option, delete ranges, nested txns, leases,
//! compactions) runs against a fresh real etcd 3.4 and a fresh server of ours,
//! and every answer is compared; at the end the whole history is watched (from
//! revision 1, or from the compaction revision), hashed and read back revision
//! by revision.
//!
//! Modes: a single member, and a 3-member cluster where each request goes to a
//! random member (the same index on both sides). In a cluster, reads that do not
//! go through a barrier (serializable ranges, txns made only of serializable
//! ranges) may legitimately lag on a member that has not applied the last write
//! yet, so they are sent to the member that served the last barrier-ed request
//! (a write, or a linearizable read): that member has applied everything
//! acknowledged before. Lease TimeToLive is answered from the leader's lessor, so
//! it goes to each side's leader after a linearizable read there (etcd itself
//! answers TimeToLive without a barrier); `DIFF_LEASE_TTL_ON_FOLLOWERS=1` sends
//! it to the random member instead (a follower forwards it to its leader).
//!
//! Environment:
//! - `DIFF_SEQUENCES` single-member sequences (default 5),
//! - `DIFF_CLUSTER_SEQUENCES` 3-member sequences (default 2),
//! - `DIFF_OPS` operations per sequence (default 100),
//! - `DIFF_SEED` runs only the sequence of that seed (in each test that runs),
//! - `DIFF_BASE_SEED` shifts the seeds of the default sequences,
//! - `DIFF_TXN_OVERLAPS=1` lets txns write overlapping keys (etcd's duplicate-key
//!   rules; excluded by default, see `TxnWrites`),
//! - `DIFF_LEASE_TTL_ON_FOLLOWERS=1` (above),
//! - `DIFF_CONTEXT` how many steps before a divergence its report shows (8).
//!
//! What is compared: gRPC code and message of errors; header revisions, kv
//! create/mod revisions and compare/range revisions as offsets from the
//! sequence's first revision (printed as if it started at 1); versions, values,
//! leases (granted with explicit IDs, the same on both sides), prev kvs, counts,
//! `more`, txn branches and nested responses, lease granted TTL and attached keys
//! (sorted; etcd keeps them in a map), whether TimeToLive says -1 (not the
//! remaining TTL, which depends on timing), watch events with prev kvs, and the
//! compaction response of a watch that starts below the compaction. Never the
//! header's member ID, cluster ID or raft term.
//!
//! Not generated (timing or known-excluded): lease TTLs below 60 s (the minimum
//! TTL is 2 s, and an expiry mid-sequence is timing-dependent), lease ID 0 (the
//! server picks the ID), keep-alives, by default txns whose writes overlap, and
//! in a cluster txn ranges at a revision that fails (etcd 3.4 is inconsistent
//! there, see `Gen::txn_range_rev`).

mod answers;
#[path = "../common/mod.rs"]
mod common;
mod describe;
mod generate;

use std::fmt::Write as _;
use std::time::Duration;

use common::{real_etcd, Cluster, Flavor, Server};
use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::kv_client::KvClient;
use etcd_proto::etcdserverpb::lease_client::LeaseClient;
use etcd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use etcd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_proto::etcdserverpb::request_op::Request as Req;
use etcd_proto::etcdserverpb::response_op::Response as Resp;
use etcd_proto::etcdserverpb::watch_client::WatchClient;
use etcd_proto::etcdserverpb::watch_create_request::FilterType;
use etcd_proto::etcdserverpb::watch_request::RequestUnion;
use etcd_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, ResponseOp, StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use etcd_proto::mvccpb::{Event, KeyValue};
use tonic::transport::Channel;

use answers::*;
use describe::*;
use generate::*;

// ---------------------------------------------------------------------------
// Configuration

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        let v = v.trim();
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Single,
    Cluster,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    ops: usize,
    txn_overlaps: bool,
    lease_ttl_on_followers: bool,
}

fn config() -> Config {
    Config {
        ops: env_u64("DIFF_OPS").unwrap_or(100) as usize,
        txn_overlaps: env_flag("DIFF_TXN_OVERLAPS"),
        lease_ttl_on_followers: env_flag("DIFF_LEASE_TTL_ON_FOLLOWERS"),
    }
}

/// The seeds to run: `DIFF_SEED` alone, or `count` seeds derived from the mode.
fn seeds(mode: Mode, count_var: &str, default: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("DIFF_SEED") {
        return vec![seed];
    }
    let count = env_u64(count_var).unwrap_or(default);
    let base = env_u64("DIFF_BASE_SEED").unwrap_or(0);
    let salt = match mode {
        Mode::Single => 0x5151_0000,
        Mode::Cluster => 0xC1C1_0000,
    };
    (0..count).map(|i| Rng::new(base ^ salt ^ i).next()).collect()
}

// ---------------------------------------------------------------------------
// One side of the comparison: a server or a cluster, with clients per member

struct MemberClients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

struct Target {
    flavor: Flavor,
    members: Vec<MemberClients>,
    /// The revision the sequence started at.
    base: i64,
    /// Member IDs by index (cluster mode), to find the leader.
    ids: Vec<u64>,
    /// Keeps the processes alive.
    _servers: Vec<Server>,
}

async fn connect(endpoint: &str) -> Channel {
    Channel::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect")
}

impl Target {
    async fn start(flavor: Flavor, mode: Mode) -> Target {
        let servers = match mode {
            Mode::Single => vec![Server::start_with(flavor, &[])],
            Mode::Cluster => Cluster::start_flavor(flavor, 3, &[]).members,
        };
        let mut members = Vec::new();
        for server in &servers {
            let channel = connect(&server.endpoint()).await;
            members.push(MemberClients {
                kv: KvClient::new(channel.clone()),
                lease: LeaseClient::new(channel.clone()),
                watch: WatchClient::new(channel.clone()),
                maintenance: MaintenanceClient::new(channel),
            });
        }
        let mut target = Target { flavor, members, base: 0, ids: Vec::new(), _servers: servers };
        let probe = RangeRequest { key: b"probe".to_vec(), ..Default::default() };
        let header = target.members[0].kv.range(probe).await.expect("first range").into_inner();
        target.base = header.header.expect("header").revision;
        for i in 0..target.members.len() {
            let status = target.members[i].maintenance.status(StatusRequest {}).await;
            let status = status.expect("status").into_inner();
            target.ids.push(status.header.expect("header").member_id);
        }
        target
    }

    /// A sequence revision (as if it started at 1) on this server; 0 and
    /// negative values keep their meaning.
    fn rev_in(&self, rev: i64) -> i64 {
        if rev > 0 {
            rev - 1 + self.base
        } else {
            rev
        }
    }

    /// A server revision as a sequence revision.
    fn rev_out(&self, rev: i64) -> i64 {
        rev - self.base + 1
    }

    fn header_rev(&self, header: &Option<ResponseHeader>) -> Option<i64> {
        header.as_ref().map(|h| self.rev_out(h.revision))
    }

    fn kv(&self, kv: &KeyValue) -> Kv {
        let rev = |r: i64| if r == 0 { 0 } else { self.rev_out(r) };
        Kv {
            key: show(&kv.key),
            create: rev(kv.create_revision),
            modified: rev(kv.mod_revision),
            version: kv.version,
            value: show(&kv.value),
            lease: kv.lease,
        }
    }

    fn kvs(&self, kvs: &[KeyValue]) -> Vec<Kv> {
        kvs.iter().map(|kv| self.kv(kv)).collect()
    }

    fn map_range(&self, mut r: RangeRequest) -> RangeRequest {
        r.revision = self.rev_in(r.revision);
        for v in [
            &mut r.min_mod_revision,
            &mut r.max_mod_revision,
            &mut r.min_create_revision,
            &mut r.max_create_revision,
        ] {
            *v = self.rev_in(*v);
        }
        r
    }

    fn map_txn(&self, mut t: TxnRequest) -> TxnRequest {
        for c in &mut t.compare {
            match &mut c.target_union {
                Some(TargetUnion::CreateRevision(r)) | Some(TargetUnion::ModRevision(r)) => {
                    *r = self.rev_in(*r)
                }
                _ => {}
            }
        }
        for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
            op.request = match op.request.take() {
                Some(Req::RequestRange(r)) => Some(Req::RequestRange(self.map_range(r))),
                Some(Req::RequestTxn(t)) => Some(Req::RequestTxn(self.map_txn(t))),
                other => other,
            };
        }
        t
    }

    fn response_op(&self, op: ResponseOp) -> Reply {
        match op.response {
            Some(Resp::ResponseRange(r)) => Reply::Range {
                rev: self.header_rev(&r.header),
                kvs: self.kvs(&r.kvs),
                more: r.more,
                count: r.count,
            },
            Some(Resp::ResponsePut(p)) => Reply::Put {
                rev: self.header_rev(&p.header),
                prev: p.prev_kv.as_ref().map(|kv| self.kv(kv)),
            },
            Some(Resp::ResponseDeleteRange(d)) => Reply::Delete {
                rev: self.header_rev(&d.header),
                deleted: d.deleted,
                prev: self.kvs(&d.prev_kvs),
            },
            Some(Resp::ResponseTxn(t)) => Reply::Txn {
                rev: self.header_rev(&t.header),
                succeeded: t.succeeded,
                responses: t.responses.into_iter().map(|op| self.response_op(op)).collect(),
            },
            None => Reply::Empty,
        }
    }

    /// The index of the member that leads now, after a linearizable read there
    /// (so its lessor has applied everything acknowledged).
    async fn leader(&mut self) -> usize {
        for _ in 0..100 {
            let status = self.members[0].maintenance.status(StatusRequest {}).await;
            if let Some(i) = status.ok().and_then(|s| {
                let leader = s.into_inner().leader;
                self.ids.iter().position(|&id| id == leader)
            }) {
                let barrier = RangeRequest { key: b"probe".to_vec(), ..Default::default() };
                if self.members[i].kv.range(barrier).await.is_ok() {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{:?}: no leader", self.flavor);
    }

    async fn exec(&mut self, op: &Op, member: usize, cluster: bool) -> Answer {
        let m = member;
        match op.clone() {
            Op::Put(p) => {
                let r = self.members[m].kv.put(p).await.map_err(error_of)?.into_inner();
                Ok(Reply::Put {
                    rev: self.header_rev(&r.header),
                    prev: r.prev_kv.as_ref().map(|kv| self.kv(kv)),
                })
            }
            Op::Range(r) => {
                let r = self.map_range(r);
                let r = self.members[m].kv.range(r).await.map_err(error_of)?.into_inner();
                Ok(Reply::Range {
                    rev: self.header_rev(&r.header),
                    kvs: self.kvs(&r.kvs),
                    more: r.more,
                    count: r.count,
                })
            }
            Op::Delete(d) => {
                let r = self.members[m].kv.delete_range(d).await.map_err(error_of)?.into_inner();
                Ok(Reply::Delete {
                    rev: self.header_rev(&r.header),
                    deleted: r.deleted,
                    prev: self.kvs(&r.prev_kvs),
                })
            }
            Op::Txn(t) => {
                let t = self.map_txn(t);
                let r = self.members[m].kv.txn(t).await.map_err(error_of)?.into_inner();
                Ok(Reply::Txn {
                    rev: self.header_rev(&r.header),
                    succeeded: r.succeeded,
                    responses: r.responses.into_iter().map(|op| self.response_op(op)).collect(),
                })
            }
            Op::Grant(g) => {
                let r = self.members[m].lease.lease_grant(g).await.map_err(error_of)?.into_inner();
                Ok(Reply::Grant {
                    rev: self.header_rev(&r.header),
                    id: r.id,
                    ttl: r.ttl,
                    error: r.error,
                })
            }
            Op::Revoke(q) => {
                let r = self.members[m].lease.lease_revoke(q).await.map_err(error_of)?.into_inner();
                Ok(Reply::Revoke { rev: self.header_rev(&r.header) })
            }
            Op::TimeToLive(q) => {
                let r = self.members[m]
                    .lease
                    .lease_time_to_live(q)
                    .await
                    .map_err(error_of)?
                    .into_inner();
                let mut keys: Vec<String> = r.keys.iter().map(|k| show(k)).collect();
                keys.sort();
                Ok(Reply::TimeToLive {
                    rev: if cluster { None } else { self.header_rev(&r.header) },
                    id: r.id,
                    missing: r.ttl == -1,
                    granted_ttl: r.granted_ttl,
                    keys,
                })
            }
            Op::Compact(mut c) => {
                c.revision = self.rev_in(c.revision);
                let r = self.members[m].kv.compact(c).await.map_err(error_of)?.into_inner();
                Ok(Reply::Compact { rev: self.header_rev(&r.header) })
            }
        }
    }

    async fn hash(&mut self, member: usize) -> Answer {
        let r = self.members[member].maintenance.hash_kv(HashKvRequest { revision: 0 }).await;
        let r = r.map_err(error_of)?.into_inner();
        Ok(Reply::Hash {
            rev: self.header_rev(&r.header),
            hash: r.hash,
            compact_revision: if r.compact_revision <= 0 {
                0
            } else {
                self.rev_out(r.compact_revision)
            },
        })
    }

    /// Watches as `create` asks (its start revision a sequence revision) until
    /// the sentinel's first event, which ends the list (or, below the
    /// compaction, until the compaction response).
    async fn watch(&mut self, member: usize, mut create: WatchCreateRequest) -> Answer {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        create.start_revision = self.rev_in(create.start_revision);
        tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) })
            .await
            .expect("queue the watch request");
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut responses =
            self.members[member].watch.watch(stream).await.map_err(error_of)?.into_inner();
        let mut created = None;
        let mut events = Vec::new();
        let mut compacted = None;
        let mut other = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline, responses.message()).await;
            let response: WatchResponse = match next {
                Err(_) => {
                    other.push("no sentinel event within 30 s".into());
                    break;
                }
                Ok(Err(status)) => return Err(error_of(status)),
                Ok(Ok(None)) => {
                    other.push("stream ended".into());
                    break;
                }
                Ok(Ok(Some(r))) => r,
            };
            if response.created {
                created = Some((response.watch_id, self.header_rev(&response.header)));
            }
            if response.compact_revision != 0 || response.canceled {
                compacted = Some((self.rev_out(response.compact_revision), response.canceled));
                if !response.cancel_reason.is_empty() {
                    other.push(format!("cancel reason: {}", response.cancel_reason));
                }
                break;
            }
            let mut done = false;
            for Event { r#type, kv, prev_kv } in &response.events {
                events.push(Ev {
                    kind: if *r#type == 0 { "PUT" } else { "DELETE" },
                    kv: kv.as_ref().map(|kv| self.kv(kv)),
                    prev: prev_kv.as_ref().map(|kv| self.kv(kv)),
                });
                done = kv.as_ref().is_some_and(|kv| kv.key == SENTINEL);
                if done {
                    break;
                }
            }
            if done {
                break;
            }
        }
        drop(tx);
        Ok(Reply::Watch { created, events, compacted, other })
    }
}

// ---------------------------------------------------------------------------
// Running a sequence

struct Step {
    what: String,
    member: usize,
    ours: Answer,
    etcd: Answer,
}

fn report(seed: u64, mode: Mode, steps: &[Step]) -> String {
    let last = steps.last().expect("a diverging step");
    let context = env_u64("DIFF_CONTEXT").unwrap_or(8) as usize;
    let mut s = format!(
        "divergence from real etcd ({mode:?} mode) at step {} of seed {seed:#x}\n\
         reproduce: DIFF_SEED={seed:#x} DIFF_OPS={} cargo test --release --test differential {}\n\n\
         previous steps (member: request => etcd's answer):\n",
        steps.len() - 1,
        steps.len(),
        match mode {
            Mode::Single => "single",
            Mode::Cluster => "cluster",
        },
    );
    for step in steps[..steps.len() - 1].iter().rev().take(context).rev() {
        let _ = writeln!(s, "  m{}: {}\n      => {:?}", step.member, step.what, step.etcd);
    }
    let _ = writeln!(s, "\ndiverging step, on member {}: {}", last.member, last.what);
    match (&last.etcd, &last.ours) {
        (
            Ok(Reply::Watch { created: c1, events: e1, compacted: x1, other: o1 }),
            Ok(Reply::Watch { created: c2, events: e2, compacted: x2, other: o2 }),
        ) => {
            let _ = writeln!(s, "  etcd: created {c1:?} compacted {x1:?} {o1:?}");
            let _ = writeln!(s, "  ours: created {c2:?} compacted {x2:?} {o2:?}");
            let _ = writeln!(s, "  events (etcd | ours), * where they differ:");
            for i in 0..e1.len().max(e2.len()) {
                let (a, b) = (e1.get(i), e2.get(i));
                let mark = if a == b { ' ' } else { '*' };
                let _ = writeln!(s, "  {mark} etcd {a:?}\n  {mark} ours {b:?}");
            }
        }
        (etcd, ours) => {
            let _ = write!(s, "  etcd: {etcd:#?}\n  ours: {ours:#?}\n");
        }
    }
    s
}

/// Every key at the current revision, as each member of each side holds it
/// (serializable reads), for the divergence report.
async fn state_dump(ours: &mut Target, etcd: &mut Target) -> String {
    let mut s = String::from("\nstate after the divergence (serializable read of every key):\n");
    for target in [etcd, ours] {
        for m in 0..target.members.len() {
            let all = Op::Range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                serializable: true,
                ..Default::default()
            });
            let answer = target.exec(&all, m, false).await;
            let _ = writeln!(s, "  {:?} m{m}: {answer:?}", target.flavor);
        }
    }
    s
}

/// What kinds of answers a sequence got (request kind, then `ok` or the error
/// message), to show what the agreeing sequences covered.
type Tally = std::collections::BTreeMap<String, usize>;

fn tally(steps: &[Step]) -> Tally {
    let mut t = Tally::new();
    for step in steps {
        let kind = step.what.split(['{', ' ']).next().unwrap_or_default();
        let kind = if kind == "lease" {
            step.what.split(' ').take(2).collect::<Vec<_>>().join(" ")
        } else {
            kind.to_string()
        };
        let outcome = match &step.etcd {
            Ok(Reply::Txn { succeeded, .. }) => format!("ok, succeeded={succeeded}"),
            Ok(_) => "ok".to_string(),
            Err((code, message)) => format!("{code}: {message}"),
        };
        *t.entry(format!("{kind} -> {outcome}")).or_default() += 1;
    }
    t
}

async fn run_sequence(seed: u64, mode: Mode, config: Config) -> Result<Tally, String> {
    let cluster = mode == Mode::Cluster;
    let mut ours = Target::start(Flavor::Ours, mode).await;
    let mut etcd = Target::start(Flavor::RealEtcd, mode).await;
    let size = ours.members.len() as u64;
    let mut gen = Gen::new(seed, config, cluster);
    // Member choices come from their own stream, so the ops do not depend on
    // the mode.
    let mut members = Rng::new(seed ^ 0x4d45_4d42);
    let mut steps: Vec<Step> = Vec::new();
    let mut last_writer = 0;
    let mut last_compact_physical = true;

    macro_rules! check {
        ($step:expr) => {{
            let step: Step = $step;
            let same = step.ours == step.etcd;
            steps.push(step);
            if !same {
                let mut text = report(seed, mode, &steps);
                text.push_str(&state_dump(&mut ours, &mut etcd).await);
                return Err(text);
            }
        }};
    }

    for _ in 0..config.ops {
        let op = gen.op();
        let random = members.below(size) as usize;
        let (m_ours, m_etcd, member) = match &op {
            _ if !cluster => (0, 0, 0),
            Op::TimeToLive(_) if !config.lease_ttl_on_followers => {
                let (lo, le) = (ours.leader().await, etcd.leader().await);
                (lo, le, le)
            }
            _ if op.is_local_read() => (last_writer, last_writer, last_writer),
            _ => {
                last_writer = random;
                (random, random, random)
            }
        };
        let ours_answer = ours.exec(&op, m_ours, cluster).await;
        let etcd_answer = etcd.exec(&op, m_etcd, cluster).await;
        gen.observe(&op, &etcd_answer);
        if let (Op::Compact(c), Ok(_)) = (&op, &etcd_answer) {
            last_compact_physical = c.physical;
        }
        check!(Step { what: describe(&op), member, ours: ours_answer, etcd: etcd_answer });
    }

    // The sentinel marks the end of the history for the watches.
    let m = if cluster { members.below(size) as usize } else { 0 };
    for sentinel in [
        Op::Put(PutRequest { key: SENTINEL.to_vec(), ..Default::default() }),
        Op::Delete(DeleteRangeRequest { key: SENTINEL.to_vec(), ..Default::default() }),
    ] {
        let (o, e) =
            (ours.exec(&sentinel, m, cluster).await, etcd.exec(&sentinel, m, cluster).await);
        gen.observe(&sentinel, &e);
        check!(Step { what: describe(&sentinel), member: m, ours: o, etcd: e });
    }

    // etcd removes compacted revisions from its backend in the background unless
    // the compaction was physical; a watch reads the backend, so let it finish.
    if !last_compact_physical {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let all = |start_revision| WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision,
        prev_kv: true,
        ..Default::default()
    };
    let mut watches = vec![all(gen.compacted.max(1))];
    if gen.compacted > 1 {
        watches.push(all(1)); // below the compaction
    }
    watches.extend((0..3).map(|_| gen.watch()));
    for create in watches {
        let what = describe_watch(&create);
        let (o, e) = (ours.watch(m, create.clone()).await, etcd.watch(m, create).await);
        check!(Step { what, member: m, ours: o, etcd: e });
    }
    let (o, e) = (ours.hash(m).await, etcd.hash(m).await);
    check!(Step { what: "hashkv".into(), member: m, ours: o, etcd: e });
    // Every revision of the history, read back (the one below the compaction
    // must fail as compacted).
    for rev in (gen.compacted - 1).max(1)..=gen.rev + 1 {
        let op = Op::Range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        });
        let (o, e) = (ours.exec(&op, m, cluster).await, etcd.exec(&op, m, cluster).await);
        check!(Step { what: describe(&op), member: m, ours: o, etcd: e });
    }
    Ok(tally(&steps))
}

fn run_mode(mode: Mode, count_var: &str, default: u64) {
    assert!(
        real_etcd().is_some(),
        "real etcd is required: apt-get install -y etcd-server (or run .ci/run)"
    );
    let config = config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seeds = seeds(mode, count_var, default);
    let mut failures = Vec::new();
    let mut total = Tally::new();
    for (i, &seed) in seeds.iter().enumerate() {
        match runtime.block_on(run_sequence(seed, mode, config)) {
            Ok(t) => {
                let steps: usize = t.values().sum();
                eprintln!(
                    "differential {mode:?} {}/{}: seed {seed:#x}: {steps} steps agree",
                    i + 1,
                    seeds.len()
                );
                for (k, n) in t {
                    *total.entry(k).or_default() += n;
                }
            }
            Err(report) => {
                eprintln!("{report}");
                failures.push(seed);
            }
        }
    }
    eprintln!("answers of the agreeing {mode:?} sequences (real etcd's, all matched):");
    for (k, n) in &total {
        eprintln!("  {n:6}  {k}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} {mode:?} sequences diverged from real etcd; seeds: {:#x?}",
        failures.len(),
        seeds.len(),
        failures
    );
}

#[test]
fn single_member_sequences_answer_as_real_etcd() {
    run_mode(Mode::Single, "DIFF_SEQUENCES", 5);
}

#[test]
fn cluster_sequences_answer_as_real_etcd() {
    run_mode(Mode::Cluster, "DIFF_CLUSTER_SEQUENCES", 2);
}

// ---------------------------------------------------------------------------
// The harness's own pieces

#[test]
fn prefix_end_is_etcds() {
    assert_eq!(prefix_end(b"a"), b"b");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"\xff"), [0]);
    assert_eq!(prefix_end(b""), [0]);
}

#[test]
fn txn_writes_refuse_overlaps() {
    let mut w = TxnWrites::default();
    assert!(w.claim(b"a", b""));
    assert!(!w.claim(b"a", b""));
    assert!(w.claim(b"a/1", b""));
    assert!(!w.claim(b"a", b"b"), "a range over claimed keys");
    assert!(w.claim(b"b", b"\0") && !w.claim(b"c", b""), "from-key covers every later key");
    let mut w = TxnWrites::default();
    assert!(w.claim(b"b", b"c") && w.claim(b"a", b"b") && w.claim(b"c", b""));
}

#[test]
fn generation_is_deterministic() {
    let config = Config { ops: 0, txn_overlaps: false, lease_ttl_on_followers: false };
    let run = || {
        let mut gen = Gen::new(42, config, false);
        (0..200).map(|_| describe(&gen.op())).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}
