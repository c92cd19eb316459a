//! `--strict-reconfig-check` (on by default, as in etcd): a membership change
//! that would leave the cluster without a quorum of started, reachable members
//! is refused before it is proposed. "Started" is etcd's: the member published
//! its name. "Reachable" is this member's view: its connection to the peer has
//! been up for etcd's health interval (5 s).
//!
//! - Adding a voter needs a quorum of the grown cluster started, and every voter
//!   reachable (`etcdserver: unhealthy cluster` otherwise); a learner only the latter.
//! - Removing a voter needs a quorum of the rest started, and, unless the removed
//!   member is down already, a quorum of the rest reachable.
//! - Promoting a learner needs a quorum of the grown voters started.

use std::time::{Duration, Instant};

use etcd_proto::etcdrs::Member;
use etcd_server::ServerError;

use crate::server::EtcdServer;

/// etcd's `HealthInterval`: how long a peer connection must have been up.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

fn quorum(members: usize) -> usize {
    members / 2 + 1
}

fn started(member: &Member) -> bool {
    !member.name.is_empty()
}

impl EtcdServer {
    fn voters(&self) -> Vec<Member> {
        self.members().into_iter().filter(|m| !m.is_learner).collect()
    }

    /// Whether this member has been connected to `id` since before `since`
    /// (itself always).
    fn connected_since(&self, id: u64, since: Instant) -> bool {
        id == self.member_id() || self.transport().active_since(id).is_some_and(|t| t <= since)
    }

    fn healthy_since(&self) -> Instant {
        Instant::now().checked_sub(HEALTH_INTERVAL).unwrap_or_else(Instant::now)
    }

    /// etcd's `mayAddMember`.
    pub(crate) fn may_add_member(&self, is_learner: bool) -> Result<(), ServerError> {
        if !self.config().strict_reconfig_check {
            return Ok(());
        }
        let voters = self.voters();
        let (members, up) = (voters.len() + 1, voters.iter().filter(|m| started(m)).count());
        // Growing a one-member cluster to two (how a cluster is restored) is allowed.
        let restoring = up == 1 && members == 2;
        if !is_learner && !restoring && up < quorum(members) {
            tracing::warn!(
                started = up,
                quorum = quorum(members),
                "rejecting member add request; not enough healthy members"
            );
            return Err(ServerError::NotEnoughStartedMembers);
        }
        let since = self.healthy_since();
        if !voters.iter().all(|m| self.connected_since(m.id, since)) {
            tracing::warn!("rejecting member add request; local member has not been connected to all peers, reconfigure breaks active quorum");
            return Err(ServerError::Unhealthy);
        }
        Ok(())
    }

    /// etcd's `mayRemoveMember`.
    pub(crate) fn may_remove_member(&self, id: u64) -> Result<(), ServerError> {
        if !self.config().strict_reconfig_check {
            return Ok(());
        }
        let voters = self.voters();
        if !voters.iter().any(|m| m.id == id) {
            return Ok(()); // a learner, or unknown (the applier answers that)
        }
        let rest: Vec<&Member> = voters.iter().filter(|m| m.id != id).collect();
        let up = rest.iter().filter(|m| started(m)).count();
        if up < quorum(rest.len()) {
            tracing::warn!(
                started = up,
                quorum = quorum(rest.len()),
                "rejecting member remove; started member will be less than quorum"
            );
            return Err(ServerError::NotEnoughStartedMembers);
        }
        // A member that is down is not part of the active quorum.
        if id != self.member_id() && self.transport().active_since(id).is_none() {
            return Ok(());
        }
        let since = self.healthy_since();
        let active = voters.iter().filter(|m| self.connected_since(m.id, since)).count();
        if active.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
            tracing::warn!(active, "rejecting member remove request; local member has not been connected to all peers, reconfigure breaks active quorum");
            return Err(ServerError::Unhealthy);
        }
        Ok(())
    }

    /// etcd's `mayPromoteMember` (after the learner-caught-up check).
    pub(crate) fn may_promote_member(&self) -> Result<(), ServerError> {
        if !self.config().strict_reconfig_check {
            return Ok(());
        }
        let voters = self.voters();
        // The learner counts, as started, towards the grown cluster.
        let (members, up) = (voters.len() + 1, voters.iter().filter(|m| started(m)).count() + 1);
        if up < quorum(members) {
            tracing::warn!(
                started = up,
                quorum = quorum(members),
                "rejecting member promote; started member will be less than quorum"
            );
            return Err(ServerError::NotEnoughStartedMembers);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::quorum;

    #[test]
    fn quorums_are_majorities() {
        assert_eq!([1, 2, 3, 4, 5].map(quorum), [1, 2, 2, 3, 3]);
    }
}
