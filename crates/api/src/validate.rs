//! Request checks done before anything is proposed, with etcd's rules (its
//! `v3rpc/key.go`): a rejected request never reaches the log.

use std::collections::BTreeSet;

use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use etcd_server::ServerError;

/// Checks a Range.
pub fn check_range(r: &RangeRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    Ok(())
}

/// Checks a Put.
pub fn check_put(r: &PutRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(ServerError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(ServerError::LeaseProvided);
    }
    Ok(())
}

/// Checks a DeleteRange.
pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    Ok(())
}

/// Checks a Txn as etcd's `kvServer.Txn` does: first the whole request
/// (`checkTxnRequest`: op counts, compare keys, every op, recursively), then
/// overlapping writes in the success branch, then in the failure branch
/// (`checkIntervals`).
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), ServerError> {
    check_txn_ops(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// etcd's op count: the largest of the number of compares, of success ops and
/// of failure ops (not their sum) must not exceed the limit. A nested txn is
/// held to what its parent left: the parent's limit minus the parent's count.
/// Then the compare keys, then every success op, then every failure op.
fn check_txn_ops(r: &TxnRequest, max_txn_ops: usize) -> Result<(), ServerError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(ServerError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(ServerError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), ServerError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(r)) => check_txn_ops(r, max_txn_ops),
        // An op with no request (etcd: "empty op / nil entry").
        None => Err(ServerError::KeyNotFound),
    }
}

/// A DeleteRange as etcd's overlap check sees it: the single key `key` when
/// `end` is empty, otherwise the keys `k` with `key <= k < end`, compared as
/// plain bytes.
///
/// etcd keeps these in an interval tree whose bounds treat only an *empty*
/// bound as unbounded. A from-key delete (`end == "\0"`, also what a prefix
/// delete of `""` or of an all-`0xff` prefix sends) becomes the interval
/// `[key, "\0")`; `"\0"` is the smallest non-empty key, so that interval ends
/// below every key and covers no put. Likewise `end <= key` covers nothing.
/// So in etcd a from-key delete never conflicts with a put in the same txn,
/// and neither do we.
#[derive(Clone)]
struct Deleted {
    key: Vec<u8>,
    end: Vec<u8>,
}

impl Deleted {
    fn covers(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            return k == self.key.as_slice();
        }
        self.key.as_slice() <= k && k < self.end.as_slice()
    }
}

fn covered(dels: &[Deleted], key: &[u8]) -> bool {
    dels.iter().any(|d| d.covers(key))
}

/// etcd's `checkIntervals` over one branch's ops; returns the keys the branch
/// may put and the ranges it may delete, counting nested txns.
///
/// In etcd's order, which decides some outcomes:
/// 1. the deletes of this level are collected;
/// 2. each nested txn in turn (both of its branches checked on their own
///    first): a key its success branch puts must not be put by an earlier
///    nested txn nor be covered by this level's deletes or an *earlier*
///    nested txn's deletes; a key its failure branch puts likewise, except
///    that it may also be put by its own success branch (only one of the two
///    runs). Then its deletes join the set. So a nested delete conflicts with a
///    put of a *later* nested txn only: `[txn{put k}, txn{del k}]` passes,
///    `[txn{del k}, txn{put k}]` does not;
/// 3. each put of this level must not repeat a put so far nor be covered by
///    any delete collected (this level's and every nested txn's).
///
/// Deletes never conflict with deletes. A put with `ignore_value` or
/// `ignore_lease` that follows a from-key delete covering its key passes here
/// as in etcd; etcd 3.4 and 3.5 then crash the member applying it (their
/// applier panics on the put's "key not found" in the middle of a write txn);
/// our applier refuses such a txn before applying anything with
/// `etcdserver: key not found` (see `etcd_mvcc`'s txn checks), the error etcd
/// itself answers when that key did not exist before the txn.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Deleted>), ServerError> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => {
                Some(Deleted { key: d.key.clone(), end: d.range_end.clone() })
            }
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(txn)) = &op.request else { continue };
        let (puts_then, dels_then) = check_intervals(&txn.success)?;
        let (puts_else, dels_else) = check_intervals(&txn.failure)?;
        for key in &puts_then {
            if puts.contains(key) || covered(&dels, key) {
                return Err(ServerError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            let both_branches = puts_then.contains(key);
            if (puts.contains(key) && !both_branches) || covered(&dels, key) {
                return Err(ServerError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else { continue };
        if puts.contains(&put.key) || covered(&dels, &put.key) {
            return Err(ServerError::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use etcd_proto::etcdserverpb::Compare;

    use super::*;

    fn op(request: Request) -> RequestOp {
        RequestOp { request: Some(request) }
    }

    fn put(key: &str) -> RequestOp {
        op(Request::RequestPut(PutRequest { key: key.into(), ..Default::default() }))
    }

    fn put_with(key: &str, edit: impl FnOnce(&mut PutRequest)) -> RequestOp {
        let mut p = PutRequest { key: key.into(), ..Default::default() };
        edit(&mut p);
        op(Request::RequestPut(p))
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

    fn del_bytes(key: &[u8], end: &[u8]) -> RequestOp {
        op(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..Default::default()
        }))
    }

    fn empty_op() -> RequestOp {
        RequestOp { request: None }
    }

    fn cmp(key: &str) -> Compare {
        Compare { key: key.into(), ..Default::default() }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        op(Request::RequestTxn(txn(success, failure)))
    }

    fn puts(n: usize) -> Vec<RequestOp> {
        (0..n).map(|i| put(&format!("k{i}"))).collect()
    }

    const OK: Result<(), ServerError> = Ok(());
    const TOO_MANY: Result<(), ServerError> = Err(ServerError::TooManyOps);
    const DUP: Result<(), ServerError> = Err(ServerError::DuplicateKey);
    const EMPTY: Result<(), ServerError> = Err(ServerError::EmptyKey);
    const NOT_FOUND: Result<(), ServerError> = Err(ServerError::KeyNotFound);

    fn run(cases: Vec<(&str, TxnRequest, usize, Result<(), ServerError>)>) {
        for (name, t, max, want) in cases {
            assert_eq!(check_txn(&t, max), want, "{name}");
        }
    }

    #[test]
    fn op_counts_are_etcds() {
        let with_compares = |n: usize, success: Vec<RequestOp>| TxnRequest {
            compare: (0..n).map(|i| cmp(&format!("c{i}"))).collect(),
            success,
            failure: vec![],
        };
        run(vec![
            ("empty txn, limit 0", txn(vec![], vec![]), 0, OK),
            ("success over the limit", txn(puts(4), vec![]), 3, TOO_MANY),
            ("success at the limit", txn(puts(4), vec![]), 4, OK),
            ("failure over the limit", txn(vec![], puts(4)), 3, TOO_MANY),
            ("compares over the limit", with_compares(4, vec![]), 3, TOO_MANY),
            (
                "the largest count is compared, not the sum",
                TxnRequest {
                    compare: (0..3).map(|i| cmp(&format!("c{i}"))).collect(),
                    success: puts(3),
                    failure: vec![get("a"), get("b"), get("c")],
                },
                3,
                OK,
            ),
            (
                "a nested txn gets the limit minus its parent's count",
                txn(vec![put("x"), nested(vec![put("a")], vec![])], vec![]),
                3,
                OK,
            ),
            (
                "a nested txn over what its parent left",
                txn(vec![put("x"), nested(vec![put("a"), put("b")], vec![])], vec![]),
                3,
                TOO_MANY,
            ),
            (
                "the parent's compares count against the nested txn too",
                with_compares(3, vec![nested(vec![put("a")], vec![])]),
                3,
                TOO_MANY,
            ),
            (
                "an empty nested txn fits a used-up limit",
                with_compares(3, vec![nested(vec![], vec![])]),
                3,
                OK,
            ),
            (
                "a nested txn in the failure branch",
                txn(vec![], vec![nested(vec![], puts(3))]),
                3,
                TOO_MANY,
            ),
            (
                "limits shrink at every level",
                txn(vec![nested(vec![nested(puts(2), vec![])], vec![])], vec![]),
                4,
                OK,
            ),
            (
                "limits shrink at every level (over)",
                txn(vec![nested(vec![nested(puts(3), vec![])], vec![])], vec![]),
                4,
                TOO_MANY,
            ),
            (
                "the count is checked before the compare keys",
                TxnRequest { compare: vec![cmp("")], success: puts(2), failure: vec![] },
                1,
                TOO_MANY,
            ),
        ]);
    }

    #[test]
    fn every_op_is_checked_before_the_overlaps() {
        run(vec![
            (
                "empty compare key",
                TxnRequest { compare: vec![cmp("")], ..Default::default() },
                8,
                EMPTY,
            ),
            (
                "empty compare key in a nested txn",
                txn(
                    vec![op(Request::RequestTxn(TxnRequest {
                        compare: vec![cmp("")],
                        ..Default::default()
                    }))],
                    vec![],
                ),
                8,
                EMPTY,
            ),
            ("empty op", txn(vec![empty_op()], vec![]), 8, NOT_FOUND),
            (
                "empty op in a nested txn",
                txn(vec![], vec![nested(vec![empty_op()], vec![])]),
                8,
                NOT_FOUND,
            ),
            ("empty put key", txn(vec![put("")], vec![]), 8, EMPTY),
            ("empty range key", txn(vec![get("")], vec![]), 8, EMPTY),
            ("empty delete key", txn(vec![del("", "z")], vec![]), 8, EMPTY),
            (
                "ignore_value with a value",
                txn(
                    vec![put_with("a", |p| (p.ignore_value, p.value) = (true, b"v".to_vec()))],
                    vec![],
                ),
                8,
                Err(ServerError::ValueProvided),
            ),
            (
                "ignore_lease with a lease",
                txn(vec![put_with("a", |p| (p.ignore_lease, p.lease) = (true, 7))], vec![]),
                8,
                Err(ServerError::LeaseProvided),
            ),
            (
                "ops before overlaps, in the same branch",
                txn(vec![put("a"), put("a"), put("")], vec![]),
                8,
                EMPTY,
            ),
            (
                "ops of both branches before overlaps",
                txn(vec![put("a"), put("a")], vec![empty_op()]),
                8,
                NOT_FOUND,
            ),
            ("success ops before failure ops", txn(vec![put("")], vec![empty_op()]), 8, EMPTY),
        ]);
    }

    #[test]
    fn overlapping_writes_in_one_branch() {
        let one = |ops: Vec<RequestOp>| txn(ops, vec![]);
        run(vec![
            ("a key put twice", one(vec![put("a"), put("a")]), 8, DUP),
            ("distinct keys", one(vec![put("a"), put("b")]), 8, OK),
            ("one key in both branches", txn(vec![put("a")], vec![put("a")]), 8, OK),
            ("delete and put in different branches", txn(vec![del("a", "")], vec![put("a")]), 8, OK),
            ("a deleted key put", one(vec![del("a", ""), put("a")]), 8, DUP),
            ("a put key deleted (order does not matter)", one(vec![put("a"), del("a", "")]), 8, DUP),
            ("a single-key delete is one key", one(vec![del("a", ""), put("a\0")]), 8, OK),
            ("deletes never conflict", one(vec![del("a", ""), del("a", ""), del("a", "z")]), 8, OK),
            ("reads never conflict", one(vec![get("a"), put("a"), get("a")]), 8, OK),
            ("a range covers its start", one(vec![del("a", "c"), put("a")]), 8, DUP),
            ("a range covers its inside", one(vec![del("a", "c"), put("b")]), 8, DUP),
            ("a range excludes its end", one(vec![del("a", "c"), put("c")]), 8, OK),
            ("a range excludes keys below", one(vec![del("b", "c"), put("a")]), 8, OK),
            ("a prefix range", one(vec![del("a", "b"), put("ab")]), 8, DUP),
            ("an inverted range covers nothing", one(vec![del("c", "a"), put("b")]), 8, OK),
            ("an empty range covers nothing", one(vec![del("a", "a"), put("a")]), 8, OK),
            ("a from-key delete covers nothing", one(vec![del("a", "\0"), put("b")]), 8, OK),
            ("... not even its start", one(vec![del("a", "\0"), put("a")]), 8, OK),
            ("a delete of everything covers nothing", one(vec![del("\0", "\0"), put("a")]), 8, OK),
            (
                "a prefix delete of 0xff (range end \\0) covers nothing",
                one(vec![del_bytes(b"\xff", b"\0"), put_with("x", |p| p.key = b"\xff1".to_vec())]),
                8,
                OK,
            ),
            (
                "an ignore_value put after a covering from-key delete passes (the applier refuses it)",
                one(vec![del("a", "\0"), put_with("b", |p| p.ignore_value = true)]),
                8,
                OK,
            ),
            ("a range end of \\0\\0 is an ordinary bound", one(vec![del("\0", "\0\0"), put("\0")]), 8, DUP),
        ]);
    }

    #[test]
    fn overlapping_writes_with_nested_txns() {
        let one = |ops: Vec<RequestOp>| txn(ops, vec![]);
        run(vec![
            (
                "both branches of a nested txn put one key",
                one(vec![nested(vec![put("k")], vec![put("k")])]),
                8,
                OK,
            ),
            (
                "a nested put and a put of its parent",
                one(vec![nested(vec![put("k")], vec![]), put("k")]),
                8,
                DUP,
            ),
            (
                "... from the failure branch",
                one(vec![nested(vec![], vec![put("k")]), put("k")]),
                8,
                DUP,
            ),
            (
                "... from both branches",
                one(vec![put("k"), nested(vec![put("k")], vec![put("k")])]),
                8,
                DUP,
            ),
            (
                "a nested put in a range its parent deletes",
                one(vec![del("a", "c"), nested(vec![put("b")], vec![])]),
                8,
                DUP,
            ),
            (
                "a nested put of a key its parent deletes",
                one(vec![nested(vec![], vec![put("b")]), del("b", "")]),
                8,
                DUP,
            ),
            (
                "a nested put under a from-key delete of its parent",
                one(vec![del("a", "\0"), nested(vec![put("b")], vec![])]),
                8,
                OK,
            ),
            (
                "a nested delete and a put of its parent",
                one(vec![nested(vec![del("k", "")], vec![]), put("k")]),
                8,
                DUP,
            ),
            ("... the put first", one(vec![put("k"), nested(vec![], vec![del("a", "z")])]), 8, DUP),
            (
                "a nested from-key delete and a put of its parent",
                one(vec![nested(vec![del("a", "\0")], vec![]), put("k")]),
                8,
                OK,
            ),
            (
                "two nested txns put one key",
                one(vec![nested(vec![put("k")], vec![]), nested(vec![put("k")], vec![])]),
                8,
                DUP,
            ),
            (
                "an earlier nested success and a later nested failure",
                one(vec![nested(vec![put("k")], vec![]), nested(vec![], vec![put("k")])]),
                8,
                DUP,
            ),
            (
                "a later nested txn putting the key in both branches",
                one(vec![nested(vec![], vec![put("k")]), nested(vec![put("k")], vec![put("k")])]),
                8,
                DUP,
            ),
            (
                "an earlier nested txn putting the key in both branches",
                one(vec![nested(vec![put("k")], vec![put("k")]), nested(vec![], vec![put("k")])]),
                8,
                DUP,
            ),
            (
                "a nested delete before a nested put",
                one(vec![nested(vec![del("k", "")], vec![]), nested(vec![put("k")], vec![])]),
                8,
                DUP,
            ),
            (
                "a nested put before a nested delete passes (etcd's order)",
                one(vec![nested(vec![put("k")], vec![]), nested(vec![del("k", "")], vec![])]),
                8,
                OK,
            ),
            (
                "a nested txn's own delete and put in different branches",
                one(vec![nested(vec![del("k", "")], vec![put("k")])]),
                8,
                OK,
            ),
            (
                "a conflict inside a nested branch",
                one(vec![nested(vec![put("k"), del("k", "")], vec![])]),
                8,
                DUP,
            ),
            (
                "a conflict inside a nested failure branch",
                one(vec![nested(vec![], vec![put("k"), put("k")])]),
                8,
                DUP,
            ),
            (
                "deletes reach up through every level",
                one(vec![nested(vec![nested(vec![], vec![del("a", "c")])], vec![]), put("b")]),
                8,
                DUP,
            ),
            (
                "puts reach up through every level",
                one(vec![del("k", ""), nested(vec![nested(vec![put("k")], vec![])], vec![])]),
                8,
                DUP,
            ),
            (
                "the top-level branches are checked apart",
                txn(vec![nested(vec![put("k")], vec![])], vec![put("k")]),
                8,
                OK,
            ),
        ]);
    }
}
