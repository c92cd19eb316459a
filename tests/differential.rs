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

mod common;

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
// A small deterministic PRNG (SplitMix64)

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// Operations

/// Keys of the sequence: few, so operations collide; prefixes of each other;
/// `\xff` ends in the byte prefix ranges cannot increment.
const KEYS: &[&[u8]] = &[b"a", b"a/1", b"a/2", b"ab", b"b", b"b/x", b"c", b"c\xff", b"\xff"];
const VALUES: &[&[u8]] = &[b"", b"1", b"22", b"333", b"x"];
/// Lease IDs granted explicitly (the same on both sides).
const LEASES: &[i64] = &[0x11, 0x22, 0x33, 0x7fff_0000_0000_0044];
/// Put and then deleted after the sequence; the final watches read until they
/// see it (a put for watchers that filter deletes, a delete for the others).
/// Above every key of the sequence, so every from-key watch covers it.
const SENTINEL: &[u8] = b"\xff\xffend";

/// One request of a sequence. Revisions in requests are as if the sequence
/// started at revision 1; `Target::rev_in` maps them onto a server's history.
#[derive(Clone, Debug)]
enum Op {
    Put(PutRequest),
    Range(RangeRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Grant(LeaseGrantRequest),
    Revoke(LeaseRevokeRequest),
    TimeToLive(LeaseTimeToLiveRequest),
    Compact(CompactionRequest),
}

impl Op {
    /// Served from the member's own state without a barrier (see the module doc).
    fn is_local_read(&self) -> bool {
        match self {
            Op::Range(r) => r.serializable,
            Op::Txn(t) => t
                .success
                .iter()
                .chain(&t.failure)
                .all(|op| matches!(&op.request, Some(Req::RequestRange(r)) if r.serializable)),
            _ => false,
        }
    }
}

/// etcd's prefix end: the key with its last byte below 0xff incremented, or
/// `\0` (every key from `key` on) when there is none.
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// The generator: online, because revisions it picks are relative to the
/// current and compacted revisions, which it learns from real etcd's answers
/// (the sequence stops at the first divergence, so both sides agree on them).
struct Gen {
    rng: Rng,
    config: Config,
    /// Current revision (sequence-relative).
    rev: i64,
    /// Compacted revision (0: none yet).
    compacted: i64,
    /// Generating for a cluster (see `txn_range_rev`).
    cluster: bool,
}

/// The writes of one txn (its whole tree) as key intervals `[start, end)`, an
/// empty end meaning infinity. By default a txn's writes never overlap, so the
/// sequences reach the store; `DIFF_TXN_OVERLAPS=1` generates overlapping
/// writes to compare etcd's duplicate-key answers.
#[derive(Default)]
struct TxnWrites(Vec<(Vec<u8>, Vec<u8>)>);

impl TxnWrites {
    fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        match range_end {
            [] => {
                let mut end = key.to_vec();
                end.push(0);
                (key.to_vec(), end)
            }
            [0] => (key.to_vec(), Vec::new()),
            end => (key.to_vec(), end.to_vec()),
        }
    }

    /// Records the write unless it overlaps an earlier one.
    fn claim(&mut self, key: &[u8], range_end: &[u8]) -> bool {
        let (s, e) = TxnWrites::interval(key, range_end);
        let below = |a: &[u8], end: &[u8]| end.is_empty() || a < end;
        if self.0.iter().any(|(s2, e2)| below(&s, e2) && below(s2, &e)) {
            return false;
        }
        self.0.push((s, e));
        true
    }
}

impl Gen {
    fn new(seed: u64, config: Config, cluster: bool) -> Gen {
        Gen { rng: Rng::new(seed), config, rev: 1, compacted: 0, cluster }
    }

    /// Learns the revisions from real etcd's answer to `op`.
    fn observe(&mut self, op: &Op, answer: &Answer) {
        if let Ok(reply) = answer {
            if let Some(rev) = reply.revision() {
                self.rev = rev;
            }
            if let Op::Compact(c) = op {
                self.compacted = c.revision;
            }
        }
    }

    fn key(&mut self) -> Vec<u8> {
        if self.rng.chance(2) {
            return Vec::new(); // etcd: key is not provided
        }
        self.rng.pick(KEYS).to_vec()
    }

    fn value(&mut self) -> Vec<u8> {
        self.rng.pick(VALUES).to_vec()
    }

    fn lease(&mut self) -> i64 {
        *self.rng.pick(LEASES)
    }

    /// A range end for `key`: none, its prefix, from-key, or another key.
    fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.rng.below(10) {
            0..=3 => Vec::new(),
            4 | 5 => prefix_end(key),
            6 => vec![0],
            _ => self.rng.pick(KEYS).to_vec(),
        }
    }

    /// A revision for a range: mostly 0 (current), else anything from below the
    /// compaction to beyond the current revision, rarely negative.
    fn read_rev(&mut self) -> i64 {
        match self.rng.below(20) {
            0..=10 => 0,
            11 => -1,
            12 if self.compacted > 0 => self.compacted,
            _ => self.rng.range((self.compacted - 2).max(1), self.rev + 2),
        }
    }

    /// In a cluster, a range inside a txn only reads a revision it can read.
    /// Excluded: etcd 3.4 strips a txn's ranges on the members the client is not
    /// connected to, so a write txn whose range fails (compacted or future
    /// revision) fails on that member only and is applied on the others: real
    /// etcd's members then disagree (etcd-io/etcd#18667). Ours refuses it on
    /// every member.
    fn txn_range_rev(&self, rev: i64) -> i64 {
        match rev {
            0 => 0,
            r if r < 0 && self.compacted > 0 => 0,
            r if r > self.rev || (r > 0 && r < self.compacted) => 0,
            r => r,
        }
    }

    /// A revision bound for min/max filters and compares.
    fn some_rev(&mut self) -> i64 {
        self.rng.range(0, self.rev + 1)
    }

    fn put(&mut self, key: Vec<u8>) -> PutRequest {
        let mut put = PutRequest { key, value: self.value(), ..Default::default() };
        if self.rng.chance(25) {
            put.lease = self.lease();
        }
        put.prev_kv = self.rng.chance(50);
        if self.rng.chance(10) {
            put.ignore_value = true;
            if self.rng.chance(80) {
                put.value.clear();
            }
        }
        if self.rng.chance(10) {
            put.ignore_lease = true;
            if self.rng.chance(80) {
                put.lease = 0;
            }
        }
        put
    }

    /// A range; `in_txn` for one inside a txn (see `txn_range_rev`).
    fn range(&mut self, in_txn: bool) -> RangeRequest {
        let key = if self.rng.chance(5) { vec![0] } else { self.key() };
        let mut r = RangeRequest { range_end: self.range_end(&key), key, ..Default::default() };
        if self.rng.chance(40) {
            r.limit = *self.rng.pick(&[1, 2, 3, -1]);
        }
        r.revision = self.read_rev();
        if in_txn && self.cluster {
            r.revision = self.txn_range_rev(r.revision);
        }
        if self.rng.chance(30) {
            r.sort_order =
                *self.rng.pick(&[SortOrder::None, SortOrder::Ascend, SortOrder::Descend]) as i32;
        }
        if self.rng.chance(30) {
            r.sort_target = *self.rng.pick(&[
                SortTarget::Key,
                SortTarget::Version,
                SortTarget::Create,
                SortTarget::Mod,
                SortTarget::Value,
            ]) as i32;
        }
        r.serializable = self.rng.chance(30);
        r.keys_only = self.rng.chance(15);
        r.count_only = self.rng.chance(10);
        if self.rng.chance(10) {
            r.min_mod_revision = self.some_rev();
        }
        if self.rng.chance(10) {
            r.max_mod_revision = self.some_rev();
        }
        if self.rng.chance(10) {
            r.min_create_revision = self.some_rev();
        }
        if self.rng.chance(10) {
            r.max_create_revision = self.some_rev();
        }
        r
    }

    fn delete(&mut self, key: Vec<u8>, range_end: Vec<u8>) -> DeleteRangeRequest {
        DeleteRangeRequest { key, range_end, prev_kv: self.rng.chance(50) }
    }

    fn compare(&mut self) -> Compare {
        let key = self.rng.pick(KEYS).to_vec();
        let range_end = if self.rng.chance(15) { self.range_end(&key) } else { Vec::new() };
        let target = *self.rng.pick(&[
            CompareTarget::Value,
            CompareTarget::Version,
            CompareTarget::Create,
            CompareTarget::Mod,
            CompareTarget::Lease,
        ]);
        let result = *self.rng.pick(&[
            CompareResult::Equal,
            CompareResult::Greater,
            CompareResult::Less,
            CompareResult::NotEqual,
        ]);
        // Rarely a union that does not match the target (etcd then compares
        // with the target's zero value).
        let union_of = if self.rng.chance(5) {
            *self.rng.pick(&[CompareTarget::Value, CompareTarget::Version, CompareTarget::Lease])
        } else {
            target
        };
        let union = match union_of {
            CompareTarget::Value => TargetUnion::Value(self.value()),
            CompareTarget::Version => TargetUnion::Version(self.rng.range(0, 3)),
            CompareTarget::Create => TargetUnion::CreateRevision(self.some_rev()),
            CompareTarget::Mod => TargetUnion::ModRevision(self.some_rev()),
            CompareTarget::Lease => {
                TargetUnion::Lease(if self.rng.chance(30) { 0 } else { self.lease() })
            }
        };
        Compare {
            result: result as i32,
            target: target as i32,
            key,
            range_end,
            target_union: Some(union),
        }
    }

    fn txn(&mut self, depth: u32, writes: &mut TxnWrites) -> TxnRequest {
        let compare = (0..self.rng.below(4)).map(|_| self.compare()).collect();
        let success = self.branch(depth, writes);
        let failure = self.branch(depth, writes);
        TxnRequest { compare, success, failure }
    }

    fn branch(&mut self, depth: u32, writes: &mut TxnWrites) -> Vec<RequestOp> {
        let mut ops = Vec::new();
        for _ in 0..self.rng.below(4) {
            let request = match self.rng.below(20) {
                0..=6 => {
                    let key = self.rng.pick(KEYS).to_vec();
                    if self.config.txn_overlaps || writes.claim(&key, &[]) {
                        Req::RequestPut(self.put(key))
                    } else {
                        Req::RequestRange(self.range(true))
                    }
                }
                7..=9 => {
                    let key = self.rng.pick(KEYS).to_vec();
                    let range_end = match self.rng.below(4) {
                        0 => prefix_end(&key),
                        1 => vec![0],
                        _ => Vec::new(),
                    };
                    // With overlaps allowed, no from-key deletes: a from-key
                    // delete followed by an ignore_value put of a key it removed
                    // crashes etcd 3.4 (tests/txn_rules.rs covers that case and
                    // the from-key overlap rules against etcd).
                    let range_end = match range_end.as_slice() {
                        [0] if self.config.txn_overlaps => Vec::new(),
                        _ => range_end,
                    };
                    if self.config.txn_overlaps || writes.claim(&key, &range_end) {
                        Req::RequestDeleteRange(self.delete(key, range_end))
                    } else {
                        Req::RequestRange(self.range(true))
                    }
                }
                10..=16 => Req::RequestRange(self.range(true)),
                _ if depth < 2 => Req::RequestTxn(self.txn(depth + 1, writes)),
                _ => Req::RequestRange(self.range(true)),
            };
            ops.push(RequestOp { request: Some(request) });
        }
        ops
    }

    fn compaction(&mut self) -> CompactionRequest {
        let revision = match self.rng.below(10) {
            0..=6 if self.compacted < self.rev => self.rng.range(self.compacted + 1, self.rev),
            7 => self.rng.range(self.rev + 1, self.rev + 2),
            _ => self.rng.range((self.compacted - 1).max(1), self.compacted.max(1)),
        };
        CompactionRequest { revision, physical: self.rng.chance(50) }
    }

    /// A watch of the keys from one of the sequence's keys on (so it covers
    /// the sentinel), from a revision between the compaction and the
    /// sentinel's put (called after the sentinel's delete), with random
    /// filters and prev_kv.
    fn watch(&mut self) -> WatchCreateRequest {
        let filters = match self.rng.below(4) {
            0 => vec![FilterType::Noput as i32],
            1 => vec![FilterType::Nodelete as i32],
            _ => Vec::new(),
        };
        WatchCreateRequest {
            key: self.rng.pick(KEYS).to_vec(),
            range_end: vec![0],
            start_revision: self.rng.range(self.compacted.max(1), self.rev - 1),
            filters,
            prev_kv: self.rng.chance(50),
            ..Default::default()
        }
    }

    fn op(&mut self) -> Op {
        match self.rng.below(100) {
            0..=29 => {
                let key = self.key();
                Op::Put(self.put(key))
            }
            30..=53 => Op::Range(self.range(false)),
            54..=63 => {
                let key = self.key();
                let range_end = self.range_end(&key);
                Op::Delete(self.delete(key, range_end))
            }
            64..=79 => Op::Txn(self.txn(0, &mut TxnWrites::default())),
            80..=85 => {
                let ttl = if self.rng.chance(3) {
                    9_000_000_001 // etcd: too large lease TTL
                } else {
                    *self.rng.pick(&[60, 120, 3600])
                };
                Op::Grant(LeaseGrantRequest { ttl, id: self.lease() })
            }
            86..=89 => Op::Revoke(LeaseRevokeRequest { id: self.lease() }),
            90..=94 => Op::TimeToLive(LeaseTimeToLiveRequest {
                id: self.lease(),
                keys: self.rng.chance(70),
            }),
            _ => Op::Compact(self.compaction()),
        }
    }
}

// ---------------------------------------------------------------------------
// Describing requests (for divergence reports)

fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn show_range(key: &[u8], range_end: &[u8]) -> String {
    match range_end {
        [] => show(key),
        _ => format!("[{}, {})", show(key), show(range_end)),
    }
}

fn describe_put(p: &PutRequest) -> String {
    let mut s = format!("put {}={}", show(&p.key), show(&p.value));
    for (on, name) in
        [(p.prev_kv, "prev_kv"), (p.ignore_value, "ignore_value"), (p.ignore_lease, "ignore_lease")]
    {
        if on {
            let _ = write!(s, " {name}");
        }
    }
    if p.lease != 0 {
        let _ = write!(s, " lease={:#x}", p.lease);
    }
    s
}

fn describe_range(r: &RangeRequest) -> String {
    let mut s = format!("range {}", show_range(&r.key, &r.range_end));
    for (v, name) in [
        (r.limit, "limit"),
        (r.revision, "rev"),
        (r.min_mod_revision, "min_mod"),
        (r.max_mod_revision, "max_mod"),
        (r.min_create_revision, "min_create"),
        (r.max_create_revision, "max_create"),
    ] {
        if v != 0 {
            let _ = write!(s, " {name}={v}");
        }
    }
    if r.sort_order != 0 || r.sort_target != 0 {
        let order = SortOrder::try_from(r.sort_order).map(|o| o.as_str_name()).unwrap_or("?");
        let target = SortTarget::try_from(r.sort_target).map(|t| t.as_str_name()).unwrap_or("?");
        let _ = write!(s, " sort={order}/{target}");
    }
    for (on, name) in
        [(r.serializable, "serializable"), (r.keys_only, "keys_only"), (r.count_only, "count_only")]
    {
        if on {
            let _ = write!(s, " {name}");
        }
    }
    s
}

fn describe_delete(d: &DeleteRangeRequest) -> String {
    format!(
        "delete {}{}",
        show_range(&d.key, &d.range_end),
        if d.prev_kv { " prev_kv" } else { "" }
    )
}

fn describe_compare(c: &Compare) -> String {
    let target = CompareTarget::try_from(c.target).map(|t| t.as_str_name()).unwrap_or("?");
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => "=",
        Ok(CompareResult::NotEqual) => "!=",
        Ok(CompareResult::Greater) => ">",
        Ok(CompareResult::Less) => "<",
        Err(_) => "?",
    };
    let value = match &c.target_union {
        Some(TargetUnion::Value(v)) => format!("value:{}", show(v)),
        Some(TargetUnion::Version(v)) => format!("version:{v}"),
        Some(TargetUnion::CreateRevision(v)) => format!("create:{v}"),
        Some(TargetUnion::ModRevision(v)) => format!("mod:{v}"),
        Some(TargetUnion::Lease(v)) => format!("lease:{v:#x}"),
        None => "none".into(),
    };
    format!("{target}({}) {result} {value}", show_range(&c.key, &c.range_end))
}

fn describe_txn(t: &TxnRequest) -> String {
    let ops = |ops: &[RequestOp]| {
        ops.iter()
            .map(|op| match &op.request {
                Some(Req::RequestPut(p)) => describe_put(p),
                Some(Req::RequestRange(r)) => describe_range(r),
                Some(Req::RequestDeleteRange(d)) => describe_delete(d),
                Some(Req::RequestTxn(t)) => describe_txn(t),
                None => "none".into(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let compares: Vec<String> = t.compare.iter().map(describe_compare).collect();
    format!(
        "txn {{ if [{}] then [{}] else [{}] }}",
        compares.join(", "),
        ops(&t.success),
        ops(&t.failure)
    )
}

fn describe_watch(w: &WatchCreateRequest) -> String {
    let mut s = format!("watch {} from rev {}", show_range(&w.key, &w.range_end), w.start_revision);
    if w.prev_kv {
        s.push_str(" prev_kv");
    }
    for f in &w.filters {
        let name = FilterType::try_from(*f).map(|f| f.as_str_name()).unwrap_or("?");
        let _ = write!(s, " {name}");
    }
    s
}

fn describe(op: &Op) -> String {
    match op {
        Op::Put(p) => describe_put(p),
        Op::Range(r) => describe_range(r),
        Op::Delete(d) => describe_delete(d),
        Op::Txn(t) => describe_txn(t),
        Op::Grant(g) => format!("lease grant id={:#x} ttl={}", g.id, g.ttl),
        Op::Revoke(r) => format!("lease revoke id={:#x}", r.id),
        Op::TimeToLive(t) => {
            format!("lease timetolive id={:#x}{}", t.id, if t.keys { " keys" } else { "" })
        }
        Op::Compact(c) => {
            format!("compact rev={}{}", c.revision, if c.physical { " physical" } else { "" })
        }
    }
}

// ---------------------------------------------------------------------------
// Normalized answers

/// A kv with its revisions relative to the sequence.
#[derive(Clone, PartialEq, Eq)]
struct Kv {
    key: String,
    create: i64,
    modified: i64,
    version: i64,
    value: String,
    lease: i64,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={} create={} mod={} ver={}",
            self.key, self.value, self.create, self.modified, self.version
        )?;
        if self.lease != 0 {
            write!(f, " lease={:#x}", self.lease)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    kind: &'static str,
    kv: Option<Kv>,
    prev: Option<Kv>,
}

/// What a request answered, comparable across servers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reply {
    Put {
        rev: Option<i64>,
        prev: Option<Kv>,
    },
    Range {
        rev: Option<i64>,
        kvs: Vec<Kv>,
        more: bool,
        count: i64,
    },
    Delete {
        rev: Option<i64>,
        deleted: i64,
        prev: Vec<Kv>,
    },
    Txn {
        rev: Option<i64>,
        succeeded: bool,
        responses: Vec<Reply>,
    },
    Grant {
        rev: Option<i64>,
        id: i64,
        ttl: i64,
        error: String,
    },
    Revoke {
        rev: Option<i64>,
    },
    /// `rev` only in single-member mode (a leader may lag behind the member that
    /// served the last write).
    TimeToLive {
        rev: Option<i64>,
        id: i64,
        missing: bool,
        granted_ttl: i64,
        keys: Vec<String>,
    },
    Compact {
        rev: Option<i64>,
    },
    Hash {
        rev: Option<i64>,
        hash: u32,
        compact_revision: i64,
    },
    /// A watch: its created response, every event in order, and the
    /// compaction response if it started below the compaction.
    Watch {
        created: Option<(i64, Option<i64>)>,
        events: Vec<Ev>,
        compacted: Option<(i64, bool)>,
        other: Vec<String>,
    },
    /// An empty response op (should not happen).
    Empty,
}

impl Reply {
    /// The top-level header revision.
    fn revision(&self) -> Option<i64> {
        match self {
            Reply::Put { rev, .. }
            | Reply::Range { rev, .. }
            | Reply::Delete { rev, .. }
            | Reply::Txn { rev, .. }
            | Reply::Grant { rev, .. }
            | Reply::Revoke { rev }
            | Reply::TimeToLive { rev, .. }
            | Reply::Compact { rev }
            | Reply::Hash { rev, .. } => *rev,
            Reply::Watch { .. } | Reply::Empty => None,
        }
    }
}

/// A reply, or a gRPC error's code and message.
type Answer = Result<Reply, (String, String)>;

fn error_of(status: tonic::Status) -> (String, String) {
    (format!("{:?}", status.code()), status.message().to_string())
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
