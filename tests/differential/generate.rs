//! The seeded generator of operation sequences.

use super::*;

/// A small deterministic PRNG (SplitMix64).
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    pub(super) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `percent`/100.
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// Operations

/// Keys of the sequence: few, so operations collide; prefixes of each other;
/// `\xff` ends in the byte prefix ranges cannot increment.
pub(super) const KEYS: &[&[u8]] =
    &[b"a", b"a/1", b"a/2", b"ab", b"b", b"b/x", b"c", b"c\xff", b"\xff"];
pub(super) const VALUES: &[&[u8]] = &[b"", b"1", b"22", b"333", b"x"];
/// Lease IDs granted explicitly (the same on both sides).
pub(super) const LEASES: &[i64] = &[0x11, 0x22, 0x33, 0x7fff_0000_0000_0044];
/// Put and then deleted after the sequence; the final watches read until they
/// see it (a put for watchers that filter deletes, a delete for the others).
/// Above every key of the sequence, so every from-key watch covers it.
pub(super) const SENTINEL: &[u8] = b"\xff\xffend";

/// One request of a sequence. Revisions in requests are as if the sequence
/// started at revision 1; `Target::rev_in` maps them onto a server's history.
#[derive(Clone, Debug)]
pub(super) enum Op {
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
    pub(super) fn is_local_read(&self) -> bool {
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
pub(super) fn prefix_end(key: &[u8]) -> Vec<u8> {
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
pub(super) struct Gen {
    pub(super) rng: Rng,
    pub(super) config: Config,
    /// Current revision (sequence-relative).
    pub(super) rev: i64,
    /// Compacted revision (0: none yet).
    pub(super) compacted: i64,
    /// Generating for a cluster (see `txn_range_rev`).
    pub(super) cluster: bool,
}

/// The writes of one txn (its whole tree) as key intervals `[start, end)`, an
/// empty end meaning infinity. By default a txn's writes never overlap, so the
/// sequences reach the store; `DIFF_TXN_OVERLAPS=1` generates overlapping
/// writes to compare etcd's duplicate-key answers.
#[derive(Default)]
pub(super) struct TxnWrites(Vec<(Vec<u8>, Vec<u8>)>);

impl TxnWrites {
    pub(super) fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
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
    pub(super) fn claim(&mut self, key: &[u8], range_end: &[u8]) -> bool {
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
    pub(super) fn new(seed: u64, config: Config, cluster: bool) -> Gen {
        Gen { rng: Rng::new(seed), config, rev: 1, compacted: 0, cluster }
    }

    /// Learns the revisions from real etcd's answer to `op`.
    pub(super) fn observe(&mut self, op: &Op, answer: &Answer) {
        if let Ok(reply) = answer {
            if let Some(rev) = reply.revision() {
                self.rev = rev;
            }
            if let Op::Compact(c) = op {
                self.compacted = c.revision;
            }
        }
    }

    pub(super) fn key(&mut self) -> Vec<u8> {
        if self.rng.chance(2) {
            return Vec::new(); // etcd: key is not provided
        }
        self.rng.pick(KEYS).to_vec()
    }

    pub(super) fn value(&mut self) -> Vec<u8> {
        self.rng.pick(VALUES).to_vec()
    }

    pub(super) fn lease(&mut self) -> i64 {
        *self.rng.pick(LEASES)
    }

    /// A range end for `key`: none, its prefix, from-key, or another key.
    pub(super) fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.rng.below(10) {
            0..=3 => Vec::new(),
            4 | 5 => prefix_end(key),
            6 => vec![0],
            _ => self.rng.pick(KEYS).to_vec(),
        }
    }

    /// A revision for a range: mostly 0 (current), else anything from below the
    /// compaction to beyond the current revision, rarely negative.
    pub(super) fn read_rev(&mut self) -> i64 {
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
    pub(super) fn txn_range_rev(&self, rev: i64) -> i64 {
        match rev {
            0 => 0,
            r if r < 0 && self.compacted > 0 => 0,
            r if r > self.rev || (r > 0 && r < self.compacted) => 0,
            r => r,
        }
    }

    /// A revision bound for min/max filters and compares.
    pub(super) fn some_rev(&mut self) -> i64 {
        self.rng.range(0, self.rev + 1)
    }

    pub(super) fn put(&mut self, key: Vec<u8>) -> PutRequest {
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
    pub(super) fn range(&mut self, in_txn: bool) -> RangeRequest {
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

    pub(super) fn delete(&mut self, key: Vec<u8>, range_end: Vec<u8>) -> DeleteRangeRequest {
        DeleteRangeRequest { key, range_end, prev_kv: self.rng.chance(50) }
    }

    pub(super) fn compare(&mut self) -> Compare {
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

    pub(super) fn txn(&mut self, depth: u32, writes: &mut TxnWrites) -> TxnRequest {
        let compare = (0..self.rng.below(4)).map(|_| self.compare()).collect();
        let success = self.branch(depth, writes);
        let failure = self.branch(depth, writes);
        TxnRequest { compare, success, failure }
    }

    pub(super) fn branch(&mut self, depth: u32, writes: &mut TxnWrites) -> Vec<RequestOp> {
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

    pub(super) fn compaction(&mut self) -> CompactionRequest {
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
    pub(super) fn watch(&mut self) -> WatchCreateRequest {
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

    pub(super) fn op(&mut self) -> Op {
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
