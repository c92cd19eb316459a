//! Backups: `etcdctl snapshot save` from a running member, `etcdutl snapshot
//! restore` into a new data dir, and a new member serving the restored keys with
//! their revisions.

mod common;

use std::process::Command;

use common::{must_etcdctl, Flavor, Server};

#[test]
fn a_saved_snapshot_restores_into_a_new_member_with_the_same_keys_and_revisions() {
    let original = Server::start();
    let ep = original.endpoint();
    for i in 0..30 {
        must_etcdctl(&ep, &["put", &format!("k{i:02}"), &format!("v{i}")], None);
    }
    must_etcdctl(&ep, &["del", "k00"], None);
    let before = must_etcdctl(&ep, &["get", "k", "--prefix", "-w", "json"], None);
    let before: serde_json::Value = serde_json::from_str(&before).expect("json");
    let temp = tempfile::tempdir().expect("tempdir");
    let backup = temp.path().join("backup.db");
    must_etcdctl(&ep, &["snapshot", "save", &backup.display().to_string()], None);

    let target = tempfile::tempdir().expect("tempdir");
    let mut restored = Server::new(Flavor::Ours, "restored", target, &[]);
    let restore = Command::new(env!("CARGO_BIN_EXE_etcdutl"))
        .args(["snapshot", "restore", &backup.display().to_string()])
        .arg(format!("--data-dir={}", restored.data_dir.display()))
        .arg("--name=restored")
        .arg(format!("--initial-cluster=restored={}", restored.peer_url()))
        .arg(format!("--initial-advertise-peer-urls={}", restored.peer_url()))
        .output()
        .expect("run etcdutl");
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    let again = Command::new(env!("CARGO_BIN_EXE_etcdutl"))
        .args(["snapshot", "restore", &backup.display().to_string()])
        .arg(format!("--data-dir={}", restored.data_dir.display()))
        .output()
        .expect("run etcdutl");
    assert!(!again.status.success(), "restoring over an existing data dir must be refused");

    restored.restart();
    let rep = restored.endpoint();
    let after = must_etcdctl(&rep, &["get", "k", "--prefix", "-w", "json"], None);
    let after: serde_json::Value = serde_json::from_str(&after).expect("json");
    assert_eq!(after["kvs"], before["kvs"], "keys, values and revisions survive the restore");
    assert_eq!(after["header"]["revision"], before["header"]["revision"]);
    let revision = before["header"]["revision"].as_i64().expect("revision");
    let put = must_etcdctl(&rep, &["put", "new", "1", "-w", "json"], None);
    let put: serde_json::Value = serde_json::from_str(&put).expect("json");
    assert_eq!(put["header"]["revision"].as_i64(), Some(revision + 1));
    let members = must_etcdctl(&rep, &["member", "list"], None);
    assert_eq!(members.lines().count(), 1, "only the new cluster's member: {members}");
    assert!(members.contains("restored"), "{members}");
}
