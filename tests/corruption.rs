//! Corruption checks between members, as etcd's: a member whose backend was
//! changed behind Raft's back is refused at start by
//! `--experimental-initial-corrupt-check`, and caught by the leader's periodic
//! `--experimental-corrupt-check-time`, which raises the CORRUPT alarm so
//! every write is refused while reads go on. (etcd's own e2e test does the same
//! to a bbolt file; this server's backend is redb.)

mod common;

use std::time::Duration;

use common::{etcdctl, must_etcdctl, Cluster};
use etcd_storage::{Backend, ReadTables};
use prost::Message;

/// Rewrites the value of `key`'s newest row in a stopped member's backend,
/// keeping its revision: the member's hash changes, nothing else does.
fn corrupt_value(data_dir: &std::path::Path, key: &[u8], value: &[u8]) {
    let backend = Backend::open(&data_dir.join("member/snap/db")).expect("open the backend");
    let mut newest = None;
    let read = backend.begin_read().expect("read");
    read.key_scan(&[], None, &mut |rev, row| {
        let kv = etcd_proto::mvccpb::KeyValue::decode(row).expect("a key row");
        if kv.key == key {
            newest = Some((rev.to_vec(), kv));
        }
        true
    })
    .expect("scan");
    drop(read);
    let (rev, mut kv) = newest.expect("the key is in the backend");
    kv.value = value.to_vec();
    let write = backend.begin_write().expect("write");
    write.key_put(&rev, &kv.encode_to_vec()).expect("put");
    write.commit(true).expect("commit");
}

fn alarms(endpoint: &str) -> String {
    must_etcdctl(endpoint, &["alarm", "list"], None)
}

#[test]
fn a_member_whose_data_diverged_is_refused_at_start_and_raises_corrupt_at_runtime() {
    let mut cluster = Cluster::start(
        3,
        &["--experimental-initial-corrupt-check", "--experimental-corrupt-check-time=1s"],
    );
    let ids = cluster.member_ids();
    let via = cluster.members[0].endpoint();
    for i in 0..10 {
        must_etcdctl(&via, &["put", &format!("k{i}"), "v"], None);
    }
    must_etcdctl(&via, &["put", "foo", "bar"], None);
    // Every member applied everything: the leader's checks pass meanwhile.
    cluster.wait_for_equal_raft_indexes();
    std::thread::sleep(Duration::from_secs(2)); // two periodic checks over healthy data
    assert_eq!(alarms(&via), "", "healthy members raise no alarm");

    // Member 2's copy of foo changes behind Raft's back.
    let victim = 2;
    cluster.members[victim].kill9();
    corrupt_value(&cluster.members[victim].data_dir, b"foo", b"baz");

    // The initial check refuses to start it, naming it.
    cluster.members[victim].spawn();
    assert!(cluster.members[victim].wait_exit(Duration::from_secs(30)), "it must not start");
    let log = cluster.members[victim].full_log().join("\n");
    let expected = format!("{:x} found data inconsistency with peers", ids[victim]);
    assert!(log.contains(&expected), "{log}");
    assert!(log.contains("found different hash values from remote peer"), "{log}");

    // Started without it, the leader's periodic check finds it and raises CORRUPT.
    cluster.members[victim].extra_args.retain(|a| a != "--experimental-initial-corrupt-check");
    cluster.members[victim].restart();
    let mut listed = String::new();
    for _ in 0..300 {
        listed = alarms(&via);
        if listed.contains("CORRUPT") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(listed.contains("alarm:CORRUPT"), "no CORRUPT alarm: {listed:?}");

    // Every write is refused with etcd's error on every member; reads go on.
    for member in &cluster.members {
        let out = etcdctl(&member.endpoint(), &["put", "after", "1"], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("etcdserver: corrupt cluster"), "{stderr}");
    }
    let got = must_etcdctl(&via, &["get", "k1", "--print-value-only"], None);
    assert_eq!(got.trim(), "v");
}
