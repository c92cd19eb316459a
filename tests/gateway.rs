//! The HTTP/JSON gateway (`curl -X POST http://host:2379/v3/...`) against real
//! etcd as the oracle: the same requests give the same JSON bodies and HTTP
//! statuses, apart from the IDs and term that differ per cluster.

mod common;

use std::process::Command;

use common::{real_etcd, Flavor, Server};
use serde_json::Value;

/// POSTs `body` to `path`; returns the HTTP status and the JSON body.
fn post(endpoint: &str, path: &str, body: &str) -> (u16, Value) {
    post_with(endpoint, None, path, body)
}

/// POSTs `body` to `path`, with `token` in the `Authorization` header if given.
fn post_with(endpoint: &str, token: Option<&str>, path: &str, body: &str) -> (u16, Value) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "-X", "POST", "-d", body, "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        curl.args(["-H", &format!("Authorization: {token}")]);
    }
    let out = curl.arg(format!("http://{endpoint}{path}")).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json, code) = text.rsplit_once('\n').expect("curl printed the status");
    let value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{path}: {e}: {json}"));
    (code.parse().expect("a status code"), value)
}

/// Drops what legitimately differs between two clusters.
fn normalise(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for id in ["cluster_id", "member_id", "raft_term"] {
                map.remove(id);
            }
            for value in map.values_mut() {
                *value = normalise(value.take());
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = normalise(item.take());
            }
        }
        _ => {}
    }
    v
}

/// base64 of a string, as the gateway carries bytes.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        out.push_str(&"=".repeat(3 - chunk.len()));
    }
    out
}

fn sequence(endpoint: &str) -> Vec<(u16, Value)> {
    let (key, v1, v2) = (b64("foo"), b64("bar"), b64("baz"));
    let steps = [
        ("/v3/kv/put", format!(r#"{{"key":"{key}","value":"{v1}"}}"#)),
        ("/v3/kv/put", format!(r#"{{"key":"{}","value":"{v1}"}}"#, b64("foo/a"))),
        ("/v3/kv/range", format!(r#"{{"key":"{key}"}}"#)),
        ("/v3/kv/put", format!(r#"{{"key":"{key}","value":"{v2}","prev_kv":true}}"#)),
        (
            "/v3/kv/range",
            format!(r#"{{"key":"{key}","range_end":"{}","count_only":true}}"#, b64("fop")),
        ),
        (
            "/v3/kv/range",
            format!(
                r#"{{"key":"{key}","range_end":"{}","sort_order":"DESCEND","keys_only":true}}"#,
                b64("fop")
            ),
        ),
        ("/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64("missing"))),
        ("/v3/kv/put", r#"{"key":""}"#.to_string()),
        ("/v3/kv/range", format!(r#"{{"key":"{key}","revision":"99"}}"#)),
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"7"}"#.to_string()),
        ("/v3/kv/put", format!(r#"{{"key":"{}","value":"{v1}","lease":"7"}}"#, b64("leased"))),
        ("/v3/kv/put", format!(r#"{{"key":"{key}","value":"{v1}","lease":"8"}}"#)),
        ("/v3/lease/leases", "{}".to_string()),
        (
            "/v3/kv/txn",
            format!(
                r#"{{"compare":[{{"target":"VALUE","key":"{key}","value":"{v2}"}}],"success":[{{"request_range":{{"key":"{key}"}}}},{{"request_put":{{"key":"{}","value":"{v1}"}}}}],"failure":[]}}"#,
                b64("t")
            ),
        ),
        (
            "/v3/kv/deleterange",
            format!(r#"{{"key":"{key}","range_end":"{}","prev_kv":true}}"#, b64("fop")),
        ),
        ("/v3/kv/lease/revoke", r#"{"ID":"7"}"#.to_string()),
        ("/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64("leased"))),
        ("/v3/kv/compaction", r#"{"revision":"4"}"#.to_string()),
        ("/v3/kv/range", format!(r#"{{"key":"{key}","revision":"2"}}"#)),
        ("/v3/kv/compaction", r#"{"revision":"1000"}"#.to_string()),
    ];
    steps
        .iter()
        .map(|(path, body)| {
            let (code, value) = post(endpoint, path, body);
            (code, normalise(value))
        })
        .collect()
}

#[test]
fn json_gateway_answers_what_real_etcd_answers() {
    assert!(
        real_etcd().is_some(),
        "real etcd is required: apt-get install -y etcd-server (or run .ci/run)"
    );
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = sequence(&ours.endpoint());
    let want = sequence(&oracle.endpoint());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "step {i} differs from real etcd");
    }
}

/// A watch over the gateway streams `{"result": ...}` lines; keep-alive answers
/// once per request and ends.
fn streaming_sequence(endpoint: &str) -> Vec<Value> {
    use std::io::BufRead;
    let key = b64("w");
    let mut watch = Command::new("curl")
        .args(["-s", "-N", "--max-time", "20", "-X", "POST", "-d"])
        .arg(format!(r#"{{"create_request":{{"key":"{key}","prev_kv":true}}}}"#))
        .arg(format!("http://{endpoint}/v3/watch"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut lines = std::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut next = || -> Value {
        let line = lines.next().expect("a watch response").expect("read");
        normalise(serde_json::from_str(&line).expect("one JSON object per line"))
    };
    let mut out = vec![next()];
    post(endpoint, "/v3/kv/put", &format!(r#"{{"key":"{key}","value":"{}"}}"#, b64("1")));
    post(endpoint, "/v3/kv/deleterange", &format!(r#"{{"key":"{key}"}}"#));
    out.push(next());
    out.push(next());
    let _ = watch.kill();
    let _ = watch.wait();
    post(endpoint, "/v3/lease/grant", r#"{"TTL":"60","ID":"9"}"#);
    for id in ["9", "12345"] {
        let (code, value) = post(endpoint, "/v3/lease/keepalive", &format!(r#"{{"ID":"{id}"}}"#));
        assert_eq!(code, 200);
        out.push(normalise(value));
    }
    out
}

#[test]
fn json_gateway_streams_watch_events_and_keep_alives_as_real_etcd() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = streaming_sequence(&ours.endpoint());
    let want = streaming_sequence(&oracle.endpoint());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "streamed response {i} differs from real etcd");
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn json_gateway_serves_cluster_and_maintenance_and_refuses_bad_json() {
    let server = Server::start();
    let endpoint = server.endpoint();
    let (code, members) = post(&endpoint, "/v3/cluster/member/list", "{}");
    assert_eq!(code, 200);
    assert_eq!(members["members"][0]["name"], "node1");
    assert_eq!(members["members"][0]["clientURLs"][0], format!("http://{endpoint}"));
    let (code, status) = post(&endpoint, "/v3/maintenance/status", "");
    assert_eq!(code, 200);
    assert_eq!(status["version"], "3.5.13");
    assert_eq!(status["leader"], status["header"]["member_id"]);
    // etcd 3.5 fills the header of an alarm response (3.4 left it out).
    let (code, alarms) = post(&endpoint, "/v3/maintenance/alarm", r#"{"action":"GET"}"#);
    assert_eq!(code, 200);
    assert!(alarms["header"]["revision"].is_string() && alarms.get("alarms").is_none());
    let (code, error) = post(&endpoint, "/v3/kv/range", "{bad");
    assert_eq!(code, 400);
    assert_eq!(error["code"], 3);
    assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()));
}

/// Sets up auth through `/v3/auth/*`, then uses a token from
/// `/v3/auth/authenticate` in the `Authorization` header. Tokens differ per
/// server, so each answer's token is checked for presence and dropped.
fn auth_sequence(endpoint: &str) -> Vec<(u16, Value)> {
    let mut out = Vec::new();
    let setup = [
        ("/v3/auth/user/add", r#"{"name":"root","password":"rootpw"}"#.to_string()),
        ("/v3/auth/user/add", r#"{"name":"root","password":"again"}"#.to_string()),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#.to_string()),
        ("/v3/auth/user/add", r#"{"name":"alice","password":"alicepw"}"#.to_string()),
        ("/v3/auth/role/add", r#"{"name":"reader"}"#.to_string()),
        (
            "/v3/auth/role/grant",
            format!(
                r#"{{"name":"reader","perm":{{"permType":"READ","key":"{}","range_end":"{}"}}}}"#,
                b64("foo"),
                b64("fop")
            ),
        ),
        ("/v3/auth/user/grant", r#"{"user":"alice","role":"reader"}"#.to_string()),
        ("/v3/auth/enable", "{}".to_string()),
        ("/v3/kv/put", format!(r#"{{"key":"{}","value":"{}"}}"#, b64("foo"), b64("v"))),
        ("/v3/auth/authenticate", r#"{"name":"root","password":"wrong"}"#.to_string()),
    ];
    for (path, body) in &setup {
        out.push(post(endpoint, path, body));
    }
    let login = |name: &str, password: &str| {
        let body = format!(r#"{{"name":"{name}","password":"{password}"}}"#);
        let (code, mut value) = post(endpoint, "/v3/auth/authenticate", &body);
        assert_eq!(code, 200, "{value}");
        let token = value["token"].as_str().expect("a token").to_string();
        assert!(!token.is_empty());
        value.as_object_mut().unwrap().remove("token");
        (token, (code, value))
    };
    let (root, answer) = login("root", "rootpw");
    out.push(answer);
    let (alice, answer) = login("alice", "alicepw");
    out.push(answer);
    let as_root = [
        ("/v3/kv/put", format!(r#"{{"key":"{}","value":"{}"}}"#, b64("foo"), b64("v"))),
        ("/v3/auth/user/list", "{}".to_string()),
        ("/v3/auth/role/list", "{}".to_string()),
        ("/v3/auth/role/get", r#"{"role":"reader"}"#.to_string()),
        ("/v3/auth/user/get", r#"{"name":"alice"}"#.to_string()),
        ("/v3/auth/user/delete", r#"{"name":"root"}"#.to_string()),
    ];
    for (path, body) in &as_root {
        out.push(post_with(endpoint, Some(&root), path, body));
    }
    let as_alice = [
        ("/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64("foo"))),
        ("/v3/kv/put", format!(r#"{{"key":"{}","value":"{}"}}"#, b64("foo"), b64("w"))),
        ("/v3/auth/user/list", "{}".to_string()),
    ];
    for (path, body) in &as_alice {
        out.push(post_with(endpoint, Some(&alice), path, body));
    }
    out.push(post_with(
        endpoint,
        Some("not-a-token"),
        "/v3/kv/range",
        &format!(r#"{{"key":"{}"}}"#, b64("foo")),
    ));
    out.push(post_with(endpoint, Some(&root), "/v3/auth/disable", "{}"));
    out.push(post(endpoint, "/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("foo"))));
    out.into_iter().map(|(code, value)| (code, normalise(value))).collect()
}

#[test]
fn json_gateway_serves_auth_with_the_authorization_header_as_real_etcd() {
    assert!(real_etcd().is_some(), "real etcd is required: apt-get install -y etcd-server");
    let ours = Server::start();
    let oracle = Server::start_with(Flavor::RealEtcd, &[]);
    let got = auth_sequence(&ours.endpoint());
    let want = auth_sequence(&oracle.endpoint());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "step {i} differs from real etcd");
    }
    assert_eq!(got.len(), want.len());
}

/// The same calls under `/v3beta/`, which etcd 3.4's clients and scripts use.
fn v3beta_sequence(endpoint: &str) -> Vec<(u16, Value)> {
    let key = b64("beta");
    vec![
        post(endpoint, "/v3beta/kv/put", &format!(r#"{{"key":"{key}","value":"{}"}}"#, b64("1"))),
        post(endpoint, "/v3beta/kv/range", &format!(r#"{{"key":"{key}"}}"#)),
        post(endpoint, "/v3/kv/range", &format!(r#"{{"key":"{key}"}}"#)),
        post(endpoint, "/v3beta/lease/grant", r#"{"TTL":60,"ID":7}"#),
        post(endpoint, "/v3beta/kv/lease/leases", "{}"),
    ]
}

#[test]
fn json_gateway_serves_v3beta_as_real_etcd() {
    let ours = Server::start();
    let got: Vec<_> = v3beta_sequence(&ours.endpoint())
        .into_iter()
        .map(|(code, v)| (code, normalise(v)))
        .collect();
    assert_eq!(got[0].0, 200, "{got:?}");
    assert_eq!(got[1], got[2], "/v3beta/kv/range answers as /v3/kv/range");
    if real_etcd().is_none() {
        return;
    }
    let etcd = Server::start_with(Flavor::RealEtcd, &[]);
    let want: Vec<_> = v3beta_sequence(&etcd.endpoint())
        .into_iter()
        .map(|(code, v)| (code, normalise(v)))
        .collect();
    assert_eq!(got, want);
}

/// `--max-concurrent-streams`: with as many gateway watches open as the
/// limit, the next call waits (here: past curl's 3 s timeout); once a watch
/// ends, calls go through again. Real etcd's gateway behaves the same (its
/// calls share one gRPC connection to the server).
fn stream_limit_holds(flavor: Flavor) {
    const LIMIT: usize = 3;
    let server = Server::start_with(flavor, &["--max-concurrent-streams=3"]);
    let endpoint = server.endpoint();
    let watch_body = format!(r#"{{"create_request":{{"key":"{}"}}}}"#, b64("foo"));
    let mut watches: Vec<std::process::Child> = (0..LIMIT)
        .map(|_| {
            Command::new("curl")
                .args(["-s", "-N", "-X", "POST", "-d", &watch_body])
                .arg(format!("http://{endpoint}/v3/watch"))
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("curl watch")
        })
        .collect();
    // Every watch is open once the server answers with its created event; a
    // short wait is enough on a loopback connection (a range sent too early
    // would only make the check below pass for the wrong reason if it then
    // succeeded, which it cannot while the watches hold every stream).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let range = |timeout: &str| {
        Command::new("curl")
            .args(["-s", "-m", timeout, "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-d", &format!(r#"{{"key":"{}"}}"#, b64("foo"))])
            .arg(format!("http://{endpoint}/v3/kv/range"))
            .output()
            .expect("curl range")
    };
    let waited = range("3");
    assert_eq!(waited.status.code(), Some(28), "{flavor:?}: the call past the limit was served");
    let mut first = watches.remove(0);
    let _ = first.kill();
    let _ = first.wait();
    let served = range("10");
    assert_eq!(String::from_utf8_lossy(&served.stdout), "200", "{flavor:?}: after a watch ended");
    for mut watch in watches {
        let _ = watch.kill();
        let _ = watch.wait();
    }
}

#[test]
fn the_stream_limit_makes_the_next_gateway_call_wait() {
    stream_limit_holds(Flavor::Ours);
    if real_etcd().is_some() {
        stream_limit_holds(Flavor::RealEtcd);
    }
}

#[test]
fn enable_grpc_gateway_false_leaves_only_the_plain_http_endpoints() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && real_etcd().is_none() {
            continue;
        }
        let server = Server::start_with(flavor, &["--enable-grpc-gateway=false"]);
        let url = format!("http://{}/v3/kv/range", server.endpoint());
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", "{}", &url])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{flavor:?}: the gateway answered");
        let health = Command::new("curl")
            .args(["-s", &format!("http://{}/health", server.endpoint())])
            .output()
            .expect("curl");
        assert!(String::from_utf8_lossy(&health.stdout).contains("true"), "{flavor:?}");
        // gRPC is unaffected.
        common::must_etcdctl(&server.endpoint(), &["put", "k", "v"], None);
    }
}

/// `curl` a GET with extra headers; the status line's code and the headers.
fn get_with_headers(url: &str, headers: &[&str], method: &str) -> (u16, String) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "-o", "/dev/null", "-D", "-", "-X", method]);
    for h in headers {
        curl.args(["-H", h]);
    }
    let out = curl.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[test]
fn host_whitelist_and_cors_guard_plain_http_as_in_etcd() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && real_etcd().is_none() {
            continue;
        }
        // Defaults: any host, and every response allows any origin.
        let open = Server::start_with(flavor, &[]);
        let url = format!("http://{}/version", open.endpoint());
        let (code, headers) = get_with_headers(&url, &["Host: evil.example"], "GET");
        assert_eq!(code, 200, "{flavor:?}: {headers}");
        assert!(headers.contains("access-control-allow-origin: *"), "{flavor:?}: {headers}");

        let guarded = Server::start_with(
            flavor,
            &["--host-whitelist=localhost,127.0.0.1", "--cors=http://ui.example:8080"],
        );
        let url = format!("http://{}/version", guarded.endpoint());
        let (code, _) = get_with_headers(&url, &["Host: evil.example:2379"], "GET");
        assert_eq!(code, 421, "{flavor:?}: a DNS-rebinding host is refused");
        let (code, headers) = get_with_headers(&url, &["Origin: http://ui.example:8080"], "GET");
        assert_eq!(code, 200, "{flavor:?}");
        assert!(
            headers.contains("access-control-allow-origin: http://ui.example:8080"),
            "{flavor:?}: {headers}"
        );
        let (_, headers) = get_with_headers(&url, &["Origin: http://other.example:8080"], "GET");
        assert!(!headers.contains("access-control-allow-origin"), "{flavor:?}: {headers}");
        let preflight = format!("http://{}/v3/kv/range", guarded.endpoint());
        let (code, headers) =
            get_with_headers(&preflight, &["Origin: http://ui.example:8080"], "OPTIONS");
        assert_eq!(code, 200, "{flavor:?}: preflight {headers}");
        assert!(headers.contains("access-control-allow-methods: post, get, options, put, delete"));
        // gRPC is not HTTP/1 and not guarded: etcdctl still works.
        common::must_etcdctl(&guarded.endpoint(), &["put", "k", "v"], None);
    }
}
