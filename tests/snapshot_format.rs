//! Data moves between real etcd and this server in both directions through
//! etcd's own snapshot format: a real etcd snapshot restores into our server
//! with the same keys, revisions, HashKV, leases and auth state, and a snapshot
//! of ours is read by real `etcdctl snapshot status` and restored by real
//! `etcdctl snapshot restore` into a real etcd that serves the same. Damaged
//! snapshots are refused and leave nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{etcdctl, must_etcdctl, real_etcd, Cluster, Flavor, Server};
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

const ROOT: &str = "--user=root:rootpw";

fn etcdutl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etcdutl")).args(args).output().expect("run etcdutl")
}

fn must_etcdutl(args: &[&str]) -> String {
    let out = etcdutl(args);
    assert!(
        out.status.success(),
        "etcdutl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// History worth restoring: 10,000 keys over a hundred revisions, overwrites,
/// deletions, a compaction, a lease with keys, and users and roles with auth
/// enabled. Returns the lease ID.
async fn load(client: &mut Client, keys: usize) -> i64 {
    for chunk in 0..keys.div_ceil(100) {
        let ops: Vec<TxnOp> = (chunk * 100..((chunk + 1) * 100).min(keys))
            .map(|i| TxnOp::put(format!("k/{i:05}"), format!("value-{i}"), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.expect("txn of puts");
    }
    for i in (0..keys).step_by(50) {
        client.put(format!("k/{i:05}"), format!("second-{i}"), None).await.expect("overwrite");
    }
    let compact_at = client.get("k/00000", None).await.expect("get").header().unwrap().revision();
    for i in (0..keys).step_by(97) {
        client.delete(format!("k/{i:05}"), None).await.expect("delete");
    }
    let cas = Txn::new()
        .when([Compare::version("k/00001", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("k/00001", "swapped", None)]);
    client.txn(cas).await.expect("compare-and-swap");
    client.compact(compact_at, None).await.expect("compact");
    let lease = client.lease_grant(3600, None).await.expect("lease").id();
    for i in 0..20 {
        let options = PutOptions::new().with_lease(lease);
        client.put(format!("leased/{i}"), "x", Some(options)).await.expect("put with lease");
    }
    client.put("big", "b".repeat(20_000), None).await.expect("a value over a page");
    lease
}

fn enable_auth(ep: &str) {
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "k/", "--prefix"],
        &["user", "add", "alice:alicepw"],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
    ] {
        must_etcdctl(ep, args, None);
    }
}

/// What a client sees of a member: every key with its revisions and lease, the
/// revision, HashKV, leases and their keys, users, roles and the auth status.
fn observe(ep: &str, lease: i64) -> Vec<(String, String)> {
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&must_etcdctl(ep, args, None)).expect("json")
    };
    let all = json(&[ROOT, "get", "", "--from-key", "-w", "json"]);
    let hash = json(&[ROOT, "endpoint", "hashkv", "-w", "json"]);
    let lease_hex = format!("{lease:x}");
    vec![
        ("kvs".into(), all["kvs"].to_string()),
        ("revision".into(), all["header"]["revision"].to_string()),
        ("hashkv".into(), hash[0]["HashKV"]["hash"].to_string()),
        ("leases".into(), must_etcdctl(ep, &[ROOT, "lease", "list"], None)),
        ("lease keys".into(), {
            // etcd lists a lease's keys in Go map order: compare them sorted.
            let ttl = json(&[ROOT, "lease", "timetolive", &lease_hex, "--keys", "-w", "json"]);
            let mut keys: Vec<String> = ttl["keys"]
                .as_array()
                .map(|keys| keys.iter().map(|k| k.to_string()).collect())
                .unwrap_or_default();
            keys.sort();
            keys.join(",")
        }),
        ("users".into(), must_etcdctl(ep, &[ROOT, "user", "list"], None)),
        ("alice".into(), must_etcdctl(ep, &[ROOT, "user", "get", "alice"], None)),
        ("reader".into(), must_etcdctl(ep, &[ROOT, "role", "get", "reader"], None)),
        (
            "auth".into(),
            must_etcdctl(ep, &[ROOT, "auth", "status"], None)
                .replace(|c: char| c.is_ascii_digit(), ""),
        ),
        // alice may read k/ and nothing else.
        ("alice reads".into(), must_etcdctl(ep, &["--user=alice:alicepw", "get", "k/00002"], None)),
        (
            "alice is denied".into(),
            String::from_utf8_lossy(
                &etcdctl(ep, &["--user=alice:alicepw", "get", "big"], None).stderr,
            )
            .lines()
            .last()
            .unwrap_or("")
            .to_string(),
        ),
    ]
}

fn assert_same(ours: &[(String, String)], etcd: &[(String, String)]) {
    for ((what, a), (_, b)) in ours.iter().zip(etcd) {
        assert_eq!(a, b, "{what} differs between the restored server and the original");
    }
}

fn save(ep: &str, dir: &Path) -> PathBuf {
    let file = dir.join("backup.db");
    must_etcdctl(ep, &[ROOT, "snapshot", "save", &file.display().to_string()], None);
    file
}

/// A server of `flavor`, not started, whose data dir is restored from `file`
/// by the matching tool: our etcdutl or real etcdctl.
fn restored(flavor: Flavor, file: &Path) -> Server {
    let temp = tempfile::tempdir().expect("tempdir");
    let server = Server::new(flavor, "restored", temp, &[]);
    let args = [
        "snapshot".to_string(),
        "restore".into(),
        file.display().to_string(),
        format!("--data-dir={}", server.data_dir.display()),
        "--name=restored".into(),
        format!("--initial-cluster=restored={}", server.peer_url()),
        format!("--initial-advertise-peer-urls={}", server.peer_url()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match flavor {
        Flavor::Ours => {
            must_etcdutl(&args);
        }
        Flavor::RealEtcd => {
            let out = etcdctl("127.0.0.1:1", &args, None);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    server
}

/// `snapshot status` of a file as real etcdctl and our etcdutl print it, in
/// every format.
fn assert_same_status(file: &Path) {
    let path = file.display().to_string();
    for format in ["simple", "json", "table", "fields"] {
        let real = must_etcdctl("127.0.0.1:1", &["snapshot", "status", &path, "-w", format], None);
        let ours = must_etcdutl(&["snapshot", "status", &path, "-w", format]);
        assert_eq!(ours, real, "snapshot status -w {format}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_etcd_snapshot_restores_into_our_server_with_everything() {
    if real_etcd().is_none() {
        panic!("real etcd is missing: sudo apt-get install etcd-server");
    }
    let etcd = Server::start_with(Flavor::RealEtcd, &[]);
    let mut client = etcd.client().await;
    let lease = load(&mut client, 10_000).await;
    drop(client);
    tokio::task::block_in_place(|| {
        enable_auth(&etcd.endpoint());
        let expected = observe(&etcd.endpoint(), lease);
        let temp = tempfile::tempdir().expect("tempdir");
        let file = save(&etcd.endpoint(), temp.path());
        assert_same_status(&file);
        let hashkv_file = must_etcdutl(&["hashkv", &file.display().to_string(), "-w", "json"]);
        let mut ours = restored(Flavor::Ours, &file);
        ours.restart();
        let seen = observe(&ours.endpoint(), lease);
        assert_same(&seen, &expected);
        // etcdutl hashkv of the file agrees with both servers.
        let hash: serde_json::Value = serde_json::from_str(&hashkv_file).expect("json");
        assert_eq!(hash["hash"].to_string(), expected[2].1, "etcdutl hashkv of the snapshot");
        // The restored member is the only member of a new cluster and takes writes.
        let members = must_etcdctl(&ours.endpoint(), &[ROOT, "member", "list"], None);
        assert_eq!(members.lines().count(), 1, "{members}");
        assert!(members.contains(&ours.peer_url()), "{members}");
        must_etcdctl(&ours.endpoint(), &[ROOT, "put", "after", "restore"], None);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_snapshot_is_read_and_restored_by_real_etcd() {
    if real_etcd().is_none() {
        panic!("real etcd is missing: sudo apt-get install etcd-server");
    }
    let ours = Server::start();
    let mut client = ours.client().await;
    let lease = load(&mut client, 3_000).await;
    drop(client);
    tokio::task::block_in_place(|| {
        enable_auth(&ours.endpoint());
        let expected = observe(&ours.endpoint(), lease);
        let temp = tempfile::tempdir().expect("tempdir");
        let file = save(&ours.endpoint(), temp.path());
        assert_same_status(&file);
        let mut etcd = restored(Flavor::RealEtcd, &file);
        etcd.restart();
        let seen = observe(&etcd.endpoint(), lease);
        assert_same(&seen, &expected);
        must_etcdctl(&etcd.endpoint(), &[ROOT, "put", "after", "restore"], None);
        // And back again: real etcd's snapshot of it restores into ours.
        let again_dir = temp.path().join("again");
        std::fs::create_dir_all(&again_dir).expect("mkdir");
        let again = save(&etcd.endpoint(), &again_dir);
        let mut back = restored(Flavor::Ours, &again);
        back.restart();
        let after =
            must_etcdctl(&back.endpoint(), &[ROOT, "get", "after", "--print-value-only"], None);
        assert_eq!(after, "restore\n");
    });
}

#[test]
fn a_real_three_member_cluster_restores_as_three_members_of_ours() {
    let etcd = Cluster::start_flavor(Flavor::RealEtcd, 3, &[]);
    let ep = etcd.members[1].endpoint();
    for i in 0..50 {
        must_etcdctl(&ep, &["put", &format!("c/{i}"), &i.to_string()], None);
    }
    let expected = must_etcdctl(&ep, &["get", "c/", "--prefix", "-w", "json"], None);
    let expected: serde_json::Value = serde_json::from_str(&expected).expect("json");
    let temp = tempfile::tempdir().expect("tempdir");
    let file = temp.path().join("cluster.db");
    must_etcdctl(&ep, &["snapshot", "save", &file.display().to_string()], None);
    drop(etcd);

    let mut members: Vec<Server> = (0..3)
        .map(|i| Server::new(Flavor::Ours, &format!("r{i}"), tempfile::tempdir().unwrap(), &[]))
        .collect();
    let initial: Vec<String> =
        members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
    let initial = initial.join(",");
    for m in &mut members {
        must_etcdutl(&[
            "snapshot",
            "restore",
            &file.display().to_string(),
            &format!("--data-dir={}", m.data_dir.display()),
            &format!("--name={}", m.name),
            &format!("--initial-cluster={initial}"),
            "--initial-cluster-token=restored-cluster",
            &format!("--initial-advertise-peer-urls={}", m.peer_url()),
        ]);
        m.initial_cluster = Some(initial.clone());
        m.spawn();
    }
    for m in &mut members {
        m.wait_ready();
    }
    for m in &members {
        let got = must_etcdctl(&m.endpoint(), &["get", "c/", "--prefix", "-w", "json"], None);
        let got: serde_json::Value = serde_json::from_str(&got).expect("json");
        assert_eq!(got["kvs"], expected["kvs"], "member {} serves the restored keys", m.name);
        let list = must_etcdctl(&m.endpoint(), &["member", "list"], None);
        assert_eq!(list.lines().count(), 3, "{list}");
    }
    must_etcdctl(&members[2].endpoint(), &["put", "c/new", "1"], None);
    let got = must_etcdctl(&members[0].endpoint(), &["get", "c/new", "--print-value-only"], None);
    assert_eq!(got, "1\n");
}

#[test]
fn damaged_snapshots_are_refused_and_leave_nothing_behind() {
    let ours = Server::start();
    for i in 0..200 {
        must_etcdctl(&ours.endpoint(), &["put", &format!("d/{i}"), "v"], None);
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let file = temp.path().join("good.db");
    must_etcdctl(&ours.endpoint(), &["snapshot", "save", &file.display().to_string()], None);
    let good = std::fs::read(&file).expect("read");
    let target = temp.path().join("target.etcd");
    let restore = |path: &Path, extra: &[&str]| -> Output {
        let mut args = vec![
            "snapshot".to_string(),
            "restore".into(),
            path.display().to_string(),
            format!("--data-dir={}", target.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        etcdutl(&args)
    };

    // One flipped byte in the middle: the trailer no longer matches.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    let damaged = temp.path().join("flipped.db");
    std::fs::write(&damaged, &flipped).unwrap();
    let out = restore(&damaged, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected sha256"), "{err}");
    assert!(!target.exists(), "nothing written for a hash mismatch");

    // Truncated: no trailer any more, refused unless --skip-hash-check; with
    // it, the damaged file itself is refused.
    let truncated = temp.path().join("truncated.db");
    std::fs::write(&truncated, &good[..good.len() - 4096 - 32]).unwrap();
    let out = restore(&truncated, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("snapshot missing hash but --skip-hash-check=false"), "{err}");
    let out = restore(&truncated, &["--skip-hash-check"]);
    assert!(!out.status.success(), "a truncated backend must not restore");
    assert!(!target.exists(), "nothing written for a truncated file");

    // A file copied from a data directory has no trailer: --skip-hash-check.
    let bare = temp.path().join("bare.db");
    std::fs::write(&bare, &good[..good.len() - 32]).unwrap();
    let out = restore(&bare, &["--skip-hash-check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(target.join("member").join("wal").exists());

    // Not a snapshot at all.
    let junk = temp.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 8192 + 32]).unwrap();
    std::fs::remove_dir_all(&target).unwrap();
    let out = restore(&junk, &["--skip-hash-check"]);
    assert!(!out.status.success());
    assert!(!target.exists());

    // etcd's flag rules.
    let out = restore(&file, &["--bump-revision=10"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--mark-compacted required if --revision-bump > 0"), "{err}");
}

#[test]
fn bump_revision_and_mark_compacted_move_the_revision_on() {
    let ours = Server::start();
    for i in 0..10 {
        must_etcdctl(&ours.endpoint(), &["put", &format!("b/{i}"), "v"], None);
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let file = temp.path().join("b.db");
    must_etcdctl(&ours.endpoint(), &["snapshot", "save", &file.display().to_string()], None);
    let mut server = Server::new(Flavor::Ours, "bumped", tempfile::tempdir().unwrap(), &[]);
    must_etcdutl(&[
        "snapshot",
        "restore",
        &file.display().to_string(),
        &format!("--data-dir={}", server.data_dir.display()),
        "--name=bumped",
        &format!("--initial-cluster=bumped={}", server.peer_url()),
        &format!("--initial-advertise-peer-urls={}", server.peer_url()),
        "--bump-revision=1000",
        "--mark-compacted",
    ]);
    server.restart();
    let put = must_etcdctl(&server.endpoint(), &["put", "b/new", "v", "-w", "json"], None);
    let put: serde_json::Value = serde_json::from_str(&put).expect("json");
    assert_eq!(put["header"]["revision"].as_i64(), Some(11 + 1000 + 1));
    let old = etcdctl(&server.endpoint(), &["get", "b/1", "--rev=5"], None);
    let err = String::from_utf8_lossy(&old.stderr);
    assert!(err.contains("required revision has been compacted"), "{err}");
    let value = must_etcdctl(&server.endpoint(), &["get", "b/1", "--print-value-only"], None);
    assert_eq!(value, "v\n");
}

/// The drop-in path: a real etcd member is stopped and this server is started
/// on the same data dir with the same flags. It keeps the member's ID, every
/// key with its revisions, HashKV, leases and auth, and keeps etcd's files
/// untouched in `member.etcd/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_takes_over_a_real_etcd_data_dir() {
    if real_etcd().is_none() {
        panic!("real etcd is missing: sudo apt-get install etcd-server");
    }
    let mut server = Server::start_with(Flavor::RealEtcd, &[]);
    let mut client = server.client().await;
    let lease = load(&mut client, 2_000).await;
    drop(client);
    tokio::task::block_in_place(|| {
        enable_auth(&server.endpoint());
        let expected = observe(&server.endpoint(), lease);
        let id_before = must_etcdctl(&server.endpoint(), &[ROOT, "member", "list"], None);
        // SIGTERM: etcd stops cleanly (it reports the signal as its exit status).
        server.terminate();
        server.flavor = Flavor::Ours;
        server.restart();
        let seen = observe(&server.endpoint(), lease);
        assert_same(&seen, &expected);
        let id_after = must_etcdctl(&server.endpoint(), &[ROOT, "member", "list"], None);
        let id = |list: &str| list.split(',').next().unwrap_or("").to_string();
        assert_eq!(id(&id_after), id(&id_before), "the member keeps its ID");
        assert!(server.data_dir.join("member.etcd").join("snap").join("db").exists());
        must_etcdctl(&server.endpoint(), &[ROOT, "put", "after", "takeover"], None);
        // And it restarts as itself.
        server.kill9();
        server.restart();
        let after =
            must_etcdctl(&server.endpoint(), &[ROOT, "get", "after", "--print-value-only"], None);
        assert_eq!(after, "takeover\n");
    });
}

/// A whole real 3-member cluster is stopped and every member restarted as
/// ours on its data dir: same members, same data, and it takes writes.
#[test]
fn our_server_takes_over_a_real_three_member_cluster() {
    let mut cluster = Cluster::start_flavor(Flavor::RealEtcd, 3, &[]);
    let ep = cluster.members[0].endpoint();
    for i in 0..100 {
        must_etcdctl(&ep, &["put", &format!("t/{i}"), &i.to_string()], None);
    }
    let expected = must_etcdctl(&ep, &["get", "t/", "--prefix", "-w", "json"], None);
    let expected: serde_json::Value = serde_json::from_str(&expected).expect("json");
    let members_before = must_etcdctl(&ep, &["member", "list"], None);
    for m in &mut cluster.members {
        m.terminate();
    }
    for m in &mut cluster.members {
        m.flavor = Flavor::Ours;
        m.spawn();
    }
    for m in &mut cluster.members {
        m.wait_ready();
    }
    for m in &cluster.members {
        let got = must_etcdctl(&m.endpoint(), &["get", "t/", "--prefix", "-w", "json"], None);
        let got: serde_json::Value = serde_json::from_str(&got).expect("json");
        assert_eq!(got["kvs"], expected["kvs"], "member {} serves etcd's keys", m.name);
    }
    let ids = |list: &str| {
        let mut ids: Vec<String> =
            list.lines().map(|l| l.split(',').next().unwrap_or("").to_string()).collect();
        ids.sort();
        ids
    };
    let members_after = must_etcdctl(&ep, &["member", "list"], None);
    assert_eq!(ids(&members_after), ids(&members_before), "same member IDs");
    must_etcdctl(&cluster.members[2].endpoint(), &["put", "t/new", "1"], None);
    let got =
        must_etcdctl(&cluster.members[1].endpoint(), &["get", "t/new", "--print-value-only"], None);
    assert_eq!(got, "1\n");
}

/// The same takeover offline, with `etcdutl migrate-from-etcd`; a second run
/// finds nothing to migrate and changes nothing.
#[test]
fn etcdutl_migrates_a_stopped_real_etcd_member() {
    let mut server = Server::start_with(Flavor::RealEtcd, &[]);
    for i in 0..20 {
        must_etcdctl(&server.endpoint(), &["put", &format!("m/{i}"), &i.to_string()], None);
    }
    let expected = must_etcdctl(&server.endpoint(), &["get", "m/", "--prefix", "-w", "json"], None);
    let expected: serde_json::Value = serde_json::from_str(&expected).expect("json");
    server.terminate();
    let dir = server.data_dir.display().to_string();
    let out = must_etcdutl(&["migrate-from-etcd", &format!("--data-dir={dir}")]);
    assert!(out.contains("member.etcd"), "{out}");
    let again = etcdutl(&["migrate-from-etcd", &format!("--data-dir={dir}")]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("does not hold a real etcd member's data"), "{err}");
    server.flavor = Flavor::Ours;
    server.restart();
    let got = must_etcdctl(&server.endpoint(), &["get", "m/", "--prefix", "-w", "json"], None);
    let got: serde_json::Value = serde_json::from_str(&got).expect("json");
    assert_eq!(got["kvs"], expected["kvs"]);
}

/// The way back: a stopped member of ours handed to real etcd in place with
/// `etcdutl migrate-to-etcd` serves the same keys, revisions, HashKV, leases
/// and auth as the same member, keeps its ID, takes writes, and can be taken
/// over by this server again.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_of_ours_is_handed_back_to_real_etcd_in_place() {
    if real_etcd().is_none() {
        panic!("real etcd is missing: sudo apt-get install etcd-server");
    }
    let mut server = Server::start_with(Flavor::Ours, &[]);
    let mut client = server.client().await;
    let lease = load(&mut client, 2_000).await;
    drop(client);
    tokio::task::block_in_place(|| {
        enable_auth(&server.endpoint());
        let expected = observe(&server.endpoint(), lease);
        let id = |list: &str| list.split(',').next().unwrap_or("").to_string();
        let id_before = id(&must_etcdctl(&server.endpoint(), &[ROOT, "member", "list"], None));
        server.terminate();
        let dir = format!("--data-dir={}", server.data_dir.display());
        let out = must_etcdutl(&["migrate-to-etcd", &dir]);
        assert!(out.contains("member.etcdrs"), "{out}");
        let again = etcdutl(&["migrate-to-etcd", &dir]);
        assert!(!again.status.success(), "a second run finds etcd's files and changes nothing");
        assert!(String::from_utf8_lossy(&again.stderr).contains("already holds etcd's WAL"));

        server.flavor = Flavor::RealEtcd;
        server.restart();
        assert_same(&observe(&server.endpoint(), lease), &expected);
        let id_after = id(&must_etcdctl(&server.endpoint(), &[ROOT, "member", "list"], None));
        assert_eq!(id_after, id_before, "the member keeps its ID");
        must_etcdctl(&server.endpoint(), &[ROOT, "put", "after", "handback"], None);
        server.terminate();

        server.flavor = Flavor::Ours;
        server.restart();
        let after =
            must_etcdctl(&server.endpoint(), &[ROOT, "get", "after", "--print-value-only"], None);
        assert_eq!(after, "handback\n", "and back again: this server takes etcd's files over");
    });
}

/// A whole 3-member cluster of ours stopped, every member handed back: real
/// etcd runs it with the same members and data, and it takes writes.
#[test]
fn a_three_member_cluster_of_ours_is_handed_back_to_real_etcd() {
    let mut cluster = Cluster::start_flavor(Flavor::Ours, 3, &[]);
    let ep = cluster.members[0].endpoint();
    for i in 0..100 {
        must_etcdctl(&ep, &["put", &format!("t/{i}"), &i.to_string()], None);
    }
    let expected = must_etcdctl(&ep, &["get", "t/", "--prefix", "-w", "json"], None);
    let expected: serde_json::Value = serde_json::from_str(&expected).expect("json");
    let ids = |list: &str| {
        let mut ids: Vec<String> =
            list.lines().map(|l| l.split(',').next().unwrap_or("").to_string()).collect();
        ids.sort();
        ids
    };
    let members_before = ids(&must_etcdctl(&ep, &["member", "list"], None));
    for m in &mut cluster.members {
        m.terminate();
    }
    for m in &mut cluster.members {
        must_etcdutl(&["migrate-to-etcd", &format!("--data-dir={}", m.data_dir.display())]);
        m.flavor = Flavor::RealEtcd;
        m.spawn();
    }
    for m in &mut cluster.members {
        m.wait_ready();
    }
    for m in &cluster.members {
        let got = must_etcdctl(&m.endpoint(), &["get", "t/", "--prefix", "-w", "json"], None);
        let got: serde_json::Value = serde_json::from_str(&got).expect("json");
        assert_eq!(got["kvs"], expected["kvs"], "member {} serves the keys", m.name);
    }
    assert_eq!(ids(&must_etcdctl(&ep, &["member", "list"], None)), members_before);
    must_etcdctl(&cluster.members[2].endpoint(), &["put", "t/new", "1"], None);
    let got =
        must_etcdctl(&cluster.members[1].endpoint(), &["get", "t/new", "--print-value-only"], None);
    assert_eq!(got, "1\n");
}

/// `--wal-dir`, as etcd: `snapshot restore --wal-dir` puts the WAL there and
/// a member started with the same flag runs on it, for real etcd and for ours
/// alike; the data dir then holds no WAL.
#[test]
fn restore_and_the_member_take_a_separate_wal_dir() {
    let source = Server::start_with(Flavor::Ours, &[]);
    for i in 0..20 {
        must_etcdctl(&source.endpoint(), &["put", &format!("w/{i}"), &i.to_string()], None);
    }
    let expected = must_etcdctl(&source.endpoint(), &["get", "w/", "--prefix"], None);
    let backups = tempfile::tempdir().expect("tempdir");
    let file = backups.path().join("backup.db");
    must_etcdctl(&source.endpoint(), &["snapshot", "save", &file.display().to_string()], None);
    for flavor in [Flavor::RealEtcd, Flavor::Ours] {
        let temp = tempfile::tempdir().expect("tempdir");
        let wal_dir = temp.path().join("wal-elsewhere");
        let wal_flag = format!("--wal-dir={}", wal_dir.display());
        let mut server = Server::new(flavor, "restored", temp, &[&wal_flag]);
        let args = [
            "snapshot".to_string(),
            "restore".into(),
            file.display().to_string(),
            format!("--data-dir={}", server.data_dir.display()),
            wal_flag.clone(),
            "--name=restored".into(),
            format!("--initial-cluster=restored={}", server.peer_url()),
            format!("--initial-advertise-peer-urls={}", server.peer_url()),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match flavor {
            Flavor::Ours => drop(must_etcdutl(&args)),
            Flavor::RealEtcd => {
                let out = etcdctl("127.0.0.1:1", &args, None);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let wal_files = |dir: &Path| {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.filter(|e| {
                        e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal"))
                    })
                    .count()
                })
                .unwrap_or(0)
        };
        assert!(wal_files(&wal_dir) > 0, "{flavor:?}: the WAL is in --wal-dir");
        assert_eq!(wal_files(&server.data_dir.join("member").join("wal")), 0, "{flavor:?}");
        server.restart();
        let got = must_etcdctl(&server.endpoint(), &["get", "w/", "--prefix"], None);
        assert_eq!(got, expected, "{flavor:?} serves the snapshot");
        must_etcdctl(&server.endpoint(), &["put", "w/after", "1"], None);
        server.kill9();
        server.restart();
        let got = must_etcdctl(&server.endpoint(), &["get", "w/after", "--print-value-only"], None);
        assert_eq!(got, "1\n", "{flavor:?} restarts on its --wal-dir");
    }
}

/// A real etcd member run with `--wal-dir` is not taken over yet: our server
/// refuses it with what to do, and leaves etcd's files as they were.
#[test]
fn a_real_etcd_member_with_a_separate_wal_dir_is_refused_untouched() {
    if real_etcd().is_none() {
        panic!("real etcd is missing: sudo apt-get install etcd-server");
    }
    let wal_home = tempfile::tempdir().unwrap();
    let wal_dir = wal_home.path().join("wal");
    let wal_flag = format!("--wal-dir={}", wal_dir.display());
    let mut server = Server::start_with(Flavor::RealEtcd, &[wal_flag.as_str()]);
    must_etcdctl(&server.endpoint(), &["put", "k", "v"], None);
    server.terminate();
    let files_before = common::sorted_files(&server.data_dir);
    let wal_before = common::sorted_files(&wal_dir);
    server.flavor = Flavor::Ours;
    server.spawn();
    assert!(server.wait_exit(std::time::Duration::from_secs(20)), "our server kept running");
    let log = server.full_log().join("\n");
    assert!(log.contains("taking over a member run with --wal-dir is not supported yet"), "{log}");
    assert_eq!(common::sorted_files(&server.data_dir), files_before, "the data dir changed");
    assert_eq!(common::sorted_files(&wal_dir), wal_before, "the WAL dir changed");
    server.flavor = Flavor::RealEtcd;
    server.restart();
    let value = must_etcdctl(&server.endpoint(), &["get", "k", "--print-value-only"], None);
    assert_eq!(value, "v\n", "real etcd still runs on its files");
}
