//! Authentication and authorization, driven by the real etcdctl 3.4 and the
//! `etcd-client` crate: users, roles, key-range permissions, tokens; the same
//! transcript against real etcd as the oracle; state that survives kill -9;
//! a 3-member cluster where a token issued through one member works on every
//! member.

mod common;

use std::time::Duration;

use common::{etcdctl, real_etcd, Cluster, Flavor, Server};
use etcd_client::{Client, ConnectOptions, Permission};

/// One etcdctl call as a transcript line: the command, exit status, stdout
/// and stderr.
fn step(endpoint: &str, user: Option<&str>, args: &[&str], stdin: Option<&str>) -> String {
    let mut all: Vec<String> = Vec::new();
    if let Some(user) = user {
        all.push(format!("--user={user}"));
    }
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = etcdctl(endpoint, &refs, stdin);
    // The client's own JSON log lines carry timestamps and connection IDs.
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|line| !line.starts_with("{\"level\""))
        .map(|line| format!("{line}\n"))
        .collect();
    format!(
        "$ etcdctl {}\nexit {}\n{}{}",
        refs.join(" "),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        stderr,
    )
}

const ROOT: Option<&str> = Some("root:rootpw");
const ALICE: Option<&str> = Some("alice:alicepw");

/// The whole life of an auth setup, errors included.
fn transcript(ep: &str) -> Vec<String> {
    let none = None;
    let steps: Vec<(Option<&str>, Vec<&str>, Option<&str>)> = vec![
        (none, vec!["user", "add", "root", "--new-user-password=rootpw"], None),
        (none, vec!["user", "add", "root", "--new-user-password=x"], None),
        (none, vec!["auth", "enable"], None),
        (none, vec!["user", "grant-role", "root", "root"], None),
        (none, vec!["user", "add", "alice", "--new-user-password=alicepw"], None),
        (none, vec!["user", "add", "nopass", "--no-password"], None),
        (none, vec!["role", "add", "reader"], None),
        (none, vec!["role", "add", "reader"], None),
        (none, vec!["role", "grant-permission", "reader", "read", "foo", "--prefix"], None),
        (none, vec!["role", "grant-permission", "reader", "readwrite", "w"], None),
        (none, vec!["role", "grant-permission", "reader", "write", "range/a", "range/c"], None),
        (none, vec!["role", "grant-permission", "reader", "read", "b", "a"], None),
        (none, vec!["role", "grant-permission", "missing", "read", "a"], None),
        (none, vec!["user", "grant-role", "alice", "reader"], None),
        (none, vec!["user", "grant-role", "alice", "missing"], None),
        (none, vec!["user", "grant-role", "ghost", "reader"], None),
        (none, vec!["role", "get", "reader"], None),
        (none, vec!["user", "get", "alice"], None),
        (none, vec!["user", "get", "alice", "--detail"], None),
        (none, vec!["user", "list"], None),
        (none, vec!["role", "list"], None),
        (none, vec!["put", "foo1", "before"], None),
        (none, vec!["auth", "enable"], None),
        // Without credentials, nothing but authenticating works.
        (none, vec!["put", "x", "1"], None),
        (none, vec!["get", "foo1"], None),
        (none, vec!["user", "list"], None),
        (Some("alice:wrong"), vec!["get", "foo1"], None),
        (Some("ghost:pw"), vec!["get", "foo1"], None),
        (Some("nopass:pw"), vec!["get", "foo1"], None),
        (ALICE, vec!["get", "foo1"], None),
        (ALICE, vec!["get", "foo", "--prefix"], None),
        (ALICE, vec!["get", "fo", "--prefix"], None),
        (ALICE, vec!["put", "foo1", "v"], None),
        (ALICE, vec!["put", "w", "v"], None),
        (ALICE, vec!["get", "w"], None),
        (ALICE, vec!["put", "range/b", "v"], None),
        (ALICE, vec!["put", "range/c", "v"], None),
        (ALICE, vec!["del", "range/a", "range/c"], None),
        (ALICE, vec!["del", "range/a", "range/d"], None),
        (ALICE, vec!["txn"], Some("value(\"w\") = \"v\"\n\nput w v2\n\nput foo1 no\n\n")),
        (ALICE, vec!["txn"], Some("value(\"x\") = \"v\"\n\nput w v2\n\n\n")),
        (ALICE, vec!["user", "list"], None),
        (ALICE, vec!["user", "get", "alice"], None),
        (ALICE, vec!["user", "get", "root"], None),
        (ALICE, vec!["role", "get", "reader"], None),
        (ALICE, vec!["role", "get", "root"], None),
        (ALICE, vec!["auth", "disable"], None),
        (ROOT, vec!["put", "foo1", "after"], None),
        (ROOT, vec!["get", "foo1"], None),
        (ROOT, vec!["user", "delete", "root"], None),
        (ROOT, vec!["role", "delete", "root"], None),
        (ROOT, vec!["user", "revoke-role", "root", "root"], None),
        (ROOT, vec!["user", "revoke-role", "alice", "root"], None),
        (ROOT, vec!["user", "passwd", "alice", "--interactive=false"], Some("newpw\n")),
        (ALICE, vec!["get", "foo1"], None),
        (Some("alice:newpw"), vec!["get", "foo1"], None),
        (ROOT, vec!["role", "revoke-permission", "reader", "w"], None),
        (ROOT, vec!["role", "revoke-permission", "reader", "w"], None),
        (Some("alice:newpw"), vec!["put", "w", "v3"], None),
        (ROOT, vec!["role", "delete", "reader"], None),
        (ROOT, vec!["user", "get", "alice"], None),
        (Some("alice:newpw"), vec!["get", "foo1"], None),
        (ROOT, vec!["user", "delete", "alice"], None),
        (ROOT, vec!["user", "delete", "alice"], None),
        (ROOT, vec!["auth", "disable"], None),
        (none, vec!["put", "x", "1"], None),
        (none, vec!["get", "foo1"], None),
        (none, vec!["user", "list"], None),
        (none, vec!["role", "list"], None),
    ];
    steps.into_iter().map(|(user, args, stdin)| step(ep, user, &args, stdin)).collect()
}

#[test]
fn etcdctl_auth_transcript_matches_real_etcd() {
    assert!(
        real_etcd().is_some(),
        "real etcd is required: apt-get install -y etcd-server (or run .ci/run)"
    );
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = transcript(&ours.endpoint());
    let want = transcript(&oracle.endpoint());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "differs from real etcd");
    }
    assert_eq!(got.len(), want.len());
}

async fn connect(endpoints: &[String], user: Option<(&str, &str)>) -> Client {
    let mut options = ConnectOptions::new().with_timeout(Duration::from_secs(10));
    if let Some((name, password)) = user {
        options = options.with_user(name, password);
    }
    Client::connect(endpoints, Some(options)).await.expect("connect")
}

/// root with the root role, alice reading and writing `a/`, auth enabled.
async fn set_up(client: &mut Client) {
    client.user_add("root", "rootpw", None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.user_add("alice", "alicepw", None).await.unwrap();
    client.role_add("app").await.unwrap();
    client.role_grant_permission("app", Permission::read_write("a/").with_prefix()).await.unwrap();
    client.user_grant_role("alice", "app").await.unwrap();
    client.auth_enable().await.unwrap();
}

/// `AuthStatus` as root, through etcd's generated client (the `etcd-client`
/// crate has no call for it): (enabled, auth revision).
async fn auth_status(endpoint: &str) -> (bool, u64) {
    use etcd_proto::etcdserverpb::auth_client::AuthClient;
    use etcd_proto::etcdserverpb::{AuthStatusRequest, AuthenticateRequest};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth = AuthClient::new(channel);
    let login = AuthenticateRequest { name: "root".into(), password: "rootpw".into() };
    let token = auth.authenticate(login).await.unwrap().into_inner().token;
    let mut request = tonic::Request::new(AuthStatusRequest {});
    request.metadata_mut().insert("token", token.parse().unwrap());
    let status = auth.auth_status(request).await.unwrap().into_inner();
    (status.enabled, status.auth_revision)
}

fn message(err: etcd_client::Error) -> String {
    match err {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_state_and_permissions_survive_kill_9() {
    let mut server = Server::start();
    let endpoint = vec![server.endpoint()];
    set_up(&mut connect(&endpoint, None).await).await;
    let mut alice = connect(&endpoint, Some(("alice", "alicepw"))).await;
    alice.put("a/1", "v", None).await.unwrap();
    server.kill9();
    server.restart();
    // Tokens are in memory: a fresh client authenticates again.
    let mut alice = connect(&endpoint, Some(("alice", "alicepw"))).await;
    assert_eq!(alice.get("a/1", None).await.unwrap().kvs()[0].value(), b"v");
    let denied = alice.put("b", "v", None).await.expect_err("outside alice's range");
    assert_eq!(message(denied), "etcdserver: permission denied");
    let mut anonymous = connect(&endpoint, None).await;
    let empty = anonymous.get("a/1", None).await.expect_err("no credentials");
    assert_eq!(message(empty), "etcdserver: user name is empty");
    let mut root = connect(&endpoint, Some(("root", "rootpw"))).await;
    assert!(auth_status(&endpoint[0]).await.0);
    let users = root.user_list().await.unwrap();
    assert_eq!(users.users(), ["alice", "root"]);
    let wrong = Client::connect(&endpoint, Some(ConnectOptions::new().with_user("alice", "bad")));
    let err = wrong.await.err().expect("a wrong password is refused");
    assert_eq!(message(err), "etcdserver: authentication failed, invalid user ID or password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_permission_stops_the_next_write_on_every_member() {
    let cluster = Cluster::start(3, &[]);
    let endpoints: Vec<String> = cluster.members.iter().map(Server::endpoint).collect();
    set_up(&mut connect(&endpoints[..1], None).await).await;
    // Tokens issued through one member are accepted by every member.
    let mut root = connect(&endpoints[1..2], Some(("root", "rootpw"))).await;
    for (i, endpoint) in endpoints.iter().enumerate() {
        let mut alice = connect(std::slice::from_ref(endpoint), Some(("alice", "alicepw"))).await;
        alice.put(format!("a/{i}"), "v", None).await.unwrap();
        let got = alice.get("a/", Some(etcd_client::GetOptions::new().with_prefix())).await;
        assert_eq!(got.unwrap().kvs().len(), i + 1, "member {i}");
    }
    let mut alice = connect(&endpoints[2..], Some(("alice", "alicepw"))).await;
    root.role_revoke_permission(
        "app",
        "a/",
        Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    // The member alice talks to may apply the revoke a moment after root's
    // member answered; from then on no write of hers passes. A write checked
    // before the revoke was applied there and applied after it is refused as
    // checked at an old auth revision (clients retry it), and the retry is denied.
    let mut refused = None;
    let mut refusals = Vec::new();
    for _ in 0..50 {
        match alice.put("a/after", "v", None).await {
            Ok(_) if refusals.is_empty() => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(_) => panic!("a write passed after a refusal: {refusals:?}"),
            Err(err) => {
                let text = message(err);
                if text != "etcdserver: revision of auth store is old" {
                    refused = Some(text);
                    break;
                }
                refusals.push(text);
            }
        }
    }
    assert_eq!(refused.as_deref(), Some("etcdserver: permission denied"));
    for endpoint in &endpoints {
        let mut alice = connect(std::slice::from_ref(endpoint), Some(("alice", "alicepw"))).await;
        // A lagging member may still check at the old auth revision; its
        // refusal at apply is retried, as clients do, and must end denied.
        let mut text = String::new();
        for _ in 0..50 {
            text = message(alice.put("a/x", "v", None).await.expect_err("revoked"));
            if text != "etcdserver: revision of auth store is old" {
                break;
            }
        }
        assert_eq!(text, "etcdserver: permission denied");
    }
    // Every member reports the same auth revision.
    let mut revisions = Vec::new();
    for endpoint in &endpoints {
        revisions.push(auth_status(endpoint).await.1);
    }
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "{revisions:?}");
}

/// What alice's lock and election calls answer with auth on: inside her
/// prefix they act as her and succeed, outside it they are denied.
async fn recipes_as_alice(endpoint: &str) -> Vec<String> {
    let endpoints = vec![endpoint.to_string()];
    set_up(&mut connect(&endpoints, None).await).await;
    let mut alice = connect(&endpoints, Some(("alice", "alicepw"))).await;
    let lease = alice.lease_grant(30, None).await.unwrap().id();
    let mut outcomes = Vec::new();
    let mut note = |what: &str, result: Result<(), etcd_client::Error>| {
        outcomes.push(format!("{what}: {}", result.map_or_else(message, |()| "ok".to_string())));
    };
    let lock = etcd_client::LockOptions::new().with_lease(lease);
    match alice.lock("a/lock", Some(lock.clone())).await {
        Ok(locked) => {
            let key = locked.key().to_vec();
            note("lock a/lock", Ok(()));
            note("unlock", alice.unlock(key).await.map(drop));
        }
        Err(err) => note("lock a/lock", Err(err)),
    }
    note("lock b/lock", alice.lock("b/lock", Some(lock)).await.map(drop));
    note("campaign a/el", alice.campaign("a/el", "me", lease).await.map(drop));
    let leader = alice.leader("a/el").await;
    let value = leader.as_ref().ok().and_then(|l| l.kv()).map(|kv| kv.value().to_vec());
    note("leader a/el", leader.map(drop));
    assert_eq!(value.as_deref(), Some(&b"me"[..]), "alice leads a/el");
    note("campaign b/el", alice.campaign("b/el", "me", lease).await.map(drop));
    note("leader b/el", alice.leader("b/el").await.map(drop));
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_act_as_their_caller_as_in_real_etcd() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = recipes_as_alice(&ours.endpoint()).await;
    let want = recipes_as_alice(&oracle.endpoint()).await;
    eprintln!("{got:#?}");
    assert_eq!(got, want, "differs from real etcd");
    assert_eq!(got[0], "lock a/lock: ok", "the lock inside alice's prefix is hers");
}

/// `--auth-token` for JWT with the RSA test key (crates/auth/testdata).
fn jwt_flag(private: bool, ttl: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/auth/testdata");
    let private = if private { format!(",priv-key={dir}/rsa.key") } else { String::new() };
    format!("--auth-token=jwt,pub-key={dir}/rsa.crt{private},sign-method=RS256,ttl={ttl}")
}

#[test]
fn etcdctl_auth_transcript_with_jwt_matches_real_etcd() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let flag = jwt_flag(true, "10m");
    let ours = Server::start_with(Flavor::Ours, &[&flag]);
    let oracle = Server::start_with(Flavor::RealEtcd, &[&flag]);
    let got = transcript(&ours.endpoint());
    let want = transcript(&oracle.endpoint());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "differs from real etcd");
    }
    assert_eq!(got.len(), want.len());
}

/// `Authenticate` through etcd's generated client: the token or the error.
async fn authenticate(endpoint: &str, name: &str, password: &str) -> Result<String, String> {
    use etcd_proto::etcdserverpb::auth_client::AuthClient;
    use etcd_proto::etcdserverpb::AuthenticateRequest;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let login = AuthenticateRequest { name: name.into(), password: password.into() };
    match AuthClient::new(channel).authenticate(login).await {
        Ok(response) => Ok(response.into_inner().token),
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// A Range with `token`: Ok, or the status.
async fn get_with_token(endpoint: &str, token: &str) -> Result<(), String> {
    use etcd_proto::etcdserverpb::kv_client::KvClient;
    use etcd_proto::etcdserverpb::RangeRequest;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request =
        tonic::Request::new(RangeRequest { key: b"a/1".to_vec(), ..Default::default() });
    request.metadata_mut().insert("token", token.parse().unwrap());
    match KvClient::new(channel).range(request).await {
        Ok(_) => Ok(()),
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// What JWT tokens answer on one server: a good one, one signed with another
/// key, one whose auth revision is old, one expired, and a verify-only
/// member's `Authenticate`.
async fn jwt_outcomes(flavor: Flavor) -> Vec<String> {
    let flag = jwt_flag(true, "2s");
    let server = Server::start_with(flavor, &[&flag]);
    let endpoint = server.endpoint();
    set_up(&mut connect(std::slice::from_ref(&endpoint), None).await).await;
    let token = authenticate(&endpoint, "alice", "alicepw").await.expect("alice logs in");
    let mut outcomes = vec![format!("good: {:?}", get_with_token(&endpoint, &token).await)];
    // The same claims signed with another key.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/auth/testdata");
    let other = std::fs::read(format!("{dir}/other.key")).unwrap();
    let forger = etcd_auth::JwtTokens::new("RS256", Some(&other), None, 60).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let forged = forger.assign("root", 100, now.as_secs()).unwrap();
    outcomes.push(format!("forged: {:?}", get_with_token(&endpoint, &forged).await));
    // Any auth change makes the token's revision old.
    let mut root = connect(std::slice::from_ref(&endpoint), Some(("root", "rootpw"))).await;
    root.role_add("other").await.unwrap();
    outcomes.push(format!("old revision: {:?}", get_with_token(&endpoint, &token).await));
    let fresh = authenticate(&endpoint, "alice", "alicepw").await.expect("alice logs in");
    tokio::time::sleep(Duration::from_secs(4)).await;
    outcomes.push(format!("expired: {:?}", get_with_token(&endpoint, &fresh).await));
    drop(server);
    // A member with only the public key verifies but does not issue.
    let verify_only = Server::start_with(flavor, &[&jwt_flag(false, "2s")]);
    let endpoint = verify_only.endpoint();
    set_up(&mut connect(std::slice::from_ref(&endpoint), None).await).await;
    outcomes.push(format!("verify-only: {:?}", authenticate(&endpoint, "alice", "alicepw").await));
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_are_refused_as_real_etcd_refuses_them() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let got = jwt_outcomes(Flavor::Ours).await;
    let want = jwt_outcomes(Flavor::RealEtcd).await;
    eprintln!("{got:#?}");
    assert_eq!(got, want, "differs from real etcd");
    assert_eq!(got[0], "good: Ok(())");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_state_survives_snapshot_save_and_restore() {
    let original = Server::start();
    let endpoint = vec![original.endpoint()];
    set_up(&mut connect(&endpoint, None).await).await;
    let mut alice = connect(&endpoint, Some(("alice", "alicepw"))).await;
    alice.put("a/1", "v", None).await.unwrap();
    let temp = tempfile::tempdir().expect("tempdir");
    let backup = temp.path().join("backup.db").display().to_string();
    let saved = etcdctl(&endpoint[0], &["--user=root:rootpw", "snapshot", "save", &backup], None);
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    drop(original);

    let target = tempfile::tempdir().expect("tempdir");
    let mut restored = Server::new(Flavor::Ours, "restored", target, &[]);
    let restore = std::process::Command::new(env!("CARGO_BIN_EXE_etcdutl"))
        .args(["snapshot", "restore", &backup])
        .arg(format!("--data-dir={}", restored.data_dir.display()))
        .output()
        .expect("run etcdutl");
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    restored.restart();
    let endpoint = vec![restored.endpoint()];
    let mut alice = connect(&endpoint, Some(("alice", "alicepw"))).await;
    assert_eq!(alice.get("a/1", None).await.unwrap().kvs()[0].value(), b"v");
    let denied = alice.put("b", "v", None).await.expect_err("outside alice's range");
    assert_eq!(message(denied), "etcdserver: permission denied");
    let mut anonymous = connect(&endpoint, None).await;
    let empty = anonymous.get("a/1", None).await.expect_err("no credentials");
    assert_eq!(message(empty), "etcdserver: user name is empty");
    let mut root = connect(&endpoint, Some(("root", "rootpw"))).await;
    assert_eq!(root.user_list().await.unwrap().users(), ["alice", "root"]);
    assert!(auth_status(&endpoint[0]).await.0, "auth stays enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_lease_checks_hold_on_a_follower() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).expect("a leader");
    let endpoints: Vec<String> = cluster.members.iter().map(Server::endpoint).collect();
    let follower = vec![endpoints[(leader + 1) % 3].clone()];
    set_up(&mut connect(&endpoints[leader..=leader], None).await).await;
    let mut alice = connect(&follower, Some(("alice", "alicepw"))).await;
    let mut root = connect(&endpoints[leader..=leader], Some(("root", "rootpw"))).await;

    // A watch outside alice's range is cancelled with etcd's reason.
    let mut denied_events = alice.watch("b", None).await.unwrap();
    let mut cancel_reason = None;
    while let Some(response) = denied_events.message().await.unwrap() {
        if response.canceled() {
            cancel_reason = Some(response.cancel_reason().to_string());
            break;
        }
    }
    // etcd puts the gRPC error's Go text in the reason.
    let reason = "rpc error: code = PermissionDenied desc = etcdserver: permission denied";
    assert_eq!(cancel_reason.as_deref(), Some(reason));
    // One inside it delivers.
    let prefix = etcd_client::WatchOptions::new().with_prefix();
    let mut events = alice.watch("a/", Some(prefix)).await.unwrap();
    root.put("a/w", "v", None).await.unwrap();
    let delivered = loop {
        let response = events.message().await.unwrap().expect("stream open");
        if let Some(event) = response.events().first() {
            break event.kv().expect("kv").key().to_vec();
        }
    };
    assert_eq!(delivered, b"a/w");

    // LeaseTimeToLive with keys needs read on every attached key.
    let lease = root.lease_grant(60, None).await.unwrap().id();
    let attach = etcd_client::PutOptions::new().with_lease(lease);
    root.put("a/l", "v", Some(attach.clone())).await.unwrap();
    let keys = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
    let ttl = alice.lease_time_to_live(lease, Some(keys.clone())).await.unwrap();
    assert_eq!(ttl.keys(), [b"a/l".to_vec()]);
    root.put("b/l", "v", Some(attach)).await.unwrap();
    let err = alice.lease_time_to_live(lease, Some(keys)).await.expect_err("b/l is not hers");
    assert_eq!(message(err), "etcdserver: permission denied");
    // Revoking a lease needs write on its keys.
    let err = alice.lease_revoke(lease).await.expect_err("b/l is not hers");
    assert_eq!(message(err), "etcdserver: permission denied");
    root.lease_revoke(lease).await.unwrap();
}
