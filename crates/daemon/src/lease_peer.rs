//! Lease requests that only the leader can answer. The leader's lessor is the
//! only one that tracks deadlines, so a KeepAlive or TimeToLive that reaches a
//! follower is forwarded to the leader over the peer listener (the `LeasePeer`
//! service, etcd forwards these over its peer HTTP handler; keep-alives share
//! one stream per leader, `lease_forward.rs`), and retried on
//! whichever member leads next until the request timeout: a client's keep-alive
//! stream on a follower survives a leader change.
//!
//! A member that knows of no leader answers `etcdserver: no leader` at once
//! instead of waiting for one (etcd 3.4 waits up to the request timeout): the
//! client then retries on another endpoint, where a quorum may well be serving.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_proto::etcdrs::lease_peer_server::{LeasePeer, LeasePeerServer};
use etcd_proto::etcdrs::RenewalAnswer;
use etcd_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use etcd_server::ServerError;
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::lease_forward::{mark_sender, FROM_METADATA};
use crate::server::EtcdServer;

/// Pause between attempts while the leader is unreachable or changing.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// What [`EtcdServer::lease_renew_now`] came to.
#[derive(Debug)]
pub enum RenewNow {
    /// The TTL (0 for a lease that does not exist), or the failure.
    Answered(Result<i64, ServerError>),
    /// Renewed to this TTL; [`EtcdServer::lease_renew_cleared`] finishes it.
    Clear(i64),
    /// Await [`EtcdServer::lease_renew`].
    Wait,
}

/// One attempt at a leader-only request.
pub(crate) enum Attempt<T> {
    /// The answer (or an error the client must see).
    Done(Result<T, ServerError>),
    /// The member asked is not (or no longer) the leader, or could not be
    /// reached: ask again, the leader this member knows of next.
    Retry,
}

impl EtcdServer {
    /// Runs a leader-only request: `local` when this member leads, otherwise
    /// `remote` on a channel to the leader. Retries until the request timeout
    /// while the leader changes or cannot be reached.
    pub(crate) async fn on_leader<T, L, LF, R, RF>(
        &self,
        local: L,
        remote: R,
    ) -> Result<T, ServerError>
    where
        L: Fn() -> LF,
        LF: Future<Output = Attempt<T>>,
        R: Fn(u64, Channel, Duration) -> RF,
        RF: Future<Output = Attempt<T>>,
    {
        let deadline = Instant::now() + self.config().request_timeout();
        loop {
            if self.is_stopped() {
                return Err(ServerError::Stopped);
            }
            let leader = self.status().leader_id;
            let attempt = if leader == 0 {
                return Err(ServerError::NoLeader);
            } else if leader == self.member_id() {
                local().await
            } else {
                match self.transport().channel(leader) {
                    Ok(channel) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        remote(leader, channel, left).await
                    }
                    Err(reason) => {
                        tracing::debug!(leader = %format!("{leader:x}"), %reason, "cannot forward a lease request to the leader");
                        Attempt::Retry
                    }
                }
            };
            if let Attempt::Done(result) = attempt {
                return result;
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(ServerError::Timeout);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// A request to forward to the leader, marked with this member's ID and
    /// bounded by what is left of the caller's deadline.
    pub(crate) fn forwarded<M>(&self, message: M, left: Duration) -> Request<M> {
        let mut request = Request::new(message);
        request.set_timeout(left.max(Duration::from_millis(1)));
        mark_sender(&mut request, self.member_id());
        request
    }

    /// The peer-listener routes this member serves besides Raft's.
    pub fn peer_routes(self: &Arc<Self>) -> tonic::service::Routes {
        tonic::service::Routes::new(LeasePeerServer::new(LeasePeerService { server: self.clone() }))
            .add_service(self.peer_check_service())
    }
}

/// The forwarding member a request names, if any.
fn sender<M>(request: &Request<M>) -> Option<u64> {
    request
        .metadata()
        .get(FROM_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// How a forwarded request's answer maps back: a missing lease is final,
/// everything else (not the leader, unreachable, timed out) is retried.
pub(crate) fn remote_attempt<T>(outcome: Result<Response<T>, Status>) -> Attempt<T> {
    match outcome {
        Ok(response) => Attempt::Done(Ok(response.into_inner())),
        Err(status) if status.code() == Code::NotFound => {
            Attempt::Done(Err(ServerError::LeaseNotFound))
        }
        Err(status) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "forwarded lease request failed; retrying");
            Attempt::Retry
        }
    }
}

/// The leader's answers on a follower's renewal stream.
type RenewalAnswers = Pin<Box<dyn Stream<Item = Result<RenewalAnswer, Status>> + Send>>;

/// The leader's side of [`EtcdServer::on_leader`].
struct LeasePeerService {
    server: Arc<EtcdServer>,
}

impl LeasePeerService {
    fn check_sender<M>(&self, request: &Request<M>) -> Result<(), Status> {
        match sender(request) {
            Some(from) if self.server.transport().is_blocked(from) => {
                Err(Status::unavailable(format!("traffic from {from:x} is blocked")))
            }
            _ => Ok(()),
        }
    }
}

fn leader_status<T>(attempt: Attempt<T>) -> Result<Response<T>, Status> {
    match attempt {
        Attempt::Done(Ok(answer)) => Ok(Response::new(answer)),
        Attempt::Done(Err(ServerError::LeaseNotFound)) => {
            Err(Status::not_found(format!("etcdserver: {}", ServerError::LeaseNotFound)))
        }
        Attempt::Done(Err(err)) => Err(Status::unavailable(format!("etcdserver: {err}"))),
        Attempt::Retry => {
            Err(Status::failed_precondition(format!("etcdserver: {}", ServerError::NotLeader)))
        }
    }
}

#[tonic::async_trait]
impl LeasePeer for LeasePeerService {
    async fn renew(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        self.check_sender(&request)?;
        let id = request.into_inner().id;
        let attempt = self.server.renew_here(id).await;
        leader_status(match attempt {
            Attempt::Done(Ok(ttl)) => {
                Attempt::Done(Ok(LeaseKeepAliveResponse { header: None, id, ttl }))
            }
            Attempt::Done(Err(err)) => Attempt::Done(Err(err)),
            Attempt::Retry => Attempt::Retry,
        })
    }

    async fn renew_stream(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<RenewalAnswers>, Status> {
        self.check_sender(&request)?;
        let from = sender(&request);
        let renewals = Renewals::new(self.server.clone(), from, request.into_inner());
        Ok(Response::new(Box::pin(renewals)))
    }

    async fn time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.check_sender(&request)?;
        let request = request.into_inner();
        leader_status(self.server.time_to_live_here(request.id, request.keys).await)
    }
}

impl EtcdServer {
    /// One attempt at renewing `id` through `leader`'s stream, waiting at most `left`.
    pub(crate) async fn renew_forwarded(
        &self,
        leader: u64,
        channel: Channel,
        id: i64,
        left: Duration,
    ) -> Attempt<i64> {
        let (answer, generation) = self.forwarder.send(self.member_id(), leader, channel, id);
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(RenewalAnswer { retry: false, ttl, .. })) => Attempt::Done(Ok(ttl)),
            Ok(Ok(RenewalAnswer { retry: true, .. })) => Attempt::Retry,
            // The stream ended, or the leader did not answer in time.
            Ok(Err(_)) | Err(_) => {
                self.forwarder.drop_stream(generation);
                Attempt::Retry
            }
        }
    }
}

/// An answer the leader is still working on.
type Pending = Pin<Box<dyn Future<Output = RenewalAnswer> + Send>>;

/// The leader's side of a follower's renewal stream: each renewal answered in
/// order, as [`EtcdServer::renew_here`] answers it (anything but an answer, including this member no longer leading,
/// asks the follower to retry). Answered where read, as client keep-alives are.
pub(crate) struct Renewals {
    server: Arc<EtcdServer>,
    from: Option<u64>,
    inbound: Streaming<LeaseKeepAliveRequest>,
    pending: Option<Pending>,
}

impl Renewals {
    pub(crate) fn new(
        server: Arc<EtcdServer>,
        from: Option<u64>,
        inbound: Streaming<LeaseKeepAliveRequest>,
    ) -> Renewals {
        Renewals { server, from, inbound, pending: None }
    }
}

fn answered(id: i64, ttl: i64) -> RenewalAnswer {
    RenewalAnswer { id, ttl, retry: false }
}

fn retry(id: i64) -> RenewalAnswer {
    RenewalAnswer { id, ttl: 0, retry: true }
}

impl Stream for Renewals {
    type Item = Result<RenewalAnswer, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(pending) = this.pending.as_mut() {
            let Poll::Ready(answer) = pending.as_mut().poll(cx) else {
                return Poll::Pending;
            };
            this.pending = None;
            return Poll::Ready(Some(Ok(answer)));
        }
        let id = match Pin::new(&mut this.inbound).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(request))) => request.id,
            Poll::Ready(None | Some(Err(_))) => return Poll::Ready(None),
        };
        // The test fault switch may cut the sender off while its stream is open.
        if this.from.is_some_and(|from| this.server.transport().is_blocked(from)) {
            return Poll::Ready(Some(Ok(retry(id))));
        }
        let pending: Pending = match this.server.lease_renew_now(id) {
            RenewNow::Answered(Ok(ttl)) => return Poll::Ready(Some(Ok(answered(id, ttl)))),
            RenewNow::Answered(Err(_)) => return Poll::Ready(Some(Ok(retry(id)))),
            RenewNow::Clear(ttl) => {
                let server = this.server.clone();
                Box::pin(async move {
                    match server.lease_renew_cleared(id, ttl).await {
                        Ok(ttl) => answered(id, ttl),
                        Err(_) => retry(id),
                    }
                })
            }
            RenewNow::Wait => {
                let server = this.server.clone();
                Box::pin(async move {
                    match server.renew_here(id).await {
                        Attempt::Done(Ok(ttl)) => answered(id, ttl),
                        Attempt::Done(Err(_)) | Attempt::Retry => retry(id),
                    }
                })
            }
        };
        this.pending = Some(pending);
        Pin::new(this).poll_next(cx)
    }
}
