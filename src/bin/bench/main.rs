//! `bench`: a load generator with the interface of etcd's `benchmark` tool, so the
//! same command line measures this server and real etcd side by side.
//!
//! ```text
//! bench --endpoints=127.0.0.1:2379 --conns=1 --clients=1 put --key-size=8 --val-size=256 --total=10000
//! bench --endpoints=127.0.0.1:2379 --clients=64 range foo --consistency=l --total=10000
//! bench --endpoints=a:2379,b:2379,c:2379 --conns=3 --clients=30 lease-keepalive --total=20000
//! bench --endpoints=127.0.0.1:2379 idle-watchers --streams=100 --watch-per-stream=100 &
//! ```
//!
//! `idle-watchers` is ours, not etcd's: it holds watchers open on keys nobody
//! writes, so a `put` run beside it shows what many watchers cost the writes.
//! So are `fsync` and `loopback`: the two parts of a single client's write
//! floor on this machine (see `floor.rs`).

mod floor;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use etcd_proto::etcdserverpb::kv_client::KvClient;
use etcd_proto::etcdserverpb::lease_client::LeaseClient;
use etcd_proto::etcdserverpb::watch_client::WatchClient;
use etcd_proto::etcdserverpb::watch_request::RequestUnion;
use etcd_proto::etcdserverpb::{
    request_op, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use tonic::transport::{Channel, Endpoint};

/// A low-level benchmark tool for etcd-compatible servers.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    /// Comma-separated gRPC endpoints.
    #[arg(long, global = true, default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// Total number of gRPC connections.
    #[arg(long, global = true, default_value_t = 1)]
    conns: usize,
    /// Total number of concurrent clients.
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// Provide username[:password]: authenticate once and send every request
    /// with the token (the servers' auth must be enabled).
    #[arg(long, global = true)]
    user: Option<String>,
    /// Benchmark the leader only (of the endpoints, the one whose status names
    /// itself the leader), as etcd's tool does.
    #[arg(long, global = true, conflicts_with = "target_follower")]
    target_leader: bool,
    /// Benchmark one follower only: the first endpoint that is not the leader
    /// (not in etcd's tool).
    #[arg(long, global = true)]
    target_follower: bool,
    #[command(subcommand)]
    command: Command,
}

/// The puts of `put` and `txn-put` (etcd's flags for both).
#[derive(Debug, Clone, Copy, Args)]
struct Puts {
    /// Key size of each put.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size of each put.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
    /// Total number of requests.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// Maximum possible keys.
    #[arg(long, default_value_t = 1)]
    key_space_size: u64,
}

impl Puts {
    /// The `n`th put (its key random in the key space, or the `n`th key).
    fn request(&self, n: u64, sequential: bool) -> PutRequest {
        PutRequest {
            key: put_key(n, self.key_size, self.key_space_size, sequential),
            value: vec![b'x'; self.val_size],
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark put.
    Put {
        #[command(flatten)]
        puts: Puts,
        /// Use sequential keys.
        #[arg(long)]
        sequential_keys: bool,
    },
    /// Benchmark txn-put: transactions of puts, with no compares (etcd's tool).
    TxnPut {
        #[command(flatten)]
        puts: Puts,
        /// Number of puts per txn.
        #[arg(long, default_value_t = 1)]
        txn_ops: u64,
    },
    /// Benchmark range.
    Range {
        /// The key to range over (`\0` for the NUL byte: `range '\0' '\0'` is every key).
        key: String,
        /// The end of the range (exclusive; `\0` for the NUL byte).
        end_range: Option<String>,
        /// Linearizable (l) or serializable (s).
        #[arg(long, default_value = "l")]
        consistency: String,
        /// Total number of range requests.
        #[arg(long, default_value_t = 10_000)]
        total: u64,
        /// Maximum number of results to return.
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Only returns the count of keys.
        #[arg(long)]
        count_only: bool,
        /// Read with RangeStream (etcd 3.7) instead of Range, every chunk.
        #[arg(long)]
        stream: bool,
    },
    /// Benchmark lease keepalive: each client grants a lease (TTL 100 s), then
    /// renews it once per request on a keep-alive stream of its own, as etcd's
    /// tool does with clientv3's KeepAliveOnce.
    LeaseKeepalive {
        /// Total number of lease keepalive requests.
        #[arg(long, default_value_t = 10_000)]
        total: u64,
    },
    /// Benchmark watch latency: one watcher per client on one key, puts at a
    /// fixed rate; each result is the time from sending a put to one watcher's
    /// event (etcd's tool times from the put's answer, which an event often beats),
    /// and all watchers receive a put before the next one is sent.
    WatchLatency {
        /// Total number of puts.
        #[arg(long, default_value_t = 10_000)]
        total: u64,
        /// Puts per second.
        #[arg(long, default_value_t = 100)]
        put_rate: u64,
        /// Key size of the watched key.
        #[arg(long, default_value_t = 32)]
        key_size: usize,
        /// Value size of each put.
        #[arg(long, default_value_t = 32)]
        val_size: usize,
    },
    /// Time 4 KiB appends to a file, each followed by fdatasync (not in
    /// etcd's tool): the disk's part of a write's floor.
    Fsync {
        /// Directory to write the test file in (the data dir's disk).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Number of appends.
        #[arg(long, default_value_t = 1000)]
        total: u64,
    },
    /// Time round trips of a small message over TCP on 127.0.0.1 (not in
    /// etcd's tool): the network's part of a write's floor.
    Loopback {
        /// Number of round trips.
        #[arg(long, default_value_t = 10_000)]
        total: u64,
        /// Where the two ends run (where the scheduler puts them, `any`, can
        /// alternate between the other two from run to run on some machines).
        #[arg(long, value_enum, default_value_t = floor::Cores::Any)]
        cores: floor::Cores,
    },
    /// Hold idle watchers open until interrupted (not in etcd's tool).
    IdleWatchers {
        /// Watch streams, spread over the connections.
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Watchers per stream, each on its own key that nobody writes.
        #[arg(long, default_value_t = 100)]
        watch_per_stream: usize,
    },
}

async fn connect(cli: &Cli) -> Result<Vec<Channel>, String> {
    let mut endpoints: Vec<String> = cli
        .endpoints
        .split(',')
        .map(|e| if e.contains("://") { e.to_string() } else { format!("http://{e}") })
        .collect();
    if cli.target_leader || cli.target_follower {
        endpoints = vec![pick_endpoint(&endpoints, cli.target_leader).await?];
    }
    let mut clients = Vec::new();
    for i in 0..cli.conns.max(1) {
        let url = &endpoints[i % endpoints.len()];
        clients.push(dial(url).await?);
    }
    Ok(clients)
}

async fn dial(url: &str) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad endpoint {url}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e} (is the server running?)"))
}

/// The first endpoint that leads (`leader`) or follows, by its own status.
async fn pick_endpoint(endpoints: &[String], leader: bool) -> Result<String, String> {
    use etcd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use etcd_proto::etcdserverpb::StatusRequest;
    for url in endpoints {
        let status = MaintenanceClient::new(dial(url).await?)
            .status(StatusRequest {})
            .await
            .map_err(|e| format!("cannot read the status of {url}: {}", e.message()))?
            .into_inner();
        let member = status.header.map_or(0, |h| h.member_id);
        if status.leader != 0 && (status.leader == member) == leader {
            return Ok(url.clone());
        }
    }
    let wanted = if leader { "the leader" } else { "a follower" };
    Err(format!("none of the endpoints is {wanted} (list every member in --endpoints)"))
}

/// The token of `--user name:password`, from `Authenticate` on `channel`.
async fn login(
    user: &str,
    channel: Channel,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
    use etcd_proto::etcdserverpb::auth_client::AuthClient;
    use etcd_proto::etcdserverpb::AuthenticateRequest;
    let (name, password) = user.split_once(':').unwrap_or((user, ""));
    let login = AuthenticateRequest { name: name.to_string(), password: password.to_string() };
    let token = AuthClient::new(channel)
        .authenticate(login)
        .await
        .map_err(|e| format!("cannot authenticate as {name}: {} (check --user)", e.message()))?
        .into_inner()
        .token;
    token.parse().map_err(|_| format!("the server sent a token that is not ASCII: {token:?}"))
}

/// `message` as a request carrying the `--user` token, if any.
fn with_token<T>(
    message: T,
    token: &Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("token", token.clone());
    }
    request
}

/// Builds the request for the `n`th operation.
type MakeOp = Arc<dyn Fn(u64) -> Op + Send + Sync>;

enum Op {
    Put(PutRequest),
    Txn(TxnRequest),
    Range(RangeRequest),
    /// Read every chunk of a RangeStream.
    RangeStream(RangeRequest),
    /// Renew the worker's own lease once.
    KeepAlive,
}

/// Reads a RangeStream to its end; whether it ended without an error.
async fn read_stream(
    client: &mut KvClient<Channel>,
    request: tonic::Request<RangeRequest>,
) -> bool {
    let Ok(response) = client.range_stream(request).await else { return false };
    let mut stream = response.into_inner();
    loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// TTL of the lease each `lease-keepalive` client renews (etcd's tool: 100 s).
const KEEPALIVE_LEASE_TTL: i64 = 100;

/// One KeepAliveOnce: a keep-alive stream carrying a single renewal. A lease
/// the server no longer knows (TTL 0) counts as a failure.
async fn keep_alive_once(client: &mut LeaseClient<Channel>, id: i64) -> bool {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
        return false;
    }
    let Ok(response) =
        client.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await
    else {
        return false;
    };
    let mut answers = response.into_inner();
    matches!(answers.message().await, Ok(Some(answer)) if answer.ttl > 0)
}

/// A key argument's bytes: the text, or the NUL byte for `\0` (as etcd's docs
/// write the end of "every key").
fn key_arg(text: &str) -> Vec<u8> {
    match text {
        "\\0" => vec![0],
        _ => text.as_bytes().to_vec(),
    }
}

fn put_key(n: u64, key_size: usize, key_space: u64, sequential: bool) -> Vec<u8> {
    let k = if sequential { n % key_space.max(1) } else { fastrand(n) % key_space.max(1) };
    let mut key = vec![0u8; key_size.max(8)];
    key[..8].copy_from_slice(&k.to_be_bytes());
    key.truncate(key_size.max(1));
    key
}

/// A cheap deterministic mix (splitmix64), enough to spread keys.
fn fastrand(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Opens the watchers, reports them ready, then waits forever.
async fn hold_idle_watchers(
    channels: &[Channel],
    streams: usize,
    per_stream: usize,
) -> Result<(), String> {
    let mut held = Vec::new();
    for s in 0..streams {
        let mut client = WatchClient::new(channels[s % channels.len()].clone());
        let (tx, rx) = tokio::sync::mpsc::channel(per_stream.max(1));
        let opened = tokio::spawn(async move {
            client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await
        });
        for w in 0..per_stream {
            let create = WatchCreateRequest {
                key: format!("bench-idle-watcher/{s}/{w}").into_bytes(),
                ..Default::default()
            };
            let request = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
            tx.send(request).await.map_err(|_| "the watch stream closed".to_string())?;
        }
        let responses = opened
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot open a watch stream: {e}"))?;
        held.push((tx, responses));
        eprint!(
            "
{} / {} watchers",
            (s + 1) * per_stream,
            streams * per_stream
        );
    }
    eprintln!("\n{} idle watchers open; interrupt to close them", streams * per_stream);
    std::future::pending::<()>().await;
    drop(held);
    Ok(())
}

/// `watch-latency`: see [`Command::WatchLatency`].
async fn watch_latency(
    cli: &Cli,
    total: u64,
    rate: u64,
    key: Vec<u8>,
    value: Vec<u8>,
) -> Result<(), String> {
    let channels = connect(cli).await?;
    let watchers = cli.clients.max(1);
    // Every watcher reports (revision, when its event arrived).
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let mut held = Vec::new();
    for w in 0..watchers {
        let mut client = WatchClient::new(channels[w % channels.len()].clone());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let create = WatchCreateRequest { key: key.clone(), ..Default::default() };
        tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) })
            .await
            .map_err(|_| "the watch stream closed".to_string())?;
        let mut responses = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("cannot open a watch stream: {e}"))?
            .into_inner();
        let created = responses.message().await.map_err(|e| e.to_string())?;
        if !created.is_some_and(|r| r.created) {
            return Err("a watch was not created".into());
        }
        let seen_tx = seen_tx.clone();
        held.push(tx);
        tokio::spawn(async move {
            while let Ok(Some(response)) = responses.message().await {
                let now = Instant::now();
                for event in &response.events {
                    let rev = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                    let _ = seen_tx.send((rev, now));
                }
            }
        });
    }
    eprintln!("{watchers} watchers open");
    let mut kv = KvClient::new(channels[0].clone());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let mut latencies = Vec::with_capacity((total as usize).saturating_mul(watchers));
    let mut errors = 0;
    let started = Instant::now();
    for n in 0..total {
        tick.tick().await;
        let sent = Instant::now();
        let put = PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
        let answered = match kv.put(put).await {
            Ok(response) => response.into_inner().header.map_or(0, |h| h.revision),
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        let mut waiting = watchers;
        while waiting > 0 {
            match tokio::time::timeout(Duration::from_secs(10), seen.recv()).await {
                Ok(Some((rev, at))) if rev == answered => {
                    latencies.push(at.saturating_duration_since(sent));
                    waiting -= 1;
                }
                Ok(Some(_)) => {}
                _ => return Err(format!("watchers did not all see put {n} within 10 s")),
            }
        }
        if n % 100 == 0 {
            eprint!("\r{n} / {total} puts");
        }
    }
    eprintln!("\r{total} / {total} puts");
    report(&mut latencies, errors, started.elapsed());
    drop(held);
    Ok(())
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Command::IdleWatchers { streams, watch_per_stream } = &cli.command {
        let channels = connect(&cli).await?;
        return hold_idle_watchers(&channels, *streams, *watch_per_stream).await;
    }
    type FloorPart = Box<dyn FnOnce() -> Result<Vec<Duration>, String> + Send>;
    let floor_part: Option<FloorPart> = match &cli.command {
        Command::Fsync { dir, total } => {
            let (dir, total) = (dir.clone(), *total);
            Some(Box::new(move || floor::fsync(&dir, total)))
        }
        Command::Loopback { total, cores } => {
            let (total, cores) = (*total, *cores);
            Some(Box::new(move || floor::loopback(total, cores)))
        }
        _ => None,
    };
    if let Some(measure) = floor_part {
        let started = Instant::now();
        let mut latencies =
            tokio::task::spawn_blocking(measure).await.map_err(|e| e.to_string())??;
        report(&mut latencies, 0, started.elapsed());
        return Ok(());
    }
    if let Command::WatchLatency { total, put_rate, key_size, val_size } = &cli.command {
        let (key, value) = (vec![b'w'; (*key_size).max(1)], vec![b'v'; *val_size]);
        return watch_latency(&cli, *total, *put_rate, key, value).await;
    }
    let (total, make): (u64, MakeOp) = match &cli.command {
        Command::Put { puts, sequential_keys } => {
            let (puts, seq) = (*puts, *sequential_keys);
            let make: MakeOp = Arc::new(move |n| Op::Put(puts.request(n, seq)));
            (puts.total, make)
        }
        Command::TxnPut { puts, txn_ops } => {
            let (puts, ops) = (*puts, *txn_ops);
            let make: MakeOp = Arc::new(move |n| {
                let put = |i: u64| RequestOp {
                    request: Some(request_op::Request::RequestPut(
                        puts.request(n * ops + i, false),
                    )),
                };
                Op::Txn(TxnRequest { success: (0..ops).map(put).collect(), ..Default::default() })
            });
            (puts.total, make)
        }
        Command::Range { key, end_range, consistency, total, limit, count_only, stream } => {
            let serializable = match consistency.as_str() {
                "l" => false,
                "s" => true,
                other => return Err(format!("--consistency {other:?}: use l or s")),
            };
            let request = RangeRequest {
                key: key_arg(key),
                range_end: end_range.as_deref().map(key_arg).unwrap_or_default(),
                limit: *limit,
                serializable,
                count_only: *count_only,
                ..Default::default()
            };
            let stream = *stream;
            (
                *total,
                Arc::new(move |_| match stream {
                    true => Op::RangeStream(request.clone()),
                    false => Op::Range(request.clone()),
                }),
            )
        }
        Command::LeaseKeepalive { total } => (*total, Arc::new(|_| Op::KeepAlive)),
        Command::IdleWatchers { .. }
        | Command::WatchLatency { .. }
        | Command::Fsync { .. }
        | Command::Loopback { .. } => {
            unreachable!("handled above")
        }
    };
    let needs_lease = matches!(cli.command, Command::LeaseKeepalive { .. });
    let connections = connect(&cli).await?;
    let token = match &cli.user {
        Some(user) => Some(login(user, connections[0].clone()).await?),
        None => None,
    };
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                eprint!(
                    "\r{n} / {total} requests ({:.0}%)",
                    n as f64 * 100.0 / total.max(1) as f64
                );
            }
        })
    };
    let mut workers = Vec::new();
    for c in 0..cli.clients.max(1) {
        let channel = connections[c % connections.len()].clone();
        let mut client = KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
        let mut leases = LeaseClient::new(channel);
        let lease = if needs_lease {
            let grant = LeaseGrantRequest { ttl: KEEPALIVE_LEASE_TTL, id: 0 };
            let granted = leases
                .lease_grant(grant)
                .await
                .map_err(|e| format!("cannot grant the lease to keep alive: {}", e.message()))?;
            granted.into_inner().id
        } else {
            0
        };
        let (next, done, make, token) = (next.clone(), done.clone(), make.clone(), token.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let begin = Instant::now();
                let ok = match make(n) {
                    Op::Put(r) => client.put(with_token(r, &token)).await.is_ok(),
                    Op::Txn(r) => client.txn(with_token(r, &token)).await.is_ok(),
                    Op::Range(r) => client.range(with_token(r, &token)).await.is_ok(),
                    Op::RangeStream(r) => read_stream(&mut client, with_token(r, &token)).await,
                    Op::KeepAlive => keep_alive_once(&mut leases, lease).await,
                };
                if ok {
                    latencies.push(begin.elapsed());
                } else {
                    errors += 1;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await.map_err(|e| e.to_string())?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    progress.abort();
    eprintln!("\r{total} / {total} requests (100%)");
    report(&mut latencies, errors, elapsed);
    Ok(())
}

fn report(latencies: &mut [Duration], errors: u64, elapsed: Duration) {
    latencies.sort();
    let secs: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
    let n = secs.len().max(1) as f64;
    let average = secs.iter().sum::<f64>() / n;
    let stddev = (secs.iter().map(|s| (s - average).powi(2)).sum::<f64>() / n).sqrt();
    println!("\nSummary:");
    println!("  Total:\t{:.4} secs.", elapsed.as_secs_f64());
    println!("  Slowest:\t{:.4} secs.", secs.last().copied().unwrap_or(0.0));
    println!("  Fastest:\t{:.4} secs.", secs.first().copied().unwrap_or(0.0));
    println!("  Average:\t{average:.4} secs.");
    println!("  Stddev:\t{stddev:.4} secs.");
    println!("  Requests/sec:\t{:.4}", secs.len() as f64 / elapsed.as_secs_f64());
    if errors > 0 {
        println!("\nError distribution:\n  [{errors}]\trequest failed");
    }
    println!("\nLatency distribution:");
    for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
        if secs.is_empty() {
            break;
        }
        let i = ((p / 100.0) * secs.len() as f64).ceil() as usize;
        println!("  {p}% in {:.6} secs.", secs[i.clamp(1, secs.len()) - 1]);
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
