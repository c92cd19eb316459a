//! The client-facing API of a member: thin tonic services over
//! [`etcd_daemon::EtcdServer`]. Each handler checks its request (etcd's rules, in
//! [`validate`]), calls the server, maps any error through [`status::to_status`]
//! (the only place errors become gRPC statuses) and fills the response header.
//! Nothing here writes to storage: writes go through Raft.

/// A wrapper around a client connection (a struct with the connection in
/// `inner`) tells tonic what the connection itself tells (peer address,
/// certificates).
macro_rules! forward_connect_info {
    ($wrapper:ident) => {
        impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
            for $wrapper<IO>
        {
            type ConnectInfo = IO::ConnectInfo;

            fn connect_info(&self) -> Self::ConnectInfo {
                self.inner.connect_info()
            }
        }
    };
}

pub mod auth;
mod authority;
pub mod cluster;
mod coalesce;
pub mod election;
mod front;
mod gateway;
mod grpc_metrics;
pub mod http;
pub mod kv;
mod kv_range;
mod learner;
pub mod lease;
pub mod lock;
pub mod maintenance;
mod ping_policy;
mod pprof;
mod probes;
mod recipes;
pub mod status;
pub mod validate;
pub mod watch;
mod watch_codec;
mod watch_outlet;

use std::future::Future;
use std::sync::Arc;

use authority::DropInvalidAuthority;
use coalesce::CoalescedWrites;
use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::auth_server::AuthServer;
use etcd_proto::etcdserverpb::cluster_server::ClusterServer;
use etcd_proto::etcdserverpb::kv_server::KvServer;
use etcd_proto::etcdserverpb::lease_server::LeaseServer;
use etcd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use etcd_proto::v3electionpb::election_server::ElectionServer;
use etcd_proto::v3lockpb::lock_server::LockServer;
use etcd_tls::Listener;
use ping_policy::PingPolicy;
use tokio_stream::StreamExt;

pub use maintenance::{CLUSTER_VERSION, SERVER_VERSION};

/// A server-streaming gRPC answer.
pub(crate) type BoxStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// gRPC framing and header overhead etcd allows on top of `--max-request-bytes`.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// What sits between a client connection and HTTP/2, outermost first.
fn layered<IO>(io: IO, min_ping_time: std::time::Duration) -> Layered<IO> {
    CoalescedWrites::new(PingPolicy::new(DropInvalidAuthority::new(io), min_ping_time))
}

type Layered<IO> = CoalescedWrites<PingPolicy<DropInvalidAuthority<IO>>>;

/// Serves the client API on `listener` until `shutdown` resolves, over TLS when
/// `tls` is given (an `https://` or `unixs://` listen URL).
pub async fn serve(
    server: Arc<EtcdServer>,
    listener: Listener,
    tls: Option<etcd_tls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let max_message_bytes = server.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
    let max_streams = server.config().max_concurrent_streams;
    let keepalive_interval = server.config().grpc_keepalive_interval;
    let keepalive_timeout = server.config().grpc_keepalive_timeout;
    let min_ping_time = server.config().grpc_keepalive_min_time;
    let kv = KvServer::new(kv::KvService::new(server.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(usize::MAX);
    let cluster = ClusterServer::new(cluster::ClusterService::new(server.clone()));
    let auth = AuthServer::new(auth::AuthService::new(server.clone()));
    let maintenance = MaintenanceServer::new(maintenance::MaintenanceService::new(server.clone()));
    let lease = LeaseServer::new(lease::LeaseService::new(server.clone()));
    let lock = LockServer::new(lock::LockService::new(server.clone()));
    let election = ElectionServer::new(election::ElectionService::new(server.clone()));
    let http_routes = http::router(server.clone(), tls.is_some());
    let front = front::FrontLayer { server: server.clone() };
    let server_for_range = server.clone();
    let server_for_watch = server.clone();
    let routes = tonic::service::Routes::from(http_routes)
        .add_service(kv)
        .add_service(cluster)
        .add_service(auth)
        .add_service(maintenance)
        .add_service(lease)
        .add_service(lock)
        .add_service(election);
    // KV.Range answers from the stored encodings (see kv_range.rs); the
    // route takes precedence over the generated KV service's wildcard. Watch
    // has a codec of its own (watch_codec.rs).
    let range =
        axum::routing::post(kv_range::serve).with_state((server_for_range, max_message_bytes));
    let watch =
        axum::routing::post(watch_codec::serve).with_state((server_for_watch, max_message_bytes));
    let router =
        routes.into_axum_router().route(kv_range::PATH, range).route(watch_codec::PATH, watch);
    let routes = tonic::service::Routes::from(router);
    let builder = tonic::transport::Server::builder()
        .layer(front)
        .accept_http1(true)
        .max_concurrent_streams(Some(max_streams))
        .http2_keepalive_interval(keepalive_interval)
        .http2_keepalive_timeout(Some(keepalive_timeout))
        .add_routes(routes);
    // One arm per socket kind and security: each yields its own stream type.
    match (listener, tls) {
        (Listener::Tcp(l), Some(acceptor)) => {
            let incoming =
                etcd_tls::incoming(l, acceptor).map(|a| a.map(|io| layered(io, min_ping_time)));
            builder.serve_with_incoming_shutdown(incoming, shutdown).await
        }
        (Listener::Tcp(l), None) => {
            let incoming = etcd_tls::accepted(l).map(|a| a.map(|io| layered(io, min_ping_time)));
            builder.serve_with_incoming_shutdown(incoming, shutdown).await
        }
        (Listener::Unix(u), Some(acceptor)) => {
            let incoming =
                etcd_tls::incoming(u, acceptor).map(|a| a.map(|io| layered(io, min_ping_time)));
            builder.serve_with_incoming_shutdown(incoming, shutdown).await
        }
        (Listener::Unix(u), None) => {
            let incoming = etcd_tls::accepted(u).map(|a| a.map(|io| layered(io, min_ping_time)));
            builder.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    }
}
