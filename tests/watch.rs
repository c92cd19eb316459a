//! Watch: the real `etcdctl watch` compared with real etcd, history replay,
//! filters, compaction, cancellation, refused creations and watch IDs compared
//! with real etcd, many watchers with a slow reader, and resuming after a restart.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{etcdctl_path, must_etcdctl, real_etcd, Flavor, Server};
use etcd_client::{EventType, GetOptions, WatchFilterType, WatchOptions};

/// Runs `etcdctl watch <args>` in the background while `writes` run, then returns
/// what it printed.
fn etcdctl_watch_output(endpoint: &str, args: &[&str], writes: &[&[&str]]) -> String {
    let mut child = Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcdctl watch");
    std::thread::sleep(Duration::from_millis(500));
    for write in writes {
        must_etcdctl(endpoint, write, None);
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let out = child.wait_with_output().expect("watch output");
    String::from_utf8(out.stdout).expect("utf8")
}

fn watch_sequence(endpoint: &str) -> Vec<String> {
    must_etcdctl(endpoint, &["put", "a", "1"], None);
    must_etcdctl(endpoint, &["put", "p/x", "0"], None);
    let writes: &[&[&str]] = &[
        &["put", "a", "2"],
        &["put", "p/y", "1"],
        &["del", "a"],
        &["put", "p/x", "3"],
        &["del", "p/", "--prefix"],
        &["put", "other", "4"],
    ];
    let mut outputs = vec![etcdctl_watch_output(endpoint, &["a"], writes)];
    outputs.push(etcdctl_watch_output(endpoint, &["p/", "--prefix", "--prev-kv"], writes));
    outputs.push(etcdctl_watch_output(endpoint, &["", "--prefix", "--rev=1"], &[]));
    outputs.push(etcdctl_watch_output(endpoint, &["a", "--rev=3", "--prev-kv"], &[]));
    outputs
}

#[test]
fn etcdctl_watch_prints_what_real_etcd_prints() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = watch_sequence(&ours.endpoint());
    let want = watch_sequence(&oracle.endpoint());
    assert!(!want[0].is_empty(), "the oracle printed nothing");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "watch {i} differs from real etcd");
    }
}

#[tokio::test]
async fn history_replay_then_live_events_with_filters() {
    let server = Server::start();
    let mut c = server.client().await;
    c.put("k", "1", None).await.expect("put");
    c.put("k", "2", None).await.expect("put");
    c.delete("k", None).await.expect("del");
    let mut stream = c
        .watch("k", Some(WatchOptions::new().with_start_revision(2).with_prev_key()))
        .await
        .expect("watch");
    let created = stream.message().await.expect("recv").expect("created");
    assert!(created.created());
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let resp = stream.message().await.expect("recv").expect("events");
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            let prev = e.prev_kv().map(|p| p.value_str().expect("utf8").to_string());
            seen.push((
                e.event_type(),
                kv.mod_revision(),
                kv.value_str().expect("utf8").to_string(),
                prev,
            ));
        }
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Put, 2, "1".to_string(), None),
            (EventType::Put, 3, "2".to_string(), Some("1".to_string())),
            (EventType::Delete, 4, String::new(), Some("2".to_string())),
        ]
    );
    let mut no_put = c
        .watch(
            "k",
            Some(WatchOptions::new().with_start_revision(1).with_filters([WatchFilterType::NoPut])),
        )
        .await
        .expect("watch");
    no_put.message().await.expect("recv").expect("created");
    c.put("k", "live", None).await.expect("put");
    c.delete("k", None).await.expect("del");
    let resp = no_put.message().await.expect("recv").expect("events");
    let types: Vec<EventType> = resp.events().iter().map(|e| e.event_type()).collect();
    assert_eq!(types, vec![EventType::Delete], "history delete at 4 first");
    let resp = no_put.message().await.expect("recv").expect("events");
    assert_eq!(resp.events()[0].kv().expect("kv").mod_revision(), 6);
}

#[tokio::test]
async fn a_compacted_start_revision_cancels_with_compact_revision() {
    let server = Server::start();
    let mut c = server.client().await;
    for i in 0..5 {
        c.put("k", format!("{i}"), None).await.expect("put");
    }
    c.compact(5, None).await.expect("compact");
    let mut stream =
        c.watch("k", Some(WatchOptions::new().with_start_revision(2))).await.expect("watch");
    let mut canceled = None;
    while let Some(resp) = stream.message().await.expect("recv") {
        if resp.canceled() {
            canceled = Some(resp);
            break;
        }
    }
    let resp = canceled.expect("a cancel response");
    assert_eq!(resp.compact_revision(), 5);
}

/// (type, key, mod revision, prev kv's mod revision) of a watch of every key
/// from `start` with prev_kv, up to the event at revision `last`.
async fn history_from(
    c: &mut etcd_client::Client,
    start: i64,
    last: i64,
) -> Vec<(EventType, String, i64, Option<i64>)> {
    let options = WatchOptions::new().with_start_revision(start).with_prev_key().with_all_keys();
    let mut stream = c.watch("", Some(options)).await.expect("watch");
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(_, _, rev, _)| *rev < last) {
        let resp = stream.message().await.expect("recv").expect("response");
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            let key = kv.key_str().expect("utf8").to_string();
            seen.push((
                e.event_type(),
                key,
                kv.mod_revision(),
                e.prev_kv().map(|p| p.mod_revision()),
            ));
        }
    }
    seen
}

/// Watches from the compaction revision, which etcd serves from its compacted
/// backend: none of the deletes of that revision (compaction removed their
/// tombstones) and no prev kv for its events (the revision before is gone).
async fn watch_at_the_compaction_revision(
    endpoint: &str,
) -> Vec<Vec<(EventType, String, i64, Option<i64>)>> {
    let mut c = etcd_client::Client::connect([endpoint], None).await.expect("connect");
    for (k, v) in [("a", "1"), ("b", "1"), ("b", "2")] {
        c.put(k, v, None).await.expect("put");
    }
    c.delete("a", None).await.expect("delete");
    c.put("b", "3", None).await.expect("put");
    c.compact(4, Some(etcd_client::CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    let from_4 = history_from(&mut c, 4, 6).await;
    c.compact(5, Some(etcd_client::CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    c.put("a", "2", None).await.expect("put");
    let from_5 = history_from(&mut c, 5, 7).await;
    vec![from_4, from_5]
}

#[tokio::test]
async fn a_watch_from_the_compaction_revision_delivers_what_real_etcd_delivers() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = watch_at_the_compaction_revision(&ours.endpoint()).await;
    let want = watch_at_the_compaction_revision(&oracle.endpoint()).await;
    use EventType::{Delete, Put};
    assert_eq!(
        want,
        [
            vec![
                (Put, "b".into(), 4, None),
                (Delete, "a".into(), 5, Some(2)),
                (Put, "b".into(), 6, Some(4))
            ],
            vec![(Put, "b".into(), 6, Some(4)), (Put, "a".into(), 7, None)],
        ],
        "real etcd"
    );
    assert_eq!(got, want);
}

#[tokio::test]
async fn cancel_stops_events_and_future_start_revision_waits() {
    let server = Server::start();
    let mut c = server.client().await;
    let mut stream =
        c.watch("f", Some(WatchOptions::new().with_start_revision(5))).await.expect("watch");
    let id = stream.message().await.expect("recv").expect("created").watch_id();
    for i in 0..5 {
        c.put("f", format!("{i}"), None).await.expect("put");
    }
    let resp = stream.message().await.expect("recv").expect("events");
    let first = resp.events()[0].kv().expect("kv").mod_revision();
    assert_eq!(first, 5, "nothing before the start revision");
    stream.cancel(id).await.expect("cancel");
    loop {
        let resp = stream.message().await.expect("recv").expect("response");
        if resp.canceled() {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watcher_outlives_thousands_of_other_writes_and_their_compaction() {
    let server = Server::start();
    let mut c = server.client().await;
    let mut quiet = c.watch("quiet", None).await.expect("watch");
    quiet.message().await.expect("recv").expect("created");
    let mut prefix =
        c.watch("quiet/", Some(WatchOptions::new().with_prefix())).await.expect("watch");
    prefix.message().await.expect("recv").expect("created");
    // More revisions than the hub keeps in memory, none of them watched.
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut c = c.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..1100 {
                c.put(format!("noise/{w}/{i}"), "x", None).await.expect("put");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let latest = c.get("noise/0/0", None).await.expect("get").header().expect("header").revision();
    c.compact(latest, None).await.expect("compact");
    let written = c.put("quiet", "1", None).await.expect("put").header().expect("h").revision();
    c.put("quiet/x", "2", None).await.expect("put");
    let got = quiet.message().await.expect("recv").expect("event");
    assert!(!got.canceled(), "an idle watcher must not be cancelled by compaction");
    assert_eq!(got.events().len(), 1);
    assert_eq!(got.events()[0].kv().expect("kv").mod_revision(), written);
    let got = prefix.message().await.expect("recv").expect("event");
    assert!(!got.canceled());
    assert_eq!(got.events()[0].kv().expect("kv").key(), b"quiet/x");
}

/// (revision, key, value) of every put, in revision order.
type History = Vec<(i64, String, String)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_watchers_with_a_slow_reader_see_every_event_exactly_once_in_order() {
    const WRITERS: usize = 4;
    const PUTS_PER_WRITER: usize = 150;
    let server = Server::start();
    let mut c = server.client().await;
    let start = c.get("x", None).await.expect("get").header().expect("header").revision() + 1;
    // Overlapping ranges: everything, each writer's prefix, and one single key; each
    // watcher stops at its own terminating key, written last.
    let mut specs: Vec<(String, bool, String)> = vec![("".into(), true, "zz/end".into())];
    for w in 0..WRITERS {
        specs.push((format!("w{w}/"), true, format!("w{w}/end")));
    }
    specs.push(("w0/0001".into(), false, "w0/0001".into()));
    let mut readers = Vec::new();
    for (i, (key, prefix, terminator)) in specs.into_iter().enumerate() {
        let mut client = server.client().await;
        let mut options = WatchOptions::new().with_start_revision(start);
        if prefix {
            options = options.with_prefix();
        }
        let mut stream = client.watch(key.clone(), Some(options)).await.expect("watch");
        readers.push(tokio::spawn(async move {
            let _keep = client;
            let mut got: History = Vec::new();
            while let Ok(Some(resp)) = stream.message().await {
                if i == 0 {
                    // The slow reader: it stalls its own stream, never the others.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                for e in resp.events() {
                    let kv = e.kv().expect("kv");
                    got.push((
                        kv.mod_revision(),
                        kv.key_str().expect("utf8").to_string(),
                        kv.value_str().expect("utf8").to_string(),
                    ));
                }
                if got.last().is_some_and(|(_, k, v)| *k == terminator && v == "done") {
                    break;
                }
            }
            (key, prefix, got)
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = server.client().await;
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for n in 0..PUTS_PER_WRITER {
                let key = format!("w{w}/{:04}", n % 40);
                let r = client.put(key.clone(), format!("{n}"), None).await.expect("put");
                written.push((r.header().expect("header").revision(), key, format!("{n}")));
            }
            written
        }));
    }
    let mut all: History = Vec::new();
    for writer in writers {
        all.extend(writer.await.expect("writer"));
    }
    let terminators = ["w0/0001", "w0/end", "w1/end", "w2/end", "w3/end", "zz/end"];
    for key in terminators {
        let r = c.put(key, "done", None).await.expect("put");
        all.push((r.header().expect("header").revision(), key.into(), "done".into()));
    }
    all.sort();
    assert_eq!(all.len(), WRITERS * PUTS_PER_WRITER + terminators.len());
    for reader in readers {
        let (key, prefix, got) = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("reader finished")
            .expect("reader task");
        let want: History = all
            .iter()
            .filter(|(_, k, _)| if prefix { k.starts_with(&key) } else { *k == key })
            .cloned()
            .collect();
        let first_difference = got.iter().zip(&want).position(|(g, w)| g != w);
        assert_eq!(first_difference, None, "watcher on {key:?} diverged");
        assert_eq!(got.len(), want.len(), "watcher on {key:?} saw a different number of events");
    }
}

#[tokio::test]
async fn resuming_after_a_restart_from_last_seen_plus_one_misses_nothing() {
    let mut server = Server::start();
    let mut c = server.client().await;
    let mut stream = c.watch("r/", Some(WatchOptions::new().with_prefix())).await.expect("watch");
    stream.message().await.expect("recv").expect("created");
    for i in 0..3 {
        c.put(format!("r/{i}"), "v", None).await.expect("put");
    }
    let mut last_seen = 0;
    while last_seen < 4 {
        let resp = stream.message().await.expect("recv").expect("events");
        last_seen = resp.events().last().map_or(last_seen, |e| e.kv().expect("kv").mod_revision());
    }
    server.kill9();
    server.restart();
    let mut c = server.client().await;
    for i in 3..6 {
        c.put(format!("r/{i}"), "v", None).await.expect("put");
    }
    let mut stream = c
        .watch("r/", Some(WatchOptions::new().with_prefix().with_start_revision(last_seen + 1)))
        .await
        .expect("watch");
    let mut revisions = Vec::new();
    while revisions.len() < 3 {
        let resp = stream.message().await.expect("recv").expect("response");
        revisions.extend(resp.events().iter().map(|e| e.kv().expect("kv").mod_revision()));
    }
    assert_eq!(revisions, vec![5, 6, 7]);
    let count =
        c.get("r/", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("get");
    assert_eq!(count.count(), 6);
}

#[tokio::test]
async fn progress_notifications_and_progress_requests_carry_the_current_revision() {
    let server =
        Server::start_with(Flavor::Ours, &["--experimental-watch-progress-notify-interval=300ms"]);
    let mut c = server.client().await;
    c.put("other", "1", None).await.expect("put");
    let mut stream =
        c.watch("quiet", Some(WatchOptions::new().with_progress_notify())).await.expect("watch");
    let created = stream.message().await.expect("recv").expect("created");
    let id = created.watch_id();
    let note = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a progress notification within the interval")
        .expect("recv")
        .expect("response");
    assert_eq!(note.watch_id(), id);
    assert!(note.events().is_empty());
    assert_eq!(note.header().expect("header").revision(), 2);
    stream.request_progress().await.expect("progress request");
    loop {
        let resp = stream.message().await.expect("recv").expect("response");
        if resp.watch_id() == -1 {
            assert_eq!(resp.header().expect("header").revision(), 2);
            break;
        }
    }
}

/// (watch ID, created, canceled, cancel reason) of every response to one
/// stream's creations and cancellations: explicit IDs, a duplicate, an empty
/// range, an automatic ID, a cancel, and an ID used again after its cancel.
async fn creations_and_refusals(endpoint: &str) -> Vec<(i64, bool, bool, String)> {
    let mut client = etcd_client::Client::connect([endpoint], None).await.expect("connect");
    let mut stream =
        client.watch("a", Some(WatchOptions::new().with_watch_id(7))).await.expect("watch");
    stream.watch("b", Some(WatchOptions::new().with_watch_id(7))).await.expect("duplicate");
    stream.watch("b", Some(WatchOptions::new().with_range("a"))).await.expect("empty range");
    stream.watch("c", None).await.expect("automatic ID");
    stream.cancel(7).await.expect("cancel");
    stream.watch("d", Some(WatchOptions::new().with_watch_id(7))).await.expect("ID again");
    let mut got = Vec::new();
    while got.len() < 6 {
        let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a response in time")
            .expect("recv")
            .expect("response");
        got.push((
            response.watch_id(),
            response.created(),
            response.canceled(),
            response.cancel_reason().to_string(),
        ));
    }
    got
}

#[tokio::test]
async fn refused_creations_and_watch_ids_are_answered_as_real_etcd_answers_them() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = creations_and_refusals(&ours.endpoint()).await;
    let want = creations_and_refusals(&oracle.endpoint()).await;
    assert_eq!(
        want[1],
        (-1, true, true, "mvcc: duplicate watch ID provided on the WatchStream".into()),
        "real etcd"
    );
    assert_eq!(got, want);
}
