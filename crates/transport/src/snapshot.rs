//! Snapshots travel on their own RPC, in chunks, so a backend of any size reaches
//! a lagging follower without being held in memory whole on either side. The
//! receiver writes the chunks to a file in its snapshot directory and hands Raft
//! the MsgSnapshot whose `data` is that file's path (UTF-8): the member installs
//! the file by renaming it into place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use etcd_proto::etcdrs::raft_transport_client::RaftTransportClient;
use etcd_proto::etcdrs::SnapshotChunk;
use raft::eraftpb::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::wire::{message_from_wire, message_to_wire};
use crate::{Shared, MAX_MESSAGE_SIZE_BYTES};

/// Bytes per chunk.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks read ahead of the network at most.
const CHUNKS_IN_FLIGHT_MAX: usize = 4;

/// Streams the file at `path` as the data of snapshot `message` to `urls`.
pub(crate) async fn send(
    shared: &Shared,
    urls: &[String],
    mut message: Message,
    path: &Path,
) -> Result<(), String> {
    let (channel, url) = crate::sender::connect(urls, shared.client_tls().as_ref()).await?;
    let mut client = RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_SIZE_BYTES);
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("open snapshot {}: {e}", path.display()))?;
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT_MAX);
    let (cluster_id, from, to) = (shared.cluster_id, shared.local_id, message.to);
    message.mut_snapshot().data = Default::default();
    let header = SnapshotChunk {
        cluster_id,
        from,
        to,
        message: Some(message_to_wire(&message)),
        data: Vec::new(),
    };
    let reader = tokio::spawn(async move {
        if tx.send(header).await.is_err() {
            return Ok(());
        }
        loop {
            let mut data = vec![0u8; CHUNK_BYTES];
            let read = file.read(&mut data).await.map_err(|e| e.to_string())?;
            if read == 0 {
                return Ok::<(), String>(());
            }
            data.truncate(read);
            let chunk = SnapshotChunk { cluster_id, from, to, message: None, data };
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
    });
    let sent = client.snapshot(ReceiverStream::new(rx)).await;
    let read = reader.await.map_err(|e| e.to_string())?;
    read.map_err(|e| format!("read snapshot {}: {e}", path.display()))?;
    sent.map(|_| ()).map_err(|e| format!("send snapshot to {url}: {}", e.message()))
}

/// Names received snapshot files uniquely within a process.
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Receives a chunked snapshot into `dir` and returns the message to hand Raft.
pub(crate) async fn receive(
    shared: &Arc<Shared>,
    dir: &Path,
    mut stream: Streaming<SnapshotChunk>,
) -> Result<Option<Message>, Status> {
    let Some(first) = stream.message().await? else { return Ok(None) };
    if first.cluster_id != shared.cluster_id {
        return Err(Status::failed_precondition(format!(
            "cluster ID mismatch: member {:x} belongs to cluster {:x}, the snapshot is for cluster {:x}",
            shared.local_id, shared.cluster_id, first.cluster_id
        )));
    }
    if first.to != shared.local_id || shared.is_blocked(first.from) {
        return Ok(None);
    }
    let wire =
        first.message.ok_or_else(|| Status::invalid_argument("snapshot without its message"))?;
    let mut message =
        message_from_wire(wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let n = RECEIVED.fetch_add(1, Ordering::Relaxed);
    let path: PathBuf = dir.join(format!("received-{:x}-{n}.snap.db", first.from));
    let io = |e: std::io::Error| Status::internal(format!("write {}: {e}", path.display()));
    let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.message().await? {
        file.write_all(&chunk.data).await.map_err(io)?;
        bytes += chunk.data.len() as u64;
    }
    file.sync_all().await.map_err(io)?;
    tracing::info!(
        from = %format_args!("{:x}", first.from),
        bytes,
        file = %path.display(),
        "received a snapshot"
    );
    message.mut_snapshot().data = path.display().to_string().into_bytes().into();
    Ok(Some(message))
}
