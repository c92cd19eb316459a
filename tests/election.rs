//! The Election service (`v3electionpb.Election`) through the `etcd-client`
//! crate: one leader at a time in campaign order, proclamations, observers that
//! follow the leader and its value, and resignation handing leadership over.

mod common;

use std::time::Duration;

use common::Server;
use etcd_client::{ProclaimOptions, ResignOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_lead_in_turn_and_observers_follow() {
    let server = Server::start();
    let mut c = server.client().await;
    let none = c.leader("svc").await.expect_err("no leader yet");
    assert!(none.to_string().contains("election: no leader"), "{none}");

    let mut observer = c.observe("svc").await.expect("observe");
    let a = c.lease_grant(60, None).await.expect("lease").id();
    let b = c.lease_grant(60, None).await.expect("lease").id();
    let first = c.campaign("svc", "a", a).await.expect("campaign");
    let leader_a = first.leader().expect("leader key").clone();
    assert_eq!(leader_a.key(), format!("svc/{a:x}").as_bytes());
    let seen = observer.message().await.expect("observe").expect("leader");
    assert_eq!(seen.kv().expect("kv").value(), b"a");

    let mut second_client = c.clone();
    let second = tokio::spawn(async move { second_client.campaign("svc", "b", b).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "two leaders at once");

    c.proclaim("a2", Some(ProclaimOptions::new().with_leader(leader_a.clone())))
        .await
        .expect("the leader proclaims");
    let seen = observer.message().await.expect("observe").expect("update");
    assert_eq!(seen.kv().expect("kv").value(), b"a2");
    assert_eq!(c.leader("svc").await.expect("leader").kv().expect("kv").value(), b"a2");

    c.resign(Some(ResignOptions::new().with_leader(leader_a.clone()))).await.expect("resign");
    let won = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second candidate leads after the resignation")
        .expect("task")
        .expect("campaign");
    assert_eq!(won.leader().expect("leader key").key(), format!("svc/{b:x}").as_bytes());
    let seen = observer.message().await.expect("observe").expect("next leader");
    assert_eq!(seen.kv().expect("kv").value(), b"b");

    // A former leader can no longer proclaim.
    let refused = c
        .proclaim("stale", Some(ProclaimOptions::new().with_leader(leader_a)))
        .await
        .expect_err("not the leader any more");
    assert!(refused.to_string().contains("election: not leader"), "{refused}");
}
