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

/// The HTTP routes served beside the gRPC services; `secure` when the listener
/// is `https://` or `unixs://` (the host whitelist applies to plain HTTP only).
pub fn router(server: Arc<EtcdServer>, secure: bool) -> Router {
    let gateway = server.config().enable_grpc_gateway;
    let policy = Arc::new(AccessPolicy {
        hosts: server.config().host_whitelist.clone(),
        origins: server.config().cors.clone(),
        secure,
    });
    let router = Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(server.clone())
        .merge(crate::probes::router(server.clone()));
    let router = match gateway {
        true => router.merge(crate::gateway::router(server.clone())),
        false => router,
    };
    let router = match server.config().enable_pprof {
        true => router.merge(crate::pprof::router()),
        false => router,
    };
    router.layer(axum::middleware::from_fn_with_state(policy, access_control))
}

/// `--host-whitelist` and `--cors`, as etcd's access controller applies them to
/// every HTTP request on the client port (gRPC is not HTTP/1 and not covered).
struct AccessPolicy {
    /// Host names a plain-HTTP request may name (empty or `*`: any).
    hosts: Vec<String>,
    /// Origins answered with CORS headers (empty or `*`: any, as `*`).
    origins: Vec<String>,
    secure: bool,
}

impl AccessPolicy {
    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == "*" || h == host)
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`.
    fn allow_origin(&self, origin: Option<&str>) -> Option<String> {
        if self.origins.is_empty() || self.origins.iter().any(|o| o == "*") {
            return Some("*".into());
        }
        origin.filter(|o| self.origins.iter().any(|allowed| allowed == o)).map(str::to_string)
    }
}

async fn access_control(
    State(policy): State<Arc<AccessPolicy>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !policy.secure {
        // The Host header without its port, as Go's net.SplitHostPort reads it.
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or_default();
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                name.trim_start_matches('[').trim_end_matches(']')
            }
            _ => host,
        };
        if !policy.host_allowed(name) {
            tracing::warn!(host = %name, "rejecting HTTP request to prevent DNS rebinding attacks");
            let body = format!(
                "\netcd received your request, but the Host header was unrecognized.\n\n\
                 To fix this, choose one of the following options:\n\
                 - Enable TLS, then any HTTPS request will be allowed.\n\
                 - Add the hostname you want to use to the whitelist in settings.\n\
                 \x20 - e.g. etcd --host-whitelist {name:?}\n\n\
                 This requirement has been added to help prevent \"DNS Rebinding\" attacks \
                 (CVE-2018-5702).\n\n"
            );
            let status = StatusCode::MISDIRECTED_REQUEST;
            let content_type = "text/plain; charset=utf-8";
            return (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
        }
    }
    let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let allow = policy.allow_origin(origin);
    let preflight = request.method() == axum::http::Method::OPTIONS;
    let mut response = match preflight {
        true => StatusCode::OK.into_response(),
        false => next.run(request).await,
    };
    if let Some(origin) = allow.and_then(|o| header::HeaderValue::from_str(&o).ok()) {
        let headers = response.headers_mut();
        let value = header::HeaderValue::from_static;
        headers
            .append(header::ACCESS_CONTROL_ALLOW_METHODS, value("POST, GET, OPTIONS, PUT, DELETE"));
        headers.append(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            value("accept, content-type, authorization"),
        );
    }
    response
}
