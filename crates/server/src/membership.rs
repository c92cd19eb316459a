//! Cluster membership as stored in the backend's `members` table (one
//! `etcdrs.Member` per member), which every member updates when it applies the same
//! entries. The Raft configuration (voters and learners) is derived from it, so a
//! restarted member recovers its membership as of its consistent index.

use etcd_proto::etcdrs::member_change::Kind;
use etcd_proto::etcdrs::{Member, MemberAttributes, MemberChange};
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
            Member::decode(bytes.as_slice())
                .map_err(|e| format!("member {id:x} is unreadable: {e}"))
        })
        .collect()
}

/// Every member, as of the backend's last commit.
pub fn read(backend: &etcd_storage::Backend) -> Result<Vec<Member>, String> {
    let txn = backend.begin_read().map_err(|e| e.to_string())?;
    load(&txn)
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

/// What a membership change did, for the Raft configuration and the transport.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberEvent {
    /// A voter or learner joined.
    Added(Member),
    /// A member left.
    Removed(u64),
    /// A learner became a voter.
    Promoted(u64),
    /// A member's peer URLs changed.
    Updated(Member),
    /// A leader's snapshot replaced the members table wholesale; these are the
    /// members it holds (changes inside the snapshot were never applied here).
    Reset(Vec<Member>),
}

impl MemberEvent {
    /// The change to Raft's configuration this event makes: none for a URL
    /// update, nor for a snapshot's reset (Raft took its configuration from the
    /// snapshot's metadata).
    pub fn raft_change(&self) -> Option<(etcd_raftnode::MembershipChange, u64)> {
        use etcd_raftnode::MembershipChange;
        match self {
            MemberEvent::Added(member) if member.is_learner => {
                Some((MembershipChange::AddLearner, member.id))
            }
            MemberEvent::Added(member) => Some((MembershipChange::AddVoter, member.id)),
            MemberEvent::Promoted(id) => Some((MembershipChange::AddVoter, *id)),
            MemberEvent::Removed(id) => Some((MembershipChange::Remove, *id)),
            MemberEvent::Updated(_) | MemberEvent::Reset(_) => None,
        }
    }
}

/// The outcome of a membership change: every member after it, the member it
/// concerned, and what the rest of the server must do about it.
pub(crate) type Changed = (Vec<Member>, Member, MemberEvent);

/// Applies a membership change to the members table, checking it as etcd does
/// (deterministically, so every member accepts or refuses it alike).
pub(crate) fn apply_change(
    txn: &WriteTxn,
    change: &MemberChange,
) -> Result<Result<Changed, ServerError>, ApplyFailure> {
    let storage = ApplyFailure::Membership;
    let mut members = load(txn).map_err(storage)?;
    let Some(target) = change.member.clone() else {
        return Ok(Err(ServerError::MemberNotFound));
    };
    // A removed ID never comes back (etcd: "membership: ID removed", which
    // clients see as "member not found"), whatever the change.
    let removed = txn.members_removed_list().map_err(|e| storage(e.to_string()))?;
    if removed.binary_search(&target.id).is_ok() {
        return Ok(Err(ServerError::MemberNotFound));
    }
    let existing = members.iter().position(|m| m.id == target.id);
    let kind = Kind::try_from(change.kind).unwrap_or(Kind::Update);
    let (member, event) = match kind {
        Kind::Add | Kind::AddLearner => {
            if existing.is_some() {
                return Ok(Err(ServerError::MemberExists));
            }
            if members.iter().any(|m| m.peer_urls.iter().any(|u| target.peer_urls.contains(u))) {
                return Ok(Err(ServerError::PeerUrlExists));
            }
            let member = Member { is_learner: kind == Kind::AddLearner, ..target };
            members.push(member.clone());
            save(txn, std::slice::from_ref(&member)).map_err(storage)?;
            (member.clone(), MemberEvent::Added(member))
        }
        Kind::Remove => {
            let Some(i) = existing else { return Ok(Err(ServerError::MemberNotFound)) };
            let member = members.remove(i);
            txn.members_delete(member.id).map_err(|e| storage(e.to_string()))?;
            txn.members_removed_put(member.id).map_err(|e| storage(e.to_string()))?;
            (member.clone(), MemberEvent::Removed(member.id))
        }
        Kind::Promote => {
            let Some(i) = existing else { return Ok(Err(ServerError::MemberNotFound)) };
            if !members[i].is_learner {
                return Ok(Err(ServerError::MemberNotLearner));
            }
            members[i].is_learner = false;
            save(txn, std::slice::from_ref(&members[i])).map_err(storage)?;
            (members[i].clone(), MemberEvent::Promoted(target.id))
        }
        Kind::Update => {
            let Some(i) = existing else { return Ok(Err(ServerError::MemberNotFound)) };
            let taken = members
                .iter()
                .filter(|m| m.id != target.id)
                .any(|m| m.peer_urls.iter().any(|u| target.peer_urls.contains(u)));
            if taken {
                return Ok(Err(ServerError::PeerUrlExists));
            }
            members[i].peer_urls = target.peer_urls.clone();
            save(txn, std::slice::from_ref(&members[i])).map_err(storage)?;
            (members[i].clone(), MemberEvent::Updated(members[i].clone()))
        }
    };
    members.sort_by_key(|m| m.id);
    Ok(Ok((members, member, event)))
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

    #[test]
    fn a_removed_id_never_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let backend = etcd_storage::Backend::open(&dir.path().join("db")).unwrap();
        let change = |kind: Kind, id: u64, url: &str| MemberChange {
            header: None,
            kind: kind as i32,
            member: Some(Member { id, peer_urls: vec![url.to_owned()], ..Default::default() }),
        };
        let txn = backend.begin_write().unwrap();
        apply_change(&txn, &change(Kind::Add, 7, "http://a:2380")).unwrap().unwrap();
        let (members, _, event) =
            apply_change(&txn, &change(Kind::Remove, 7, "")).unwrap().unwrap();
        assert!(members.is_empty());
        assert_eq!(event, MemberEvent::Removed(7));
        txn.commit(true).unwrap();

        let txn = backend.begin_write().unwrap();
        assert_eq!(txn.members_removed_list().unwrap(), vec![7]);
        for kind in [Kind::Add, Kind::AddLearner, Kind::Remove, Kind::Update, Kind::Promote] {
            let refused = apply_change(&txn, &change(kind, 7, "http://b:2380")).unwrap();
            assert!(matches!(refused, Err(ServerError::MemberNotFound)), "{kind:?}: {refused:?}");
        }
        // Another ID at the same URL is welcome.
        apply_change(&txn, &change(Kind::Add, 8, "http://a:2380")).unwrap().unwrap();
    }
}
