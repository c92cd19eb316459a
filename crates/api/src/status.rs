//! The one mapping from [`ServerError`] to etcd's gRPC status codes and messages
//! (etcd's `api/v3rpc/rpctypes/error.go`). Clients match on the text, so every
//! message is exact. The match has no catch-all: a new error fails to compile
//! until it is mapped here.

use etcd_auth::AuthError;
use etcd_server::ServerError;
use tonic::{Code, Status};

/// The gRPC status etcd returns for an auth error (`rpctypes`' `ErrGRPC*`
/// texts, which differ from the auth store's own in places).
fn auth_status(err: &AuthError) -> Status {
    let (code, text) = match err {
        AuthError::RootUserNotExist => (Code::FailedPrecondition, "root user does not exist"),
        AuthError::RootRoleNotExist => {
            (Code::FailedPrecondition, "root user does not have root role")
        }
        AuthError::UserAlreadyExist => (Code::FailedPrecondition, "user name already exists"),
        AuthError::UserEmpty => (Code::InvalidArgument, "user name is empty"),
        AuthError::UserNotFound => (Code::FailedPrecondition, "user name not found"),
        AuthError::RoleAlreadyExist => (Code::FailedPrecondition, "role name already exists"),
        AuthError::RoleNotFound => (Code::FailedPrecondition, "role name not found"),
        AuthError::RoleEmpty => (Code::InvalidArgument, "role name is empty"),
        AuthError::AuthFailed => {
            (Code::InvalidArgument, "authentication failed, invalid user ID or password")
        }
        AuthError::PermissionNotGiven => (Code::InvalidArgument, "permission not given"),
        AuthError::PermissionDenied => (Code::PermissionDenied, "permission denied"),
        AuthError::RoleNotGranted => (Code::FailedPrecondition, "role is not granted to the user"),
        AuthError::PermissionNotGranted => {
            (Code::FailedPrecondition, "permission is not granted to the role")
        }
        AuthError::AuthNotEnabled => (Code::FailedPrecondition, "authentication is not enabled"),
        AuthError::InvalidAuthToken => (Code::Unauthenticated, "invalid auth token"),
        AuthError::InvalidAuthMgmt => (Code::InvalidArgument, "invalid auth management"),
        AuthError::OldRevision => (Code::InvalidArgument, "revision of auth store is old"),
        // Not in etcd's gRPC error table: its server answers Unknown with the
        // auth store's own text.
        AuthError::NoPasswordUser | AuthError::VerifyOnly => {
            return Status::new(Code::Unknown, err.to_string())
        }
    };
    Status::new(code, format!("etcdserver: {text}"))
}

/// The gRPC status etcd returns for `err`.
pub fn to_status(err: &ServerError) -> Status {
    let code = match err {
        ServerError::Auth(auth) => return auth_status(auth),
        ServerError::EmptyKey
        | ServerError::KeyNotFound
        | ServerError::ValueProvided
        | ServerError::LeaseProvided
        | ServerError::TooManyOps
        | ServerError::DuplicateKey
        | ServerError::RequestTooLarge => Code::InvalidArgument,
        ServerError::Compacted | ServerError::FutureRev => Code::OutOfRange,
        ServerError::NotLeader
        | ServerError::MemberExists
        | ServerError::PeerUrlExists
        | ServerError::NotEnoughStartedMembers
        | ServerError::MemberNotLearner
        | ServerError::LearnerNotReady => Code::FailedPrecondition,
        ServerError::MemberNotFound => Code::NotFound,
        ServerError::MemberBadUrls => Code::InvalidArgument,
        ServerError::LeaseNotFound => Code::NotFound,
        ServerError::LeaseExists => Code::FailedPrecondition,
        ServerError::LeaseTtlTooLarge => Code::OutOfRange,
        ServerError::TooManyRequests | ServerError::NoSpace => Code::ResourceExhausted,
        ServerError::NoLeader
        | ServerError::Unhealthy
        | ServerError::LeaderChanged
        | ServerError::LeaderTransferTimeout
        | ServerError::NotSupportedForLearner
        | ServerError::Timeout
        | ServerError::TimeoutWaitAppliedIndex
        | ServerError::Stopped
        | ServerError::NotCapable => Code::Unavailable,
        ServerError::Defragment(_) => Code::Unknown,
        ServerError::Corrupt => Code::DataLoss,
    };
    Status::new(code, format!("etcdserver: {err}"))
}

/// Every error text etcd's client library recognises (`rpctypes`'
/// `errStringToError`, 3.4's and 3.5's entries).
const CLIENT_KNOWN_ERRORS: &[&str] = &[
    "etcdserver: key is not provided",
    "etcdserver: key not found",
    "etcdserver: value is provided",
    "etcdserver: lease is provided",
    "etcdserver: too many operations in txn request",
    "etcdserver: duplicate key given in txn request",
    "etcdserver: mvcc: required revision has been compacted",
    "etcdserver: mvcc: required revision is a future revision",
    "etcdserver: mvcc: database space exceeded",
    "etcdserver: requested lease not found",
    "etcdserver: lease already exists",
    "etcdserver: too large lease TTL",
    "etcdserver: member ID already exist",
    "etcdserver: Peer URLs already exists",
    "etcdserver: re-configuration failed due to not enough started members",
    "etcdserver: given member URLs are invalid",
    "etcdserver: member not found",
    "etcdserver: can only promote a learner member",
    "etcdserver: can only promote a learner member which is in sync with leader",
    "etcdserver: too many learner members in cluster",
    "etcdserver: cluster ID mismatch",
    "etcdserver: request is too large",
    "etcdserver: too many requests",
    "etcdserver: root user does not exist",
    "etcdserver: root user does not have root role",
    "etcdserver: user name already exists",
    "etcdserver: user name is empty",
    "etcdserver: user name not found",
    "etcdserver: role name already exists",
    "etcdserver: role name not found",
    "etcdserver: role name is empty",
    "etcdserver: authentication failed, invalid user ID or password",
    "etcdserver: permission denied",
    "etcdserver: role is not granted to the user",
    "etcdserver: permission is not granted to the role",
    "etcdserver: authentication is not enabled",
    "etcdserver: invalid auth token",
    "etcdserver: invalid auth management",
    "etcdserver: revision of auth store is old",
    "etcdserver: no leader",
    "etcdserver: not leader",
    "etcdserver: leader changed",
    "etcdserver: not capable",
    "etcdserver: server stopped",
    "etcdserver: request timed out",
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: request timed out, possibly due to connection lost",
    "etcdserver: request timed out, waiting for the applied index took too long",
    "etcdserver: unhealthy cluster",
    "etcdserver: corrupt cluster",
    "etcdserver: rpc not supported for learner",
    "etcdserver: bad leader transferee",
    "etcdserver: cluster version not found during downgrade",
    "etcdserver: wrong downgrade target version format",
    "etcdserver: invalid downgrade target version",
    "etcdserver: cluster has a downgrade job in progress",
    "etcdserver: no inflight downgrade job",
];

/// `status` as etcd's Lock and Election services pass it on. They run etcd's
/// concurrency recipes on an in-process client, which turns every error whose
/// text it knows into a plain error value carrying only the text; gRPC sends
/// that as code `Unknown`. So a Lock with a missing lease answers `Unknown`
/// "etcdserver: requested lease not found", not `NotFound`. Other statuses
/// pass unchanged, as they do through etcd's client.
pub fn relayed(status: Status) -> Status {
    if CLIENT_KNOWN_ERRORS.contains(&status.message()) {
        Status::unknown(status.message().to_string())
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_are_etcds() {
        let cases = [
            (ServerError::EmptyKey, Code::InvalidArgument, "etcdserver: key is not provided"),
            (ServerError::KeyNotFound, Code::InvalidArgument, "etcdserver: key not found"),
            (ServerError::ValueProvided, Code::InvalidArgument, "etcdserver: value is provided"),
            (ServerError::LeaseProvided, Code::InvalidArgument, "etcdserver: lease is provided"),
            (
                ServerError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                ServerError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                ServerError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                ServerError::FutureRev,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (ServerError::LeaseNotFound, Code::NotFound, "etcdserver: requested lease not found"),
            (
                ServerError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                ServerError::TooManyRequests,
                Code::ResourceExhausted,
                "etcdserver: too many requests",
            ),
            (ServerError::NoLeader, Code::Unavailable, "etcdserver: no leader"),
            (ServerError::NotLeader, Code::FailedPrecondition, "etcdserver: not leader"),
            (
                ServerError::NotSupportedForLearner,
                Code::Unavailable,
                "etcdserver: rpc not supported for learner",
            ),
            (
                ServerError::LeaderTransferTimeout,
                Code::Unavailable,
                "etcdserver: request timed out, leader transfer took too long",
            ),
            (ServerError::MemberNotFound, Code::NotFound, "etcdserver: member not found"),
            (
                ServerError::MemberExists,
                Code::FailedPrecondition,
                "etcdserver: member ID already exist",
            ),
            (
                ServerError::PeerUrlExists,
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            (
                ServerError::MemberBadUrls,
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
            (
                ServerError::MemberNotLearner,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            (
                ServerError::LearnerNotReady,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            (ServerError::LeaderChanged, Code::Unavailable, "etcdserver: leader changed"),
            (ServerError::Timeout, Code::Unavailable, "etcdserver: request timed out"),
            (
                ServerError::TimeoutWaitAppliedIndex,
                Code::Unavailable,
                "etcdserver: request timed out, waiting for the applied index took too long",
            ),
            (ServerError::Stopped, Code::Unavailable, "etcdserver: server stopped"),
            (ServerError::NotCapable, Code::Unavailable, "etcdserver: not capable"),
            (
                ServerError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (ServerError::Corrupt, Code::DataLoss, "etcdserver: corrupt cluster"),
            (ServerError::Unhealthy, Code::Unavailable, "etcdserver: unhealthy cluster"),
            (
                ServerError::NotEnoughStartedMembers,
                Code::FailedPrecondition,
                "etcdserver: re-configuration failed due to not enough started members",
            ),
        ];
        for (err, code, message) in cases {
            let status = to_status(&err);
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), message, "{err:?}");
        }
    }

    #[test]
    fn recipe_services_relay_known_errors_as_unknown() {
        let lease = relayed(to_status(&ServerError::LeaseNotFound));
        assert_eq!(
            (lease.code(), lease.message()),
            (Code::Unknown, "etcdserver: requested lease not found")
        );
        let space = relayed(to_status(&ServerError::NoSpace));
        assert_eq!(space.code(), Code::Unknown);
        // Every error a KV or Lease call of a recipe can meet is one etcd's
        // client knows.
        for err in [
            ServerError::EmptyKey,
            ServerError::KeyNotFound,
            ServerError::TooManyOps,
            ServerError::DuplicateKey,
            ServerError::Compacted,
            ServerError::FutureRev,
            ServerError::LeaseNotFound,
            ServerError::LeaseExists,
            ServerError::LeaseTtlTooLarge,
            ServerError::RequestTooLarge,
            ServerError::TooManyRequests,
            ServerError::NoLeader,
            ServerError::NotLeader,
            ServerError::NotSupportedForLearner,
            ServerError::LeaderChanged,
            ServerError::Timeout,
            ServerError::Stopped,
            ServerError::NotCapable,
            ServerError::NoSpace,
        ] {
            assert_eq!(relayed(to_status(&err)).code(), Code::Unknown, "{err:?}");
        }
        let other = relayed(Status::cancelled("context canceled"));
        assert_eq!((other.code(), other.message()), (Code::Cancelled, "context canceled"));
    }

    #[test]
    fn auth_errors_carry_etcds_codes_and_texts() {
        let cases = [
            (AuthError::RootUserNotExist, Code::FailedPrecondition),
            (AuthError::RootRoleNotExist, Code::FailedPrecondition),
            (AuthError::UserAlreadyExist, Code::FailedPrecondition),
            (AuthError::UserEmpty, Code::InvalidArgument),
            (AuthError::UserNotFound, Code::FailedPrecondition),
            (AuthError::RoleAlreadyExist, Code::FailedPrecondition),
            (AuthError::RoleNotFound, Code::FailedPrecondition),
            (AuthError::RoleEmpty, Code::InvalidArgument),
            (AuthError::AuthFailed, Code::InvalidArgument),
            (AuthError::PermissionNotGiven, Code::InvalidArgument),
            (AuthError::PermissionDenied, Code::PermissionDenied),
            (AuthError::RoleNotGranted, Code::FailedPrecondition),
            (AuthError::PermissionNotGranted, Code::FailedPrecondition),
            (AuthError::AuthNotEnabled, Code::FailedPrecondition),
            (AuthError::InvalidAuthToken, Code::Unauthenticated),
            (AuthError::InvalidAuthMgmt, Code::InvalidArgument),
            (AuthError::OldRevision, Code::InvalidArgument),
        ];
        for (err, code) in cases {
            let status = to_status(&ServerError::Auth(err.clone()));
            assert_eq!(status.code(), code, "{err:?}");
            // Every text is one etcd's clients know (they map it back to the error),
            // except "permission not given", which etcd's client table lacks too.
            if err != AuthError::PermissionNotGiven {
                assert!(
                    CLIENT_KNOWN_ERRORS.contains(&status.message()),
                    "{err:?}: {}",
                    status.message()
                );
            }
        }
        let no_password = to_status(&ServerError::Auth(AuthError::NoPasswordUser));
        assert_eq!(
            (no_password.code(), no_password.message()),
            (Code::Unknown, "auth: authentication failed, password was given for no password user")
        );
    }
}
