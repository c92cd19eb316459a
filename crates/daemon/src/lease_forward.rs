//! Keep-alives a follower forwards to the leader, over one stream per leader
//! (`LeasePeer.RenewStream`) instead of one call each: a renewal is then a
//! message each way on an open HTTP/2 stream, not a stream of its own with
//! its headers, its deadline and its task on both members.
//!
//! The leader answers a stream's renewals in the order they came, so the
//! follower keeps the senders of the answers in that order and hands each
//! answer to the oldest. Sending a renewal and queueing its sender happen
//! under one lock, so the two orders are the same. A stream that ends, fails
//! or leaves a renewal unanswered past its deadline is dropped: its waiting
//! renewals are retried (on a new stream, to whichever member leads then),
//! as a failed call is.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_proto::etcdrs::lease_peer_client::LeasePeerClient;
use etcd_proto::etcdrs::RenewalAnswer;
use etcd_proto::etcdserverpb::LeaseKeepAliveRequest;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use crate::lease::RenewNow;
use crate::lease_peer::Attempt;
use crate::server::EtcdServer;

/// The stream this member forwards renewals on, if one is open.
#[derive(Debug, Default)]
pub(crate) struct Forwarder {
    open: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    leader: u64,
    /// Tells a stream apart from the one that replaced it.
    generation: u64,
    requests: mpsc::UnboundedSender<LeaseKeepAliveRequest>,
    answers: Arc<Mutex<Waiting>>,
}

/// The senders of a stream's unanswered renewals, oldest first.
#[derive(Debug, Default)]
struct Waiting {
    senders: VecDeque<oneshot::Sender<RenewalAnswer>>,
    /// The stream ended: nothing sent now would be answered.
    ended: bool,
}

/// Streams opened so far, for [`Open::generation`].
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Forwarder {
    /// Sends a renewal of `id` to `leader` (over `channel` if a stream must be
    /// opened); the receiver of its answer and the stream's generation.
    fn send(
        &self,
        from: u64,
        leader: u64,
        channel: Channel,
        id: i64,
    ) -> (oneshot::Receiver<RenewalAnswer>, u64) {
        let (tx, rx) = oneshot::channel();
        let mut open = self.open.lock().expect("forwarder lock");
        if open.as_ref().is_none_or(|o| o.leader != leader || o.requests.is_closed()) {
            *open = Some(Open::start(from, leader, channel));
        }
        let stream = open.as_ref().expect("stream just opened");
        let mut waiting = stream.answers.lock().expect("answers lock");
        if !waiting.ended && stream.requests.send(LeaseKeepAliveRequest { id }).is_ok() {
            waiting.senders.push_back(tx);
        }
        (rx, stream.generation)
    }

    /// Drops the stream of `generation`, if it is still the one in use.
    fn drop_stream(&self, generation: u64) {
        let mut open = self.open.lock().expect("forwarder lock");
        if open.as_ref().is_some_and(|o| o.generation == generation) {
            *open = None;
        }
    }
}

impl Open {
    /// Opens a stream to `leader`: a task makes the call and hands the answers
    /// out until the stream ends, then drops the senders still waiting.
    fn start(from: u64, leader: u64, channel: Channel) -> Open {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let answers: Arc<Mutex<Waiting>> = Arc::default();
        let waiting = answers.clone();
        let generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tokio::spawn(async move {
            let mut request = Request::new(UnboundedReceiverStream::new(outgoing));
            crate::lease_peer::mark_sender(&mut request, from);
            match LeasePeerClient::new(channel).renew_stream(request).await {
                Ok(response) => {
                    let mut incoming = response.into_inner();
                    while let Some(Ok(answer)) = incoming.next().await {
                        let Some(tx) = waiting.lock().expect("answers lock").senders.pop_front()
                        else {
                            tracing::warn!(leader = %format!("{leader:x}"), "the leader answered a renewal that was never sent; dropping the stream");
                            break;
                        };
                        let _ = tx.send(answer);
                    }
                }
                Err(status) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "cannot open the renewal stream to the leader");
                }
            }
            // Dropped senders: their renewals are retried.
            let mut waiting = waiting.lock().expect("answers lock");
            waiting.ended = true;
            waiting.senders.clear();
        });
        Open { leader, generation, requests, answers }
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
/// order, as [`EtcdServer::renew_here`] answers it (a lease that does not exist
/// has TTL 0; anything but an answer, including this member no longer leading,
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
        let server = this.server.clone();
        this.pending = match this.server.lease_renew_now(id) {
            RenewNow::Answered(Ok(ttl)) => return Poll::Ready(Some(Ok(answered(id, ttl)))),
            RenewNow::Answered(Err(_)) => return Poll::Ready(Some(Ok(retry(id)))),
            RenewNow::Clear(ttl) => Some(Box::pin(async move {
                match server.lease_renew_cleared(id, ttl).await {
                    Ok(ttl) => answered(id, ttl),
                    Err(_) => retry(id),
                }
            })),
            RenewNow::Wait => Some(Box::pin(async move {
                match server.renew_here(id).await {
                    Attempt::Done(Ok(ttl)) => answered(id, ttl),
                    Attempt::Done(Err(etcd_server::ServerError::LeaseNotFound)) => answered(id, 0),
                    Attempt::Done(Err(_)) | Attempt::Retry => retry(id),
                }
            })),
        };
        Pin::new(this).poll_next(cx)
    }
}
