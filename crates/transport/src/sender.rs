//! One sender per remote peer: a bounded queue filled by `PeerTransport::send`
//! and a task that drains it into one long-lived gRPC stream, a batch per
//! wake-up, reconnecting with exponential backoff when the stream breaks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_proto::etcdrs::raft_transport_client::RaftTransportClient;
use etcd_proto::etcdrs::{RaftBatch, RaftMessage};
use prost::Message as _;
use raft::eraftpb::Message;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::dial::{ClientTlsConfig, Connector};

use crate::wire::message_to_wire;
use crate::{Shared, MAX_MESSAGE_SIZE_BYTES};

/// Messages waiting for one peer; beyond this, `send` drops (Raft retransmits).
pub const QUEUE_CAPACITY_MESSAGES: usize = 4096;
/// After a failure, only the newest this many queued messages are kept.
const RETAINED_AFTER_FAILURE_MESSAGES: usize = 64;
/// A batch stops growing past this (estimated) size, unless it holds a single message.
const BATCH_SOFT_LIMIT_BYTES: usize = 4 * 1024 * 1024;
/// Batches handed to the stream but not yet written to the connection.
const STREAM_BUFFER_BATCHES: usize = 4;
/// Headroom in a batch for the envelope around the messages.
const BATCH_ENVELOPE_BYTES: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// etcd's peer streams redial every 100 ms; a longer backoff would keep a
/// restarted member out of the cluster for that much longer.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// A stream that stayed up at least this long resets the backoff when it ends.
const STABLE_STREAM: Duration = Duration::from_secs(1);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The state shared between `send` (producer) and the peer's task (consumer).
pub(crate) struct PeerQueue {
    id: u64,
    state: Mutex<QueueState>,
    wake: Notify,
    /// False once a connect or stream failed, true again once connected.
    healthy: AtomicBool,
    /// Since when the current connection is up (etcd's `ActiveSince`); none
    /// while it is down or before the first connect.
    connected_since: Mutex<Option<Instant>>,
    /// An empty batch is due: the peer refuses it if this member was removed,
    /// which tells a member that has nothing else to send (see `probe`).
    probe: AtomicBool,
}

struct QueueState {
    messages: VecDeque<Message>,
    urls: Vec<String>,
    /// Set by `set_peer` with new URLs; the task reconnects to them.
    urls_changed: bool,
}

impl PeerQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn connected_since(&self) -> Option<Instant> {
        *self.connected_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_connected(&self, up: bool) {
        let mut since = self.connected_since.lock().unwrap_or_else(|e| e.into_inner());
        match up {
            true => {
                since.get_or_insert_with(Instant::now);
            }
            false => *since = None,
        }
    }

    /// Queues what fits and returns how many messages were dropped. Never blocks
    /// beyond the short critical section.
    pub(crate) fn push(&self, messages: impl IntoIterator<Item = Message>) -> u64 {
        let mut dropped = 0u64;
        let mut queued = false;
        {
            let mut state = self.lock();
            for m in messages {
                if state.messages.len() < QUEUE_CAPACITY_MESSAGES {
                    state.messages.push_back(m);
                    queued = true;
                } else {
                    dropped += 1;
                }
            }
            debug_assert!(state.messages.len() <= QUEUE_CAPACITY_MESSAGES);
        }
        if queued {
            self.wake.notify_one();
        }
        dropped
    }

    pub(crate) fn set_urls(&self, urls: Vec<String>) {
        let mut state = self.lock();
        if state.urls != urls {
            state.urls = urls;
            state.urls_changed = true;
            drop(state);
            self.wake.notify_one();
        }
    }

    /// The peer's current URLs.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.lock().urls.clone()
    }

    fn take_urls(&self) -> Vec<String> {
        let mut state = self.lock();
        state.urls_changed = false;
        state.urls.clone()
    }

    fn urls_changed(&self) -> bool {
        self.lock().urls_changed
    }

    /// Waits until there is something to send (or new URLs to connect to).
    async fn wait_for_work(&self) {
        loop {
            {
                let state = self.lock();
                if !state.messages.is_empty() || self.probe.load(Ordering::Acquire) {
                    return;
                }
            }
            self.wake.notified().await;
        }
    }

    /// Asks for an empty batch to be sent (see [`PeerQueue::probe`]).
    pub(crate) fn request_probe(&self) {
        self.probe.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Pops the next batch: everything queued, cut at `BATCH_SOFT_LIMIT_BYTES`.
    fn pop_batch(&self) -> Vec<Message> {
        let mut state = self.lock();
        let mut batch = Vec::new();
        let mut size_bytes = 0usize;
        while let Some(m) = state.messages.front() {
            let estimate = estimated_size_bytes(m);
            if !batch.is_empty() && size_bytes + estimate > BATCH_SOFT_LIMIT_BYTES {
                break;
            }
            size_bytes += estimate;
            batch.extend(state.messages.pop_front());
        }
        batch
    }

    /// Drops all but the newest `keep` messages; returns how many were dropped.
    fn trim(&self, keep: usize) -> u64 {
        let mut state = self.lock();
        let excess = state.messages.len().saturating_sub(keep);
        state.messages.drain(..excess);
        excess as u64
    }

    fn clear(&self) -> u64 {
        self.trim(0)
    }
}

/// An upper bound on a message's encoded size, without encoding it.
fn estimated_size_bytes(m: &Message) -> usize {
    const MESSAGE_OVERHEAD_BYTES: usize = 128;
    const ENTRY_OVERHEAD_BYTES: usize = 64;
    let entries: usize =
        m.entries.iter().map(|e| e.data.len() + e.context.len() + ENTRY_OVERHEAD_BYTES).sum();
    let snapshot = m.snapshot.as_ref().map_or(0, |s| {
        let conf = s.metadata.as_ref().and_then(|md| md.conf_state.as_ref()).map_or(0, |c| {
            10 * (c.voters.len()
                + c.learners.len()
                + c.voters_outgoing.len()
                + c.learners_next.len())
        });
        s.data.len() + conf + MESSAGE_OVERHEAD_BYTES
    });
    MESSAGE_OVERHEAD_BYTES + m.context.len() + entries + snapshot
}

/// The handle `PeerTransport` keeps per peer; dropping it stops the task.
pub(crate) struct PeerHandle {
    pub(crate) queue: Arc<PeerQueue>,
    task: JoinHandle<()>,
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerHandle {
    /// Creates the queue and spawns the peer's task on `runtime`.
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        id: u64,
        urls: Vec<String>,
        runtime: &tokio::runtime::Handle,
    ) -> PeerHandle {
        let queue = Arc::new(PeerQueue {
            id,
            state: Mutex::new(QueueState { messages: VecDeque::new(), urls, urls_changed: false }),
            wake: Notify::new(),
            healthy: AtomicBool::new(true),
            connected_since: Mutex::new(None),
            probe: AtomicBool::new(false),
        });
        let task = runtime.spawn(run(shared, Arc::clone(&queue)));
        PeerHandle { queue, task }
    }
}

/// How a stream to the peer ended.
enum StreamEnd {
    /// `set_peer` changed the URLs: reconnect at once.
    UrlsChanged,
    Failed(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Unknown,
    Connected,
    Disconnected,
}

/// The peer's task: connect at once, and keep trying with backoff until the
/// first connection (so a starting member learns which peers it reaches, as
/// etcd's streams do, even when it starts before them); then pump batches, back
/// off on failure and reconnect when there is something to send.
async fn run(shared: Arc<Shared>, queue: Arc<PeerQueue>) {
    let peer = queue.id;
    let mut backoff = BACKOFF_MIN;
    let mut link = LinkState::Unknown;
    let mut ever_connected = false;
    loop {
        if ever_connected {
            queue.wait_for_work().await;
        }
        let urls = queue.take_urls();
        let failure = match connect(&urls, shared.client_tls().as_ref()).await {
            Ok((channel, url)) => {
                if link != LinkState::Connected {
                    tracing::info!(peer = %format_args!("{peer:x}"), %url, "connected to peer");
                    link = LinkState::Connected;
                }
                queue.healthy.store(true, Ordering::Relaxed);
                queue.set_connected(true);
                ever_connected = true;
                let started = Instant::now();
                let end = pump(&shared, &queue, channel).await;
                if started.elapsed() >= STABLE_STREAM {
                    backoff = BACKOFF_MIN;
                }
                match end {
                    StreamEnd::UrlsChanged => {
                        tracing::info!(peer = %format_args!("{peer:x}"), "peer URLs changed, reconnecting");
                        link = LinkState::Unknown;
                        continue;
                    }
                    StreamEnd::Failed(reason) => reason,
                }
            }
            Err(reason) => reason,
        };
        queue.healthy.store(false, Ordering::Relaxed);
        queue.set_connected(false);
        shared.mark_unreachable(peer);
        shared.count_dropped(queue.trim(RETAINED_AFTER_FAILURE_MESSAGES));
        if link != LinkState::Disconnected {
            tracing::warn!(
                peer = %format_args!("{peer:x}"),
                error = %failure,
                "peer unreachable, retrying with backoff"
            );
            link = LinkState::Disconnected;
        } else {
            tracing::debug!(peer = %format_args!("{peer:x}"), error = %failure, "peer still unreachable");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The connection settings of every peer channel: short connect timeout, no
/// Nagle delay, HTTP/2 keep-alives that notice a dead peer within seconds.
pub(crate) fn tune(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

/// Connects to the first URL that answers, trying them in order.
pub(crate) async fn connect(
    urls: &[String],
    tls: Option<&ClientTlsConfig>,
) -> Result<(Channel, String), String> {
    let mut last_error = String::from("peer has no URLs");
    for url in urls {
        let dialed = Connector::new(std::slice::from_ref(url), tls, CONNECT_TIMEOUT)
            .and_then(|connector| Ok((connector.endpoint()?, connector)));
        let (endpoint, connector) = match dialed {
            Ok(dialed) => dialed,
            Err(e) => {
                last_error = e;
                continue;
            }
        };
        match tune(endpoint).connect_with_connector(connector).await {
            Ok(channel) => return Ok((channel, url.clone())),
            Err(e) => last_error = format!("connect to {url}: {}", error_chain(&e)),
        }
    }
    Err(last_error)
}

/// Aborts the spawned RPC when the stream is abandoned.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens one stream on `channel` and feeds it batches until it breaks or the
/// URLs change.
async fn pump(shared: &Shared, queue: &PeerQueue, channel: Channel) -> StreamEnd {
    let (tx, rx) = mpsc::channel::<RaftBatch>(STREAM_BUFFER_BATCHES);
    let mut client = RaftTransportClient::new(channel)
        .max_encoding_message_size(MAX_MESSAGE_SIZE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_SIZE_BYTES);
    let mut call =
        AbortOnDrop(tokio::spawn(async move { client.stream(ReceiverStream::new(rx)).await }));
    loop {
        if queue.urls_changed() {
            return StreamEnd::UrlsChanged;
        }
        if shared.is_blocked(queue.id) {
            shared.count_dropped(queue.clear());
        }
        let messages = queue.pop_batch();
        if messages.is_empty() && queue.probe.swap(false, Ordering::AcqRel) {
            let probe = RaftBatch {
                cluster_id: shared.cluster_id,
                from: shared.local_id,
                to: queue.id,
                messages: Vec::new(),
            };
            tokio::select! {
                result = &mut call.0 => return StreamEnd::Failed(describe_end(shared, queue.id, result)),
                permit = tx.reserve() => match permit {
                    Ok(permit) => permit.send(probe),
                    Err(_) => return StreamEnd::Failed("stream closed".to_owned()),
                },
            }
            continue;
        }
        if messages.is_empty() {
            tokio::select! {
                result = &mut call.0 => return StreamEnd::Failed(describe_end(shared, queue.id, result)),
                () = queue.wake.notified() => continue,
            }
        }
        let Some(batch) = build_batch(shared, queue.id, messages) else {
            continue;
        };
        tokio::select! {
            result = &mut call.0 => return StreamEnd::Failed(describe_end(shared, queue.id, result)),
            permit = tx.reserve() => match permit {
                Ok(permit) => permit.send(batch),
                Err(_) => return StreamEnd::Failed("stream closed".to_owned()),
            },
        }
    }
}

/// Converts queued messages to the wire envelope, dropping any single message
/// too large to ever be accepted.
fn build_batch(shared: &Shared, to: u64, messages: Vec<Message>) -> Option<RaftBatch> {
    let mut wire: Vec<RaftMessage> = Vec::with_capacity(messages.len());
    for m in &messages {
        let w = message_to_wire(m);
        if w.encoded_len() + BATCH_ENVELOPE_BYTES > MAX_MESSAGE_SIZE_BYTES {
            shared.count_dropped(1);
            tracing::warn!(
                peer = %format_args!("{to:x}"),
                size_bytes = w.encoded_len(),
                limit_bytes = MAX_MESSAGE_SIZE_BYTES,
                "dropping raft message larger than the peer message limit"
            );
            continue;
        }
        wire.push(w);
    }
    if wire.is_empty() {
        return None;
    }
    Some(RaftBatch { cluster_id: shared.cluster_id, from: shared.local_id, to, messages: wire })
}

fn describe_end(
    shared: &Shared,
    peer: u64,
    result: Result<
        Result<tonic::Response<etcd_proto::etcdrs::StreamAck>, tonic::Status>,
        tokio::task::JoinError,
    >,
) -> String {
    match result {
        Ok(Ok(_)) => "peer closed the stream".to_owned(),
        Ok(Err(status)) => {
            if status.code() == tonic::Code::PermissionDenied
                && status.message() == crate::REMOVED_MEMBER
            {
                shared.removed_by_peer(peer);
            }
            format!("stream failed: {:?}: {}", status.code(), status.message())
        }
        Err(e) => format!("stream task failed: {e}"),
    }
}

/// Formats an error with its sources (tonic's transport errors hide the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
