//! What clients ask of a member: writes (put, delete, compare-and-swap,
//! compaction), reads (linearizable, serializable), leases (grant, keys on
//! them, keep-alive) and the leader's lease duty, turned into the member
//! core's inputs as the daemon's request handlers do.

use etcd_proto::etcdrs::{InternalRaftRequest, RequestHeader};
use etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RequestOp,
    TxnRequest,
};
use etcd_raftnode::Role;
use etcd_server::apply_core::lease_duties;
use etcd_server::raft_core::Input;
use etcd_server::ServerError;
use prost::Message as _;

use super::{read_key, KeepAlive, Reply, SimMember, Waiter};
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
        self.propose(request, Some(Waiter::Client(op)));
    }

    /// The member's automatic compaction (the daemon's compactor task): when
    /// its schedule says so and this member leads, a compaction is proposed.
    pub fn compaction_duty(&mut self, now: u64) {
        let Some(running) = self.running.as_mut() else { return };
        let leading = running.raft.role() == Role::Leader;
        let revision = running.apply.kv().current_revision();
        let Some(target) = running.compactor.tick(now, revision, leading) else { return };
        if crate::tracing() {
            eprintln!("{now:>6} member {} auto compaction to {target}", self.id);
        }
        self.propose(compaction(target), Some(Waiter::Compaction(target)));
    }

    /// Proposes a compaction at `revision` (an operator's; nobody waits for it).
    pub fn compact(&mut self, revision: i64) {
        self.propose(compaction(revision), None);
    }

    /// A serializable read: the local store's revision and the key's value.
    pub fn read_serializable(&self, key: &[u8]) -> Option<(i64, Option<Vec<u8>>)> {
        let running = self.running.as_ref()?;
        let value = read_key(&running.apply, key).ok()?;
        Some((running.apply.kv().current_revision(), value))
    }

    /// A client's linearizable read of `key`, as operation `op`.
    pub fn read(&mut self, op: u64, key: &[u8]) {
        let Some(running) = self.running.as_mut() else { return };
        let leads = running.raft.role() == Role::Leader;
        if self.bugs.read_without_read_index || (self.bugs.leader_reads_locally && leads) {
            let reply = read_key(&running.apply, key);
            self.answer_read(op, reply);
            return;
        }
        running.next_reader += 1;
        let reader = running.next_reader;
        running.readers.insert(reader, (op, key.to_vec()));
        self.input(Input::ReadIndex { reader });
    }

    /// Answers a read; a storage failure stops the member (the daemon aborts:
    /// redb serves nothing more after an I/O error until reopened).
    pub(super) fn answer_read(&mut self, op: u64, read: Result<Option<Vec<u8>>, ServerError>) {
        if let Err(err) = &read {
            // The first failure is the one that stops the member.
            self.fatal.get_or_insert_with(|| format!("the backend failed a read: {err}"));
        }
        self.replies.push((op, read.map_or_else(Reply::Refused, Reply::Read)));
    }

    /// Proposes `request` under this member's next request ID; `waiter`
    /// (none: nobody waits, as for a revoke of an expired lease) is told the
    /// outcome.
    pub(super) fn propose(&mut self, mut request: InternalRaftRequest, waiter: Option<Waiter>) {
        let Some(running) = self.running.as_mut() else { return };
        running.next_request += 1;
        let id = running.next_request;
        request.header = Some(RequestHeader { id, ..Default::default() });
        if let Some(waiter) = waiter {
            running.waiters.register(id, waiter);
        }
        self.input(Input::Propose { id, data: request.encode_to_vec() });
    }

    /// The leader's lease duty (every 500 ms, as the daemon's expiry loop):
    /// expired leases are revoked once a ReadIndex confirms this member still
    /// leads; a member that does not lead demotes its lessor.
    pub fn lease_duty(&mut self, now: u64) {
        let Some(running) = self.running.as_mut() else { return };
        let leading = running.raft.role() == Role::Leader;
        let now = if self.bugs.expire_leases_early { now + 1_500 } else { now };
        let duties = {
            let mut lessor = running.apply.lessor().lock().expect("lessor lock");
            lease_duties(&mut lessor, now, leading)
        };
        if duties.expired.is_empty() {
            return;
        }
        if crate::tracing() {
            eprintln!("{now:>6} member {} lease duty: expired {:?}", self.id, duties.expired);
        }
        running.next_reader += 1;
        let reader = running.next_reader;
        running.revokes.insert(reader, duties.expired);
        self.input(Input::ReadIndex { reader });
    }

    /// A client's lease grant, as operation `op`.
    pub fn grant(&mut self, op: u64, lease: i64, ttl_secs: i64) {
        let request = InternalRaftRequest {
            lease_grant: Some(LeaseGrantRequest { ttl: ttl_secs, id: lease }),
            ..Default::default()
        };
        self.propose(request, Some(Waiter::Client(op)));
    }

    /// A client's put of `key` attached to `lease`, as operation `op`.
    pub fn put_with_lease(&mut self, op: u64, key: &[u8], value: &[u8], lease: i64) {
        let put =
            PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() };
        self.propose(
            InternalRaftRequest { put: Some(put), ..Default::default() },
            Some(Waiter::Client(op)),
        );
    }

    /// A keep-alive on this member's lessor, as the daemon's `renew_here`: only
    /// a leader whose lessor tracks deadlines renews.
    pub fn keepalive(&mut self, lease: i64, now: u64) -> KeepAlive {
        let Some(running) = self.running.as_mut() else { return KeepAlive::NotLeader };
        if running.raft.role() != Role::Leader {
            return KeepAlive::NotLeader;
        }
        let mut lessor = running.apply.lessor().lock().expect("lessor lock");
        match lessor.renew(lease, now) {
            Ok(_) => KeepAlive::Renewed,
            Err(etcd_lease::LeaseError::NotPrimary) => KeepAlive::NotLeader,
            Err(_) => KeepAlive::NotFound,
        }
    }
}
