//! The data directory's layout (etcd's: `member/wal/` and `member/snap/db`), the
//! WAL's metadata record that marks a WAL as ours, and why a member could not
//! start.

use std::path::{Path, PathBuf};

/// Identifies our WAL format in the metadata record of every segment.
const WAL_MAGIC: &[u8] = b"etcd-rs/wal/v1\0";

/// Why a member could not start. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The flags do not describe a valid member.
    #[error("{0}")]
    Config(String),
    /// The data directory could not be created or read.
    #[error("cannot use data dir {path}: {source} (check the path and its permissions)")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The WAL is unreadable or was written by something else.
    #[error("cannot recover the WAL in {path}: {reason}")]
    Wal {
        /// The WAL directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The backend is unreadable or of another format.
    #[error("cannot open the backend {path}: {reason}")]
    Backend {
        /// The backend file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Raft refused the recovered state.
    #[error("cannot start raft: {0}")]
    Raft(String),
}

/// Where a member's WAL lives under its data dir.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

pub(crate) fn backend_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap").join("db")
}

pub(crate) fn wal_metadata(member_id: u64, cluster_id: u64) -> Vec<u8> {
    let mut metadata = WAL_MAGIC.to_vec();
    metadata.extend_from_slice(&member_id.to_le_bytes());
    metadata.extend_from_slice(&cluster_id.to_le_bytes());
    metadata
}

pub(crate) fn parse_wal_metadata(metadata: &[u8]) -> Option<(u64, u64)> {
    let rest = metadata.strip_prefix(WAL_MAGIC)?;
    if rest.len() != 16 {
        return None;
    }
    let member = u64::from_le_bytes(rest[..8].try_into().ok()?);
    let cluster = u64::from_le_bytes(rest[8..].try_into().ok()?);
    Some((member, cluster))
}
