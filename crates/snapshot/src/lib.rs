//! etcd's backend file format at the edges of this server.
//!
//! Inside, a member keeps its state in redb tables (`etcd-storage`). Where data
//! leaves or enters the cluster — `Maintenance.Snapshot`, `etcdutl snapshot
//! restore`, `Maintenance.Hash` — it is etcd's: the buckets, keys and values
//! etcd's bbolt file holds ([`layout`]). [`export`] walks one consistent read of
//! our backend as those buckets; [`hash`] computes etcd's hashes over them;
//! [`import`] writes them into our backend; [`file`] reads and writes etcd's
//! snapshot files (bbolt, see `etcd-bbolt`, and the SHA-256 trailer).

pub mod etcd_snap;
pub mod etcd_wal;
pub mod export;
pub mod file;
pub mod hash;
pub mod import;
pub mod layout;

pub use export::{export, BucketSink, ExportSummary};
pub use file::{open_snapshot, Format, SnapshotFile, Status};
pub use hash::{BackendHash, StatusHash};
pub use import::{ImportSummary, Importer};

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Our backend could not be read or written.
    #[error("backend: {0}")]
    Storage(#[from] etcd_storage::StorageError),
    /// A row of our backend, or of etcd's file, is not what it must be.
    #[error("{0}")]
    Backend(String),
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<etcd_bbolt::Error> for SnapshotError {
    fn from(err: etcd_bbolt::Error) -> Self {
        match err {
            etcd_bbolt::Error::Io(e) => SnapshotError::Io(e),
            other => SnapshotError::Backend(format!("etcd backend file: {other}")),
        }
    }
}

#[cfg(test)]
mod tests;
