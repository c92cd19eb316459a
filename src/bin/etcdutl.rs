//! `etcdutl`: offline operations on a data directory. `snapshot restore` turns a
//! file written by `etcdctl snapshot save` into the data directory of a member of
//! a NEW cluster: the key space, history and leases are kept; the membership and
//! the Raft position are not (the new cluster starts its own log at index 1).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use etcd_storage::Backend;
use sha2::{Digest, Sha256};

/// An administrative command line tool for etcd data directories.
#[derive(Debug, Parser)]
#[command(name = "etcdutl")]
struct Cli {
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
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Restores a snapshot into a new data directory.
    Restore {
        /// The snapshot file (from `etcdctl snapshot save`).
        file: PathBuf,
        /// Path to the data directory to create (default: ${name}.etcd).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Human-readable name for this member (used for the default data dir).
        #[arg(long, default_value = "default")]
        name: String,
        /// Accepted for etcdutl compatibility: the membership comes from the flags
        /// the new member starts with.
        #[arg(long)]
        initial_cluster: Option<String>,
        /// Accepted for etcdutl compatibility (see --initial-cluster).
        #[arg(long)]
        initial_cluster_token: Option<String>,
        /// Accepted for etcdutl compatibility (see --initial-cluster).
        #[arg(long)]
        initial_advertise_peer_urls: Option<String>,
        /// Restore even when the file has no SHA-256 trailer (e.g. copied from a
        /// data directory).
        #[arg(long)]
        skip_hash_check: bool,
    },
}

/// The payload of a snapshot file, after checking its SHA-256 trailer.
fn verified_payload(bytes: &[u8], skip_hash_check: bool) -> Result<&[u8], String> {
    let has_trailer = bytes.len() >= 32 && (bytes.len() - 32).is_multiple_of(512);
    if !has_trailer {
        return if skip_hash_check {
            Ok(bytes)
        } else {
            Err("the snapshot has no SHA-256 trailer (not written by `etcdctl snapshot save`?); \
                 use --skip-hash-check to restore it anyway"
                .into())
        };
    }
    let (payload, digest) = bytes.split_at(bytes.len() - 32);
    if !skip_hash_check && Sha256::digest(payload).as_slice() != digest {
        return Err(
            "the snapshot's SHA-256 does not match its contents: the file is damaged".into()
        );
    }
    Ok(payload)
}

fn restore(file: &Path, data_dir: &Path, skip_hash_check: bool) -> Result<(), String> {
    if data_dir.exists() {
        return Err(format!(
            "data-dir {:?} exists: restore into a new directory so nothing is overwritten",
            data_dir.display()
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let payload = verified_payload(&bytes, skip_hash_check)?;
    let snap_dir = data_dir.join("member").join("snap");
    std::fs::create_dir_all(&snap_dir)
        .map_err(|e| format!("cannot create {}: {e}", snap_dir.display()))?;
    let db = snap_dir.join("db");
    std::fs::write(&db, payload).map_err(|e| format!("cannot write {}: {e}", db.display()))?;
    let backend =
        Backend::open(&db).map_err(|e| format!("the snapshot is not a usable backend: {e}"))?;
    let txn = backend.begin_write().map_err(|e| e.to_string())?;
    // The old cluster's members and Raft position do not carry over: the new
    // cluster bootstraps its own and applies its log from index 1.
    for (id, _) in etcd_storage::members_list(&txn).map_err(|e| e.to_string())? {
        etcd_storage::members_delete(&txn, id).map_err(|e| e.to_string())?;
    }
    etcd_storage::set_consistent_index(&txn, 0, 0).map_err(|e| e.to_string())?;
    txn.commit(true).map_err(|e| e.to_string())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Snapshot { command } = cli.command;
    let SnapshotCommand::Restore { file, data_dir, name, skip_hash_check, .. } = command;
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
    match restore(&file, &data_dir, skip_hash_check) {
        Ok(()) => {
            println!(
                "restored snapshot {} into {}; start the member with --data-dir={} and the new \
                 cluster's --initial-cluster flags",
                file.display(),
                data_dir.display(),
                data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("etcdutl: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trailer_is_checked() {
        let payload = vec![7u8; 1024];
        let mut file = payload.clone();
        file.extend_from_slice(&Sha256::digest(&payload));
        assert_eq!(verified_payload(&file, false), Ok(&payload[..]));
        file[3] ^= 1;
        assert!(verified_payload(&file, false).is_err());
        assert!(verified_payload(&payload[..1000], false).is_err());
        assert_eq!(verified_payload(&payload[..1000], true), Ok(&payload[..1000]));
    }
}
