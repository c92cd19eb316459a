//! The space quota and alarms on the server side: the quota check before a
//! write is proposed raises NOSPACE through Raft (as etcd's quota alarmer), and
//! alarm requests from clients are proposed like any other request.

use std::sync::atomic::Ordering;

use etcd_proto::etcdrs::InternalRaftRequest;
use etcd_proto::etcdserverpb::alarm_request::AlarmAction;
use etcd_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use etcd_server::alarms::Alarms;
use etcd_server::{Response, ServerError};

use crate::server::EtcdServer;

/// What etcd counts a lease grant as adding to the backend.
pub(crate) const LEASE_COST_BYTES: u64 = 64;

impl EtcdServer {
    /// Refuses a write that would add about `cost_bytes` to a backend already at
    /// its `--quota-backend-bytes`, first raising the NOSPACE alarm for this
    /// member so every member refuses such writes until it is disarmed (reads,
    /// deletes and compactions stay allowed).
    pub async fn check_quota(&self, cost_bytes: u64) -> Result<(), ServerError> {
        let size = self.shared.db_size_bytes.load(Ordering::Relaxed);
        if size.saturating_add(cost_bytes) <= self.cfg.quota_backend_bytes {
            return Ok(());
        }
        let raised = self
            .alarms()
            .iter()
            .any(|a| a.member_id == self.member_id() && a.alarm == AlarmType::Nospace as i32);
        if !raised {
            let request = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.member_id(),
                alarm: AlarmType::Nospace as i32,
            };
            if let Err(err) = self.alarm(request).await {
                tracing::warn!(error = %err, "could not raise the NOSPACE alarm");
            }
        }
        Err(ServerError::NoSpace)
    }

    /// Gets, raises or disarms an alarm through Raft (etcd's `Maintenance.Alarm`).
    pub async fn alarm(&self, request: AlarmRequest) -> Result<(AlarmResponse, i64), ServerError> {
        let internal = InternalRaftRequest { alarm: Some(request), ..Default::default() };
        let applied = self.propose(internal).await?;
        match applied.result? {
            Response::Alarm(response) => Ok((response, applied.revision)),
            other => {
                tracing::error!(?other, "an alarm request applied as something else");
                Err(ServerError::NotCapable)
            }
        }
    }

    /// The alarms active as of the last applied entry (for `Status.errors`).
    pub fn alarms(&self) -> Vec<AlarmMember> {
        match Alarms::read(&self.backend) {
            Ok(alarms) => alarms.list(AlarmType::None as i32),
            Err(err) => {
                tracing::error!(error = %err, "reading the alarms failed");
                Vec::new()
            }
        }
    }
}
