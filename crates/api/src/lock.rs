//! The Lock service (`v3lockpb.Lock`), etcd's server-side distributed mutex:
//! the owner key is created under `<name>/` (see [`crate::recipes`]) and the
//! caller holds the lock once every key created before it is gone (unlocked,
//! or its lease ended). Errors are etcd's: see [`crate::recipes`].

use std::sync::Arc;

use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::{DeleteRangeRequest, RangeRequest};
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
        let recipes = self.recipes.for_caller(&request);
        let LockRequest { name, lease } = request.into_inner();
        let claim = recipes.claim(&name, lease, Vec::new()).await?;
        let release = recipes.release_on_drop(claim.key.clone());
        if claim.first {
            release.keep();
            return Ok(Response::new(LockResponse { header: claim.header, key: claim.key }));
        }
        let mut prefix = name;
        prefix.push(b'/');
        recipes.wait_deletes(&prefix, claim.revision).await?;
        // As etcd 3.5 (3.4 skipped this): the owner key must still exist once
        // the wait is over; it is gone when the lease ended meanwhile.
        let own = RangeRequest { key: claim.key.clone(), ..Default::default() };
        let now = recipes.range(own).await?;
        release.keep();
        if now.kvs.is_empty() {
            return Err(Status::unknown("mutex: session is expired"));
        }
        Ok(Response::new(LockResponse { header: now.header, key: claim.key }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let recipes = self.recipes.for_caller(&request);
        let delete = DeleteRangeRequest { key: request.into_inner().key, ..Default::default() };
        let response = recipes.delete(delete).await?;
        Ok(Response::new(UnlockResponse { header: response.header }))
    }
}
