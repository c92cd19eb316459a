//! Randomized test against a naive model: for every key, its full history.

use std::collections::BTreeMap;

use etcd_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use etcd_proto::mvccpb::KeyValue;

use super::*;
use crate::MvccError;

/// xorshift64*, deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// key -> list of (revision, Some(kv) for a put / None for a delete)
#[derive(Default)]
struct Model {
    hist: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    rev: i64,
    compacted: i64,
}

impl Model {
    fn at(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        self.hist.get(key)?.iter().rev().find(|(r, _)| *r <= rev).and_then(|(_, kv)| kv.as_ref())
    }
    fn range(&self, start: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        let r = crate::index::KeyRange::new(start, end);
        self.hist
            .keys()
            .filter(|k| r.contains(k))
            .filter_map(|k| self.at(k, rev).cloned())
            .collect()
    }
}

fn key(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(6);
    vec![b'a' + n as u8]
}

#[test]
fn random_ops_match_model() {
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut e = open();
        let mut m = Model { rev: 1, compacted: 0, ..Default::default() };
        for step in 0..300 {
            let mut b = e.store.begin_batch(&e.backend).unwrap();
            for _ in 0..1 + rng.below(4) {
                match rng.below(10) {
                    0..=5 => {
                        let k = key(&mut rng);
                        let v = format!("v{}", rng.below(100)).into_bytes();
                        b.put(
                            &PutRequest { key: k.clone(), value: v.clone(), ..Default::default() },
                            &|_| true,
                        )
                        .unwrap();
                        m.rev += 1;
                        let prev = m.at(&k, m.rev - 1).cloned();
                        let kv = KeyValue {
                            key: k.clone(),
                            value: v,
                            create_revision: prev.as_ref().map_or(m.rev, |p| p.create_revision),
                            mod_revision: m.rev,
                            version: prev.as_ref().map_or(0, |p| p.version) + 1,
                            lease: 0,
                        };
                        m.hist.entry(k).or_default().push((m.rev, Some(kv)));
                    }
                    6..=8 => {
                        let k = key(&mut rng);
                        let end = if rng.below(2) == 0 { vec![] } else { key(&mut rng) };
                        let r = b
                            .delete_range(&DeleteRangeRequest {
                                key: k.clone(),
                                range_end: end.clone(),
                                prev_kv: false,
                            })
                            .unwrap();
                        let live = m.range(&k, &end, m.rev);
                        assert_eq!(r.deleted, live.len() as i64);
                        if !live.is_empty() {
                            m.rev += 1;
                            for kv in live {
                                m.hist.get_mut(&kv.key).unwrap().push((m.rev, None));
                            }
                        }
                    }
                    _ => {
                        let c = m.compacted + 1 + rng.below(3) as i64;
                        match b.compact(c) {
                            Ok(_) => {
                                assert!(c <= m.rev);
                                m.compacted = c;
                            }
                            Err(MvccError::FutureRev) => assert!(c > m.rev),
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
                assert_eq!(b.revision(), m.rev);
            }
            b.commit(false).unwrap();
            if step % 97 == 0 {
                e = e.reopen();
            }
            assert_eq!(e.store.current_revision(), m.rev, "seed {seed} step {step}");
            // check every readable revision with a few ranges
            for _ in 0..3 {
                let rev = if rng.below(3) == 0 { 0 } else { 1 + rng.below(m.rev as u64) as i64 };
                let (s, end) = match rng.below(3) {
                    0 => (key(&mut rng), vec![]),
                    1 => (key(&mut rng), vec![0]),
                    _ => (key(&mut rng), key(&mut rng)),
                };
                let req = RangeRequest {
                    key: s.clone(),
                    range_end: end.clone(),
                    revision: rev,
                    ..Default::default()
                };
                let got = e.store.range(&req);
                let at = if rev == 0 { m.rev } else { rev };
                if at < m.compacted {
                    assert!(matches!(got, Err(MvccError::Compacted)), "seed {seed} at {at}");
                } else {
                    let got = got.unwrap();
                    let want = m.range(&s, &end, at);
                    assert_eq!(got.count, want.len() as i64);
                    assert_eq!(got.kvs, want, "seed {seed} step {step} at {at}");
                }
            }
        }
    }
}
