//! TLS from etcd's flags: `--cert-file` and `--key-file` (the server's
//! identity), `--trusted-ca-file` and `--client-cert-auth` (require clients to
//! present a certificate signed by that CA), and their `--peer-*` twins.
//!
//! The client port terminates TLS itself ([`TlsFiles::acceptor`], offering h2
//! and http/1.1 in ALPN as Go's servers do, so HTTP/1.1 clients of the JSON
//! gateway connect too); the peer port uses tonic's TLS (h2 only, all peers
//! speak it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;

/// The PEM files and policy of a TLS listener.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    /// `""` for the client flags, `"peer-"` for the peer ones (error messages).
    pub flag_prefix: &'static str,
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

impl TlsFiles {
    /// A TLS acceptor for the client port.
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        let p = self.flag_prefix;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_file)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| format!("cannot read --{p}cert-file {}: {e}", self.cert_file.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| format!("cannot read --{p}key-file {}: {e}", self.key_file.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = if self.client_cert_auth {
            let Some(ca) = &self.trusted_ca_file else {
                return Err(format!(
                    "--{p}client-cert-auth needs --{p}trusted-ca-file: the CA that signs the \
                     clients' certificates"
                ));
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read --{p}trusted-ca-file {}: {e}", ca.display()))?
            {
                let cert =
                    cert.map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            format!("--{p}cert-file and --{p}key-file do not make a usable identity: {e}")
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The TLS configuration tonic serves the peer port with. Errors name the
    /// flag and file.
    pub fn server_config(&self) -> Result<ServerTlsConfig, String> {
        let p = self.flag_prefix;
        let cert = read(&self.cert_file, &format!("--{p}cert-file"))?;
        let key = read(&self.key_file, &format!("--{p}key-file"))?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if self.client_cert_auth {
            let Some(ca) = &self.trusted_ca_file else {
                return Err(format!(
                    "--{p}client-cert-auth needs --{p}trusted-ca-file: the CA that signs the \
                     clients' certificates"
                ));
            };
            let ca = read(ca, &format!("--{p}trusted-ca-file"))?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        Ok(config)
    }

    /// How this member connects to `https://` peers: it trusts the CA of
    /// `--peer-trusted-ca-file` and presents its own peer certificate.
    pub fn client_config(&self) -> Result<ClientTlsConfig, String> {
        let p = self.flag_prefix;
        let Some(ca) = &self.trusted_ca_file else {
            return Err(format!(
                "https:// peers need --{p}trusted-ca-file: the CA that signs the members' certificates"
            ));
        };
        let ca = read(ca, &format!("--{p}trusted-ca-file"))?;
        let cert = read(&self.cert_file, &format!("--{p}cert-file"))?;
        let key = read(&self.key_file, &format!("--{p}key-file"))?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key)))
    }
}

/// Accepts connections on `listener` and completes their TLS handshakes
/// concurrently (a slow or failing client never holds up the others); yields
/// the connections ready to serve.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, ready) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = ready.send(Ok(tls)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(%peer, error = %err, "rejected a client's TLS handshake")
                    }
                    Err(_) => tracing::warn!(%peer, "a client's TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
