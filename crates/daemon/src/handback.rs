//! Handing a stopped member of ours back to real etcd, in place: the way back
//! after a takeover (`etcdutl migrate-to-etcd`). The member keeps its ID, its
//! cluster's ID, its membership, its Raft term and vote, and every key, lease,
//! alarm and auth setting; etcd starts on the data dir with the member's usual
//! flags. Our files stay untouched in `member.etcdrs/`.
//!
//! etcd's member directory is built in `member.to-etcd/` and swapped in with
//! two renames (`member` -> `member.etcdrs`, `member.to-etcd` -> `member`):
//! - `snap/db`: the backend as etcd's bbolt file, its consistent index at the
//!   index this member applied last;
//! - `snap/{term}-{index}.snap`: a Raft snapshot at that index holding etcd's
//!   v2 store with the members (etcd 3.4 and 3.5 recover membership from it);
//! - `wal/`: etcd's WAL starting at that snapshot, with the hard state.
//!
//! Our log entries are our own encoding and cannot be handed over, so every
//! entry past the applied index must be an empty one (a new leader's no-op);
//! those are kept, so an index another member may already count as committed
//! stays in this member's log. A log with anything else unapplied is refused:
//! start the member with this server once more and stop it after its cluster
//! has applied everything.

use std::path::{Path, PathBuf};

use etcd_server::membership;
use etcd_snapshot::etcd_snap::{self, SnapConfState, HANDBACK_CLUSTER_VERSION};
use etcd_snapshot::etcd_wal::{self as etcd_log, EtcdEntry, EtcdWalSpec};
use etcd_storage::Backend;
use etcd_wal::Wal;

use crate::data_dir::{backend_path, parse_wal_metadata, wal_dir, StartError};

/// Where our files are kept after the handback.
pub fn kept_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member.etcdrs")
}

fn building_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member.to-etcd")
}

/// What was handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedBack {
    /// The member's ID.
    pub member_id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
    /// The index etcd's snapshot is at (the last applied one).
    pub index: u64,
    /// The term of that index.
    pub term: u64,
    /// The store's revision.
    pub revision: i64,
    /// Entries written to etcd's backend.
    pub entries: u64,
    /// The members.
    pub members: usize,
}

/// Converts the stopped member in `data_dir` into a real etcd member's data
/// dir. `progress` is called with the number of backend entries written so far.
pub fn hand_back_to_etcd(
    data_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<HandedBack, StartError> {
    let wal_path = wal_dir(data_dir);
    if etcd_log::is_etcd_wal(&wal_path) {
        return Err(StartError::Config(format!(
            "{} already holds etcd's WAL: this data dir is etcd's, nothing to convert",
            wal_path.display()
        )));
    }
    let exists = Wal::exists(&wal_path).map_err(|e| StartError::Wal {
        path: wal_path.clone(),
        reason: format!("cannot read it ({e}); check its permissions and the disk"),
    })?;
    if !exists {
        return Err(StartError::Config(format!(
            "{} holds no member of this server (no WAL at {})",
            data_dir.display(),
            wal_path.display()
        )));
    }
    let kept = kept_dir(data_dir);
    if kept.exists() {
        return Err(StartError::Config(format!(
            "{} exists from an earlier handback; move it away first",
            kept.display()
        )));
    }
    let building = building_dir(data_dir);
    let _ = std::fs::remove_dir_all(&building);
    let result = build(data_dir, &wal_path, &building, progress);
    let handed = match result {
        Ok(handed) => handed,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(err);
        }
    };
    rename(&data_dir.join("member"), &kept)?;
    rename(&building, &data_dir.join("member"))?;
    Ok(handed)
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

/// Entries past `applied` that etcd's log keeps: empty ones only.
fn unapplied_tail(entries: &[etcd_wal::Entry], applied: u64) -> Result<Vec<EtcdEntry>, String> {
    let tail: Vec<&etcd_wal::Entry> = entries.iter().filter(|e| e.index > applied).collect();
    let carrying = tail.iter().filter(|e| e.entry_type != 0 || !e.data.is_empty()).count();
    if carrying > 0 {
        return Err(format!(
            "the log holds {carrying} entries past the last applied index {applied} (writes or \
             membership changes not applied yet); start this member with this server once more, \
             let its cluster apply them (a leader and a quiet minute), stop it cleanly and run \
             this again"
        ));
    }
    Ok(tail
        .into_iter()
        .map(|e| EtcdEntry { index: e.index, term: e.term, kind: 0, data: Vec::new() })
        .collect())
}

fn build(
    data_dir: &Path,
    wal_path: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<HandedBack, StartError> {
    let wal_err = |reason: String| StartError::Wal { path: wal_path.to_path_buf(), reason };
    let db = backend_path(data_dir);
    let backend_err = |reason: String| StartError::Backend { path: db.clone(), reason };
    let (_wal, replay) = Wal::open(wal_path).map_err(|e| wal_err(e.to_string()))?;
    let (member_id, cluster_id) = parse_wal_metadata(&replay.metadata)
        .ok_or_else(|| wal_err("the WAL was not written by this server".into()))?;
    let backend = Backend::open(&db)
        .map_err(|e| backend_err(format!("{e} (is the member still running? stop it first)")))?;
    let txn = backend.begin_read().map_err(|e| backend_err(e.to_string()))?;
    let (index, term) =
        etcd_storage::consistent_index(&txn).map_err(|e| backend_err(e.to_string()))?;
    if index == 0 {
        return Err(backend_err(
            "this member has applied nothing yet; start its cluster once so it elects a leader"
                .into(),
        ));
    }
    if let Some(e) = replay.entries.iter().find(|e| e.index == index) {
        assert_eq!(e.term, term, "invariant: the backend records the term of the entry it applied");
    }
    let tail = unapplied_tail(&replay.entries, index).map_err(wal_err)?;
    let members = membership::load(&txn).map_err(backend_err)?;
    let removed = etcd_storage::ReadTables::members_removed_list(&txn)
        .map_err(|e| backend_err(e.to_string()))?;
    if !members.iter().any(|m| m.id == member_id) {
        return Err(backend_err(format!(
            "the membership does not include this member ({member_id:x}); it was removed from \
             its cluster and cannot be handed back"
        )));
    }

    let snap_dir = out.join("snap");
    std::fs::create_dir_all(&snap_dir)
        .map_err(|source| StartError::DataDir { path: snap_dir.clone(), source })?;
    let io_err =
        |path: &Path, e: String| StartError::Backend { path: path.to_path_buf(), reason: e };
    let new_db = snap_dir.join("db");
    let file = std::fs::File::create(&new_db).map_err(|e| io_err(&new_db, e.to_string()))?;
    let mut sink = Progressing {
        inner: etcd_snapshot::file::BoltSink::new(std::io::BufWriter::new(file))
            .map_err(|e| io_err(&new_db, e.to_string()))?,
        entries: 0,
        progress,
    };
    let summary = etcd_snapshot::export(&txn, HANDBACK_CLUSTER_VERSION, &mut sink)
        .map_err(|e| io_err(&new_db, e.to_string()))?;
    assert_eq!(summary.consistent_index, index, "invariant: one read transaction");
    let (out_file, _) = sink.inner.finish().map_err(|e| io_err(&new_db, e.to_string()))?;
    let file = out_file.into_inner().map_err(|e| io_err(&new_db, e.to_string()))?;
    file.sync_all().map_err(|e| io_err(&new_db, e.to_string()))?;
    drop(txn);

    let conf = membership::conf_state(&members);
    let conf = SnapConfState { voters: conf.voters.clone(), learners: conf.learners.clone() };
    let store = etcd_snap::v2_store_json(&members, &removed, HANDBACK_CLUSTER_VERSION);
    etcd_snap::write_snap_file(&snap_dir, index, term, &conf, &store)
        .map_err(|e| io_err(&snap_dir, e.to_string()))?;

    let hs = replay.hard_state.unwrap_or_default();
    let last = tail.last().map_or(index, |e| e.index);
    let commit = hs.commit.clamp(index, last);
    let hs_term = hs.term.max(tail.last().map_or(term, |e| e.term));
    let spec = EtcdWalSpec {
        member_id,
        cluster_id,
        snapshot: (index, term),
        entries: tail,
        hard_state: (hs_term, hs.vote, commit),
    };
    let new_wal = out.join("wal");
    etcd_log::write_etcd_wal(&new_wal, &spec).map_err(|e| io_err(&new_wal, e.to_string()))?;
    Ok(HandedBack {
        member_id,
        cluster_id,
        index,
        term,
        revision: summary.revision,
        entries: summary.entries,
        members: members.len(),
    })
}

/// Passes the export on to the file, counting entries for the progress line.
struct Progressing<'p, S> {
    inner: S,
    entries: u64,
    progress: &'p mut dyn FnMut(u64),
}

impl<S: etcd_snapshot::BucketSink> etcd_snapshot::BucketSink for Progressing<'_, S> {
    fn bucket(&mut self, name: &str) -> Result<(), etcd_snapshot::SnapshotError> {
        self.inner.bucket(name)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), etcd_snapshot::SnapshotError> {
        self.entries += 1;
        if self.entries.is_multiple_of(4096) {
            (self.progress)(self.entries);
        }
        self.inner.put(key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, entry_type: u8, data: &[u8]) -> etcd_wal::Entry {
        etcd_wal::Entry { index, term: 2, entry_type, data: data.to_vec(), context: Vec::new() }
    }

    #[test]
    fn only_empty_entries_may_follow_the_applied_index() {
        let log = [entry(5, 0, b"put"), entry(6, 0, b""), entry(7, 0, b"")];
        let tail = unapplied_tail(&log, 5).unwrap();
        assert_eq!(tail.iter().map(|e| e.index).collect::<Vec<_>>(), [6, 7]);
        assert!(unapplied_tail(&log, 4).unwrap_err().contains("1 entries past"));
        assert!(unapplied_tail(&[entry(6, 1, b"")], 5).is_err(), "a membership change");
        assert!(unapplied_tail(&log, 7).unwrap().is_empty());
    }
}
