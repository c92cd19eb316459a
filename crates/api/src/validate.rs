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

/// Checks a Txn: op counts, every op, then overlapping writes.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), ServerError> {
    check_txn_ops(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

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
        None => Err(ServerError::KeyNotFound),
    }
}

/// A deleted key range: `[key, end)`, a single key when `end` is empty, unbounded
/// above when `end` is `"\0"`.
#[derive(Clone)]
struct Deleted {
    key: Vec<u8>,
    end: Vec<u8>,
}

impl Deleted {
    fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            return k == self.key.as_slice();
        }
        k >= self.key.as_slice() && (self.end == [0] || k < self.end.as_slice())
    }
}

fn overlaps(dels: &[Deleted], key: &[u8]) -> bool {
    dels.iter().any(|d| d.contains(key))
}

/// etcd's rule: within one branch, no key may be put twice or be both put and
/// deleted, counting nested txns (whose two branches may put the same key, since
/// only one of them runs). Returns the branch's puts and deletes.
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
            if puts.contains(key) || overlaps(&dels, key) {
                return Err(ServerError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            let both_branches = puts_then.contains(key);
            if (puts.contains(key) && !both_branches) || overlaps(&dels, key) {
                return Err(ServerError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else { continue };
        if puts.contains(&put.key) || overlaps(&dels, &put.key) {
            return Err(ServerError::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    fn del(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure }
    }

    #[test]
    fn duplicate_puts_in_one_branch_are_rejected() {
        let t = txn(vec![put("a"), put("a")], vec![]);
        assert_eq!(check_txn(&t, 128), Err(ServerError::DuplicateKey));
        assert_eq!(check_txn(&txn(vec![put("a")], vec![put("a")]), 128), Ok(()));
    }

    #[test]
    fn put_inside_a_deleted_range_is_rejected() {
        let t = txn(vec![del("a", "c"), put("b")], vec![]);
        assert_eq!(check_txn(&t, 128), Err(ServerError::DuplicateKey));
        assert_eq!(check_txn(&txn(vec![del("a", "c"), put("c")], vec![]), 128), Ok(()));
    }

    #[test]
    fn nested_branches_may_put_the_same_key_but_not_collide_with_the_parent() {
        let nested =
            RequestOp { request: Some(Request::RequestTxn(txn(vec![put("k")], vec![put("k")]))) };
        assert_eq!(check_txn(&txn(vec![nested.clone()], vec![]), 128), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![nested, put("k")], vec![]), 128),
            Err(ServerError::DuplicateKey)
        );
    }

    #[test]
    fn too_many_ops_and_empty_keys_are_rejected() {
        let ops: Vec<RequestOp> = (0..4).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check_txn(&txn(ops.clone(), vec![]), 3), Err(ServerError::TooManyOps));
        assert_eq!(check_txn(&txn(ops, vec![]), 4), Ok(()));
        assert_eq!(check_txn(&txn(vec![put("")], vec![]), 4), Err(ServerError::EmptyKey));
        let empty_op = RequestOp { request: None };
        assert_eq!(check_txn(&txn(vec![empty_op], vec![]), 4), Err(ServerError::KeyNotFound));
    }
}
