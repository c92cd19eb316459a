//! `etcdutl`: etcd 3.5's offline tool for data directories and snapshot files.
//! `snapshot restore` makes a member's data directory from a snapshot (etcd's
//! format or ours), `snapshot status` reports a snapshot as etcd does,
//! `hashkv` hashes a backend's history, `defrag` compacts a stopped member's
//! backend file, `migrate-from-etcd` takes a stopped real etcd member's data dir
//! over in place and `migrate-to-etcd` hands one of ours back to etcd,
//! `version` prints the versions.

mod progress;
mod restore;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use etcd_snapshot::file::{self, Format};
use etcd_storage::Backend;

use crate::status::WriteOut;

/// An administrative command line tool for etcd data directories and snapshots.
#[derive(Debug, Parser)]
#[command(name = "etcdutl")]
struct Cli {
    /// Output format: simple, json, table or fields.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value = "simple")]
    write_out: WriteOut,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manages snapshots.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Prints the KV history hash of a backend file (a member's member/snap/db, or a snapshot).
    Hashkv {
        /// The file.
        file: PathBuf,
        /// Maximum revision to hash (default: latest revision).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
    /// Defragments the backend of a stopped member.
    Defrag {
        /// The member's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Converts a stopped real etcd member's data dir into this server's, in place
    /// (what the server itself does when started on it): same member and cluster
    /// IDs, members, keys, leases and auth; etcd's files are kept in member.etcd/.
    MigrateFromEtcd {
        /// The member's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Converts a stopped member of this server into a real etcd member's data
    /// dir, in place (the way back): same member and cluster IDs, members, Raft
    /// term and vote, keys, leases and auth; start etcd 3.4 or 3.5 on it with
    /// the member's usual flags. This server's files are kept in member.etcdrs/.
    MigrateToEtcd {
        /// The member's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Prints the version of etcdutl.
    Version,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Restores a snapshot into a new data directory.
    Restore {
        /// The snapshot file (from `etcdctl snapshot save`, real etcd's or ours).
        file: PathBuf,
        /// Path to the output data directory (default: ${name}.etcd).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Path to the WAL directory (default: ${data-dir}/member/wal); the member then
        /// starts with the same --wal-dir.
        #[arg(long)]
        wal_dir: Option<PathBuf>,
        /// Human-readable name for this member.
        #[arg(long, default_value = "default")]
        name: String,
        /// Initial cluster configuration for restore bootstrap (default: ${name}=http://localhost:2380).
        #[arg(long)]
        initial_cluster: Option<String>,
        /// Initial cluster token for the etcd cluster during restore bootstrap.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// List of this member's peer URLs to advertise to the rest of the cluster.
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
        /// Ignore snapshot integrity hash value (required if copied from data directory).
        #[arg(long)]
        skip_hash_check: bool,
        /// How much to increase the latest revision after restore.
        #[arg(long, default_value_t = 0)]
        bump_revision: u64,
        /// Mark the latest revision after restore as the point of scheduled compaction
        /// (required if --bump-revision > 0, disallowed otherwise).
        #[arg(long)]
        mark_compacted: bool,
    },
    /// Gets backend snapshot status of a given file.
    Status {
        /// The snapshot file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Snapshot { command: SnapshotCommand::Status { file } } => {
            snapshot_status(&file).map(|s| print!("{}", status::print_status(&s, cli.write_out)))
        }
        Command::Snapshot { command } => snapshot_restore(command),
        Command::Hashkv { file, rev } => hashkv(&file, rev).map(|(hash, hash_rev, compact_rev)| {
            print!("{}", status::print_hashkv(hash, hash_rev, compact_rev, cli.write_out))
        }),
        Command::Defrag { data_dir } => defrag(&data_dir),
        Command::MigrateFromEtcd { data_dir } => migrate_from_etcd(&data_dir),
        Command::MigrateToEtcd { data_dir } => migrate_to_etcd(&data_dir),
        Command::Version => {
            println!("etcdutl version: {}", etcd_daemon::SERVER_VERSION);
            println!("API version: 3.5");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn snapshot_restore(command: SnapshotCommand) -> Result<(), String> {
    let SnapshotCommand::Restore {
        file,
        data_dir,
        wal_dir,
        name,
        initial_cluster,
        initial_cluster_token,
        initial_advertise_peer_urls,
        skip_hash_check,
        bump_revision,
        mark_compacted,
    } = command
    else {
        unreachable!("called for restore only")
    };
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
    let initial_cluster =
        initial_cluster.unwrap_or_else(|| format!("{name}=http://localhost:2380"));
    let opts = restore::RestoreOptions {
        file,
        data_dir,
        wal_dir,
        name,
        initial_cluster,
        initial_cluster_token,
        initial_advertise_peer_urls,
        skip_hash_check,
        bump_revision,
        mark_compacted,
    };
    let restored = restore::restore(&opts)?;
    let format = match restored.format {
        Format::Etcd => "etcd",
        Format::Redb => "etcd-rs (redb)",
    };
    println!(
        "restored {} snapshot {} into {} as member {:x} ({}) of a new cluster; revision {}, \
         compacted at {}; start it with --data-dir={}",
        format,
        opts.file.display(),
        opts.data_dir.display(),
        restored.member_id,
        opts.name,
        restored.revision,
        restored.compact_revision,
        opts.data_dir.display()
    );
    Ok(())
}

/// A backend file as a redb backend: our own is opened in place, an etcd file
/// is imported into a temporary one (returned with the directory that holds it).
fn open_as_backend(path: &Path) -> Result<(Arc<Backend>, Option<tempfile::TempDir>), String> {
    let len = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    let snapshot = file::open_snapshot(path, true, &mut |_, _| {})
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // A snapshot file's trailer is not part of the backend.
    let snapshot = file::SnapshotFile {
        db_len: if file::has_trailer(len) { len - file::TRAILER_LEN } else { len },
        ..snapshot
    };
    match snapshot.format {
        Format::Redb if !file::has_trailer(len) => {
            Ok((Arc::new(Backend::open(path).map_err(|e| e.to_string())?), None))
        }
        Format::Redb => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let db = dir.path().join("db");
            file::copy_prefix(&snapshot.file, snapshot.db_len, &db).map_err(|e| e.to_string())?;
            Ok((Arc::new(Backend::open(&db).map_err(|e| e.to_string())?), Some(dir)))
        }
        Format::Etcd => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let backend = Backend::open(&dir.path().join("db")).map_err(|e| e.to_string())?;
            let reader = file::bbolt_reader(&snapshot).map_err(|e| e.to_string())?;
            file::import_etcd(&reader, &backend).map_err(|e| e.to_string())?;
            Ok((Arc::new(backend), Some(dir)))
        }
    }
}

/// `snapshot status`: etcd's file is hashed as it is; ours as the etcd file it
/// would be exported as.
fn snapshot_status(path: &Path) -> Result<etcd_snapshot::Status, String> {
    let snapshot = file::open_snapshot(path, true, &mut |_, _| {})
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let len = snapshot.file.metadata().map_err(|e| e.to_string())?.len();
    let snapshot = file::SnapshotFile {
        db_len: if file::has_trailer(len) { len - file::TRAILER_LEN } else { len },
        ..snapshot
    };
    match snapshot.format {
        Format::Etcd => {
            let reader = file::bbolt_reader(&snapshot).map_err(|e| e.to_string())?;
            file::status(&reader).map_err(|e| e.to_string())
        }
        Format::Redb => {
            let (backend, _dir) = open_as_backend(path)?;
            let txn = backend.begin_read().map_err(|e| e.to_string())?;
            let mut hash = etcd_snapshot::StatusHash::default();
            etcd_snapshot::export(&txn, etcd_daemon::CLUSTER_VERSION, &mut hash)
                .map_err(|e| e.to_string())?;
            Ok(etcd_snapshot::Status {
                hash: hash.hash(),
                revision: hash.revision,
                total_key: hash.total_keys,
                total_size: backend.size_bytes().map_err(|e| e.to_string())?,
            })
        }
    }
}

fn hashkv(path: &Path, rev: i64) -> Result<(u32, i64, i64), String> {
    let (backend, _dir) = open_as_backend(path)?;
    let kv = etcd_mvcc::KvStore::open(backend).map_err(|e| e.to_string())?;
    let hash = kv.hash_kv(rev).map_err(|e| e.to_string())?;
    Ok((hash.hash, hash.hash_revision, hash.compact_revision))
}

fn migrate_from_etcd(data_dir: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    eprintln!("migrating {} (etcd's data dir) ...", data_dir.display());
    match etcd_daemon::adopt::adopt_if_etcd(data_dir, None) {
        Ok(true) => {
            println!(
                "migrated {} in {:.1}s; etcd's files are kept in {}; start this server with \
                 --data-dir={} and the member's usual flags",
                data_dir.display(),
                started.elapsed().as_secs_f64(),
                etcd_daemon::adopt::etcd_backup_dir(data_dir).display(),
                data_dir.display()
            );
            Ok(())
        }
        Ok(false) => Err(format!(
            "{} does not hold a real etcd member's data (no bbolt backend at member/snap/db); \
             nothing was changed",
            data_dir.display()
        )),
        Err(err) => Err(format!("{err}; nothing was changed")),
    }
}

fn migrate_to_etcd(data_dir: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    eprintln!("migrating {} (this server's data dir) to etcd's format ...", data_dir.display());
    let mut writing = progress::Progress::new("writing", progress::Unit::Entries);
    let handed =
        etcd_daemon::handback::hand_back_to_etcd(data_dir, &mut |n| writing.update(n, None))
            .map_err(|err| format!("{err}; nothing was changed"))?;
    writing.finish(handed.entries);
    println!(
        "migrated {} in {:.1}s: member {:x} of cluster {:x}, {} members, revision {}, Raft \
         index {} (term {}); this server's files are kept in {}; start etcd with \
         --data-dir={} and the member's usual flags",
        data_dir.display(),
        started.elapsed().as_secs_f64(),
        handed.member_id,
        handed.cluster_id,
        handed.members,
        handed.revision,
        handed.index,
        handed.term,
        etcd_daemon::handback::kept_dir(data_dir).display(),
        data_dir.display()
    );
    Ok(())
}

/// Rewrites `member/snap/db` compactly: a copy next to it, renamed over it.
fn defrag(data_dir: &Path) -> Result<(), String> {
    let db = data_dir.join("member").join("snap").join("db");
    if !db.exists() {
        return Err(format!("cannot open database at {}: no such file", db.display()));
    }
    let temp = db.with_extension("defrag");
    let _ = std::fs::remove_file(&temp);
    let before = std::fs::metadata(&db).map_err(|e| e.to_string())?.len();
    {
        let backend = Backend::open(&db).map_err(|e| {
            format!("cannot open database at {} (is the member running?): {e}", db.display())
        })?;
        backend.copy_to(&temp).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("defragmenting {} failed, the file is unchanged: {e}", db.display())
        })?;
    }
    std::fs::rename(&temp, &db).map_err(|e| e.to_string())?;
    let after = std::fs::metadata(&db).map_err(|e| e.to_string())?.len();
    eprintln!(
        "defragmented {}: {} -> {}",
        db.display(),
        status::human_bytes(before),
        status::human_bytes(after)
    );
    Ok(())
}
