use etcd_proto::etcdserverpb::{request_op::Request, RangeRequest, RequestOp, TxnRequest};

use super::*;
use crate::{CompactStep, MvccError};

fn compact(e: &Env, rev: i64) -> Result<(), MvccError> {
    let mut b = e.store.begin_batch(&e.backend)?;
    b.compact(rev)?;
    b.commit(false)?;
    Ok(())
}

/// The `key` table's rows: (main revision, tombstone).
fn rows(e: &Env) -> Vec<(i64, bool)> {
    use etcd_storage::ReadTables;
    let rtx = e.backend.begin_read().unwrap();
    let mut revs = vec![];
    rtx.key_scan(&[], None, &mut |k, _| {
        let (r, t) = crate::Revision::from_key(k).unwrap();
        revs.push((r.main, t));
        true
    })
    .unwrap();
    revs
}

fn all_at(e: &Env, rev: i64) -> Result<Vec<etcd_proto::mvccpb::KeyValue>, MvccError> {
    let mut r = rr("\0", "\0");
    r.revision = rev;
    e.store.range(&r).map(|r| r.kvs)
}

/// a put 2, a put 3, b put 4, a del 5, b put 6, c put 7, c del 8, a put 9
fn fixture() -> Env {
    let e = open();
    e.put("a", "1");
    e.put("a", "2");
    e.put("b", "1");
    e.del("a", "");
    e.put("b", "2");
    e.put("c", "1");
    e.del("c", "");
    e.put("a", "3");
    assert_eq!(e.store.current_revision(), 9);
    e
}

#[test]
fn compaction_rules_and_errors() {
    let e = fixture();
    let before: Vec<_> = (0..=9).map(|r| all_at(&e, r).unwrap()).collect();
    assert!(matches!(compact(&e, 10), Err(MvccError::FutureRev)));
    compact(&e, 5).unwrap();
    assert_eq!(e.store.compact_revision(), 5);
    for rev in 1..5 {
        let err = all_at(&e, rev).unwrap_err();
        assert!(matches!(err, MvccError::Compacted), "at {rev}");
        assert_eq!(err.to_string(), "mvcc: required revision has been compacted");
    }
    for rev in 5..=9 {
        assert_eq!(all_at(&e, rev).unwrap(), before[rev as usize], "at {rev}");
    }
    assert!(matches!(compact(&e, 5), Err(MvccError::Compacted)));
    assert!(matches!(compact(&e, 4), Err(MvccError::Compacted)));
    // The index is compacted at once, the rows in batches afterwards; the
    // hash does not see the rows still there.
    assert_eq!(e.store.compaction_in_progress(), Some(5));
    assert_eq!(rows(&e).len(), 8, "no row removed yet");
    let hash = e.store.hash_kv(0).unwrap();
    // Revisions 2, 3 and 5 go (a's history and tombstone), b@4 stays.
    assert_eq!(e.store.compact_step(2).unwrap(), CompactStep::More { removed: 2 });
    assert_eq!(e.store.compact_step(2).unwrap(), CompactStep::More { removed: 1 });
    let last = CompactStep::Finished { revision: 5, removed: 0 };
    assert_eq!(e.store.compact_step(2).unwrap(), last);
    assert_eq!(e.store.compact_step(2).unwrap(), CompactStep::Idle);
    assert_eq!(e.store.compaction_in_progress(), None);
    assert_eq!(e.store.hash_kv(0).unwrap(), hash);
    // what is left in the backend: b@4 (newest <= 5 of a live key) and everything > 5
    assert_eq!(rows(&e), vec![(4, false), (6, false), (7, false), (8, true), (9, false)]);
    // compacting past a tombstone removes the key from the index
    compact(&e, 8).unwrap();
    e.store.finish_compaction().unwrap();
    assert_eq!(e.store.index_len(), 2);
    assert_eq!(all_at(&e, 8).unwrap(), before[8]);
    assert_eq!(all_at(&e, 0).unwrap(), before[9]);
    // hash at the compacted revision itself is refused like etcd
    assert!(matches!(e.store.hash_kv(8), Err(MvccError::Compacted)));
    assert!(matches!(e.store.hash_kv(10), Err(MvccError::FutureRev)));
}

#[test]
fn compaction_survives_reopen() {
    let e = fixture();
    compact(&e, 6).unwrap();
    let h = e.store.hash_kv(0).unwrap();
    assert_eq!(h.compact_revision, 6);
    let e = e.reopen();
    assert_eq!(e.store.compact_revision(), 6);
    assert_eq!(e.store.current_revision(), 9);
    assert!(matches!(all_at(&e, 5), Err(MvccError::Compacted)));
    assert_eq!(keys(&all_at(&e, 6).unwrap()), ["b"]);
    assert_eq!(keys(&all_at(&e, 7).unwrap()), ["b", "c"]);
    assert_eq!(e.store.hash_kv(0).unwrap(), h);
    // versions stay right after compaction + reopen
    assert_eq!(e.put("b", "3"), 10);
    assert_eq!(e.get("b").unwrap(), kv("b", "3", 4, 10, 3));
}

#[test]
fn a_compaction_stopped_between_batches_resumes_after_reopen() {
    let e = fixture();
    compact(&e, 6).unwrap();
    assert!(matches!(e.store.compact_step(1).unwrap(), CompactStep::More { .. }));
    let hash = e.store.hash_kv(0).unwrap();
    let e = e.reopen();
    assert_eq!(e.store.compaction_in_progress(), Some(6), "scheduled, not finished");
    assert_eq!(e.store.compact_revision(), 6);
    assert!(matches!(all_at(&e, 5), Err(MvccError::Compacted)));
    assert_eq!(e.store.hash_kv(0).unwrap(), hash);
    e.store.finish_compaction().unwrap();
    assert_eq!(rows(&e), vec![(6, false), (7, false), (8, true), (9, false)]);
    let e = e.reopen();
    assert_eq!(e.store.compaction_in_progress(), None);
    assert_eq!(e.store.compact_revision(), 6);
}

#[test]
fn the_compaction_revision_reads_without_its_deletes_while_batches_are_left() {
    let e = fixture();
    compact(&e, 8).unwrap();
    let read = |e: &Env| {
        let events = e.store.events_range(8, 9).unwrap();
        events
            .iter()
            .map(|ev| (ev.kv.as_ref().unwrap().mod_revision, ev.r#type))
            .collect::<Vec<_>>()
    };
    let before = read(&e);
    assert_eq!(before, vec![(9, 0)], "c's delete at 8 goes with the compaction");
    e.store.finish_compaction().unwrap();
    assert_eq!(read(&e), before);
}

#[test]
fn a_newer_compaction_supersedes_one_still_removing_rows() {
    let e = fixture();
    compact(&e, 5).unwrap();
    assert!(matches!(e.store.compact_step(3).unwrap(), CompactStep::More { .. }));
    compact(&e, 8).unwrap();
    assert_eq!(e.store.compaction_in_progress(), Some(8));
    e.store.finish_compaction().unwrap();
    // b@6 is the newest of b at 8; a and c have no live revision at 8.
    assert_eq!(rows(&e), vec![(6, false), (9, false)]);
}

#[test]
fn compacting_everything_keeps_the_revision() {
    let e = open();
    e.put("a", "1");
    e.del("a", "");
    compact(&e, 3).unwrap();
    let e = e.reopen();
    // the key table is empty but the revision is the compacted one
    assert_eq!(e.store.current_revision(), 3);
    assert_eq!(e.put("x", "1"), 4);
}

#[test]
fn compaction_inside_a_batch() {
    let e = fixture();
    let mut b = e.store.begin_batch(&e.backend).unwrap();
    b.compact(6).unwrap();
    // the batch's own reads see the new compacted revision
    let mut r = rr("\0", "\0");
    r.revision = 5;
    assert!(matches!(b.range(&r), Err(MvccError::Compacted)));
    // a txn ranging below it is refused before it changes anything
    let t = TxnRequest {
        success: vec![
            RequestOp {
                request: Some(Request::RequestPut(etcd_proto::etcdserverpb::PutRequest {
                    key: "z".into(),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: "a".into(),
                    revision: 3,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert!(matches!(b.txn(&t, &|_| true), Err(MvccError::Compacted)));
    assert_eq!(b.revision(), 9);
    // readers still see the old compaction state until commit
    assert_eq!(all_at(&e, 5).unwrap().len(), 1);
    b.commit(false).unwrap();
    assert!(matches!(all_at(&e, 5), Err(MvccError::Compacted)));
}

#[test]
fn dropped_compaction_changes_nothing() {
    let e = fixture();
    e.backend.flush().unwrap(); // parked writes are discarded with a dropped batch
    {
        let mut b = e.store.begin_batch(&e.backend).unwrap();
        b.compact(7).unwrap();
    }
    assert_eq!(e.store.compact_revision(), 0);
    assert_eq!(all_at(&e, 2).unwrap().len(), 1);
    let e = e.reopen();
    assert_eq!(all_at(&e, 2).unwrap().len(), 1);
}

#[test]
fn hash_kv_is_deterministic_and_sensitive() {
    let a = fixture();
    let b = fixture();
    compact(&a, 6).unwrap();
    compact(&b, 6).unwrap();
    let ha = a.store.hash_kv(0).unwrap();
    assert_eq!(ha, b.store.hash_kv(0).unwrap());
    assert_eq!(ha.compact_revision, 6);
    assert_eq!(ha.hash_revision, 9);
    assert_eq!(ha.current_revision, 9);
    // a hash at an older revision ignores newer rows
    let h7 = a.store.hash_kv(7).unwrap();
    assert_eq!(h7.hash_revision, 7);
    assert_ne!(h7.hash, ha.hash);
    a.put("x", "1");
    b.put("x", "2");
    assert_eq!(a.store.hash_kv(9).unwrap(), b.store.hash_kv(9).unwrap().clone_with_current(10));
    assert_ne!(a.store.hash_kv(0).unwrap().hash, b.store.hash_kv(0).unwrap().hash);
    // uncompacted store: compact_revision -1 as etcd reports it
    assert_eq!(fixture().store.hash_kv(0).unwrap().compact_revision, -1);
}

trait CloneWith {
    fn clone_with_current(self, cur: i64) -> Self;
}

impl CloneWith for crate::HashKv {
    fn clone_with_current(mut self, cur: i64) -> Self {
        self.current_revision = cur;
        self
    }
}

/// Hashes reported by etcd 3.4.23 (`etcdctl endpoint hashkv`) for the
/// fixture's sequence on a fresh single-member cluster, before and after
/// `etcdctl compact 6`.
#[test]
fn hash_kv_matches_etcd() {
    let e = fixture();
    assert_eq!(e.store.hash_kv(0).unwrap().hash, 1616720064);
    assert_eq!(e.store.hash_kv(7).unwrap().hash, 3147361555);
    compact(&e, 6).unwrap();
    assert_eq!(e.store.hash_kv(0).unwrap().hash, 851237955);
    assert_eq!(e.store.hash_kv(7).unwrap().hash, 2281893614);
}
