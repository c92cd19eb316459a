//! The whole backend as clients see it: `Maintenance.Snapshot` (a copy of the
//! backend for `etcdctl snapshot save`) and `Maintenance.Hash` (etcd's hash of
//! the backend, computed over etcd's buckets so it means what etcd's means).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_server::ServerError;

use crate::server::EtcdServer;
use crate::CLUSTER_VERSION;

impl EtcdServer {
    /// Copies the backend, as of its last commit, into a new file next to it (for
    /// a client's `snapshot save`); the caller removes the file.
    pub async fn backend_snapshot(&self) -> Result<PathBuf, ServerError> {
        static TAKEN: AtomicU64 = AtomicU64::new(0);
        let backend = self.backend.clone();
        let n = TAKEN.fetch_add(1, Ordering::Relaxed);
        let dir = backend.path().parent().map(Path::to_path_buf).unwrap_or_default();
        let path = dir.join(format!("client-snapshot-{n}.db"));
        let target = path.clone();
        let copied = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(&target);
            backend.copy_to(&target)
        })
        .await;
        match copied {
            Ok(Ok(())) => Ok(path),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "copying the backend for a snapshot failed");
                Err(ServerError::Stopped)
            }
            Err(_) => Err(ServerError::Stopped),
        }
    }

    /// etcd's `Maintenance.Hash`: the hash of every bucket as etcd lays the
    /// backend out (consistent index and term left out), and the store revision
    /// it was taken at.
    pub async fn backend_hash(&self) -> Result<(u32, i64), ServerError> {
        let backend = self.backend.clone();
        // The published revision never runs ahead of the committed backend.
        let revision = self.kv().current_revision();
        let hashed = tokio::task::spawn_blocking(move || {
            let txn = backend.begin_read()?;
            let mut hash = etcd_snapshot::BackendHash::default();
            etcd_snapshot::export(&txn, CLUSTER_VERSION, &mut hash)?;
            Ok::<_, etcd_snapshot::SnapshotError>((hash.finish(), revision))
        })
        .await;
        match hashed {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "hashing the backend failed");
                Err(ServerError::Stopped)
            }
            Err(_) => Err(ServerError::Stopped),
        }
    }
}
