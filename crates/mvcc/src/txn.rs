//! Txn: compares, pre-checks and the ordered application of the chosen branch.
//!
//! etcd's rules (`etcdserver/apply.go`), followed here:
//! - All compares, including those of nested Txns in the chosen branches,
//!   are evaluated first, against the state before the Txn (a nested Txn's
//!   compares do not see the outer Txn's writes).
//! - A compare with a range holds only if it holds for every key of the
//!   range. If no key matches, a VALUE compare fails and any other compare is
//!   made against a zero KeyValue (version, create, mod revision and lease 0).
//! - Unless every top-level op of both branches is a Range, every Put of the
//!   chosen branches is checked before anything is applied: with
//!   `ignore_value`/`ignore_lease` the key must exist before the Txn
//!   (KeyNotFound), and a non-zero lease must exist (LeaseNotFound). Then
//!   every Range of the chosen branches must ask for a revision that is 0 or
//!   within `[compacted, current]` (Compacted / FutureRev).
//! - Additionally (where etcd would crash the member instead), an
//!   `ignore_*` Put whose key an earlier op of the same Txn deleted is
//!   refused with KeyNotFound before anything is applied.
//! - The ops run in order, all under one main revision, each seeing the
//!   effects of the previous ones. Nested responses carry a header holding
//!   only the revision (0 for a nested Txn), as etcd's do.

use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::response_op::Response;
use etcd_proto::etcdserverpb::{Compare, ResponseHeader, ResponseOp, TxnRequest, TxnResponse};
use etcd_proto::mvccpb::KeyValue;

use crate::batch::{Batch, Leases, Op};
use crate::error::MvccError;
use crate::index::KeyRange;
use crate::range;

/// Which branch each Txn of a request takes: `children` are the nested Txns
/// of the chosen branch, in order.
#[derive(Debug)]
struct Path {
    succeeded: bool,
    children: Vec<Path>,
}

/// A change recorded while simulating a Txn's ops for the pre-checks.
enum SimOp<'r> {
    Put(&'r [u8]),
    Delete(KeyRange<'r>),
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[etcd_proto::etcdserverpb::RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

fn is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(op.request, Some(Request::RequestRange(_))))
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

/// Compares one KeyValue (etcd's compareKV).
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&match c.target_union {
            Some(TargetUnion::CreateRevision(r)) => r,
            _ => 0,
        }),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&match c.target_union {
            Some(TargetUnion::ModRevision(r)) => r,
            _ => 0,
        }),
        Ok(CompareTarget::Version) => kv.version.cmp(&match c.target_union {
            Some(TargetUnion::Version(r)) => r,
            _ => 0,
        }),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&match c.target_union {
            Some(TargetUnion::Lease(r)) => r,
            _ => 0,
        }),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

impl Batch<'_> {
    fn compare(&self, c: &Compare) -> Result<bool, MvccError> {
        let at = self.rev;
        let revs =
            self.store.read_shared().index.revisions(KeyRange::new(&c.key, &c.range_end), at);
        if revs.is_empty() {
            if c.target == CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        for kv in range::fetch(self.tx(), &revs)? {
            if !compare_kv(c, &kv) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn compare_path(&self, req: &TxnRequest) -> Result<Path, MvccError> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let mut children = Vec::new();
        for op in branch(req, succeeded) {
            if let Some(Request::RequestTxn(t)) = &op.request {
                children.push(self.compare_path(t)?);
            }
        }
        Ok(Path { succeeded, children })
    }

    fn check_puts<'r>(
        &self,
        req: &'r TxnRequest,
        path: &Path,
        leases: &dyn Leases,
        sim: &mut Vec<SimOp<'r>>,
    ) -> Result<(), MvccError> {
        let mut children = path.children.iter();
        for op in branch(req, path.succeeded) {
            match &op.request {
                Some(Request::RequestTxn(t)) => {
                    let child = children.next().expect("one path per nested txn");
                    self.check_puts(t, child, leases, sim)?;
                }
                Some(Request::RequestPut(p)) => {
                    if p.ignore_value || p.ignore_lease {
                        let before = self.key_exists(&p.key);
                        if !before {
                            return Err(MvccError::KeyNotFound);
                        }
                        let now = sim
                            .iter()
                            .rev()
                            .find_map(|s| match s {
                                SimOp::Put(k) if *k == p.key.as_slice() => Some(true),
                                SimOp::Delete(r) if r.contains(&p.key) => Some(false),
                                _ => None,
                            })
                            .unwrap_or(before);
                        if !now {
                            return Err(MvccError::KeyNotFound);
                        }
                    }
                    if p.lease != 0 && !leases.exists(p.lease) {
                        return Err(MvccError::LeaseNotFound);
                    }
                    sim.push(SimOp::Put(&p.key));
                }
                Some(Request::RequestDeleteRange(d)) => {
                    sim.push(SimOp::Delete(KeyRange::new(&d.key, &d.range_end)));
                }
                Some(Request::RequestRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn check_ranges(&self, req: &TxnRequest, path: &Path) -> Result<(), MvccError> {
        let mut children = path.children.iter();
        for op in branch(req, path.succeeded) {
            match &op.request {
                Some(Request::RequestTxn(t)) => {
                    let child = children.next().expect("one path per nested txn");
                    self.check_ranges(t, child)?;
                }
                Some(Request::RequestRange(r)) => {
                    if r.revision == 0 {
                        continue;
                    }
                    if r.revision > self.rev {
                        return Err(MvccError::FutureRev);
                    }
                    if r.revision < self.compact_rev {
                        return Err(MvccError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_branch(
        &mut self,
        op: &mut Op,
        req: &TxnRequest,
        path: &Path,
        leases: &dyn Leases,
    ) -> Result<TxnResponse, MvccError> {
        let mut children = path.children.iter();
        let mut responses = Vec::new();
        for req_op in branch(req, path.succeeded) {
            let response = match &req_op.request {
                Some(Request::RequestRange(r)) => {
                    let mut resp = self.range_in(op, r)?;
                    resp.header = header(self.read_rev(op));
                    Some(Response::ResponseRange(resp))
                }
                Some(Request::RequestPut(p)) => {
                    let mut resp = self.put_in(op, p, leases)?;
                    resp.header = header(op.main);
                    Some(Response::ResponsePut(resp))
                }
                Some(Request::RequestDeleteRange(d)) => {
                    let mut resp = self.delete_in(op, d)?;
                    resp.header = header(self.read_rev(op));
                    Some(Response::ResponseDeleteRange(resp))
                }
                Some(Request::RequestTxn(t)) => {
                    let child = children.next().expect("one path per nested txn");
                    let mut resp = self.apply_branch(op, t, child, leases)?;
                    resp.header = Some(ResponseHeader::default());
                    Some(Response::ResponseTxn(resp))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse { header: None, succeeded: path.succeeded, responses })
    }

    pub(crate) fn apply_txn_request(
        &mut self,
        req: &TxnRequest,
        leases: &dyn Leases,
    ) -> Result<TxnResponse, MvccError> {
        let path = self.compare_path(req)?;
        if !is_read_only(req) {
            self.check_puts(req, &path, leases, &mut Vec::new())?;
        }
        self.check_ranges(req, &path)?;
        let mut op = self.begin_op();
        let r = self.apply_branch(&mut op, req, &path, leases);
        self.end_op(op);
        r
    }
}
