//! Every error a client can observe. The API layer owns the mapping to gRPC status
//! codes and etcd's exact messages (clients match on the text); this enum only
//! names the conditions.

use etcd_auth::AuthError;
use etcd_lease::LeaseError;
use etcd_mvcc::MvccError;

/// A client-visible failure of a request.
///
/// Deliberately exhaustive (not `#[non_exhaustive]`): the API's status mapping
/// matches every variant, so a new one cannot go unmapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// A request that needs a key has none.
    #[error("key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty op.
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("lease is provided")]
    LeaseProvided,
    /// More operations in a Txn than `--max-txn-ops`.
    #[error("too many operations in txn request")]
    TooManyOps,
    /// A Txn writes the same key twice.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// The requested revision was compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// A Put names a lease that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A LeaseGrant with an ID already in use.
    #[error("lease already exists")]
    LeaseExists,
    /// A LeaseGrant with a TTL above etcd's maximum.
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    /// The encoded request exceeds `--max-request-bytes`.
    #[error("request is too large")]
    RequestTooLarge,
    /// Too many proposals are waiting to be applied.
    #[error("too many requests")]
    TooManyRequests,
    /// No leader is known, so nothing can be committed.
    #[error("no leader")]
    NoLeader,
    /// The request must go to the leader.
    #[error("not leader")]
    NotLeader,
    /// A leadership transfer did not finish in time.
    #[error("request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// The named member is not in the cluster.
    #[error("member not found")]
    MemberNotFound,
    /// A member with this ID exists already.
    #[error("member ID already exist")]
    MemberExists,
    /// Another member uses one of these peer URLs.
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    /// A membership change would leave fewer started members than a quorum
    /// (`--strict-reconfig-check`).
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// This member has not been connected to enough peers for long enough to
    /// know a membership change keeps the active quorum (`--strict-reconfig-check`).
    #[error("unhealthy cluster")]
    Unhealthy,
    /// Peer URLs that cannot be used.
    #[error("given member URLs are invalid")]
    MemberBadUrls,
    /// Promoting a member that is not a learner.
    #[error("can only promote a learner member")]
    MemberNotLearner,
    /// Promoting a learner that lags the leader.
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// A learner serves only serializable reads and status.
    #[error("rpc not supported for learner")]
    NotSupportedForLearner,
    /// The leader changed while the request was in flight.
    #[error("leader changed")]
    LeaderChanged,
    /// The request did not complete in time.
    #[error("request timed out")]
    Timeout,
    /// A new leader did not apply what was committed before it led, in time.
    #[error("request timed out, waiting for the applied index took too long")]
    TimeoutWaitAppliedIndex,
    /// The member is shutting down.
    #[error("server stopped")]
    Stopped,
    /// The entry holds a request this version cannot apply.
    #[error("not capable")]
    NotCapable,
    /// The backend quota is exhausted.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// The CORRUPT alarm is active: members' data diverged, writes are refused.
    #[error("corrupt cluster")]
    Corrupt,
    /// Rewriting the backend failed; the member keeps the backend it had.
    #[error("defragment failed: {0}")]
    Defragment(String),
    /// Refused by authentication or authorization.
    #[error("{0}")]
    Auth(AuthError),
}

impl ServerError {
    /// Maps a lessor error a client may see; storage failures are not.
    pub fn from_lease(err: &LeaseError) -> Option<ServerError> {
        match err {
            LeaseError::NotFound => Some(ServerError::LeaseNotFound),
            LeaseError::LeaseExists => Some(ServerError::LeaseExists),
            LeaseError::TtlTooLarge => Some(ServerError::LeaseTtlTooLarge),
            LeaseError::NotPrimary => Some(ServerError::NoLeader),
            LeaseError::Storage(_) => None,
        }
    }

    /// Maps a store error that a client may see. Storage failures are not client
    /// errors: the applier treats them as fatal before they get here.
    pub fn from_mvcc(err: &MvccError) -> Option<ServerError> {
        match err {
            MvccError::Compacted => Some(ServerError::Compacted),
            MvccError::FutureRev => Some(ServerError::FutureRev),
            MvccError::LeaseNotFound => Some(ServerError::LeaseNotFound),
            MvccError::KeyNotFound => Some(ServerError::KeyNotFound),
            _ => None,
        }
    }
}
