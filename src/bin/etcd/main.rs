//! The `etcd` server binary: etcd's flags in, one member serving etcd's v3 gRPC API.

mod config_file;
mod flag_policy;
mod flag_values;
mod flags;
mod logging;
mod tls_flags;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_daemon::{ClusterState, EtcdServer, ServerConfig};
use etcd_tls::{ListenUrl, Listener};

use flags::Flags;

/// jemalloc instead of glibc's malloc: a write allocates a few dozen buffers
/// across the gRPC, Raft and apply threads, and glibc's arenas spent about a
/// sixth of a loaded member's CPU on them (see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Binds every URL; returns each listener with whether its URL is `https://` or
/// `unixs://`.
async fn bind_all(urls: &[String], traffic: &str) -> Result<Vec<(Listener, bool)>, String> {
    let mut listeners = Vec::new();
    for url in urls {
        let parsed = ListenUrl::parse(url).map_err(|e| format!("listen {e}"))?;
        let listener = Listener::bind(&parsed).await.map_err(|e| {
            format!(
                "cannot listen for {traffic} traffic on {url}: {e} (is another etcd running there?)"
            )
        })?;
        listeners.push((listener, parsed.tls));
    }
    Ok(listeners)
}

/// How a listener is named in the serving log lines.
fn listening_on(listener: &Listener) -> String {
    match listener {
        Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        Listener::Unix(u) => u
            .listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_default(),
    }
}

/// Publishes this member's attributes through Raft, retrying until a leader with a
/// quorum commits them (etcd serves clients only once it has published).
async fn publish(server: &EtcdServer, election_timeout: Duration) {
    let started = Instant::now();
    let mut warned = false;
    loop {
        if server.status().leader_id != 0 {
            match server.publish().await {
                Ok(()) => return,
                Err(err) => tracing::debug!(error = %err, "publish failed; retrying"),
            }
        }
        if !warned && started.elapsed() > election_timeout * 5 {
            tracing::warn!("waiting for a leader with a quorum before serving clients; are the other members of --initial-cluster running?");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Listens for SIGTERM and SIGINT from now on (installed before the member
/// announces readiness, so a supervisor's signal right after it is not lost);
/// the returned future resolves at the first one.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| format!("cannot install a SIGTERM handler: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| format!("cannot install a SIGINT handler: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("received a shutdown signal; stopping the member");
    })
}

/// A member joining an existing cluster on an empty data dir learns the cluster ID
/// and membership from the running members it was given in --initial-cluster.
async fn fetch_join_info(cfg: &mut ServerConfig) -> Result<(), String> {
    let wal = cfg.wal_path();
    let exists = etcd_wal::Wal::exists(&wal).map_err(|e| {
        format!("cannot read {}: {e}; check its permissions and the disk", wal.display())
    })?;
    if cfg.initial_cluster_state != ClusterState::Existing || exists {
        return Ok(());
    }
    let peers: Vec<String> = cfg
        .initial_cluster
        .iter()
        .filter(|(name, _)| *name != cfg.name)
        .flat_map(|(_, urls)| urls.clone())
        .collect();
    tracing::info!(peers = ?peers, "joining an existing cluster: asking its members for the membership");
    let (cluster_id, members) = etcd_transport::fetch_members(
        &peers,
        &cfg.initial_advertise_peer_urls,
        cfg.peer_client_tls.as_ref(),
    )
    .await
    .map_err(|e| {
        format!("{e}; check that --initial-cluster lists running members of the cluster")
    })?;
    cfg.join = Some((cluster_id, members));
    Ok(())
}

/// The client port's TLS configuration, if any listen URL is `https://`.
fn client_tls(
    flags: &Flags,
    cfg: &ServerConfig,
    listeners: &[(Listener, bool)],
) -> Result<Option<etcd_tls::TlsAcceptor>, String> {
    let files = flags.client_tls(&cfg.data_dir)?;
    if !listeners.iter().any(|(_, tls)| *tls) {
        if files.is_some() {
            tracing::warn!(
                "--cert-file is set but no --listen-client-urls is https://; serving plaintext"
            );
        }
        return Ok(None);
    }
    let files = files.ok_or_else(|| {
        "an https:// --listen-client-urls needs --cert-file and --key-file, or --auto-tls"
            .to_string()
    })?;
    files.acceptor(etcd_tls::CLIENT_PORT_ALPN).map(Some)
}

/// Peer TLS from the `--peer-*` flags: the server side for `https://` peer
/// listeners (returned) and the client side for `https://` peer URLs (put in
/// `cfg`). Any https:// peer URL without the flags is an error.
fn peer_tls(
    flags: &Flags,
    cfg: &mut ServerConfig,
    listeners: &[(Listener, bool)],
) -> Result<Option<etcd_tls::TlsAcceptor>, String> {
    let files = flags.peer_tls(&cfg.data_dir)?;
    let https_listener = listeners.iter().any(|(_, tls)| *tls);
    let https_peer = cfg
        .initial_cluster
        .iter()
        .flat_map(|(_, urls)| urls)
        .chain(&cfg.initial_advertise_peer_urls)
        .any(|url| url.starts_with("https://") || url.starts_with("unixs://"));
    let Some(files) = files else {
        if https_listener || https_peer {
            return Err("https:// peer URLs need --peer-cert-file, --peer-key-file and \
                        --peer-trusted-ca-file, or --peer-auto-tls"
                .to_string());
        }
        return Ok(None);
    };
    cfg.peer_client_tls = Some(files.client_config()?);
    if https_listener {
        files.acceptor(etcd_tls::PEER_PORT_ALPN).map(Some)
    } else {
        Ok(None)
    }
}

async fn run(flags: Flags) -> Result<(), String> {
    let signalled = shutdown_signal()?;
    let mut cfg = flags.server_config()?;
    let listeners = bind_all(&flags.listen_client_urls(), "client").await?;
    let peer_listeners = bind_all(&flags.listen_peer_urls(), "peer").await?;
    let metrics_listeners = bind_all(&flags.listen_metrics_urls(), "metrics").await?;
    let tls = client_tls(&flags, &cfg, &listeners)?;
    if metrics_listeners.iter().any(|(_, tls)| *tls) {
        return Err("https:// metrics URLs are not supported yet: use http:// for \
                    --listen-metrics-urls"
            .to_string());
    }
    let peer_server_tls = peer_tls(&flags, &mut cfg, &peer_listeners)?;
    fetch_join_info(&mut cfg).await?;
    let name = cfg.name.clone();
    let client_urls = cfg.advertise_client_urls.clone();
    let election_timeout = cfg.election_timeout;
    tracing::info!(name = %name, data_dir = %cfg.data_dir.display(), "starting an etcd member");
    let server = tokio::task::spawn_blocking(move || EtcdServer::start(cfg))
        .await
        .map_err(|e| format!("startup panicked: {e}"))?
        .map_err(|e| e.to_string())?;
    server.spawn_background_tasks();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut serving = Vec::new();
    for (listener, is_tls) in peer_listeners {
        let mut stop = stop_tx.subscribe();
        let transport = server.transport().clone();
        let routes = server.peer_routes();
        let tls = if is_tls { peer_server_tls.clone() } else { None };
        serving.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.recv().await;
            };
            etcd_transport::serve(listener, transport, routes, tls, shutdown)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    // Probes (e.g. kubeadm's liveness check) poll these before the member serves clients.
    for (listener, _) in metrics_listeners {
        let Listener::Tcp(listener) = listener else {
            return Err("unix:// metrics URLs are not supported: use http:// for \
                        --listen-metrics-urls"
                .to_string());
        };
        let mut stop = stop_tx.subscribe();
        let server = Arc::clone(&server);
        serving.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.recv().await;
            };
            etcd_api::http::serve_metrics(server, listener, shutdown)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    if server.config().initial_corrupt_check {
        if let Err(message) = server.initial_corrupt_check().await {
            server.shutdown().await;
            return Err(message);
        }
    }
    // A member removed while it was down learns it from its peers before it
    // can publish; a signal may come at any time.
    let mut signalled = std::pin::pin!(signalled);
    let published = tokio::select! {
        () = publish(&server, election_timeout) => true,
        () = &mut signalled => false,
        () = server.removed() => false,
    };
    if published {
        tracing::info!(
            cluster_version = etcd_api::CLUSTER_VERSION,
            "enabled capabilities for version 3.5"
        );
        tracing::info!(
            local_member_id = %format!("{:x}", server.member_id()),
            local_member_attributes = %format!("{{Name:{name} ClientURLs:[{}]}}", client_urls.join(" ")),
            cluster_id = %format!("{:x}", server.cluster_id()),
            "published local member to cluster through raft"
        );
        for (listener, is_tls) in listeners {
            let address = listening_on(&listener);
            let mut stop = stop_tx.subscribe();
            let server = Arc::clone(&server);
            let tls = if is_tls { tls.clone() } else { None };
            serving.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.recv().await;
                };
                etcd_api::serve(server, listener, tls, shutdown).await.map_err(|e| e.to_string())
            }));
            if is_tls {
                tracing::info!(address = %address, "serving client traffic securely on {address}");
            } else {
                tracing::warn!(address = %address, "serving insecure client requests on {address}, this is strongly discouraged!");
            }
        }
        tracing::info!("ready to serve client requests");
        tokio::select! {
            () = &mut signalled => {},
            () = server.removed() => {},
        }
    }
    let _ = stop_tx.send(());
    for task in serving {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "a listener stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "a listener task failed"),
        }
    }
    server.shutdown().await;
    tracing::info!("stopped the member cleanly");
    Ok(())
}

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    // A configuration file replaces the command line and the ETCD_* variables.
    let config_file = config_file::requested(&argv, std::env::var("ETCD_CONFIG_FILE").ok());
    let mut file_unknown = Vec::new();
    if let Some(path) = &config_file {
        let program = argv.first().cloned().unwrap_or_else(|| "etcd".into());
        match config_file::load(&program, std::path::Path::new(path)) {
            Ok(loaded) => {
                argv = loaded.args;
                file_unknown = loaded.unknown;
            }
            Err(message) => {
                eprintln!("etcd: {message}");
                return ExitCode::from(2);
            }
        }
    }
    let (args, ignored) = match flag_policy::normalise(argv) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("etcd: {message}");
            return ExitCode::from(2);
        }
    };
    let mut command = <Flags as clap::CommandFactory>::command();
    let declared: Vec<String> =
        command.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect();
    let on_command_line: Vec<String> = args
        .iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect();
    let (env_ignored, env_unrecognized) = if config_file.is_some() {
        command = command.mut_args(|arg| arg.env(None::<&str>));
        (Vec::new(), Vec::new())
    } else {
        match flag_policy::check_env(std::env::vars(), &declared, &on_command_line) {
            Ok(checked) => checked,
            Err(message) => {
                eprintln!("etcd: {message}");
                return ExitCode::from(2);
            }
        }
    };
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|matches| <Flags as clap::FromArgMatches>::from_arg_matches(&matches));
    let flags = match parsed {
        Ok(flags) => flags,
        Err(err) => {
            if let Some(path) = &config_file {
                eprintln!("etcd: in the configuration file {path}:");
            }
            let _ = err.print();
            return ExitCode::from(2);
        }
    };
    if flags.version {
        println!("etcd Version: {}", etcd_api::SERVER_VERSION);
        println!("Git SHA: etcd-rs");
        println!("API Version: 3.5");
        return ExitCode::SUCCESS;
    }
    let log_flags = logging::LogFlags {
        // etcd 3.4: --debug is --log-level=debug.
        level: if flags.debug { "debug" } else { &flags.log_level },
        logger: &flags.logger,
        outputs: &flags.log_outputs,
        deprecated_output: &flags.log_output,
    };
    if let Err(message) = logging::plan(&log_flags).and_then(|plan| logging::init(&plan)) {
        eprintln!("etcd: {message}");
        return ExitCode::from(2);
    }
    for flag in ignored.into_iter().chain(env_ignored) {
        let why = flag_policy::ignored_because(&flag);
        tracing::warn!(flag = %flag, "--{flag} has no effect here: {why}");
    }
    if let Some(path) = &config_file {
        tracing::info!(
            path = %path,
            "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"
        );
    }
    for key in file_unknown {
        tracing::warn!(key = %key, "the configuration file sets {key}, which only later etcd versions read; it has no effect here");
    }
    for var in env_unrecognized {
        tracing::warn!(variable = %var, "unrecognized environment variable {var}: no etcd flag has this name");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("etcd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(error = %message, "etcd: failed to start");
            eprintln!("etcd: {message}");
            ExitCode::FAILURE
        }
    }
}
