//! `etcdutl snapshot restore`: a snapshot file (etcd's bbolt format, or our own
//! redb format from earlier versions) becomes the data directory of one member
//! of a NEW cluster, as etcd's restore does: the key space, its history, leases,
//! alarms and auth state are kept; the old membership and Raft position are not.
//! The new membership comes from `--initial-cluster`, written with a fresh WAL,
//! so the member then starts with just `--data-dir` (any `--initial-cluster` it
//! is given is ignored, as by etcd for an existing data dir).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_daemon::config::{comma_list, parse_initial_cluster};
use etcd_daemon::ServerConfig;
use etcd_mvcc::KvStore;
use etcd_snapshot::file::{self, Format};
use etcd_snapshot::{BucketSink, Importer, SnapshotError};
use etcd_storage::Backend;

use crate::progress::{Progress, Unit};

/// `snapshot restore`'s flags, checked.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The snapshot file.
    pub file: PathBuf,
    /// The data directory to create.
    pub data_dir: PathBuf,
    /// `--wal-dir`: the WAL's directory to create, when not in the data dir.
    pub wal_dir: Option<PathBuf>,
    /// This member's name.
    pub name: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: String,
    /// `--skip-hash-check`.
    pub skip_hash_check: bool,
    /// `--bump-revision`.
    pub bump_revision: u64,
    /// `--mark-compacted`.
    pub mark_compacted: bool,
}

/// What a restore did, for its closing lines.
#[derive(Debug)]
pub struct Restored {
    /// The snapshot's format.
    pub format: Format,
    /// The store's revision after the restore.
    pub revision: i64,
    /// The compacted revision after the restore (0: none).
    pub compact_revision: i64,
    /// This member's ID in the new cluster.
    pub member_id: u64,
}

/// The new cluster's members, checked as etcd's `VerifyBootstrap` does: this
/// member is in `--initial-cluster` with exactly its advertised peer URLs, and
/// no URL is listed twice.
fn cluster_config(opts: &RestoreOptions) -> Result<ServerConfig, String> {
    let members = parse_initial_cluster(&opts.initial_cluster)?;
    let mut seen = std::collections::HashSet::new();
    for url in members.iter().flat_map(|(_, urls)| urls) {
        if !seen.insert(url) {
            return Err(format!("initial cluster {} has duplicate url", opts.initial_cluster));
        }
    }
    let advertised = comma_list(&opts.initial_advertise_peer_urls);
    let Some((_, urls)) = members.iter().find(|(name, _)| *name == opts.name) else {
        return Err(format!(
            "couldn't find local name {:?} in the initial cluster configuration: add it to \
             --initial-cluster or fix --name",
            opts.name
        ));
    };
    let mut listed = urls.clone();
    let mut wanted = advertised.clone();
    listed.sort();
    wanted.sort();
    if listed != wanted {
        return Err(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls={}: they must name \
             the same peer URLs",
            opts.name,
            urls.join(","),
            advertised.join(",")
        ));
    }
    let mut cfg = ServerConfig::single(&opts.name, opts.data_dir.clone());
    cfg.initial_cluster = members;
    cfg.initial_cluster_token = opts.initial_cluster_token.clone();
    cfg.initial_advertise_peer_urls = advertised;
    // The member publishes its client URLs itself when it starts.
    cfg.advertise_client_urls = Vec::new();
    cfg.wal_dir = opts.wal_dir.clone();
    Ok(cfg)
}

/// Restores `opts.file` into `opts.data_dir`. On any error the data directory
/// is removed again: a failed restore leaves nothing behind.
pub fn restore(opts: &RestoreOptions) -> Result<Restored, String> {
    if (opts.bump_revision == 0) == opts.mark_compacted {
        return Err("--mark-compacted required if --revision-bump > 0".into());
    }
    let cfg = cluster_config(opts)?;
    if opts.data_dir.exists() {
        return Err(format!(
            "data-dir {:?} exists: restore into a new directory (nothing was changed)",
            opts.data_dir.display().to_string()
        ));
    }
    if let Some(wal_dir) = opts.wal_dir.as_ref().filter(|d| d.exists()) {
        return Err(format!(
            "wal-dir {:?} exists: restore into a new directory (nothing was changed)",
            wal_dir.display().to_string()
        ));
    }
    let mut verifying = Progress::new("verifying", Unit::Bytes);
    let snapshot = file::open_snapshot(&opts.file, opts.skip_hash_check, &mut |done, total| {
        verifying.update(done, Some(total))
    })
    .map_err(|e| format!("{}: {e}", opts.file.display()))?;
    if snapshot.has_hash && !opts.skip_hash_check {
        verifying.finish(snapshot.db_len);
    }
    let result = restore_into(opts, &cfg, &snapshot);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&opts.data_dir);
        if let Some(wal_dir) = &opts.wal_dir {
            let _ = std::fs::remove_dir_all(wal_dir);
        }
    }
    result
}

fn restore_into(
    opts: &RestoreOptions,
    cfg: &ServerConfig,
    snapshot: &file::SnapshotFile,
) -> Result<Restored, String> {
    let snap_dir = opts.data_dir.join("member").join("snap");
    std::fs::create_dir_all(&snap_dir)
        .map_err(|e| format!("cannot create {}: {e}", snap_dir.display()))?;
    let db = snap_dir.join("db");
    let unfinished = match snapshot.format {
        Format::Etcd => import_etcd(snapshot, &db)?,
        Format::Redb => {
            file::copy_prefix(&snapshot.file, snapshot.db_len, &db).map_err(|e| e.to_string())?;
            let backend = Backend::open(&db)
                .map_err(|e| format!("the snapshot is not a usable backend: {e}"))?;
            let txn = backend.begin_write().map_err(|e| e.to_string())?;
            forget_cluster(&txn)?;
            txn.commit(true).map_err(|e| e.to_string())?;
            None
        }
    };
    let (revision, compact_revision) = settle_revisions(&db, unfinished, opts.bump_revision)?;
    let opened = etcd_daemon::bootstrap::open(cfg).map_err(|e| e.to_string())?;
    let member_id = opened.member_id;
    drop(opened);
    Ok(Restored { format: snapshot.format, revision, compact_revision, member_id })
}

/// The old cluster's members (removed ones too) and Raft position do not
/// carry over: the new cluster has its own members and applies its log from
/// index 1 (etcd trims both member buckets alike).
fn forget_cluster(txn: &etcd_storage::WriteTxn) -> Result<(), String> {
    for (id, _) in etcd_storage::members_list(txn).map_err(|e| e.to_string())? {
        etcd_storage::members_delete(txn, id).map_err(|e| e.to_string())?;
    }
    for id in etcd_storage::ReadTables::members_removed_list(txn).map_err(|e| e.to_string())? {
        txn.members_removed_delete(id).map_err(|e| e.to_string())?;
    }
    etcd_storage::set_consistent_index(txn, 0, 0).map_err(|e| e.to_string())
}

/// Counts entries for the progress line while importing.
struct Counting<'a, 'b> {
    inner: &'a mut Importer<'b>,
    progress: Progress,
    entries: u64,
}

impl BucketSink for Counting<'_, '_> {
    fn bucket(&mut self, name: &str) -> Result<(), SnapshotError> {
        self.inner.bucket(name)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        self.entries += 1;
        if self.entries.is_multiple_of(4096) {
            self.progress.update(self.entries, None);
        }
        self.inner.put(key, value)
    }
}

/// Imports an etcd file into a new backend at `db`; returns a compaction the
/// file had scheduled but not finished.
fn import_etcd(snapshot: &file::SnapshotFile, db: &Path) -> Result<Option<i64>, String> {
    let reader = file::bbolt_reader(snapshot).map_err(|e| e.to_string())?;
    let backend = Backend::open(db).map_err(|e| e.to_string())?;
    let mut importer = Importer::new(&backend).map_err(|e| e.to_string())?;
    let mut counting = Counting {
        inner: &mut importer,
        progress: Progress::new("restoring", Unit::Entries),
        entries: 0,
    };
    file::walk(&reader, &mut counting).map_err(|e| format!("the snapshot is unreadable: {e}"))?;
    let Counting { progress, entries, .. } = counting;
    let summary = importer.finish().map_err(|e| e.to_string())?;
    let txn = backend.begin_write().map_err(|e| e.to_string())?;
    forget_cluster(&txn)?;
    txn.commit(true).map_err(|e| e.to_string())?;
    progress.finish(entries);
    if !summary.skipped_buckets.is_empty() {
        eprintln!(
            "skipped buckets this server does not use: {}",
            summary.skipped_buckets.join(", ")
        );
    }
    Ok(summary.unfinished_compaction)
}

/// Finishes a compaction the snapshot had scheduled, and applies
/// `--bump-revision` / `--mark-compacted` (etcd 3.5: the revision jumps by the
/// amount and everything before it counts as compacted, so watchers and
/// readers of old revisions start over instead of seeing revisions reused).
fn settle_revisions(db: &Path, unfinished: Option<i64>, bump: u64) -> Result<(i64, i64), String> {
    let backend = Arc::new(Backend::open(db).map_err(|e| e.to_string())?);
    let kv = KvStore::open(backend.clone()).map_err(|e| format!("the restored store: {e}"))?;
    let compact = |rev: i64| -> Result<(), String> {
        let mut batch = kv.begin_batch(&backend).map_err(|e| e.to_string())?;
        batch.compact(rev).map_err(|e| format!("compacting at {rev}: {e}"))?;
        batch.commit(true).map_err(|e| e.to_string())?;
        kv.finish_compaction().map_err(|e| format!("compacting at {rev}: {e}"))
    };
    if let Some(rev) = unfinished {
        compact(rev.min(kv.current_revision()))?;
    }
    if bump > 0 {
        let latest = kv.current_revision();
        if latest > kv.compact_revision() {
            compact(latest)?;
        }
        let bumped = latest + bump as i64;
        let txn = backend.begin_write().map_err(|e| e.to_string())?;
        txn.meta_put(
            etcd_storage::schema::META_FINISHED_COMPACT_REV,
            &etcd_storage::schema::encode_rev_key(bumped, 0, false),
        )
        .map_err(|e| e.to_string())?;
        txn.commit(true).map_err(|e| e.to_string())?;
        kv.reload().map_err(|e| e.to_string())?;
        assert_eq!(kv.current_revision(), bumped, "the bumped revision is the store's revision");
    }
    Ok((kv.current_revision(), kv.compact_revision()))
}
