use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::response_op::Response;
use etcd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse,
};

use super::*;
use crate::MvccError;

fn cmp(
    key: &str,
    end: &str,
    target: CompareTarget,
    result: CompareResult,
    u: TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: end.into(),
        target_union: Some(u),
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

fn get_op(k: &str) -> RequestOp {
    RequestOp { request: Some(Request::RequestRange(rr(k, ""))) }
}

fn del_op(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: k.into(),
            ..Default::default()
        })),
    }
}

fn run(e: &Env, t: &TxnRequest) -> Result<(TxnResponse, i64), MvccError> {
    let mut b = e.store.begin_batch(&e.backend)?;
    let r = b.txn(t, &|id| id == 1)?;
    let rev = b.revision();
    b.commit(false)?;
    Ok((r, rev))
}

/// Whether `c` holds, observed through which branch a txn takes.
fn holds(e: &Env, c: Compare) -> bool {
    run(e, &TxnRequest { compare: vec![c], ..Default::default() }).unwrap().0.succeeded
}

#[test]
fn compares_every_target_and_result() {
    use CompareResult::*;
    use CompareTarget as T;
    let e = open();
    e.put("a", "m"); // a: create 2, mod 2, ver 1
    e.put("a", "m"); // a: mod 3, ver 2
    e.put_req(PutRequest { key: "b".into(), value: "x".into(), lease: 1, ..Default::default() }); // b: create 4 mod 4 ver 1 lease 1
    let cases: Vec<(T, TargetUnion, [bool; 4])> = vec![
        // [EQUAL, NOT_EQUAL, GREATER, LESS] for key a
        (T::Version, TargetUnion::Version(2), [true, false, false, false]),
        (T::Version, TargetUnion::Version(1), [false, true, true, false]),
        (T::Create, TargetUnion::CreateRevision(3), [false, true, false, true]),
        (T::Mod, TargetUnion::ModRevision(3), [true, false, false, false]),
        (T::Value, TargetUnion::Value("l".into()), [false, true, true, false]),
        (T::Value, TargetUnion::Value("mm".into()), [false, true, false, true]),
        (T::Lease, TargetUnion::Lease(0), [true, false, false, false]),
    ];
    for (t, u, want) in cases {
        for (res, w) in [Equal, NotEqual, Greater, Less].into_iter().zip(want) {
            assert_eq!(holds(&e, cmp("a", "", t, res, u.clone())), w, "{t:?} {res:?} {u:?}");
        }
    }
    assert!(holds(&e, cmp("b", "", T::Lease, Equal, TargetUnion::Lease(1))));
    // a missing key: version/create/mod/lease compare as 0, value always fails
    assert!(holds(&e, cmp("zz", "", T::Version, Equal, TargetUnion::Version(0))));
    assert!(holds(&e, cmp("zz", "", T::Create, Less, TargetUnion::CreateRevision(1))));
    assert!(!holds(&e, cmp("zz", "", T::Value, Equal, TargetUnion::Value(vec![]))));
    assert!(!holds(&e, cmp("zz", "", T::Value, NotEqual, TargetUnion::Value("q".into()))));
    // range compares hold only if they hold for every key
    assert!(holds(&e, cmp("a", "c", T::Version, Greater, TargetUnion::Version(0))));
    assert!(!holds(&e, cmp("a", "c", T::Version, Greater, TargetUnion::Version(1))));
    assert!(holds(&e, cmp("a", "\0", T::Mod, Less, TargetUnion::ModRevision(5))));
    // an empty range compares against a zero KeyValue
    assert!(holds(&e, cmp("x", "y", T::Mod, Equal, TargetUnion::ModRevision(0))));
    // several compares are a conjunction
    let r = run(
        &e,
        &TxnRequest {
            compare: vec![
                cmp("a", "", T::Version, Equal, TargetUnion::Version(2)),
                cmp("b", "", T::Version, Equal, TargetUnion::Version(9)),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!r.0.succeeded);
    assert_eq!(r.1, 4, "read-only txn keeps the revision");
}

#[test]
fn ops_read_their_own_writes_and_share_one_revision() {
    let e = open();
    e.put("k", "0");
    let t = TxnRequest {
        compare: vec![cmp(
            "k",
            "",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value("0".into()),
        )],
        success: vec![
            get_op("k"),
            put_op("k", "1"),
            get_op("k"),
            put_op("k", "2"),
            del_op("k"),
            get_op("k"),
            put_op("n", "x"),
        ],
        failure: vec![],
    };
    let (r, rev) = run(&e, &t).unwrap();
    assert!(r.succeeded);
    assert_eq!(rev, 3);
    let resp = |i: usize| r.responses[i].response.clone().unwrap();
    let Response::ResponseRange(g0) = resp(0) else { panic!() };
    assert_eq!(g0.kvs, vec![kv("k", "0", 2, 2, 1)]);
    assert_eq!(g0.header, Some(ResponseHeader { revision: 2, ..Default::default() }));
    let Response::ResponsePut(p1) = resp(1) else { panic!() };
    assert_eq!(p1.header.unwrap().revision, 3);
    let Response::ResponseRange(g2) = resp(2) else { panic!() };
    assert_eq!(g2.kvs, vec![kv("k", "1", 2, 3, 2)]);
    assert_eq!(g2.header.unwrap().revision, 3);
    let Response::ResponseDeleteRange(d) = resp(4) else { panic!() };
    assert_eq!(d.deleted, 1);
    let Response::ResponseRange(g5) = resp(5) else { panic!() };
    assert!(g5.kvs.is_empty());
    // after the txn: k deleted, n created; every change at revision 3 with subs 0..
    assert_eq!(e.get("k"), None);
    assert_eq!(e.get("n").unwrap(), kv("n", "x", 3, 3, 1));
    let mut at = rr("k", "");
    at.revision = 2;
    assert_eq!(e.store.range(&at).unwrap().kvs[0].value, b"0");
}

#[test]
fn nested_txn_compares_see_the_state_before_the_outer_txn() {
    let e = open();
    e.put("k", "0");
    let inner = TxnRequest {
        // k's version is 1 before the outer txn, 2 after its first put
        compare: vec![cmp(
            "k",
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(1),
        )],
        success: vec![put_op("inner", "yes"), get_op("k")],
        failure: vec![put_op("inner", "no")],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![put_op("k", "1"), RequestOp { request: Some(Request::RequestTxn(inner)) }],
        failure: vec![],
    };
    let (r, rev) = run(&e, &outer).unwrap();
    assert_eq!(rev, 3);
    let Some(Response::ResponseTxn(nested)) = r.responses[1].response.clone() else { panic!() };
    assert!(nested.succeeded);
    assert_eq!(nested.header, Some(ResponseHeader::default()));
    let Some(Response::ResponseRange(g)) = nested.responses[1].response.clone() else { panic!() };
    assert_eq!(g.kvs[0].value, b"1", "nested ops see earlier writes");
    assert_eq!(e.get("inner").unwrap(), kv("inner", "yes", 3, 3, 1));
}

#[test]
fn failing_checks_change_nothing() {
    let e = open();
    e.put("k", "0");
    let lease_put = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: "l".into(),
            lease: 2, // run() knows only lease 1
            ..Default::default()
        })),
    };
    let t = TxnRequest {
        compare: vec![],
        success: vec![put_op("k", "1"), del_op("k"), lease_put],
        failure: vec![],
    };
    assert!(matches!(run(&e, &t), Err(MvccError::LeaseNotFound)));
    // nested: the failing put is inside a nested txn
    let nested = TxnRequest {
        success: vec![
            put_op("k", "2"),
            RequestOp { request: Some(Request::RequestTxn(t.clone())) },
        ],
        ..Default::default()
    };
    assert!(matches!(run(&e, &nested), Err(MvccError::LeaseNotFound)));
    // ignore_value on a key that does not exist before the txn
    let ignore = |k: &str| RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: k.into(),
            ignore_value: true,
            ..Default::default()
        })),
    };
    let t2 = TxnRequest { success: vec![put_op("new", "x"), ignore("new")], ..Default::default() };
    assert!(matches!(run(&e, &t2), Err(MvccError::KeyNotFound)));
    // ignore_value on a key an earlier op of the txn deleted
    let t3 = TxnRequest { success: vec![del_op("k"), ignore("k")], ..Default::default() };
    assert!(matches!(run(&e, &t3), Err(MvccError::KeyNotFound)));
    // a future-revision range in the chosen branch
    let mut fut = rr("k", "");
    fut.revision = 3;
    let t4 = TxnRequest {
        success: vec![put_op("k", "9"), RequestOp { request: Some(Request::RequestRange(fut)) }],
        ..Default::default()
    };
    assert!(matches!(run(&e, &t4), Err(MvccError::FutureRev)));
    // the checks only look at the chosen branch
    let t5 = TxnRequest {
        compare: vec![cmp(
            "k",
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(1),
        )],
        success: vec![put_op("ok", "1")],
        failure: vec![ignore("missing")],
    };
    assert!(run(&e, &t5).unwrap().0.succeeded);
    // nothing of the failed txns is visible; only t5 took a revision
    assert_eq!(e.store.current_revision(), 3);
    assert_eq!(e.get("k").unwrap(), kv("k", "0", 2, 2, 1));
    assert_eq!(e.get("l"), None);
    assert_eq!(e.get("new"), None);
    // ignore_value on a key that exists works inside a txn
    let t6 = TxnRequest { success: vec![ignore("k")], ..Default::default() };
    run(&e, &t6).unwrap();
    assert_eq!(e.get("k").unwrap(), kv("k", "0", 2, 4, 2));
}

#[test]
fn read_only_txn_with_range_revision_checks() {
    let e = open();
    e.put("k", "0");
    let mut r: RangeRequest = rr("k", "");
    r.revision = 5;
    let t = TxnRequest {
        success: vec![RequestOp { request: Some(Request::RequestRange(r)) }],
        ..Default::default()
    };
    assert!(matches!(run(&e, &t), Err(MvccError::FutureRev)));
}
