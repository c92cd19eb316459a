//! Opening a member's data directory: a brand-new member bootstraps it, a restarted
//! member recovers from it. The layout is etcd's: `member/wal/` for the WAL and
//! `member/snap/db` for the backend.
//!
//! Recovery order: open the backend and read its consistent index, replay the WAL,
//! then restart Raft with `applied = consistent index`, so exactly the entries after
//! it are applied again.

use std::path::Path;
use std::sync::Arc;

use etcd_mvcc::KvStore;
use etcd_proto::etcdrs::Member;
use etcd_raftnode::{decode_conf_state, NodeConfig, RaftNode};
use etcd_server::wal_entries::{restore_state, snapshot_marker};
use etcd_server::{ids, membership};
use etcd_storage::Backend;
use etcd_wal::Wal;

use crate::config::{ClusterState, ServerConfig};
use crate::data_dir::{backend_path, parse_wal_metadata, wal_metadata, StartError};

/// A member's state once its data directory is open.
pub struct Opened {
    /// The backend.
    pub backend: Arc<Backend>,
    /// The MVCC store over it.
    pub kv: Arc<KvStore>,
    /// The WAL, ready for appends.
    pub wal: Wal,
    /// Raft, restored or bootstrapped.
    pub node: RaftNode,
    /// This member's ID.
    pub member_id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
    /// The known members.
    pub members: Vec<Member>,
    /// The newest snapshot index (0 when none).
    pub snapshot_index: u64,
}

fn open_backend(cfg: &ServerConfig) -> Result<(Arc<Backend>, Arc<KvStore>), StartError> {
    let path = backend_path(&cfg.data_dir);
    let dir = path.parent().expect("backend path has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|source| StartError::DataDir { path: dir.to_path_buf(), source })?;
    let backend_error = |reason: String| StartError::Backend { path: path.clone(), reason };
    let backend = Arc::new(Backend::open(&path).map_err(|e| backend_error(e.to_string()))?);
    let kv = KvStore::open(backend.clone()).map_err(|e| backend_error(e.to_string()))?;
    Ok((backend, Arc::new(kv)))
}

/// Opens (recovering) or creates (bootstrapping) the member's data directory.
pub fn open(cfg: &ServerConfig) -> Result<Opened, StartError> {
    // A real etcd member's data dir becomes ours in place (its files are kept).
    crate::adopt::adopt_if_etcd(&cfg.data_dir, cfg.wal_dir.as_deref())?;
    let wal_path = cfg.wal_path();
    let exists = Wal::exists(&wal_path).map_err(|e| StartError::Wal {
        path: wal_path.clone(),
        reason: format!(
            "cannot tell whether it holds a WAL ({e}); check the directory's permissions and \
             the disk, then start again (nothing was written)"
        ),
    })?;
    let mut opened = if exists {
        recover(cfg, &wal_path)
    } else {
        match (&cfg.initial_cluster_state, &cfg.join) {
            (ClusterState::Existing, Some((cluster_id, members))) => {
                join(cfg, &wal_path, *cluster_id, members.clone())
            }
            (ClusterState::Existing, None) => Err(StartError::Config(
                "--initial-cluster-state=existing needs the cluster's membership from a running \
                 member: list the running members in --initial-cluster"
                    .into(),
            )),
            (ClusterState::New, _) => bootstrap(cfg, &wal_path),
        }
    }?;
    if cfg.unsafe_no_fsync {
        tracing::warn!(
            "--unsafe-no-fsync: the WAL is not fsynced; a machine crash or power loss can lose \
             acknowledged writes (for tests and throwaway clusters only)"
        );
    }
    opened.wal.set_unsafe_no_fsync(cfg.unsafe_no_fsync);
    Ok(opened)
}

fn initial_members(cfg: &ServerConfig) -> Result<Vec<Member>, StartError> {
    let mut members = Vec::new();
    for (name, peer_urls) in &cfg.initial_cluster {
        let id = ids::member_id(peer_urls, &cfg.initial_cluster_token);
        let client_urls =
            if *name == cfg.name { cfg.advertise_client_urls.clone() } else { Vec::new() };
        members.push(Member {
            id,
            name: name.clone(),
            peer_urls: peer_urls.clone(),
            client_urls,
            is_learner: false,
        });
    }
    if !members.iter().any(|m| m.name == cfg.name) {
        return Err(StartError::Config(format!(
            "couldn't find local name {:?} in the initial cluster configuration: add it to \
             --initial-cluster or fix --name",
            cfg.name
        )));
    }
    Ok(members)
}

fn save_members(backend: &Backend, members: &[Member]) -> Result<(), String> {
    let txn = backend.begin_write().map_err(|e| e.to_string())?;
    membership::save(&txn, members)?;
    txn.commit(true).map_err(|e| e.to_string())
}

fn node_config(cfg: &ServerConfig, id: u64, applied: u64) -> NodeConfig {
    NodeConfig {
        id,
        election_tick: cfg.election_ticks(),
        heartbeat_tick: 1,
        applied,
        pre_vote: cfg.pre_vote,
        seed: os_seed(),
    }
}

/// A seed for the election timeouts that differs between members and runs:
/// std's hasher keys come from the OS's randomness.
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

fn bootstrap(cfg: &ServerConfig, wal_path: &Path) -> Result<Opened, StartError> {
    let members = initial_members(cfg)?;
    let member_ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let member_id = members.iter().find(|m| m.name == cfg.name).expect("checked above").id;
    let cluster_id = ids::cluster_id(&member_ids);
    create(cfg, wal_path, member_id, cluster_id, members)
}

/// A member added with `etcdctl member add` starting on an empty data dir: it
/// finds itself in the membership by its peer URLs.
fn join(
    cfg: &ServerConfig,
    wal_path: &Path,
    cluster_id: u64,
    mut members: Vec<Member>,
) -> Result<Opened, StartError> {
    let own = members
        .iter_mut()
        .find(|m| m.peer_urls.iter().any(|u| cfg.initial_advertise_peer_urls.contains(u)))
        .ok_or_else(|| {
            StartError::Config(format!(
                "this member's peer URLs {:?} are not in the existing cluster's membership: run \
                 `etcdctl member add {} --peer-urls={}` first",
                cfg.initial_advertise_peer_urls,
                cfg.name,
                cfg.initial_advertise_peer_urls.join(",")
            ))
        })?;
    own.name = cfg.name.clone();
    let member_id = own.id;
    create(cfg, wal_path, member_id, cluster_id, members)
}

/// Creates the data dir of a member that starts with an empty log.
fn create(
    cfg: &ServerConfig,
    wal_path: &Path,
    member_id: u64,
    cluster_id: u64,
    members: Vec<Member>,
) -> Result<Opened, StartError> {
    let (backend, kv) = open_backend(cfg)?;
    save_members(&backend, &members)
        .map_err(|reason| StartError::Backend { path: backend_path(&cfg.data_dir), reason })?;
    let wal_error = |reason: String| StartError::Wal { path: wal_path.to_path_buf(), reason };
    let mut wal = Wal::create(wal_path, &wal_metadata(member_id, cluster_id))
        .map_err(|e| wal_error(e.to_string()))?;
    let conf_state = membership::conf_state(&members);
    let marker = snapshot_marker(0, 0, &conf_state);
    wal.save_snapshot(&marker).map_err(|e| wal_error(e.to_string()))?;
    wal.sync().map_err(|e| wal_error(e.to_string()))?;
    let node = RaftNode::bootstrap_with(&node_config(cfg, member_id, 0), conf_state)
        .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok(Opened { backend, kv, wal, node, member_id, cluster_id, members, snapshot_index: 0 })
}

fn recover(cfg: &ServerConfig, wal_path: &Path) -> Result<Opened, StartError> {
    let wal_error = |reason: String| StartError::Wal { path: wal_path.to_path_buf(), reason };
    let (mut wal, replay) = Wal::open(wal_path).map_err(|e| {
        wal_error(format!(
            "{e}; if this data dir was written by another etcd version, start with an empty \
             --data-dir and restore a snapshot instead"
        ))
    })?;
    let (member_id, cluster_id) = parse_wal_metadata(&replay.metadata).ok_or_else(|| {
        wal_error(
            "the WAL was not written by this server (unknown metadata); refusing to touch it: \
             use another --data-dir"
                .into(),
        )
    })?;
    let (backend, kv) = open_backend(cfg)?;
    let (consistent_index, consistent_term) = {
        let txn = backend.begin_read().map_err(|e| StartError::Backend {
            path: backend_path(&cfg.data_dir),
            reason: e.to_string(),
        })?;
        etcd_storage::consistent_index(&txn).map_err(|e| StartError::Backend {
            path: backend_path(&cfg.data_dir),
            reason: e.to_string(),
        })?
    };
    let marker = replay.snapshot.unwrap_or_default();
    if consistent_index < marker.index {
        return Err(StartError::Backend {
            path: backend_path(&cfg.data_dir),
            reason: format!(
                "the backend is at index {consistent_index} but the WAL's snapshot is at {}: \
                 the backend lost writes; restore this member from a snapshot",
                marker.index
            ),
        });
    }
    if decode_conf_state(&marker.conf_state).is_none() {
        return Err(wal_error("the snapshot marker's membership is unreadable".into()));
    }
    let backend_path_error =
        |reason: String| StartError::Backend { path: backend_path(&cfg.data_dir), reason };
    let members = membership::read(&backend).map_err(backend_path_error)?;
    // The members table is as of the consistent index, like the rest of the
    // backend, so it (not the older snapshot marker) is the membership to restart with.
    let conf_state = membership::conf_state(&members);
    let mut hs = replay.hard_state.unwrap_or_default();
    let mut entries = replay.entries;
    if cfg.force_new_cluster {
        let forced = crate::force_new_cluster::force(
            &mut wal,
            member_id,
            &members,
            consistent_index,
            entries,
            hs,
        )
        .map_err(StartError::Config)?;
        (entries, hs) = (forced.entries, forced.hard_state);
    }
    let state = restore_state(&marker, &hs, entries, conf_state);
    let (state, covered) = state.cover_applied(consistent_index, consistent_term);
    let mut snapshot_index = marker.index;
    if covered {
        // A leader's snapshot reached the backend but the process stopped
        // before the WAL recorded it: record it now, so the log goes on from it.
        let marker = snapshot_marker(consistent_index, consistent_term, &state.conf_state);
        wal.save_snapshot(&marker)
            .and_then(|()| wal.sync())
            .map_err(|e| wal_error(e.to_string()))?;
        snapshot_index = consistent_index;
        tracing::warn!(
            index = consistent_index,
            "the backend holds a snapshot the WAL did not record (a snapshot install was cut \
             short); recorded it"
        );
    }
    let node = RaftNode::restore(&node_config(cfg, member_id, consistent_index), state)
        .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok(Opened { backend, kv, wal, node, member_id, cluster_id, members, snapshot_index })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_metadata_round_trips_and_rejects_foreign_bytes() {
        assert_eq!(parse_wal_metadata(&wal_metadata(7, 9)), Some((7, 9)));
        assert_eq!(parse_wal_metadata(b"\x08\x00etcd"), None);
    }
}
