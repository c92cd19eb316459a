//! Cluster membership as stored in the backend's `members` table (one
//! `etcdrs.Member` per member), which every member updates when it applies the same
//! entries. The Raft configuration (voters and learners) is derived from it, so a
//! restarted member recovers its membership as of its consistent index.

use etcd_proto::etcdrs::{Member, MemberAttributes};
use etcd_raftnode::ConfState;
use etcd_storage::{ReadTables, WriteTxn};
use prost::Message;

use crate::applier::{ApplyFailure, Response};
use crate::ServerError;

/// Every member in the table, by ID.
pub fn load(txn: &impl ReadTables) -> Result<Vec<Member>, String> {
    let rows = txn.members_list().map_err(|e| e.to_string())?;
    rows.into_iter()
        .map(|(id, bytes)| {
            Member::decode(bytes.as_slice()).map_err(|e| format!("member {id:x} is unreadable: {e}"))
        })
        .collect()
}

/// Writes (adds or replaces) members.
pub fn save(txn: &WriteTxn, members: &[Member]) -> Result<(), String> {
    for member in members {
        txn.members_put(member.id, &member.encode_to_vec()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The Raft configuration the members describe.
pub fn conf_state(members: &[Member]) -> ConfState {
    let voters: Vec<u64> = members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect();
    let learners: Vec<u64> = members.iter().filter(|m| m.is_learner).map(|m| m.id).collect();
    ConfState::from((voters, learners))
}

/// Applies a member's published attributes (name and client URLs). An unknown
/// member (removed meanwhile) is ignored, as etcd does.
pub(crate) fn apply_attributes(
    txn: &WriteTxn,
    attributes: &MemberAttributes,
) -> Result<Result<Response, ServerError>, ApplyFailure> {
    let storage = |e: String| ApplyFailure::Membership(e);
    let mut members = load(txn).map_err(storage)?;
    if let Some(member) = members.iter_mut().find(|m| m.id == attributes.id) {
        member.name = attributes.name.clone();
        member.client_urls = attributes.client_urls.clone();
        save(txn, std::slice::from_ref(member)).map_err(storage)?;
    }
    Ok(Ok(Response::MemberAttributes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_state_splits_voters_and_learners() {
        let members = vec![
            Member { id: 1, ..Default::default() },
            Member { id: 2, is_learner: true, ..Default::default() },
            Member { id: 3, ..Default::default() },
        ];
        let cs = conf_state(&members);
        assert_eq!(cs.voters, vec![1, 3]);
        assert_eq!(cs.learners, vec![2]);
    }
}
