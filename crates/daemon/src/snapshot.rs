//! Sending this member's backend to a follower that fell behind the in-memory
//! Raft log. raft-rs produces the snapshot message (metadata: the newest snapshot
//! index, at which the backend is durable); this attaches a copy of the backend as
//! it is now (at or past that index; the receiver's applier skips what the copy
//! already holds) off the raft thread, sends it, and reports the outcome to Raft.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_raftnode::Message;
use etcd_storage::Backend;
use etcd_transport::PeerTransport;
use tokio::sync::mpsc;

use crate::raft_loop::RaftInput;

/// Snapshots larger than this cannot travel in one message yet (chunked streaming
/// is not implemented); the follower then stays behind and an error says so.
const SNAPSHOT_BYTES_MAX: usize = etcd_transport::MAX_MESSAGE_SIZE_BYTES - 1024 * 1024;

/// Attaches backend copies to outgoing snapshot messages.
pub(crate) struct SnapshotSender {
    pub backend: Arc<Backend>,
    pub transport: PeerTransport,
    pub runtime: tokio::runtime::Handle,
    pub raft_tx: mpsc::Sender<RaftInput>,
    /// Where temporary copies are written (next to the backend).
    pub dir: PathBuf,
}

fn copy_backend(backend: &Backend, dir: &Path, to: u64) -> Result<Vec<u8>, String> {
    let path = dir.join(format!("snapshot-for-{to:x}.db"));
    let _ = std::fs::remove_file(&path);
    backend.copy_to(&path).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    bytes
}

impl SnapshotSender {
    /// Sends `message` with a copy of the backend, in the background.
    pub fn send(&self, mut message: Message) {
        let (backend, transport, raft_tx) =
            (self.backend.clone(), self.transport.clone(), self.raft_tx.clone());
        let dir = self.dir.clone();
        self.runtime.spawn(async move {
            let to = message.to;
            let copied = tokio::task::spawn_blocking(move || copy_backend(&backend, &dir, to)).await;
            let delivered = match copied {
                Ok(Ok(bytes)) if bytes.len() <= SNAPSHOT_BYTES_MAX => {
                    tracing::info!(to = %format!("{to:x}"), bytes = bytes.len(), "sending a snapshot to a lagging member");
                    message.mut_snapshot().data = bytes.into();
                    transport.send(vec![message]);
                    true
                }
                Ok(Ok(bytes)) => {
                    tracing::error!(
                        to = %format!("{to:x}"),
                        bytes = bytes.len(),
                        "the backend is too large to send as one snapshot message (chunked snapshot \
                         transfer is not implemented yet); the member stays behind: remove it and \
                         add it again with an empty data dir, or compact and defragment first"
                    );
                    false
                }
                Ok(Err(err)) => {
                    tracing::warn!(to = %format!("{to:x}"), error = %err, "copying the backend for a snapshot failed");
                    false
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the snapshot copy task failed");
                    false
                }
            };
            let _ = raft_tx.send(RaftInput::ReportSnapshot { to, delivered }).await;
        });
    }
}
