//! The Cluster service: membership listing and changes (add, remove, update,
//! promote), each change going through Raft.

use std::sync::Arc;

use etcd_daemon::EtcdServer;
use etcd_proto::etcdrs;
use etcd_proto::etcdserverpb::cluster_server::Cluster;
use etcd_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use etcd_server::{Applied, Response as AppliedResponse, ServerError};
use tonic::{Request, Response, Status};

use crate::status::to_status;

/// etcd's Cluster service over one member.
pub struct ClusterService {
    server: Arc<EtcdServer>,
}

impl ClusterService {
    /// Serves Cluster requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> ClusterService {
        ClusterService { server }
    }

    /// etcd's Cluster service fills no revision in its headers.
    fn header(&self) -> ResponseHeader {
        self.server.header(0)
    }

    /// The member a change concerned and the members after it.
    fn changed(
        &self,
        outcome: Result<Applied, ServerError>,
    ) -> Result<(Member, Vec<Member>), Status> {
        let applied = outcome.map_err(|e| to_status(&e))?;
        match applied.result.map_err(|e| to_status(&e))? {
            AppliedResponse::Members { member, members } => {
                Ok((to_wire(member), members.into_iter().map(to_wire).collect()))
            }
            _ => Err(to_status(&ServerError::NotCapable)),
        }
    }
}

fn to_wire(m: etcdrs::Member) -> Member {
    Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        crate::auth::require_admin(&self.server, &request).await?;
        let request = request.into_inner();
        let outcome = self.server.member_add(request.peer_ur_ls, request.is_learner).await;
        let (member, members) = self.changed(outcome)?;
        Ok(Response::new(MemberAddResponse {
            header: Some(self.header()),
            member: Some(member),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        crate::auth::require_admin(&self.server, &request).await?;
        let (_, members) =
            self.changed(self.server.member_remove(request.into_inner().id).await)?;
        Ok(Response::new(MemberRemoveResponse { header: Some(self.header()), members }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        crate::auth::require_admin(&self.server, &request).await?;
        let request = request.into_inner();
        let outcome = self.server.member_update(request.id, request.peer_ur_ls).await;
        let (_, members) = self.changed(outcome)?;
        Ok(Response::new(MemberUpdateResponse { header: Some(self.header()), members }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        crate::auth::require_admin(&self.server, &request).await?;
        let (_, members) =
            self.changed(self.server.member_promote(request.into_inner().id).await)?;
        Ok(Response::new(MemberPromoteResponse { header: Some(self.header()), members }))
    }

    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let members = self.server.members().into_iter().map(to_wire).collect();
        Ok(Response::new(MemberListResponse { header: Some(self.header()), members }))
    }
}
