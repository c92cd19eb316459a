//! The HTTP/JSON gateway (`/v3/...`), as etcd serves it through grpc-gateway:
//! a POST with a JSON request body calls the same service method the gRPC
//! route does, and answers its response as JSON (proto field names, 64-bit
//! integers as strings, bytes as base64, enums by name, defaults omitted).
//! Errors come back as `{"error", "code", "message"}` with the HTTP status
//! grpc-gateway maps the gRPC code to.

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::auth_server::Auth;
use etcd_proto::etcdserverpb::cluster_server::Cluster;
use etcd_proto::etcdserverpb::kv_server::Kv;
use etcd_proto::etcdserverpb::lease_server::Lease;
use etcd_proto::etcdserverpb::maintenance_server::Maintenance;
use etcd_proto::etcdserverpb::{LeaseKeepAliveRequest, WatchRequest};
use etcd_proto::v3electionpb::election_server::Election;
use etcd_proto::v3electionpb::LeaderRequest;
use etcd_proto::v3lockpb::lock_server::Lock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Status};

use crate::auth::AuthService;
use crate::cluster::ClusterService;
use crate::election::ElectionService;
use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::lock::LockService;
use crate::maintenance::MaintenanceService;

/// The services the gateway calls, as the gRPC routes do.
pub(crate) struct Gateway {
    server: Arc<EtcdServer>,
    /// One permit per call in flight, unary or streaming, for its whole life:
    /// etcd's gateway carries every call as a stream of one gRPC connection to
    /// its own server, so `--max-concurrent-streams` bounds them together and
    /// a call past the limit waits for one to end (etcd's e2e suite checks it).
    streams: Arc<Semaphore>,
    kv: KvService,
    auth: AuthService,
    lease: LeaseService,
    cluster: ClusterService,
    maintenance: MaintenanceService,
    lock: LockService,
    election: ElectionService,
}

type Shared = State<Arc<Gateway>>;

impl Gateway {
    /// Waits for a stream of the gateway's connection (see `streams`).
    async fn stream(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.streams).acquire_owned().await.expect("the semaphore is never closed")
    }
}

/// `responses`, holding `permit` until the stream ends or is dropped.
fn holding<S: Stream>(permit: OwnedSemaphorePermit, responses: S) -> impl Stream<Item = S::Item> {
    responses.map(move |item| {
        let _held = &permit;
        item
    })
}

/// grpc-gateway's HTTP status for a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        // grpc-gateway v1, which etcd 3.4 and 3.5 serve with.
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An error as grpc-gateway writes it.
pub(crate) fn error_response(status: &Status) -> Response {
    // Field order as grpc-gateway writes it.
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
        message: &'a str,
        code: i32,
    }
    let body =
        Error { error: status.message(), message: status.message(), code: status.code() as i32 };
    json_response(http_status(status.code()), serde_json::to_string(&body).unwrap_or_default())
}

/// Decodes a request body; an empty body is the default request.
pub(crate) fn decode<Req: DeserializeOwned + Default>(body: &[u8]) -> Result<Req, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Req::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The token of a gateway call: grpc-gateway passes the `Authorization`
/// header on as the `authorization` metadata etcd reads tokens from.
/// A gateway client is its token only: etcd never takes a CN for it.
fn caller_of(headers: &HeaderMap) -> etcd_daemon::Caller {
    etcd_daemon::Caller { token: authorization(headers), common_name: None }
}

fn authorization(headers: &HeaderMap) -> Option<String> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A gRPC request as the gateway hands it to a service: the decoded message
/// and the caller's token.
fn grpc_request<Req>(message: Req, token: Option<&str>) -> tonic::Request<Req> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = token.and_then(|t| t.parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// One unary call: JSON in, the gRPC method (checked as the gRPC route would
/// be), JSON out.
async fn unary<Req, Resp, Fut>(
    gateway: &Gateway,
    grpc_path: &str,
    headers: &HeaderMap,
    body: &[u8],
    call: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    if let Some(refused) = crate::learner::refusal(&gateway.server, grpc_path) {
        return error_response(&refused);
    }
    let request = match decode::<Req>(body) {
        Ok(request) => request,
        Err(status) => return error_response(&status),
    };
    let _stream = gateway.stream().await;
    match call(grpc_request(request, authorization(headers).as_deref())).await {
        Ok(response) => match serde_json::to_string(response.get_ref()) {
            Ok(json) => json_response(StatusCode::OK, json),
            Err(e) => error_response(&Status::internal(e.to_string())),
        },
        Err(status) => error_response(&status),
    }
}

/// Decodes a body holding one or more JSON requests (a streaming call's inbound
/// messages, as grpc-gateway reads them).
fn decode_stream<Req: DeserializeOwned>(body: &[u8]) -> Result<Vec<Result<Req, Status>>, Status> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Req>()
        .map(|r| r.map(Ok).map_err(|e| Status::invalid_argument(e.to_string())))
        .collect()
}

/// A streaming response: one `{"result": ...}` (or `{"error": ...}`) object per
/// line, as grpc-gateway frames server streams; ends when the call ends.
fn stream_response<Resp: Serialize + Send + 'static>(
    responses: impl Stream<Item = Result<Resp, Status>> + Send + 'static,
) -> Response {
    // Structs, not `json!`, so fields keep the order grpc-gateway writes.
    #[derive(Serialize)]
    struct Framed<T> {
        result: T,
    }
    #[derive(Serialize)]
    struct StreamError<'a> {
        grpc_code: i32,
        http_code: u16,
        message: &'a str,
        http_status: &'a str,
    }
    #[derive(Serialize)]
    struct Failed<'a> {
        error: StreamError<'a>,
    }
    let lines = responses.map(|item| {
        let line = match item {
            Ok(response) => serde_json::to_string(&Framed { result: response }),
            Err(status) => {
                let http = http_status(status.code());
                serde_json::to_string(&Failed {
                    error: StreamError {
                        grpc_code: status.code() as i32,
                        http_code: http.as_u16(),
                        message: status.message(),
                        http_status: http.canonical_reason().unwrap_or_default(),
                    },
                })
            }
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(line.unwrap_or_default() + "\n"))
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(lines))
        .into_response()
}

/// The inbound messages of a bidirectional call from its body, checked as the
/// gRPC route would be.
fn inbound<Req: DeserializeOwned>(
    g: &Gateway,
    grpc_path: &str,
    body: &[u8],
) -> Result<impl Stream<Item = Result<Req, Status>>, Status> {
    if let Some(refused) = crate::learner::refusal(&g.server, grpc_path) {
        return Err(refused);
    }
    decode_stream::<Req>(body).map(tokio_stream::iter)
}

/// `/v3/watch`: the watchers the body asks for, streamed until the client leaves.
async fn watch(State(g): Shared, headers: HeaderMap, body: Bytes) -> Response {
    match inbound::<WatchRequest>(&g, "/etcdserverpb.Watch/Watch", &body) {
        Ok(requests) => {
            let permit = g.stream().await;
            let rx = crate::watch::open(g.server.clone(), caller_of(&headers), requests);
            let responses = rx.map(|outbound| Ok::<_, Status>(outbound.into_response()));
            stream_response(holding(permit, responses))
        }
        Err(status) => error_response(&status),
    }
}

/// `/v3/lease/keepalive`: one answer per request in the body, then the end.
async fn keep_alive(State(g): Shared, body: Bytes) -> Response {
    match inbound::<LeaseKeepAliveRequest>(&g, "/etcdserverpb.Lease/LeaseKeepAlive", &body) {
        Ok(requests) => {
            let permit = g.stream().await;
            let responses = crate::lease::KeepAlives::new(g.server.clone(), requests);
            stream_response(holding(permit, responses))
        }
        Err(status) => error_response(&status),
    }
}

/// `/v3/election/observe`: the leader and its changes, until the client leaves.
async fn observe(State(g): Shared, body: Bytes) -> Response {
    let path = "/v3electionpb.Election/Observe";
    if let Some(refused) = crate::learner::refusal(&g.server, path) {
        return error_response(&refused);
    }
    let request = match decode::<LeaderRequest>(&body) {
        Ok(request) => request,
        Err(status) => return error_response(&status),
    };
    let permit = g.stream().await;
    match g.election.observe(tonic::Request::new(request)).await {
        Ok(stream) => stream_response(holding(permit, stream.into_inner())),
        Err(status) => error_response(&status),
    }
}

/// Declares one route per (path, gRPC method path, service, method).
macro_rules! routes {
    ($router:expr, $( $path:literal => $grpc:literal, $svc:ident . $method:ident );* $(;)?) => {
        $router
        $(
            .route($path, post(|State(g): Shared, headers: HeaderMap, body: Bytes| async move {
                unary(&g, $grpc, &headers, &body, |r| g.$svc.$method(r)).await
            }))
        )*
    };
}

/// The `/v3/...` routes, also under `/v3beta/` (etcd 3.4's clients and
/// scripts use it; etcd serves both).
pub(crate) fn router(server: Arc<EtcdServer>) -> Router {
    // tokio's semaphore holds at most MAX_PERMITS; beyond that the limit is moot.
    let streams = (server.config().max_concurrent_streams as usize).min(Semaphore::MAX_PERMITS);
    let gateway = Arc::new(Gateway {
        streams: Arc::new(Semaphore::new(streams)),
        kv: KvService::new(server.clone()),
        auth: AuthService::new(server.clone()),
        lease: LeaseService::new(server.clone()),
        cluster: ClusterService::new(server.clone()),
        maintenance: MaintenanceService::new(server.clone()),
        lock: LockService::new(server.clone()),
        election: ElectionService::new(server.clone()),
        server,
    });
    let router = Router::new();
    let router = routes!(router,
        "/kv/range" => "/etcdserverpb.KV/Range", kv.range;
        "/kv/put" => "/etcdserverpb.KV/Put", kv.put;
        "/kv/deleterange" => "/etcdserverpb.KV/DeleteRange", kv.delete_range;
        "/kv/txn" => "/etcdserverpb.KV/Txn", kv.txn;
        "/kv/compaction" => "/etcdserverpb.KV/Compact", kv.compact;
        "/auth/enable" => "/etcdserverpb.Auth/AuthEnable", auth.auth_enable;
        "/auth/disable" => "/etcdserverpb.Auth/AuthDisable", auth.auth_disable;
        "/auth/status" => "/etcdserverpb.Auth/AuthStatus", auth.auth_status;
        "/auth/authenticate" => "/etcdserverpb.Auth/Authenticate", auth.authenticate;
        "/auth/user/add" => "/etcdserverpb.Auth/UserAdd", auth.user_add;
        "/auth/user/get" => "/etcdserverpb.Auth/UserGet", auth.user_get;
        "/auth/user/list" => "/etcdserverpb.Auth/UserList", auth.user_list;
        "/auth/user/delete" => "/etcdserverpb.Auth/UserDelete", auth.user_delete;
        "/auth/user/changepw" => "/etcdserverpb.Auth/UserChangePassword", auth.user_change_password;
        "/auth/user/grant" => "/etcdserverpb.Auth/UserGrantRole", auth.user_grant_role;
        "/auth/user/revoke" => "/etcdserverpb.Auth/UserRevokeRole", auth.user_revoke_role;
        "/auth/role/add" => "/etcdserverpb.Auth/RoleAdd", auth.role_add;
        "/auth/role/get" => "/etcdserverpb.Auth/RoleGet", auth.role_get;
        "/auth/role/list" => "/etcdserverpb.Auth/RoleList", auth.role_list;
        "/auth/role/delete" => "/etcdserverpb.Auth/RoleDelete", auth.role_delete;
        "/auth/role/grant" => "/etcdserverpb.Auth/RoleGrantPermission", auth.role_grant_permission;
        "/auth/role/revoke" => "/etcdserverpb.Auth/RoleRevokePermission", auth.role_revoke_permission;
        "/lease/grant" => "/etcdserverpb.Lease/LeaseGrant", lease.lease_grant;
        "/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke", lease.lease_revoke;
        "/kv/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke", lease.lease_revoke;
        "/lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive", lease.lease_time_to_live;
        "/kv/lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive", lease.lease_time_to_live;
        "/lease/leases" => "/etcdserverpb.Lease/LeaseLeases", lease.lease_leases;
        "/kv/lease/leases" => "/etcdserverpb.Lease/LeaseLeases", lease.lease_leases;
        "/cluster/member/add" => "/etcdserverpb.Cluster/MemberAdd", cluster.member_add;
        "/cluster/member/remove" => "/etcdserverpb.Cluster/MemberRemove", cluster.member_remove;
        "/cluster/member/update" => "/etcdserverpb.Cluster/MemberUpdate", cluster.member_update;
        "/cluster/member/list" => "/etcdserverpb.Cluster/MemberList", cluster.member_list;
        "/cluster/member/promote" => "/etcdserverpb.Cluster/MemberPromote", cluster.member_promote;
        "/maintenance/alarm" => "/etcdserverpb.Maintenance/Alarm", maintenance.alarm;
        "/maintenance/status" => "/etcdserverpb.Maintenance/Status", maintenance.status;
        "/maintenance/hash" => "/etcdserverpb.Maintenance/Hash", maintenance.hash;
        "/maintenance/hashkv" => "/etcdserverpb.Maintenance/HashKV", maintenance.hash_kv;
        "/maintenance/defragment" => "/etcdserverpb.Maintenance/Defragment", maintenance.defragment;
        "/maintenance/transfer-leadership" => "/etcdserverpb.Maintenance/MoveLeader", maintenance.move_leader;
        "/lock/lock" => "/v3lockpb.Lock/Lock", lock.lock;
        "/lock/unlock" => "/v3lockpb.Lock/Unlock", lock.unlock;
        "/election/campaign" => "/v3electionpb.Election/Campaign", election.campaign;
        "/election/proclaim" => "/v3electionpb.Election/Proclaim", election.proclaim;
        "/election/leader" => "/v3electionpb.Election/Leader", election.leader;
        "/election/resign" => "/v3electionpb.Election/Resign", election.resign;
    );
    let routes = router
        .route("/watch", post(watch))
        .route("/lease/keepalive", post(keep_alive))
        .route("/election/observe", post(observe))
        .with_state(gateway);
    Router::new().nest("/v3", routes.clone()).nest("/v3beta", routes)
}
