//! etcd's txn validation rules (op counts, op checks, overlapping writes)
//! compared with real etcd: the same txns go to both servers, raw (nested
//! txns, empty ops and flags the client crates do not offer), and the
//! answers must agree on success or on the error's code and message.

mod common;

use common::{real_etcd, Flavor, Server};
use etcd_proto::etcdserverpb::kv_client::KvClient;
use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use tonic::transport::Channel;

/// Both servers run with this `--max-txn-ops`.
const MAX_TXN_OPS: usize = 4;

fn op(request: Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn put(key: &str) -> RequestOp {
    op(Request::RequestPut(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
}

fn put_ignore_value(key: &str) -> RequestOp {
    op(Request::RequestPut(PutRequest {
        key: key.into(),
        ignore_value: true,
        ..Default::default()
    }))
}

fn get(key: &str) -> RequestOp {
    op(Request::RequestRange(RangeRequest { key: key.into(), ..Default::default() }))
}

fn del(key: &str, end: &str) -> RequestOp {
    op(Request::RequestDeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }))
}

fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare: vec![], success, failure }
}

fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    op(Request::RequestTxn(txn(success, failure)))
}

fn cmp(key: &str) -> Compare {
    // The zero Compare: VALUE EQUAL against "" (false for a missing key).
    Compare { key: key.into(), ..Default::default() }
}

/// Every case's keys live under its own prefix (`p<i>/`); from-key deletes
/// start at the prefix and so also remove later prefixes, equally on both.
fn cases(p: &dyn Fn(&str) -> String) -> Vec<(&'static str, TxnRequest)> {
    let k = |s: &str| p(s);
    let ops = |n: usize| (0..n).map(|i| put(&k(&format!("n{i}")))).collect::<Vec<_>>();
    vec![
        ("success at the limit", txn(ops(4), vec![])),
        ("success over the limit", txn(ops(5), vec![])),
        ("failure over the limit", txn(vec![], ops(5))),
        (
            "compares over the limit",
            TxnRequest {
                compare: (0..5).map(|i| cmp(&k(&format!("c{i}")))).collect(),
                ..Default::default()
            },
        ),
        (
            "the largest count, not the sum",
            TxnRequest {
                compare: (0..4).map(|i| cmp(&k(&format!("c{i}")))).collect(),
                success: ops(4),
                failure: ops(4),
            },
        ),
        (
            "a nested txn within what its parent left",
            txn(
                vec![put(&k("x")), get(&k("y")), nested(vec![put(&k("a"))], vec![put(&k("b"))])],
                vec![],
            ),
        ),
        (
            "a nested txn over what its parent left",
            txn(
                vec![put(&k("x")), get(&k("y")), nested(vec![put(&k("a")), put(&k("b"))], vec![])],
                vec![],
            ),
        ),
        (
            "the parent's compares limit the nested txn",
            TxnRequest {
                compare: (0..4).map(|i| cmp(&k(&format!("c{i}")))).collect(),
                success: vec![],
                failure: vec![nested(vec![get(&k("a"))], vec![])],
            },
        ),
        (
            "count before compare keys",
            TxnRequest { compare: vec![cmp("")], success: ops(5), failure: vec![] },
        ),
        ("empty compare key", TxnRequest { compare: vec![cmp("")], ..Default::default() }),
        ("empty op", txn(vec![put(&k("a")), RequestOp { request: None }], vec![])),
        (
            "empty op in a nested failure",
            txn(vec![nested(vec![], vec![RequestOp { request: None }])], vec![]),
        ),
        ("empty put key", txn(vec![put("")], vec![])),
        ("empty range key", txn(vec![], vec![get("")])),
        ("empty delete key", txn(vec![del("", "z")], vec![])),
        (
            "ignore_value with a value",
            txn(
                vec![op(Request::RequestPut(PutRequest {
                    key: k("a").into(),
                    value: b"v".to_vec(),
                    ignore_value: true,
                    ..Default::default()
                }))],
                vec![],
            ),
        ),
        (
            "ignore_lease with a lease",
            txn(
                vec![op(Request::RequestPut(PutRequest {
                    key: k("a").into(),
                    lease: 7,
                    ignore_lease: true,
                    ..Default::default()
                }))],
                vec![],
            ),
        ),
        ("op errors before overlaps", txn(vec![put(&k("a")), put(&k("a"))], vec![put("")])),
        ("a key put twice", txn(vec![put(&k("a")), put(&k("a"))], vec![])),
        ("one key in both branches", txn(vec![put(&k("a"))], vec![put(&k("a"))])),
        ("a deleted key put", txn(vec![del(&k("a"), ""), put(&k("a"))], vec![])),
        ("a put key deleted", txn(vec![put(&k("a")), del(&k("a"), "")], vec![])),
        ("a single-key delete is one key", txn(vec![del(&k("a"), ""), put(&k("a\0"))], vec![])),
        ("a range covers its start", txn(vec![del(&k("a"), &k("c")), put(&k("a"))], vec![])),
        ("a range covers its inside", txn(vec![put(&k("b")), del(&k("a"), &k("c"))], vec![])),
        ("a range excludes its end", txn(vec![del(&k("a"), &k("c")), put(&k("c"))], vec![])),
        ("an inverted range", txn(vec![del(&k("c"), &k("a")), put(&k("b"))], vec![])),
        ("an empty range", txn(vec![del(&k("a"), &k("a")), put(&k("a"))], vec![])),
        (
            "a from-key delete and a put after it",
            txn(vec![del(&k("a"), "\0"), put(&k("b"))], vec![]),
        ),
        (
            "a from-key delete and its own start",
            txn(vec![put(&k("a")), del(&k("a"), "\0")], vec![]),
        ),
        ("a delete of everything and a put", txn(vec![del("\0", "\0"), put(&k("z"))], vec![])),
        (
            // Safe for etcd: the key does not exist before the txn, so etcd's
            // pre-check refuses it before anything runs.
            "a from-key delete, then ignore_value on a missing key",
            txn(vec![del(&k("a"), "\0"), put_ignore_value(&k("missing"))], vec![]),
        ),
        (
            "a prefix delete and a put under it",
            txn(
                vec![
                    del(&k(""), &{
                        let mut end = k("");
                        end.pop();
                        end.push('0');
                        end
                    }),
                    put(&k("q")),
                ],
                vec![],
            ),
        ),
        (
            "nested branches put one key",
            txn(vec![nested(vec![put(&k("k"))], vec![put(&k("k"))])], vec![]),
        ),
        (
            "a nested put and its parent's",
            txn(vec![nested(vec![], vec![put(&k("k"))]), put(&k("k"))], vec![]),
        ),
        (
            "a nested put in its parent's deleted range",
            txn(vec![del(&k("a"), &k("c")), nested(vec![put(&k("b"))], vec![])], vec![]),
        ),
        (
            "a nested put under its parent's from-key delete",
            txn(vec![del(&k("a"), "\0"), nested(vec![put(&k("b"))], vec![])], vec![]),
        ),
        (
            "a nested delete and its parent's put",
            txn(vec![put(&k("k")), nested(vec![del(&k("k"), "")], vec![])], vec![]),
        ),
        (
            "a nested from-key delete and its parent's put",
            txn(vec![nested(vec![del(&k("a"), "\0")], vec![]), put(&k("k"))], vec![]),
        ),
        (
            "two nested txns put one key",
            txn(
                vec![nested(vec![put(&k("k"))], vec![]), nested(vec![], vec![put(&k("k"))])],
                vec![],
            ),
        ),
        (
            "a nested txn putting a key in both branches after one putting it",
            txn(
                vec![
                    nested(vec![], vec![put(&k("k"))]),
                    nested(vec![put(&k("k"))], vec![put(&k("k"))]),
                ],
                vec![],
            ),
        ),
        (
            "a nested delete before a nested put",
            txn(
                vec![nested(vec![del(&k("k"), "")], vec![]), nested(vec![put(&k("k"))], vec![])],
                vec![],
            ),
        ),
        (
            "a nested put before a nested delete",
            txn(
                vec![nested(vec![put(&k("k"))], vec![]), nested(vec![del(&k("k"), "")], vec![])],
                vec![],
            ),
        ),
        (
            "deletes reach up through two levels",
            txn(
                vec![
                    nested(vec![nested(vec![], vec![del(&k("a"), &k("c"))])], vec![]),
                    put(&k("b")),
                ],
                vec![],
            ),
        ),
        (
            "the top-level branches are apart",
            txn(vec![nested(vec![del(&k("k"), "")], vec![])], vec![put(&k("k"))]),
        ),
    ]
}

/// The answer as comparable text: success (and the branch taken, the number
/// of responses) or the error's code and message.
async fn answer(client: &mut KvClient<Channel>, request: TxnRequest) -> String {
    match client.txn(request).await {
        Ok(r) => {
            let r = r.into_inner();
            format!("ok succeeded={} responses={}", r.succeeded, r.responses.len())
        }
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

async fn connect(server: &Server) -> KvClient<Channel> {
    let url = format!("http://{}", server.endpoint());
    KvClient::new(Channel::from_shared(url).expect("url").connect().await.expect("connect"))
}

#[tokio::test]
async fn txn_validation_answers_what_real_etcd_answers() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let limit = format!("--max-txn-ops={MAX_TXN_OPS}");
    let ours = Server::start_with(Flavor::Ours, &[&limit]);
    let oracle = Server::start_with(Flavor::RealEtcd, &[&limit]);
    let (mut ours_kv, mut oracle_kv) = (connect(&ours).await, connect(&oracle).await);
    let count = cases(&|s| s.to_string()).len();
    let mut mismatches = Vec::new();
    for i in 0..count {
        let prefix = |s: &str| format!("p{i:02}/{s}");
        let (name, request) = cases(&prefix).swap_remove(i);
        let want = answer(&mut oracle_kv, request.clone()).await;
        let got = answer(&mut ours_kv, request).await;
        if got != want {
            mismatches.push(format!("{name}: etcd {want:?}, ours {got:?}"));
        }
    }
    assert!(mismatches.is_empty(), "answers differ from real etcd:\n{}", mismatches.join("\n"));
}

/// Where etcd 3.4 and 3.5 crash (an `ignore_value` put of an existing key that
/// an earlier from-key delete of the same txn removed: their applier panics),
/// we refuse the txn with `key not found` and change nothing. Never sent to
/// real etcd; the order put-then-delete, which etcd runs, is run too.
#[tokio::test]
async fn an_ignore_value_put_after_a_covering_from_key_delete_is_refused() {
    let server = Server::start();
    let mut kv = connect(&server).await;
    let mut client = server.client().await;
    client.put("a/1", "keep", None).await.expect("put");
    let before = client.get("a/1", None).await.expect("get");
    let crashing = txn(vec![del("a/", "\0"), put_ignore_value("a/1")], vec![]);
    assert_eq!(answer(&mut kv, crashing).await, "InvalidArgument: etcdserver: key not found");
    let nested_crashing = txn(
        vec![nested(vec![del("a/", "\0")], vec![]), nested(vec![put_ignore_value("a/1")], vec![])],
        vec![],
    );
    assert_eq!(
        answer(&mut kv, nested_crashing).await,
        "InvalidArgument: etcdserver: key not found"
    );
    let after = client.get("a/1", None).await.expect("get");
    let (was, is) = (&before.kvs()[0], &after.kvs()[0]);
    assert_eq!(
        (is.value(), is.mod_revision(), is.version()),
        (was.value(), was.mod_revision(), was.version()),
        "a refused txn changed nothing"
    );
    assert_eq!(
        after.header().expect("header").revision(),
        before.header().expect("header").revision()
    );
    let fine = txn(vec![put_ignore_value("a/1"), del("a/", "\0")], vec![]);
    assert_eq!(answer(&mut kv, fine).await, "ok succeeded=true responses=2");
    assert!(client.get("a/1", None).await.expect("get").kvs().is_empty());
}
