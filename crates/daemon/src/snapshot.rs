//! Sending this member's backend to a follower that fell behind the in-memory
//! Raft log. raft-rs produces the snapshot message (metadata: the newest snapshot
//! index, at which the backend is durable); off the raft thread this copies the
//! backend as it is now (at or past that index), stamps the message with the
//! copy's own index, term and membership, streams the copy in chunks, and
//! reports the outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_raftnode::Message;
use etcd_storage::Backend;
use etcd_transport::PeerTransport;
use tokio::sync::mpsc;

use crate::inputs::RaftInput;

/// Sends backend copies for outgoing snapshot messages.
pub(crate) struct SnapshotSender {
    pub backend: Arc<Backend>,
    pub transport: PeerTransport,
    pub runtime: tokio::runtime::Handle,
    pub raft_tx: mpsc::Sender<RaftInput>,
    /// Where temporary copies are written (next to the backend).
    pub dir: PathBuf,
}

/// Copies the backend for `message` and stamps the message with the copy's
/// index, term and membership.
fn copy_backend(backend: &Backend, dir: &Path, message: &mut Message) -> Result<PathBuf, String> {
    let path = dir.join(format!("snapshot-for-{:x}.db", message.to));
    let _ = std::fs::remove_file(&path);
    backend.copy_to(&path).map_err(|e| e.to_string())?;
    let copy = Backend::open(&path).map_err(|e| e.to_string())?;
    etcd_server::apply_core::stamp_snapshot(message, &copy)?;
    Ok(path)
}

impl SnapshotSender {
    /// Sends a copy of the backend with `message`, in the background.
    pub fn send(&self, message: Message) {
        let (backend, transport, raft_tx) =
            (self.backend.clone(), self.transport.clone(), self.raft_tx.clone());
        let dir = self.dir.clone();
        self.runtime.spawn(async move {
            let to = message.to;
            let copied = tokio::task::spawn_blocking(move || {
                let mut message = message;
                copy_backend(&backend, &dir, &mut message).map(|path| (path, message))
            })
            .await;
            let delivered = match copied {
                Ok(Ok((path, message))) => {
                    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                    tracing::info!(to = %format!("{to:x}"), bytes, "sending a snapshot to a lagging member");
                    let sent = transport.send_snapshot(message, &path).await;
                    let _ = std::fs::remove_file(&path);
                    match sent {
                        Ok(()) => true,
                        Err(err) => {
                            tracing::warn!(to = %format!("{to:x}"), error = %err, "sending a snapshot failed; raft will retry");
                            false
                        }
                    }
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
