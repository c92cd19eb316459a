//! The member's Prometheus metrics, under etcd's names so existing dashboards and
//! alerts (has_leader, leader changes, proposals, fsync and commit latency, db
//! size) work unchanged. Events are counted where they happen (raft and apply
//! loops, proposals); gauges that mirror published state are set at scrape time.

use std::sync::Arc;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of one member.
pub(crate) struct Metrics {
    registry: Registry,
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub is_learner: IntGauge,
    pub leader_changes: IntCounter,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub quota_backend_bytes: IntGauge,
    pub db_total_size: IntGauge,
    pub db_total_size_in_use: IntGauge,
    pub keys_total: IntGauge,
    pub current_revision: IntGauge,
    pub compact_revision: IntGauge,
    pub wal_fsync_seconds: Histogram,
    pub backend_commit_seconds: Histogram,
    pub grpc: GrpcMetrics,
    pub mvcc_ranges: IntCounter,
    pub mvcc_puts: IntCounter,
    pub mvcc_deletes: IntCounter,
    pub mvcc_txns: IntCounter,
    pub slow_applies: IntCounter,
    pub compaction_keys: IntCounter,
    pub compaction_pause_ms: Histogram,
    pub compaction_total_ms: Histogram,
    pub write_stages: WriteStages,
}

/// Where a write's time goes on this member, stage by stage
/// (`etcdrs_write_stage_duration_seconds{stage=...}`, this server's own metric:
/// etcd has none). A proposal's `total` is about the sum of its stages plus the
/// gRPC handling around it.
pub struct WriteStages {
    /// From the proposal leaving its request to the raft loop taking it in.
    pub propose_queue: Histogram,
    /// One raft loop turn: the inputs stepped and the Ready cycles run.
    pub raft_turn: Histogram,
    /// From a Ready's writes leaving the raft loop to the WAL writer taking them.
    pub wal_queue: Histogram,
    /// One WAL write: the appends the writer took together and their fsync.
    pub wal_persist: Histogram,
    /// From committed entries leaving the raft loop to the apply loop taking them.
    pub apply_queue: Histogram,
    /// Applying one batch of entries, its backend commit included.
    pub apply: Histogram,
    /// From the apply loop waking a proposal to its request resuming.
    pub wake: Histogram,
    /// A proposal from start to result.
    pub total: Histogram,
}

impl WriteStages {
    fn new(registry: &Registry) -> WriteStages {
        let opts = HistogramOpts::new(
            "etcdrs_write_stage_duration_seconds",
            "Where a write's time goes on this member, by stage.",
        )
        // 10 µs to about 2.6 s.
        .buckets(exponential_buckets(0.000_01, 2.0, 19).expect("valid buckets"));
        let vec = prometheus::HistogramVec::new(opts, &["stage"]).expect("a valid histogram");
        registry.register(Box::new(vec.clone())).expect("a unique metric");
        let stage = |name: &str| vec.with_label_values(&[name]);
        WriteStages {
            propose_queue: stage("propose_queue"),
            raft_turn: stage("raft_turn"),
            wal_queue: stage("wal_queue"),
            wal_persist: stage("wal_persist"),
            apply_queue: stage("apply_queue"),
            apply: stage("apply"),
            wake: stage("wake"),
            total: stage("total"),
        }
    }
}

/// go-grpc-prometheus's server counters, which etcd exports for its gRPC
/// services (`grpc_server_*`, labelled by type, service, method and code),
/// resolved once per method so counting a call touches only atomics.
pub struct GrpcMetrics {
    /// By request path (`/etcdserverpb.KV/Range`).
    methods: std::collections::HashMap<String, Arc<MethodCounters>>,
}

/// The counters of one gRPC method.
pub struct MethodCounters {
    /// Calls started.
    pub started: IntCounter,
    /// Calls completed, by gRPC status code (the index into [`GRPC_CODES`]).
    pub handled: Vec<IntCounter>,
    /// Messages received from clients.
    pub msg_received: IntCounter,
    /// Messages sent to clients.
    pub msg_sent: IntCounter,
    /// Seconds from the call's start to its status (`--metrics=extensive` only).
    pub handling_seconds: Option<Histogram>,
}

/// The gRPC status codes by Go's names, as go-grpc-prometheus labels them.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Every gRPC method etcd serves to clients: (service, method, grpc_type).
pub const GRPC_METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.KV", "RangeStream", "server_stream"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
];

impl GrpcMetrics {
    fn new(registry: &Registry, extensive: bool) -> GrpcMetrics {
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let vec = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
            registry.register(Box::new(vec.clone())).expect("a unique metric");
            vec
        };
        let started = vec(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &labels,
        );
        let handled = vec(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        );
        let received = vec(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            &labels,
        );
        let sent = vec(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            &labels,
        );
        let handling = extensive.then(|| {
            let opts = HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level \
                 handled by the server.",
            );
            let vec = prometheus::HistogramVec::new(opts, &labels).expect("a valid histogram");
            registry.register(Box::new(vec.clone())).expect("a unique metric");
            vec
        });
        // Every method and code shows from the start, at 0, as go-grpc-prometheus does.
        let methods = GRPC_METHODS
            .iter()
            .map(|&(service, method, kind)| {
                let labels = [kind, service, method];
                let counters = MethodCounters {
                    started: started.with_label_values(&labels),
                    handled: GRPC_CODES
                        .iter()
                        .map(|code| handled.with_label_values(&[kind, service, method, code]))
                        .collect(),
                    msg_received: received.with_label_values(&labels),
                    msg_sent: sent.with_label_values(&labels),
                    handling_seconds: handling.as_ref().map(|h| h.with_label_values(&labels)),
                };
                (format!("/{service}/{method}"), Arc::new(counters))
            })
            .collect();
        GrpcMetrics { methods }
    }

    /// The counters of the method at request path `path`, if it is one of etcd's.
    pub fn method(&self, path: &str) -> Option<&Arc<MethodCounters>> {
        self.methods.get(path)
    }
}

fn gauge(registry: &Registry, subsystem: &str, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::with_opts(Opts::new(name, help).namespace("etcd").subsystem(subsystem))
        .expect("a valid gauge");
    registry.register(Box::new(gauge.clone())).expect("a unique metric");
    gauge
}

fn counter(registry: &Registry, subsystem: &str, name: &str, help: &str) -> IntCounter {
    let counter =
        IntCounter::with_opts(Opts::new(name, help).namespace("etcd").subsystem(subsystem))
            .expect("a valid counter");
    registry.register(Box::new(counter.clone())).expect("a unique metric");
    counter
}

/// etcd's `etcd_<subsystem>_version{<label>="..."} 1`.
fn version(registry: &Registry, subsystem: &str, label: &str, value: &str) {
    let help = format!("Which version is running. 1 for '{label}' label with current version.");
    let opts = Opts::new("version", help).namespace("etcd").subsystem(subsystem);
    let vec = IntGaugeVec::new(opts, &[label]).expect("a valid gauge");
    vec.with_label_values(&[value]).set(1);
    registry.register(Box::new(vec)).expect("a unique metric");
}

/// etcd's latency buckets: 1 ms doubling up to about 8 s.
fn latency(registry: &Registry, subsystem: &str, name: &str, help: &str) -> Histogram {
    histogram(registry, subsystem, name, help, (0.001, 14))
}

/// A histogram with exponential buckets, `(first bound, count)`, doubling.
fn histogram(
    registry: &Registry,
    subsystem: &str,
    name: &str,
    help: &str,
    (start, count): (f64, usize),
) -> Histogram {
    let opts = HistogramOpts::new(name, help)
        .namespace("etcd")
        .subsystem(subsystem)
        .buckets(exponential_buckets(start, 2.0, count).expect("valid buckets"));
    let histogram = Histogram::with_opts(opts).expect("a valid histogram");
    registry.register(Box::new(histogram.clone())).expect("a unique metric");
    histogram
}

impl Metrics {
    /// `extensive`: etcd's `--metrics=extensive` (gRPC handling-time histograms).
    pub fn new(extensive: bool) -> Metrics {
        let r = Registry::new();
        version(&r, "server", "server_version", crate::SERVER_VERSION);
        // etcd labels the cluster version by major.minor only.
        let cluster =
            crate::CLUSTER_VERSION.rsplit_once('.').map_or(crate::CLUSTER_VERSION, |v| v.0);
        version(&r, "cluster", "cluster_version", cluster);
        Metrics {
            has_leader: gauge(
                &r,
                "server",
                "has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                &r,
                "server",
                "is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            is_learner: gauge(
                &r,
                "server",
                "is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                &r,
                "server",
                "leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_committed: gauge(
                &r,
                "server",
                "proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                &r,
                "server",
                "proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                &r,
                "server",
                "proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                &r,
                "server",
                "proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            quota_backend_bytes: gauge(
                &r,
                "server",
                "quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            db_total_size: gauge(
                &r,
                "mvcc",
                "db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_total_size_in_use: gauge(
                &r,
                "mvcc",
                "db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            keys_total: gauge(&r, "debugging_mvcc", "keys_total", "Total number of keys."),
            current_revision: gauge(
                &r,
                "debugging_mvcc",
                "current_revision",
                "The current revision of store.",
            ),
            compact_revision: gauge(
                &r,
                "debugging_mvcc",
                "compact_revision",
                "The revision of the last compaction in store.",
            ),
            wal_fsync_seconds: latency(
                &r,
                "disk",
                "wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            ),
            backend_commit_seconds: latency(
                &r,
                "disk",
                "backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
            ),
            grpc: GrpcMetrics::new(&r, extensive),
            slow_applies: counter(
                &r,
                "server",
                "slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            compaction_keys: counter(
                &r,
                "debugging_mvcc",
                "db_compaction_keys_total",
                "Total number of db keys compacted.",
            ),
            compaction_pause_ms: histogram(
                &r,
                "debugging_mvcc",
                "db_compaction_pause_duration_milliseconds",
                "Bucketed histogram of db compaction pause duration.",
                (1.0, 13),
            ),
            compaction_total_ms: histogram(
                &r,
                "debugging_mvcc",
                "db_compaction_total_duration_milliseconds",
                "Bucketed histogram of db compaction total duration.",
                (100.0, 14),
            ),
            write_stages: WriteStages::new(&r),
            mvcc_ranges: counter(
                &r,
                "mvcc",
                "range_total",
                "Total number of ranges seen by this member.",
            ),
            mvcc_puts: counter(
                &r,
                "mvcc",
                "put_total",
                "Total number of puts seen by this member.",
            ),
            mvcc_deletes: counter(
                &r,
                "mvcc",
                "delete_total",
                "Total number of deletes seen by this member.",
            ),
            mvcc_txns: counter(
                &r,
                "mvcc",
                "txn_total",
                "Total number of txns seen by this member.",
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
