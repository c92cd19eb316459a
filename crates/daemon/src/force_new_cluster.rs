//! `--force-new-cluster`: etcd's disaster recovery for a cluster that lost its
//! quorum for good. The member restarts as the only voter of its cluster and keeps
//! its data: every entry of its log counts as committed, and conf changes removing
//! every other member are appended after the last one. Those entries go
//! through the normal apply path, so the backend's membership, the removed-members
//! record, the transport and Raft's configuration all follow as for `member remove`.
//! Cluster ID and member ID stay the same.
//!
//! Unlike etcd, which drops the entries past the commit index it had persisted,
//! the whole durable log is kept: a follower learns that an entry committed only
//! with the leader's next message, so its log can hold acknowledged writes past
//! its own commit index, and dropping them would lose them for good. An entry
//! that was in fact never committed was never acknowledged either (its client
//! saw a timeout or an error, an indeterminate outcome), so keeping it is allowed.

use etcd_proto::etcdrs::{member_change, Member, MemberChange};
use etcd_raftnode::{conf_change_entry, MembershipChange};
use etcd_wal::{Entry, HardState, Wal};
use prost::Message as _;

/// The log after forcing: what Raft restarts from.
pub(crate) struct Forced {
    /// The log as it was, then the removals.
    pub entries: Vec<Entry>,
    /// The hard state with the commit index past the removals.
    pub hard_state: HardState,
}

/// Rewrites the recovered log of member `self_id` so that it restarts alone, and
/// makes the rewrite durable before Raft sees it. `members` is the backend's
/// membership as of `applied` (its consistent index); the conf changes in the log
/// after that index are taken into account.
pub(crate) fn force(
    wal: &mut Wal,
    self_id: u64,
    members: &[Member],
    applied: u64,
    mut entries: Vec<Entry>,
    hard_state: HardState,
) -> Result<Forced, String> {
    let commit_from_wal = hard_state.commit.max(applied);
    let last = entries.last().map_or(commit_from_wal, |e| e.index).max(commit_from_wal);
    if last > commit_from_wal {
        tracing::info!(
            commit_index_from_wal = commit_from_wal,
            last_index = last,
            number_of_kept_entries = last - commit_from_wal,
            "keeping the WAL entries past the commit index (the lost cluster may have \
             committed them)"
        );
    }

    let mut voters: Vec<u64> = members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect();
    let mut learners: Vec<u64> = members.iter().filter(|m| m.is_learner).map(|m| m.id).collect();
    for entry in entries.iter().filter(|e| e.index > applied && e.entry_type == 1) {
        follow_change(entry, &mut voters, &mut learners);
    }
    if !voters.contains(&self_id) {
        return Err(if learners.contains(&self_id) {
            "--force-new-cluster: this member is a learner; a learner cannot become the only \
             voter of a cluster: start a voting member with --force-new-cluster instead"
                .into()
        } else {
            "--force-new-cluster: this member is not in its own cluster's membership (it was \
             removed): restore a snapshot into a new data dir instead"
                .into()
        });
    }

    let term = hard_state.term;
    let mut next = last + 1;
    let mut appended = Vec::new();
    for id in voters.iter().chain(learners.iter()).copied().filter(|id| *id != self_id) {
        let change = MemberChange {
            header: None,
            kind: member_change::Kind::Remove as i32,
            member: Some(Member { id, ..Default::default() }),
        };
        let raft_entry =
            conf_change_entry(next, term, MembershipChange::Remove, id, change.encode_to_vec());
        appended.push(etcd_server::wal_entries::wal_entry_ref(&raft_entry).to_entry());
        next += 1;
    }
    let hard_state = HardState { commit: next - 1, ..hard_state };
    let wal_error = |e: etcd_wal::Error| format!("--force-new-cluster: cannot write the WAL: {e}");
    wal.append(&appended, Some(&hard_state)).map_err(wal_error)?;
    wal.sync().map_err(wal_error)?;
    tracing::info!(
        removed = ?appended.len(),
        commit_index = hard_state.commit,
        local_member_id = %format!("{self_id:x}"),
        "forcing restart member"
    );
    entries.extend(appended);
    Ok(Forced { entries, hard_state })
}

/// Follows one committed conf-change entry (its context says which member changes).
fn follow_change(entry: &Entry, voters: &mut Vec<u64>, learners: &mut Vec<u64>) {
    let Ok(change) = MemberChange::decode(entry.context.as_slice()) else { return };
    let Some(id) = change.member.as_ref().map(|m| m.id) else { return };
    match member_change::Kind::try_from(change.kind) {
        Ok(member_change::Kind::Add) if !voters.contains(&id) => voters.push(id),
        Ok(member_change::Kind::AddLearner) if !learners.contains(&id) => learners.push(id),
        Ok(member_change::Kind::Promote) => {
            learners.retain(|l| *l != id);
            if !voters.contains(&id) {
                voters.push(id);
            }
        }
        Ok(member_change::Kind::Remove) => {
            voters.retain(|v| *v != id);
            learners.retain(|l| *l != id);
        }
        _ => {}
    }
}
