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

/// How old a measurement of the bytes in use `Status` and `/metrics` may show.
const IN_USE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// What etcd counts a lease grant as adding to the backend.
pub(crate) const LEASE_COST_BYTES: u64 = 64;

impl EtcdServer {
    /// Refuses a write that would add about `cost_bytes` to a backend already at
    /// its `--quota-backend-bytes`, first raising the NOSPACE alarm for this
    /// member so every member refuses such writes until it is disarmed (reads,
    /// deletes and compactions stay allowed).
    pub async fn check_quota(&self, cost_bytes: u64) -> Result<(), ServerError> {
        let quota = self.cfg.quota_backend_bytes;
        let size = self.shared.db_size_bytes.load(Ordering::Relaxed);
        if size.saturating_add(cost_bytes) <= quota {
            return Ok(());
        }
        let raised = self
            .alarms()
            .iter()
            .any(|a| a.member_id == self.member_id() && a.alarm == AlarmType::Nospace as i32);
        // The file is over the quota, but its free pages are not data (a fresh
        // redb file alone is 140 kB, bbolt's 16 kB): the bytes in use decide. The
        // page walk is re-taken when the writes admitted since the last one could
        // have crossed the quota, or when it is older than a few seconds (other
        // members' writes are applied here without passing this check).
        if !raised {
            let cached = *self.shared.db_in_use.lock().expect("in use lock");
            let in_use = match cached {
                Some(u) if u.at.elapsed() < IN_USE_MAX_AGE => Some(u.bytes + u.admitted),
                _ => None,
            };
            let in_use = match in_use {
                Some(bytes) if bytes.saturating_add(cost_bytes) <= quota => Some(bytes),
                _ => self.measure_in_use().await,
            };
            if in_use.is_some_and(|bytes| bytes.saturating_add(cost_bytes) <= quota) {
                if let Some(u) = self.shared.db_in_use.lock().expect("in use lock").as_mut() {
                    u.admitted += cost_bytes;
                }
                return Ok(());
            }
        }
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

    /// Measures the backend's bytes in use (a walk of every page, off the async
    /// threads) and caches it; `None` if the backend cannot say.
    pub(crate) async fn measure_in_use(&self) -> Option<u64> {
        let backend = self.backend.clone();
        let measured = tokio::task::spawn_blocking(move || backend.size_in_use()).await;
        match measured {
            Ok(Ok(bytes)) => {
                let now = std::time::Instant::now();
                let mut cached = self.shared.db_in_use.lock().expect("in use lock");
                *cached = Some(crate::shared::InUse { bytes, at: now, admitted: 0 });
                Some(bytes)
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "measuring the backend's bytes in use failed");
                None
            }
            Err(_) => None,
        }
    }

    /// etcd's `dbSizeInUse`: the bytes in use, measured at most every few seconds.
    pub async fn db_size_in_use(&self) -> u64 {
        let cached = *self.shared.db_in_use.lock().expect("in use lock");
        match cached {
            Some(u) if u.at.elapsed() < IN_USE_MAX_AGE => u.bytes + u.admitted,
            _ => match self.measure_in_use().await {
                Some(bytes) => bytes,
                None => self.shared.db_size_bytes.load(Ordering::Relaxed),
            },
        }
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
