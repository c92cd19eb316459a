//! [`EtcdServer`]: one running member, as the API layer sees it. Writes become
//! proposals whose futures resolve when their entry is applied; linearizable reads
//! wait on a ReadIndex barrier; serializable reads go straight to the store.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_mvcc::KvStore;
use etcd_proto::etcdrs::{InternalRaftRequest, Member, RequestHeader};
use etcd_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use etcd_server::{Applied, Applier, ServerError};
use etcd_storage::Backend;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::apply_loop::ApplyLoop;
use crate::bootstrap::{self, StartError};
use crate::config::ServerConfig;
use crate::raft_loop::{RaftInput, RaftLoop};
use crate::shared::Shared;
use crate::watch_hub::WatchHub;
use etcd_transport::PeerTransport;

/// Proposals and reads queued for the raft loop at most; beyond it callers wait.
const RAFT_INPUTS_MAX: usize = 16 * 1024;
/// Raft messages from peers queued for the raft loop at most (beyond it the
/// transport's receivers wait, which slows the senders).
const RAFT_MESSAGES_MAX: usize = 16 * 1024;
/// Applied membership changes queued for their follow-up at most.
const MEMBER_EVENTS_MAX: usize = 64;
/// Batches of committed entries queued for the apply loop at most.
const APPLY_TASKS_MAX: usize = 1024;
/// etcd refuses proposals when the apply loop lags the commit index by this much.
const APPLY_LAG_MAX: u64 = 5000;

/// A point-in-time view of a member, for `Status` and `/health`.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    /// This member.
    pub member_id: u64,
    /// The known leader (0 when none).
    pub leader_id: u64,
    /// The current Raft term.
    pub raft_term: u64,
    /// The highest committed index.
    pub raft_index: u64,
    /// The highest applied index.
    pub raft_applied_index: u64,
    /// Size of the backend file.
    pub db_size_bytes: i64,
    /// The configured quota.
    pub quota_backend_bytes: i64,
    /// Whether this member is a learner.
    pub is_learner: bool,
}

/// One running member.
pub struct EtcdServer {
    pub(crate) cfg: ServerConfig,
    member_id: u64,
    cluster_id: u64,
    kv: Arc<KvStore>,
    pub(crate) backend: Arc<Backend>,
    pub(crate) shared: Arc<Shared>,
    watch_hub: Arc<WatchHub>,
    pub(crate) lessor: Arc<Mutex<etcd_lease::Lessor>>,
    pub(crate) auth: Arc<RwLock<etcd_auth::AuthStore>>,
    raft_tx: mpsc::Sender<RaftInput>,
    transport: PeerTransport,
    next_request_id: AtomicU64,
    stopped: AtomicBool,
    runtime: tokio::runtime::Handle,
    removed: tokio::sync::Notify,
    member_events: Mutex<Option<mpsc::Receiver<etcd_server::membership::MemberEvent>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl EtcdServer {
    /// Opens or bootstraps the data directory and starts the raft and apply loops.
    pub fn start(cfg: ServerConfig) -> Result<Arc<EtcdServer>, StartError> {
        let opened = bootstrap::open(&cfg)?;
        let backend_error =
            |reason: String| StartError::Backend { path: cfg.data_dir.clone(), reason };
        let apply_cfg = crate::lease::apply_core_config(&cfg);
        let lessor =
            etcd_server::apply_core::recover_lessor(&opened.backend, &opened.kv, &apply_cfg)
                .map_err(backend_error)?;
        let lessor = Arc::new(Mutex::new(lessor));
        let auth = opened
            .backend
            .begin_read()
            .and_then(|txn| etcd_auth::AuthStore::load(&txn, cfg.auth_token_ttl.as_millis() as u64))
            .map_err(|e| backend_error(e.to_string()))?;
        let auth = Arc::new(RwLock::new(auth));
        let applier =
            Applier::new(opened.backend.clone(), opened.kv.clone(), lessor.clone(), auth.clone())
                .map_err(|e| backend_error(e.to_string()))?;
        let shared = Arc::new(Shared::new(applier.consistent_index(), cfg.extensive_metrics));
        shared.db_size_bytes.store(opened.backend.size_bytes().unwrap_or(0), Ordering::Relaxed);
        let watch_hub = Arc::new(WatchHub::new(opened.kv.current_revision()));
        let (raft_tx, raft_rx) = mpsc::channel(RAFT_INPUTS_MAX);
        let (message_tx, message_rx) = mpsc::channel(RAFT_MESSAGES_MAX);
        let transport = PeerTransport::new(opened.member_id, opened.cluster_id, message_tx);
        if let Some(dir) = opened.backend.path().parent() {
            transport.set_snapshot_dir(dir.to_path_buf());
        }
        if let Some(tls) = &cfg.peer_client_tls {
            transport.set_client_tls(tls.clone());
        }
        for member in opened.members.iter().filter(|m| m.id != opened.member_id) {
            transport.set_peer(member.id, member.peer_urls.clone());
        }
        mark_removed_members(&transport, &opened.backend);
        let (apply_tx, apply_rx) = std::sync::mpsc::sync_channel(APPLY_TASKS_MAX);
        let core_cfg = etcd_server::raft_core::RaftCoreConfig {
            heartbeat_ms: cfg.heartbeat_interval.as_millis() as u64,
            election_ticks: cfg.election_ticks(),
            catch_up_entries: cfg.snapshot_catchup_entries,
            keep_all_log_segments: cfg.max_wals == 0,
            initial_election_tick_advance: cfg.initial_election_tick_advance,
            // Time-based, so a restarted member's ReadIndex contexts do not
            // repeat those of its previous run that a leader may still hold.
            read_context_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        let core = etcd_server::raft_core::RaftCore::new(
            opened.node,
            applier.consistent_index(),
            core_cfg,
            crate::clock::monotonic_ms(),
        );
        let raft_loop = RaftLoop {
            core,
            wal: opened.wal,
            inputs: raft_rx,
            messages: message_rx,
            peers: Arc::new(transport.clone()),
            apply_tx,
            snapshots: crate::snapshot::SnapshotSender {
                backend: opened.backend.clone(),
                transport: transport.clone(),
                runtime: tokio::runtime::Handle::current(),
                raft_tx: raft_tx.clone(),
                dir: opened.backend.path().parent().map(Path::to_path_buf).unwrap_or_default(),
            },
            shared: shared.clone(),
            heartbeat: cfg.heartbeat_interval,
            readers: std::collections::HashMap::new(),
            next_reader: 0,
        };
        let (member_events_tx, member_events_rx) = mpsc::channel(MEMBER_EVENTS_MAX);
        let apply_core = etcd_server::apply_core::ApplyCore::new(
            applier,
            opened.kv.clone(),
            opened.backend.clone(),
            apply_cfg,
            opened.snapshot_index,
            crate::clock::monotonic_ms(),
        );
        let apply_loop = ApplyLoop {
            member_id: opened.member_id,
            core: apply_core,
            tasks: apply_rx,
            shared: shared.clone(),
            watch_hub: watch_hub.clone(),
            raft_tx: raft_tx.clone(),
            member_events: member_events_tx,
            warning_apply_duration: cfg.warning_apply_duration,
        };
        let spawn_error =
            |e: std::io::Error| StartError::DataDir { path: cfg.data_dir.clone(), source: e };
        let raft_thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime for the raft loop");
                runtime.block_on(raft_loop.run());
            })
            .map_err(spawn_error)?;
        let apply_thread = std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || apply_loop.run())
            .map_err(spawn_error)?;
        let now_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        // etcd's scheme: the member ID's low 16 bits, then a time-based counter, so
        // IDs of a restarted member do not repeat those still in the log.
        let id_prefix = (opened.member_id & 0xffff) << 48;
        let id_start = id_prefix | ((now_ms << 8) & 0x0000_ffff_ffff_ffff);
        let server = Arc::new(EtcdServer {
            member_id: opened.member_id,
            cluster_id: opened.cluster_id,
            kv: opened.kv,
            backend: opened.backend,
            shared,
            watch_hub,
            lessor,
            auth,
            raft_tx,
            transport,
            next_request_id: AtomicU64::new(id_start),
            stopped: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
            removed: tokio::sync::Notify::new(),
            member_events: Mutex::new(Some(member_events_rx)),
            threads: Mutex::new(vec![raft_thread, apply_thread]),
            cfg,
        });
        let weak = Arc::downgrade(&server);
        server.transport.set_removed_hook(Arc::new(move || {
            if let Some(server) = weak.upgrade() {
                server.notify_removed();
            }
        }));
        let weak = Arc::downgrade(&server);
        server.transport.set_members_source(Arc::new(move || {
            weak.upgrade().map(|server| server.members()).unwrap_or_default()
        }));
        Ok(server)
    }

    /// Starts the member's async duties (the leader's lease expiry loop, and the
    /// test-only peer fault switch when configured) on the current tokio runtime.
    pub fn spawn_background_tasks(self: &Arc<Self>) {
        tokio::spawn(self.clone().run_lease_expiry());
        if let Some(mode) = self.cfg.auto_compaction {
            tokio::spawn(self.clone().run_auto_compaction(mode));
        }
        if let Some(every) = self.cfg.corrupt_check_time {
            tokio::spawn(self.clone().run_corrupt_checks(every));
        }
        if let Some(mut events) = self.member_events.lock().expect("member events lock").take() {
            let server = self.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if let Some(input) = server.on_member_event(&event) {
                        if server.send_raft(input).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
        if let Ok(path) = std::env::var(crate::faults::BLOCK_FILE_ENV) {
            tokio::spawn(crate::faults::follow_block_file(self.transport.clone(), path.into()));
        }
    }

    /// The peer transport, to serve on the peer listener.
    pub fn transport(&self) -> &PeerTransport {
        &self.transport
    }

    /// Hands leadership to `target` (etcd's MoveLeader); only the leader can.
    pub async fn move_leader(&self, target: u64) -> Result<(), ServerError> {
        if !self.is_leader() {
            return Err(ServerError::NotLeader);
        }
        if !self.members().iter().any(|m| m.id == target && !m.is_learner) {
            return Err(ServerError::MemberNotFound);
        }
        self.raft_tx
            .send(RaftInput::TransferLeader { to: target })
            .await
            .map_err(|_| ServerError::Stopped)?;
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout();
        while tokio::time::Instant::now() < deadline {
            if self.shared.leader_id.load(Ordering::Relaxed) == target {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(ServerError::LeaderTransferTimeout)
    }

    /// Whether [`EtcdServer::shutdown`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The configuration this member runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// This member's ID.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// The cluster's ID.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The MVCC store (reads only; writes go through [`EtcdServer::propose`]).
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// Recent events and the published revision, for watchers.
    pub fn watch_hub(&self) -> &WatchHub {
        &self.watch_hub
    }

    /// The members as of the last applied entry.
    pub fn members(&self) -> Vec<Member> {
        let loaded = etcd_server::membership::read(&self.backend);
        match loaded {
            Ok(members) => members,
            Err(err) => {
                tracing::error!(error = %err, "reading the members table failed");
                Vec::new()
            }
        }
    }

    /// Announces this member's name and client URLs to the cluster through Raft
    /// (etcd's publish), so every member lists them.
    pub async fn publish(&self) -> Result<(), ServerError> {
        let attributes = etcd_proto::etcdrs::MemberAttributes {
            id: self.member_id,
            name: self.cfg.name.clone(),
            client_urls: self.cfg.advertise_client_urls.clone(),
        };
        let request =
            InternalRaftRequest { member_attributes: Some(attributes), ..Default::default() };
        self.propose(request).await?.result.map(|_| ())
    }

    /// A response header carrying `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.shared.term.load(Ordering::Relaxed),
        }
    }

    /// This member's progress, for `Status`.
    pub fn status(&self) -> StatusInfo {
        StatusInfo {
            member_id: self.member_id,
            leader_id: self.shared.leader_id.load(Ordering::Relaxed),
            raft_term: self.shared.term.load(Ordering::Relaxed),
            raft_index: self.shared.commit_index.load(Ordering::Relaxed),
            raft_applied_index: *self.shared.applied_index.borrow(),
            db_size_bytes: self.shared.db_size_bytes.load(Ordering::Relaxed) as i64,
            quota_backend_bytes: self.cfg.quota_backend_bytes as i64,
            is_learner: self.shared.is_learner.load(Ordering::Relaxed),
        }
    }

    /// The gRPC server counters, for the client port's gRPC services to count into.
    pub fn grpc_metrics(&self) -> &crate::GrpcMetrics {
        &self.shared.metrics.grpc
    }

    /// The Prometheus text of this member's metrics (`/metrics`).
    pub fn metrics_text(&self) -> String {
        let m = &self.shared.metrics;
        let status = self.status();
        m.has_leader.set(i64::from(status.leader_id != 0));
        m.is_leader.set(i64::from(status.leader_id == self.member_id));
        m.is_learner.set(i64::from(status.is_learner));
        m.proposals_committed.set(status.raft_index as i64);
        m.proposals_applied.set(status.raft_applied_index as i64);
        m.proposals_pending.set(self.shared.waiters.lock().expect("waiters lock").len() as i64);
        m.quota_backend_bytes.set(status.quota_backend_bytes);
        m.db_total_size.set(status.db_size_bytes);
        let in_use =
            self.shared.db_in_use.lock().expect("in use lock").map(|u| u.bytes + u.admitted);
        m.db_total_size_in_use.set(in_use.map_or(status.db_size_bytes, |b| b as i64));
        m.keys_total.set(self.kv.index_len() as i64);
        // The store counts; the counters catch up to it at scrape time.
        let ops = self.kv.op_counts();
        for (counter, total) in [
            (&m.mvcc_ranges, ops.ranges),
            (&m.mvcc_puts, ops.puts),
            (&m.mvcc_deletes, ops.deletes),
            (&m.mvcc_txns, ops.txns),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        m.current_revision.set(self.kv.current_revision());
        m.compact_revision.set(self.kv.compact_revision());
        m.encode()
    }

    /// Proposes `request` through Raft and waits until it is applied on this member.
    pub async fn propose(&self, mut request: InternalRaftRequest) -> Result<Applied, ServerError> {
        let applied = *self.shared.applied_index.borrow();
        if self.shared.commit_index.load(Ordering::Relaxed).saturating_sub(applied) > APPLY_LAG_MAX
        {
            return Err(ServerError::TooManyRequests);
        }
        let id = self.next_id();
        // The caller may have set the credentials (`propose_as`); the ID is ours.
        request.header.get_or_insert_with(RequestHeader::default).id = id;
        let data = request.encode_to_vec();
        if data.len() > self.cfg.max_request_bytes {
            return Err(ServerError::RequestTooLarge);
        }
        self.wait_applied(id, RaftInput::Propose { id, data }).await
    }

    /// Registers a waiter for request `id`, hands `input` to the raft loop and waits
    /// until the entry is applied here (or the request times out).
    pub(crate) async fn wait_applied(
        &self,
        id: u64,
        input: RaftInput,
    ) -> Result<Applied, ServerError> {
        // Without a leader nothing can commit: the client should try another member.
        if self.shared.leader_id.load(Ordering::Relaxed) == 0 {
            return Err(ServerError::NoLeader);
        }
        let (tx, rx) = oneshot::channel();
        self.shared.waiters.lock().expect("waiters lock").insert(id, tx);
        let outcome = tokio::time::timeout(self.cfg.request_timeout(), async {
            self.raft_tx.send(input).await.map_err(|_| ServerError::Stopped)?;
            rx.await.map_err(|_| ServerError::Stopped)
        })
        .await;
        let result = match outcome {
            Ok(result) => result,
            Err(_elapsed) => {
                self.shared.waiters.lock().expect("waiters lock").remove(&id);
                Err(ServerError::Timeout)
            }
        };
        if result.is_err() {
            self.shared.metrics.proposals_failed.inc();
        }
        result
    }

    /// Sends an input to the raft loop.
    pub(crate) async fn send_raft(&self, input: RaftInput) -> Result<(), ServerError> {
        self.raft_tx.send(input).await.map_err(|_| ServerError::Stopped)
    }

    /// The tokio runtime the member's async work runs on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Marks this member as removed from the cluster (it stops serving).
    pub(crate) fn notify_removed(&self) {
        self.removed.notify_one();
    }

    /// Resolves once this member was removed from the cluster.
    pub async fn removed(&self) {
        self.removed.notified().await;
    }

    /// A fresh ID from etcd's generator (request IDs, server-chosen lease IDs).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// etcd serves only serializable reads and status on a learner; the client
    /// API's learner gate (`api/src/learner.rs`) refuses everything else.
    pub fn check_not_learner(&self) -> Result<(), ServerError> {
        if self.shared.is_learner.load(Ordering::Relaxed) {
            return Err(ServerError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// Whether this member is the Raft leader now.
    pub fn is_leader(&self) -> bool {
        self.shared.leader_id.load(Ordering::Relaxed) == self.member_id
    }

    /// Waits until this member has applied everything committed before now
    /// (ReadIndex), so a following read is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        if self.shared.leader_id.load(Ordering::Relaxed) == 0 {
            return Err(ServerError::NoLeader);
        }
        let timeout = self.cfg.request_timeout();
        let wait = async {
            let (tx, rx) = oneshot::channel();
            self.raft_tx.send(RaftInput::ReadIndex(tx)).await.map_err(|_| ServerError::Stopped)?;
            let index = rx.await.map_err(|_| ServerError::Stopped)??;
            let mut applied = self.shared.applied_index.subscribe();
            applied
                .wait_for(|applied| *applied >= index)
                .await
                .map_err(|_| ServerError::Stopped)?;
            Ok(())
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ServerError::Timeout)?
    }

    /// Serves a Range: linearizable unless `serializable` is set.
    pub async fn range(&self, request: &RangeRequest) -> Result<RangeResponse, ServerError> {
        if !request.serializable {
            self.read_barrier().await?;
        }
        self.read_range(request)
    }

    /// Reads a Range from the store as it is now (the caller ordered it).
    pub(crate) fn read_range(&self, request: &RangeRequest) -> Result<RangeResponse, ServerError> {
        let (mut response, revision) = self.kv.range_with_rev(request).map_err(read_error)?;
        response.header = Some(self.header(revision));
        Ok(response)
    }

    /// Stops the raft and apply loops after the work already queued; returns when
    /// both have finished and the WAL is synced.
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = self.raft_tx.send(RaftInput::Stop).await;
        let threads: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Tells the transport which members were removed (their streams are refused),
/// as the backend records them.
pub(crate) fn mark_removed_members(transport: &PeerTransport, backend: &etcd_storage::Backend) {
    let removed =
        backend.begin_read().and_then(|txn| etcd_storage::ReadTables::members_removed_list(&txn));
    match removed {
        Ok(ids) => {
            for id in ids.into_iter().filter(|&id| id != transport.local_id()) {
                transport.mark_removed(id);
            }
        }
        Err(e) => tracing::error!(error = %e, "reading the removed members failed"),
    }
}

/// A store read's error as clients see it: etcd's errors (compacted, future
/// revision) as they are; a backend failure is logged and answered as stopped.
pub(crate) fn read_error(err: etcd_mvcc::MvccError) -> ServerError {
    ServerError::from_mvcc(&err).unwrap_or_else(|| {
        tracing::error!(error = %err, "backend read failed");
        ServerError::Stopped
    })
}
