//! Leases with the real `etcdctl` and the `etcd-client` crate: grant, attach,
//! keep-alive, time-to-live, revoke, expiry with a watcher seeing the DELETE, the
//! lock and election recipes built on them, and leases surviving a restart.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{etcdctl_path, must_etcdctl, Server};
use etcd_client::{EventType, LeaseTimeToLiveOptions, PutOptions};

fn lease_id_of(grant_output: &str) -> String {
    // "lease 694da20e64142f00 granted with TTL(60s)"
    grant_output.split_whitespace().nth(1).expect("lease id in grant output").to_string()
}

#[test]
fn etcdctl_lease_commands_behave_as_etcds() {
    let server = Server::start();
    let ep = server.endpoint();
    let granted = must_etcdctl(&ep, &["lease", "grant", "100"], None);
    assert!(granted.ends_with("granted with TTL(100s)\n"), "{granted}");
    let id = lease_id_of(&granted);
    must_etcdctl(&ep, &["put", "--lease", &id, "a", "1"], None);
    must_etcdctl(&ep, &["put", "--lease", &id, "b", "2"], None);
    let ttl = must_etcdctl(&ep, &["lease", "timetolive", &id, "--keys"], None);
    assert!(ttl.contains(&format!("lease {id} granted with TTL(100s), remaining(")), "{ttl}");
    assert!(ttl.contains("attached keys([a b])"), "{ttl}");
    let kept = must_etcdctl(&ep, &["lease", "keep-alive", "--once", &id], None);
    assert_eq!(kept, format!("lease {id} keepalived with TTL(100)\n"));
    let list = must_etcdctl(&ep, &["lease", "list"], None);
    assert_eq!(list, format!("found 1 leases\n{id}\n"));
    // Overwriting a key without a lease detaches it from the lease.
    must_etcdctl(&ep, &["put", "b", "plain"], None);
    let ttl = must_etcdctl(&ep, &["lease", "timetolive", &id, "--keys"], None);
    assert!(ttl.contains("attached keys([a])"), "{ttl}");
    assert_eq!(must_etcdctl(&ep, &["lease", "revoke", &id], None), format!("lease {id} revoked\n"));
    assert_eq!(must_etcdctl(&ep, &["get", "a"], None), "", "revoke deletes attached keys");
    assert_eq!(must_etcdctl(&ep, &["get", "b", "--print-value-only"], None), "plain\n");
    let gone = must_etcdctl(&ep, &["lease", "timetolive", &id], None);
    assert_eq!(gone, format!("lease {id} already expired\n"));
}

#[tokio::test]
async fn an_expired_lease_deletes_its_key_and_watchers_see_the_delete() {
    let server = Server::start();
    let mut c = server.client().await;
    let lease = c.lease_grant(5, None).await.expect("grant");
    assert_eq!(lease.ttl(), 5);
    c.put("ephemeral", "v", Some(PutOptions::new().with_lease(lease.id()))).await.expect("put");
    let mut watch = c.watch("ephemeral", None).await.expect("watch");
    watch.message().await.expect("recv").expect("created");
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(15), watch.message())
        .await
        .expect("the lease expired in time")
        .expect("recv")
        .expect("event");
    let waited = started.elapsed();
    assert_eq!(resp.events()[0].event_type(), EventType::Delete);
    assert!(waited >= Duration::from_secs(4), "deleted before its TTL: {waited:?}");
    assert!(c.get("ephemeral", None).await.expect("get").kvs().is_empty());
    let ttl = c.lease_time_to_live(lease.id(), None).await.expect("ttl");
    assert_eq!(ttl.ttl(), -1, "an expired lease is gone");
}

#[tokio::test]
async fn keep_alive_holds_a_lease_past_its_ttl_and_grant_errors_match_etcd() {
    let server = Server::start();
    let mut c = server.client().await;
    let lease = c.lease_grant(2, None).await.expect("grant");
    c.put("held", "v", Some(PutOptions::new().with_lease(lease.id()))).await.expect("put");
    let (mut keeper, mut responses) = c.lease_keep_alive(lease.id()).await.expect("keepalive");
    for _ in 0..8 {
        keeper.keep_alive().await.expect("send");
        let r = responses.message().await.expect("recv").expect("response");
        assert_eq!(r.ttl(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(c.get("held", None).await.expect("get").kvs().len(), 1, "kept alive for 4 s");
    let dup =
        c.lease_grant(10, Some(etcd_client::LeaseGrantOptions::new().with_id(lease.id()))).await;
    match dup.expect_err("duplicate id") {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(
                (s.code(), s.message()),
                (tonic::Code::FailedPrecondition, "etcdserver: lease already exists")
            )
        }
        other => panic!("{other:?}"),
    }
    let small = c.lease_grant(1, None).await.expect("grant");
    assert_eq!(small.ttl(), 2, "TTLs below the minimum are raised to it");
    let unknown =
        c.lease_time_to_live(0x1234, Some(LeaseTimeToLiveOptions::new().with_keys())).await;
    assert_eq!(unknown.expect("ttl").ttl(), -1);
}

#[tokio::test]
async fn leases_and_attachments_survive_a_restart() {
    let mut server = Server::start();
    let mut c = server.client().await;
    let lease = c.lease_grant(30, None).await.expect("grant");
    c.put("k", "v", Some(PutOptions::new().with_lease(lease.id()))).await.expect("put");
    server.kill9();
    server.restart();
    let mut c = server.client().await;
    let ttl = c
        .lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    assert_eq!(ttl.granted_ttl(), 30);
    assert!(ttl.ttl() > 20, "TTL refreshed after restart, not expired: {}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"k".to_vec()]);
    c.lease_revoke(lease.id()).await.expect("revoke");
    assert!(c.get("k", None).await.expect("get").kvs().is_empty());
}

/// Runs `etcdctl lock mylock -- sh -c <script>` in the background.
fn locked(endpoint: &str, script: &str) -> std::process::Child {
    Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["lock", "mylock", "--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcdctl lock")
}

#[test]
fn two_etcdctl_lock_holders_exclude_each_other() {
    let server = Server::start();
    let ep = server.endpoint();
    let temp = tempfile::tempdir().expect("tempdir");
    let log = temp.path().join("log");
    let log = log.display();
    let mut first =
        locked(&ep, &format!("echo first-in >> {log}; sleep 2; echo first-out >> {log}"));
    std::thread::sleep(Duration::from_millis(700));
    let mut second = locked(&ep, &format!("echo second-in >> {log}"));
    assert!(first.wait().expect("first").success());
    assert!(second.wait().expect("second").success());
    let order = std::fs::read_to_string(temp.path().join("log")).expect("log");
    assert_eq!(order, "first-in\nfirst-out\nsecond-in\n");
}

#[test]
fn etcdctl_elect_hands_leadership_over_when_the_leader_exits() {
    let server = Server::start();
    let ep = server.endpoint();
    let campaign = |name: &str| {
        Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={ep}"))
            .args(["elect", "myelection", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl elect")
    };
    let mut alice = campaign("alice");
    std::thread::sleep(Duration::from_millis(700));
    let bob = campaign("bob");
    std::thread::sleep(Duration::from_millis(700));
    let candidates = || {
        must_etcdctl(
            &ep,
            &["get", "myelection/", "--prefix", "--sort-by=create", "--print-value-only"],
            None,
        )
    };
    assert_eq!(candidates(), "alice\nbob\n", "alice leads, bob waits");
    let _ = Command::new("kill").arg("-INT").arg(alice.id().to_string()).status();
    let _ = alice.wait();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(candidates(), "bob\n", "alice resigned on exit");
    let _ = Command::new("kill").arg("-INT").arg(bob.id().to_string()).status();
    let out = bob.wait_with_output().expect("bob output");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("bob"), "bob became leader after alice left: {printed:?}");
}
