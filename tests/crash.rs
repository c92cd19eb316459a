//! Durability: acknowledged writes survive `kill -9` at random moments, and a WAL
//! with a torn tail (a crash mid-append) reopens cleanly.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{sorted_files, Server};

/// Writers running concurrently, so kills land while fsyncs are shared.
const WRITERS: usize = 8;
/// Kill/restart rounds.
const ROUNDS: usize = 5;

fn seed() -> u64 {
    std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64
    })
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Acknowledged writes: key -> (value, revision from the put response).
type Acked = Arc<Mutex<BTreeMap<String, (String, i64)>>>;

async fn write_until_killed(endpoint: String, round: usize, acked: Acked) {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (endpoint, acked) = (endpoint.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else {
                return;
            };
            for n in 0.. {
                let key = format!("r{round}/w{w}/{n:06}");
                let value = format!("v{n}");
                match client.put(key.clone(), value.clone(), None).await {
                    Ok(resp) => {
                        let rev = resp.header().expect("header").revision();
                        acked.lock().expect("lock").insert(key, (value, rev));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn assert_all_present(server: &Server, acked: &Acked) {
    let mut client = server.client().await;
    let acked = acked.lock().expect("lock").clone();
    assert!(!acked.is_empty(), "the writers got no acknowledgement at all");
    for (key, (value, rev)) in &acked {
        let got = client.get(key.as_str(), None).await.expect("get");
        let kv = got.kvs().first().unwrap_or_else(|| panic!("acknowledged key {key} is lost"));
        assert_eq!(kv.value_str().expect("utf8"), value, "{key}");
        assert_eq!(kv.mod_revision(), *rev, "{key} has another revision than acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_at_random_moments() {
    let seed = seed();
    println!("CRASH_SEED={seed}");
    let mut rng = seed | 1;
    // A small snapshot count makes snapshots and WAL releases happen during the test.
    let mut server = Server::start_with(common::Flavor::Ours, &["--snapshot-count=300"]);
    let acked: Acked = Arc::default();
    for round in 0..ROUNDS {
        let writer = tokio::spawn(write_until_killed(server.endpoint(), round, acked.clone()));
        let delay_ms = 300 + next(&mut rng) % 900;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill9();
        writer.await.expect("writer task");
        server.restart();
        assert_all_present(&server, &acked).await;
    }
    // Revisions stay strictly increasing after all the restarts.
    let mut client = server.client().await;
    let before = client.get("probe", None).await.expect("get").header().expect("header").revision();
    let put = client.put("probe", "1", None).await.expect("put");
    assert_eq!(put.header().expect("header").revision(), before + 1);
}

#[tokio::test]
async fn torn_wal_tail_is_repaired_on_restart() {
    let mut server = Server::start();
    let mut client = server.client().await;
    for i in 0..50 {
        client.put(format!("k{i}"), "v", None).await.expect("put");
    }
    server.kill9();
    let last = sorted_files(&server.wal_dir()).pop().expect("a WAL segment");
    // Half a record header plus garbage: what a crash during an append leaves.
    let mut file = std::fs::OpenOptions::new().append(true).open(&last).expect("open segment");
    file.write_all(&[0x30, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 2, 1, 2, 3]).expect("tear");
    drop(file);
    server.restart();
    let mut client = server.client().await;
    let all =
        client.get("k", Some(etcd_client::GetOptions::new().with_prefix())).await.expect("get");
    assert_eq!(all.count(), 50);
    client.put("after", "repair", None).await.expect("writes work after repair");
}
