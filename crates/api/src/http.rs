//! Plain HTTP endpoints on the client port, next to gRPC: `/health` and
//! `/version` with etcd's JSON bodies (load balancers and scripts poll them).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use etcd_daemon::EtcdServer;

use crate::{CLUSTER_VERSION, SERVER_VERSION};

/// How long `/health` waits for a linearizable read before calling the member unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// etcd's `/health`: healthy when there is a leader and a linearizable read
/// completes in time.
async fn health(State(server): State<Arc<EtcdServer>>) -> impl IntoResponse {
    let reason = if server.status().leader_id == 0 {
        Some("RAFT NO LEADER")
    } else {
        match tokio::time::timeout(HEALTH_TIMEOUT, server.read_barrier()).await {
            Ok(Ok(())) => None,
            _ => Some("QGET ERROR"),
        }
    };
    match reason {
        None => json(StatusCode::OK, r#"{"health":"true","reason":""}"#.to_string()),
        Some(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"health":"false","reason":"{reason}"}}"#),
        ),
    }
}

async fn version() -> impl IntoResponse {
    json(
        StatusCode::OK,
        format!(r#"{{"etcdserver":"{SERVER_VERSION}","etcdcluster":"{CLUSTER_VERSION}"}}"#),
    )
}

/// The HTTP routes served beside the gRPC services.
pub fn router(server: Arc<EtcdServer>) -> Router {
    Router::new().route("/health", get(health)).route("/version", get(version)).with_state(server)
}
