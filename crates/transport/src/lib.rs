//! The peer transport: moves Raft messages between cluster members over gRPC on
//! the peer URLs (etcd's port 2380). It owns the wire envelope (our own prost
//! mirror of raft-rs's `eraftpb`, so nothing from the network is ever decoded by
//! protobuf 2), one bounded queue and one long-lived stream per remote peer with
//! batching, the cluster-ID check on every inbound batch, reconnects with
//! exponential backoff, reporting unreachable peers back to the raft loop, and a
//! fault switch that partitions members for tests.
//!
//! It must not know about the WAL, storage or applying entries: it only carries
//! `raft::eraftpb::Message`s from the raft loop's `Ready` to a peer's inbound
//! channel, dropping (never blocking) when a peer is slow or gone, because Raft
//! retransmits.

mod dial;
mod receiver;
mod sender;
mod snapshot;
pub mod wire;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use dial::ClientTlsConfig;
use etcd_proto::etcdrs::raft_transport_client::RaftTransportClient;
use etcd_proto::etcdrs::raft_transport_server::RaftTransportServer;
use etcd_proto::etcdrs::{Member, MembersRequest};
use etcd_tls::Listener;
use raft::eraftpb::Message;
use tokio::sync::{mpsc, watch};

pub use receiver::PeerService;
pub use sender::QUEUE_CAPACITY_MESSAGES;
pub use wire::WireError;

use sender::PeerHandle;

/// Largest gRPC message (one `RaftBatch`) sent or accepted: room for a snapshot
/// carried whole until chunked snapshot transfer exists.
pub const MAX_MESSAGE_SIZE_BYTES: usize = 64 * 1024 * 1024;

const SERVER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const SERVER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// State both directions read: identity, the fault switch, and counters.
/// Where the peer service reads the membership it tells joining members.
pub type MembersSource = Arc<dyn Fn() -> Vec<Member> + Send + Sync>;

/// What runs when a peer says this member was removed.
pub type RemovedHook = Arc<dyn Fn() + Send + Sync>;

/// The refusal a removed member's stream gets (etcd's words), with
/// `PermissionDenied`; the sender that sees it knows its member was removed.
pub const REMOVED_MEMBER: &str = "the member has been permanently removed from the cluster";

pub(crate) struct Shared {
    pub(crate) local_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) members: RwLock<Option<MembersSource>>,
    /// Where received snapshots are written (none: snapshots are refused).
    pub(crate) snapshot_dir: RwLock<Option<std::path::PathBuf>>,
    blocked: RwLock<BTreeSet<u64>>,
    /// Members removed from the cluster: their streams are refused with
    /// [`REMOVED_MEMBER`] (etcd answers 410 Gone), which stops them.
    removed: RwLock<BTreeSet<u64>>,
    /// Called when a peer says this member was removed.
    on_removed: RwLock<Option<RemovedHook>>,
    unreachable: Mutex<BTreeSet<u64>>,
    dropped_messages: AtomicU64,
    /// How to reach `https://` peers (none: only `http://` peers are reachable).
    pub(crate) client_tls: RwLock<Option<ClientTlsConfig>>,
}

impl Shared {
    pub(crate) fn client_tls(&self) -> Option<ClientTlsConfig> {
        self.client_tls.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Shared {
    pub(crate) fn is_blocked(&self, id: u64) -> bool {
        let blocked = self.blocked.read().unwrap_or_else(PoisonError::into_inner);
        !blocked.is_empty() && blocked.contains(&id)
    }

    pub(crate) fn is_removed(&self, id: u64) -> bool {
        self.removed.read().unwrap_or_else(PoisonError::into_inner).contains(&id)
    }

    /// A peer refused this member's stream because it was removed.
    pub(crate) fn removed_by_peer(&self, peer: u64) {
        tracing::warn!(
            peer = %format_args!("{peer:x}"),
            "{REMOVED_MEMBER}: the peer refuses this member's messages"
        );
        let hook = self.on_removed.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    pub(crate) fn mark_unreachable(&self, id: u64) {
        self.unreachable.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
    }

    pub(crate) fn count_dropped(&self, n: u64) {
        if n > 0 {
            self.dropped_messages.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The transport of one member: sends its Raft messages to the other members
/// and, through [`PeerTransport::service`], receives theirs. Cheap to clone;
/// the peer tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct PeerTransport {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    inbound: mpsc::Sender<Message>,
    peers: Mutex<HashMap<u64, PeerHandle>>,
    /// Channels for requests to a peer's other services (leases forwarded to the
    /// leader), by peer, with the URLs they were made for.
    channels: Mutex<HashMap<u64, (Vec<String>, tonic::transport::Channel)>>,
    /// Set by `stop_inbound`; ends the streams of services made by `service`.
    stop: watch::Sender<bool>,
    /// Where the peers' sender tasks run (the raft thread's runtime), if set.
    senders_runtime: Mutex<Option<tokio::runtime::Handle>>,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("local_id", &format_args!("{:x}", self.inner.shared.local_id))
            .field("cluster_id", &format_args!("{:x}", self.inner.shared.cluster_id))
            .finish_non_exhaustive()
    }
}

impl PeerTransport {
    /// A transport for member `local_id` of cluster `cluster_id`. `inbound`
    /// receives every valid message addressed to `local_id`; when it is full the
    /// peer streams wait (HTTP/2 flow control pushes back to the senders).
    pub fn new(local_id: u64, cluster_id: u64, inbound: mpsc::Sender<Message>) -> PeerTransport {
        PeerTransport {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    local_id,
                    cluster_id,
                    members: RwLock::new(None),
                    snapshot_dir: RwLock::new(None),
                    blocked: RwLock::new(BTreeSet::new()),
                    removed: RwLock::new(BTreeSet::new()),
                    on_removed: RwLock::new(None),
                    unreachable: Mutex::new(BTreeSet::new()),
                    dropped_messages: AtomicU64::new(0),
                    client_tls: RwLock::new(None),
                }),
                inbound,
                peers: Mutex::new(HashMap::new()),
                channels: Mutex::new(HashMap::new()),
                stop: watch::Sender::new(false),
                senders_runtime: Mutex::new(None),
            }),
        }
    }

    /// Sends every peer an empty batch. A peer that has applied this member's
    /// removal refuses it with [`REMOVED_MEMBER`], and the member stops: the
    /// way a removed member learns it when it has nothing else to send (a
    /// learner, or a member the leader dropped before telling it), as etcd's
    /// stream readers learn it from a 410.
    pub fn probe(&self) {
        for peer in self.peers().values() {
            peer.queue.request_probe();
        }
    }

    /// Refuses the streams of member `id` from now on: it was removed from
    /// the cluster (its ID never comes back).
    pub fn mark_removed(&self, id: u64) {
        assert_ne!(id, self.local_id(), "a member does not refuse itself");
        self.inner.shared.removed.write().unwrap_or_else(PoisonError::into_inner).insert(id);
    }

    /// Sets what runs when a peer refuses this member as removed (the member
    /// stops, as etcd's does on a 410 from a peer).
    pub fn set_removed_hook(&self, hook: RemovedHook) {
        *self.inner.shared.on_removed.write().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// Sets how to reach `https://` peers: the CA that signs their certificates
    /// and this member's own certificate (`--peer-*` flags).
    pub fn set_client_tls(&self, tls: ClientTlsConfig) {
        *self.inner.shared.client_tls.write().unwrap_or_else(PoisonError::into_inner) = Some(tls);
    }

    /// Sets where the `Members` RPC reads the current membership.
    pub fn set_members_source(&self, source: MembersSource) {
        *self.inner.shared.members.write().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// Sets the directory received snapshots are written to (the member installs
    /// them from there by renaming, so it must be on the backend's filesystem).
    pub fn set_snapshot_dir(&self, dir: std::path::PathBuf) {
        *self.inner.shared.snapshot_dir.write().unwrap_or_else(PoisonError::into_inner) = Some(dir);
    }

    /// Streams the backend file at `path` as the data of snapshot `message` to its
    /// destination, in chunks; resolves once the receiver has it on disk.
    pub async fn send_snapshot(
        &self,
        message: Message,
        path: &std::path::Path,
    ) -> Result<(), String> {
        let to = message.to;
        if self.inner.shared.is_blocked(to) {
            return Err(format!("traffic to {to:x} is blocked"));
        }
        let urls = self.peers().get(&to).map(|peer| peer.queue.urls());
        let Some(urls) = urls else { return Err(format!("{to:x} is not a peer")) };
        snapshot::send(&self.inner.shared, &urls, message, path).await
    }

    /// This member's ID.
    pub fn local_id(&self) -> u64 {
        self.inner.shared.local_id
    }

    /// The cluster ID every inbound batch must carry.
    pub fn cluster_id(&self) -> u64 {
        self.inner.shared.cluster_id
    }

    /// Runs the sender tasks of the peers added from now on on `runtime` (the
    /// raft loop's, which queues their messages); without it they run on the
    /// runtime that adds the peer.
    pub fn set_senders_runtime(&self, runtime: tokio::runtime::Handle) {
        *self.inner.senders_runtime.lock().unwrap_or_else(PoisonError::into_inner) = Some(runtime);
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PeerHandle>> {
        self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds or updates a peer's URLs (e.g. `http://127.0.0.1:2380`). The peer's
    /// sender task starts now but connects only when there is something to
    /// send; new URLs make it reconnect. Must be called within a tokio runtime.
    pub fn set_peer(&self, id: u64, urls: Vec<String>) {
        assert_ne!(id, self.local_id(), "a member is not its own peer");
        let mut peers = self.peers();
        match peers.get(&id) {
            Some(peer) => peer.queue.set_urls(urls),
            None => {
                let runtime = self
                    .inner
                    .senders_runtime
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_else(tokio::runtime::Handle::current);
                let handle = PeerHandle::spawn(Arc::clone(&self.inner.shared), id, urls, &runtime);
                peers.insert(id, handle);
            }
        }
    }

    /// Forgets a peer: its task stops and whatever was queued for it is dropped.
    pub fn remove_peer(&self, id: u64) {
        let removed = self.peers().remove(&id);
        drop(removed);
        self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// A channel to peer `id` for requests besides Raft's (a follower forwarding
    /// a lease renewal to the leader). It connects on first use, reconnects by
    /// itself, and is shared by every caller; new URLs for the peer replace it.
    /// Refused while the fault switch blocks the peer, as Raft traffic is.
    pub fn channel(&self, id: u64) -> Result<tonic::transport::Channel, String> {
        if self.inner.shared.is_blocked(id) {
            return Err(format!("traffic to {id:x} is blocked"));
        }
        let urls = self.peers().get(&id).map(|peer| peer.queue.urls());
        let Some(urls) = urls else { return Err(format!("{id:x} is not a peer")) };
        let mut channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((made_for, channel)) = channels.get(&id) {
            if *made_for == urls {
                return Ok(channel.clone());
            }
        }
        if urls.is_empty() {
            return Err(format!("{id:x} has no peer URLs"));
        }
        let tls = self.inner.shared.client_tls();
        let connector = dial::Connector::new(&urls, tls.as_ref(), sender::CONNECT_TIMEOUT)?;
        let channel = sender::tune(connector.endpoint()?).connect_with_connector_lazy(connector);
        channels.insert(id, (urls, channel.clone()));
        Ok(channel)
    }

    /// Whether the test-only fault switch drops traffic from member `id` (services
    /// besides Raft's consult it for requests that name their sender).
    pub fn is_blocked(&self, id: u64) -> bool {
        self.inner.shared.is_blocked(id)
    }

    /// The IDs of the known peers, in ascending order.
    pub fn peer_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.peers().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Queues messages for their destinations without ever blocking. Messages
    /// to unknown or blocked peers, and those that do not fit a peer's bounded
    /// queue, are dropped and counted (Raft retransmits). A peer whose link is
    /// currently down is also reported by the next [`take_unreachable`].
    ///
    /// [`take_unreachable`]: PeerTransport::take_unreachable
    pub fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let shared = &self.inner.shared;
        let mut by_peer: HashMap<u64, Vec<Message>> = HashMap::new();
        for m in messages {
            by_peer.entry(m.to).or_default().push(m);
        }
        let queues: Vec<_> = {
            let peers = self.peers();
            by_peer
                .into_iter()
                .map(|(to, batch)| (to, peers.get(&to).map(|p| Arc::clone(&p.queue)), batch))
                .collect()
        };
        for (to, queue, batch) in queues {
            let Some(queue) = queue else {
                shared.count_dropped(batch.len() as u64);
                continue;
            };
            if shared.is_blocked(to) {
                shared.count_dropped(batch.len() as u64);
                continue;
            }
            if !queue.healthy() {
                shared.mark_unreachable(to);
            }
            shared.count_dropped(queue.push(batch));
        }
    }

    /// Since when this member's connection to peer `id` is up (none: it is not).
    pub fn active_since(&self, id: u64) -> Option<std::time::Instant> {
        self.peers().get(&id).and_then(|p| p.queue.connected_since())
    }

    /// How many peers this member has a stream to now (etcd's `ActivePeers`).
    pub fn active_peers(&self) -> usize {
        self.peers().values().filter(|p| p.queue.connected_since().is_some()).count()
    }

    /// The peers to which sending failed since the last call, for
    /// `RawNode::report_unreachable`.
    pub fn take_unreachable(&self) -> Vec<u64> {
        let mut unreachable =
            self.inner.shared.unreachable.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *unreachable).into_iter().collect()
    }

    /// How many outbound and inbound messages were dropped so far (full queues,
    /// unknown or blocked peers, misaddressed or oversized messages, failures).
    pub fn dropped_messages(&self) -> u64 {
        self.inner.shared.dropped_messages.load(Ordering::Relaxed)
    }

    /// Fault switch for tests: drops all traffic to and from these member IDs
    /// (both directions, in this process) until called again with other IDs.
    pub fn set_blocked(&self, ids: BTreeSet<u64>) {
        *self.inner.shared.blocked.write().unwrap_or_else(PoisonError::into_inner) = ids;
    }

    /// The gRPC service to mount on the peer listener, with message size limits
    /// raised to [`MAX_MESSAGE_SIZE_BYTES`]. Peers keep their streams open, so
    /// a graceful server shutdown waits for them: call
    /// [`stop_inbound`](PeerTransport::stop_inbound) when the shutdown begins.
    pub fn service(&self) -> RaftTransportServer<PeerService> {
        self.service_until(self.inner.stop.subscribe())
    }

    /// Ends every inbound stream of the services made by
    /// [`service`](PeerTransport::service) and refuses new ones; for shutdown.
    pub fn stop_inbound(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Like [`service`](PeerTransport::service), but inbound streams end when
    /// `stop` turns true or its sender is dropped.
    pub fn service_until(&self, stop: watch::Receiver<bool>) -> RaftTransportServer<PeerService> {
        let service =
            PeerService::new(Arc::clone(&self.inner.shared), self.inner.inbound.clone(), stop);
        RaftTransportServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_SIZE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_SIZE_BYTES)
    }
}

/// Serves `transport`'s peer service, and the `extra` services the member adds
/// (lease forwarding), on `listener` until `shutdown` completes. For a listener that also serves other services, mount
/// [`PeerTransport::service`] yourself.
pub async fn serve(
    listener: Listener,
    transport: PeerTransport,
    extra: tonic::service::Routes,
    tls: Option<etcd_tls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop) = watch::channel(false);
    let service = transport.service_until(stop);
    // The service holds only what it needs; the caller's clones keep the peers alive.
    drop(transport);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(SERVER_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(SERVER_KEEPALIVE_TIMEOUT))
        .add_routes(extra)
        .add_service(service);
    // TCP connections get TCP_NODELAY from the accept loop: Raft heartbeats are
    // small and latency-sensitive.
    match (listener, tls) {
        (Listener::Tcp(l), Some(acceptor)) => {
            router.serve_with_incoming_shutdown(etcd_tls::incoming(l, acceptor), shutdown).await
        }
        (Listener::Tcp(l), None) => {
            router.serve_with_incoming_shutdown(etcd_tls::accepted(l), shutdown).await
        }
        (Listener::Unix(u), Some(acceptor)) => {
            router.serve_with_incoming_shutdown(etcd_tls::incoming(u, acceptor), shutdown).await
        }
        (Listener::Unix(u), None) => {
            router.serve_with_incoming_shutdown(etcd_tls::accepted(u), shutdown).await
        }
    }
}

/// Asks the members at `peer_urls`, in turn, for the cluster ID and membership
/// (what a member joining an existing cluster starts from). A member cut off
/// from the others may not have heard of the joiner yet, so the first answer
/// whose membership lists one of `own_peer_urls` wins; failing that, the first
/// answer at all (and the caller explains what is missing).
pub async fn fetch_members(
    peer_urls: &[String],
    own_peer_urls: &[String],
    tls: Option<&ClientTlsConfig>,
) -> Result<(u64, Vec<Member>), String> {
    let mut failures = Vec::new();
    let mut first_answer = None;
    for url in peer_urls {
        let attempt = async {
            let connector =
                dial::Connector::new(std::slice::from_ref(url), tls, Duration::from_secs(2))?;
            let endpoint = connector.endpoint()?.timeout(Duration::from_secs(5));
            let channel = endpoint
                .connect_with_connector(connector)
                .await
                .map_err(|e| sender::error_chain(&e))?;
            let mut client = RaftTransportClient::new(channel);
            let response =
                client.members(MembersRequest {}).await.map_err(|e| e.message().to_string())?;
            let response = response.into_inner();
            Ok::<_, String>((response.cluster_id, response.members))
        };
        match attempt.await {
            Ok(found) => {
                let lists_us =
                    found.1.iter().any(|m| m.peer_urls.iter().any(|u| own_peer_urls.contains(u)));
                if lists_us {
                    return Ok(found);
                }
                tracing::info!(%url, "this member does not list the joiner yet; asking the next");
                first_answer.get_or_insert(found);
            }
            Err(err) => failures.push(format!("{url}: {err}")),
        }
    }
    first_answer.ok_or_else(|| {
        format!("no member of the existing cluster answered ({})", failures.join("; "))
    })
}
