//! The Election service (`v3electionpb.Election`), etcd's server-side leader
//! election: candidates queue owner keys under `<name>/` (see
//! [`crate::recipes`]), the first created is the leader and its value is the
//! proclamation; observers follow the leader key. Errors are etcd's: see
//! [`crate::recipes`].

use std::sync::Arc;

use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::request_op::Request as Op;
use etcd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use etcd_proto::v3electionpb::election_server::Election;
use etcd_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use etcd_server::watch::KeyRange;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::recipes::{prefix_end, Recipes};

/// The stream type tonic's generated trait expects.
use crate::BoxStream;

/// Leader changes queued per observer before it waits for its client.
const OBSERVE_QUEUE_MAX: usize = 16;

fn missing_leader() -> Status {
    Status::unknown(r#""leader" field must be provided"#)
}

fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// etcd's Election service over one member.
pub struct ElectionService {
    recipes: Recipes,
}

impl ElectionService {
    /// Serves Election requests with `server`.
    pub fn new(server: Arc<EtcdServer>) -> ElectionService {
        ElectionService { recipes: Recipes::new(server) }
    }

    /// A transaction on the leader key that applies only while `leader` still
    /// owns it (its create revision is unchanged).
    async fn while_leader(
        recipes: &Recipes,
        leader: &LeaderKey,
        then: Op,
    ) -> Result<(bool, Option<ResponseHeader>), Status> {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: leader.key.clone(),
                target_union: Some(TargetUnion::CreateRevision(leader.rev)),
                ..Default::default()
            }],
            success: vec![RequestOp { request: Some(then) }],
            failure: vec![],
        };
        let response = recipes.txn(txn).await?;
        Ok((response.succeeded, response.header))
    }

    /// Puts `value` on the leader key, attached to `lease`, while `leader`
    /// still owns it.
    async fn proclaim_as(
        recipes: &Recipes,
        leader: &LeaderKey,
        lease: i64,
        value: Vec<u8>,
    ) -> Result<Option<ResponseHeader>, Status> {
        let put = PutRequest { key: leader.key.clone(), value, lease, ..Default::default() };
        match Self::while_leader(recipes, leader, Op::RequestPut(put)).await? {
            (true, header) => Ok(header),
            (false, _) => Err(not_leader()),
        }
    }
}

/// Follows the election `prefix`: sends the leader, every change of its value,
/// and the next leader once it is gone, until the client leaves.
async fn observe(
    recipes: Recipes,
    prefix: Vec<u8>,
    tx: mpsc::Sender<Result<LeaderResponse, Status>>,
) {
    let whole = KeyRange::Between(prefix.clone(), prefix_end(&prefix));
    loop {
        let interest = recipes.server.watch_hub().register(whole.clone());
        let (leader, header) = match recipes.first_under(&prefix).await {
            Ok(found) => found,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let Some(mut kv) = leader else {
            tokio::select! {
                () = interest.flagged() => continue,
                () = tx.closed() => return,
            }
        };
        drop(interest);
        if tx.send(Ok(LeaderResponse { header, kv: Some(kv.clone()) })).await.is_err() {
            return;
        }
        // Follow this leader's key until it is deleted.
        loop {
            tokio::select! {
                changed = recipes.wait_until_changed(KeyRange::Single(kv.key.clone()), &kv) => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
            let read = RangeRequest { key: kv.key.clone(), ..Default::default() };
            let now = match recipes.range(read).await {
                Ok(response) => response,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let Some(current) = now.kvs.into_iter().next() else { break };
            if current.create_revision != kv.create_revision {
                break; // deleted and created again: a new candidate, not this leader
            }
            if current.mod_revision != kv.mod_revision {
                kv = current;
                let update = LeaderResponse { header: now.header, kv: Some(kv.clone()) };
                if tx.send(Ok(update)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let recipes = self.recipes.for_caller(&request);
        let CampaignRequest { name, lease, value } = request.into_inner();
        let claim = recipes.claim(&name, lease, value.clone()).await?;
        let release = recipes.release_on_drop(claim.key.clone());
        let leader = LeaderKey {
            name: name.clone(),
            key: claim.key.clone(),
            rev: claim.revision,
            lease: claim.lease,
        };
        if claim.existing_value.as_ref().is_some_and(|v| *v != value) {
            if let Err(status) = Self::proclaim_as(&recipes, &leader, claim.lease, value).await {
                // etcd resigns (deletes the key if it is still this
                // candidate's) and answers the proclamation's error.
                release.keep();
                let delete = DeleteRangeRequest { key: leader.key.clone(), ..Default::default() };
                let _ = Self::while_leader(&recipes, &leader, Op::RequestDeleteRange(delete)).await;
                return Err(status);
            }
        }
        if !claim.first {
            recipes.wait_deletes(&prefix_of(&name), claim.revision).await?;
        }
        release.keep();
        // etcd answers the header of the txn that queued the candidate, also
        // when it became leader later.
        Ok(Response::new(CampaignResponse { header: claim.header, leader: Some(leader) }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let recipes = self.recipes.for_caller(&request);
        let ProclaimRequest { leader, value } = request.into_inner();
        let leader = leader.ok_or_else(missing_leader)?;
        // etcd resumes the election in a session on the given lease, granting
        // a fresh 60 s one when it is 0, and puts the value with that lease.
        let lease = recipes.session_lease(leader.lease).await?;
        let header = Self::proclaim_as(&recipes, &leader, lease, value).await?;
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let recipes = self.recipes.for_caller(&request);
        let prefix = prefix_of(&request.into_inner().name);
        match recipes.first_under(&prefix).await? {
            (Some(kv), header) => Ok(Response::new(LeaderResponse { header, kv: Some(kv) })),
            (None, _) => Err(Status::unknown("election: no leader")),
        }
    }

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        let recipes = self.recipes.for_caller(&request);
        let prefix = prefix_of(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE_MAX);
        tokio::spawn(observe(recipes, prefix, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let recipes = self.recipes.for_caller(&request);
        let leader = request.into_inner().leader.ok_or_else(missing_leader)?;
        // The session etcd opens for this grants a lease when given 0, even
        // though resigning never uses it.
        recipes.session_lease(leader.lease).await?;
        // Resigning when no longer leader is not an error: the delete is
        // skipped and the header answered.
        let delete = DeleteRangeRequest { key: leader.key.clone(), ..Default::default() };
        let (_, header) =
            Self::while_leader(&recipes, &leader, Op::RequestDeleteRange(delete)).await?;
        Ok(Response::new(ResignResponse { header }))
    }
}
