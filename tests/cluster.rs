//! Three real server processes on loopback: one leader, replication, reads from
//! every member, leader failure under load, a partitioned minority, and
//! move-leader. Nothing acknowledged may be lost.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{etcdctl, must_etcdctl, Cluster};
use etcd_client::GetOptions;

const ELECTION_WAIT: Duration = Duration::from_secs(10);

/// Waits until `client`'s member holds `key` in its own store.
async fn wait_for_local_key(client: &mut etcd_client::Client, key: &str) {
    for _ in 0..150 {
        let got = client.get(key, Some(GetOptions::new().with_serializable())).await;
        if got.is_ok_and(|r| r.kvs().len() == 1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the member never caught up to {key}");
}

#[test]
fn one_leader_and_writes_through_any_member_are_readable_from_every_member() {
    let cluster = Cluster::start(3, &[]);
    let table = must_etcdctl(&cluster.endpoints(), &["endpoint", "status", "-w", "table"], None);
    let leaders =
        table.lines().filter(|l| l.split('|').nth(5).map(str::trim) == Some("true")).count();
    assert_eq!(leaders, 1, "{table}");
    for (i, member) in cluster.members.iter().enumerate() {
        must_etcdctl(&member.endpoint(), &["put", &format!("via{i}"), &format!("{i}")], None);
    }
    for member in &cluster.members {
        for i in 0..3 {
            let got = must_etcdctl(
                &member.endpoint(),
                &["get", &format!("via{i}"), "--print-value-only"],
                None,
            );
            assert_eq!(got, format!("{i}\n"), "linearizable read on {}", member.name);
        }
    }
    let ids = cluster.member_ids();
    let updated = must_etcdctl(
        &cluster.endpoints(),
        &[
            "member",
            "update",
            &format!("{:x}", ids[0]),
            &format!("--peer-urls={}", cluster.members[0].peer_url()),
        ],
        None,
    );
    // etcdctl pads IDs to 16 columns here (Go's %16x).
    assert!(updated.contains(&format!("Member {:16x} updated", ids[0])), "{updated}");
    let missing = common::etcdctl(
        &cluster.endpoints(),
        &["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
        None,
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("etcdserver: member not found"));
    let members = must_etcdctl(&cluster.endpoints(), &["member", "list"], None);
    for member in &cluster.members {
        let row = format!(
            "started, {}, {}, http://{}, false",
            member.name,
            member.peer_url(),
            member.endpoint()
        );
        assert!(members.contains(&row), "{members}");
    }
}

/// Acknowledged writes: key -> revision.
type Acked = Arc<Mutex<BTreeMap<String, i64>>>;

async fn writer(
    endpoints: Vec<String>,
    id: usize,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // A fresh connection per attempt after a failure: the member it used may be dead.
        let endpoint = endpoints[(id + n) % endpoints.len()].clone();
        let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else {
            n += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let key = format!("w{id}/{n:06}");
            n += 1;
            let put =
                tokio::time::timeout(Duration::from_secs(3), client.put(key.clone(), "v", None))
                    .await;
            match put {
                Ok(Ok(resp)) => {
                    acked
                        .lock()
                        .expect("lock")
                        .insert(key, resp.header().expect("header").revision());
                }
                _ => break,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_under_load_loses_nothing_and_members_converge() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|i| tokio::spawn(writer(endpoints.clone(), i, acked.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.members[leader].kill9();
    let before = acked.lock().expect("lock").len();
    let new_leader =
        tokio::task::block_in_place(|| cluster.leader(ELECTION_WAIT)).expect("a new leader");
    assert_ne!(new_leader, leader);
    // Proposals that a follower had forwarded to the dead leader are lost and time
    // out (as with etcd), so a writer may stall for its client timeout first.
    let mut after = before;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = acked.lock().expect("lock").len();
        if after > before + 16 {
            break;
        }
    }
    assert!(after > before + 16, "writes resumed after the new election ({before} -> {after})");
    tokio::task::block_in_place(|| cluster.members[leader].restart());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 100, "the writers made progress: {}", acked.len());
    // Every member holds every acknowledged write at its revision, and the same hash.
    let mut hashes = Vec::new();
    let mut revision = 0;
    for member in &cluster.members {
        let mut client = member.client().await;
        // A linearizable read first: the member has applied everything committed.
        revision =
            client.get("probe", None).await.expect("get").header().expect("header").revision();
        let all = client
            .get("w", Some(GetOptions::new().with_prefix().with_serializable()))
            .await
            .expect("get");
        let stored: BTreeMap<String, i64> = all
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().expect("utf8").to_string(), kv.mod_revision()))
            .collect();
        for (key, rev) in &acked {
            assert_eq!(stored.get(key), Some(rev), "{key} on {} lost or changed", member.name);
        }
        let hash = client.maintenance_client().hash_kv(revision).await.expect("hashkv");
        hashes.push(hash.hash());
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV differs at revision {revision}: {hashes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_cannot_commit_or_read_stale_and_catches_up_after_healing() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
    let ids = tokio::task::block_in_place(|| cluster.member_ids());
    let isolated = (leader + 1) % 3;
    let mut via_isolated = cluster.members[isolated].client().await;
    via_isolated.put("k", "before", None).await.expect("put before the partition");
    cluster.isolate(isolated, &ids);
    let mut majority = cluster.members[leader].client().await;
    for i in 0..50 {
        majority.put("k", format!("during{i}"), None).await.expect("the majority commits");
    }
    let write =
        tokio::time::timeout(Duration::from_secs(12), via_isolated.put("x", "minority", None))
            .await;
    assert!(!matches!(write, Ok(Ok(_))), "the isolated member committed a write");
    let read = tokio::time::timeout(Duration::from_secs(12), via_isolated.get("k", None)).await;
    assert!(!matches!(read, Ok(Ok(_))), "the isolated member served a linearizable read");
    cluster.heal();
    let mut caught_up = false;
    for _ in 0..100 {
        let got = via_isolated.get("k", Some(GetOptions::new().with_serializable())).await;
        if got.is_ok_and(|r| {
            r.kvs().first().map(|kv| kv.value().to_vec()) == Some(b"during49".to_vec())
        }) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "the healed member caught up");
    let linearizable = via_isolated.get("k", None).await.expect("linearizable read after healing");
    assert_eq!(linearizable.kvs()[0].value(), b"during49");
}

#[test]
fn etcdctl_move_leader_transfers_leadership() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
    let ids = cluster.member_ids();
    let target = (leader + 1) % 3;
    let out =
        must_etcdctl(&cluster.endpoints(), &["move-leader", &format!("{:x}", ids[target])], None);
    assert!(
        out.contains(&format!(
            "Leadership transferred from {:x} to {:x}",
            ids[leader], ids[target]
        )),
        "{out}"
    );
    assert_eq!(cluster.leader(ELECTION_WAIT), Some(target));
}

#[test]
fn a_learner_joins_catches_up_is_promoted_and_another_member_is_removed() {
    let mut cluster = Cluster::start(3, &[]);
    let endpoints = cluster.endpoints();
    for i in 0..20 {
        must_etcdctl(&endpoints, &["put", &format!("k{i}"), &format!("{i}")], None);
    }
    let (joiner, new_id) = cluster.join(&endpoints, "m3", true);
    must_etcdctl(&endpoints, &["put", "after-join", "1"], None);
    let mut caught_up = false;
    for _ in 0..100 {
        let got = common::etcdctl(
            &joiner.endpoint(),
            &["get", "after-join", "--consistency=s", "--print-value-only"],
            None,
        );
        if String::from_utf8_lossy(&got.stdout) == "1\n" {
            caught_up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(caught_up, "the learner received the log");
    let refused = common::etcdctl(&joiner.endpoint(), &["put", "via-learner", "1"], None);
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("etcdserver: rpc not supported for learner"),
        "a learner refuses writes as etcd does"
    );
    // etcd serves only Status and serializable Range on a learner.
    for refused in [&["member", "list"][..], &["lease", "grant", "60"], &["get", "k7"]] {
        let out = common::etcdctl(&joiner.endpoint(), refused, None);
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("etcdserver: rpc not supported for learner"),
            "a learner served {refused:?}"
        );
    }
    must_etcdctl(&joiner.endpoint(), &["endpoint", "status"], None);
    let readyz = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", &format!("http://{}/readyz", joiner.endpoint())])
        .output()
        .expect("curl");
    let readyz = String::from_utf8_lossy(&readyz.stdout);
    assert!(readyz.contains("[-]non_learner failed") && readyz.ends_with("503"), "{readyz}");
    assert_eq!(
        must_etcdctl(
            &joiner.endpoint(),
            &["get", "k7", "--consistency=s", "--print-value-only"],
            None
        ),
        "7\n"
    );
    let members = must_etcdctl(&endpoints, &["member", "list"], None);
    assert!(
        members.contains(&format!(
            "{new_id}, started, m3, {}, http://{}, true",
            joiner.peer_url(),
            joiner.endpoint()
        )),
        "{members}"
    );

    let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
    let leader_endpoint = cluster.members[leader].endpoint();
    // A learner may briefly lag the leader's commit index: etcd refuses to promote
    // it until it is in sync, so retry for a while.
    let mut promoted = String::new();
    for _ in 0..50 {
        let out = common::etcdctl(&leader_endpoint, &["member", "promote", &new_id], None);
        promoted = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            break;
        }
        assert!(promoted.contains("in sync with leader"), "promote failed: {promoted}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(promoted.contains(&format!("Member {new_id:>16} promoted")), "{promoted}");
    let again = common::etcdctl(&leader_endpoint, &["member", "promote", &new_id], None);
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("etcdserver: can only promote a learner member"));

    let ids = cluster.member_ids();
    let victim = (leader + 1) % 3;
    let removed =
        must_etcdctl(&leader_endpoint, &["member", "remove", &format!("{:x}", ids[victim])], None);
    assert!(removed.contains("removed from cluster"), "{removed}");
    let mut survivors: Vec<String> =
        (0..3).filter(|&i| i != victim).map(|i| cluster.members[i].endpoint()).collect();
    survivors.push(joiner.endpoint());
    must_etcdctl(&survivors.join(","), &["put", "after-remove", "1"], None);
    for endpoint in &survivors {
        assert_eq!(
            must_etcdctl(endpoint, &["get", "after-remove", "--print-value-only"], None),
            "1\n"
        );
    }
    let members = must_etcdctl(&survivors.join(","), &["member", "list"], None);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!(!members.contains(&format!("{:x}", ids[victim])), "{members}");
    // The removed member stops on its own.
    let mut stopped = false;
    for _ in 0..50 {
        if !common::etcdctl(
            &cluster.members[victim].endpoint(),
            &["endpoint", "health", "--command-timeout=1s"],
            None,
        )
        .status
        .success()
        {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stopped, "the removed member kept serving");
    cluster.members[victim].kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_fell_behind_the_log_catches_up_by_snapshot() {
    let mut cluster =
        Cluster::start(3, &["--snapshot-count=50", "--experimental-snapshot-catchup-entries=10"]);
    let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
    let ids = tokio::task::block_in_place(|| cluster.member_ids());
    let lagging = (leader + 1) % 3;
    cluster.isolate(lagging, &ids);
    let mut majority = cluster.members[leader].client().await;
    // Large enough values that the backend travels in several chunks.
    let value = "v".repeat(16 * 1024);
    for i in 0..300 {
        majority.put(format!("k{i:03}"), value.clone(), None).await.expect("put");
    }
    majority.delete("k000", None).await.expect("delete");
    cluster.heal();
    let mut lagging_client = cluster.members[lagging].client().await;
    wait_for_local_key(&mut lagging_client, "k299").await;
    // After a linearizable read every member is at the same revision: same data, same hash.
    let mut hashes = Vec::new();
    for member in &cluster.members {
        let mut client = member.client().await;
        let revision =
            client.get("k001", None).await.expect("get").header().expect("header").revision();
        let count = client
            .get("k", Some(GetOptions::new().with_prefix().with_count_only().with_serializable()))
            .await
            .expect("count");
        assert_eq!(count.count(), 299, "{} holds every key", member.name);
        // HashKV covers the key space; Hash the whole backend as etcd lays it
        // out (members, leases, auth, compaction marks), which the snapshot
        // carried as well. Nothing writes meanwhile, so both are stable.
        let whole = client.maintenance_client().hash().await.expect("hash");
        assert_eq!(whole.header().expect("header").revision(), revision);
        hashes.push((
            revision,
            client.maintenance_client().hash_kv(revision).await.expect("hashkv").hash(),
            whole.hash(),
        ));
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "members differ: {hashes:?}");
    let before = hashes[0].2;
    let mut client = cluster.members[leader].client().await;
    client.put("k000", "again", None).await.expect("put");
    let after = client.maintenance_client().hash().await.expect("hash").hash();
    assert_ne!(before, after, "a write changes the backend's hash");
    let log = cluster.members[lagging].full_log().join("\n");
    assert!(log.contains("installed a snapshot from the leader"), "caught up without a snapshot");
    // The installed state survives a crash of the member that received it.
    tokio::task::block_in_place(|| {
        cluster.members[lagging].kill9();
        cluster.members[lagging].restart();
    });
    let mut client = cluster.members[lagging].client().await;
    client.put("after-restart", "1", None).await.expect("put through the restarted member");
    let count = client
        .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .expect("count");
    assert_eq!(count.count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_a_member_add_learns_the_new_peer_from_the_snapshot() {
    let mut cluster =
        Cluster::start(3, &["--snapshot-count=50", "--experimental-snapshot-catchup-entries=10"]);
    let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
    let ids = tokio::task::block_in_place(|| cluster.member_ids());
    let lagging = (leader + 1) % 3;
    cluster.isolate(lagging, &ids);
    // A fourth voter joins while `lagging` is cut off, then the log moves on
    // past what the leader keeps: `lagging` hears of the new member only
    // through the snapshot.
    let leader_endpoint = cluster.members[leader].endpoint();
    let (joiner, _) = tokio::task::block_in_place(|| cluster.join(&leader_endpoint, "m3", false));
    let mut majority = cluster.members[leader].client().await;
    for i in 0..100 {
        majority.put(format!("k{i:03}"), "v", None).await.expect("put");
    }
    cluster.heal();
    let mut lagging_client = cluster.members[lagging].client().await;
    wait_for_local_key(&mut lagging_client, "k099").await;
    let log = cluster.members[lagging].full_log().join("\n");
    assert!(log.contains("installed a snapshot from the leader"), "caught up without a snapshot");

    // As leader, the member that caught up must reach the new one: the new
    // member's linearizable reads go through it.
    tokio::task::block_in_place(|| {
        must_etcdctl(
            &cluster.members[leader].endpoint(),
            &["move-leader", &format!("{:x}", ids[lagging])],
            None,
        );
        assert_eq!(cluster.leader(ELECTION_WAIT), Some(lagging));
    });
    lagging_client.put("under-new-leader", "1", None).await.expect("put");
    let mut joiner_client = joiner.client().await;
    let got = joiner_client.get("under-new-leader", None).await.expect("linearizable read");
    assert_eq!(got.kvs().len(), 1);
    drop(joiner);
}

/// A member added after the leader restarted (its log now starts at its last
/// snapshot) must catch up through a snapshot whose configuration includes it:
/// the configuration recorded with that older snapshot did not, and raft refuses
/// a snapshot that leaves the receiver out (found by etcd's TestIssue6361).
#[test]
fn a_member_added_after_a_restart_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::start(1, &["--snapshot-count=20"]);
    let ep = cluster.members[0].endpoint();
    for i in 0..60 {
        must_etcdctl(&ep, &["put", &format!("r/{i}"), "v"], None);
    }
    cluster.members[0].terminate();
    cluster.members[0].restart();
    let (joiner, _) = cluster.join(&cluster.members[0].endpoint(), "late", false);
    let value = (0..100)
        .find_map(|_| {
            let out = etcdctl(
                &joiner.endpoint(),
                &["get", "r/59", "--print-value-only", "--consistency=s"],
                None,
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text == "v\n" {
                return Some(text);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            None
        })
        .expect("the new member catches up with the restarted leader");
    assert_eq!(value, "v\n");
}

/// The `members_removed` entries of an etcd snapshot file.
fn removed_in_snapshot(path: &std::path::Path) -> Vec<(String, String)> {
    use etcd_snapshot::export::BucketSink;
    struct Removed(bool, Vec<(String, String)>);
    impl BucketSink for Removed {
        fn bucket(&mut self, name: &str) -> Result<(), etcd_snapshot::SnapshotError> {
            self.0 = name == "members_removed";
            Ok(())
        }
        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), etcd_snapshot::SnapshotError> {
            if self.0 {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                self.1.push((text(key), text(value)));
            }
            Ok(())
        }
    }
    let file = etcd_snapshot::file::open_snapshot(path, false, &mut |_, _| {}).expect("snapshot");
    let reader = etcd_snapshot::file::bbolt_reader(&file).expect("bbolt");
    let mut removed = Removed(false, Vec::new());
    etcd_snapshot::file::walk(&reader, &mut removed).expect("walk");
    removed.1
}

/// A member removed while it was down stops when it comes back (its peers
/// refuse it as removed), its ID is refused by later membership changes, and
/// snapshots carry it in `members_removed`: on ours as on real etcd.
#[test]
fn a_member_removed_while_down_stops_when_it_comes_back() {
    for flavor in [common::Flavor::Ours, common::Flavor::RealEtcd] {
        if flavor == common::Flavor::RealEtcd && common::real_etcd().is_none() {
            eprintln!("real etcd is not installed: checking ours only");
            continue;
        }
        let mut cluster = Cluster::start_flavor(flavor, 3, &[]);
        let ids = cluster.member_ids();
        // A follower, so that no election runs while it is removed.
        let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
        let victim = (leader + 1) % 3;
        cluster.members[victim].kill9();
        let via = cluster.members[leader].endpoint();
        let victim_id = format!("{:x}", ids[victim]);
        let removed = must_etcdctl(&via, &["member", "remove", &victim_id], None);
        assert!(removed.contains("removed from cluster"), "{flavor:?}: {removed}");
        must_etcdctl(&via, &["put", "after-remove", "1"], None);
        let again = etcdctl(&via, &["member", "remove", &victim_id], None);
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("etcdserver: member not found"),
            "{flavor:?}: {again:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("s.db");
        must_etcdctl(&via, &["snapshot", "save", snapshot.to_str().unwrap()], None);
        assert_eq!(
            removed_in_snapshot(&snapshot),
            vec![(victim_id.clone(), "removed".to_owned())],
            "{flavor:?}"
        );

        cluster.members[victim].spawn();
        let exited = cluster.members[victim].wait_exit(Duration::from_secs(30));
        let log = cluster.members[victim].full_log().join("\n");
        assert!(exited, "{flavor:?}: the removed member kept running:\n{log}");
        assert!(
            log.contains("the member has been permanently removed from the cluster"),
            "{flavor:?}: {log}"
        );
        let members = must_etcdctl(&via, &["member", "list"], None);
        assert_eq!(members.lines().count(), 2, "{flavor:?}: {members}");
    }
}

/// A learner never campaigns, so one removed while it was down hears nothing
/// when it comes back: the leader no longer knows it. After a few seconds
/// without a leader it asks its peers (an empty batch each), they refuse it as
/// removed, and it stops with etcd's message (etcd's stream readers get a 410).
/// Found by the simulator (seed 51).
#[test]
fn a_learner_removed_while_down_stops_when_it_comes_back() {
    let cluster = Cluster::start(3, &[]);
    let endpoints = cluster.endpoints();
    let (mut learner, learner_id) = cluster.join(&endpoints, "m3", true);
    must_etcdctl(&endpoints, &["put", "after-join", "1"], None);
    let caught_up = (0..100).any(|_| {
        let got = common::etcdctl(
            &learner.endpoint(),
            &["get", "after-join", "--consistency=s", "--print-value-only"],
            None,
        );
        std::thread::sleep(Duration::from_millis(100));
        String::from_utf8_lossy(&got.stdout) == "1\n"
    });
    assert!(caught_up, "the learner received the log");
    learner.kill9();
    let removed = must_etcdctl(&endpoints, &["member", "remove", &learner_id], None);
    assert!(removed.contains("removed from cluster"), "{removed}");
    learner.spawn();
    let exited = learner.wait_exit(Duration::from_secs(30));
    let log = learner.full_log().join("\n");
    assert!(exited, "the removed learner kept running:\n{log}");
    assert!(log.contains("the member has been permanently removed from the cluster"), "{log}");
}

/// The `Put` calls a member served, from its gRPC counters.
fn puts_served(member: &common::Server) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://{}/metrics", member.endpoint())])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| {
            l.starts_with("grpc_server_handled_total{")
                && l.contains("grpc_code=\"OK\"")
                && l.contains("grpc_method=\"Put\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn bench_targets_the_leader_or_a_follower_as_asked() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
    let bench = |target: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(["--endpoints", &cluster.endpoints(), target, "put", "--total", "20"])
            .output()
            .expect("bench runs");
        assert!(out.status.success(), "bench {target}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let served = || cluster.members.iter().map(puts_served).collect::<Vec<_>>();
    let before = served();
    bench("--target-leader");
    let after_leader = served();
    for (i, (b, a)) in before.iter().zip(&after_leader).enumerate() {
        assert_eq!(a - b, if i == leader { 20 } else { 0 }, "member {i} after --target-leader");
    }
    bench("--target-follower");
    let after_follower = served();
    let moved: Vec<u64> = after_leader.iter().zip(&after_follower).map(|(b, a)| a - b).collect();
    assert_eq!(moved[leader], 0, "the leader served none of --target-follower's puts");
    assert_eq!(moved.iter().sum::<u64>(), 20, "one follower served all 20: {moved:?}");
}
