//! The Auth service: etcd's 19 auth RPCs. Every one goes through Raft (the
//! reads too, as in etcd 3.5), carrying the caller's credentials; the applier
//! decides who may do what. Passwords are hashed here, before proposing, so
//! only hashes reach the log and the backend.

use std::sync::Arc;

use etcd_auth::AuthInfo;
use etcd_daemon::{Caller, EtcdServer};
use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::auth_server::Auth;
use etcd_proto::etcdserverpb::*;
use etcd_server::auth::AuthReply;
use etcd_server::{Applied, Response, ServerError};
use tonic::metadata::MetadataMap;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};
use tonic::{Request, Status};

use crate::status::to_status;

/// The gRPC metadata keys a token may come in: etcd's clients send `token`;
/// the gateway passes the HTTP `Authorization` header as `authorization`.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// The token a request carries, if any.
pub(crate) fn token(metadata: &MetadataMap) -> Option<&str> {
    TOKEN_KEYS.iter().find_map(|key| metadata.get(*key)).and_then(|v| v.to_str().ok())
}

/// Who sent `request`: its token, and the CN of its verified client
/// certificate. Requests the server makes for a caller (the Lock and Election
/// recipes) carry the caller as an extension. The JSON gateway's requests
/// carry no certificate, so a gateway client is never its CN (as in etcd).
pub(crate) fn caller<T>(request: &Request<T>) -> Caller {
    if let Some(caller) = request.extensions().get::<Caller>() {
        return caller.clone();
    }
    let extensions = request.extensions();
    let certs = match extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        Some(tcp) => tcp.peer_certs(),
        None => extensions.get::<TlsConnectInfo<UdsConnectInfo>>().and_then(|u| u.peer_certs()),
    };
    let common_name = certs.and_then(|certs| common_name(certs.first()?.as_ref()));
    Caller { token: token(request.metadata()).map(str::to_string), common_name }
}

/// The subject CN of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// The credentials of `request` (none while auth is disabled).
pub(crate) async fn credentials<T>(
    server: &EtcdServer,
    request: &Request<T>,
) -> Result<AuthInfo, Status> {
    server.credentials(&caller(request)).await.map_err(|e| to_status(&e))
}

/// etcd's `IsAdminPermitted` for the maintenance and membership calls only
/// root may make while auth is on (Defragment, Snapshot, Hash, HashKV, member
/// add/remove/update/promote).
pub(crate) async fn require_admin<T>(
    server: &EtcdServer,
    request: &Request<T>,
) -> Result<(), Status> {
    let info = credentials(server, request).await?;
    server.check_admin(&info).map_err(|e| to_status(&e))
}

/// etcd's Auth service over one member.
pub struct AuthService {
    server: Arc<EtcdServer>,
}

impl AuthService {
    /// Serves Auth requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> AuthService {
        AuthService { server }
    }

    async fn propose(
        &self,
        request: InternalRaftRequest,
        info: &AuthInfo,
    ) -> Result<(AuthReply, i64), Status> {
        let Applied { result, revision, .. } =
            self.server.propose_as(request, info).await.map_err(|e| to_status(&e))?;
        match result.map_err(|e| to_status(&e))? {
            Response::Auth(reply) => Ok((reply, revision)),
            other => {
                tracing::error!(?other, "applied result does not match its request");
                Err(to_status(&ServerError::NotCapable))
            }
        }
    }
}

/// One auth RPC: credentials, the request through Raft under `$field`, the
/// reply of kind `$variant` with the header filled.
macro_rules! auth_rpc {
    ($self:ident, $request:ident, $field:ident, $variant:ident) => {{
        let info = credentials(&$self.server, &$request).await?;
        let internal =
            InternalRaftRequest { $field: Some($request.into_inner()), ..Default::default() };
        match $self.propose(internal, &info).await? {
            (AuthReply::$variant(mut response), revision) => {
                response.header = Some($self.server.header(revision));
                Ok(tonic::Response::new(response))
            }
            (other, _) => {
                tracing::error!(?other, "applied result does not match its request");
                Err(to_status(&ServerError::NotCapable))
            }
        }
    }};
}

type Reply<T> = Result<tonic::Response<T>, Status>;

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Reply<AuthEnableResponse> {
        auth_rpc!(self, request, auth_enable, Enable)
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Reply<AuthDisableResponse> {
        auth_rpc!(self, request, auth_disable, Disable)
    }

    async fn auth_status(&self, request: Request<AuthStatusRequest>) -> Reply<AuthStatusResponse> {
        auth_rpc!(self, request, auth_status, Status)
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Reply<AuthenticateResponse> {
        let AuthenticateRequest { name, password } = request.into_inner();
        let token = self.server.authenticate(&name, &password).await.map_err(|e| to_status(&e))?;
        let header = self.server.header(self.server.kv().current_revision());
        Ok(tonic::Response::new(AuthenticateResponse { header: Some(header), token }))
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Reply<AuthUserAddResponse> {
        let mut request = request;
        let add = request.get_mut();
        if !add.options.as_ref().is_some_and(|o| o.no_password) {
            let password = std::mem::take(&mut add.password);
            add.hashed_password =
                self.server.hash_password(password).await.map_err(|e| to_status(&e))?;
        }
        auth_rpc!(self, request, auth_user_add, UserAdd)
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Reply<AuthUserGetResponse> {
        auth_rpc!(self, request, auth_user_get, UserGet)
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Reply<AuthUserListResponse> {
        auth_rpc!(self, request, auth_user_list, UserList)
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Reply<AuthUserDeleteResponse> {
        auth_rpc!(self, request, auth_user_delete, UserDelete)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Reply<AuthUserChangePasswordResponse> {
        let mut request = request;
        let change = request.get_mut();
        if !change.password.is_empty() {
            let password = std::mem::take(&mut change.password);
            change.hashed_password =
                self.server.hash_password(password).await.map_err(|e| to_status(&e))?;
        }
        auth_rpc!(self, request, auth_user_change_password, UserChangePassword)
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Reply<AuthUserGrantRoleResponse> {
        auth_rpc!(self, request, auth_user_grant_role, UserGrantRole)
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Reply<AuthUserRevokeRoleResponse> {
        auth_rpc!(self, request, auth_user_revoke_role, UserRevokeRole)
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Reply<AuthRoleAddResponse> {
        auth_rpc!(self, request, auth_role_add, RoleAdd)
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Reply<AuthRoleGetResponse> {
        auth_rpc!(self, request, auth_role_get, RoleGet)
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Reply<AuthRoleListResponse> {
        auth_rpc!(self, request, auth_role_list, RoleList)
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Reply<AuthRoleDeleteResponse> {
        auth_rpc!(self, request, auth_role_delete, RoleDelete)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Reply<AuthRoleGrantPermissionResponse> {
        auth_rpc!(self, request, auth_role_grant_permission, RoleGrantPermission)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Reply<AuthRoleRevokePermissionResponse> {
        auth_rpc!(self, request, auth_role_revoke_permission, RoleRevokePermission)
    }
}
