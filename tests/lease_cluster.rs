//! Leases on a 3-member cluster through followers: only the leader's lessor
//! knows deadlines, so a follower forwards KeepAlive and TimeToLive to it (as
//! etcd does). A client connected to one follower only keeps its lease alive
//! through a leader change and a restart, every member reports the same
//! remaining TTL, a lock taken through one follower is released through
//! another, and keep-alives forwarded on one stream come back to the right
//! client.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{etcdctl, must_etcdctl, Cluster};
use etcd_client::{Client, LeaseTimeToLiveOptions, LockOptions, PutOptions};

const ELECTION_WAIT: Duration = Duration::from_secs(10);
const TTL: i64 = 4;

async fn client_of(endpoint: &str) -> Client {
    Client::connect([endpoint], None).await.expect("connect")
}

/// Keeps `lease` alive through `endpoint` every second until `stop`, opening a
/// new keep-alive stream whenever one fails; counts the renewals answered with
/// the full TTL.
fn keep_alive_forever(
    endpoint: String,
    lease: i64,
    stop: Arc<AtomicBool>,
    renewed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut errors = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut client) = Client::connect([endpoint.as_str()], None).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let Ok((mut keeper, mut answers)) = client.lease_keep_alive(lease).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                if let Err(err) = keeper.keep_alive().await {
                    errors.push(err.to_string());
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(6), answers.message()).await {
                    Ok(Ok(Some(answer))) if answer.ttl() == TTL => {
                        renewed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(Some(answer))) => {
                        errors.push(format!("renewed with TTL {}", answer.ttl()));
                    }
                    other => {
                        errors.push(format!("keep-alive stream ended: {other:?}"));
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        errors
    })
}

/// The remaining TTL every running member reports for `lease`.
async fn ttl_on_every_member(cluster: &Cluster, lease: i64) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for member in cluster.members.iter().filter(|m| m.is_running()) {
        let mut c = client_of(&member.endpoint()).await;
        let answer = c
            .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap_or_else(|e| panic!("timetolive on {}: {e}", member.name));
        assert_eq!(answer.granted_ttl(), TTL, "granted TTL on {}", member.name);
        out.push((member.name.clone(), answer.ttl(), answer.granted_ttl()));
    }
    out
}

fn followers(cluster: &Cluster) -> (usize, usize, usize) {
    let leader = cluster.leader(ELECTION_WAIT).expect("a leader");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    (leader, others[0], others[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_one_follower_keeps_its_lease_through_a_leader_change_and_a_restart() {
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3, &[]));
    let (leader, follower, other) = followers(&cluster);
    let endpoint = cluster.members[follower].endpoint();
    let mut c = client_of(&endpoint).await;
    let lease = c.lease_grant(TTL, None).await.expect("grant through a follower").id();
    c.put("session", "alive", Some(PutOptions::new().with_lease(lease))).await.expect("put");

    // TimeToLive answers come from the leader's lessor, whichever member is asked.
    let ttls = ttl_on_every_member(&cluster, lease).await;
    let (min, max) =
        ttls.iter().fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t.1), hi.max(t.1)));
    assert!(max - min <= 1, "members disagree on the remaining TTL: {ttls:?}");
    assert!(max <= TTL, "a member reports more than the granted TTL: {ttls:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let renewed = Arc::new(AtomicU64::new(0));
    let keeper = keep_alive_forever(endpoint.clone(), lease, stop.clone(), renewed.clone());
    let started = Instant::now();

    // A leader change: the old leader dies; the follower forwards to the new one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| cluster.members[leader].kill9());
    let new_leader =
        tokio::task::block_in_place(|| cluster.leader(ELECTION_WAIT)).expect("a new leader");
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| cluster.members[leader].restart());
    // A follower restarts too (the other one, unless it became the leader).
    let restarted = if new_leader != other { other } else { leader };
    tokio::task::block_in_place(|| {
        cluster.members[restarted].kill9();
        cluster.members[restarted].restart();
    });
    while started.elapsed() < Duration::from_secs(3 * TTL as u64 + 1) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut c = client_of(&endpoint).await;
    let got = c.get("session", None).await.expect("get");
    assert_eq!(got.kvs().len(), 1, "the kept-alive lease expired");
    let ttls = ttl_on_every_member(&cluster, lease).await;
    let (min, max) =
        ttls.iter().fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t.1), hi.max(t.1)));
    assert!(max - min <= 1 && min > 0, "members disagree on the remaining TTL: {ttls:?}");

    // Without keep-alives the lease ends, and its key with it, on every member.
    stop.store(true, Ordering::Relaxed);
    let errors = keeper.await.expect("keeper");
    assert!(renewed.load(Ordering::Relaxed) >= 6, "too few renewals: errors {errors:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = c.get("session", None).await.expect("get");
        if got.kvs().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired once its keep-alives stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = c.lease_time_to_live(lease, None).await.expect("timetolive");
    assert_eq!(gone.ttl(), -1, "an expired lease answers TTL -1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_taken_through_one_follower_is_released_through_another() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, &[]));
    let (_, first, second) = followers(&cluster);
    let mut a = client_of(&cluster.members[first].endpoint()).await;
    let mut b = client_of(&cluster.members[second].endpoint()).await;
    let lease = a.lease_grant(TTL, None).await.expect("grant").id();
    let held = a.lock("door", Some(LockOptions::new().with_lease(lease))).await.expect("lock");
    b.unlock(held.key()).await.expect("unlock through the other follower");
    let again =
        tokio::time::timeout(Duration::from_secs(5), b.lock("door", None)).await.expect("free");
    let again = again.expect("lock through the other follower");
    b.unlock(again.key()).await.expect("unlock");

    let endpoint = cluster.members[first].endpoint();
    let keep = tokio::task::block_in_place(|| {
        must_etcdctl(&endpoint, &["lease", "keep-alive", "--once", &format!("{lease:016x}")], None)
    });
    assert_eq!(keep, format!("lease {lease:016x} keepalived with TTL({TTL})\n"));

    // etcdctl's lock holds a session lease kept alive through the follower it
    // uses, for longer than the session TTL's first renewal.
    let out = tokio::task::block_in_place(|| {
        etcdctl(&endpoint, &["lock", "door", "--", "sh", "-c", "sleep 5; echo held"], None)
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "held\n");
    let left =
        b.get("door", Some(etcd_client::GetOptions::new().with_prefix())).await.expect("get");
    assert!(left.kvs().is_empty(), "etcdctl lock left its owner key behind");
}

/// The remaining TTL of `lease` on the leader after the current leader is
/// killed, `waited` after the grant (or after the whole cluster restarts, with
/// `restart_all`).
async fn remaining_after_leader_change(flags: &[&str], restart_all: bool) -> i64 {
    const LONG_TTL: i64 = 30;
    let mut cluster = tokio::task::block_in_place(|| {
        Cluster::start_with_env(3, flags, &[("ETCD_RS_TEST_LEASE_CHECKPOINT_INTERVAL_MS", "1000")])
    });
    let (leader, follower, _) = followers(&cluster);
    let mut c = client_of(&cluster.members[follower].endpoint()).await;
    let lease = c.lease_grant(LONG_TTL, None).await.expect("grant").id();
    // Several checkpoint intervals pass with no keep-alive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::block_in_place(|| {
        if restart_all {
            for member in &mut cluster.members {
                member.kill9();
            }
            for member in &mut cluster.members {
                member.spawn();
            }
            for member in &mut cluster.members {
                member.wait_ready();
            }
        } else {
            cluster.members[leader].kill9();
        }
    });
    let now_leading =
        tokio::task::block_in_place(|| cluster.leader(ELECTION_WAIT)).expect("leader");
    let mut c = client_of(&cluster.members[now_leading].endpoint()).await;
    let answer = c.lease_time_to_live(lease, None).await.expect("timetolive");
    assert_eq!(answer.granted_ttl(), LONG_TTL);
    answer.ttl()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_checkpoints_a_new_leader_keeps_the_remaining_ttl_instead_of_the_full_one() {
    // Without checkpoints the new leader gives the lease its whole TTL again
    // (plus an election timeout), as etcd does.
    let reset = remaining_after_leader_change(&[], false).await;
    assert!(reset >= 29, "without checkpoints the TTL restarts in full: {reset}");
    let kept =
        remaining_after_leader_change(&["--experimental-enable-lease-checkpoint"], false).await;
    assert!(kept <= 27, "the checkpointed remaining TTL was not used: {kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_checkpoints_survive_a_restart_of_the_whole_cluster() {
    // (Without persistence, whether a checkpoint survives depends on whether
    // its entry is replayed from the WAL at restart, so only the control without
    // checkpoints and the persisted case are asserted.)
    let plain = remaining_after_leader_change(&[], true).await;
    assert!(plain >= 29, "without checkpoints a full restart restarts the TTL: {plain}");
    let persisted = remaining_after_leader_change(
        &[
            "--experimental-enable-lease-checkpoint",
            "--experimental-enable-lease-checkpoint-persist",
        ],
        true,
    )
    .await;
    assert!(persisted <= 27, "the persisted remaining TTL was not used: {persisted}");
}

/// A keep-alive of a lease that does not exist is answered with TTL 0, not an
/// error status (as etcd answers it; the client library turns that TTL into its
/// own error), and renewing a lease whose remaining TTL was checkpointed
/// records the checkpoint cleared before answering: killed right after, the
/// member restarts the lease from its whole TTL, not from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_answers_unknown_leases_and_clears_a_persisted_checkpoint() {
    const LONG_TTL: i64 = 30;
    let mut cluster = tokio::task::block_in_place(|| {
        Cluster::start_with_env(
            1,
            &[
                "--experimental-enable-lease-checkpoint",
                "--experimental-enable-lease-checkpoint-persist",
            ],
            &[("ETCD_RS_TEST_LEASE_CHECKPOINT_INTERVAL_MS", "1000")],
        )
    });
    let mut c = client_of(&cluster.members[0].endpoint()).await;
    match c.lease_keep_alive(0x1234).await.map(|_| ()) {
        Err(etcd_client::Error::LeaseKeepAliveError(reason)) => {
            assert_eq!(reason, "lease not found")
        }
        other => panic!("an unknown lease's keep-alive is answered with TTL 0: {other:?}"),
    }
    let lease = c.lease_grant(LONG_TTL, None).await.expect("grant").id();
    // Checkpoints record the remaining TTL, a few seconds short of the whole.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.expect("keepalive");
    keeper.keep_alive().await.expect("send");
    let answer = answers.message().await.expect("recv").expect("answer");
    assert_eq!(answer.ttl(), LONG_TTL);
    tokio::task::block_in_place(|| {
        cluster.members[0].kill9();
        cluster.members[0].spawn();
        cluster.members[0].wait_ready();
    });
    let mut c = client_of(&cluster.members[0].endpoint()).await;
    let ttl = c.lease_time_to_live(lease, None).await.expect("timetolive").ttl();
    assert!(ttl >= LONG_TTL - 1, "the renewal did not clear the checkpoint: {ttl}");
}

/// Keep-alives sent to a follower travel to the leader on one shared stream
/// and come back to the right client: two leases renewed in turn through one
/// follower each get their own TTL, and a lease that does not exist gets TTL 0
/// (which the client library reports as its own "lease not found").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_through_a_follower_answer_each_lease_and_unknown_ones_with_ttl_0() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, &[]));
    let (_, follower, _) = followers(&cluster);
    let mut c = client_of(&cluster.members[follower].endpoint()).await;
    let short = c.lease_grant(TTL, None).await.expect("grant").id();
    let long = c.lease_grant(3 * TTL, None).await.expect("grant").id();
    let (mut short_keeper, mut short_answers) = c.lease_keep_alive(short).await.expect("keep");
    let (mut long_keeper, mut long_answers) = c.lease_keep_alive(long).await.expect("keep");
    for _ in 0..5 {
        short_keeper.keep_alive().await.expect("send");
        long_keeper.keep_alive().await.expect("send");
        let a = short_answers.message().await.expect("recv").expect("answer");
        let b = long_answers.message().await.expect("recv").expect("answer");
        assert_eq!((a.id(), a.ttl(), b.id(), b.ttl()), (short, TTL, long, 3 * TTL));
    }
    match c.lease_keep_alive(0x1234).await.map(|_| ()) {
        Err(etcd_client::Error::LeaseKeepAliveError(reason)) => {
            assert_eq!(reason, "lease not found")
        }
        other => panic!("an unknown lease's keep-alive is answered with TTL 0: {other:?}"),
    }
}
