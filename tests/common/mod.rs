//! Process-level test harness: starts real server processes (ours, or real etcd as
//! an oracle) on loopback with free ports and temporary data dirs, waits for the
//! `ready to serve client requests` line, and kills or restarts them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The variable naming a member's stalling-disk fault file (see the daemon's `wal_writer.rs`).
pub const FSYNC_DELAY_FILE_ENV: &str = "ETCD_RS_TEST_FSYNC_DELAY_FILE";

/// A free TCP port on loopback for a server process to bind.
///
/// Taken below the kernel's ephemeral range (32768+ on Linux): a port from
/// there, released for the server to bind, can meanwhile become the local port
/// of some outbound connection (a client, a peer stream) and the server then
/// fails with "address already in use". Ports are handed out once per test
/// process, from a start that differs between processes.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = 1 + (u64::from(std::process::id()) * 7919 % u64::from(SPAN)) as u32;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        // Skip ports something else on the machine holds.
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// Which server binary a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// This repository's `etcd`.
    Ours,
    /// Debian's `etcd-server` (real etcd 3.4), the reference oracle.
    RealEtcd,
}

impl Flavor {
    /// The binary of this flavor (none: real etcd is not installed).
    pub fn binary(self) -> Option<PathBuf> {
        match self {
            Flavor::Ours => Some(PathBuf::from(env!("CARGO_BIN_EXE_etcd"))),
            Flavor::RealEtcd => real_etcd(),
        }
    }
}

/// Runs `etcdctl <args>` against `endpoint` until it succeeds (its output) or
/// `child`, the server, exits or 20 s pass (none).
pub fn wait_serving(child: &mut Child, endpoint: &str, args: &[&str]) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            return None; // it exited: its log says why
        }
        let out = etcdctl(endpoint, args, None);
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Path of real etcd, if installed.
pub fn real_etcd() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/etcd");
    path.exists().then_some(path)
}

/// A running (or stopped) server process with its data dir.
pub struct Server {
    pub flavor: Flavor,
    pub name: String,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    /// `--initial-cluster`; `None` for a single member.
    pub initial_cluster: Option<String>,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Client and peer URLs are `unix://` sockets in the temp dir, not ports.
    pub unix: bool,
    child: Option<Child>,
    lines: Option<mpsc::Receiver<String>>,
    stderr_log: Vec<String>,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts our server in a fresh temporary data dir.
    pub fn start() -> Server {
        Server::start_with(Flavor::Ours, &[])
    }

    /// Starts a server of `flavor` with extra flags.
    pub fn start_with(flavor: Flavor, extra: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut server = Server::new(flavor, "node1", temp, extra);
        server.restart();
        server
    }

    /// A server that is not started yet, with data in `temp`.
    pub fn new(flavor: Flavor, name: &str, temp: tempfile::TempDir, extra: &[&str]) -> Server {
        Server {
            flavor,
            name: name.to_string(),
            data_dir: temp.path().join("data.etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            initial_cluster: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            unix: false,
            child: None,
            lines: None,
            stderr_log: Vec::new(),
            _temp: Some(temp),
        }
    }

    /// This member's peer URL.
    pub fn peer_url(&self) -> String {
        match self.unix {
            true => format!("unix://{}.peer:{}", self.name, self.peer_port),
            false => format!("http://127.0.0.1:{}", self.peer_port),
        }
    }

    /// The client endpoint, `127.0.0.1:port` (`unix://name.client:port` for sockets).
    pub fn endpoint(&self) -> String {
        match self.unix {
            true => format!("unix://{}.client:{}", self.name, self.client_port),
            false => format!("127.0.0.1:{}", self.client_port),
        }
    }

    /// The command line of this server.
    pub fn command(&self) -> Command {
        let binary = self.flavor.binary().expect("real etcd is installed");
        let client = match self.unix {
            true => self.endpoint(),
            false => format!("http://127.0.0.1:{}", self.client_port),
        };
        let peer = self.peer_url();
        let initial_cluster =
            self.initial_cluster.clone().unwrap_or_else(|| format!("{}={peer}", self.name));
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// (Re)starts the process on the same data dir and ports; waits until ready.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Starts the process without waiting (members of a new cluster must start
    /// together: none is ready before a quorum runs).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut child = self.command().spawn().expect("spawn server");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Keep draining after the receiver is gone so the server never
                // blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        self.lines = Some(rx);
    }

    /// Waits for the `ready to serve client requests` line of the running process.
    pub fn wait_ready(&mut self) {
        let rx = self.lines.take().expect("spawned");
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains("ready to serve client requests");
                    self.stderr_log.push(line);
                    if ready {
                        self.lines = Some(rx);
                        break;
                    }
                }
                Err(_) => {
                    self.kill9();
                    panic!(
                        "server {} did not become ready; its log:\n{}",
                        self.name,
                        self.stderr_log.join("\n")
                    );
                }
            }
        }
    }

    /// SIGKILLs the process (no chance to flush anything).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.lines = None;
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERMs the process and waits for it to exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Waits up to `limit` for the process to exit on its own; returns whether
    /// it did (the process is reaped).
    #[allow(dead_code)]
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            let Some(child) = self.child.as_mut() else { return true };
            if let Ok(Some(_)) = child.try_wait() {
                self.full_log();
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// What the server logged so far (up to readiness).
    pub fn log(&self) -> &[String] {
        &self.stderr_log
    }

    /// Everything the server logged until now.
    pub fn full_log(&mut self) -> Vec<String> {
        if let Some(rx) = &self.lines {
            while let Ok(line) = rx.try_recv() {
                self.stderr_log.push(line);
            }
        }
        self.stderr_log.clone()
    }

    /// A connected `etcd-client` client.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None).await.expect("connect")
    }

    /// The WAL directory of this member.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("member").join("wal")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Path of the real `etcdctl` (Debian's `etcd-client`); tests need it.
pub fn etcdctl_path() -> PathBuf {
    let path = PathBuf::from("/usr/bin/etcdctl");
    assert!(
        path.exists(),
        "the real etcdctl is required: apt-get install -y etcd-client (or run .ci/run)"
    );
    path
}

/// Runs real etcdctl against `endpoint` with `args`, optionally feeding stdin.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(etcdctl_path());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn etcdctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("etcdctl output")
}

/// Runs etcdctl and returns stdout, panicking (with stderr) on failure.
pub fn must_etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = etcdctl(endpoint, args, stdin);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Files in `dir` sorted by name.
pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

/// A cluster of our servers on loopback, each with a test fault-switch file.
pub struct Cluster {
    pub members: Vec<Server>,
}

impl Cluster {
    /// Starts `size` members together and waits until every one serves.
    pub fn start(size: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(Flavor::Ours, size, extra, &[])
    }

    /// Starts `size` members of `flavor` together (real etcd ignores the
    /// fault-switch variable).
    pub fn start_flavor(flavor: Flavor, size: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(flavor, size, extra, &[])
    }

    /// Like [`Cluster::start`], with extra environment variables for every member.
    pub fn start_with_env(size: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(Flavor::Ours, size, extra, env)
    }

    /// Starts `size` members of `flavor` with extra flags and environment.
    pub fn start_with(
        flavor: Flavor,
        size: usize,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        Cluster::start_members(flavor, size, extra, env, false)
    }

    /// Starts `size` members whose client and peer URLs are `unix://` sockets.
    /// etcd takes such a URL's `host:port` as a socket file in the working
    /// directory (it refuses other forms), so the servers and etcdctl share the
    /// test process's working directory: a test using this sets it first.
    pub fn start_unix(flavor: Flavor, size: usize) -> Cluster {
        Cluster::start_members(flavor, size, &[], &[], true)
    }

    fn start_members(
        flavor: Flavor,
        size: usize,
        extra: &[&str],
        env: &[(&str, &str)],
        unix: bool,
    ) -> Cluster {
        let mut members: Vec<Server> = (0..size)
            .map(|i| {
                let temp = tempfile::tempdir().expect("tempdir");
                let block_file = temp.path().join("blocked-peers");
                let fsync_delay_file = temp.path().join("fsync-delay-ms");
                let mut server = Server::new(flavor, &format!("m{i}"), temp, extra);
                server.unix = unix;
                server.env.push((
                    "ETCD_RS_TEST_BLOCK_PEERS_FILE".into(),
                    block_file.display().to_string(),
                ));
                server
                    .env
                    .push((FSYNC_DELAY_FILE_ENV.into(), fsync_delay_file.display().to_string()));
                server.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                server
            })
            .collect();
        let initial: Vec<String> =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
        for member in &mut members {
            member.initial_cluster = Some(initial.join(","));
            member.spawn();
        }
        for member in &mut members {
            member.wait_ready();
        }
        Cluster { members }
    }

    /// Every client endpoint, comma separated (for etcdctl).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(Server::endpoint).collect::<Vec<_>>().join(",")
    }

    /// The member IDs by index, from `etcdctl endpoint status`.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let running: Vec<String> =
            self.members.iter().filter(|m| m.is_running()).map(Server::endpoint).collect();
        let out = etcdctl(&running.join(","), &["endpoint", "status", "-w", "json"], None);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Waits until every member reports the same raft index (all applied the
    /// same log).
    pub fn wait_for_equal_raft_indexes(&self) {
        for _ in 0..100 {
            let indexes: Vec<u64> =
                self.status().iter().filter_map(|s| s["Status"]["raftIndex"].as_u64()).collect();
            if indexes.len() == self.members.len() && indexes.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the members' raft indexes did not converge");
    }

    /// The index of the member that leads now, waiting up to `limit` for one.
    pub fn leader(&self, limit: Duration) -> Option<usize> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            for status in self.status() {
                let s = &status["Status"];
                if s["leader"].as_u64().is_some() && s["leader"] == s["header"]["member_id"] {
                    let endpoint = status["Endpoint"].as_str().unwrap_or_default().to_string();
                    if let Some(i) = self.members.iter().position(|m| m.endpoint() == endpoint) {
                        return Some(i);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Adds a member with `etcdctl member add` through `via` (a learner if
    /// `learner`) and starts it with `--initial-cluster-state existing`; returns
    /// the running server and the member ID as etcdctl printed it.
    pub fn join(&self, via: &str, name: &str, learner: bool) -> (Server, String) {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut joiner =
            Server::new(Flavor::Ours, name, temp, &["--initial-cluster-state=existing"]);
        let peer_urls = format!("--peer-urls={}", joiner.peer_url());
        let mut args = vec!["member", "add", name, &peer_urls];
        if learner {
            args.push("--learner");
        }
        // A cluster that started moments ago refuses member changes until its
        // members have been connected for etcd's health interval (5 s, with
        // --strict-reconfig-check, the default); an operator retries.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let added = loop {
            let out = etcdctl(via, &args, None);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success()
                && stderr.contains("etcdserver: unhealthy cluster")
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            assert!(out.status.success(), "etcdctl {args:?} failed: {stderr}");
            break String::from_utf8(out.stdout).expect("utf8");
        };
        let id = added.split_whitespace().nth(1).expect("member id in the add output").to_string();
        let mut initial: Vec<String> =
            self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
        initial.push(format!("{name}={}", joiner.peer_url()));
        joiner.initial_cluster = Some(initial.join(","));
        joiner.restart();
        (joiner, id)
    }

    /// The member IDs by index, from `etcdctl endpoint status`.
    pub fn member_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|m| {
                let out = must_etcdctl(&m.endpoint(), &["endpoint", "status", "-w", "json"], None);
                let v: serde_json::Value = serde_json::from_str(&out).expect("json");
                v[0]["Status"]["header"]["member_id"].as_u64().expect("member id")
            })
            .collect()
    }

    /// Cuts member `i` off from every other member, both ways (`ids` from
    /// [`Cluster::member_ids`]).
    pub fn isolate(&mut self, i: usize, ids: &[u64]) {
        let others: Vec<u64> = ids.iter().copied().filter(|&id| id != ids[i]).collect();
        self.block(i, &others);
        for j in (0..self.members.len()).filter(|&j| j != i) {
            self.block(j, &[ids[i]]);
        }
    }

    /// Lifts every partition.
    pub fn heal(&mut self) {
        for i in 0..self.members.len() {
            self.block(i, &[]);
        }
    }

    /// Makes every WAL fsync of member `i` wait `ms` milliseconds first (0: no
    /// more), a disk that stalls; the member reads it before each fsync.
    pub fn stall_fsync(&mut self, i: usize, ms: u64) {
        let member = &self.members[i];
        let (_, path) = member.env.iter().find(|(k, _)| k == FSYNC_DELAY_FILE_ENV).expect("set");
        std::fs::write(path, ms.to_string()).expect("write fsync delay file");
    }

    /// Writes member `i`'s fault-switch file: it drops traffic to and from `ids`.
    /// Returns once the member has logged that it follows the new contents.
    pub fn block(&mut self, i: usize, ids: &[u64]) {
        const SWITCHED: &str = "test fault switch changed";
        let path = self.members[i].env[0].1.clone();
        let text: Vec<String> = ids.iter().map(|id| format!("{id:x}")).collect();
        let text = text.join(",");
        if std::fs::read_to_string(&path).unwrap_or_default() == text {
            return;
        }
        let member = &mut self.members[i];
        let switched =
            |m: &mut Server| m.full_log().iter().filter(|l| l.contains(SWITCHED)).count();
        let before = switched(member);
        std::fs::write(&path, text).expect("write block file");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while switched(member) == before {
            assert!(
                std::time::Instant::now() < deadline,
                "{} ignored its fault switch",
                member.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
