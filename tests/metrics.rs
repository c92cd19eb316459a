//! `/metrics` carries the counters etcd's dashboards read: go-grpc-prometheus's
//! `grpc_server_*` per method and status code, and `etcd_mvcc_*_total`; the same
//! client operations give the same lines as real etcd 3.4. `--enable-pprof`
//! serves a CPU profile that `go tool pprof` reads, as real etcd's.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{etcdctl, must_etcdctl, Flavor, Server};

fn metrics(server: &Server) -> String {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{}/metrics", server.endpoint())])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn grpc_line(counter: &str, code: Option<&str>, method: &str, service: &str, kind: &str) -> String {
    let code = code.map(|c| format!("grpc_code=\"{c}\",")).unwrap_or_default();
    format!(
        "{counter}{{{code}grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
    )
}

/// The value of the sample `name` (with its labels) in a metrics text.
fn value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn grpc_and_mvcc_counters_count_what_real_etcd_counts() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            continue;
        }
        let server = Server::start_with(flavor, &[]);
        let ep = server.endpoint();
        for i in 0..3 {
            must_etcdctl(&ep, &["put", &format!("k{i}"), "v"], None);
        }
        must_etcdctl(&ep, &["get", "k0"], None);
        must_etcdctl(&ep, &["del", "k1"], None);
        must_etcdctl(&ep, &["del", "k2"], None);
        let future = etcdctl(&ep, &["get", "k0", "--rev=1000"], None);
        assert!(!future.status.success(), "{flavor:?}");
        // A watch whose client goes away: handled as Canceled.
        let mut watch = Command::new(common::etcdctl_path())
            .args(["--endpoints", &ep, "watch", "k0"])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        std::thread::sleep(Duration::from_millis(500));
        watch.kill().expect("kill");
        let _ = watch.wait();

        let (kv, watch_svc) = ("etcdserverpb.KV", "etcdserverpb.Watch");
        let canceled = grpc_line(
            "grpc_server_handled_total",
            Some("Canceled"),
            "Watch",
            watch_svc,
            "bidi_stream",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = metrics(&server);
        while value(&text, &canceled) != Some(1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            text = metrics(&server);
        }
        let expect = |name: String, n: u64| {
            assert_eq!(value(&text, &name), Some(n), "{flavor:?}: {name}");
        };
        expect(canceled, 1);
        expect(grpc_line("grpc_server_started_total", None, "Put", kv, "unary"), 3);
        expect(grpc_line("grpc_server_handled_total", Some("OK"), "Put", kv, "unary"), 3);
        expect(grpc_line("grpc_server_msg_received_total", None, "Put", kv, "unary"), 3);
        expect(grpc_line("grpc_server_msg_sent_total", None, "Put", kv, "unary"), 3);
        expect(grpc_line("grpc_server_handled_total", Some("OK"), "DeleteRange", kv, "unary"), 2);
        expect(grpc_line("grpc_server_handled_total", Some("OutOfRange"), "Range", kv, "unary"), 1);
        expect(grpc_line("grpc_server_handled_total", Some("Unavailable"), "Txn", kv, "unary"), 0);
        expect(grpc_line("grpc_server_started_total", None, "Watch", watch_svc, "bidi_stream"), 1);
        expect("etcd_mvcc_put_total".into(), 3);
        expect("etcd_mvcc_delete_total".into(), 2);
        if flavor == Flavor::Ours {
            // This server's own breakdown of where the writes' time went: five
            // client proposals (3 puts, 2 deletes) and the member's own, each
            // stage seen.
            let stage =
                |s: &str| format!("etcdrs_write_stage_duration_seconds_count{{stage=\"{s}\"}}");
            let stages = ["total", "wake", "propose_queue", "raft_turn", "wal_persist"];
            for s in stages.into_iter().chain(["apply_queue", "apply"]) {
                assert!(value(&text, &stage(s)).is_some_and(|n| n >= 5), "{s}: {text}");
            }
        }
    }
}

#[test]
fn a_slow_apply_is_warned_about_and_counted_as_by_etcd() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            continue;
        }
        // Every apply is "slow" against a nanosecond.
        let mut server = Server::start_with(flavor, &["--experimental-warning-apply-duration=1ns"]);
        must_etcdctl(&server.endpoint(), &["put", "k", "v"], None);
        let text = metrics(&server);
        let slow = value(&text, "etcd_server_slow_apply_total").unwrap_or(0);
        assert!(slow >= 1, "{flavor:?}: etcd_server_slow_apply_total {slow}");
        let log = server.full_log().join("\n");
        // zap's "apply request took too long"; 3.4's default capnslog says
        // "request ... took too long (...) to execute".
        assert!(log.contains("took too long"), "{flavor:?}: {log}");
    }
}

#[test]
fn metrics_extensive_adds_grpc_handling_time_histograms_as_etcd() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            continue;
        }
        let basic = Server::start_with(flavor, &[]);
        must_etcdctl(&basic.endpoint(), &["put", "k", "v"], None);
        assert!(!metrics(&basic).contains("grpc_server_handling_seconds"), "{flavor:?}");

        let extensive = Server::start_with(flavor, &["--metrics=extensive"]);
        must_etcdctl(&extensive.endpoint(), &["put", "k", "v"], None);
        let text = metrics(&extensive);
        let count = grpc_line(
            "grpc_server_handling_seconds_count",
            None,
            "Put",
            "etcdserverpb.KV",
            "unary",
        );
        assert_eq!(value(&text, &count), Some(1), "{flavor:?}");
    }
}

/// `curl` of `url`: the HTTP status and the body.
fn get(url: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&body[split + 1..]).trim().parse().expect("status");
    (status, body[..split].to_vec())
}

#[test]
fn enable_pprof_serves_a_cpu_profile_that_go_tool_pprof_reads() {
    let go = Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            continue;
        }
        let off = Server::start_with(flavor, &[]);
        let (status, _) = get(&format!("http://{}/debug/pprof/profile?seconds=1", off.endpoint()));
        assert_eq!(status, 404, "{flavor:?}: profiles without --enable-pprof");

        let server = Server::start_with(flavor, &["--enable-pprof"]);
        let ep = server.endpoint();
        // Load while the profile runs, so there is something to sample.
        let load = {
            let ep = ep.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline {
                    must_etcdctl(&ep, &["put", "k", "v"], None);
                }
            })
        };
        let (status, profile) = get(&format!("http://{ep}/debug/pprof/profile?seconds=2"));
        load.join().expect("load");
        assert_eq!(status, 200, "{flavor:?}: {}", String::from_utf8_lossy(&profile));
        assert!(!profile.is_empty(), "{flavor:?}: an empty profile");
        let (status, cmdline) = get(&format!("http://{ep}/debug/pprof/cmdline"));
        assert_eq!(status, 200, "{flavor:?}");
        assert!(String::from_utf8_lossy(&cmdline).contains("--enable-pprof"), "{flavor:?}");
        if !go {
            eprintln!("go is not installed: not reading the profile with go tool pprof");
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("profile");
        std::fs::write(&file, &profile).expect("write profile");
        let out = Command::new("go")
            .args(["tool", "pprof", "-raw"])
            .arg(&file)
            .env("HOME", dir.path())
            .output()
            .expect("go tool pprof");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{flavor:?}: go tool pprof: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("samples/count cpu/nanoseconds"), "{flavor:?}: {text}");
        assert!(text.contains("Period: 10000000"), "{flavor:?}: sampled at 100 Hz: {text}");
    }
}
