use etcd_proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
};
use etcd_proto::mvccpb::{event::EventType, KeyValue};

use super::*;
use crate::MvccError;

#[test]
fn empty_store_is_at_revision_one() {
    let e = open();
    assert_eq!(e.store.current_revision(), 1);
    assert_eq!(e.store.compact_revision(), 0);
    let r = e.store.range(&rr("foo", "")).unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 0);
    assert!(!r.more);
}

/// What etcd answers for the same sequence on a fresh member.
#[test]
fn etcd_sequence() {
    let e = open();
    assert_eq!(e.put("foo", "bar"), 2);
    assert_eq!(e.get("foo").unwrap(), kv("foo", "bar", 2, 2, 1));
    assert_eq!(e.put("foo", "baz"), 3);
    assert_eq!(e.get("foo").unwrap(), kv("foo", "baz", 2, 3, 2));
    assert_eq!(e.del("foo", ""), (1, 4));
    assert_eq!(e.get("foo"), None);
    assert_eq!(e.del("foo", ""), (0, 4), "deleting nothing keeps the revision");
    assert_eq!(e.put("foo", "again"), 5);
    assert_eq!(e.get("foo").unwrap(), kv("foo", "again", 5, 5, 1));
    assert_eq!(e.get_at("foo", 3).unwrap(), kv("foo", "baz", 2, 3, 2));
    assert_eq!(e.get_at("foo", 2).unwrap(), kv("foo", "bar", 2, 2, 1));
    assert_eq!(e.get_at("foo", 4), None);
    assert_eq!(e.get_at("foo", 1), None);

    // a txn with two puts takes one revision, subs 0 and 1
    let mut b = e.store.begin_batch(&e.backend).unwrap();
    let put = |k: &str, v: &str| RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    };
    let t = b
        .txn(
            &TxnRequest {
                compare: vec![],
                success: vec![put("a", "1"), put("b", "2")],
                failure: vec![],
            },
            &|_| false,
        )
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(b.revision(), 6);
    let events = b.commit(false).unwrap().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, 6);
    assert_eq!(events[0].1.len(), 2);
    assert_eq!(e.get("a").unwrap(), kv("a", "1", 6, 6, 1));
    assert_eq!(e.get("b").unwrap(), kv("b", "2", 6, 6, 1));
    assert_eq!(e.store.current_revision(), 6);

    // an empty read-only txn does not bump the revision
    let mut b = e.store.begin_batch(&e.backend).unwrap();
    b.txn(&TxnRequest::default(), &|_| false).unwrap();
    assert_eq!(b.revision(), 6);
    assert!(b.commit(false).unwrap().events.is_empty());
}

#[test]
fn put_options() {
    let e = open();
    // prev_kv
    e.put("k", "v1");
    let mut b = e.store.begin_batch(&e.backend).unwrap();
    let r = b
        .put(
            &PutRequest {
                key: "k".into(),
                value: "v2".into(),
                prev_kv: true,
                lease: 7,
                ..Default::default()
            },
            &|id| id == 7,
        )
        .unwrap();
    assert_eq!(r.prev_kv.unwrap(), kv("k", "v1", 2, 2, 1));
    let lc = b.take_lease_changes();
    assert_eq!(lc.len(), 1);
    assert_eq!((lc[0].old_lease, lc[0].new_lease), (0, 7));
    // unknown lease
    let err = b
        .put(&PutRequest { key: "k".into(), lease: 8, ..Default::default() }, &|id| id == 7)
        .unwrap_err();
    assert!(matches!(err, MvccError::LeaseNotFound));
    assert_eq!(err.to_string(), "lease not found");
    // ignore_value keeps value, takes new lease... ignore_lease keeps lease
    b.put(
        &PutRequest {
            key: "k".into(),
            value: "ignored".into(),
            ignore_value: true,
            ignore_lease: true,
            ..Default::default()
        },
        &|_| false,
    )
    .unwrap();
    // ignore_* on a missing key
    let err = b
        .put(&PutRequest { key: "nope".into(), ignore_value: true, ..Default::default() }, &|_| {
            true
        })
        .unwrap_err();
    assert!(matches!(err, MvccError::KeyNotFound));
    assert_eq!(err.to_string(), "key not found");
    assert_eq!(b.revision(), 4, "failed puts consume no revision");
    b.commit(false).unwrap();
    let got = e.get("k").unwrap();
    assert_eq!(got, KeyValue { lease: 7, ..kv("k", "v2", 2, 4, 3) });
}

#[test]
fn delete_range_prev_kvs_and_events() {
    let e = open();
    e.put("a", "1");
    e.put("b", "2");
    e.put("c", "3");
    let mut b = e.store.begin_batch(&e.backend).unwrap();
    let r = b
        .delete_range(&DeleteRangeRequest { key: "a".into(), range_end: "c".into(), prev_kv: true })
        .unwrap();
    assert_eq!(r.deleted, 2);
    assert_eq!(keys(&r.prev_kvs), vec!["a", "b"]);
    let ev = b.commit(false).unwrap().events;
    assert_eq!(ev.len(), 1);
    let (rev, evs) = &ev[0];
    assert_eq!(*rev, 5);
    assert_eq!(evs[0].r#type, EventType::Delete as i32);
    assert_eq!(
        evs[0].kv.as_ref().unwrap(),
        &KeyValue { key: "a".into(), mod_revision: 5, ..Default::default() }
    );
    assert_eq!(keys(&e.store.range(&rr("\0", "\0")).unwrap().kvs), vec!["c"]);
    // from-key delete
    assert_eq!(e.del("\0", "\0"), (1, 6));
    assert_eq!(e.store.range(&rr("\0", "\0")).unwrap().count, 0);
}

#[test]
fn reopen_gives_identical_state() {
    let e = open();
    e.put("a", "1");
    e.put("b", "2");
    e.put("a", "3");
    e.del("b", "");
    e.put("b", "4");
    e.put_req(PutRequest { key: "l".into(), value: "x".into(), lease: 99, ..Default::default() });
    let before: Vec<_> = (0..=7)
        .map(|rev| {
            let mut r = rr("\0", "\0");
            r.revision = rev;
            e.store.range(&r).unwrap()
        })
        .collect();
    let h = e.store.hash_kv(0).unwrap();
    let e = e.reopen();
    assert_eq!(e.store.current_revision(), 7);
    for (rev, want) in before.iter().enumerate() {
        let mut r = rr("\0", "\0");
        r.revision = rev as i64;
        assert_eq!(&e.store.range(&r).unwrap(), want, "at {rev}");
    }
    assert_eq!(e.store.hash_kv(0).unwrap(), h);
    assert_eq!(e.store.leased_keys().unwrap(), vec![(b"l".to_vec(), 99)]);
    assert_eq!(e.put("a", "5"), 8);
    assert_eq!(e.get("a").unwrap(), kv("a", "5", 2, 8, 3));
    assert_eq!(e.get("b").unwrap(), kv("b", "4", 6, 6, 1));
}

#[test]
fn dropped_batch_changes_nothing() {
    let e = open();
    e.put("a", "1");
    e.backend.flush().unwrap(); // see the next test for parked writes
    {
        let mut b = e.store.begin_batch(&e.backend).unwrap();
        b.put(&PutRequest { key: "a".into(), value: "2".into(), ..Default::default() }, &|_| true)
            .unwrap();
        b.put(&PutRequest { key: "new".into(), ..Default::default() }, &|_| true).unwrap();
        b.delete_range(&DeleteRangeRequest { key: "a".into(), ..Default::default() }).unwrap();
        assert_eq!(b.revision(), 5);
    }
    assert_eq!(e.store.current_revision(), 2);
    assert_eq!(e.store.index_len(), 1);
    assert_eq!(e.get("a").unwrap(), kv("a", "1", 2, 2, 1));
    assert_eq!(e.put("a", "3"), 3);
    assert_eq!(e.get("a").unwrap(), kv("a", "3", 2, 3, 2));
}

#[test]
fn readers_see_only_committed_batches() {
    let e = open();
    e.put("a", "1");
    let mut b = e.store.begin_batch(&e.backend).unwrap();
    b.put(&PutRequest { key: "a".into(), value: "2".into(), ..Default::default() }, &|_| true)
        .unwrap();
    b.delete_range(&DeleteRangeRequest { key: "a".into(), ..Default::default() }).unwrap();
    b.put(&PutRequest { key: "b".into(), ..Default::default() }, &|_| true).unwrap();
    // a concurrent reader (another thread) sees the committed state only
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(e.store.current_revision(), 2);
            assert_eq!(e.get("a").unwrap(), kv("a", "1", 2, 2, 1));
            assert_eq!(e.get("b"), None);
            assert_eq!(e.store.range(&rr("\0", "\0")).unwrap().count, 1);
            let mut r = rr("a", "");
            r.revision = 3;
            assert!(matches!(e.store.range(&r), Err(MvccError::FutureRev)));
        });
    });
    // the batch reads its own writes
    let mut inbatch = rr("\0", "\0");
    inbatch.count_only = true;
    assert_eq!(b.range(&inbatch).unwrap().count, 1);
    b.commit(false).unwrap();
    assert_eq!(e.store.current_revision(), 5);
    assert_eq!(e.get("a"), None);
    assert_eq!(e.get("b").unwrap().mod_revision, 5);
}

#[test]
fn concurrent_readers_never_see_partial_batches() {
    let e = open();
    // invariant: keys x and y always hold the same value in committed state
    e.put("x", "0");
    e.put("y", "0");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = e.store.range(&rr("x", "z")).unwrap();
                    assert_eq!(r.kvs.len(), 2);
                    assert_eq!(r.kvs[0].value, r.kvs[1].value);
                    assert_eq!(r.kvs[0].mod_revision + 1, r.kvs[1].mod_revision);
                }
            });
        }
        for i in 1..200 {
            let mut b = e.store.begin_batch(&e.backend).unwrap();
            for k in ["x", "y"] {
                b.put(
                    &PutRequest {
                        key: k.into(),
                        value: i.to_string().into(),
                        ..Default::default()
                    },
                    &|_| true,
                )
                .unwrap();
            }
            if i % 50 == 0 {
                let c = b.revision() - 2;
                b.compact(c).unwrap();
            }
            b.commit(false).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn events_from_commit_and_from_history_agree() {
    let e = open();
    e.put("a", "1");
    let mut b = e.store.begin_batch(&e.backend).unwrap();
    b.put(&PutRequest { key: "a".into(), value: "2".into(), ..Default::default() }, &|_| true)
        .unwrap();
    b.delete_range(&DeleteRangeRequest { key: "a".into(), ..Default::default() }).unwrap();
    let committed = b.commit(false).unwrap().events;
    assert_eq!(committed.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(committed[0].1[0].prev_kv.as_ref().unwrap(), &kv("a", "1", 2, 2, 1));
    assert_eq!(committed[1].1[0].prev_kv.as_ref().unwrap(), &kv("a", "2", 2, 3, 2));
    let history = e.store.events_range(3, 100).unwrap();
    let flat: Vec<_> = committed
        .into_iter()
        .flat_map(|(_, evs)| evs)
        .map(|mut ev| {
            ev.prev_kv = None;
            ev
        })
        .collect();
    assert_eq!(history, flat);
    assert_eq!(e.store.events_range(2, 2).unwrap().len(), 1);
    assert!(e.store.events_range(5, 9).unwrap().is_empty());
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<crate::KvStore>();
    check::<etcd_storage::Backend>();
}
