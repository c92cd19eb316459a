//! The async shell of one member. It opens the data directory
//! ([`bootstrap`]), runs the raft loop (the only owner of Raft and the WAL) on its
//! own thread and the apply loop (the only writer of the backend) as a task of
//! the runtime that serves clients, and offers
//! [`EtcdServer`] to the API layer: proposals and ReadIndex barriers as futures.
//!
//! Write path: handler -> [`EtcdServer::propose`] registers a waiter and hands the
//! encoded request to the raft loop -> Raft appends it, the WAL fsyncs it (one fsync
//! per Ready, shared by every proposal in it) -> committed -> the apply loop applies
//! it in one backend transaction with the consistent index -> the waiter wakes.

pub mod adopt;
pub mod bootstrap;
pub mod config;
pub mod handback;

mod alarms;
mod apply_loop;
mod auth;
mod client_snapshot;
mod clock;
mod compactor;
mod corrupt_check;
mod data_dir;
mod defrag;
mod faults;
mod force_new_cluster;
mod inputs;
mod lease;
mod lease_forward;
mod lease_peer;
mod membership;
mod metrics;
pub use metrics::{GrpcMetrics, MethodCounters, GRPC_CODES, GRPC_METHODS};
mod raft_loop;
pub mod range_stream;
mod reconfig_check;
mod server;
mod shared;
mod snapshot;
mod start;
mod wal_writer;

pub use auth::Caller;
pub use config::AutoCompaction;
pub use config::{ClusterState, ServerConfig};
pub use data_dir::StartError;
pub use lease_peer::RenewNow;
pub use server::{EtcdServer, StatusInfo};

/// The server version reported to clients (`Status`, `/version`) and in metrics:
/// the newest etcd 3.5 patch release whose client-visible behaviour this server
/// implements (ARCHITECTURE.md says which behaviours that takes). Clients gate
/// features on it: Kubernetes enables consistent reads from its watch cache and
/// watch-list from 3.5.13 on, relying on that release's progress notifications.
pub const SERVER_VERSION: &str = "3.5.13";
/// The cluster version reported to clients and in metrics (etcd reports the
/// cluster's major.minor with patch 0).
pub const CLUSTER_VERSION: &str = "3.5.0";
