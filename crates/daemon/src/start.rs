//! Starting a member: open (or bootstrap) its data directory, build its two
//! cores, run them on their threads, and spawn its async duties. The top of the
//! daemon: it wires every other module together, and none of them refer to it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_transport::PeerTransport;
use tokio::sync::mpsc;

use crate::apply_loop::ApplyLoop;
use crate::bootstrap;
use crate::config::ServerConfig;
use crate::data_dir::StartError;
use crate::raft_loop::RaftLoop;
use crate::server::{mark_removed_members, EtcdServer};
use crate::shared::Shared;
use etcd_server::watch::WatchHub;

/// Proposals and reads queued for the raft loop at most; beyond it callers wait.
const RAFT_INPUTS_MAX: usize = 16 * 1024;
/// Raft messages from peers queued for the raft loop at most (beyond it the
/// transport's receivers wait, which slows the senders).
const RAFT_MESSAGES_MAX: usize = 16 * 1024;
/// Applied membership changes queued for their follow-up at most.
const MEMBER_EVENTS_MAX: usize = 64;
/// Batches of committed entries queued for the apply loop at most.
const APPLY_TASKS_MAX: usize = 1024;
impl EtcdServer {
    /// Opens or bootstraps the data directory and starts the raft and apply loops.
    pub fn start(cfg: ServerConfig) -> Result<Arc<EtcdServer>, StartError> {
        let opened = bootstrap::open(&cfg)?;
        let backend_error =
            |reason: String| StartError::Backend { path: cfg.data_dir.clone(), reason };
        let apply_core = etcd_server::apply_core::ApplyCore::open(
            opened.kv.clone(),
            opened.backend.clone(),
            crate::lease::apply_core_config(&cfg),
            opened.snapshot_index,
            crate::clock::monotonic_ms(),
        )
        .map_err(backend_error)?;
        let (lessor, auth) = (apply_core.lessor().clone(), apply_core.auth().clone());
        let applied = apply_core.applied_index();
        let shared = Arc::new(Shared::new(applied, cfg.extensive_metrics));
        shared.db_size_bytes.store(opened.backend.size_bytes().unwrap_or(0), Ordering::Relaxed);
        let watch_hub = Arc::new(WatchHub::new(opened.kv.current_revision()));
        let (raft_tx, raft_rx) = mpsc::channel(RAFT_INPUTS_MAX);
        let (message_tx, message_rx) = mpsc::channel(RAFT_MESSAGES_MAX);
        let transport = PeerTransport::new(opened.member_id, opened.cluster_id, message_tx);
        // The raft loop's runtime also runs the peers' sender tasks: a message
        // the loop queues wakes its stream's task on this same thread instead
        // of a parked worker of the client runtime (3 members, 3 alternated
        // rounds: put-64 1.06x at 0.94x CPU; one client's put p50 0.94x on
        // the leader, 0.93x through a follower).
        let raft_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                StartError::Raft(format!(
                    "cannot create the raft thread's runtime: {e} (is the process out of file descriptors or memory?)"
                ))
            })?;
        transport.set_senders_runtime(raft_runtime.handle().clone());
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
        let (apply_tx, apply_rx) = crate::inputs::apply_queue(APPLY_TASKS_MAX);
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
            applied,
            core_cfg,
            crate::clock::monotonic_ms(),
        );
        let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
        let peers: Arc<dyn crate::inputs::PeerSender> = Arc::new(transport.clone());
        let wal = crate::wal_writer::WalWriter::start(
            opened.wal,
            peers.clone(),
            persisted_tx,
            shared.clone(),
        )
        .map_err(|e| StartError::DataDir { path: cfg.data_dir.clone(), source: e })?;
        let raft_loop = RaftLoop {
            core,
            wal,
            persisted: persisted_rx,
            inputs: raft_rx,
            messages: message_rx,
            peers,
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
        let apply_loop = ApplyLoop {
            member_id: opened.member_id,
            core: apply_core,
            tasks: apply_rx,
            shared: shared.clone(),
            watch_hub: watch_hub.clone(),
            raft_tx: raft_tx.clone(),
            member_events: member_events_tx,
            warning_apply_duration: cfg.warning_apply_duration,
            compaction_started: None,
            db_size_read: std::time::Instant::now(),
        };
        let spawn_error = |e: std::io::Error| {
            StartError::Raft(format!(
                "cannot start the raft thread: {e} (is the process out of threads or memory?)"
            ))
        };
        let raft_thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                raft_runtime.block_on(raft_loop.run());
            })
            .map_err(spawn_error)?;
        let apply_task = tokio::spawn(apply_loop.run());
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
            raft_thread: Mutex::new(Some(raft_thread)),
            apply_task: Mutex::new(Some(apply_task)),
            forwarder: Default::default(),
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
}
