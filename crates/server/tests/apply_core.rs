//! The apply half of the member core on its own: committed entries in, store
//! changes, results, snapshots and lease duties out.

use std::sync::Arc;

use etcd_proto::etcdrs::member_change::Kind;
use etcd_proto::etcdrs::{InternalRaftRequest, Member, MemberChange, RequestHeader};
use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use etcd_raftnode::{Entry, EntryType, MembershipChange, Message, MessageType};
use etcd_server::apply_core::{lease_duties, stamp_snapshot, ApplyCore, ApplyCoreConfig};
use etcd_server::membership::MemberEvent;
use etcd_server::Response;
use etcd_storage::Backend;
use prost::Message as _;

struct Fixture {
    core: ApplyCore,
    backend: Arc<Backend>,
    _dir: tempfile::TempDir,
}

fn config() -> ApplyCoreConfig {
    ApplyCoreConfig {
        snapshot_count: 10,
        batch_limit: 5,
        batch_interval_ms: 100,
        promote_extend_ms: 1_000,
        min_lease_ttl_secs: 2,
        lease_checkpoint: None,
        auth_token_ttl_ms: 300_000,
        compaction_batch_limit: 1000,
    }
}

fn member() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(Backend::open(&dir.path().join("db")).expect("backend"));
    let kv = Arc::new(etcd_mvcc::KvStore::open(backend.clone()).expect("store"));
    let core = ApplyCore::open(kv, backend.clone(), config(), 0, 0).expect("apply half");
    Fixture { core, backend, _dir: dir }
}

fn entry(index: u64, id: u64, mut request: InternalRaftRequest) -> Entry {
    request.header = Some(RequestHeader { id, ..Default::default() });
    Entry { index, term: 1, data: request.encode_to_vec().into(), ..Default::default() }
}

fn put(index: u64, key: &str, value: &str) -> Entry {
    let put = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
    entry(index, index, InternalRaftRequest { put: Some(put), ..Default::default() })
}

fn get(core: &ApplyCore, key: &str) -> Option<(String, i64)> {
    let response =
        core.kv().range(&RangeRequest { key: key.into(), ..Default::default() }).expect("range");
    response
        .kvs
        .first()
        .map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision))
}

#[test]
fn entries_apply_once_even_when_replayed() {
    let mut m = member();
    let batch = vec![put(1, "a", "1"), put(2, "b", "2"), put(3, "a", "3")];
    let result = m.core.apply(&batch, 0, true).expect("apply");
    assert_eq!(result.outcome.applied.len(), 3);
    assert_eq!(m.core.applied_index(), 3);
    assert_eq!(get(&m.core, "a"), Some(("3".into(), 4)));
    // After a restart the log replays from before the consistent index: the
    // entries already applied change nothing.
    let again = m.core.apply(&batch, 1, true).expect("replay");
    assert!(again.outcome.applied.is_empty());
    assert_eq!(m.core.kv().current_revision(), 4);
    let more = m.core.apply(&[put(3, "a", "3"), put(4, "c", "4")], 2, true).expect("apply");
    assert_eq!(more.outcome.applied.len(), 1, "only the new entry");
    assert_eq!(m.core.kv().current_revision(), 5);
}

#[test]
fn a_snapshot_is_due_every_snapshot_count_entries() {
    let mut m = member();
    let mut due = Vec::new();
    for index in 1..=25 {
        let result = m.core.apply(&[put(index, "k", "v")], index, true).expect("apply");
        due.extend(result.snapshot.map(|(index, _)| index));
    }
    assert_eq!(due, vec![10, 20]);
}

#[test]
fn a_transaction_compares_and_writes_in_one_revision() {
    let mut m = member();
    m.core.apply(&[put(1, "k", "old")], 0, true).expect("apply");
    let cas = |index: u64, expect: &str, new: &str| {
        let compare = Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: b"k".to_vec(),
            target_union: Some(TargetUnion::Value(expect.into())),
            ..Default::default()
        };
        let success = RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: new.into(),
                ..Default::default()
            })),
        };
        let txn = TxnRequest { compare: vec![compare], success: vec![success], failure: vec![] };
        entry(index, index, InternalRaftRequest { txn: Some(txn), ..Default::default() })
    };
    let outcome = m.core.apply(&[cas(2, "old", "new"), cas(3, "old", "other")], 0, true);
    let applied = outcome.expect("apply").outcome.applied;
    let succeeded: Vec<bool> = applied
        .iter()
        .map(|a| match &a.result {
            Ok(Response::Txn(txn)) => txn.succeeded,
            other => panic!("not a txn result: {other:?}"),
        })
        .collect();
    assert_eq!(succeeded, vec![true, false]);
    assert_eq!(get(&m.core, "k"), Some(("new".into(), 3)));
    let delete = DeleteRangeRequest { key: b"k".to_vec(), ..Default::default() };
    let deleted =
        entry(4, 4, InternalRaftRequest { delete_range: Some(delete), ..Default::default() });
    let events = m.core.apply(&[deleted], 0, true).expect("apply").outcome.events;
    assert_eq!(events.len(), 1, "one revision");
    assert_eq!(get(&m.core, "k"), None);
}

#[test]
fn membership_changes_become_raft_changes() {
    let mut m = member();
    let change = MemberChange {
        header: Some(RequestHeader { id: 9, ..Default::default() }),
        kind: Kind::AddLearner as i32,
        member: Some(Member {
            id: 42,
            peer_urls: vec!["http://m42:2380".into()],
            ..Default::default()
        }),
    };
    let mut conf_change =
        Entry { index: 1, term: 1, context: change.encode_to_vec().into(), ..Default::default() };
    conf_change.set_entry_type(EntryType::EntryConfChange);
    let events = m.core.apply(&[conf_change], 0, true).expect("apply").outcome.member_events;
    assert_eq!(events.len(), 1);
    assert!(
        matches!(&events[0], MemberEvent::Added(member) if member.id == 42 && member.is_learner)
    );
    assert_eq!(events[0].raft_change(), Some((MembershipChange::AddLearner, 42)));
}

#[test]
fn a_snapshot_message_carries_the_index_of_the_backend_it_sends() {
    let mut m = member();
    let batch: Vec<Entry> = (1..=7).map(|i| put(i, "k", "v")).collect();
    m.core.apply(&batch, 0, true).expect("apply");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("copy.db");
    m.backend.copy_to(&path).expect("copy");
    let copy = Backend::open(&path).expect("open copy");
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    message.mut_snapshot().mut_metadata().index = 5;
    stamp_snapshot(&mut message, &copy).expect("stamp");
    let metadata = message.get_snapshot().get_metadata();
    assert_eq!((metadata.index, metadata.term), (7, 1), "the copy holds index 7");
}

#[test]
fn only_a_leader_revokes_expired_leases() {
    let mut m = member();
    let grant = LeaseGrantRequest { id: 5, ttl: 3 };
    let granted =
        entry(1, 1, InternalRaftRequest { lease_grant: Some(grant), ..Default::default() });
    // A leader's first entry promotes its lessor.
    let first = Entry { index: 1, term: 1, ..Default::default() };
    let granted = Entry { index: 2, ..granted };
    m.core.apply(&[first, granted], 1_000, true).expect("apply");
    let mut lessor = m.core.lessor().lock().expect("lessor");
    assert!(lease_duties(&mut lessor, 2_000, true).expired.is_empty(), "not yet");
    assert_eq!(lease_duties(&mut lessor, 1_000 + 3_000 + 1_000 + 1, true).expired, vec![5]);
    // A member that no longer leads stops tracking deadlines.
    assert!(lease_duties(&mut lessor, 60_000, false).expired.is_empty());
    assert!(!lessor.is_primary());
}
