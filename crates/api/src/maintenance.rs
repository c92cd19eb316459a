//! The Maintenance service: `Status` for `etcdctl endpoint status`.

use std::sync::Arc;

use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::maintenance_server::Maintenance;
use etcd_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use etcd_server::ServerError;
use sha2::{Digest, Sha256};
use std::io::Read;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::status::to_status;

/// Bytes per snapshot message. etcd sends 32 KiB; larger messages cut the
/// per-message cost (the stream ran at half etcd's speed with 32 KiB) and stay
/// far below the 4 MiB every gRPC client accepts by default.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

use crate::BoxStream;

/// Streams the backend copy at `path`, zero-padded to a multiple of 512 bytes,
/// then its SHA-256 as the last message (the layout etcdctl expects), and
/// removes the file. Runs on a blocking thread: plain reads of a local file,
/// sent as the client takes them (the channel bounds what is buffered).
fn stream_snapshot(path: std::path::PathBuf, tx: mpsc::Sender<Result<SnapshotResponse, Status>>) {
    let result = (|| {
        let mut file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        let total = size.div_ceil(512) * 512;
        let mut hash = Sha256::new();
        let mut sent = 0u64;
        while sent < total {
            let mut blob = vec![0u8; SNAPSHOT_CHUNK_BYTES.min((total - sent) as usize)];
            let real = blob.len().min(size.saturating_sub(sent) as usize);
            file.read_exact(&mut blob[..real])?;
            sent += blob.len() as u64;
            hash.update(&blob);
            let message =
                SnapshotResponse { remaining_bytes: total - sent, blob, ..Default::default() };
            if tx.blocking_send(Ok(message)).is_err() {
                return Ok(()); // the client went away
            }
        }
        debug_assert_eq!(sent, total, "the stream sends exactly the padded file");
        let digest = SnapshotResponse { blob: hash.finalize().to_vec(), ..Default::default() };
        let _ = tx.blocking_send(Ok(digest));
        Ok::<(), std::io::Error>(())
    })();
    if let Err(err) = result {
        let _ =
            tx.blocking_send(Err(Status::internal(format!("reading the snapshot failed: {err}"))));
    }
    let _ = std::fs::remove_file(&path);
}

pub use etcd_daemon::{CLUSTER_VERSION, SERVER_VERSION};

/// etcd's Maintenance service over one member.
pub struct MaintenanceService {
    server: Arc<EtcdServer>,
}

impl MaintenanceService {
    /// Serves Maintenance requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> MaintenanceService {
        MaintenanceService { server }
    }
}

/// `Status.errors` as etcd fills it: no leader, then each active alarm in the
/// protobuf text form etcdctl prints (`memberID:<decimal> alarm:NOSPACE `).
fn status_errors(leader_id: u64, alarms: &[AlarmMember]) -> Vec<String> {
    let mut errors = Vec::new();
    if leader_id == 0 {
        errors.push(to_status(&ServerError::NoLeader).message().to_string());
    }
    for alarm in alarms {
        let name = etcd_server::alarms::alarm_name(alarm.alarm);
        errors.push(format!("memberID:{} alarm:{name} ", alarm.member_id));
    }
    errors
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let status = self.server.status();
        let revision = self.server.kv().current_revision();
        Ok(Response::new(StatusResponse {
            header: Some(self.server.header(revision)),
            version: SERVER_VERSION.to_string(),
            db_size: status.db_size_bytes,
            leader: status.leader_id,
            raft_index: status.raft_index,
            raft_term: status.raft_term,
            raft_applied_index: status.raft_applied_index,
            errors: status_errors(status.leader_id, &self.server.alarms()),
            db_size_in_use: self.server.db_size_in_use().await as i64,
            is_learner: status.is_learner,
            storage_version: String::new(),
            db_size_quota: status.quota_backend_bytes,
            downgrade_info: None,
        }))
    }

    /// etcd's hash of the whole backend (every bucket but the consistent index).
    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        crate::auth::require_admin(&self.server, &request).await?;
        let (hash, revision) = self.server.backend_hash().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(HashResponse { header: Some(self.server.header(revision)), hash }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        crate::auth::require_admin(&self.server, &request).await?;
        let response =
            self.server.hash_kv(request.into_inner().revision).map_err(|e| to_status(&e))?;
        Ok(Response::new(response))
    }

    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let (mut response, revision) =
            self.server.alarm(request.into_inner()).await.map_err(|e| to_status(&e))?;
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }

    /// Local to this member, as in etcd: `etcdctl defrag` asks each endpoint.
    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        crate::auth::require_admin(&self.server, &request).await?;
        self.server.defragment().await.map_err(|e| to_status(&e))?;
        let revision = self.server.kv().current_revision();
        Ok(Response::new(DefragmentResponse { header: Some(self.server.header(revision)) }))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        self.server.move_leader(target).await.map_err(|e| to_status(&e))?;
        let revision = self.server.kv().current_revision();
        Ok(Response::new(MoveLeaderResponse { header: Some(self.server.header(revision)) }))
    }

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        crate::auth::require_admin(&self.server, &request).await?;
        let path = self.server.backend_snapshot().await.map_err(|e| to_status(&e))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_snapshot(path, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
