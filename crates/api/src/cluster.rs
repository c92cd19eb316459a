//! The Cluster service (membership listing; changes arrive with clustering).

use std::sync::Arc;

use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::cluster_server::Cluster;
use etcd_proto::etcdserverpb::{Member, MemberListRequest, MemberListResponse};
use tonic::{Request, Response, Status};

/// etcd's Cluster service over one member.
pub struct ClusterService {
    server: Arc<EtcdServer>,
}

impl ClusterService {
    /// Serves Cluster requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> ClusterService {
        ClusterService { server }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let members = self
            .server
            .members()
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_ur_ls: m.peer_urls,
                client_ur_ls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect();
        let revision = self.server.kv().current_revision();
        Ok(Response::new(MemberListResponse {
            header: Some(self.server.header(revision)),
            members,
        }))
    }
}
