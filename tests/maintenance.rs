//! Maintenance operations an operator runs against a live member: `etcdctl
//! defrag` shrinks the backend after compaction without changing what it holds,
//! writes go on around it, and the defragmented backend survives kill -9.
//! Compaction removes history in batches (`--experimental-compaction-batch-limit`)
//! counted as real etcd counts them.

mod common;

use common::{must_etcdctl, Flavor, Server};
use etcd_client::{Client, CompactionOptions, GetOptions};

async fn db_size(client: &mut Client) -> i64 {
    client.maintenance_client().status().await.expect("status").db_size()
}

/// Every key with its revisions, and the hash at the current revision.
async fn fingerprint(client: &mut Client) -> (Vec<(String, i64, i64, i64)>, u32) {
    let all =
        client.get("", Some(GetOptions::new().with_all_keys())).await.expect("range over all keys");
    let keys = all
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect();
    // Revision 0: the current one (right after a compaction it is the compacted one,
    // which etcd refuses to hash by number).
    let hash = client.maintenance_client().hash_kv(0).await.expect("hash").hash();
    (keys, hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defrag_shrinks_the_backend_after_compaction_and_keeps_every_key() {
    let mut server = Server::start();
    let mut client = server.client().await;
    let value = "v".repeat(64 * 1024);
    for i in 0..200 {
        client.put(format!("big/{i:03}"), value.clone(), None).await.expect("put");
    }
    for i in 0..10 {
        client.put(format!("keep/{i}"), format!("{i}"), None).await.expect("put");
    }
    let deleted = client
        .delete("big/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("delete");
    let revision = deleted.header().expect("header").revision();
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    let before_size = db_size(&mut client).await;
    let before = fingerprint(&mut client).await;

    let out = tokio::task::block_in_place(|| must_etcdctl(&server.endpoint(), &["defrag"], None));
    assert_eq!(out, format!("Finished defragmenting etcd member[{}]\n", server.endpoint()));

    let after_size = db_size(&mut client).await;
    assert!(after_size * 4 < before_size, "defrag left {after_size} bytes of {before_size}");
    assert_eq!(fingerprint(&mut client).await, before, "defrag changed the data");
    client.put("after-defrag", "1", None).await.expect("writes go on");
    let expected = fingerprint(&mut client).await;

    let log = server.full_log().join("\n");
    assert!(log.contains("finished defragmenting the backend"), "{log}");

    tokio::task::block_in_place(|| {
        server.kill9();
        server.restart();
    });
    let mut client = server.client().await;
    assert_eq!(fingerprint(&mut client).await, expected, "the defragmented backend lost data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_alarm_blocks_writes_until_space_is_freed_and_it_is_disarmed() {
    let mut server = Server::start();
    let mut client = server.client().await;
    let empty_size = db_size(&mut client).await;
    // Room for a few MiB more than an empty backend.
    let quota = format!("--quota-backend-bytes={}", empty_size + 4 * 1024 * 1024);
    server.extra_args.push(quota);
    tokio::task::block_in_place(|| {
        server.terminate();
        server.restart();
    });
    let mut client = server.client().await;
    let member_id =
        client.maintenance_client().status().await.expect("status").header().unwrap().member_id();
    let value = "v".repeat(64 * 1024);
    let mut written = 0;
    let full = loop {
        match client.put(format!("big/{written:04}"), value.clone(), None).await {
            Ok(_) => written += 1,
            Err(err) => break err,
        }
        assert!(written < 10_000, "the quota never filled");
    };
    assert!(written > 0, "nothing fit under the quota");
    assert!(full.to_string().contains("etcdserver: mvcc: database space exceeded"), "{full}");

    let alarm = format!("memberID:{member_id} alarm:NOSPACE \n");
    let endpoint = server.endpoint();
    let listed = tokio::task::block_in_place(|| must_etcdctl(&endpoint, &["alarm", "list"], None));
    assert_eq!(listed, alarm);
    let status = client.maintenance_client().status().await.expect("status");
    assert_eq!(status.errors(), [format!("memberID:{member_id} alarm:NOSPACE ")]);
    let health = |query: &str| {
        let url = format!("http://{endpoint}/health{query}");
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(health(""), "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n503");
    assert_eq!(health("?exclude=NOSPACE"), "{\"health\":\"true\",\"reason\":\"\"}\n200");
    // Reads, deletes and compaction still work; a small put does not.
    assert_eq!(client.get("big/0000", None).await.expect("get").kvs().len(), 1);
    let deleted = client
        .delete("big/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("delete under the alarm");
    let revision = deleted.header().expect("header").revision();
    client.compact(revision, None).await.expect("compact under the alarm");
    let lease = client.lease_grant(60, None).await.expect_err("lease grant under the alarm");
    assert!(lease.to_string().contains("database space exceeded"), "{lease}");

    // The alarm outlives a restart: every member keeps refusing until disarmed.
    tokio::task::block_in_place(|| {
        server.kill9();
        server.restart();
        must_etcdctl(&server.endpoint(), &["defrag"], None);
    });
    let mut client = server.client().await;
    let refused = client.put("small", "1", None).await.expect_err("the alarm is still active");
    assert!(refused.to_string().contains("database space exceeded"), "{refused}");

    let endpoint = server.endpoint();
    let disarmed =
        tokio::task::block_in_place(|| must_etcdctl(&endpoint, &["alarm", "disarm"], None));
    assert_eq!(disarmed, alarm);
    client.put("small", "1", None).await.expect("writes work once disarmed");
    let listed = tokio::task::block_in_place(|| must_etcdctl(&endpoint, &["alarm", "list"], None));
    assert_eq!(listed, "");
}

/// etcdctl 3.4 dials a single endpoint given as `http://host:port` with that
/// whole URL as the HTTP/2 `:authority` (what `defrag`, `endpoint status` and
/// `endpoint hashkv` do); Go's server ignores it, and so must ours.
#[test]
fn per_endpoint_commands_work_with_an_http_url_endpoint() {
    let server = Server::start();
    let url = format!("http://{}", server.endpoint());
    must_etcdctl(&url, &["put", "k", "v"], None);
    let defrag = must_etcdctl(&url, &["defrag"], None);
    assert_eq!(defrag, format!("Finished defragmenting etcd member[{url}]\n"));
    let status = must_etcdctl(&url, &["endpoint", "status"], None);
    assert!(status.starts_with(&format!("{url}, ")), "{status}");
    let hash = must_etcdctl(&url, &["endpoint", "hashkv"], None);
    assert!(hash.starts_with(&format!("{url}, ")), "{hash}");
    // The same connection keeps working for ordinary calls too.
    assert_eq!(must_etcdctl(&url, &["get", "k", "--print-value-only"], None), "v\n");
}

/// The quota counts the bytes in use, on every member: writes sent to a
/// follower of a 3-member cluster fill a small quota, the follower raises
/// NOSPACE for itself, and every member then refuses puts. A quota below a
/// fresh redb file's size (140 kB) still takes writes until the data fills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_fills_a_small_quota_by_bytes_in_use_and_every_member_refuses_puts() {
    let quota = "--quota-backend-bytes=131072"; // 32 pages of 4 KiB
    let cluster = tokio::task::block_in_place(|| common::Cluster::start(3, &[quota]));
    let leader = tokio::task::block_in_place(|| cluster.leader(std::time::Duration::from_secs(10)))
        .expect("a leader");
    let follower = (leader + 1) % 3;
    let mut client = cluster.members[follower].client().await;
    let follower_id =
        client.maintenance_client().status().await.expect("status").header().unwrap().member_id();
    let value = "v".repeat(4096);
    let mut written = 0;
    let full = loop {
        match client.put(format!("q/{written:04}"), value.clone(), None).await {
            Ok(_) => written += 1,
            Err(err) => break err,
        }
        assert!(written < 1_000, "the quota never filled");
    };
    assert!(written > 0, "a quota below the empty file's size refused the first write");
    assert!(full.to_string().contains("etcdserver: mvcc: database space exceeded"), "{full}");
    let via = cluster.members[leader].endpoint();
    let listed = tokio::task::block_in_place(|| must_etcdctl(&via, &["alarm", "list"], None));
    assert_eq!(listed, format!("memberID:{follower_id} alarm:NOSPACE \n"));
    let refused = tokio::task::block_in_place(|| common::etcdctl(&via, &["put", "k", "v"], None));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("etcdserver: mvcc: database space exceeded"), "{stderr}");
}

/// The value of the sample `name` in the member's /metrics.
fn metric(endpoint: &str, name: &str) -> Option<f64> {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://{endpoint}/metrics")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_removes_history_in_batches_of_the_limit_as_etcd_does() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            continue;
        }
        let mut server = tokio::task::block_in_place(|| {
            Server::start_with(flavor, &["--experimental-compaction-batch-limit=10"])
        });
        let mut client = server.client().await;
        // 1,000 revisions of one key (2..=1001); a compaction at the last keeps one.
        let mut revision = 0;
        for i in 0..1000 {
            let put = client.put("k", format!("{i}"), None).await.expect("put");
            revision = put.header().expect("header").revision();
        }
        client.put("after", "1", None).await.expect("put");
        client
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .expect("compact");
        let ep = server.endpoint();
        let keys = "etcd_debugging_mvcc_db_compaction_keys_total";
        let pauses = "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds_count";
        let total = "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds_count";
        let (keys, pauses, total) = tokio::task::block_in_place(|| {
            (metric(&ep, keys), metric(&ep, pauses), metric(&ep, total))
        });
        assert_eq!(keys, Some(999.0), "{flavor:?}: revisions removed");
        // 1,000 rows at 10 a batch: 100 full batches pause, the 101st finds none.
        assert_eq!(pauses, Some(100.0), "{flavor:?}: batches before the last");
        assert_eq!(total, Some(1.0), "{flavor:?}: compactions finished");
        let before = fingerprint(&mut client).await;
        let old = client.get("k", Some(GetOptions::new().with_revision(revision - 1))).await;
        assert!(old.is_err(), "{flavor:?}: a compacted revision was read");
        tokio::task::block_in_place(|| {
            server.kill9();
            server.restart();
        });
        let mut client = server.client().await;
        assert_eq!(fingerprint(&mut client).await, before, "{flavor:?}: after a restart");
    }
}

/// On 3 members, a compaction asked of a follower: every member removes the
/// same history in batches of the limit, and the follower answers a physical
/// compaction only once its own rows are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_of_a_cluster_compacts_in_batches() {
    let cluster = tokio::task::block_in_place(|| {
        common::Cluster::start(3, &["--experimental-compaction-batch-limit=10"])
    });
    let leader = tokio::task::block_in_place(|| cluster.leader(std::time::Duration::from_secs(10)))
        .expect("a leader");
    let follower = &cluster.members[(leader + 1) % 3];
    let mut client = follower.client().await;
    // 100 revisions of one key; a compaction at the last keeps one.
    let mut revision = 0;
    for i in 0..100 {
        let put = client.put("k", format!("{i}"), None).await.expect("put");
        revision = put.header().expect("header").revision();
    }
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    let keys = "etcd_debugging_mvcc_db_compaction_keys_total";
    let pauses = "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds_count";
    let ep = follower.endpoint();
    let counted = tokio::task::block_in_place(|| (metric(&ep, keys), metric(&ep, pauses)));
    assert_eq!(counted, (Some(99.0), Some(10.0)), "the follower, when it answered");
    for member in &cluster.members {
        let ep = member.endpoint();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut counted = (None, None);
        while std::time::Instant::now() < deadline {
            counted = tokio::task::block_in_place(|| (metric(&ep, keys), metric(&ep, pauses)));
            if counted == (Some(99.0), Some(10.0)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(counted, (Some(99.0), Some(10.0)), "member {ep}: 99 revisions in 10+1 batches");
        let mut m = member.client().await;
        let old = GetOptions::new().with_revision(revision - 1).with_serializable();
        assert!(m.get("k", Some(old)).await.is_err(), "member {ep} read a compacted revision");
    }
}
