//! The whole backend as clients see it: `Maintenance.Snapshot` (the backend in
//! etcd's file format for `etcdctl snapshot save`) and `Maintenance.Hash` (etcd's hash of
//! the backend, computed over etcd's buckets so it means what etcd's means).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_server::ServerError;

use crate::server::EtcdServer;
use crate::CLUSTER_VERSION;

impl EtcdServer {
    /// Writes the backend, as of its last commit, as etcd's snapshot file (a
    /// bbolt file, which real etcd tools read) into a new file next to it, for a
    /// client's `snapshot save`; the caller streams it and removes the file. The
    /// conversion walks one read transaction and writes page by page, so memory
    /// stays bounded whatever the size of the backend.
    pub async fn backend_snapshot(&self) -> Result<PathBuf, ServerError> {
        static TAKEN: AtomicU64 = AtomicU64::new(0);
        let backend = self.backend.clone();
        let n = TAKEN.fetch_add(1, Ordering::Relaxed);
        let dir = backend.path().parent().map(Path::to_path_buf).unwrap_or_default();
        let path = dir.join(format!("client-snapshot-{n}.db"));
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let txn = backend.begin_read()?;
            let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&target)?);
            let (summary, _, len) = etcd_snapshot::file::write_etcd(&txn, CLUSTER_VERSION, out)?;
            tracing::info!(
                path = %target.display(),
                bytes = len,
                entries = summary.entries,
                revision = summary.revision,
                took_ms = started.elapsed().as_millis() as u64,
                "wrote the backend as an etcd snapshot for a client"
            );
            Ok::<_, etcd_snapshot::SnapshotError>(())
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(path),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "writing a snapshot for a client failed");
                let _ = std::fs::remove_file(&path);
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
