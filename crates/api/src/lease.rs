//! The Lease service: Grant and Revoke through Raft; KeepAlive and TimeToLive
//! answered by the leader's lessor (a follower forwards them); Leases by this
//! member's.

use std::sync::Arc;

use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::lease_server::Lease;
use etcd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use etcd_server::{Applied, Response as AppliedResponse, ServerError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::status::to_status;

/// KeepAlive responses queued per stream at most.
const KEEP_ALIVE_QUEUE_MAX: usize = 64;

use crate::BoxStream;

/// etcd's Lease service over one member.
pub struct LeaseService {
    server: Arc<EtcdServer>,
}

impl LeaseService {
    /// Serves Lease requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> LeaseService {
        LeaseService { server }
    }

    fn applied(
        &self,
        outcome: Result<Applied, ServerError>,
    ) -> Result<(AppliedResponse, i64), Status> {
        let Applied { result, revision, .. } = outcome.map_err(|e| to_status(&e))?;
        Ok((result.map_err(|e| to_status(&e))?, revision))
    }

    fn current_header(&self) -> etcd_proto::etcdserverpb::ResponseHeader {
        self.server.header(self.server.kv().current_revision())
    }
}

fn unexpected() -> Status {
    to_status(&ServerError::NotCapable)
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let info = crate::auth::credentials(&self.server, &request).await?;
        match self.applied(self.server.lease_grant(request.into_inner(), &info).await)? {
            (AppliedResponse::LeaseGrant(mut response), revision) => {
                response.header = Some(self.server.header(revision));
                Ok(Response::new(response))
            }
            _ => Err(unexpected()),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let info = crate::auth::credentials(&self.server, &request).await?;
        match self.applied(self.server.lease_revoke(request.into_inner().id, &info).await)? {
            (AppliedResponse::LeaseRevoke(mut response), revision) => {
                response.header = Some(self.server.header(revision));
                Ok(Response::new(response))
            }
            _ => Err(unexpected()),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<LeaseKeepAliveResponse>>, Status> {
        let rx = keep_alive(self.server.clone(), request.into_inner());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let caller = crate::auth::caller(&request);
        let request = request.into_inner();
        let reader = if request.keys {
            self.server.lease_keys_reader(&caller).await.map_err(|e| to_status(&e))?
        } else {
            None
        };
        let answer = self.server.lease_time_to_live(request.id, request.keys).await;
        if let (Some(info), Ok(Some(response))) = (&reader, &answer) {
            self.server
                .check_lease_keys_readable(info, &response.keys)
                .map_err(|e| to_status(&e))?;
        }
        let header = Some(self.current_header());
        let response = match answer.map_err(|e| to_status(&e))? {
            Some(response) => LeaseTimeToLiveResponse { header, ..response },
            // etcd answers an unknown lease with TTL -1 rather than an error.
            None => {
                LeaseTimeToLiveResponse { header, id: request.id, ttl: -1, ..Default::default() }
            }
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self.server.lease_ids().into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse { header: Some(self.current_header()), leases }))
    }
}

/// Renews leases as the requests on `inbound` ask, answering each on the
/// returned channel; ends at the first failure or when `inbound` ends (as
/// etcd's keep-alive stream does). Shared by the gRPC and JSON gateway routes.
pub(crate) fn keep_alive(
    server: Arc<EtcdServer>,
    mut inbound: impl Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin + Send + 'static,
) -> mpsc::Receiver<Result<LeaseKeepAliveResponse, Status>> {
    let (tx, rx) = mpsc::channel(KEEP_ALIVE_QUEUE_MAX);
    tokio::spawn(async move {
        while let Some(Ok(request)) = inbound.next().await {
            let reply = server.lease_renew(request.id).await.map(|ttl| LeaseKeepAliveResponse {
                header: Some(server.header(server.kv().current_revision())),
                id: request.id,
                ttl,
            });
            let failed = reply.is_err();
            if tx.send(reply.map_err(|e| to_status(&e))).await.is_err() || failed {
                break;
            }
        }
    });
    rx
}
