//! Alarms (etcd's `AlarmStore`): conditions raised by a member through Raft that
//! change what every member applies. NOSPACE is raised when a write would grow
//! the backend past `--quota-backend-bytes`; while it is active, puts, txns that
//! put and lease grants are refused on apply (reads, deletes and compactions go
//! on), until an operator frees space and disarms it (`etcdctl alarm disarm`).
//! The active set is one meta entry, written in the batch that changes it.

use std::collections::BTreeSet;

use etcd_proto::etcdserverpb::alarm_request::AlarmAction;
use etcd_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use etcd_storage::schema::META_ALARMS;
use etcd_storage::{ReadTables, WriteTxn};
use prost::Message;

/// An alarm type's name as etcd prints it (`NOSPACE`, `CORRUPT`).
pub fn alarm_name(alarm: i32) -> &'static str {
    AlarmType::try_from(alarm).map_or("UNKNOWN", |a| a.as_str_name())
}

/// The active alarms, as (member ID, alarm type) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alarms {
    active: BTreeSet<(u64, i32)>,
}

impl Alarms {
    /// Reads the active alarms from the backend.
    pub fn load(txn: &impl ReadTables) -> Result<Alarms, String> {
        let Some(bytes) = etcd_storage::meta_get(txn, META_ALARMS).map_err(|e| e.to_string())?
        else {
            return Ok(Alarms::default());
        };
        let stored = AlarmResponse::decode(bytes.as_slice())
            .map_err(|e| format!("the stored alarms do not decode: {e}"))?;
        Ok(Alarms { active: stored.alarms.iter().map(|a| (a.member_id, a.alarm)).collect() })
    }

    /// The active alarms as of the backend's last commit.
    pub fn read(backend: &etcd_storage::Backend) -> Result<Alarms, String> {
        let txn = backend.begin_read().map_err(|e| e.to_string())?;
        Alarms::load(&txn)
    }

    /// Replaces the stored alarms with `members` (a snapshot from another
    /// server being imported).
    pub fn store(txn: &WriteTxn, members: &[AlarmMember]) -> Result<(), String> {
        let alarms = Alarms { active: members.iter().map(|a| (a.member_id, a.alarm)).collect() };
        alarms.save(txn)
    }

    fn save(&self, txn: &WriteTxn) -> Result<(), String> {
        let stored = AlarmResponse { header: None, alarms: self.list(AlarmType::None as i32) };
        etcd_storage::meta_put(txn, META_ALARMS, &stored.encode_to_vec()).map_err(|e| e.to_string())
    }

    /// Active alarms of type `alarm`, or all of them for `NONE`.
    pub fn list(&self, alarm: i32) -> Vec<AlarmMember> {
        self.active
            .iter()
            .filter(|(_, a)| alarm == AlarmType::None as i32 || *a == alarm)
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// Whether every write is refused (members' data diverged).
    pub fn corrupt(&self) -> bool {
        self.active.iter().any(|(_, a)| *a == AlarmType::Corrupt as i32)
    }

    /// Whether writes that grow the backend are refused.
    pub fn no_space(&self) -> bool {
        self.active.iter().any(|(_, a)| *a == AlarmType::Nospace as i32)
    }

    /// Applies an alarm request as etcd does: activation and deactivation answer
    /// the alarm they changed (nothing if it already was / was not active); a
    /// get answers the active alarms of the asked type.
    pub(crate) fn apply(
        &mut self,
        txn: &WriteTxn,
        request: &AlarmRequest,
    ) -> Result<AlarmResponse, String> {
        let member = AlarmMember { member_id: request.member_id, alarm: request.alarm };
        let key = (request.member_id, request.alarm);
        let changed = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) | Err(_) => {
                return Ok(AlarmResponse { header: None, alarms: self.list(request.alarm) });
            }
            Ok(AlarmAction::Activate) => {
                request.alarm != AlarmType::None as i32 && self.active.insert(key)
            }
            Ok(AlarmAction::Deactivate) => self.active.remove(&key),
        };
        if !changed {
            return Ok(AlarmResponse::default());
        }
        let name = alarm_name(request.alarm);
        if request.action == AlarmAction::Activate as i32 {
            tracing::warn!(alarm = name, from = %format!("{:x}", request.member_id), "alarm raised");
        } else {
            tracing::info!(alarm = name, from = %format!("{:x}", request.member_id), "alarm disarmed");
        }
        self.save(txn)?;
        Ok(AlarmResponse { header: None, alarms: vec![member] })
    }
}

/// Whether a txn would write a key in either branch (etcd's capped applier
/// refuses those while NOSPACE is active; read-only and delete-only txns pass).
pub(crate) fn txn_puts(txn: &etcd_proto::etcdserverpb::TxnRequest) -> bool {
    use etcd_proto::etcdserverpb::request_op::Request as Op;
    txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
        Some(Op::RequestPut(_)) => true,
        Some(Op::RequestTxn(nested)) => txn_puts(nested),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::etcdserverpb::request_op::Request as Op;
    use etcd_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest};

    fn request(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest { action: action as i32, member_id, alarm: alarm as i32 }
    }

    #[test]
    fn activation_and_deactivation_answer_what_changed_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let backend = etcd_storage::Backend::open(&dir.path().join("db")).unwrap();
        let mut alarms = Alarms::default();
        let txn = backend.begin_write().unwrap();
        let raised = alarms.apply(&txn, &request(AlarmAction::Activate, 7, AlarmType::Nospace));
        assert_eq!(raised.unwrap().alarms, [AlarmMember { member_id: 7, alarm: 1 }]);
        let again = alarms.apply(&txn, &request(AlarmAction::Activate, 7, AlarmType::Nospace));
        assert!(again.unwrap().alarms.is_empty(), "already active: nothing changed");
        let none = alarms.apply(&txn, &request(AlarmAction::Activate, 7, AlarmType::None));
        assert!(none.unwrap().alarms.is_empty(), "NONE is not an alarm");
        txn.commit(false).unwrap();
        assert!(alarms.no_space());
        let stored = Alarms::load(&backend.begin_read().unwrap()).unwrap();
        assert_eq!(stored, alarms);

        let txn = backend.begin_write().unwrap();
        let got = alarms.apply(&txn, &request(AlarmAction::Get, 0, AlarmType::Corrupt));
        assert!(got.unwrap().alarms.is_empty(), "get filters by type");
        let gone = alarms.apply(&txn, &request(AlarmAction::Deactivate, 7, AlarmType::Nospace));
        assert_eq!(gone.unwrap().alarms.len(), 1);
        txn.commit(false).unwrap();
        assert!(!alarms.no_space());
        assert!(Alarms::load(&backend.begin_read().unwrap()).unwrap().list(0).is_empty());
    }

    #[test]
    fn only_txns_that_put_in_some_branch_grow_the_backend() {
        let put = RequestOp { request: Some(Op::RequestPut(PutRequest::default())) };
        let nested = |inner: TxnRequest| RequestOp { request: Some(Op::RequestTxn(inner)) };
        assert!(!txn_puts(&TxnRequest::default()));
        let failure_puts = TxnRequest { failure: vec![put.clone()], ..Default::default() };
        assert!(txn_puts(&failure_puts));
        let deep = TxnRequest { success: vec![nested(failure_puts)], ..Default::default() };
        assert!(txn_puts(&deep));
    }
}
