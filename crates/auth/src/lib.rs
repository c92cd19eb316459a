//! etcd's authentication and authorization as a deterministic state machine:
//! users (bcrypt password hashes), roles with key-range permissions, the
//! enabled flag, the auth revision, and the tokens that name a user.
//!
//! It knows nothing of Raft, gRPC, threads or clocks. The applier calls the
//! `apply_*` methods of [`AuthStore`] for committed requests inside its own
//! backend write transaction (every member applies the same requests and
//! reaches the same state); the API asks it whether a request's user may do
//! what the request does. Time comes in as a monotonic millisecond count.
//!
//! ## Rules (etcd 3.5's)
//!
//! - The `root` user with the `root` role may do everything; `AuthEnable`
//!   refuses without such a user. While auth is enabled, `root` cannot be
//!   deleted, the `root` role cannot be deleted or revoked from `root`.
//! - Every change of a user or role and `AuthDisable` increase the auth
//!   revision by one (`AuthEnable` does not; a fresh store starts at 1, as
//!   etcd writes revision 1 when it first opens its backend).
//! - A request carries the user name and the auth revision its token was
//!   checked at. A request checked at an older revision than the store's is
//!   refused with [`AuthError::OldRevision`] (the client re-authenticates and
//!   retries), so a permission revoked in between never lets it through.
//!
//! ## Persistence
//!
//! etcd's buckets and encodings (see `etcd_storage::schema`): `auth` holds
//! `authEnabled` (one byte, 1 or 0) and `authRevision` (u64 big-endian);
//! `authUsers` maps a name to a prost-encoded `authpb.User` whose password is
//! the bcrypt hash; `authRoles` maps a name to an `authpb.Role` whose
//! permissions are sorted by key.
#![warn(missing_docs)]

mod jwt;
mod password;
mod perms;
mod store;
mod token;

#[cfg(test)]
mod tests;

pub use jwt::{JwtError, JwtTokens, DEFAULT_JWT_TTL_S};
pub use password::{check_password, hash_password, valid_bcrypt_cost, DEFAULT_BCRYPT_COST};
pub use perms::{is_valid_permission_range, Access, RangePerms};
pub use store::{AuthStore, Outcome};
pub use token::{SimpleTokens, DEFAULT_TOKEN_TTL_MS, SIMPLE_TOKEN_PREFIX_LEN};

/// The user every permission check lets through.
pub const ROOT_USER: &str = "root";
/// The role that grants everything.
pub const ROOT_ROLE: &str = "root";

/// Who a request is from: the user its token named and the auth revision the
/// token was checked at (0: no credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    /// The user name (empty: none).
    pub username: String,
    /// The auth revision when the credentials were checked.
    pub revision: u64,
}

/// Why the auth store refused a request. The texts are etcd's auth errors;
/// clients see etcd's gRPC statuses (mapped in the API crate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `AuthEnable` without a `root` user.
    #[error("auth: root user does not exist")]
    RootUserNotExist,
    /// `AuthEnable` while `root` lacks the `root` role.
    #[error("auth: root user does not have root role")]
    RootRoleNotExist,
    /// `UserAdd` of an existing name.
    #[error("auth: user already exists")]
    UserAlreadyExist,
    /// An empty user name, or a request without credentials while auth is on.
    #[error("auth: user name is empty")]
    UserEmpty,
    /// No such user.
    #[error("auth: user not found")]
    UserNotFound,
    /// `RoleAdd` of an existing name.
    #[error("auth: role already exists")]
    RoleAlreadyExist,
    /// No such role.
    #[error("auth: role not found")]
    RoleNotFound,
    /// An empty role name.
    #[error("auth: role name is empty")]
    RoleEmpty,
    /// `RoleGrantPermission` without a permission.
    #[error("auth: permission not given")]
    PermissionNotGiven,
    /// Unknown user or wrong password.
    #[error("auth: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A password was given for a user created with `no_password`.
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// The user's roles do not allow the request.
    #[error("auth: permission denied")]
    PermissionDenied,
    /// `UserRevokeRole` of a role the user does not have.
    #[error("auth: role is not granted to the user")]
    RoleNotGranted,
    /// `RoleRevokePermission` of a permission the role does not have.
    #[error("auth: permission is not granted to the role")]
    PermissionNotGranted,
    /// `Authenticate` on a member that holds only the JWT public key.
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    /// `Authenticate` while auth is disabled.
    #[error("auth: authentication is not enabled")]
    AuthNotEnabled,
    /// The request was checked at an older auth revision.
    #[error("auth: revision in header is old")]
    OldRevision,
    /// The token names no user (unknown, expired or invalidated).
    #[error("auth: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock everyone out (root) or an invalid range.
    #[error("auth: invalid auth management")]
    InvalidAuthMgmt,
}
