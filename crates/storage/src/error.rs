//! The single error type of the storage crate.

use std::path::PathBuf;

/// Result alias used throughout the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong in the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Any failure reported by redb (I/O, corruption, transaction misuse).
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),

    /// The file exists but redb cannot open it as a database.
    #[error(
        "{}: not a usable etcd-rs backend file ({source}); move it out of the way or choose another data directory",
        path.display()
    )]
    NotADatabase {
        /// The file that was opened.
        path: PathBuf,
        /// What redb said.
        source: redb::Error,
    },

    /// Another process (or another `Backend` in this process) holds the file.
    #[error(
        "{}: the database is already open by another process; stop it or use another data directory",
        path.display()
    )]
    AlreadyOpen {
        /// The file that was opened.
        path: PathBuf,
    },

    /// The file is a redb database but its schema version is not one this build understands.
    #[error(
        "{}: unsupported backend schema version {found} (this build reads version {supported}); \
         use a matching etcd-rs release or restore this member from a snapshot",
        path.display()
    )]
    SchemaVersion {
        /// The file that was opened.
        path: PathBuf,
        /// The version found in the file (`None` if it carries none, i.e. it was not written by etcd-rs).
        found: VersionFound,
        /// The version this build writes and reads.
        supported: u64,
    },

    /// A stored value does not have the shape the schema promises.
    #[error("storage: corrupt value in table {table}: {what}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Description of the problem.
        what: String,
    },

    /// File-system error outside redb (file size, copy target, ...).
    #[error("storage: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The schema version found in a file, for [`StorageError::SchemaVersion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionFound {
    /// The meta table or the version entry is missing.
    Missing,
    /// The version entry is not an 8-byte integer.
    Malformed,
    /// A well-formed but unknown version.
    Version(u64),
}

impl std::fmt::Display for VersionFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionFound::Missing => f.write_str("<none: not written by etcd-rs>"),
            VersionFound::Malformed => f.write_str("<malformed>"),
            VersionFound::Version(v) => write!(f, "{v}"),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                StorageError::Redb(redb::Error::from(e))
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
