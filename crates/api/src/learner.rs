//! What a learner serves. etcd lets a learner answer only `Maintenance.Status`
//! and serializable `KV.Range` (the Range handler checks `serializable`); every
//! other RPC, unary or streaming, gets `etcdserver: rpc not supported for
//! learner`. One gate in front of every gRPC service keeps that rule in one place.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// Refuses the request if this member is a learner and the RPC is one etcd
/// does not serve on learners; plain HTTP paths (`/health`, `/version`) pass.
pub(crate) async fn gate(
    State(server): State<Arc<EtcdServer>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let grpc = path.starts_with("/etcdserverpb.")
        || path.starts_with("/v3electionpb.")
        || path.starts_with("/v3lockpb.");
    if grpc {
        if let Some(status) = refusal(&server, path) {
            return status.into_http::<axum::body::Body>().into_response();
        }
    }
    next.run(request).await
}
