//! The Lock and Election services' answers on their error paths (missing
//! leases, missing or empty leader keys, lost leadership, empty names and
//! keys) and their less obvious successes, compared with real etcd: the same
//! scenario runs on both servers and the transcripts must be equal.

mod common;

use common::{real_etcd, Flavor, Server};
use etcd_proto::etcdserverpb::kv_client::KvClient;
use etcd_proto::etcdserverpb::lease_client::LeaseClient;
use etcd_proto::etcdserverpb::{LeaseGrantRequest, LeaseLeasesRequest, PutRequest, RangeRequest};
use etcd_proto::v3electionpb::election_client::ElectionClient;
use etcd_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use etcd_proto::v3lockpb::lock_client::LockClient;
use etcd_proto::v3lockpb::{LockRequest, UnlockRequest};
use tonic::transport::Channel;

/// A lease ID no server has granted.
const MISSING_LEASE: i64 = 12345;

struct Clients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    lock: LockClient<Channel>,
    election: ElectionClient<Channel>,
}

async fn connect(server: &Server) -> Clients {
    let url = format!("http://{}", server.endpoint());
    let channel = Channel::from_shared(url).expect("url").connect().await.expect("connect");
    Clients {
        kv: KvClient::new(channel.clone()),
        lease: LeaseClient::new(channel.clone()),
        lock: LockClient::new(channel.clone()),
        election: ElectionClient::new(channel),
    }
}

/// "ok" or the error's code and message.
fn outcome<T>(result: Result<tonic::Response<T>, tonic::Status>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

fn leader_key(name: &str, key: &[u8], rev: i64, lease: i64) -> LeaderKey {
    LeaderKey { name: name.into(), key: key.to_vec(), rev, lease }
}

async fn grant(c: &mut Clients) -> i64 {
    c.lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.expect("grant").into_inner().id
}

async fn lease_count(c: &mut Clients) -> usize {
    c.lease.lease_leases(LeaseLeasesRequest {}).await.expect("leases").into_inner().leases.len()
}

async fn lease_of(c: &mut Clients, key: &[u8]) -> Option<i64> {
    let range = RangeRequest { key: key.to_vec(), ..Default::default() };
    let kvs = c.kv.range(range).await.expect("range").into_inner().kvs;
    kvs.first().map(|kv| kv.lease)
}

/// Runs the scenario; returns what a client observes, step by step.
async fn transcript(server: &Server) -> Vec<String> {
    let mut c = connect(server).await;
    let mut t = Vec::new();
    let mut note = |step: &str, what: String| t.push(format!("{step}: {what}"));

    let missing = LockRequest { name: "m".into(), lease: MISSING_LEASE };
    note("lock with a missing lease", outcome(c.lock.lock(missing).await));
    let missing = CampaignRequest { name: "e".into(), lease: MISSING_LEASE, value: "v".into() };
    note("campaign with a missing lease", outcome(c.election.campaign(missing).await));
    let ghost = || Some(leader_key("e", b"e/ghost", 5, MISSING_LEASE));
    let proclaim = ProclaimRequest { leader: None, value: "v".into() };
    note("proclaim without a leader", outcome(c.election.proclaim(proclaim).await));
    let proclaim = ProclaimRequest { leader: Some(LeaderKey::default()), value: "v".into() };
    note("proclaim with an empty leader", outcome(c.election.proclaim(proclaim).await));
    let proclaim = ProclaimRequest { leader: ghost(), value: "v".into() };
    note("proclaim by a non-leader", outcome(c.election.proclaim(proclaim).await));
    note(
        "resign without a leader",
        outcome(c.election.resign(ResignRequest { leader: None }).await),
    );
    let resign = ResignRequest { leader: Some(LeaderKey::default()) };
    note("resign with an empty leader", outcome(c.election.resign(resign).await));
    let resign = ResignRequest { leader: ghost() };
    note("resign by a non-leader", outcome(c.election.resign(resign).await));
    let leader = LeaderRequest { name: "e".into() };
    note("leader of an empty election", outcome(c.election.leader(leader).await));
    note("leader of an empty name", outcome(c.election.leader(LeaderRequest::default()).await));
    note("unlock an empty key", outcome(c.lock.unlock(UnlockRequest::default()).await));
    let unlock = UnlockRequest { key: "m/none".into() };
    note("unlock a missing key", outcome(c.lock.unlock(unlock).await));

    // Empty names work: the keys go under "/".
    let lease = grant(&mut c).await;
    let held = c.lock.lock(LockRequest { name: vec![], lease }).await.expect("lock").into_inner();
    note(
        "lock with an empty name",
        format!("key {:?}", held.key == format!("/{lease:x}").as_bytes()),
    );
    c.lock.unlock(UnlockRequest { key: held.key }).await.expect("unlock");
    let campaign = CampaignRequest { name: vec![], lease, value: "v".into() };
    let elected = c.election.campaign(campaign).await.expect("campaign").into_inner();
    let leader = elected.leader.expect("leader key");
    note(
        "campaign with an empty name",
        format!("key {:?}", leader.key == format!("/{lease:x}").as_bytes()),
    );
    c.election.resign(ResignRequest { leader: Some(leader) }).await.expect("resign");

    // A leader proclaiming with a lease that does not exist.
    let lease = grant(&mut c).await;
    let campaign = CampaignRequest { name: "p".into(), lease, value: "v1".into() };
    let leader = c.election.campaign(campaign).await.expect("campaign").into_inner();
    let leader = leader.leader.expect("leader key");
    let mut wrong = leader.clone();
    wrong.lease = MISSING_LEASE;
    let proclaim = ProclaimRequest { leader: Some(wrong), value: "v2".into() };
    note("proclaim with a missing lease", outcome(c.election.proclaim(proclaim).await));
    // With lease 0 the key moves to a fresh session lease.
    let before = lease_count(&mut c).await;
    let mut zero = leader.clone();
    zero.lease = 0;
    let proclaim = ProclaimRequest { leader: Some(zero), value: "v3".into() };
    note("proclaim with lease 0", outcome(c.election.proclaim(proclaim).await));
    let now = lease_of(&mut c, &leader.key).await.expect("leader key");
    note("... the key's lease", format!("new {}", now != lease && now != 0));
    note("... leases granted", format!("{}", lease_count(&mut c).await - before));
    // Resigning with lease 0 grants a lease too (the session's).
    let before = lease_count(&mut c).await;
    let mut zero = leader.clone();
    zero.lease = 0;
    note(
        "resign with lease 0",
        outcome(c.election.resign(ResignRequest { leader: Some(zero) }).await),
    );
    note("... leases granted", format!("{}", lease_count(&mut c).await - before));
    note("... the key", format!("{:?}", lease_of(&mut c, &leader.key).await));

    // A candidate that waited answers the header of the txn that queued it.
    let (a, b) = (grant(&mut c).await, grant(&mut c).await);
    let campaign = CampaignRequest { name: "w".into(), lease: a, value: "a".into() };
    let first = c.election.campaign(campaign).await.expect("campaign").into_inner();
    let mut waiter = c.election.clone();
    let second = tokio::spawn(async move {
        let campaign = CampaignRequest { name: "w".into(), lease: b, value: "b".into() };
        waiter.campaign(campaign).await.expect("campaign").into_inner()
    });
    let queued = RangeRequest {
        key: "w/".into(),
        range_end: "w0".into(),
        count_only: true,
        ..Default::default()
    };
    while c.kv.range(queued.clone()).await.expect("range").into_inner().count < 2 {
        tokio::task::yield_now().await;
    }
    for _ in 0..3 {
        let put = PutRequest { key: "other".into(), value: "x".into(), ..Default::default() };
        c.kv.put(put).await.expect("put");
    }
    c.election.resign(ResignRequest { leader: first.leader }).await.expect("resign");
    let second = second.await.expect("task");
    let header = second.header.expect("header").revision;
    let rev = second.leader.expect("leader key").rev;
    note("a candidate that waited", format!("header is its queueing txn's: {}", header == rev));

    // A Lock with a missing lease under a held lock fails the same way.
    let held = c.lock.lock(LockRequest { name: "q".into(), lease: a }).await.expect("lock");
    let missing = LockRequest { name: "q".into(), lease: MISSING_LEASE };
    note("lock behind a holder with a missing lease", outcome(c.lock.lock(missing).await));
    c.lock.unlock(UnlockRequest { key: held.into_inner().key }).await.expect("unlock");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_errors_are_real_etcds() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let ours = Server::start();
    let want = transcript(&oracle).await;
    let got = transcript(&ours).await;
    assert_eq!(got, want, "ours (left) differs from real etcd (right)");
    // The scenario's point, pinned so that both cannot drift together.
    assert!(want.contains(
        &"lock with a missing lease: Unknown: etcdserver: requested lease not found".to_string()
    ));
}
