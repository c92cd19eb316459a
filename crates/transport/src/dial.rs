//! How a member dials its peers: the peer URLs are `http://` (plain TCP) or
//! `https://` (TLS with the member's peer TLS configuration, see
//! `etcd_tls::TlsSettings::client_config`). One [`Connector`] holds all of a
//! peer's URLs and tries them in order on every (re)connect, so a channel
//! fails over to the next URL when one stops answering.
//!
//! TLS is done here rather than by tonic because etcd's peer TLS needs what
//! tonic's wrapper cannot express (auto-TLS peers that skip verification).
//! tonic therefore sees `http://` endpoints: it must not try TLS itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tonic::codegen::http::Uri;
use tonic::transport::Endpoint;

/// How this member reaches `https://` peers.
pub type ClientTlsConfig = Arc<rustls::ClientConfig>;

/// One peer URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port`, what TCP connects to; the socket's path for a Unix socket.
    address: String,
    /// The host, what a TLS server name is checked against.
    host: String,
    tls: bool,
    /// `unix://` or `unixs://` (etcd's socket path: the URL's host and path).
    unix: bool,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let unix = url.strip_prefix("unix://").map(|p| (p, false));
        if let Some((path, tls)) = unix.or_else(|| url.strip_prefix("unixs://").map(|p| (p, true)))
        {
            if path.is_empty() {
                return Err(format!("invalid peer URL {url}: no socket path"));
            }
            // A certificate for a socket names its host part (`etcd.unix` of
            // `etcd.unix:1`), or localhost for a plain path.
            let host = path.split([':', '/']).next().filter(|h| !h.is_empty());
            let host = host.unwrap_or("localhost").to_string();
            return Ok(Target { address: path.to_string(), host, tls, unix: true });
        }
        let uri: Uri = url.parse().map_err(|e| format!("invalid peer URL {url}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "invalid peer URL {url}: the scheme must be http, https, unix or unixs"
                ))
            }
        };
        let authority =
            uri.authority().ok_or_else(|| format!("invalid peer URL {url}: no host"))?;
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let address =
            if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Target { address, host, tls, unix: false })
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection to a peer, plain or TLS.
pub(crate) struct PeerIo(Box<dyn Io>);

impl AsyncRead for PeerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Dials a peer's URLs in order (see the module docs).
#[derive(Clone)]
pub(crate) struct Connector {
    targets: Arc<Vec<Target>>,
    tls: Option<tokio_rustls::TlsConnector>,
    attempt_timeout: Duration,
}

impl Connector {
    /// A connector for `urls`; an `https://` URL needs `tls`.
    pub(crate) fn new(
        urls: &[String],
        tls: Option<&ClientTlsConfig>,
        attempt_timeout: Duration,
    ) -> Result<Self, String> {
        let targets = urls.iter().map(|url| Target::parse(url)).collect::<Result<Vec<_>, _>>()?;
        if let Some(target) = targets.iter().find(|t| t.tls) {
            if tls.is_none() {
                return Err(format!(
                    "peer URL https://{} needs peer TLS: give --peer-trusted-ca-file, \
                     --peer-cert-file and --peer-key-file, or --peer-auto-tls",
                    target.address
                ));
            }
        }
        Ok(Connector {
            targets: Arc::new(targets),
            tls: tls.map(|config| tokio_rustls::TlsConnector::from(Arc::clone(config))),
            attempt_timeout,
        })
    }

    /// The endpoint tonic drives this connector through: `http://` (TLS, if
    /// any, is ours) with the first URL's authority.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, String> {
        let first = self.targets.first().ok_or("the peer has no URLs")?;
        // A socket path is no authority; the connector ignores the URI anyway.
        let authority = if first.unix { "localhost" } else { first.address.as_str() };
        Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| format!("invalid peer address {}: {e}", first.address))
    }

    async fn dial(
        target: &Target,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> std::io::Result<PeerIo> {
        if target.unix {
            let stream = UnixStream::connect(&target.address).await?;
            return Self::secure(target, tls, stream).await;
        }
        let stream = TcpStream::connect(&target.address).await?;
        // Raft heartbeats are small and latency-sensitive.
        stream.set_nodelay(true)?;
        Self::secure(target, tls, stream).await
    }

    /// Runs the TLS handshake on `stream` for an `https://`/`unixs://` target.
    async fn secure(
        target: &Target,
        tls: Option<&tokio_rustls::TlsConnector>,
        stream: impl Io + 'static,
    ) -> std::io::Result<PeerIo> {
        if !target.tls {
            return Ok(PeerIo(Box::new(stream)));
        }
        let tls = tls.ok_or_else(|| std::io::Error::other("no peer TLS configured"))?;
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        match tls.connect(name, stream).await {
            Ok(stream) => Ok(PeerIo(Box::new(stream))),
            Err(e) => Err(std::io::Error::new(e.kind(), etcd_tls::describe_handshake_error(&e))),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<PeerIo>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<PeerIo>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut failures = Vec::new();
            for target in this.targets.iter() {
                let attempt = tokio::time::timeout(
                    this.attempt_timeout,
                    Self::dial(target, this.tls.as_ref()),
                );
                match attempt.await {
                    Ok(Ok(io)) => return Ok(TokioIo::new(io)),
                    Ok(Err(e)) => failures.push(format!("{}: {e}", target.address)),
                    Err(_) => failures.push(format!("{}: timed out", target.address)),
                }
            }
            Err(std::io::Error::other(failures.join("; ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_parse_as_etcd_writes_them() {
        let u = Target::parse("unix://etcd.unix:1").expect("unix");
        assert_eq!(
            (u.address.as_str(), u.host.as_str(), u.tls, u.unix),
            ("etcd.unix:1", "etcd.unix", false, true)
        );
        let u = Target::parse("unixs:///run/peer.sock").expect("unixs");
        assert_eq!(
            (u.address.as_str(), u.host.as_str(), u.tls, u.unix),
            ("/run/peer.sock", "localhost", true, true)
        );
        assert!(Target::parse("unix://").is_err());
        let t = Target::parse("https://127.0.0.1:2380").expect("https");
        assert_eq!(
            (t.address.as_str(), t.host.as_str(), t.tls),
            ("127.0.0.1:2380", "127.0.0.1", true)
        );
        let t = Target::parse("http://[::1]:2380").expect("v6");
        assert_eq!((t.address.as_str(), t.host.as_str(), t.tls), ("[::1]:2380", "::1", false));
        let t = Target::parse("http://infra0.example.com").expect("no port");
        assert_eq!(t.address, "infra0.example.com:80");
        assert!(Target::parse("ftp://a:1").is_err());
        assert!(Target::parse("localhost:2380").is_err());
    }

    #[test]
    fn an_https_peer_needs_tls() {
        let err = Connector::new(&["https://127.0.0.1:2380".into()], None, Duration::from_secs(1))
            .err()
            .expect("refused");
        assert!(err.contains("--peer-auto-tls"), "{err}");
        assert!(
            Connector::new(&["http://127.0.0.1:2380".into()], None, Duration::from_secs(1)).is_ok()
        );
    }
}
