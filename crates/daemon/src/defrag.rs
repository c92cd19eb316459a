//! Defragmentation (etcd's `Maintenance.Defragment`): rewrite the backend into a
//! fresh file holding only live pages, then swap it in. The apply loop does the
//! rewrite between batches, so no write is in flight and the copy is exactly
//! the applied state; readers keep using the old file until they finish.

use std::time::Instant;

use etcd_server::ServerError;
use etcd_storage::Backend;
use tokio::sync::oneshot;

use crate::inputs::{DefragSizes as Sizes, RaftInput};
use crate::server::EtcdServer;

impl EtcdServer {
    /// Rewrites this member's backend compactly (local to this member, as in
    /// etcd; not replicated). Writes wait while it runs.
    pub async fn defragment(&self) -> Result<Sizes, ServerError> {
        let (reply, answer) = oneshot::channel();
        self.send_raft(RaftInput::Defragment(reply)).await.map_err(|_| ServerError::Stopped)?;
        answer.await.map_err(|_| ServerError::Stopped)?
    }
}

/// Copies the backend into a new file next to it and renames that over it. A
/// failure before the rename leaves the old backend in place and untouched.
/// Crash-safe: the rename is atomic and the copy is durable and carries the same
/// consistent index, so WAL replay works against either file.
pub(crate) fn rewrite(backend: &Backend) -> Result<Sizes, ServerError> {
    let started = Instant::now();
    let path = backend.path().to_path_buf();
    let temp = path.with_extension("defrag");
    let fail = |what: String| {
        let _ = std::fs::remove_file(&temp);
        tracing::warn!(error = %what, "defragmentation failed; the backend is unchanged");
        ServerError::Defragment(format!(
            "{what}; check free disk space next to {} and retry",
            path.display()
        ))
    };
    let before = backend.size_bytes().map_err(|e| fail(e.to_string()))?;
    tracing::info!(path = %path.display(), size_bytes = before, "defragmenting the backend");
    if temp.exists() {
        std::fs::remove_file(&temp).map_err(|e| fail(format!("remove {}: {e}", temp.display())))?;
    }
    backend.copy_to(&temp).map_err(|e| fail(e.to_string()))?;
    if let Err(err) = backend.replace_with(&temp) {
        // The rename may have happened; a backend in an unknown state is not
        // safe to keep serving from.
        crate::inputs::fatal("failed to swap in the defragmented backend", err);
    }
    let after = backend.size_bytes().unwrap_or(0);
    tracing::info!(
        size_bytes_before = before,
        size_bytes_after = after,
        took = ?started.elapsed(),
        "finished defragmenting the backend"
    );
    Ok((before, after))
}
