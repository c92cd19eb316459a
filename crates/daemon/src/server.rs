//! [`EtcdServer`]: one running member, as the API layer sees it. Writes become
//! proposals whose futures resolve when their entry is applied; linearizable reads
//! wait on a ReadIndex barrier; serializable reads go straight to the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use etcd_mvcc::KvStore;
use etcd_proto::etcdrs::{InternalRaftRequest, Member, RequestHeader};
use etcd_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use etcd_server::{Applied, ServerError};
use etcd_storage::Backend;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::config::ServerConfig;
use crate::inputs::RaftInput;
use crate::shared::Shared;
use etcd_server::watch::WatchHub;
use etcd_transport::PeerTransport;

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
    pub(crate) member_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) kv: Arc<KvStore>,
    pub(crate) backend: Arc<Backend>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) watch_hub: Arc<WatchHub>,
    pub(crate) lessor: Arc<Mutex<etcd_lease::Lessor>>,
    pub(crate) auth: Arc<RwLock<etcd_auth::AuthStore>>,
    pub(crate) raft_tx: mpsc::Sender<RaftInput>,
    pub(crate) transport: PeerTransport,
    pub(crate) next_request_id: AtomicU64,
    pub(crate) stopped: AtomicBool,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) removed: tokio::sync::Notify,
    pub(crate) member_events: Mutex<Option<mpsc::Receiver<etcd_server::membership::MemberEvent>>>,
    pub(crate) raft_thread: Mutex<Option<JoinHandle<()>>>,
    /// The apply loop, a task on the runtime that started the member.
    pub(crate) apply_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The stream keep-alives are forwarded to the leader on, on a follower.
    pub(crate) forwarder: crate::lease_forward::Forwarder,
}

impl EtcdServer {
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
        self.wait_applied(id, RaftInput::Propose { id, data, at: std::time::Instant::now() }).await
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
        let started = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.shared.waiters.lock().expect("waiters lock").register(id, tx);
        let outcome = tokio::time::timeout(self.cfg.request_timeout(), async {
            self.raft_tx.send(input).await.map_err(|_| ServerError::Stopped)?;
            let (applied, woken) = rx.await.map_err(|_| ServerError::Stopped)?;
            let stages = &self.shared.metrics.write_stages;
            stages.wake.observe(woken.elapsed().as_secs_f64());
            stages.total.observe(started.elapsed().as_secs_f64());
            Ok(applied)
        })
        .await;
        let result = match outcome {
            Ok(result) => result,
            Err(_elapsed) => {
                self.shared.waiters.lock().expect("waiters lock").forget(id);
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

    /// Waits until no compaction has rows left to remove on this member (the
    /// answer to a physical compaction; etcd waits for its compaction job too).
    pub async fn compaction_removed(&self) -> Result<(), ServerError> {
        let mut finished = self.shared.compactions_finished.subscribe();
        while self.kv().compaction_in_progress().is_some() {
            finished.changed().await.map_err(|_| ServerError::Stopped)?;
        }
        Ok(())
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
        let raft_thread = self.raft_thread.lock().expect("raft thread lock").take();
        if let Some(thread) = raft_thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let apply_task = self.apply_task.lock().expect("apply task lock").take();
        if let Some(task) = apply_task {
            let _ = task.await;
        }
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
    match ServerError::from_mvcc(&err) {
        Some(answer) => answer,
        // redb refuses every later operation after an I/O error until it is
        // reopened, so this member could serve nothing more: it stops, to be
        // restarted on its disk (found by the simulator, seed 20949).
        None => crate::inputs::fatal("the backend failed a read", err),
    }
}
