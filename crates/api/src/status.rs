//! The one mapping from [`ServerError`] to etcd's gRPC status codes and messages
//! (etcd's `api/v3rpc/rpctypes/error.go`). Clients match on the text, so every
//! message is exact. The match has no catch-all: a new error fails to compile
//! until it is mapped here.

use etcd_server::ServerError;
use tonic::{Code, Status};

/// The gRPC status etcd returns for `err`.
pub fn to_status(err: &ServerError) -> Status {
    let code = match err {
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
        | ServerError::MemberNotLearner
        | ServerError::LearnerNotReady => Code::FailedPrecondition,
        ServerError::MemberNotFound => Code::NotFound,
        ServerError::MemberBadUrls => Code::InvalidArgument,
        ServerError::LeaseNotFound => Code::NotFound,
        ServerError::LeaseExists => Code::FailedPrecondition,
        ServerError::LeaseTtlTooLarge => Code::OutOfRange,
        ServerError::TooManyRequests | ServerError::NoSpace => Code::ResourceExhausted,
        ServerError::NoLeader
        | ServerError::LeaderChanged
        | ServerError::LeaderTransferTimeout
        | ServerError::NotSupportedForLearner
        | ServerError::Timeout
        | ServerError::TimeoutWaitAppliedIndex
        | ServerError::Stopped
        | ServerError::NotCapable => Code::Unavailable,
        ServerError::Defragment(_) => Code::Unknown,
    };
    Status::new(code, format!("etcdserver: {err}"))
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
        ];
        for (err, code, message) in cases {
            let status = to_status(&err);
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), message, "{err:?}");
        }
    }
}
