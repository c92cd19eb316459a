//! The Maintenance service: `Status` for `etcdctl endpoint status`.

use std::sync::Arc;

use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::maintenance_server::Maintenance;
use etcd_proto::etcdserverpb::{StatusRequest, StatusResponse};
use tonic::{Request, Response, Status};

/// The server version reported to clients: we implement etcd's 3.5 API.
pub const SERVER_VERSION: &str = "3.5.0";
/// The cluster version reported to clients.
pub const CLUSTER_VERSION: &str = "3.5.0";

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
            errors: Vec::new(),
            db_size_in_use: status.db_size_bytes,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: status.quota_backend_bytes,
            downgrade_info: None,
        }))
    }
}
