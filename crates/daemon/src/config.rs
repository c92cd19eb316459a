//! The configuration of one member, as the `etcd` binary parsed it from etcd's flags.

use std::path::PathBuf;
use std::time::Duration;

/// Whether this member starts a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// `--initial-cluster-state new`.
    New,
    /// `--initial-cluster-state existing`.
    Existing,
}

/// Everything a member needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--initial-cluster`, parsed: (member name, peer URLs).
    pub initial_cluster: Vec<(String, Vec<String>)>,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--snapshot-count`: applied entries between snapshots.
    pub snapshot_count: u64,
    /// `--backend-batch-interval`: the longest time between durable (fsynced)
    /// backend commits.
    pub backend_batch_interval: Duration,
    /// `--backend-batch-limit`: the most applied entries between durable
    /// backend commits.
    pub backend_batch_limit: u64,
    /// `--experimental-snapshot-catchup-entries`: entries kept behind a snapshot for
    /// slow followers before they need a whole snapshot.
    pub snapshot_catchup_entries: u64,
    /// `--auto-compaction-mode` and `--auto-compaction-retention` (none: off).
    pub auto_compaction: Option<AutoCompaction>,
    /// `--quota-backend-bytes`.
    pub quota_backend_bytes: u64,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--max-concurrent-streams`: the HTTP/2 streams a client connection may
    /// have open at once (and the gateway's calls in flight, as etcd's
    /// gateway multiplexes them on one connection to its gRPC server).
    pub max_concurrent_streams: u32,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// For `--initial-cluster-state existing` on an empty data dir: the cluster ID
    /// and members as an existing member reported them.
    pub join: Option<(u64, Vec<etcd_proto::etcdrs::Member>)>,
    /// `--experimental-watch-progress-notify-interval`: how often watchers that asked
    /// for progress notifications get one when idle.
    pub watch_progress_notify_interval: Duration,
    /// How to reach `https://` peers (the `--peer-*` TLS flags); none: plaintext only.
    pub peer_client_tls: Option<etcd_transport::ClientTlsConfig>,
    /// `--experimental-enable-lease-checkpoint` (with its `-persist` companion).
    pub lease_checkpoint: Option<etcd_lease::Checkpointing>,
    /// `--bcrypt-cost` (already checked: out-of-range costs became the default).
    pub bcrypt_cost: u32,
    /// `--auth-token jwt,...`: the JWT key and method (none: simple tokens).
    pub jwt: Option<std::sync::Arc<etcd_auth::JwtTokens>>,
    /// `--auth-token-ttl`: how long a simple token lives after its last use.
    pub auth_token_ttl: Duration,
    /// `--unsafe-no-fsync`: the WAL is written but never fsynced.
    pub unsafe_no_fsync: bool,
    /// `--wal-dir`: the WAL's directory when not `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    /// `--force-new-cluster`: on restart, become the only member of the cluster,
    /// keeping the data (see `force_new_cluster`); no effect on a new data dir.
    pub force_new_cluster: bool,
    /// `--experimental-initial-corrupt-check`: compare HashKV with the peers
    /// before serving clients (the binary runs the check).
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: how often the leader compares HashKV
    /// with its followers (none: never).
    pub corrupt_check_time: Option<Duration>,
    /// `--grpc-keepalive-interval`: how long a client connection may be idle
    /// before the server pings it (none: never).
    pub grpc_keepalive_interval: Option<Duration>,
    /// `--grpc-keepalive-min-time`: how often a client may ping (gRPC's
    /// enforcement policy; zero means gRPC's own five minutes).
    pub grpc_keepalive_min_time: Duration,
    /// `--grpc-keepalive-timeout`: how long the server waits for the ping's
    /// answer before closing the connection.
    pub grpc_keepalive_timeout: Duration,
    /// `--enable-grpc-gateway`: serve the JSON gateway on the client port.
    pub enable_grpc_gateway: bool,
    /// `--experimental-compaction-batch-limit`: rows of the `key` table one
    /// compaction batch visits (etcd's default 1000).
    pub compaction_batch_limit: usize,
    /// `--enable-pprof`: serve `/debug/pprof/` (a CPU profile) on the client port.
    pub enable_pprof: bool,
    /// `--pre-vote`: Raft's pre-vote phase (default on, as etcd 3.5).
    pub pre_vote: bool,
    /// `--host-whitelist`: host names a plain-HTTP request may name (empty: any).
    pub host_whitelist: Vec<String>,
    /// `--cors`: origins answered with CORS headers (empty: any).
    pub cors: Vec<String>,
    /// `--experimental-warning-apply-duration`: applying longer than this is
    /// logged as a warning and counted (`etcd_server_slow_apply_total`).
    pub warning_apply_duration: Duration,
    /// `--max-wals`: 0 keeps every WAL segment; any other maximum is met by
    /// releasing the segments each snapshot covers (fewer are kept than etcd's).
    pub max_wals: u32,
    /// `--metrics=extensive`: gRPC handling-time histograms besides the counters.
    pub extensive_metrics: bool,
    /// `--initial-election-tick-advance`: a starting member fast-forwards its
    /// first election timeout once it reaches its peers.
    pub initial_election_tick_advance: bool,
    /// `--strict-reconfig-check`: refuse membership changes that would break
    /// the quorum of started, reachable members (see `reconfig_check`).
    pub strict_reconfig_check: bool,
}

/// Test-only: the lease checkpoint interval in milliseconds (production never
/// sets it; etcd's interval is fixed at 5 minutes outside its own tests).
pub const LEASE_CHECKPOINT_INTERVAL_ENV: &str = "ETCD_RS_TEST_LEASE_CHECKPOINT_INTERVAL_MS";

impl ServerConfig {
    /// A single member named `name` with etcd's defaults, storing data in `data_dir`.
    pub fn single(name: &str, data_dir: PathBuf) -> ServerConfig {
        let peer = "http://localhost:2380".to_string();
        ServerConfig {
            name: name.to_string(),
            data_dir,
            initial_cluster: vec![(name.to_string(), vec![peer.clone()])],
            initial_cluster_token: "etcd-cluster".to_string(),
            initial_cluster_state: ClusterState::New,
            advertise_client_urls: vec!["http://localhost:2379".to_string()],
            initial_advertise_peer_urls: vec![peer],
            snapshot_count: 10_000,
            backend_batch_interval: Duration::from_millis(100),
            backend_batch_limit: 10_000,
            snapshot_catchup_entries: 5000,
            auto_compaction: None,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            max_concurrent_streams: u32::MAX,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            join: None,
            watch_progress_notify_interval: Duration::from_secs(600),
            peer_client_tls: None,
            lease_checkpoint: None,
            bcrypt_cost: etcd_auth::DEFAULT_BCRYPT_COST,
            jwt: None,
            auth_token_ttl: Duration::from_secs(300),
            unsafe_no_fsync: false,
            wal_dir: None,
            force_new_cluster: false,
            initial_corrupt_check: false,
            corrupt_check_time: None,
            grpc_keepalive_interval: Some(Duration::from_secs(2 * 60 * 60)),
            grpc_keepalive_timeout: Duration::from_secs(20),
            grpc_keepalive_min_time: Duration::from_secs(5),
            enable_grpc_gateway: true,
            enable_pprof: false,
            compaction_batch_limit: etcd_mvcc::DEFAULT_COMPACTION_BATCH_LIMIT,
            pre_vote: true,
            host_whitelist: Vec::new(),
            cors: Vec::new(),
            warning_apply_duration: Duration::from_millis(100),
            max_wals: 5,
            extensive_metrics: false,
            initial_election_tick_advance: true,
            strict_reconfig_check: true,
        }
    }

    /// Where this member's WAL lives: `--wal-dir`, or `<data-dir>/member/wal`.
    pub fn wal_path(&self) -> PathBuf {
        self.wal_dir.clone().unwrap_or_else(|| crate::data_dir::wal_dir(&self.data_dir))
    }

    /// Lease checkpointing as the flags ask: etcd's 5-minute interval, which
    /// tests shorten with [`LEASE_CHECKPOINT_INTERVAL_ENV`] (etcd offers no flag).
    pub fn lease_checkpointing(enable: bool, persist: bool) -> Option<etcd_lease::Checkpointing> {
        let interval_ms = std::env::var(LEASE_CHECKPOINT_INTERVAL_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(etcd_lease::LEASE_CHECKPOINT_INTERVAL_MS);
        enable.then_some(etcd_lease::Checkpointing { interval_ms, persist })
    }

    /// How long a client request may wait for Raft (etcd: 5 s + 2 election timeouts).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.election_timeout
    }

    /// Raft ticks (heartbeat intervals) per election timeout; raft needs more than one.
    pub fn election_ticks(&self) -> usize {
        let ticks = self.election_timeout.as_millis() / self.heartbeat_interval.as_millis().max(1);
        (ticks as usize).max(3)
    }
}

/// A comma-separated flag value (URL lists, names, origins) as its items, blanks dropped.
pub fn comma_list(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Parses `--initial-cluster` (`name=url,name=url2,other=url3`) into members
/// with their peer URLs, in the order first named.
pub fn parse_initial_cluster(spec: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for part in comma_list(spec) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            format!("--initial-cluster entry {part:?} is not name=peerURL (e.g. infra0=http://10.0.0.1:2380)")
        })?;
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => members.push((name.to_string(), vec![url.to_string()])),
        }
    }
    Ok(members)
}

/// How history is automatically compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep history for this long.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}
