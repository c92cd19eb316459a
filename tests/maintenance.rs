//! Maintenance operations an operator runs against a live member: `etcdctl
//! defrag` shrinks the backend after compaction without changing what it holds,
//! writes go on around it, and the defragmented backend survives kill -9.

mod common;

use common::{must_etcdctl, Server};
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
