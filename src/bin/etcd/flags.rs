//! etcd's command-line flags and `ETCD_*` environment variables.
//!
//! Go's flag package accepts `-flag` as well as `--flag`, and operators' scripts use
//! both, so single-dash long flags are normalised first (`flag_policy.rs`, which
//! also warns about the flags etcd has that this server does not act on yet and
//! refuses those that would be unsafe to ignore).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use etcd_daemon::config::{comma_list, parse_initial_cluster};

use crate::flag_values::{auth_token_provider, cors_origins, parse_go_duration};
use etcd_daemon::{AutoCompaction, ClusterState, ServerConfig};

/// A distributed, reliable key-value store (etcd v3 API). A flag given twice
/// takes its last value, as with Go's flag package.
#[derive(Debug, Parser)]
#[command(name = "etcd", disable_version_flag = true, args_override_self = true)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: ${name}.etcd).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Path to the dedicated wal directory (default: ${data-dir}/member/wal).
    #[arg(long, env = "ETCD_WAL_DIR", default_value = "")]
    pub wal_dir: String,
    /// List of URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379")]
    pub listen_client_urls: String,
    /// List of this member's client URLs to advertise to the public.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379")]
    pub advertise_client_urls: String,
    /// List of additional URLs to listen on that respond to the /metrics and /health endpoints.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (name=peerURL,...).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Specify auth token type and options: 'simple' (tokens this server
    /// issues and every member accepts); JWT tokens are not supported yet.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Specify bcrypt algorithm cost factor for auth password hashing.
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = etcd_auth::DEFAULT_BCRYPT_COST)]
    pub bcrypt_cost: u32,
    /// The lifetime in seconds of the auth token.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Auto compaction retention for mvcc key value store. 0 means disable auto
    /// compaction (periodic: a duration like 1h or 30m, or hours; revision: a count).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// BackendBatchInterval is the maximum time before commit the backend transaction
    /// (a Go duration; empty or 0: 100ms).
    #[arg(long, env = "ETCD_BACKEND_BATCH_INTERVAL", default_value = "")]
    pub backend_batch_interval: String,
    /// BackendBatchLimit is the maximum operations before commit the backend
    /// transaction (0: 10000).
    #[arg(long, env = "ETCD_BACKEND_BATCH_LIMIT", default_value_t = 0)]
    pub backend_batch_limit: u64,
    /// Number of entries for a slow follower to catch up after compacting the raft log.
    #[arg(long, env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5000)]
    pub experimental_snapshot_catchup_entries: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Sets the maximum revisions deleted in each compaction batch (0: the default).
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT", default_value_t = 1000)]
    pub experimental_compaction_batch_limit: usize,
    /// Configures log level. Only supports debug, info, warn, error, panic, or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Specify 'zap' for structured logging or 'capnslog' (logged as zap here).
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap")]
    pub logger: String,
    /// Specify 'stdout' or 'stderr' to skip journald logging even when running under
    /// systemd, or list comma-separated output targets (files too).
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,
    /// [DEPRECATED] Use --log-outputs.
    #[arg(long, env = "ETCD_LOG_OUTPUT", default_value = "default")]
    pub log_output: String,
    /// Duration of periodic watch progress notifications (Go duration, e.g. 10m, 500ms).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = parse_go_duration
    )]
    pub experimental_watch_progress_notify_interval: Duration,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(
        long,
        env = "ETCD_CLIENT_CERT_AUTH",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub client_cert_auth: bool,
    /// Client TLS using generated certificates.
    #[arg(
        long,
        env = "ETCD_AUTO_TLS",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub auto_tls: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    pub client_cert_allowed_hostname: Option<String>,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(
        long,
        env = "ETCD_PEER_CLIENT_CERT_AUTH",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub peer_client_cert_auth: bool,
    /// Peer TLS using generated certificates.
    #[arg(
        long,
        env = "ETCD_PEER_AUTO_TLS",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub peer_auto_tls: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Comma-separated list of supported TLS cipher suites between client/server
    /// and peers (Go's names; empty: the TLS library's defaults).
    #[arg(long, env = "ETCD_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,
    /// Enable leader to send regular checkpoints to other members to prevent
    /// reset of remaining TTL on leader change.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub experimental_enable_lease_checkpoint: bool,
    /// Enable persisting remainingTTL to prevent indefinite auto-renewal of long
    /// lived leases. Requires experimental-enable-lease-checkpoint.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT_PERSIST",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub experimental_enable_lease_checkpoint_persist: bool,
    /// Disables fsync of the WAL, unsafe, will cause data loss on a machine crash.
    #[arg(
        long,
        env = "ETCD_UNSAFE_NO_FSYNC",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub unsafe_no_fsync: bool,
    /// Enable to check data corruption before serving any client/peer traffic.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub experimental_initial_corrupt_check: bool,
    /// Duration of time between cluster corruption check passes (Go duration; 0s: off).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = parse_go_duration
    )]
    pub experimental_corrupt_check_time: Duration,
    /// Minimum interval duration that a client should wait before pinging server.
    #[arg(
        long,
        env = "ETCD_GRPC_KEEPALIVE_MIN_TIME",
        default_value = "5s",
        value_parser = parse_go_duration
    )]
    pub grpc_keepalive_min_time: Duration,
    /// Frequency duration of server-to-client ping to check if a connection is alive
    /// (0 to disable).
    #[arg(
        long,
        env = "ETCD_GRPC_KEEPALIVE_INTERVAL",
        default_value = "2h",
        value_parser = parse_go_duration
    )]
    pub grpc_keepalive_interval: Duration,
    /// Additional duration of wait before closing a non-responsive connection (0 to
    /// disable).
    #[arg(
        long,
        env = "ETCD_GRPC_KEEPALIVE_TIMEOUT",
        default_value = "20s",
        value_parser = parse_go_duration
    )]
    pub grpc_keepalive_timeout: Duration,
    /// Enable GRPC gateway (the JSON API under /v3/ and /v3beta/).
    #[arg(
        long,
        env = "ETCD_ENABLE_GRPC_GATEWAY",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub enable_grpc_gateway: bool,
    /// Enable runtime profiling data via HTTP server. Address is at client URL +
    /// "/debug/pprof/" (here: a CPU profile and the command line).
    #[arg(
        long,
        env = "ETCD_ENABLE_PPROF",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub enable_pprof: bool,
    /// Enable to run an additional Raft election phase (on by default, as in etcd 3.5).
    #[arg(
        long,
        env = "ETCD_PRE_VOTE",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub pre_vote: bool,
    /// [DEPRECATED] Enable debug-level logging for etcd (use --log-level=debug).
    #[arg(
        long,
        env = "ETCD_DEBUG",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub debug: bool,
    /// Comma-separated white list of origins for CORS, or cross-origin resource sharing
    /// (empty or * means allow all).
    #[arg(long, env = "ETCD_CORS", default_value = "")]
    pub cors: String,
    /// Comma-separated acceptable hostnames from HTTP client requests, if server is not
    /// secure (empty or * means allow all).
    #[arg(long, env = "ETCD_HOST_WHITELIST", default_value = "*")]
    pub host_whitelist: String,
    /// Time duration after which a warning is generated if request takes more time.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION",
        default_value = "100ms",
        value_parser = parse_go_duration
    )]
    pub experimental_warning_apply_duration: Duration,
    /// Maximum number of snapshot files to retain (0 is unlimited). This server writes
    /// no snapshot files (its snapshots are the backend itself): none to retain.
    #[arg(long, env = "ETCD_MAX_SNAPSHOTS", default_value_t = 5)]
    pub max_snapshots: u32,
    /// Maximum number of wal files to retain (0 is unlimited).
    #[arg(long, env = "ETCD_MAX_WALS", default_value_t = 5)]
    pub max_wals: u32,
    /// Set level of detail for exported metrics, specify 'extensive' to include server
    /// side grpc histogram metrics.
    #[arg(long, env = "ETCD_METRICS", default_value = "basic",
          value_parser = ["basic", "extensive"])]
    pub metrics: String,
    /// Whether to fast-forward initial election ticks on boot for faster election.
    #[arg(
        long,
        env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub initial_election_tick_advance: bool,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(
        long,
        env = "ETCD_STRICT_RECONFIG_CHECK",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub strict_reconfig_check: bool,
    /// Force to create a new one member cluster (disaster recovery: restart this
    /// member as the only voter, keeping its data).
    #[arg(
        long,
        env = "ETCD_FORCE_NEW_CLUSTER",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub force_new_cluster: bool,
    /// Path to the server configuration file (etcd's YAML); when given, the other
    /// flags and the ETCD_* variables are ignored (read in `config_file`).
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    pub config_file: Option<String>,
    /// Print the version and exit.
    #[arg(long)]
    pub version: bool,
}

impl Flags {
    /// etcd's auto-compaction flags: off for retention 0; periodic retentions
    /// are Go durations or whole hours, revision retentions are counts.
    pub fn auto_compaction(&self) -> Result<Option<AutoCompaction>, String> {
        let retention = self.auto_compaction_retention.trim();
        if retention == "0" || retention.is_empty() {
            return Ok(None);
        }
        let bad = || {
            format!(
                "invalid --auto-compaction-retention {retention:?} for mode {:?}: use e.g. 1h or 30m \
                 (periodic) or a revision count (revision)",
                self.auto_compaction_mode
            )
        };
        match self.auto_compaction_mode.as_str() {
            "periodic" => match retention.parse::<u64>() {
                Ok(hours) => Ok(Some(AutoCompaction::Periodic(Duration::from_secs(hours * 3600)))),
                Err(_) => parse_go_duration(retention)
                    .map(|d| (!d.is_zero()).then_some(AutoCompaction::Periodic(d)))
                    .map_err(|_| bad()),
            },
            "revision" => match retention.parse::<i64>() {
                Ok(count) if count > 0 => Ok(Some(AutoCompaction::Revision(count))),
                _ => Err(bad()),
            },
            other => {
                Err(format!("invalid --auto-compaction-mode {other:?}: use periodic or revision"))
            }
        }
    }

    /// The peer URLs to bind.
    pub fn listen_peer_urls(&self) -> Vec<String> {
        comma_list(&self.listen_peer_urls)
    }

    /// The URLs serving only `/metrics` and `/health`.
    pub fn listen_metrics_urls(&self) -> Vec<String> {
        comma_list(&self.listen_metrics_urls)
    }

    /// The client URLs to bind.
    pub fn listen_client_urls(&self) -> Vec<String> {
        comma_list(&self.listen_client_urls)
    }

    /// Builds the member configuration, checking what the flags say.
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let data_dir =
            self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        let peer_urls = comma_list(&self.initial_advertise_peer_urls);
        let initial_cluster = match &self.initial_cluster {
            Some(spec) => parse_initial_cluster(spec)?,
            None => vec![(self.name.clone(), peer_urls.clone())],
        };
        let initial_cluster_state = match self.initial_cluster_state.as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => {
                return Err(format!(
                    "invalid value {other:?} for --initial-cluster-state: use 'new' or 'existing'"
                ))
            }
        };
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            return Err(format!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.experimental_enable_lease_checkpoint_persist
            && !self.experimental_enable_lease_checkpoint
        {
            return Err("setting experimental-enable-lease-checkpoint-persist requires \
                        experimental-enable-lease-checkpoint"
                .to_string());
        }
        if self.experimental_enable_lease_checkpoint
            && !self.experimental_enable_lease_checkpoint_persist
        {
            tracing::warn!(
                "Detected that checkpointing is enabled without persistence. Consider enabling \
                 experimental-enable-lease-checkpoint-persist"
            );
        }
        let jwt = auth_token_provider(&self.auth_token)
            .map_err(|e| format!("failed to create token provider: {e}"))?;
        let bcrypt_cost = etcd_auth::valid_bcrypt_cost(self.bcrypt_cost).unwrap_or_else(|| {
            tracing::warn!(
                given_cost = self.bcrypt_cost,
                default_cost = etcd_auth::DEFAULT_BCRYPT_COST,
                "use default bcrypt cost instead of the invalid given cost"
            );
            etcd_auth::DEFAULT_BCRYPT_COST
        });
        let backend_batch_interval = match self.backend_batch_interval.as_str() {
            "" => Duration::ZERO,
            text => parse_go_duration(text)
                .map_err(|e| format!("invalid --backend-batch-interval: {e}"))?,
        };
        let backend_batch_interval = if backend_batch_interval.is_zero() {
            Duration::from_millis(100)
        } else {
            backend_batch_interval
        };
        let quota = if self.quota_backend_bytes == 0 {
            2 * 1024 * 1024 * 1024
        } else {
            self.quota_backend_bytes
        };
        Ok(ServerConfig {
            name: self.name.clone(),
            data_dir,
            initial_cluster,
            initial_cluster_token: self.initial_cluster_token.clone(),
            initial_cluster_state,
            advertise_client_urls: comma_list(&self.advertise_client_urls),
            initial_advertise_peer_urls: peer_urls,
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.experimental_snapshot_catchup_entries,
            backend_batch_interval,
            backend_batch_limit: if self.backend_batch_limit == 0 {
                10_000
            } else {
                self.backend_batch_limit
            },
            auto_compaction: self.auto_compaction()?,
            quota_backend_bytes: quota,
            max_request_bytes: self.max_request_bytes,
            max_concurrent_streams: self.max_concurrent_streams,
            max_txn_ops: self.max_txn_ops,
            compaction_batch_limit: match self.experimental_compaction_batch_limit {
                0 => etcd_mvcc::DEFAULT_COMPACTION_BATCH_LIMIT,
                limit => limit,
            },
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            join: None,
            // etcd keeps its 10-minute default for a zero interval.
            watch_progress_notify_interval: match self.experimental_watch_progress_notify_interval {
                zero if zero.is_zero() => Duration::from_secs(600),
                interval => interval,
            },
            peer_client_tls: None,
            bcrypt_cost,
            jwt,
            auth_token_ttl: Duration::from_secs(self.auth_token_ttl),
            unsafe_no_fsync: self.unsafe_no_fsync,
            force_new_cluster: self.force_new_cluster,
            enable_grpc_gateway: self.enable_grpc_gateway,
            enable_pprof: self.enable_pprof,
            pre_vote: self.pre_vote,
            host_whitelist: comma_list(&self.host_whitelist),
            cors: cors_origins(&self.cors)?,
            warning_apply_duration: self.experimental_warning_apply_duration,
            max_wals: self.max_wals,
            extensive_metrics: self.metrics == "extensive",
            initial_election_tick_advance: self.initial_election_tick_advance,
            strict_reconfig_check: self.strict_reconfig_check,
            grpc_keepalive_interval: (!self.grpc_keepalive_interval.is_zero())
                .then_some(self.grpc_keepalive_interval),
            grpc_keepalive_timeout: self.grpc_keepalive_timeout,
            grpc_keepalive_min_time: self.grpc_keepalive_min_time,
            initial_corrupt_check: self.experimental_initial_corrupt_check,
            corrupt_check_time: (!self.experimental_corrupt_check_time.is_zero())
                .then_some(self.experimental_corrupt_check_time),
            wal_dir: (!self.wal_dir.is_empty()).then(|| PathBuf::from(&self.wal_dir)),
            lease_checkpoint: ServerConfig::lease_checkpointing(
                self.experimental_enable_lease_checkpoint,
                self.experimental_enable_lease_checkpoint_persist,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flag_policy::{check_env, normalise};

    #[test]
    fn etcd_variables_are_refused_and_warned_like_their_flags() {
        let vars = |list: &[(&str, &str)]| {
            list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>().into_iter()
        };
        let declared = vec!["name".to_string()];
        let err = check_env(vars(&[("ETCD_DISCOVERY", "https://d/x")]), &declared, &[]);
        assert!(err.unwrap_err().starts_with("ETCD_DISCOVERY=https://d/x (--discovery): "));
        assert!(check_env(vars(&[("ETCD_PROXY", "on")]), &declared, &[]).is_err());
        let (ignored, unknown) = check_env(
            vars(&[
                ("ETCD_NAME", "a"),
                ("ETCD_ENABLE_V2", "true"),
                ("ETCD_NO_SUCH_FLAG", "1"),
                ("ETCDCTL_API", "3"),
                ("ETCD_PROXY", "off"),
            ]),
            &declared,
            &[],
        )
        .expect("nothing refused");
        assert_eq!(ignored, ["enable-v2"]);
        assert_eq!(unknown, ["ETCD_NO_SUCH_FLAG"]);
        let shadowed = check_env(
            vars(&[("ETCD_DISCOVERY", "https://d/x")]),
            &declared,
            &["discovery".to_string()],
        );
        assert!(shadowed.is_ok(), "the command line wins, as in etcd");
    }

    use std::path::Path;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_style_single_dash_flags_are_accepted() {
        let (out, _) = normalise(args(&["etcd", "-name", "a", "--data-dir=x"])).expect("ok");
        assert_eq!(out, args(&["etcd", "--name", "a", "--data-dir=x"]));
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value_and_bool_flags_take_an_optional_value() {
        let flags = Flags::try_parse_from([
            "etcd",
            "--name=a",
            "--name=b",
            "--client-cert-auth",
            "--cert-file=c.pem",
            "--key-file=k.pem",
        ])
        .expect("parses");
        assert_eq!(flags.name, "b");
        assert!(flags.client_cert_auth);
        assert!(flags.client_tls(Path::new("unused")).expect("complete").is_some());
        let off = Flags::try_parse_from(["etcd", "--client-cert-auth=false"]).expect("parses");
        assert!(!off.client_cert_auth);
        let alone = Flags::try_parse_from(["etcd", "--client-cert-auth"]).expect("parses");
        assert!(
            alone.client_tls(Path::new("unused")).is_err(),
            "client cert auth without TLS is refused"
        );
    }

    #[test]
    fn lease_checkpoint_persistence_needs_checkpoints() {
        let only_persist =
            Flags::try_parse_from(["etcd", "--experimental-enable-lease-checkpoint-persist"])
                .expect("parse");
        let err = only_persist.server_config().expect_err("refused");
        assert_eq!(
            err,
            "setting experimental-enable-lease-checkpoint-persist requires \
             experimental-enable-lease-checkpoint"
        );
        let both = Flags::try_parse_from([
            "etcd",
            "--experimental-enable-lease-checkpoint",
            "--experimental-enable-lease-checkpoint-persist=true",
        ])
        .expect("parse");
        let checkpointing = both.server_config().expect("config").lease_checkpoint;
        assert!(checkpointing.is_some_and(|c| c.persist));
        let none = Flags::try_parse_from(["etcd"]).expect("parse");
        assert_eq!(none.server_config().expect("config").lease_checkpoint, None);
    }

    #[test]
    fn ignored_flags_are_dropped_with_their_values() {
        let (out, ignored) =
            normalise(args(&["etcd", "--enable-v2", "--name", "a", "--discovery-fallback=proxy"]))
                .expect("ok");
        assert_eq!(out, args(&["etcd", "--name", "a"]));
        assert_eq!(ignored, args(&["enable-v2", "discovery-fallback"]));
    }

    #[test]
    fn backend_batch_flags_bound_the_durable_commits() {
        let config = |argv: &[&str]| {
            Flags::try_parse_from(argv.iter().copied()).expect("parse").server_config()
        };
        let defaults = config(&["etcd"]).expect("config");
        assert_eq!(defaults.backend_batch_interval, Duration::from_millis(100));
        assert_eq!(defaults.backend_batch_limit, 10_000);
        let zero = config(&["etcd", "--backend-batch-interval=0", "--backend-batch-limit=0"])
            .expect("config");
        assert_eq!(zero.backend_batch_interval, Duration::from_millis(100));
        assert_eq!(zero.backend_batch_limit, 10_000);
        let set = config(&["etcd", "--backend-batch-interval=5ms", "--backend-batch-limit=50"])
            .expect("config");
        assert_eq!(set.backend_batch_interval, Duration::from_millis(5));
        assert_eq!(set.backend_batch_limit, 50);
        assert!(config(&["etcd", "--backend-batch-interval=5"]).is_err());
    }

    #[test]
    fn unsupported_tls_flags_are_refused() {
        let err = normalise(args(&["etcd", "--discovery", "https://discovery.etcd.io/x"]));
        assert!(err.unwrap_err().contains("--initial-cluster instead"));
        assert!(normalise(args(&["etcd", "--discovery-srv=example.com"])).is_err());
        assert!(normalise(args(&["etcd", "--discovery="])).is_ok(), "empty: not asked for");
        assert!(normalise(args(&["etcd", "--proxy", "off"])).is_ok());
        assert!(normalise(args(&["etcd", "--proxy=readonly"])).is_err());
        assert!(normalise(args(&["etcd", "--peer-crl-file", "x"])).is_ok());
        assert!(normalise(args(&["etcd", "--peer-auto-tls"])).is_ok());
        assert!(normalise(args(&["etcd", "--cert-file", "x"])).is_ok());
    }

    #[test]
    fn initial_cluster_groups_urls_per_member() {
        let parsed =
            parse_initial_cluster("a=http://1:2380,b=http://2:2380,a=http://3:2380").expect("ok");
        assert_eq!(parsed[0], ("a".to_string(), args(&["http://1:2380", "http://3:2380"])));
        assert_eq!(parsed[1], ("b".to_string(), args(&["http://2:2380"])));
        assert!(parse_initial_cluster("nonsense").is_err());
    }
}
