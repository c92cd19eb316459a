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
//! as a failed call is. The leader's half is `lease_peer::Renewals`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use etcd_proto::etcdrs::lease_peer_client::LeasePeerClient;
use etcd_proto::etcdrs::RenewalAnswer;
use etcd_proto::etcdserverpb::LeaseKeepAliveRequest;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Request;

/// Metadata key naming the forwarding member, so the receiver's fault switch
/// can drop requests from members it is partitioned from.
pub(crate) const FROM_METADATA: &str = "etcd-rs-from";

/// Names the forwarding member `from` in `request`'s metadata.
pub(crate) fn mark_sender<M>(request: &mut Request<M>, from: u64) {
    if let Ok(value) = format!("{from:x}").parse() {
        request.metadata_mut().insert(FROM_METADATA, value);
    }
}

/// The stream this member forwards renewals on, if one is open.
#[derive(Debug, Default)]
pub(crate) struct Forwarder {
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    open: Option<Open>,
    /// Streams opened so far, for [`Open::generation`].
    opened: u64,
}

/// An open stream to one leader.
#[derive(Debug)]
struct Open {
    leader: u64,
    /// Tells a stream apart from the one that replaced it.
    generation: u64,
    requests: mpsc::UnboundedSender<LeaseKeepAliveRequest>,
    answers: Arc<Mutex<Waiting>>,
}

/// A stream's unanswered renewals (the lease and its answer's sender), oldest first.
#[derive(Debug, Default)]
struct Waiting {
    senders: VecDeque<(i64, oneshot::Sender<RenewalAnswer>)>,
    /// The stream ended: nothing sent now would be answered.
    ended: bool,
}

impl Forwarder {
    /// Sends a renewal of `id` to `leader` (over `channel` if a stream must be
    /// opened); the receiver of its answer and the stream's generation.
    pub(crate) fn send(
        &self,
        from: u64,
        leader: u64,
        channel: Channel,
        id: i64,
    ) -> (oneshot::Receiver<RenewalAnswer>, u64) {
        let (tx, rx) = oneshot::channel();
        let mut slot = self.slot.lock().expect("forwarder lock");
        if slot.open.as_ref().is_none_or(|o| o.leader != leader || o.requests.is_closed()) {
            slot.opened += 1;
            slot.open = Some(Open::start(from, leader, slot.opened, channel));
        }
        let stream = slot.open.as_ref().expect("stream just opened");
        let mut waiting = stream.answers.lock().expect("answers lock");
        if !waiting.ended && stream.requests.send(LeaseKeepAliveRequest { id }).is_ok() {
            waiting.senders.push_back((id, tx));
        }
        (rx, stream.generation)
    }

    /// Drops the stream of `generation`, if it is still the one in use.
    pub(crate) fn drop_stream(&self, generation: u64) {
        let mut slot = self.slot.lock().expect("forwarder lock");
        if slot.open.as_ref().is_some_and(|o| o.generation == generation) {
            slot.open = None;
        }
    }
}

impl Open {
    /// Opens a stream to `leader`: a task makes the call and hands the answers
    /// out until the stream ends, then drops the senders still waiting.
    fn start(from: u64, leader: u64, generation: u64, channel: Channel) -> Open {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let answers: Arc<Mutex<Waiting>> = Arc::default();
        let waiting = answers.clone();
        tokio::spawn(async move {
            let mut request = Request::new(UnboundedReceiverStream::new(outgoing));
            mark_sender(&mut request, from);
            match LeasePeerClient::new(channel).renew_stream(request).await {
                Ok(response) => {
                    let mut incoming = response.into_inner();
                    while let Some(Ok(answer)) = incoming.next().await {
                        let oldest = waiting.lock().expect("answers lock").senders.pop_front();
                        match oldest {
                            Some((id, tx)) if id == answer.id => {
                                let _ = tx.send(answer);
                            }
                            _ => {
                                tracing::warn!(leader = %format!("{leader:x}"), lease = answer.id, "the leader's answer is not the oldest renewal waiting; dropping the stream");
                                break;
                            }
                        }
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
