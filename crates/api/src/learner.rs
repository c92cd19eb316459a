//! What a learner serves. etcd lets a learner answer only `Maintenance.Status`
//! and serializable `KV.Range` (the Range handler checks `serializable`); every
//! other RPC, unary or streaming, gets `etcdserver: rpc not supported for
//! learner`. One gate in front of every gRPC service keeps that rule in one place.

use etcd_daemon::EtcdServer;

use crate::status::to_status;

/// gRPC paths a learner still serves.
const SERVED_BY_LEARNERS: [&str; 2] =
    ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

/// The refusal a learner answers an RPC with, if this member is a learner and
/// etcd does not serve `grpc_path` on learners.
pub(crate) fn refusal(server: &EtcdServer, grpc_path: &str) -> Option<tonic::Status> {
    if SERVED_BY_LEARNERS.contains(&grpc_path) {
        return None;
    }
    server.check_not_learner().err().map(|err| to_status(&err))
}

/// The refusal of a request to `path` (any of etcd's gRPC services) if this
/// member is a learner and etcd does not serve that RPC on learners; plain
/// HTTP paths (`/health`, `/version`) pass.
pub(crate) fn gate(server: &EtcdServer, path: &str) -> Option<tonic::Status> {
    let grpc = path.starts_with("/etcdserverpb.")
        || path.starts_with("/v3electionpb.")
        || path.starts_with("/v3lockpb.");
    if grpc {
        refusal(server, path)
    } else {
        None
    }
}
