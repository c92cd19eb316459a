//! The binary's command line and data-dir handling: unknown flags, incompatible
//! data dirs, ETCD_* variables, the lifecycle log lines, clean shutdown.

mod common;

use std::process::Command;

use common::Server;

#[test]
fn unknown_flag_fails_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd")).arg("--no-such-flag").output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn version_flag_reports_a_3_5_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd")).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("etcd Version: 3.5."));
}

#[test]
fn lifecycle_lines_are_logged_and_sigterm_stops_cleanly() {
    let mut server = Server::start();
    let log = server.log().join("\n");
    assert!(log.contains("published local member to cluster through raft"), "{log}");
    assert!(log.contains("enabled capabilities for version"), "{log}");
    assert!(server.terminate(), "SIGTERM should exit 0");
    server.restart();
    assert!(server.log().join("\n").matches("ready to serve client requests").count() >= 2);
}

#[test]
fn a_data_dir_of_another_format_is_refused_and_left_untouched() {
    let temp = tempfile::tempdir().expect("tempdir");
    let wal = temp.path().join("member").join("wal");
    std::fs::create_dir_all(&wal).expect("mkdir");
    let segment = wal.join("0000000000000000-0000000000000000.wal");
    let foreign = b"this is not our WAL format, e.g. one written by etcd itself".repeat(10);
    std::fs::write(&segment, &foreign).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_etcd"))
        .arg(format!("--data-dir={}", temp.path().display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{}", common::free_port()))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", common::free_port()))
        .output()
        .expect("run");
    assert!(!out.status.success(), "must refuse a foreign data dir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WAL"), "{stderr}");
    assert_eq!(std::fs::read(&segment).expect("read"), foreign, "the data dir was modified");
}

#[test]
fn etcd_env_vars_configure_the_server() {
    let temp = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_etcd"))
        .env("ETCD_NAME", "envnode")
        .env("ETCD_DATA_DIR", temp.path().join("d"))
        .env("ETCD_LISTEN_CLIENT_URLS", &url)
        .env("ETCD_ADVERTISE_CLIENT_URLS", &url)
        .env("ETCD_LISTEN_PEER_URLS", format!("http://127.0.0.1:{}", common::free_port()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let endpoint = format!("127.0.0.1:{port}");
    let mut members = String::new();
    for _ in 0..100 {
        let out = common::etcdctl(&endpoint, &["member", "list"], None);
        if out.status.success() {
            members = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(members.contains("envnode"), "{members:?}");
    assert!(temp.path().join("d").join("member").join("wal").exists());
}

#[test]
fn health_version_and_metrics_answer_over_plain_http_on_the_client_port() {
    let server = Server::start();
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("http://{}{path}", server.endpoint())])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get("/health"), "{\"health\":\"true\",\"reason\":\"\"}\n200");
    assert_eq!(get("/version"), "{\"etcdserver\":\"3.5.13\",\"etcdcluster\":\"3.5.0\"}\n200");
    // gRPC keeps working on the same port.
    common::must_etcdctl(&server.endpoint(), &["put", "k", "v"], None);
    // The backend commits what was applied within a batch interval (100 ms),
    // as etcd's batch transaction does, idle or not.
    let mut metrics = get("/metrics");
    for _ in 0..50 {
        if metrics.lines().any(|l| {
            l.starts_with("etcd_disk_backend_commit_duration_seconds_count ") && !l.ends_with(" 0")
        }) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        metrics = get("/metrics");
    }
    assert!(metrics.ends_with("\n200"), "{metrics}");
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"));
        line[name.len()..].trim().parse().expect("a number")
    };
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert_eq!(value("etcd_server_is_leader"), 1.0);
    assert_eq!(value("etcd_server_leader_changes_seen_total"), 1.0);
    assert_eq!(value("etcd_server_version{server_version=\"3.5.13\"}"), 1.0);
    assert_eq!(value("etcd_cluster_version{cluster_version=\"3.5\"}"), 1.0);
    assert_eq!(value("etcd_debugging_mvcc_current_revision"), 2.0);
    assert!(value("etcd_disk_wal_fsync_duration_seconds_count") >= 1.0);
    assert!(value("etcd_disk_backend_commit_duration_seconds_count") >= 1.0);
    assert!(value("etcd_server_proposals_applied_total") >= 2.0);
    assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0);
}

#[test]
fn listen_metrics_urls_serve_metrics_and_health_only() {
    let port = common::free_port();
    let metrics_url = format!("--listen-metrics-urls=http://127.0.0.1:{port}");
    let server = Server::start_with(common::Flavor::Ours, &[&metrics_url]);
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{port}{path}")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        get("/health?exclude=NOSPACE&serializable=true"),
        "{\"health\":\"true\",\"reason\":\"\"}\n200"
    );
    let metrics = get("/metrics");
    assert!(metrics.contains("\netcd_server_has_leader 1\n"), "{metrics}");
    assert!(get("/version").ends_with("404"), "only /metrics, /health and the probes are there");
    assert_eq!(get("/livez"), "ok\n\n200");
    assert_eq!(get("/readyz"), "ok\n\n200");
    assert_eq!(
        get("/readyz?verbose"),
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n\
         [+]non_learner ok\nok\n\n200"
    );
    assert_eq!(get("/readyz/linearizable_read"), "ok\n\n200");
    assert!(get("/readyz/no_such_check").ends_with("404"));
    drop(server);
}

/// `--discovery` and `ETCD_DISCOVERY` are refused alike before anything is
/// written (starting without the cluster they name would bootstrap a wrong
/// one-member cluster); an unknown `ETCD_*` variable is only warned about.
#[test]
fn discovery_is_refused_as_a_flag_and_as_a_variable() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data_dir = temp.path().join("d");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd"));
        cmd.arg(format!("--data-dir={}", data_dir.display())).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run etcd")
    };
    let by_flag = run(&["--discovery=https://discovery.etcd.io/abc"], &[]);
    let by_env = run(&[], &[("ETCD_DISCOVERY", "https://discovery.etcd.io/abc")]);
    for out in [&by_flag, &by_env] {
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("list the members in --initial-cluster instead"), "{stderr}");
    }
    assert!(String::from_utf8_lossy(&by_env.stderr).contains("ETCD_DISCOVERY="));
    assert!(!data_dir.exists(), "nothing written");
}

/// `--unsafe-no-fsync` acts (the WAL is written, not fsynced): a member killed
/// with -9 still restarts with every acknowledged write, since only a machine
/// crash loses what the page cache held.
#[test]
fn unsafe_no_fsync_runs_and_a_killed_member_keeps_its_writes() {
    let mut server = common::Server::start_with(common::Flavor::Ours, &["--unsafe-no-fsync"]);
    for i in 0..50 {
        common::must_etcdctl(&server.endpoint(), &["put", &format!("n/{i}"), "v"], None);
    }
    server.kill9();
    server.restart();
    let keys =
        common::must_etcdctl(&server.endpoint(), &["get", "n/", "--prefix", "--keys-only"], None);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 50);
}

/// etcd's sample configuration file with this machine's ports and a temporary
/// data dir: every key of `etcd.conf.yml.sample` (3.4), TLS blocks included.
fn sample_config(name: &str, data_dir: &std::path::Path, client: u16, peer: u16) -> String {
    format!(
        "# etcd.conf.yml.sample, with local ports
name: '{name}'
data-dir: {data}
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://127.0.0.1:{peer}
listen-client-urls: http://127.0.0.1:{client}
max-snapshots: 5
max-wals: 5
cors:
initial-advertise-peer-urls: http://127.0.0.1:{peer}
advertise-client-urls: http://127.0.0.1:{client}
discovery:
discovery-fallback: 'proxy'
discovery-proxy:
discovery-srv:
initial-cluster: {name}=http://127.0.0.1:{peer}
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-v2: true
enable-pprof: true
proxy: 'off'
proxy-failure-wait: 5000
proxy-refresh-interval: 30000
proxy-dial-timeout: 1000
proxy-write-timeout: 5000
proxy-read-timeout: 0
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
debug: false
logger: zap
log-outputs: [stderr]
force-new-cluster: false
auto-compaction-mode: periodic
auto-compaction-retention: \"1\"
",
        data = data_dir.display()
    )
}

/// A configuration file configures the member and replaces the command line
/// and the ETCD_* variables, on ours as on real etcd; a bad value in it is
/// refused by both before anything is written.
#[test]
fn a_config_file_replaces_the_command_line_and_variables() {
    for flavor in [common::Flavor::Ours, common::Flavor::RealEtcd] {
        let Some(binary) = flavor.binary() else { continue };
        let temp = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (common::free_port(), common::free_port());
        let file = temp.path().join("etcd.conf.yml");
        std::fs::write(&file, sample_config("cfgnode", &temp.path().join("d"), client, peer))
            .unwrap();
        let ignored_port = common::free_port();
        let mut child = Command::new(&binary)
            .arg("--config-file")
            .arg(&file)
            .arg("--name=from-the-command-line")
            .arg(format!("--listen-client-urls=http://127.0.0.1:{ignored_port}"))
            .env("ETCD_NAME", "from-a-variable")
            .env("ETCD_SNAPSHOT_COUNT", "not a number")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let endpoint = format!("127.0.0.1:{client}");
        let members =
            common::wait_serving(&mut child, &endpoint, &["member", "list"]).unwrap_or_default();
        let _ = child.kill();
        let output = child.wait_with_output().expect("wait");
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(members.contains("cfgnode"), "{flavor:?}: {members:?}\n{log}");
        assert!(temp.path().join("d").join("member").exists(), "{flavor:?}");
        assert!(
            log.to_lowercase().contains(
                "other configuration command line flags and environment variables will be ignored"
            ),
            "{flavor:?}: {log}"
        );

        std::fs::write(
            &file,
            format!(
                "initial-cluster-state: bogus\ndata-dir: {}\n",
                temp.path().join("o").display()
            ),
        )
        .unwrap();
        let out = Command::new(&binary)
            .arg(format!("--config-file={}", file.display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flavor:?}: {stderr}");
        assert!(stderr.contains("bogus"), "{flavor:?}: {stderr}");
        assert!(!temp.path().join("o").join("member").exists(), "{flavor:?}");
    }
}

#[test]
fn a_misspelt_config_key_is_refused_naming_it_and_durations_are_nanoseconds() {
    let temp = tempfile::tempdir().expect("tempdir");
    let file = temp.path().join("etcd.conf.yml");
    let data = temp.path().join("d");
    // etcd 3.4 would skip the misspelt key and start without the setting.
    std::fs::write(
        &file,
        format!(
            "data-dir: {}
snapshot-cout: 5
",
            data.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_etcd"))
        .arg(format!("--config-file={}", file.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("unknown key \"snapshot-cout\""), "{stderr}");
    assert!(!data.exists(), "nothing is written");

    // A duration as etcd's Go code reads it (nanoseconds), with real etcd too.
    for flavor in [common::Flavor::Ours, common::Flavor::RealEtcd] {
        let Some(binary) = flavor.binary() else { continue };
        let (client, peer) = (common::free_port(), common::free_port());
        let text = format!(
            "data-dir: {}\nlisten-client-urls: http://127.0.0.1:{client}\n\
             advertise-client-urls: http://127.0.0.1:{client}\n\
             listen-peer-urls: http://127.0.0.1:{peer}\n\
             initial-advertise-peer-urls: http://127.0.0.1:{peer}\n\
             initial-cluster: default=http://127.0.0.1:{peer}\n\
             grpc-keepalive-interval: 7200000000000\n",
            temp.path().join(format!("{flavor:?}")).display()
        );
        std::fs::write(&file, text).unwrap();
        let mut child = Command::new(&binary)
            .arg(format!("--config-file={}", file.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let endpoint = format!("127.0.0.1:{client}");
        let healthy = common::wait_serving(&mut child, &endpoint, &["endpoint", "health"]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(healthy.is_some(), "{flavor:?} did not start with a nanosecond duration");
    }
}

#[test]
fn log_outputs_write_to_stderr_and_a_file_and_bad_logging_flags_are_refused() {
    let temp = tempfile::tempdir().expect("tempdir");
    let file = temp.path().join("etcd.log");
    let outputs = format!("--log-outputs=stderr,{}", file.display());
    let mut server = Server::start_with(common::Flavor::Ours, &[&outputs]);
    assert!(server.terminate());
    let written = std::fs::read_to_string(&file).expect("the log file exists");
    assert!(written.contains("ready to serve client requests"), "{written}");
    assert!(written.lines().all(|l| l.starts_with('{')), "JSON lines: {written}");

    // Refused as etcd refuses them, before anything is written to the data dir.
    for (flags, says) in [
        (&["--logger=logrus"][..], "unknown logger option"),
        (&["--log-outputs=default,stdout"][..], "multi logoutput"),
        (&["--logger=capnslog", "--log-outputs=stderr,stdout"][..], "only 1 value"),
        (&["--log-level=loud"][..], "--log-level"),
    ] {
        let data_dir = temp.path().join("never.etcd");
        let out = Command::new(env!("CARGO_BIN_EXE_etcd"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .args(flags)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} accepted");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert!(!data_dir.exists(), "{flags:?} wrote the data dir");
    }
}

/// Fills a member's WAL past one 64 MiB segment and snapshots it (snapshot count
/// 10), then counts the segments left.
fn wal_segments_after_a_snapshot(extra: &[&str]) -> usize {
    let mut flags = vec!["--snapshot-count=10"];
    flags.extend_from_slice(extra);
    let server = Server::start_with(common::Flavor::Ours, &flags);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = server.client().await;
        let value = vec![b'x'; 1 << 20];
        for i in 0..70 {
            client.put(format!("k{i}"), value.clone(), None).await.expect("put");
        }
    });
    common::sorted_files(&server.wal_dir())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .count()
}

#[test]
fn max_wals_zero_keeps_every_wal_segment_and_the_default_releases_them() {
    let released = wal_segments_after_a_snapshot(&[]);
    let kept = wal_segments_after_a_snapshot(&["--max-wals=0"]);
    assert_eq!(released, 1, "the default keeps only the segment in use");
    assert!(kept >= 2, "--max-wals=0 purged segments: {kept} left");
}

#[test]
fn bad_settings_stop_the_member_naming_them_before_the_data_dir_is_written() {
    let temp = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let https = format!("--listen-client-urls=https://127.0.0.1:{port}");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--listen-client-urls=htp://127.0.0.1:2379".into()], "htp://127.0.0.1:2379"),
        (vec!["--listen-peer-urls=http://127.0.0.1".into()], "http://127.0.0.1"),
        (vec!["--initial-cluster=no-equals-sign".into()], "initial-cluster"),
        (
            vec![
                https.clone(),
                format!("--advertise-client-urls=https://127.0.0.1:{port}"),
                "--cert-file=/nonexistent/server.crt".into(),
                "--key-file=/nonexistent/server.key".into(),
            ],
            "/nonexistent/server.crt",
        ),
        (vec!["--snapshot-count=many".into()], "--snapshot-count"),
    ];
    for (i, (flags, says)) in cases.into_iter().enumerate() {
        let data_dir = temp.path().join(format!("d{i}"));
        let out = Command::new(env!("CARGO_BIN_EXE_etcd"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .args(&flags)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(stderr.contains(says), "{flags:?}: the error does not name {says:?}: {stderr}");
        assert!(!data_dir.exists(), "{flags:?} wrote the data dir");
    }
}
