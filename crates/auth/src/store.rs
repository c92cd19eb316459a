//! The auth store: users, roles, the enabled flag and the auth revision, in
//! memory and in the backend's auth tables, changed only by applied requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine;
use etcd_proto::authpb::{Role, User, UserAddOptions};
use etcd_proto::etcdserverpb::request_op::Request as Op;
use etcd_proto::etcdserverpb::{
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
};
use etcd_proto::Message;
use etcd_storage::schema::AuthTable;
use etcd_storage::{ReadTables, StorageError, WriteTxn};

use crate::password::{hash_password, DEFAULT_BCRYPT_COST};
use crate::perms::{is_valid_permission_range, Access, RangePerms};
use crate::token::SimpleTokens;
use crate::{AuthError, AuthInfo, ROOT_ROLE, ROOT_USER};

/// The result of applying a request: a storage failure (the member cannot go
/// on) or the client's answer.
pub type Outcome<T> = Result<Result<T, AuthError>, StorageError>;

/// Key of the enabled flag in the `auth` table (etcd's `enableFlagKey`).
const ENABLED_KEY: &[u8] = b"authEnabled";
/// Key of the auth revision in the `auth` table (etcd's `revisionKey`).
const REVISION_KEY: &[u8] = b"authRevision";

/// Users, roles and tokens of one member.
#[derive(Debug)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's merged permissions, rebuilt after every change.
    perms: HashMap<String, RangePerms>,
    /// Behind a lock of its own: looking a token up restarts its TTL, and the
    /// API does that while it only reads the rest of the store.
    tokens: Mutex<SimpleTokens>,
}

fn corrupt(table: &'static str, what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt { table, what: what.to_string() }
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT_ROLE)
}

impl AuthStore {
    /// Loads the auth state from the backend; simple tokens live for
    /// `token_ttl_ms` after their last use (0: etcd's 300 s).
    pub fn load(txn: &impl ReadTables, token_ttl_ms: u64) -> Result<AuthStore, StorageError> {
        let mut store = AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            perms: HashMap::new(),
            tokens: Mutex::new(SimpleTokens::new(token_ttl_ms)),
        };
        store.reload(txn)?;
        Ok(store)
    }

    /// Re-reads everything after the backend was replaced (a snapshot was
    /// installed). Tokens stay while auth stays enabled, as in etcd.
    pub fn reload(&mut self, txn: &impl ReadTables) -> Result<(), StorageError> {
        let mut enabled = false;
        let mut revision = 0;
        for (key, value) in txn.auth_list(AuthTable::Meta)? {
            if key == ENABLED_KEY {
                enabled = value == [1];
            } else if key == REVISION_KEY {
                let bytes: [u8; 8] =
                    value.as_slice().try_into().map_err(|_| corrupt("auth", "authRevision"))?;
                revision = u64::from_be_bytes(bytes);
            }
        }
        let mut users = BTreeMap::new();
        for (key, value) in txn.auth_list(AuthTable::Users)? {
            let user = User::decode(value.as_slice()).map_err(|e| corrupt("authUsers", e))?;
            let name = String::from_utf8(key).map_err(|e| corrupt("authUsers", e))?;
            users.insert(name, user);
        }
        let mut roles = BTreeMap::new();
        for (key, value) in txn.auth_list(AuthTable::Roles)? {
            let role = Role::decode(value.as_slice()).map_err(|e| corrupt("authRoles", e))?;
            let name = String::from_utf8(key).map_err(|e| corrupt("authRoles", e))?;
            roles.insert(name, role);
        }
        self.enabled = enabled;
        // etcd writes revision 1 when it first opens a backend; a backend of
        // ours without auth history reads as that state.
        self.revision = revision.max(1);
        self.users = users;
        self.roles = roles;
        self.refresh_perms();
        let mut tokens = self.tokens.lock().expect("tokens lock");
        if enabled {
            tokens.enable();
        } else {
            tokens.disable();
        }
        Ok(())
    }

    /// Whether auth is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether `user` exists and holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    fn refresh_perms(&mut self) {
        let roles = &self.roles;
        self.perms = self
            .users
            .iter()
            .map(|(name, user)| {
                let perms = RangePerms::merge(
                    user.roles
                        .iter()
                        .filter_map(|r| roles.get(r))
                        .map(|role| role.key_permission.as_slice()),
                );
                (name.clone(), perms)
            })
            .collect();
    }

    // ---- credentials ------------------------------------------------------

    /// Who `token` names while auth is enabled (`Ok(None)`: auth is off, the
    /// token is not looked at). The revision is the store's now: a simple
    /// token carries none.
    pub fn auth_info_from_token(
        &self,
        token: &str,
        now_ms: u64,
    ) -> Result<Option<AuthInfo>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        let user = self.tokens.lock().expect("tokens lock").user(token, now_ms);
        match user {
            Some(username) => Ok(Some(AuthInfo { username, revision: self.revision })),
            None => Err(AuthError::InvalidAuthToken),
        }
    }

    /// The stored password hash of `name` and the auth revision it was read
    /// at, for a password check done outside the store's lock.
    pub fn password_hash(&self, name: &str) -> Result<(Vec<u8>, u64), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.options.as_ref().is_some_and(|o| o.no_password) {
            return Err(AuthError::NoPasswordUser);
        }
        Ok((user.password.clone(), self.revision))
    }

    // ---- permission checks -----------------------------------------------

    /// etcd's `isOpPermitted`: may the request's user have `access` to `key`
    /// (`range_end` empty) or `[key, range_end)`?
    pub fn check(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if info.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if info.revision < self.revision {
            return Err(AuthError::OldRevision);
        }
        let Some(user) = self.users.get(&info.username) else {
            return Err(AuthError::PermissionDenied);
        };
        if has_root_role(user) {
            return Ok(());
        }
        match self.perms.get(&info.username) {
            Some(perms) if perms.permits(key, range_end, access) => Ok(()),
            _ => Err(AuthError::PermissionDenied),
        }
    }

    /// etcd's `IsAdminPermitted`: is the request's user root (by role)?
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if info.username.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let user = self.users.get(&info.username).ok_or(AuthError::UserNotFound)?;
        if has_root_role(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// A put: write on its key, and read on it when it returns the previous
    /// value. (The keys of its lease are checked by the caller, which knows
    /// them.)
    pub fn check_put(&self, info: &AuthInfo, put: &PutRequest) -> Result<(), AuthError> {
        self.check(info, &put.key, &[], Access::Write)?;
        if put.prev_kv {
            self.check(info, &put.key, &[], Access::Read)?;
        }
        Ok(())
    }

    /// A delete range: write on the range, and read when it returns the
    /// deleted values.
    pub fn check_delete_range(
        &self,
        info: &AuthInfo,
        delete: &DeleteRangeRequest,
    ) -> Result<(), AuthError> {
        self.check(info, &delete.key, &delete.range_end, Access::Write)?;
        if delete.prev_kv {
            self.check(info, &delete.key, &delete.range_end, Access::Read)?;
        }
        Ok(())
    }

    /// A txn: read on every compare, then every operation of both branches,
    /// as etcd's `checkTxnAuth`. A put inside a txn needs write only (etcd
    /// does not check its `prev_kv`). Nested txns are checked the same way,
    /// recursively; etcd skips them (its check predates nested txns), which
    /// would let a nested operation pass unchecked.
    pub fn check_txn(&self, info: &AuthInfo, txn: &TxnRequest) -> Result<(), AuthError> {
        for compare in &txn.compare {
            self.check(info, &compare.key, &compare.range_end, Access::Read)?;
        }
        self.check_ops(info, &txn.success)?;
        self.check_ops(info, &txn.failure)
    }

    fn check_ops(&self, info: &AuthInfo, ops: &[RequestOp]) -> Result<(), AuthError> {
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(range)) => {
                    self.check(info, &range.key, &range.range_end, Access::Read)?
                }
                Some(Op::RequestPut(put)) => self.check(info, &put.key, &[], Access::Write)?,
                Some(Op::RequestDeleteRange(delete)) => {
                    if delete.prev_kv {
                        self.check(info, &delete.key, &delete.range_end, Access::Read)?;
                    }
                    self.check(info, &delete.key, &delete.range_end, Access::Write)?;
                }
                Some(Op::RequestTxn(nested)) => self.check_txn(info, nested)?,
                None => {}
            }
        }
        Ok(())
    }

    // ---- reads that go through Raft (answered at apply) -------------------

    /// `AuthStatus`: enabled and revision.
    pub fn status(&self) -> (bool, u64) {
        (self.enabled, self.revision)
    }

    /// `UserGet`: the user's roles, sorted.
    pub fn user_roles(&self, name: &str) -> Result<Vec<String>, AuthError> {
        self.users.get(name).map(|u| u.roles.clone()).ok_or(AuthError::UserNotFound)
    }

    /// `UserList`: every user name, in byte order.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// `RoleGet`: the role's permissions, sorted by key.
    pub fn role_permissions(
        &self,
        name: &str,
    ) -> Result<Vec<etcd_proto::authpb::Permission>, AuthError> {
        self.roles.get(name).map(|r| r.key_permission.clone()).ok_or(AuthError::RoleNotFound)
    }

    /// `RoleList`: every role name, in byte order.
    pub fn role_names(&self) -> Vec<String> {
        // etcd lists the bucket range [0x00, 0xff): a name starting with
        // byte 0xff cannot be valid UTF-8, so this is every role.
        self.roles.keys().cloned().collect()
    }

    // ---- changes -----------------------------------------------------------

    fn bump_revision(&mut self, txn: &WriteTxn) -> Result<(), StorageError> {
        self.revision += 1;
        txn.auth_put(AuthTable::Meta, REVISION_KEY, &self.revision.to_be_bytes())
    }

    fn put_user(&mut self, txn: &WriteTxn, user: User) -> Result<(), StorageError> {
        txn.auth_put(AuthTable::Users, &user.name, &user.encode_to_vec())?;
        let name = String::from_utf8_lossy(&user.name).into_owned();
        self.users.insert(name, user);
        Ok(())
    }

    fn put_role(&mut self, txn: &WriteTxn, role: Role) -> Result<(), StorageError> {
        txn.auth_put(AuthTable::Roles, &role.name, &role.encode_to_vec())?;
        let name = String::from_utf8_lossy(&role.name).into_owned();
        self.roles.insert(name, role);
        Ok(())
    }

    /// Records a change: one more auth revision, fresh merged permissions.
    fn changed(&mut self, txn: &WriteTxn) -> Result<(), StorageError> {
        self.bump_revision(txn)?;
        self.refresh_perms();
        Ok(())
    }

    /// The password to store: the hash the proposing member computed, or
    /// (a request carrying only a clear password, as etcd before 3.5 wrote
    /// them) a hash of it. A hash that is not base64 is etcd's
    /// `ErrNoPasswordUser`.
    fn select_password(password: &str, hashed: &str) -> Result<Vec<u8>, AuthError> {
        if !password.is_empty() && hashed.is_empty() {
            return Ok(hash_password(password, DEFAULT_BCRYPT_COST));
        }
        base64::engine::general_purpose::STANDARD
            .decode(hashed)
            .map_err(|_| AuthError::NoPasswordUser)
    }

    /// `AuthEnable`: needs `root` with the `root` role; enabling twice is a
    /// no-op. The revision does not change.
    pub fn apply_enable(&mut self, txn: &WriteTxn) -> Outcome<()> {
        if self.enabled {
            return Ok(Ok(()));
        }
        let Some(root) = self.users.get(ROOT_USER) else {
            return Ok(Err(AuthError::RootUserNotExist));
        };
        if !has_root_role(root) {
            return Ok(Err(AuthError::RootRoleNotExist));
        }
        txn.auth_put(AuthTable::Meta, ENABLED_KEY, &[1])?;
        self.enabled = true;
        self.tokens.lock().expect("tokens lock").enable();
        Ok(Ok(()))
    }

    /// `AuthDisable`: drops every token; disabling twice is a no-op.
    pub fn apply_disable(&mut self, txn: &WriteTxn) -> Outcome<()> {
        if !self.enabled {
            return Ok(Ok(()));
        }
        txn.auth_put(AuthTable::Meta, ENABLED_KEY, &[0])?;
        self.bump_revision(txn)?;
        self.enabled = false;
        self.tokens.lock().expect("tokens lock").disable();
        Ok(Ok(()))
    }

    /// `Authenticate`, applied: records the token `prefix.index` for `name`
    /// (the password was checked by the member that proposed it).
    pub fn apply_authenticate(
        &mut self,
        name: &str,
        prefix: &str,
        index: u64,
        now_ms: u64,
    ) -> Result<String, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.options.as_ref().is_some_and(|o| o.no_password) {
            return Err(AuthError::AuthFailed);
        }
        Ok(self.tokens.lock().expect("tokens lock").assign(prefix, index, name, now_ms))
    }

    /// `UserAdd`.
    pub fn apply_user_add(&mut self, txn: &WriteTxn, request: &AuthUserAddRequest) -> Outcome<()> {
        if request.name.is_empty() {
            return Ok(Err(AuthError::UserEmpty));
        }
        if self.users.contains_key(&request.name) {
            return Ok(Err(AuthError::UserAlreadyExist));
        }
        let options = request.options.unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password {
            Vec::new()
        } else {
            match Self::select_password(&request.password, &request.hashed_password) {
                Ok(password) => password,
                Err(err) => return Ok(Err(err)),
            }
        };
        let user = User {
            name: request.name.as_bytes().to_vec(),
            password,
            roles: Vec::new(),
            options: Some(options),
        };
        self.put_user(txn, user)?;
        self.changed(txn)?;
        Ok(Ok(()))
    }

    /// `UserDelete`: drops the user's tokens.
    pub fn apply_user_delete(&mut self, txn: &WriteTxn, name: &str) -> Outcome<()> {
        if self.enabled && name == ROOT_USER {
            return Ok(Err(AuthError::InvalidAuthMgmt));
        }
        if self.users.remove(name).is_none() {
            return Ok(Err(AuthError::UserNotFound));
        }
        txn.auth_delete(AuthTable::Users, name.as_bytes())?;
        self.changed(txn)?;
        self.tokens.lock().expect("tokens lock").invalidate_user(name);
        Ok(Ok(()))
    }

    /// `UserChangePassword`: drops the user's tokens.
    pub fn apply_user_change_password(
        &mut self,
        txn: &WriteTxn,
        request: &AuthUserChangePasswordRequest,
    ) -> Outcome<()> {
        let Some(user) = self.users.get(&request.name) else {
            return Ok(Err(AuthError::UserNotFound));
        };
        let no_password = user.options.as_ref().is_some_and(|o| o.no_password);
        let password = if no_password {
            Vec::new()
        } else {
            match Self::select_password(&request.password, &request.hashed_password) {
                Ok(password) => password,
                Err(err) => return Ok(Err(err)),
            }
        };
        let updated = User { password, ..user.clone() };
        self.put_user(txn, updated)?;
        self.changed(txn)?;
        self.tokens.lock().expect("tokens lock").invalidate_user(&request.name);
        Ok(Ok(()))
    }

    /// `UserGrantRole`: `root` needs no role entry; granting a held role is
    /// a no-op (no new revision).
    pub fn apply_user_grant_role(&mut self, txn: &WriteTxn, name: &str, role: &str) -> Outcome<()> {
        let Some(user) = self.users.get(name) else {
            return Ok(Err(AuthError::UserNotFound));
        };
        if role != ROOT_ROLE && !self.roles.contains_key(role) {
            return Ok(Err(AuthError::RoleNotFound));
        }
        let Err(at) = user.roles.binary_search_by(|r| r.as_str().cmp(role)) else {
            return Ok(Ok(()));
        };
        let mut updated = user.clone();
        updated.roles.insert(at, role.to_string());
        self.put_user(txn, updated)?;
        self.changed(txn)?;
        Ok(Ok(()))
    }

    /// `UserRevokeRole`.
    pub fn apply_user_revoke_role(
        &mut self,
        txn: &WriteTxn,
        name: &str,
        role: &str,
    ) -> Outcome<()> {
        if self.enabled && name == ROOT_USER && role == ROOT_ROLE {
            return Ok(Err(AuthError::InvalidAuthMgmt));
        }
        let Some(user) = self.users.get(name) else {
            return Ok(Err(AuthError::UserNotFound));
        };
        let mut updated = user.clone();
        updated.roles.retain(|r| r != role);
        if updated.roles.len() == user.roles.len() {
            return Ok(Err(AuthError::RoleNotGranted));
        }
        self.put_user(txn, updated)?;
        self.changed(txn)?;
        Ok(Ok(()))
    }

    /// `RoleAdd`.
    pub fn apply_role_add(&mut self, txn: &WriteTxn, name: &str) -> Outcome<()> {
        if name.is_empty() {
            return Ok(Err(AuthError::RoleEmpty));
        }
        if self.roles.contains_key(name) {
            return Ok(Err(AuthError::RoleAlreadyExist));
        }
        let role = Role { name: name.as_bytes().to_vec(), key_permission: Vec::new() };
        self.put_role(txn, role)?;
        self.changed(txn)?;
        Ok(Ok(()))
    }

    /// `RoleDelete`: also revokes the role from every user holding it.
    pub fn apply_role_delete(&mut self, txn: &WriteTxn, name: &str) -> Outcome<()> {
        if self.enabled && name == ROOT_ROLE {
            return Ok(Err(AuthError::InvalidAuthMgmt));
        }
        if self.roles.remove(name).is_none() {
            return Ok(Err(AuthError::RoleNotFound));
        }
        txn.auth_delete(AuthTable::Roles, name.as_bytes())?;
        let holders: Vec<User> =
            self.users.values().filter(|u| u.roles.iter().any(|r| r == name)).cloned().collect();
        for mut user in holders {
            user.roles.retain(|r| r != name);
            self.put_user(txn, user)?;
        }
        self.changed(txn)?;
        Ok(Ok(()))
    }

    /// `RoleGrantPermission`: a permission with the key and range end of the
    /// first permission at or after its key replaces that one's type; any
    /// other is inserted in key order (etcd's rule, duplicates included).
    pub fn apply_role_grant_permission(
        &mut self,
        txn: &WriteTxn,
        request: &AuthRoleGrantPermissionRequest,
    ) -> Outcome<()> {
        let Some(perm) = &request.perm else {
            return Ok(Err(AuthError::PermissionNotGiven));
        };
        if !is_valid_permission_range(&perm.key, &perm.range_end) {
            return Ok(Err(AuthError::InvalidAuthMgmt));
        }
        let Some(role) = self.roles.get(&request.name) else {
            return Ok(Err(AuthError::RoleNotFound));
        };
        let mut updated = role.clone();
        let perms = &mut updated.key_permission;
        let at = perms.partition_point(|p| p.key < perm.key);
        match perms.get_mut(at) {
            Some(existing) if existing.key == perm.key && existing.range_end == perm.range_end => {
                existing.perm_type = perm.perm_type;
            }
            _ => {
                perms.push(perm.clone());
                perms.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        self.put_role(txn, updated)?;
        self.changed(txn)?;
        Ok(Ok(()))
    }

    /// `RoleRevokePermission`: removes every permission with exactly that key
    /// and range end.
    pub fn apply_role_revoke_permission(
        &mut self,
        txn: &WriteTxn,
        request: &AuthRoleRevokePermissionRequest,
    ) -> Outcome<()> {
        let Some(role) = self.roles.get(&request.role) else {
            return Ok(Err(AuthError::RoleNotFound));
        };
        let mut updated = role.clone();
        updated.key_permission.retain(|p| p.key != request.key || p.range_end != request.range_end);
        if updated.key_permission.len() == role.key_permission.len() {
            return Ok(Err(AuthError::PermissionNotGranted));
        }
        self.put_role(txn, updated)?;
        self.changed(txn)?;
        Ok(Ok(()))
    }
}
