//! Availability under a partition: a member cut off from its peers says so at
//! once (`etcdserver: no leader`, gRPC UNAVAILABLE) instead of holding requests
//! to the client's deadline, so clients that know every endpoint retry on a
//! member that can serve them. The client deadlines below are shorter than the
//! server's request timeout (7 s): a request held until its deadline shows up
//! as a deadline error, not as the server's answer.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use etcd_client::{Client, ConnectOptions, GetOptions};

const ELECTION_WAIT: Duration = Duration::from_secs(10);
/// Shorter than the server's request timeout, longer than an election.
const CLIENT_DEADLINE: Duration = Duration::from_secs(4);

async fn client_of(endpoints: &[String]) -> Client {
    let options = ConnectOptions::new().with_timeout(CLIENT_DEADLINE);
    Client::connect(endpoints, Some(options)).await.expect("connect")
}

/// Waits until member `i` reports that it knows no leader.
async fn wait_leaderless(client: &mut Client) {
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        let status = client.status().await.expect("status");
        if status.leader() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the isolated member still follows a leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_no_leader<T: std::fmt::Debug>(what: &str, outcome: Result<T, etcd_client::Error>) {
    match outcome {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{what}: {status:?}");
            assert_eq!(status.message(), "etcdserver: no leader", "{what}");
        }
        other => panic!("{what}: expected etcdserver: no leader, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_member_refuses_reads_writes_and_keep_alives_with_no_leader() {
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3, &[]));
    let leader = tokio::task::block_in_place(|| cluster.leader(ELECTION_WAIT)).expect("leader");
    let ids = tokio::task::block_in_place(|| cluster.member_ids());
    let isolated = (leader + 1) % 3;
    let mut client = client_of(&[cluster.members[isolated].endpoint()]).await;
    let lease = client.lease_grant(30, None).await.expect("grant").id();
    tokio::task::block_in_place(|| cluster.isolate(isolated, &ids));
    wait_leaderless(&mut client).await;

    assert_no_leader("linearizable get", client.get("k", None).await);
    assert_no_leader("put", client.put("k", "v", None).await);
    assert_no_leader("txn", client.txn(etcd_client::Txn::new()).await);
    assert_no_leader("lease grant", client.lease_grant(30, None).await);
    assert_no_leader("lease timetolive", client.lease_time_to_live(lease, None).await);
    // (The crate's keep-alive call waits for the stream's first answer.)
    assert_no_leader("lease keep-alive", client.lease_keep_alive(lease).await.map(|_| ()));
    // What needs no leader still works: serializable reads of the local store.
    let local = client.get("k", Some(GetOptions::new().with_serializable())).await;
    assert!(local.is_ok(), "serializable get: {local:?}");

    tokio::task::block_in_place(|| cluster.heal());
    let deadline = Instant::now() + ELECTION_WAIT;
    while client.put("k", "after", None).await.is_err() {
        assert!(Instant::now() < deadline, "the healed member never served a write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_pending_when_the_leader_is_lost_fail_fast() {
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3, &[]));
    let leader = tokio::task::block_in_place(|| cluster.leader(ELECTION_WAIT)).expect("leader");
    let ids = tokio::task::block_in_place(|| cluster.member_ids());
    let isolated = (leader + 1) % 3;
    let mut client = client_of(&[cluster.members[isolated].endpoint()]).await;
    client.put("k", "v", None).await.expect("put");
    tokio::task::block_in_place(|| cluster.isolate(isolated, &ids));
    // The member still follows the old leader for up to an election timeout:
    // these reads wait for a read index that will never come, until the member
    // notices it has no leader.
    let mut pending = Vec::new();
    for _ in 0..4 {
        let mut reader = client.clone();
        pending.push(tokio::spawn(async move { reader.get("k", None).await }));
    }
    let mut writes = Vec::new();
    for i in 0..2 {
        let mut writer = client.clone();
        writes.push(tokio::spawn(async move { writer.put(format!("w{i}"), "v", None).await }));
    }
    for read in pending {
        assert_no_leader("pending linearizable get", read.await.expect("task"));
    }
    // A pending proposal fails too: with "leader changed" when it was waiting
    // as the leader was lost, with "no leader" when it arrived after.
    for write in writes {
        match write.await.expect("task") {
            Err(etcd_client::Error::GRpcStatus(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    ["etcdserver: leader changed", "etcdserver: no leader"]
                        .contains(&status.message()),
                    "pending put: {status:?}"
                );
            }
            other => panic!("pending put: expected leader changed, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_every_member_keeps_completing_operations_while_one_is_cut_off() {
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3, &[]));
    let leader = tokio::task::block_in_place(|| cluster.leader(ELECTION_WAIT)).expect("leader");
    let ids = tokio::task::block_in_place(|| cluster.member_ids());
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let mut client = client_of(&endpoints).await;
    tokio::task::block_in_place(|| cluster.isolate((leader + 1) % 3, &ids));
    // One sequential client spreading requests over every endpoint: a request
    // the cut-off member held would cost a whole deadline, one it refuses only
    // the retry that a clientv3 would make on the next endpoint.
    let (mut succeeded, mut refused, mut held) = (0u32, 0u32, 0u32);
    let mut last_written = None;
    let until = Instant::now() + Duration::from_secs(6);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let outcome = if n.is_multiple_of(2) {
            client.put("counter", n.to_string(), None).await.map(|_| Some(n))
        } else {
            client.get("counter", None).await.map(|_| None)
        };
        match outcome {
            Ok(written) => {
                succeeded += 1;
                last_written = written.or(last_written);
            }
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::Unavailable => {
                refused += 1
            }
            Err(_) => held += 1,
        }
    }
    assert_eq!(held, 0, "requests waited for their deadline ({succeeded} ok, {refused} refused)");
    assert!(succeeded > refused, "{succeeded} ok, {refused} refused");
    tokio::task::block_in_place(|| cluster.heal());
    let last = last_written.expect("some put succeeded");
    // The healed member answers "no leader" until the leader's next heartbeat
    // reaches it; a client retries that on another endpoint, and so do we.
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        match client.get("counter", None).await {
            Ok(got) => break got,
            Err(etcd_client::Error::GRpcStatus(s))
                if s.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("get after healing: {e:?}"),
        }
    };
    let value = String::from_utf8_lossy(got.kvs()[0].value()).parse::<u64>().expect("number");
    assert!(value >= last, "an acknowledged put was lost: {value} < {last}");
}

/// The leader's term, as member `i` reports it, once it knows a leader.
fn term_with_leader(cluster: &Cluster, i: usize) -> u64 {
    let deadline = Instant::now() + ELECTION_WAIT;
    while Instant::now() < deadline {
        let out = common::etcdctl(
            &cluster.members[i].endpoint(),
            &["endpoint", "status", "-w", "json"],
            None,
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let s = &status[0]["Status"];
        if s["leader"].as_u64().unwrap_or(0) != 0 {
            return s["raftTerm"].as_u64().expect("raft term");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("member {i} found no leader");
}

/// Pre-vote (on by default, `--pre-vote=false` turns it off): a member cut off
/// for several election timeouts comes back without deposing the leader; with
/// pre-vote off it campaigned meanwhile, and its higher term forces an election.
#[test]
fn pre_vote_keeps_a_returning_member_from_deposing_the_leader_and_can_be_turned_off() {
    for (flags, disrupts) in [(&[][..], false), (&["--pre-vote=false"][..], true)] {
        let mut cluster = Cluster::start(3, flags);
        let leader = cluster.leader(ELECTION_WAIT).expect("leader");
        let ids = cluster.member_ids();
        let before = term_with_leader(&cluster, leader);
        let cut = (leader + 1) % 3;
        cluster.isolate(cut, &ids);
        // Several election timeouts (1 s each, randomized up to 2 s) cut off.
        std::thread::sleep(Duration::from_secs(5));
        cluster.heal();
        std::thread::sleep(Duration::from_secs(3));
        let after = term_with_leader(&cluster, leader);
        assert_eq!(after > before, disrupts, "{flags:?}: term {before} -> {after}");
    }
}

/// `--initial-election-tick-advance` (on by default): a starting member that
/// reaches its peers fast-forwards its first election timeout, as etcd logs
/// it; `=false` waits the whole timeout. Checked against real etcd 3.4 too.
#[test]
fn a_starting_member_fast_forwards_its_election_ticks_once_it_reaches_its_peers() {
    for flavor in [common::Flavor::Ours, common::Flavor::RealEtcd] {
        if flavor == common::Flavor::RealEtcd && common::real_etcd().is_none() {
            continue;
        }
        for (flags, advances) in
            [(&[][..], true), (&["--initial-election-tick-advance=false"][..], false)]
        {
            let mut cluster = Cluster::start_flavor(flavor, 3, flags);
            cluster.leader(ELECTION_WAIT).expect("a leader");
            let logs: Vec<String> =
                cluster.members.iter_mut().map(|m| m.full_log().join("\n")).collect();
            let advanced = logs.iter().filter(|l| l.contains("fast-forwarding")).count();
            assert_eq!(advanced > 0, advances, "{flavor:?} {flags:?}: {advanced} members advanced");
        }
    }
}

/// A leader whose disk stalls for longer than an election timeout keeps
/// leading: its WAL fsync runs on a thread of its own, so its raft thread goes
/// on heartbeating (etcd issues #13587, #7970), and the two followers commit
/// writes without it. Once the disk recovers, the leader applies them too.
#[test]
fn a_leader_whose_disk_stalls_keeps_leading_and_followers_keep_committing() {
    const STALL_MS: u64 = 3000;
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(ELECTION_WAIT).expect("leader");
    let follower = (leader + 1) % 3;
    let term = term_with_leader(&cluster, follower);

    cluster.stall_fsync(leader, STALL_MS);
    let follower_ep = cluster.members[follower].endpoint();
    // Three election timeouts' worth of stalled fsyncs (each write waits 3 s
    // on the leader), while writes go through a follower.
    for i in 0..3 {
        common::must_etcdctl(&follower_ep, &["put", &format!("k{i}"), "v"], None);
        std::thread::sleep(Duration::from_millis(STALL_MS / 2));
    }
    let stalled = cluster.members[leader].full_log();
    assert!(
        stalled.iter().any(|l| l.contains("this WAL fsync stalls")),
        "the leader's disk never stalled"
    );
    for i in 0..3 {
        assert_eq!(term_with_leader(&cluster, i), term, "member {i} saw an election");
    }
    assert_eq!(cluster.leader(ELECTION_WAIT), Some(leader), "the leader changed");

    cluster.stall_fsync(leader, 0);
    cluster.wait_for_equal_raft_indexes();
    let got = common::must_etcdctl(&cluster.members[leader].endpoint(), &["get", "k2"], None);
    assert_eq!(got, "k2\nv\n");
}
