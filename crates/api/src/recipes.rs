//! etcd's client-side concurrency recipes run inside the server, for the Lock
//! and Election services: an owner key `<name>/<lease id in hex>` attached to
//! the caller's lease (a fresh 60 s lease when none is given, as etcd's
//! session), ownership by lowest create revision under `<name>/`, and waiting
//! until every key created earlier is deleted.
//!
//! etcd runs these recipes on an in-process client, so every KV and Lease
//! error reaches the caller as its text with code `Unknown`
//! ([`crate::status::relayed`]); the methods here return errors that way.

use std::sync::Arc;

use etcd_daemon::Caller;
use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::kv_server::Kv;
use etcd_proto::etcdserverpb::lease_server::Lease;
use etcd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_proto::etcdserverpb::request_op::Request as Op;
use etcd_proto::etcdserverpb::response_op::Response as OpResponse;
use etcd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use etcd_proto::mvccpb::KeyValue;
use etcd_server::watch::KeyRange;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::status::relayed;

/// The TTL etcd gives a session lease when the caller brings none.
const SESSION_TTL: i64 = 60;

/// The end of the range holding every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// What creating (or finding) an owner key found.
pub(crate) struct Claim {
    /// The owner key.
    pub key: Vec<u8>,
    /// The lease it is attached to.
    pub lease: i64,
    /// Its create revision: its place in line.
    pub revision: i64,
    /// Its value when it already existed (a second call with the same lease).
    pub existing_value: Option<Vec<u8>>,
    /// Whether it is first in line now.
    pub first: bool,
    /// The header of the transaction.
    pub header: Option<ResponseHeader>,
}

/// The KV and Lease services the recipes run on, and the caller they act for.
#[derive(Clone)]
pub(crate) struct Recipes {
    pub server: Arc<EtcdServer>,
    services: Arc<(KvService, LeaseService)>,
    /// The auth token of the Lock or Election call being served: every
    /// request a recipe makes carries it, so a recipe may do exactly what its
    /// caller may (etcd's recipes run on a client that forwards the caller's
    /// token).
    token: Option<MetadataValue<Ascii>>,
    caller: Option<Caller>,
}

impl Recipes {
    pub fn new(server: Arc<EtcdServer>) -> Recipes {
        let services = (KvService::new(server.clone()), LeaseService::new(server.clone()));
        Recipes { services: Arc::new(services), server, token: None, caller: None }
    }

    /// These recipes acting as the caller of `request`.
    pub fn for_caller<T>(&self, request: &Request<T>) -> Recipes {
        let token = crate::auth::token(request.metadata()).and_then(|t| t.parse().ok());
        Recipes { token, caller: Some(crate::auth::caller(request)), ..self.clone() }
    }

    /// `message` as a request from the caller.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        if let Some(caller) = &self.caller {
            request.extensions_mut().insert(caller.clone());
        }
        request
    }

    /// `lease`, or a fresh session lease when it is 0 (etcd's
    /// `concurrency.NewSession`; a lease that does not exist is not checked
    /// here but fails the first put that names it).
    pub async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = LeaseGrantRequest { ttl: SESSION_TTL, id: 0 };
        Ok(self.services.1.lease_grant(self.request(grant)).await.map_err(relayed)?.into_inner().id)
    }

    /// A Txn as the recipes' client sees it.
    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(self.services.0.txn(self.request(txn)).await.map_err(relayed)?.into_inner())
    }

    /// A Range as the recipes' client sees it.
    pub async fn range(&self, range: RangeRequest) -> Result<RangeResponse, Status> {
        Ok(self.services.0.range(self.request(range)).await.map_err(relayed)?.into_inner())
    }

    /// A DeleteRange as the recipes' client sees it.
    pub async fn delete(&self, delete: DeleteRangeRequest) -> Result<DeleteRangeResponse, Status> {
        Ok(self.services.0.delete_range(self.request(delete)).await.map_err(relayed)?.into_inner())
    }

    /// The first-created live key under `prefix`, if any, and the read's header.
    pub async fn first_under(
        &self,
        prefix: &[u8],
    ) -> Result<(Option<KeyValue>, Option<ResponseHeader>), Status> {
        let response = self.range(first_created(prefix)).await?;
        Ok((response.kvs.into_iter().next(), response.header))
    }

    /// Creates this lease's owner key under `name/` holding `value`, or finds it
    /// if it already exists, in one transaction that also reads who is first.
    pub async fn claim(&self, name: &[u8], lease: i64, value: Vec<u8>) -> Result<Claim, Status> {
        let lease = self.session_lease(lease).await?;
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        let mut key = prefix.clone();
        key.extend(format!("{lease:x}").bytes());
        let op = |request: Op| RequestOp { request: Some(request) };
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Default::default()
            }],
            success: vec![
                op(Op::RequestPut(PutRequest {
                    key: key.clone(),
                    value,
                    lease,
                    ..Default::default()
                })),
                op(Op::RequestRange(first_created(&prefix))),
            ],
            failure: vec![
                op(Op::RequestRange(RangeRequest { key: key.clone(), ..Default::default() })),
                op(Op::RequestRange(first_created(&prefix))),
            ],
        };
        let response = self.txn(txn).await?;
        let mut ranges = response.responses.into_iter().filter_map(|r| match r.response {
            Some(OpResponse::ResponseRange(range)) => Some(range),
            _ => None,
        });
        let (revision, existing_value, first_range) = if response.succeeded {
            let revision = response.header.as_ref().map_or(0, |h| h.revision);
            (revision, None, ranges.next())
        } else {
            let mine = ranges.next().and_then(|r| r.kvs.into_iter().next());
            let revision = mine.as_ref().map_or(0, |kv| kv.create_revision);
            (revision, mine.map(|kv| kv.value), ranges.next())
        };
        let first_revision = first_range
            .and_then(|r| r.kvs.into_iter().next())
            .map_or(revision, |kv| kv.create_revision);
        Ok(Claim {
            key,
            lease,
            revision,
            existing_value,
            first: first_revision == revision,
            header: response.header,
        })
    }

    /// Waits until every key under `prefix` created before `revision` is gone;
    /// answers the header of the read that found none.
    pub async fn wait_deletes(
        &self,
        prefix: &[u8],
        revision: i64,
    ) -> Result<Option<ResponseHeader>, Status> {
        loop {
            let range = RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                max_create_revision: revision - 1,
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                limit: 1,
                ..Default::default()
            };
            let response = self.range(range).await?;
            let Some(kv) = response.kvs.into_iter().next() else { return Ok(response.header) };
            self.wait_until_changed(KeyRange::Single(kv.key.clone()), &kv).await?;
        }
    }

    /// Waits until `kv` (as read) was changed or deleted, or for any change in
    /// `range` after it. Registered before re-reading, so no change is missed.
    pub async fn wait_until_changed(&self, range: KeyRange, kv: &KeyValue) -> Result<(), Status> {
        let interest = self.server.watch_hub().register(range);
        let again = RangeRequest { key: kv.key.clone(), ..Default::default() };
        let now = self.range(again).await?;
        let unchanged = now.kvs.first().is_some_and(|k| k.mod_revision == kv.mod_revision);
        if unchanged {
            interest.flagged().await;
        }
        Ok(())
    }

    /// Deletes `key` unless [`Release::keep`] is called first (a wait the client
    /// abandoned must not leave its key in line, as etcd's recipes ensure).
    pub fn release_on_drop(&self, key: Vec<u8>) -> Release {
        Release { recipes: Some(self.clone()), key }
    }
}

/// See [`Recipes::release_on_drop`].
pub(crate) struct Release {
    recipes: Option<Recipes>,
    key: Vec<u8>,
}

impl Release {
    /// The wait succeeded: the key stays.
    pub fn keep(mut self) {
        self.recipes = None;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(recipes) = self.recipes.take() {
            let key = std::mem::take(&mut self.key);
            tokio::spawn(async move {
                let delete = DeleteRangeRequest { key, ..Default::default() };
                let _ = recipes.delete(delete).await;
            });
        }
    }
}

/// A read of the first-created key under `prefix`.
fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"lock/"), b"lock0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
