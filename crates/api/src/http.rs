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

use crate::{CLUSTER_VERSION, SERVER_VERSION};

/// How long `/health` waits for a linearizable read before calling the member unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// `name=value` pairs of a raw query string (a bare `name` has an empty value).
pub(crate) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// etcd's `/health`: healthy when no alarm is active (`?exclude=NOSPACE` ignores
/// one), there is a leader and a linearizable read completes in time
/// (`?serializable=true` asks only for a local read, leader or not).
async fn health(State(server): State<Arc<EtcdServer>>, query: RawQuery) -> impl IntoResponse {
    let mut excluded = Vec::new();
    let mut serializable = false;
    for (name, value) in query_pairs(query.0.as_deref()) {
        match name {
            "exclude" => excluded.push(value.to_string()),
            "serializable" => serializable = value == "true",
            _ => {}
        }
    }
    let alarm = server.alarms().into_iter().find_map(|a| {
        let name = etcd_server::alarms::alarm_name(a.alarm);
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
    let gateway = server.config().enable_grpc_gateway;
    let router = Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(server.clone())
        .merge(crate::probes::router(server.clone()));
    match gateway {
        true => router.merge(crate::gateway::router(server)),
        false => router,
    }
}
