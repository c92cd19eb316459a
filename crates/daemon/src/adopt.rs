//! Taking over a real etcd member's data directory in place: an operator swaps
//! etcd's binary for ours and starts it with the same `--data-dir`. The member
//! keeps its ID, its cluster's ID, its membership and every key, lease, alarm
//! and auth setting; its etcd files stay untouched in `member.etcd/` (the way
//! back is to move them back and start etcd).
//!
//! The conversion is built in `member.adopting/` and swapped in with two
//! renames (`member` -> `member.etcd`, `member.adopting` -> `member`); a crash
//! between them is finished at the next start.
//!
//! What carries over from etcd's WAL: the member and cluster IDs, the Raft term
//! and vote, and the log's position. Its entries are not replayed (they are
//! etcd's encoding): after a clean stop etcd has applied every committed entry
//! to its backend. A Put past the backend's consistent index proves otherwise
//! (etcd records the index with every Put), so such a log is refused: start
//! etcd once more and stop it cleanly. Other entries past the index (no-ops, v2
//! requests, membership, lease and auth changes, which etcd 3.4 applies without
//! recording the index) are taken as applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_mvcc::KvStore;
use etcd_server::membership;
use etcd_snapshot::etcd_wal::{self as etcd_log, EtcdWal};
use etcd_snapshot::file::Format;
use etcd_storage::Backend;
use etcd_wal::{HardState, Wal};

use crate::data_dir::{backend_path, wal_metadata, StartError};

/// The directory etcd's files are kept in after the takeover.
pub fn etcd_backup_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member.etcd")
}

fn adopting_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member.adopting")
}

fn is_bbolt(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else { return false };
    let Ok(len) = file.metadata().map(|m| m.len()) else { return false };
    matches!(etcd_snapshot::file::detect_format(&file, len), Ok(Format::Etcd))
}

/// Converts a real etcd member's data dir into ours if `data_dir` holds one;
/// does nothing otherwise. Returns whether it converted. `wal_dir` is the
/// member's `--wal-dir`, if any: a real etcd WAL there is refused (not taken
/// over yet).
pub fn adopt_if_etcd(data_dir: &Path, wal_dir: Option<&Path>) -> Result<bool, StartError> {
    if let Some(wal_dir) = wal_dir.filter(|dir| etcd_log::is_etcd_wal(dir)) {
        return Err(StartError::Config(format!(
            "{} holds real etcd's WAL: taking over a member run with --wal-dir is not \
             supported yet; stop it, move that WAL into {} and start this server once \
             without --wal-dir (it takes the data dir over), or restore a snapshot with \
             `etcdutl snapshot restore`",
            wal_dir.display(),
            data_dir.join("member").join("wal").display()
        )));
    }
    let member = data_dir.join("member");
    let adopting = adopting_dir(data_dir);
    let backup = etcd_backup_dir(data_dir);
    if !member.exists() && adopting.exists() && backup.exists() {
        // A crash between the two renames: finish the swap.
        rename(&adopting, &member)?;
        return Ok(true);
    }
    let db = backend_path(data_dir);
    if !is_bbolt(&db) {
        return Ok(false);
    }
    let wal_dir = member.join("wal");
    if !etcd_log::is_etcd_wal(&wal_dir) {
        return Err(StartError::Backend {
            path: db,
            reason: "this is an etcd backend (bbolt) without etcd's WAL next to it; restore it \
                     with `etcdutl snapshot restore <db> --skip-hash-check` into a new data dir"
                .into(),
        });
    }
    if backup.exists() {
        return Err(StartError::Config(format!(
            "{} exists from an earlier takeover; move it away before taking over this data dir",
            backup.display()
        )));
    }
    tracing::info!(data_dir = %data_dir.display(), "taking over a real etcd member's data dir");
    let started = std::time::Instant::now();
    let _ = std::fs::remove_dir_all(&adopting);
    let result = convert(&db, &wal_dir, &adopting);
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&adopting);
        return Err(err);
    }
    rename(&member, &backup)?;
    rename(&adopting, &member)?;
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        kept = %backup.display(),
        "took over etcd's data dir; etcd's files are kept unchanged"
    );
    Ok(true)
}

fn rename(from: &Path, to: &Path) -> Result<(), StartError> {
    std::fs::rename(from, to)
        .map_err(|source| StartError::DataDir { path: from.to_path_buf(), source })?;
    if let Some(parent) = to.parent() {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// The Raft position the converted member starts at: past every entry it does
/// not replay, with the term of the entry there.
fn start_position(
    wal: &EtcdWal,
    consistent_index: u64,
    stored_term: u64,
) -> Result<(u64, u64), String> {
    let writes: Vec<u64> = wal
        .entries
        .iter()
        .filter(|e| e.index > consistent_index && etcd_log::is_put_request(e))
        .map(|e| e.index)
        .collect();
    if let (Some(first), Some(last)) = (writes.first(), writes.last()) {
        return Err(format!(
            "etcd's WAL holds {} puts (indexes {first}..={last}) its backend has not applied \
             (the backend is at {consistent_index}); start this member with etcd once more, stop \
             it cleanly, then start this server on it",
            writes.len()
        ));
    }
    let (hs_term, _, commit) = wal.hard_state;
    let index = consistent_index.max(commit);
    let term = wal
        .entries
        .iter()
        .find(|e| e.index == index)
        .map(|e| e.term)
        .or_else(|| wal.snapshots.iter().rev().find(|s| s.0 == index).map(|s| s.1))
        .or((index == consistent_index && stored_term > 0).then_some(stored_term))
        .unwrap_or(hs_term);
    Ok((index, term))
}

fn convert(db: &Path, wal_dir: &Path, out: &Path) -> Result<(), StartError> {
    let backend_err = |reason: String| StartError::Backend { path: db.to_path_buf(), reason };
    let wal_err = |reason: String| StartError::Wal { path: wal_dir.to_path_buf(), reason };
    let wal = etcd_log::read_etcd_wal(wal_dir).map_err(|e| wal_err(e.to_string()))?;
    let reader = etcd_bbolt::Reader::open(db).map_err(|e| backend_err(e.to_string()))?;
    let snap_dir = out.join("snap");
    std::fs::create_dir_all(&snap_dir)
        .map_err(|source| StartError::DataDir { path: snap_dir.clone(), source })?;
    let new_db = snap_dir.join("db");
    let backend = Arc::new(Backend::open(&new_db).map_err(|e| backend_err(e.to_string()))?);
    let summary = etcd_snapshot::file::import_etcd(&reader, &backend)
        .map_err(|e| backend_err(e.to_string()))?;
    let (index, term) =
        start_position(&wal, summary.consistent_index, summary.term).map_err(wal_err)?;
    if !summary.members.iter().any(|m| m.id == wal.member_id) {
        return Err(backend_err(format!(
            "the backend's members do not include this member ({:x}); its membership cannot be \
             recovered",
            wal.member_id
        )));
    }
    let txn = backend.begin_write().map_err(|e| backend_err(e.to_string()))?;
    etcd_storage::set_consistent_index(&txn, index, term)
        .map_err(|e| backend_err(e.to_string()))?;
    txn.commit(true).map_err(|e| backend_err(e.to_string()))?;
    if let Some(rev) = summary.unfinished_compaction {
        let kv = KvStore::open(backend.clone()).map_err(|e| backend_err(e.to_string()))?;
        let rev = rev.min(kv.current_revision());
        let mut batch = kv.begin_batch(&backend).map_err(|e| backend_err(e.to_string()))?;
        batch
            .compact(rev)
            .map_err(|e| backend_err(format!("finishing the compaction at {rev}: {e}")))?;
        batch.commit(true).map_err(|e| backend_err(e.to_string()))?;
        kv.finish_compaction()
            .map_err(|e| backend_err(format!("finishing the compaction at {rev}: {e}")))?;
    }
    let members = membership::read(&backend).map_err(backend_err)?;
    let new_wal = out.join("wal");
    let mut ours = Wal::create(&new_wal, &wal_metadata(wal.member_id, wal.cluster_id))
        .map_err(|e| wal_err(e.to_string()))?;
    let conf_state = membership::conf_state(&members);
    let marker = etcd_server::wal_entries::snapshot_marker(index, term, &conf_state);
    ours.save_snapshot(&marker).map_err(|e| wal_err(e.to_string()))?;
    let (hs_term, vote, _) = wal.hard_state;
    let hard_state = HardState { term: hs_term.max(term), vote, commit: index };
    ours.append(&[], Some(&hard_state)).map_err(|e| wal_err(e.to_string()))?;
    ours.sync().map_err(|e| wal_err(e.to_string()))?;
    tracing::info!(
        member_id = %format!("{:x}", wal.member_id),
        cluster_id = %format!("{:x}", wal.cluster_id),
        index,
        term,
        revision = summary.revision,
        members = members.len(),
        "converted etcd's backend and Raft position"
    );
    Ok(())
}
