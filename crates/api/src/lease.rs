//! The Lease service: Grant and Revoke through Raft; KeepAlive and TimeToLive
//! answered by the leader's lessor (a follower forwards them); Leases by this
//! member's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use etcd_daemon::{EtcdServer, RenewNow};
use etcd_proto::etcdserverpb::lease_server::Lease;
use etcd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use etcd_server::{Applied, Response as AppliedResponse, ServerError};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::status::to_status;

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
        Ok(Response::new(Box::pin(KeepAlives::new(self.server.clone(), request.into_inner()))))
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

/// A renewal that has to wait (forwarded to the leader, a new leader applying
/// what was committed, a checkpoint to clear): the lease and its answer.
type Waiting = Pin<Box<dyn Future<Output = (i64, Result<i64, ServerError>)> + Send>>;

/// Renews leases as the requests on `inbound` ask, one answer per request in
/// order; ends after the first failure or when `inbound` ends (as etcd's
/// keep-alive stream does). Shared by the gRPC and JSON gateway routes.
///
/// The answers are made where they are read, by the task sending them (the
/// HTTP/2 stream's): a renewal the leader can answer at once is a lock and a
/// map update, and a task of its own with a channel between them cost two
/// wake-ups per keep-alive. Only a renewal that must wait is boxed and awaited.
pub(crate) struct KeepAlives<S> {
    server: Arc<EtcdServer>,
    inbound: S,
    waiting: Option<Waiting>,
    ended: bool,
}

impl<S> KeepAlives<S> {
    pub(crate) fn new(server: Arc<EtcdServer>, inbound: S) -> KeepAlives<S> {
        KeepAlives { server, inbound, waiting: None, ended: false }
    }

    fn answer(
        &mut self,
        id: i64,
        renewed: Result<i64, ServerError>,
    ) -> Poll<Option<Result<LeaseKeepAliveResponse, Status>>> {
        let server = &self.server;
        let reply = renewed.map(|ttl| LeaseKeepAliveResponse {
            header: Some(server.header(server.kv().current_revision())),
            id,
            ttl,
        });
        self.ended = reply.is_err();
        Poll::Ready(Some(reply.map_err(|e| to_status(&e))))
    }
}

impl<S> Stream for KeepAlives<S>
where
    S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
{
    type Item = Result<LeaseKeepAliveResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(waiting) = this.waiting.as_mut() {
            let Poll::Ready((id, renewed)) = waiting.as_mut().poll(cx) else {
                return Poll::Pending;
            };
            this.waiting = None;
            return this.answer(id, renewed);
        }
        let id = match Pin::new(&mut this.inbound).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(request))) => request.id,
            Poll::Ready(None | Some(Err(_))) => {
                this.ended = true;
                return Poll::Ready(None);
            }
        };
        let waiting: Waiting = match this.server.lease_renew_now(id) {
            RenewNow::Answered(renewed) => return this.answer(id, renewed),
            RenewNow::Clear(ttl) => {
                let server = this.server.clone();
                Box::pin(async move { (id, server.lease_renew_cleared(id, ttl).await) })
            }
            RenewNow::Wait => {
                let server = this.server.clone();
                Box::pin(async move { (id, server.lease_renew(id).await) })
            }
        };
        this.waiting = Some(waiting);
        Pin::new(this).poll_next(cx)
    }
}
