//! Kubernetes-style probes, as etcd 3.6 (and late 3.5) serve them: `/livez`
//! (the member can read its own store) and `/readyz` (also: no data corruption
//! alarm, a linearizable read completes, not a learner). Each check also answers
//! at `/livez/<check>` or `/readyz/<check>`; `?exclude=<check>` skips one and
//! `?verbose` lists every check. Probes only read the status code.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::{AlarmType, RangeRequest};

/// How long the linearizable read check may take.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
    NonLearner,
}

const LIVEZ: &[Check] = &[Check::SerializableRead];
const READYZ: &[Check] =
    &[Check::DataCorruption, Check::SerializableRead, Check::LinearizableRead, Check::NonLearner];

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
        }
    }

    async fn run(self, server: &EtcdServer) -> Result<(), String> {
        let probe = |serializable| RangeRequest {
            key: b"health".to_vec(),
            serializable,
            count_only: true,
            ..Default::default()
        };
        match self {
            Check::DataCorruption => {
                let corrupt = server.alarms().iter().any(|a| a.alarm == AlarmType::Corrupt as i32);
                if corrupt {
                    return Err("alarm activated: CORRUPT".to_string());
                }
                Ok(())
            }
            Check::SerializableRead => {
                server.range(&probe(true)).await.map(drop).map_err(|e| e.to_string())
            }
            Check::LinearizableRead => {
                match tokio::time::timeout(READ_TIMEOUT, server.range(&probe(false))).await {
                    Ok(read) => read.map(drop).map_err(|e| e.to_string()),
                    Err(_) => Err("request timed out".to_string()),
                }
            }
            Check::NonLearner => {
                if server.status().is_learner {
                    return Err("this member is a learner".to_string());
                }
                Ok(())
            }
        }
    }
}

/// Runs `checks` (minus the excluded ones) and answers as etcd does: `ok` with
/// 200, or the failed checks with 503.
async fn probe(server: &EtcdServer, kind: &str, checks: &[Check], query: Option<&str>) -> Response {
    let mut excluded = Vec::new();
    let mut verbose = false;
    for (name, value) in crate::http::query_pairs(query) {
        match name {
            "exclude" => excluded.push(value.to_string()),
            "verbose" => verbose = true,
            _ => {}
        }
    }
    let mut report = String::new();
    let mut failed = false;
    for check in checks {
        let name = check.name();
        if excluded.iter().any(|e| e == name) {
            report.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match check.run(server).await {
            Ok(()) => report.push_str(&format!("[+]{name} ok\n")),
            Err(reason) => {
                failed = true;
                report.push_str(&format!("[-]{name} failed: {reason}\n"));
            }
        }
    }
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if failed {
        report.push_str(&format!("{kind} check failed\n"));
        return (StatusCode::SERVICE_UNAVAILABLE, text, report).into_response();
    }
    let body = if verbose { format!("{report}ok\n") } else { "ok\n".to_string() };
    (StatusCode::OK, text, body).into_response()
}

fn named(checks: &[Check], name: &str) -> Option<Check> {
    checks.iter().copied().find(|c| c.name() == name)
}

/// The `/livez` and `/readyz` routes.
pub(crate) fn router(server: Arc<EtcdServer>) -> Router {
    type S = State<Arc<EtcdServer>>;
    async fn livez(State(s): S, q: RawQuery) -> Response {
        probe(&s, "livez", LIVEZ, q.0.as_deref()).await
    }
    async fn readyz(State(s): S, q: RawQuery) -> Response {
        probe(&s, "readyz", READYZ, q.0.as_deref()).await
    }
    async fn one(s: &EtcdServer, kind: &str, checks: &[Check], name: &str) -> Response {
        match named(checks, name) {
            Some(check) => probe(s, kind, &[check], None).await,
            None => {
                (StatusCode::NOT_FOUND, format!("no {kind} check named {name}\n")).into_response()
            }
        }
    }
    async fn livez_one(State(s): S, Path(name): Path<String>) -> Response {
        one(&s, "livez", LIVEZ, &name).await
    }
    async fn readyz_one(State(s): S, Path(name): Path<String>) -> Response {
        one(&s, "readyz", READYZ, &name).await
    }
    Router::new()
        .route("/livez", get(livez))
        .route("/livez/{check}", get(livez_one))
        .route("/readyz", get(readyz))
        .route("/readyz/{check}", get(readyz_one))
        .with_state(server)
}
