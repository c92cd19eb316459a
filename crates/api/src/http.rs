//! Plain HTTP endpoints on the client port, next to gRPC: `/health` and
//! `/version` with etcd's JSON bodies (load balancers and scripts poll them), and
//! `/metrics` for Prometheus; `/livez` and `/readyz` live in `probes.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::AlarmType;

use crate::{CLUSTER_VERSION, SERVER_VERSION};

/// How long `/health` waits for a linearizable read before calling the member unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// etcd's `/health`: healthy when no alarm is active (`?exclude=NOSPACE` ignores
/// one), there is a leader and a linearizable read completes in time
/// (`?serializable=true` asks only for a local read, leader or not).
async fn health(State(server): State<Arc<EtcdServer>>, query: RawQuery) -> impl IntoResponse {
    let mut excluded = Vec::new();
    let mut serializable = false;
    for pair in query.0.as_deref().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("exclude", alarm)) => excluded.push(alarm.to_string()),
            Some(("serializable", value)) => serializable = value == "true",
            _ => {}
        }
    }
    let alarm = server.alarms().into_iter().find_map(|a| {
        let name = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
        (!excluded.iter().any(|e| e == name)).then_some(name)
    });
    let reason = if let Some(alarm) = alarm {
        Some(format!("ALARM {alarm}"))
    } else if serializable {
        None
    } else if server.status().leader_id == 0 {
        Some("RAFT NO LEADER".to_string())
    } else {
        match tokio::time::timeout(HEALTH_TIMEOUT, server.read_barrier()).await {
            Ok(Ok(())) => None,
            _ => Some("QGET ERROR".to_string()),
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

/// Prometheus metrics under etcd's names.
async fn metrics(State(server): State<Arc<EtcdServer>>) -> impl IntoResponse {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], server.metrics_text())
}

/// What `--listen-metrics-urls` serve: `/metrics` and `/health`, as etcd.
pub fn metrics_router(server: Arc<EtcdServer>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(server.clone())
        .merge(crate::probes::router(server))
}

/// Serves [`metrics_router`] on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    server: Arc<EtcdServer>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_router(server)).with_graceful_shutdown(shutdown).await
}

/// The HTTP routes served beside the gRPC services.
pub fn router(server: Arc<EtcdServer>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(server.clone())
        .merge(crate::probes::router(server.clone()))
        .merge(crate::gateway::router(server))
}
