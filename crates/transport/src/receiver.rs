//! The receiving side: the `RaftTransport` gRPC service. It checks every batch's
//! cluster ID, drops what is not addressed to this member (or comes from a
//! blocked one) and hands the rest, converted, to the raft loop's inbound channel.

use std::sync::Arc;

use etcd_proto::etcdrs::raft_transport_server::RaftTransport;
use etcd_proto::etcdrs::{MembersRequest, MembersResponse, RaftBatch, SnapshotChunk, StreamAck};
use raft::eraftpb::Message;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::wire::message_from_wire;
use crate::Shared;

/// The peer service mounted on the peer listener; see [`crate::PeerTransport::service`].
#[derive(Clone)]
pub struct PeerService {
    shared: Arc<Shared>,
    inbound: mpsc::Sender<Message>,
    /// Turns true when the server shuts down: open streams end, so a graceful
    /// shutdown does not wait for peers that never close theirs.
    stop: watch::Receiver<bool>,
}

impl PeerService {
    pub(crate) fn new(
        shared: Arc<Shared>,
        inbound: mpsc::Sender<Message>,
        stop: watch::Receiver<bool>,
    ) -> PeerService {
        PeerService { shared, inbound, stop }
    }

    fn stopping(&self) -> Status {
        Status::unavailable(format!("member {:x} is shutting down", self.shared.local_id))
    }

    /// Delivers one batch's valid messages. Returns how many were dropped, or
    /// an error status that ends the stream.
    async fn deliver(&self, batch: RaftBatch) -> Result<u64, Status> {
        let shared = &self.shared;
        if batch.cluster_id != shared.cluster_id {
            tracing::warn!(
                local_cluster = %format_args!("{:x}", shared.cluster_id),
                remote_cluster = %format_args!("{:x}", batch.cluster_id),
                remote_member = %format_args!("{:x}", batch.from),
                "rejected peer stream: cluster ID mismatch"
            );
            return Err(Status::failed_precondition(format!(
                "cluster ID mismatch: member {:x} belongs to cluster {:x}, but the stream from member {:x} is for cluster {:x}",
                shared.local_id, shared.cluster_id, batch.from, batch.cluster_id
            )));
        }
        if shared.is_removed(batch.from) {
            tracing::warn!(
                removed_member = %format_args!("{:x}", batch.from),
                "rejected Raft messages from a removed member"
            );
            return Err(Status::permission_denied(crate::REMOVED_MEMBER));
        }
        let total = batch.messages.len() as u64;
        if batch.to != shared.local_id || shared.is_blocked(batch.from) {
            return Ok(total);
        }
        let mut dropped = 0u64;
        for wire in batch.messages {
            if wire.to != shared.local_id || wire.from != batch.from {
                dropped += 1;
                continue;
            }
            let Ok(message) = message_from_wire(wire) else {
                dropped += 1;
                continue;
            };
            if self.inbound.send(message).await.is_err() {
                return Err(self.stopping());
            }
        }
        Ok(dropped)
    }
}

#[tonic::async_trait]
impl RaftTransport for PeerService {
    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let source =
            self.shared.members.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(source) = source else {
            return Err(Status::unavailable("this member is still starting; retry"));
        };
        Ok(Response::new(MembersResponse { cluster_id: self.shared.cluster_id, members: source() }))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<StreamAck>, Status> {
        let dir = self
            .shared
            .snapshot_dir
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(dir) = dir else {
            return Err(Status::unavailable("this member does not accept snapshots yet"));
        };
        if let Some(message) =
            crate::snapshot::receive(&self.shared, &dir, request.into_inner()).await?
        {
            if self.inbound.send(message).await.is_err() {
                return Err(self.stopping());
            }
        }
        Ok(Response::new(StreamAck {}))
    }

    async fn stream(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<StreamAck>, Status> {
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        let mut warned_dropped = false;
        loop {
            let batch = tokio::select! {
                batch = stream.message() => match batch? {
                    Some(batch) => batch,
                    None => break,
                },
                // Also fires if the sender is gone, i.e. the server is dropped.
                _ = stop.wait_for(|stop| *stop) => return Err(self.stopping()),
            };
            let (from, to) = (batch.from, batch.to);
            // A stalled raft loop must not hold up shutdown either.
            let dropped = tokio::select! {
                dropped = self.deliver(batch) => dropped?,
                _ = stop.wait_for(|stop| *stop) => return Err(self.stopping()),
            };
            self.shared.count_dropped(dropped);
            if dropped > 0 && !warned_dropped && !self.shared.is_blocked(from) {
                // Once per stream: a misrouted or undecodable message is a
                // configuration problem, not something to log per message.
                tracing::warn!(
                    local_member = %format_args!("{:x}", self.shared.local_id),
                    remote_member = %format_args!("{from:x}"),
                    addressed_to = %format_args!("{to:x}"),
                    dropped,
                    "dropping peer messages that are misaddressed or undecodable"
                );
                warned_dropped = true;
            }
        }
        Ok(Response::new(StreamAck {}))
    }
}
