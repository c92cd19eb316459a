//! What clients ask of a member: writes (put, delete, compare-and-swap,
//! compaction), reads (linearizable, serializable), leases (grant, keys on
//! them, keep-alive) and the leader's lease duty, turned into the member
//! core's inputs as the daemon's request handlers do.

use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RequestOp,
    TxnRequest,
};
use etcd_raftnode::Role;
use etcd_server::member_core::MemberInput;
use etcd_server::ServerError;

use super::{read_key, KeepAlive, Reply, SimMember};
use crate::check::Call;

/// A (non-physical) compaction to `revision`.
fn compaction(revision: i64) -> InternalRaftRequest {
    InternalRaftRequest {
        compaction: Some(CompactionRequest { revision, physical: false }),
        ..Default::default()
    }
}

impl SimMember {
    /// A client's write (put, delete or compare-and-swap), as operation `op`.
    pub fn write(&mut self, op: u64, key: &[u8], call: &Call) {
        let mut request = InternalRaftRequest::default();
        let put = |value: &[u8]| PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        match call {
            Call::Put(value) => request.put = Some(put(value)),
            Call::Delete => {
                request.delete_range =
                    Some(DeleteRangeRequest { key: key.to_vec(), ..Default::default() })
            }
            Call::Cas { expect, new } => {
                let (target, target_union) = match expect {
                    Some(value) => (CompareTarget::Value, TargetUnion::Value(value.clone())),
                    None => (CompareTarget::Version, TargetUnion::Version(0)),
                };
                let compare = Compare {
                    result: CompareResult::Equal as i32,
                    target: target as i32,
                    key: key.to_vec(),
                    target_union: Some(target_union),
                    ..Default::default()
                };
                let success = RequestOp { request: Some(Request::RequestPut(put(new))) };
                request.txn = Some(TxnRequest {
                    compare: vec![compare],
                    success: vec![success],
                    failure: vec![],
                });
            }
            Call::Get => unreachable!("reads are not proposed"),
        }
        self.propose(request, Some(op));
    }

    /// The member's automatic compaction (the daemon's compactor task): when
    /// its schedule says so and this member leads, a compaction is proposed.
    pub fn compaction_duty(&mut self, now: u64) {
        if self.running.is_some() {
            self.step(MemberInput::CompactionDuty, now);
        }
    }

    /// Proposes a compaction at `revision` (an operator's; nobody waits for it).
    pub fn compact(&mut self, revision: i64) {
        self.propose(compaction(revision), None);
    }

    /// A serializable read: the local store's revision and the key's value.
    pub fn read_serializable(&self, key: &[u8]) -> Option<(i64, Option<Vec<u8>>)> {
        let apply = self.running.as_ref()?.core.apply();
        let value = read_key(apply, key).ok()?;
        Some((apply.kv().current_revision(), value))
    }

    /// A client's linearizable read of `key`, as operation `op`.
    pub fn read(&mut self, op: u64, key: &[u8]) {
        let Some(running) = self.running.as_ref() else { return };
        let leads = running.core.raft().role() == Role::Leader;
        if self.bugs.read_without_read_index || (self.bugs.leader_reads_locally && leads) {
            let reply = read_key(running.core.apply(), key);
            self.answer_read(op, reply);
            return;
        }
        self.step(MemberInput::Read { waiter: (op, key.to_vec()) }, self.now);
    }

    /// Answers a read; a storage failure stops the member (the daemon aborts:
    /// redb serves nothing more after an I/O error until reopened).
    pub(super) fn answer_read(&mut self, op: u64, read: Result<Option<Vec<u8>>, ServerError>) {
        if let Err(err) = &read {
            if let Some(running) = self.running.as_mut() {
                running.core.stop(format!("the backend failed a read: {err}"));
            }
        }
        self.replies.push((op, read.map_or_else(Reply::Refused, Reply::Read)));
    }

    /// Proposes `request`; the operation `op` (none: nobody waits, as for an
    /// operator's compaction) is told the outcome.
    pub(super) fn propose(&mut self, request: InternalRaftRequest, op: Option<u64>) {
        if self.running.is_some() {
            let request = Box::new(request);
            let waiter = op.map(|op| (op, Vec::new()));
            self.step(MemberInput::Propose { request, waiter }, self.now);
        }
    }

    /// The leader's lease duty (every 500 ms, as the daemon's expiry loop):
    /// expired leases are revoked once a ReadIndex confirms this member still
    /// leads; a member that does not lead demotes its lessor.
    pub fn lease_duty(&mut self, now: u64) {
        if self.running.is_none() {
            return;
        }
        let now = if self.bugs.expire_leases_early { now + 1_500 } else { now };
        self.step(MemberInput::LeaseDuty, now);
    }

    /// A client's lease grant, as operation `op`.
    pub fn grant(&mut self, op: u64, lease: i64, ttl_secs: i64) {
        let request = InternalRaftRequest {
            lease_grant: Some(LeaseGrantRequest { ttl: ttl_secs, id: lease }),
            ..Default::default()
        };
        self.propose(request, Some(op));
    }

    /// A client's put of `key` attached to `lease`, as operation `op`.
    pub fn put_with_lease(&mut self, op: u64, key: &[u8], value: &[u8], lease: i64) {
        let put =
            PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() };
        self.propose(InternalRaftRequest { put: Some(put), ..Default::default() }, Some(op));
    }

    /// A keep-alive on this member's lessor, as the daemon's `renew_here`: only
    /// a leader whose lessor tracks deadlines renews.
    pub fn keepalive(&mut self, lease: i64, now: u64) -> KeepAlive {
        let Some(running) = self.running.as_mut() else { return KeepAlive::NotLeader };
        match running.core.renew(lease, now) {
            Ok(()) => KeepAlive::Renewed,
            Err(etcd_lease::LeaseError::NotPrimary) => KeepAlive::NotLeader,
            Err(_) => KeepAlive::NotFound,
        }
    }
}
