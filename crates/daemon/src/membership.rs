//! Membership changes on [`EtcdServer`]: add (voter or learner), remove, promote
//! and update go through Raft; once applied, the apply loop updates Raft's
//! configuration and the peer transport, and a removed member stops.

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_proto::etcdrs::member_change::Kind;
use etcd_proto::etcdrs::{InternalRaftRequest, Member, MemberChange, RequestHeader};
use etcd_raftnode::MembershipChange;
use etcd_server::membership::MemberEvent;
use etcd_server::{ids, Applied, ServerError};
use prost::Message;
use tokio::sync::oneshot;

use crate::inputs::RaftInput;
use crate::server::EtcdServer;

/// etcd promotes a learner only once its log matches at least this share of the
/// leader's commit index.
const LEARNER_READY_PERCENT: u64 = 90;

fn valid_peer_url(url: &str) -> bool {
    let rest = ["http://", "https://", "unix://", "unixs://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme));
    let Some(rest) = rest else {
        return false;
    };
    let host_port = rest.trim_end_matches('/');
    matches!(host_port.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
}

impl EtcdServer {
    /// Adds a member (a voter, or a learner) with `peer_urls`; its ID is derived
    /// from the URLs and the time, as etcd does.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<Applied, ServerError> {
        if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_peer_url(u)) {
            return Err(ServerError::MemberBadUrls);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = ids::member_id(&peer_urls, &now.to_string());
        self.may_add_member(is_learner)?;
        let member = Member { id, peer_urls, is_learner, ..Default::default() };
        let kind = if is_learner { Kind::AddLearner } else { Kind::Add };
        let raft_kind =
            if is_learner { MembershipChange::AddLearner } else { MembershipChange::AddVoter };
        self.propose_membership(kind, raft_kind, member).await
    }

    /// Removes a member.
    pub async fn member_remove(&self, id: u64) -> Result<Applied, ServerError> {
        self.may_remove_member(id)?;
        let member = Member { id, ..Default::default() };
        self.propose_membership(Kind::Remove, MembershipChange::Remove, member).await
    }

    /// Promotes a learner that has caught up with the leader.
    pub async fn member_promote(&self, id: u64) -> Result<Applied, ServerError> {
        let Some(member) = self.members().into_iter().find(|m| m.id == id) else {
            return Err(ServerError::MemberNotFound);
        };
        if !member.is_learner {
            return Err(ServerError::MemberNotLearner);
        }
        if !self.is_leader() {
            return Err(ServerError::NotLeader);
        }
        let (reply, progress) = oneshot::channel();
        self.send_raft(RaftInput::PeerProgress { id, reply }).await?;
        let ready = match progress.await.map_err(|_| ServerError::Stopped)? {
            Some((matched, commit)) => matched * 100 >= commit * LEARNER_READY_PERCENT,
            None => false,
        };
        if !ready {
            return Err(ServerError::LearnerNotReady);
        }
        self.may_promote_member()?;
        self.propose_membership(Kind::Promote, MembershipChange::AddVoter, member).await
    }

    /// Changes a member's peer URLs.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Applied, ServerError> {
        if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_peer_url(u)) {
            return Err(ServerError::MemberBadUrls);
        }
        let change = MemberChange {
            header: None,
            kind: Kind::Update as i32,
            member: Some(Member { id, peer_urls, ..Default::default() }),
        };
        let request = InternalRaftRequest { member_change: Some(change), ..Default::default() };
        self.propose(request).await
    }

    async fn propose_membership(
        &self,
        kind: Kind,
        raft_kind: MembershipChange,
        member: Member,
    ) -> Result<Applied, ServerError> {
        let id = self.next_id();
        let node_id = member.id;
        let change = MemberChange {
            header: Some(RequestHeader { id, ..Default::default() }),
            kind: kind as i32,
            member: Some(member),
        };
        let input = RaftInput::ProposeMembershipChange {
            id,
            kind: raft_kind,
            node_id,
            context: change.encode_to_vec(),
        };
        self.wait_applied(id, input).await
    }

    /// Carries out an applied membership change outside the backend: Raft's
    /// configuration, the transport's peers, and stopping when this member left.
    pub(crate) fn on_member_event(&self, event: &MemberEvent) -> Option<RaftInput> {
        let _runtime = self.runtime().enter();
        match event {
            MemberEvent::Added(member) | MemberEvent::Updated(member) => {
                if member.id != self.member_id() {
                    self.transport().set_peer(member.id, member.peer_urls.clone());
                }
            }
            MemberEvent::Promoted(_) => {}
            MemberEvent::Removed(id) => {
                if *id == self.member_id() {
                    tracing::warn!(
                        "the member has been permanently removed from the cluster; stopping"
                    );
                    self.notify_removed();
                } else {
                    self.transport().remove_peer(*id);
                    self.transport().mark_removed(*id);
                }
            }
            MemberEvent::Reset(members) => {
                if !members.iter().any(|m| m.id == self.member_id()) {
                    // The leader's snapshot is of a cluster this member was
                    // removed from (the removal itself never reached it).
                    tracing::warn!(
                        "the member has been permanently removed from the cluster; stopping"
                    );
                    self.notify_removed();
                    return None;
                }
                // Raft took its configuration from the snapshot's metadata;
                // only the transport still follows the old members.
                let transport = self.transport();
                for gone in transport.peer_ids() {
                    if !members.iter().any(|m| m.id == gone) {
                        transport.remove_peer(gone);
                    }
                }
                for member in members.iter().filter(|m| m.id != self.member_id()) {
                    transport.set_peer(member.id, member.peer_urls.clone());
                }
                crate::server::mark_removed_members(transport, &self.backend);
            }
        }
        let (kind, node_id) = event.raft_change()?;
        Some(RaftInput::ApplyMembershipChange { kind, node_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_need_a_scheme_host_and_port() {
        assert!(valid_peer_url("http://127.0.0.1:2380"));
        assert!(valid_peer_url("https://node-a:2380/"));
        assert!(!valid_peer_url("127.0.0.1:2380"));
        assert!(!valid_peer_url("http://node-a"));
        assert!(!valid_peer_url("http://:2380"));
    }
}
