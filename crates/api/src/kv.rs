//! The KV service: check, propose (or read), map the error, fill the header.

use std::sync::Arc;

use etcd_auth::AuthInfo;
use etcd_daemon::EtcdServer;
use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::kv_server::Kv;
use etcd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, TxnRequest, TxnResponse,
};
use etcd_server::{Applied, Response, ServerError};
use tonic::{Request, Status};

use crate::auth::{caller, credentials};
use crate::status::to_status;
use crate::validate;
use crate::BoxStream;

/// etcd's KV service over one member.
pub struct KvService {
    server: Arc<EtcdServer>,
}

impl KvService {
    /// Serves KV requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> KvService {
        KvService { server }
    }

    async fn propose(
        &self,
        request: InternalRaftRequest,
        info: &AuthInfo,
    ) -> Result<(Response, i64), Status> {
        let Applied { result, revision, .. } =
            self.server.propose_as(request, info).await.map_err(|e| to_status(&e))?;
        let response = result.map_err(|e| to_status(&e))?;
        Ok((response, revision))
    }
}

/// etcd's estimate of what a put adds to the backend (key, value, bookkeeping).
fn put_cost(put: &PutRequest) -> u64 {
    const KV_OVERHEAD_BYTES: u64 = 256;
    KV_OVERHEAD_BYTES + put.key.len() as u64 + put.value.len() as u64
}

/// The cost of a txn's more expensive branch, counting nested txns.
fn txn_cost(txn: &TxnRequest) -> u64 {
    use etcd_proto::etcdserverpb::request_op::Request as Op;
    let branch = |ops: &[etcd_proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Op::RequestPut(put)) => put_cost(put),
                Some(Op::RequestTxn(nested)) => txn_cost(nested),
                _ => 0,
            })
            .sum()
    };
    branch(&txn.success).max(branch(&txn.failure))
}

fn unexpected(response: &Response) -> Status {
    tracing::error!(?response, "applied result does not match its request");
    to_status(&ServerError::NotCapable)
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range_stream(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<tonic::Response<BoxStream<RangeStreamResponse>>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        check_range(&self.server, &request)?;
        if let Some(why) = etcd_daemon::range_stream::unstreamable(&request) {
            return Err(Status::unimplemented(why));
        }
        let mut stream =
            self.server.range_stream(request, &caller).await.map_err(|e| to_status(&e))?;
        // One chunk in flight, read on a blocking thread: the client's pace is
        // the server's, and no more than a chunk is held.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || {
            while let Some(chunk) = server.next_chunk(&mut stream) {
                let message = chunk
                    .map(|range| RangeStreamResponse { range_response: Some(range) })
                    .map_err(|e| to_status(&e));
                if tx.blocking_send(message).is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<tonic::Response<RangeResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        check_range(&self.server, &request)?;
        let response = self.server.range_as(&request, &caller).await.map_err(|e| to_status(&e))?;
        Ok(tonic::Response::new(response))
    }

    async fn put(
        &self,
        request: Request<PutRequest>,
    ) -> Result<tonic::Response<PutResponse>, Status> {
        let info = credentials(&self.server, &request).await?;
        let put = request.into_inner();
        validate::check_put(&put).map_err(|e| to_status(&e))?;
        self.server.check_quota(put_cost(&put)).await.map_err(|e| to_status(&e))?;
        let request = InternalRaftRequest { put: Some(put), ..Default::default() };
        match self.propose(request, &info).await? {
            (Response::Put(mut response), revision) => {
                response.header = Some(self.server.header(revision));
                Ok(tonic::Response::new(response))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<tonic::Response<DeleteRangeResponse>, Status> {
        let info = credentials(&self.server, &request).await?;
        let delete = request.into_inner();
        validate::check_delete(&delete).map_err(|e| to_status(&e))?;
        let request = InternalRaftRequest { delete_range: Some(delete), ..Default::default() };
        match self.propose(request, &info).await? {
            (Response::DeleteRange(mut response), revision) => {
                response.header = Some(self.server.header(revision));
                Ok(tonic::Response::new(response))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn txn(
        &self,
        request: Request<TxnRequest>,
    ) -> Result<tonic::Response<TxnResponse>, Status> {
        let info = credentials(&self.server, &request).await?;
        let txn = request.into_inner();
        validate::check_txn(&txn, self.server.config().max_txn_ops).map_err(|e| to_status(&e))?;
        let cost = txn_cost(&txn);
        if cost > 0 {
            self.server.check_quota(cost).await.map_err(|e| to_status(&e))?;
        }
        let request = InternalRaftRequest { txn: Some(txn), ..Default::default() };
        match self.propose(request, &info).await? {
            (Response::Txn(mut response), revision) => {
                // Only the top-level header is filled here: the responses inside a
                // txn carry etcd's revision-only headers, set by the store.
                response.header = Some(self.server.header(revision));
                Ok(tonic::Response::new(response))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<tonic::Response<CompactionResponse>, Status> {
        let info = credentials(&self.server, &request).await?;
        let compaction = request.into_inner();
        let physical = compaction.physical;
        let request = InternalRaftRequest { compaction: Some(compaction), ..Default::default() };
        match self.propose(request, &info).await? {
            (Response::Compact(mut response), revision) => {
                if physical {
                    self.server.compaction_removed().await.map_err(|e| to_status(&e))?;
                }
                response.header = Some(self.server.header(revision));
                Ok(tonic::Response::new(response))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }
}

/// What every Range (unary, streamed, over the raw route) checks first: a
/// learner serves only serializable reads, then etcd's request rules.
pub(crate) fn check_range(server: &EtcdServer, request: &RangeRequest) -> Result<(), Status> {
    if !request.serializable {
        server.check_not_learner().map_err(|e| to_status(&e))?;
    }
    validate::check_range(request).map_err(|e| to_status(&e))
}
