//! The real `etcdctl` 3.4 (Debian's `etcd-client`) against our server, and the same
//! command sequence against real etcd (Debian's `etcd-server`) as the oracle: the
//! JSON outputs must match, apart from the IDs and term that differ per cluster.

mod common;

use common::{etcdctl, must_etcdctl, real_etcd, Flavor, Server};
use serde_json::Value;

fn json(endpoint: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    serde_json::from_str(&must_etcdctl(endpoint, &all, None)).expect("etcdctl printed JSON")
}

/// Drops what legitimately differs between two clusters.
fn normalise(mut v: Value) -> Value {
    if let Some(header) = v.get_mut("header").and_then(Value::as_object_mut) {
        header.remove("cluster_id");
        header.remove("member_id");
        header.remove("raft_term");
    }
    if let Some(items) = v.get_mut("responses").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            if let Some(inner) = item.as_object_mut().and_then(|o| o.values_mut().next()) {
                *inner = normalise(inner.take());
            }
        }
    }
    v
}

const TXN: &str = "value(\"a\") = \"3\"\n\nput a 5\nput c 6\nget a\n\nput failed 1\n\n";

/// One command sequence; returns every output, normalised.
fn sequence(endpoint: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3"), ("a/x", "4"), ("a/y", "5"), ("z", "6")] {
        out.push(normalise(json(endpoint, &["put", k, v])));
    }
    out.push(normalise(json(endpoint, &["get", "a"])));
    out.push(normalise(json(endpoint, &["get", "a", "--prefix"])));
    out.push(normalise(json(endpoint, &["get", "a", "--from-key", "--limit=2"])));
    out.push(normalise(json(
        endpoint,
        &["get", "a", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"],
    )));
    out.push(normalise(json(endpoint, &["get", "a", "--rev=2"])));
    out.push(normalise(json(endpoint, &["del", "a/", "--prefix", "--prev-kv"])));
    out.push(normalise(json(endpoint, &["del", "nothing"])));
    let txn = must_etcdctl(endpoint, &["txn", "-w", "json"], Some(TXN));
    out.push(normalise(serde_json::from_str(&txn).expect("txn JSON")));
    out.push(normalise(json(endpoint, &["get", "", "--prefix", "--keys-only"])));
    out.push(normalise(json(endpoint, &["get", "", "--prefix", "--limit=1", "--rev=4"])));
    out
}

#[test]
fn etcdctl_outputs_match_real_etcd_for_the_same_sequence() {
    assert!(
        real_etcd().is_some(),
        "real etcd is required: apt-get install -y etcd-server (or run .ci/run)"
    );
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = sequence(&ours.endpoint());
    let want = sequence(&oracle.endpoint());
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "step {i} differs from real etcd");
    }
    // The same history hashes the same: the stored key/value bytes are etcd's.
    let hash = |ep: &str| json(ep, &["endpoint", "hashkv"])[0]["HashKV"]["hash"].clone();
    let ours_hash = hash(&ours.endpoint());
    assert!(ours_hash.is_u64(), "hashkv printed no hash: {ours_hash}");
    assert_eq!(ours_hash, hash(&oracle.endpoint()));
}

#[test]
fn etcdctl_put_get_delete_and_txn_in_simple_format() {
    let server = Server::start();
    let ep = server.endpoint();
    assert_eq!(must_etcdctl(&ep, &["put", "foo", "bar"], None).trim(), "OK");
    assert_eq!(must_etcdctl(&ep, &["get", "foo"], None), "foo\nbar\n");
    assert_eq!(must_etcdctl(&ep, &["get", "foo", "--print-value-only"], None), "bar\n");
    let txn = "value(\"foo\") = \"bar\"\n\nput foo baz\n\n\n";
    assert_eq!(must_etcdctl(&ep, &["txn"], Some(txn)), "SUCCESS\n\nOK\n");
    assert_eq!(must_etcdctl(&ep, &["get", "foo", "--print-value-only"], None), "baz\n");
    assert_eq!(must_etcdctl(&ep, &["del", "foo"], None).trim(), "1");
    assert_eq!(must_etcdctl(&ep, &["get", "foo"], None), "");
}

#[test]
fn etcdctl_compaction_then_old_revision_fails_with_etcds_message() {
    let server = Server::start();
    let ep = server.endpoint();
    for v in ["1", "2", "3", "4"] {
        must_etcdctl(&ep, &["put", "k", v], None);
    }
    assert_eq!(must_etcdctl(&ep, &["compact", "4"], None).trim(), "compacted revision 4");
    let out = etcdctl(&ep, &["get", "k", "--rev=2"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("etcdserver: mvcc: required revision has been compacted"),
        "stderr: {stderr}"
    );
    assert_eq!(must_etcdctl(&ep, &["get", "k", "--rev=4", "--print-value-only"], None), "3\n");
}

#[test]
fn etcdctl_member_list_and_endpoint_status_table() {
    let server = Server::start();
    let ep = server.endpoint();
    let members = must_etcdctl(&ep, &["member", "list"], None);
    let peer = format!("http://127.0.0.1:{}", server.peer_port);
    let client = format!("http://127.0.0.1:{}", server.client_port);
    assert!(members.contains(&format!("started, node1, {peer}, {client}, false")), "{members}");
    let table = must_etcdctl(&ep, &["endpoint", "status", "-w", "table"], None);
    assert!(table.contains("IS LEADER"), "{table}");
    let row = table.lines().find(|l| l.contains(&ep)).expect("a row for the endpoint");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | ...
    assert_eq!(cells[3], "3.5.13", "{row}");
    assert_eq!(cells[5], "true", "the only member leads: {row}");
    assert_eq!(cells[6], "false", "not a learner: {row}");
    let health = etcdctl(&ep, &["endpoint", "health"], None);
    assert!(health.status.success());
    // etcdctl 3.4 prints the health line on stderr.
    let text = String::from_utf8_lossy(&health.stderr) + String::from_utf8_lossy(&health.stdout);
    assert!(text.contains("is healthy"), "{text}");
}

#[test]
fn etcdctl_snapshot_save_writes_the_backend_with_etcds_checksum_layout() {
    use sha2::{Digest, Sha256};
    let server = Server::start();
    let ep = server.endpoint();
    for i in 0..20 {
        must_etcdctl(&ep, &["put", &format!("k{i}"), "v"], None);
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let file = temp.path().join("backup.db");
    let out = must_etcdctl(&ep, &["snapshot", "save", &file.display().to_string()], None);
    assert!(out.contains("Snapshot saved at"), "{out}");
    let bytes = std::fs::read(&file).expect("snapshot file");
    assert_eq!((bytes.len() - 32) % 512, 0, "payload padded to 512 bytes plus a sha256");
    let (payload, digest) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(payload).as_slice(), digest);
}
