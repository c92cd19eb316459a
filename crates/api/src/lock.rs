//! The Lock service (`v3lockpb.Lock`), etcd's server-side distributed mutex:
//! the owner key is created under `<name>/` (see [`crate::recipes`]) and the
//! caller holds the lock once every key created before it is gone (unlocked,
//! or its lease ended).

use std::sync::Arc;

use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::kv_server::Kv;
use etcd_proto::etcdserverpb::DeleteRangeRequest;
use etcd_proto::v3lockpb::lock_server::Lock;
use etcd_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::recipes::Recipes;

/// etcd's Lock service over one member.
pub struct LockService {
    recipes: Recipes,
}

impl LockService {
    /// Serves Lock requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> LockService {
        LockService { recipes: Recipes::new(server) }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let LockRequest { name, lease } = request.into_inner();
        let claim = self.recipes.claim(&name, lease, Vec::new()).await?;
        let release = self.recipes.release_on_drop(claim.key.clone());
        let header = if claim.first {
            claim.header
        } else {
            let mut prefix = name;
            prefix.push(b'/');
            self.recipes.wait_deletes(&prefix, claim.revision).await?
        };
        release.keep();
        Ok(Response::new(LockResponse { header, key: claim.key }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let delete = DeleteRangeRequest { key: request.into_inner().key, ..Default::default() };
        let response = self.recipes.kv.delete_range(Request::new(delete)).await?.into_inner();
        Ok(Response::new(UnlockResponse { header: response.header }))
    }
}
