//! The error type of the MVCC store.

/// Errors returned by [`crate::KvStore`] and [`crate::Batch`]. The `Display`
/// strings are etcd's; the API layer adds the `etcdserver: ` prefix where etcd
/// does and picks the gRPC status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
    /// The requested revision is older than the last compaction.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store's current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// A Put names a lease that does not exist.
    #[error("lease not found")]
    LeaseNotFound,
    /// A Put with `ignore_value`/`ignore_lease` targets a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] etcd_storage::StorageError),
    /// The backend holds data this crate cannot interpret.
    #[error("mvcc: corrupt backend: {0}")]
    Corrupt(String),
}
