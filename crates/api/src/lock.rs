//! The Lock service (`v3lockpb.Lock`), etcd's server-side distributed mutex.
//! It is the client recipe run inside the server, on the KV and Lease services:
//! the owner key is `<name>/<lease id in hex>` attached to the caller's lease
//! (a fresh 60 s lease when none is given, as etcd); the lock is held by the key
//! with the lowest create revision under `<name>/`, so a caller waits until every
//! key created before its own is deleted (unlocked, or its lease expired).

use std::sync::Arc;

use etcd_daemon::watch_hub::KeyRange;
use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::kv_server::Kv;
use etcd_proto::etcdserverpb::lease_server::Lease;
use etcd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_proto::etcdserverpb::request_op::Request as Op;
use etcd_proto::etcdserverpb::response_op::Response as OpResponse;
use etcd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest,
};
use etcd_proto::v3lockpb::lock_server::Lock;
use etcd_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::kv::KvService;
use crate::lease::LeaseService;

/// The TTL etcd gives the session lease of a Lock call that brings none.
const DEFAULT_LEASE_TTL: i64 = 60;

/// etcd's Lock service over one member.
pub struct LockService {
    server: Arc<EtcdServer>,
    kv: KvService,
    lease: LeaseService,
}

impl LockService {
    /// Serves Lock requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> LockService {
        LockService {
            kv: KvService::new(server.clone()),
            lease: LeaseService::new(server.clone()),
            server,
        }
    }

    /// The live key under `prefix` with the highest create revision below
    /// `below`, and the header of that read.
    async fn last_created_before(
        &self,
        prefix: &[u8],
        below: i64,
    ) -> Result<(Option<Vec<u8>>, Option<ResponseHeader>), Status> {
        let range = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            max_create_revision: below - 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            limit: 1,
            ..Default::default()
        };
        let response = self.kv.range(Request::new(range)).await?.into_inner();
        Ok((response.kvs.into_iter().next().map(|kv| kv.key), response.header))
    }

    /// Waits until every key under `prefix` created before `revision` is gone;
    /// answers the header of the read that found none.
    async fn wait_deletes(
        &self,
        prefix: &[u8],
        revision: i64,
    ) -> Result<Option<ResponseHeader>, Status> {
        loop {
            let (key, header) = self.last_created_before(prefix, revision).await?;
            let Some(key) = key else { return Ok(header) };
            // Registered before the read below, so its deletion cannot be missed.
            let interest = self.server.watch_hub().register(KeyRange::Single(key.clone()));
            let still = RangeRequest { key, count_only: true, ..Default::default() };
            if self.kv.range(Request::new(still)).await?.into_inner().count > 0 {
                interest.flagged().await;
            }
        }
    }
}

/// The end of the range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Deletes the owner key if the Lock call is abandoned before it acquires the
/// lock (the client gave up), as etcd's mutex does.
struct ReleaseUnlessAcquired {
    kv: Option<KvService>,
    key: Vec<u8>,
}

impl Drop for ReleaseUnlessAcquired {
    fn drop(&mut self) {
        if let Some(kv) = self.kv.take() {
            let key = std::mem::take(&mut self.key);
            tokio::spawn(async move {
                let delete = DeleteRangeRequest { key, ..Default::default() };
                let _ = kv.delete_range(Request::new(delete)).await;
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let LockRequest { name, mut lease } = request.into_inner();
        if lease == 0 {
            let grant = LeaseGrantRequest { ttl: DEFAULT_LEASE_TTL, id: 0 };
            lease = self.lease.lease_grant(Request::new(grant)).await?.into_inner().id;
        }
        let mut prefix = name;
        prefix.push(b'/');
        let mut key = prefix.clone();
        key.extend(format!("{lease:x}").bytes());
        let owner = RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: prefix.clone(),
                range_end: prefix_end(&prefix),
                sort_order: SortOrder::Ascend as i32,
                sort_target: SortTarget::Create as i32,
                limit: 1,
                ..Default::default()
            })),
        };
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Default::default()
            }],
            success: vec![
                RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: key.clone(),
                        lease,
                        ..Default::default()
                    })),
                },
                owner.clone(),
            ],
            failure: vec![
                RequestOp {
                    request: Some(Op::RequestRange(RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })),
                },
                owner,
            ],
        };
        let response = self.kv.txn(Request::new(txn)).await?.into_inner();
        let mut guard =
            ReleaseUnlessAcquired { kv: Some(KvService::new(self.server.clone())), key };
        let ranges: Vec<_> = response
            .responses
            .into_iter()
            .filter_map(|r| match r.response {
                Some(OpResponse::ResponseRange(range)) => Some(range),
                _ => None,
            })
            .collect();
        let my_revision = if response.succeeded {
            response.header.as_ref().map_or(0, |h| h.revision)
        } else {
            ranges.first().and_then(|r| r.kvs.first()).map_or(0, |kv| kv.create_revision)
        };
        let owner_revision =
            ranges.last().and_then(|r| r.kvs.first()).map_or(my_revision, |kv| kv.create_revision);
        let header = if owner_revision == my_revision {
            response.header
        } else {
            self.wait_deletes(&prefix, my_revision).await?
        };
        let key = std::mem::take(&mut guard.key);
        guard.kv = None;
        Ok(Response::new(LockResponse { header, key }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let delete = DeleteRangeRequest { key: request.into_inner().key, ..Default::default() };
        let response = self.kv.delete_range(Request::new(delete)).await?.into_inner();
        Ok(Response::new(UnlockResponse { header: response.header }))
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
