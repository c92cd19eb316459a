//! Auth at apply time: the auth requests themselves, and the permission
//! checks etcd's auth applier runs on every other request before it is
//! applied, with the credentials the proposing member attached (the user
//! name and the auth revision it checked the token at, in the request
//! header). A check at an older auth revision than the store's fails with
//! `AuthOldRevision`, so a permission revoked between proposal and apply
//! never lets a write through.

use etcd_auth::{AuthError, AuthInfo, AuthStore};
use etcd_lease::Lessor;
use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddResponse, AuthRoleDeleteResponse,
    AuthRoleGetResponse, AuthRoleGrantPermissionResponse, AuthRoleListResponse,
    AuthRoleRevokePermissionResponse, AuthStatusResponse, AuthUserAddResponse,
    AuthUserChangePasswordResponse, AuthUserDeleteResponse, AuthUserGetResponse,
    AuthUserGrantRoleResponse, AuthUserListResponse, AuthUserRevokeRoleResponse,
    AuthenticateResponse,
};
use etcd_storage::{StorageError, WriteTxn};

use crate::ServerError;

/// The answer to an applied auth request (headers are filled by the caller).
#[derive(Debug, Clone, PartialEq)]
pub enum AuthReply {
    /// `AuthEnable`.
    Enable(AuthEnableResponse),
    /// `AuthDisable`.
    Disable(AuthDisableResponse),
    /// `AuthStatus`.
    Status(AuthStatusResponse),
    /// `Authenticate`: the token.
    Authenticate(AuthenticateResponse),
    /// `UserAdd`.
    UserAdd(AuthUserAddResponse),
    /// `UserDelete`.
    UserDelete(AuthUserDeleteResponse),
    /// `UserGet`.
    UserGet(AuthUserGetResponse),
    /// `UserList`.
    UserList(AuthUserListResponse),
    /// `UserChangePassword`.
    UserChangePassword(AuthUserChangePasswordResponse),
    /// `UserGrantRole`.
    UserGrantRole(AuthUserGrantRoleResponse),
    /// `UserRevokeRole`.
    UserRevokeRole(AuthUserRevokeRoleResponse),
    /// `RoleAdd`.
    RoleAdd(AuthRoleAddResponse),
    /// `RoleDelete`.
    RoleDelete(AuthRoleDeleteResponse),
    /// `RoleGet`.
    RoleGet(AuthRoleGetResponse),
    /// `RoleList`.
    RoleList(AuthRoleListResponse),
    /// `RoleGrantPermission`.
    RoleGrantPermission(AuthRoleGrantPermissionResponse),
    /// `RoleRevokePermission`.
    RoleRevokePermission(AuthRoleRevokePermissionResponse),
}

/// The credentials a request was proposed with.
pub fn credentials(request: &InternalRaftRequest) -> AuthInfo {
    request.header.as_ref().map_or_else(AuthInfo::default, |h| AuthInfo {
        username: h.username.clone(),
        revision: h.auth_revision,
    })
}

/// etcd's `needAdminPermission`: the auth requests only root may make
/// (`UserGet` and `RoleGet` have their own rule, see [`apply`]).
fn needs_admin(r: &InternalRaftRequest) -> bool {
    r.auth_enable.is_some()
        || r.auth_disable.is_some()
        || r.auth_status.is_some()
        || r.auth_user_add.is_some()
        || r.auth_user_delete.is_some()
        || r.auth_user_change_password.is_some()
        || r.auth_user_grant_role.is_some()
        || r.auth_user_revoke_role.is_some()
        || r.auth_role_add.is_some()
        || r.auth_role_grant_permission.is_some()
        || r.auth_role_revoke_permission.is_some()
        || r.auth_role_delete.is_some()
        || r.auth_user_list.is_some()
        || r.auth_role_list.is_some()
}

/// Whether `request` is one of the auth requests.
pub fn is_auth_request(r: &InternalRaftRequest) -> bool {
    needs_admin(r)
        || r.authenticate.is_some()
        || r.auth_user_get.is_some()
        || r.auth_role_get.is_some()
}

/// Applies an auth request (`is_auth_request` must hold). `index` is the
/// entry's Raft index (it names the simple token an `Authenticate` issues).
pub fn apply(
    store: &mut AuthStore,
    txn: &WriteTxn,
    request: &InternalRaftRequest,
    index: u64,
    now_ms: u64,
) -> Result<Result<AuthReply, ServerError>, StorageError> {
    let info = credentials(request);
    if needs_admin(request) {
        if let Err(err) = store.check_admin(&info) {
            return Ok(Err(ServerError::Auth(err)));
        }
    }
    let reply = apply_checked(store, txn, request, &info, index, now_ms)?;
    Ok(reply.map_err(ServerError::Auth))
}

fn apply_checked(
    store: &mut AuthStore,
    txn: &WriteTxn,
    r: &InternalRaftRequest,
    info: &AuthInfo,
    index: u64,
    now_ms: u64,
) -> Result<Result<AuthReply, AuthError>, StorageError> {
    use AuthReply as R;
    let done = |outcome: Result<(), AuthError>, reply: AuthReply| outcome.map(|()| reply);
    if r.auth_enable.is_some() {
        return Ok(done(store.apply_enable(txn)?, R::Enable(Default::default())));
    }
    if r.auth_disable.is_some() {
        return Ok(done(store.apply_disable(txn)?, R::Disable(Default::default())));
    }
    if r.auth_status.is_some() {
        let (enabled, auth_revision) = store.status();
        return Ok(Ok(R::Status(AuthStatusResponse { header: None, enabled, auth_revision })));
    }
    if let Some(a) = &r.authenticate {
        let token = store.apply_authenticate(&a.name, &a.simple_token, index, now_ms);
        return Ok(token.map(|token| R::Authenticate(AuthenticateResponse { header: None, token })));
    }
    if let Some(add) = &r.auth_user_add {
        return Ok(done(store.apply_user_add(txn, add)?, R::UserAdd(Default::default())));
    }
    if let Some(delete) = &r.auth_user_delete {
        let outcome = store.apply_user_delete(txn, &delete.name)?;
        return Ok(done(outcome, R::UserDelete(Default::default())));
    }
    if let Some(get) = &r.auth_user_get {
        // A user may read itself; anything else is root's.
        if let Err(err) = store.check_admin(info) {
            if get.name != info.username {
                return Ok(Err(err));
            }
        }
        let roles = store.user_roles(&get.name);
        return Ok(roles.map(|roles| R::UserGet(AuthUserGetResponse { header: None, roles })));
    }
    if r.auth_user_list.is_some() {
        let users = store.user_names();
        return Ok(Ok(R::UserList(AuthUserListResponse { header: None, users })));
    }
    if let Some(change) = &r.auth_user_change_password {
        let outcome = store.apply_user_change_password(txn, change)?;
        return Ok(done(outcome, R::UserChangePassword(Default::default())));
    }
    if let Some(grant) = &r.auth_user_grant_role {
        let outcome = store.apply_user_grant_role(txn, &grant.user, &grant.role)?;
        return Ok(done(outcome, R::UserGrantRole(Default::default())));
    }
    if let Some(revoke) = &r.auth_user_revoke_role {
        let outcome = store.apply_user_revoke_role(txn, &revoke.name, &revoke.role)?;
        return Ok(done(outcome, R::UserRevokeRole(Default::default())));
    }
    if let Some(add) = &r.auth_role_add {
        return Ok(done(store.apply_role_add(txn, &add.name)?, R::RoleAdd(Default::default())));
    }
    if let Some(delete) = &r.auth_role_delete {
        let outcome = store.apply_role_delete(txn, &delete.role)?;
        return Ok(done(outcome, R::RoleDelete(Default::default())));
    }
    if let Some(get) = &r.auth_role_get {
        // A user may read the roles it holds; anything else is root's.
        if let Err(err) = store.check_admin(info) {
            if !store.has_role(&info.username, &get.role) {
                return Ok(Err(err));
            }
        }
        let perms = store.role_permissions(&get.role);
        return Ok(perms.map(|perm| R::RoleGet(AuthRoleGetResponse { header: None, perm })));
    }
    if r.auth_role_list.is_some() {
        let roles = store.role_names();
        return Ok(Ok(R::RoleList(AuthRoleListResponse { header: None, roles })));
    }
    if let Some(grant) = &r.auth_role_grant_permission {
        let outcome = store.apply_role_grant_permission(txn, grant)?;
        return Ok(done(outcome, R::RoleGrantPermission(Default::default())));
    }
    if let Some(revoke) = &r.auth_role_revoke_permission {
        let outcome = store.apply_role_revoke_permission(txn, revoke)?;
        return Ok(done(outcome, R::RoleRevokePermission(Default::default())));
    }
    unreachable!("invariant: apply is called for auth requests only")
}

/// etcd's auth applier's checks for the key-value and lease requests, in its
/// order. `Ok(())` lets the request be applied.
pub fn check_request(
    store: &AuthStore,
    lessor: &Lessor,
    request: &InternalRaftRequest,
) -> Result<(), AuthError> {
    if !store.is_enabled() {
        return Ok(());
    }
    let info = credentials(request);
    if let Some(put) = &request.put {
        store.check(&info, &put.key, &[], etcd_auth::Access::Write)?;
        check_lease_keys(store, lessor, &info, put.lease)?;
        if put.prev_kv {
            store.check(&info, &put.key, &[], etcd_auth::Access::Read)?;
        }
    }
    if let Some(range) = &request.range {
        store.check(&info, &range.key, &range.range_end, etcd_auth::Access::Read)?;
    }
    if let Some(delete) = &request.delete_range {
        store.check_delete_range(&info, delete)?;
    }
    if let Some(txn) = &request.txn {
        store.check_txn(&info, txn)?;
    }
    if let Some(revoke) = &request.lease_revoke {
        check_lease_keys(store, lessor, &info, revoke.id)?;
    }
    Ok(())
}

/// A put with a lease, and revoking a lease, need write permission on every
/// key attached to the lease (root needs none).
fn check_lease_keys(
    store: &AuthStore,
    lessor: &Lessor,
    info: &AuthInfo,
    lease: i64,
) -> Result<(), AuthError> {
    if lease == 0 || store.check_admin(info).is_ok() {
        return Ok(());
    }
    for key in lessor.keys(lease) {
        store.check(info, &key, &[], etcd_auth::Access::Write)?;
    }
    Ok(())
}
