//! Data corruption checks between members, as etcd's: HashKV of the key space at
//! one revision must be the same on every member that has not compacted past it.
//!
//! - `--experimental-initial-corrupt-check`: before serving clients, a restarted
//!   member compares its hash with its peers' at its own revision and refuses to
//!   start on a mismatch ("... found data inconsistency with peers").
//! - `--experimental-corrupt-check-time`: every interval the leader compares its
//!   hash with its followers' and raises the CORRUPT alarm through Raft on a
//!   mismatch, naming the member at fault (etcd 3.5; 3.4 names member 0). While
//!   CORRUPT is active every write is refused with "etcdserver: corrupt cluster".
//!
//! Peers answer over the peer listener (the `PeerCheck` service; etcd serves the
//! same at `/members/hashkv` on its peer port).

use std::sync::Arc;
use std::time::Duration;

use etcd_proto::etcdrs::peer_check_client::PeerCheckClient;
use etcd_proto::etcdrs::peer_check_server::{PeerCheck, PeerCheckServer};
use etcd_proto::etcdserverpb::alarm_request::AlarmAction;
use etcd_proto::etcdserverpb::{AlarmRequest, AlarmType, HashKvRequest, HashKvResponse};
use etcd_server::ServerError;
use tonic::{Request, Response, Status};

use crate::server::EtcdServer;

/// A peer's answer to "your hash at revision R".
enum PeerHash {
    Answered(HashKvResponse),
    /// The peer has not reached R yet.
    Behind,
    /// The peer compacted past R.
    Compacted,
    Unreachable(String),
}

impl EtcdServer {
    /// HashKV of the key space at `revision` (0: the current one), with the
    /// header at the current revision (etcd's `Maintenance.HashKV` answer).
    pub fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, ServerError> {
        let kv = self.kv();
        let current = kv.current_revision();
        let hash = kv.hash_kv(revision).map_err(crate::server::read_error)?;
        Ok(HashKvResponse {
            header: Some(self.header(current)),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        })
    }

    /// The peer-listener service answering other members' hash requests.
    pub(crate) fn peer_check_service(self: &Arc<Self>) -> PeerCheckServer<PeerCheckService> {
        PeerCheckServer::new(PeerCheckService { server: self.clone() })
    }

    /// `--experimental-initial-corrupt-check`: compares this member's hash at its
    /// current revision with every peer's; an error names the mismatch.
    pub async fn initial_corrupt_check(&self) -> Result<(), String> {
        let id = format!("{:x}", self.member_id());
        tracing::info!(
            local_member_id = %id,
            timeout = ?self.cfg.request_timeout(),
            "starting initial corruption check"
        );
        let own = self.hash_kv(0).map_err(|e| format!("{id} failed to fetch hash ({e})"))?;
        let (rev, crev) = (own.hash_revision, own.compact_revision);
        let mut mismatches = 0;
        for (peer, answer) in self.peer_hashes(rev).await {
            let peer = format!("{peer:x}");
            match answer {
                PeerHash::Answered(theirs) if theirs.hash != own.hash => {
                    if theirs.compact_revision == crev {
                        tracing::warn!(
                            local_member_id = %id, local_member_revision = rev,
                            local_member_compact_revision = crev, local_member_hash = own.hash,
                            remote_peer_id = %peer, remote_peer_compact_revision = theirs.compact_revision,
                            remote_peer_hash = theirs.hash,
                            "found different hash values from remote peer"
                        );
                        mismatches += 1;
                    } else {
                        tracing::warn!(
                            local_member_id = %id, remote_peer_id = %peer,
                            local_member_compact_revision = crev,
                            remote_peer_compact_revision = theirs.compact_revision,
                            "found different compact revision values from remote peer"
                        );
                    }
                }
                PeerHash::Answered(_) => {}
                PeerHash::Behind => tracing::warn!(
                    local_member_id = %id, local_member_revision = rev, remote_peer_id = %peer,
                    "cannot fetch hash from slow remote peer"
                ),
                PeerHash::Compacted => tracing::warn!(
                    local_member_id = %id, local_member_revision = rev, remote_peer_id = %peer,
                    "cannot fetch hash from remote peer; local member is behind"
                ),
                PeerHash::Unreachable(why) => tracing::warn!(
                    local_member_id = %id, remote_peer_id = %peer, error = %why,
                    "cannot fetch hash from remote peer"
                ),
            }
        }
        if mismatches > 0 {
            return Err(format!("{id} found data inconsistency with peers"));
        }
        tracing::info!(local_member_id = %id, "initial corruption checking passed; no corruption");
        Ok(())
    }

    /// `--experimental-corrupt-check-time`: the leader's periodic check.
    pub(crate) async fn run_corrupt_checks(self: Arc<Self>, every: Duration) {
        tracing::info!(
            local_member_id = %format!("{:x}", self.member_id()),
            interval = ?every,
            "enabled corruption checking"
        );
        loop {
            tokio::time::sleep(every).await;
            if self.is_stopped() {
                return;
            }
            if !self.is_leader() {
                continue;
            }
            if let Err(err) = self.check_hash_kv().await {
                tracing::warn!(error = %err, "failed to check hash KV");
            }
        }
    }

    /// One leader-side check: its own hash twice around a read barrier (a change
    /// between them at the same revision means its own store is corrupt), then
    /// every follower's at the leader's revision.
    async fn check_hash_kv(&self) -> Result<(), ServerError> {
        let first = self.hash_kv(0)?;
        let peers = self.peer_hashes(first.hash_revision).await;
        self.read_barrier().await?;
        let second = self.hash_kv(0)?;
        let (rev, crev) = (second.hash_revision, second.compact_revision);
        let mut at_fault = None;
        if first.hash != second.hash && first.hash_revision == rev && first.compact_revision == crev
        {
            tracing::warn!(
                revision = rev,
                compact_revision = crev,
                hash_1 = first.hash,
                hash_2 = second.hash,
                "found hash mismatch"
            );
            at_fault = Some(self.member_id());
        }
        let mut checked = 0;
        for (peer, answer) in peers {
            let PeerHash::Answered(theirs) = answer else { continue };
            checked += 1;
            let follower = format!("{peer:x}");
            let their_rev = theirs.header.as_ref().map_or(0, |h| h.revision);
            if their_rev > rev {
                tracing::warn!(
                    leader_revision = rev, follower_revision = their_rev, follower_peer_id = %follower,
                    "revision from follower must be less than or equal to leader's"
                );
                at_fault.get_or_insert(peer);
            }
            if theirs.compact_revision > crev {
                tracing::warn!(
                    leader_compact_revision = crev,
                    follower_compact_revision = theirs.compact_revision,
                    follower_peer_id = %follower,
                    "compact revision from follower must be less than or equal to leader's"
                );
                at_fault.get_or_insert(peer);
            }
            if theirs.compact_revision == first.compact_revision && theirs.hash != first.hash {
                tracing::warn!(
                    leader_compact_revision = crev, leader_hash = first.hash,
                    follower_compact_revision = theirs.compact_revision,
                    follower_hash = theirs.hash, follower_peer_id = %follower,
                    "same compact revision then hashes must match"
                );
                at_fault.get_or_insert(peer);
            }
        }
        tracing::info!(number_of_peers_checked = checked, "finished peer corruption check");
        if let Some(member_id) = at_fault {
            let request = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id,
                alarm: AlarmType::Corrupt as i32,
            };
            self.alarm(request).await?;
        }
        Ok(())
    }

    /// Asks every other member for its hash at `revision`, concurrently.
    async fn peer_hashes(&self, revision: i64) -> Vec<(u64, PeerHash)> {
        let timeout = self.cfg.request_timeout();
        let mut asks = tokio::task::JoinSet::new();
        for member in self.members().into_iter().filter(|m| m.id != self.member_id()) {
            let channel = self.transport().channel(member.id);
            asks.spawn(async move {
                let channel = match channel {
                    Ok(channel) => channel,
                    Err(why) => return (member.id, PeerHash::Unreachable(why)),
                };
                let mut request = Request::new(HashKvRequest { revision });
                request.set_timeout(timeout);
                let answer = match PeerCheckClient::new(channel).hash_kv(request).await {
                    Ok(response) => PeerHash::Answered(response.into_inner()),
                    Err(status) if status.message() == ServerError::FutureRev.to_string() => {
                        PeerHash::Behind
                    }
                    Err(status) if status.message() == ServerError::Compacted.to_string() => {
                        PeerHash::Compacted
                    }
                    Err(status) => PeerHash::Unreachable(status.message().to_string()),
                };
                (member.id, answer)
            });
        }
        let mut answers = Vec::new();
        while let Some(answer) = asks.join_next().await {
            if let Ok(answer) = answer {
                answers.push(answer);
            }
        }
        answers.sort_by_key(|(id, _)| *id);
        answers
    }
}

/// The peer side of the checks.
pub(crate) struct PeerCheckService {
    server: Arc<EtcdServer>,
}

#[tonic::async_trait]
impl PeerCheck for PeerCheckService {
    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        match self.server.hash_kv(revision) {
            Ok(response) => Ok(Response::new(response)),
            Err(err) => Err(Status::out_of_range(err.to_string())),
        }
    }
}
