//! The Lock service (`v3lockpb.Lock`, what clientv3's `Lock` RPC and the
//! `etcd-client` crate's `lock` call): mutual exclusion in creation order,
//! release by unlock or by the owner's lease ending, no leftovers from callers
//! that gave up.

mod common;

use std::time::Duration;

use common::Server;
use etcd_client::{GetOptions, LockOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holders_exclude_each_other_in_creation_order() {
    let server = Server::start();
    let mut c = server.client().await;
    let a = c.lease_grant(60, None).await.expect("lease").id();
    let b = c.lease_grant(60, None).await.expect("lease").id();
    let held = c.lock("m", Some(LockOptions::new().with_lease(a))).await.expect("lock");
    assert_eq!(held.key(), format!("m/{a:x}").as_bytes());

    let mut waiter_client = c.clone();
    let waiter = tokio::spawn(async move {
        waiter_client.lock("m", Some(LockOptions::new().with_lease(b))).await.expect("lock")
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "a second holder got the lock while the first held it");
    c.unlock(held.key()).await.expect("unlock");
    let second = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter acquires after the unlock")
        .expect("task");
    assert_eq!(second.key(), format!("m/{b:x}").as_bytes());

    // The owner's lease ending releases the lock too.
    let mut waiter_client = c.clone();
    let waiter = tokio::spawn(async move {
        waiter_client.lock("m", Some(LockOptions::new().with_lease(a))).await.expect("lock")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    c.lease_revoke(b).await.expect("revoke");
    let third = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter acquires after the owner's lease ends")
        .expect("task");
    assert_eq!(third.key(), format!("m/{a:x}").as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_without_a_lease_gets_one_and_an_abandoned_wait_leaves_no_key() {
    let server = Server::start();
    let mut c = server.client().await;
    let held = c.lock("solo", None).await.expect("lock");
    let owner = c.get(held.key(), None).await.expect("get");
    let lease = owner.kvs()[0].lease();
    assert_ne!(lease, 0, "the owner key is attached to a lease");
    let ttl = c.lease_time_to_live(lease, None).await.expect("ttl");
    assert_eq!(ttl.granted_ttl(), 60, "etcd's default session TTL");

    // A caller that gives up while waiting does not leave its key behind.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), c.lock("solo", None)).await;
    assert!(gave_up.is_err(), "the lock was still held");
    let mut keys = 0;
    for _ in 0..50 {
        let listed = c
            .get("solo/", Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .expect("count");
        keys = listed.count();
        if keys == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(keys, 1, "only the holder's key is left");
    c.unlock(held.key()).await.expect("unlock");
    let again = c.lock("solo", None).await.expect("the lock is free again");
    assert!(again.key().starts_with(b"solo/"));
}

/// As etcd 3.5 (3.4 answered success with the key gone): a waiter whose lease
/// ended while it waited gets "mutex: session is expired" once its turn comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_lease_ended_gets_session_expired() {
    let server = Server::start();
    let mut c = server.client().await;
    let a = c.lease_grant(60, None).await.expect("lease").id();
    let b = c.lease_grant(60, None).await.expect("lease").id();
    let held = c.lock("s", Some(LockOptions::new().with_lease(a))).await.expect("lock");
    let mut waiter_client = c.clone();
    let waiter = tokio::spawn(async move {
        waiter_client.lock("s", Some(LockOptions::new().with_lease(b))).await
    });
    loop {
        let queued = c
            .get("s/", Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .expect("count");
        if queued.count() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    c.lease_revoke(b).await.expect("revoke");
    c.unlock(held.key()).await.expect("unlock");
    let err = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter answers after the unlock")
        .expect("task")
        .expect_err("its key is gone");
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            assert_eq!(status.code(), tonic::Code::Unknown);
            assert_eq!(status.message(), "mutex: session is expired");
        }
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}
