//! Watch progress requests as etcd 3.5.13 answers them (Kubernetes enables its
//! consistent reads from the watch cache from that version on): the answer, a
//! response with watch ID -1 and no events, carries a revision R such that
//! every event at or below R of every watcher on the stream came before it,
//! even while a watcher is still catching up on history; watchers that nothing
//! concerned still count as up to date; and every member of a cluster answers
//! with the revision its store is at.

mod common;

use std::time::Duration;

use common::{Cluster, Server};
use etcd_client::{EventType, GetOptions, WatchOptions, WatchStream};

const WAIT: Duration = Duration::from_secs(20);

/// Reads `stream` until a progress notification; returns its revision and the
/// revisions of every event that came before it.
async fn until_progress(stream: &mut WatchStream) -> (i64, Vec<i64>) {
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("a progress notification in time")
            .expect("recv")
            .expect("stream open");
        let is_progress = message.watch_id() == -1
            && message.events().is_empty()
            && !message.created()
            && !message.canceled();
        if is_progress {
            let revision = message.header().expect("header").revision();
            return (revision, events);
        }
        events.extend(message.events().iter().map(|e| e.kv().expect("kv").mod_revision()));
    }
}

#[tokio::test]
async fn progress_comes_after_every_event_at_or_below_its_revision() {
    let server = Server::start();
    let mut c = server.client().await;
    const WRITES: i64 = 3000;
    for i in 0..WRITES {
        c.put(format!("h/{}", i % 50), i.to_string(), None).await.expect("put");
    }
    let current = c.get("h/", None).await.expect("get").header().expect("header").revision();
    // A watcher replaying all of history (many reads), and an idle one, on one stream.
    let mut stream = c
        .watch("h/", Some(WatchOptions::new().with_prefix().with_start_revision(1)))
        .await
        .expect("watch");
    stream.watch("idle", None).await.expect("second watcher");
    stream.request_progress().await.expect("progress request");
    let (revision, events) = until_progress(&mut stream).await;
    assert_eq!(revision, current, "the progress revision is the store's");
    let expected: Vec<i64> = (2..=current).collect();
    assert!(
        events == expected,
        "{} of the {} events up to the progress revision came before it",
        events.len(),
        expected.len()
    );

    // Writes that concern no watcher still move the progress revision.
    for i in 0..20 {
        c.put(format!("other/{i}"), "x", None).await.expect("put");
    }
    stream.request_progress().await.expect("progress request");
    let (revision, events) = until_progress(&mut stream).await;
    assert!(events.is_empty(), "no event concerned the watchers: {events:?}");
    assert_eq!(revision, current + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_answers_progress_with_the_revision_its_store_is_at() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, &[]));
    let mut writer = cluster.members[0].client().await;
    for i in 0..30 {
        writer.put(format!("k{i}"), "v", None).await.expect("put");
    }
    let last = writer.get("k0", None).await.expect("get").header().expect("header").revision();
    for member in &cluster.members {
        let mut c = member.client().await;
        // A linearizable read makes the member apply everything committed.
        let read = c.get("k0", None).await.expect("get");
        assert_eq!(read.header().expect("header").revision(), last);
        let mut stream =
            c.watch("k", Some(WatchOptions::new().with_prefix())).await.expect("watch");
        stream.request_progress().await.expect("progress request");
        let (revision, events) = until_progress(&mut stream).await;
        assert!(events.is_empty());
        assert_eq!(revision, last, "{} answers progress at another revision", member.name);
        let local = c.get("k0", Some(GetOptions::new().with_serializable())).await.expect("get");
        assert_eq!(local.header().expect("header").revision(), revision);
    }
}

/// Events reach watchers on every member as each asked for them: many watchers
/// of one key share the hub's events (encoded once), a `prev_kv` watcher gets
/// its own copy with the previous value, and a deletion arrives as one;
/// written through one follower, watched on the other follower and the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_every_member_get_shared_events_and_their_own_prev_kv() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, &[]));
    let leader = cluster.leader(Duration::from_secs(10)).expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut writer = cluster.members[followers[0]].client().await;
    let mut streams = Vec::new();
    for &member in &[followers[1], leader] {
        let mut c = cluster.members[member].client().await;
        for prev_kv in [false, false, true] {
            let options = if prev_kv { Some(WatchOptions::new().with_prev_key()) } else { None };
            let stream = c.watch("shared", options).await.expect("watch");
            streams.push((member, prev_kv, stream));
        }
    }
    for value in ["v1", "v2", "v3"] {
        writer.put("shared", value, None).await.expect("put");
    }
    writer.delete("shared", None).await.expect("delete");
    for (member, prev_kv, stream) in &mut streams {
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("events in time")
                .expect("stream")
                .expect("open");
            for event in response.events() {
                let kv = event.kv().expect("kv");
                let prev = event.prev_kv().map(|p| p.value_str().expect("utf-8").to_string());
                seen.push((event.event_type(), kv.value_str().expect("utf-8").to_string(), prev));
            }
        }
        let prev = |v: &str| if *prev_kv { Some(v.to_string()) } else { None };
        let expected = vec![
            (EventType::Put, "v1".to_string(), None),
            (EventType::Put, "v2".to_string(), prev("v1")),
            (EventType::Put, "v3".to_string(), prev("v2")),
            (EventType::Delete, String::new(), prev("v3")),
        ];
        assert_eq!(seen, expected, "member {member}, prev_kv {prev_kv}");
    }
}
