//! TLS from etcd's flags, for the client port and the peer port alike.
//!
//! [`TlsSettings`] is what the flags say: a certificate and key (`--cert-file`,
//! `--key-file` or their `--peer-` twins), the CA that signs the other side's
//! certificates (`--trusted-ca-file`), whether the other side must present one
//! (`--client-cert-auth`), or a self-signed certificate made at startup
//! (`--auto-tls`, [`TlsSettings::self_signed`]). From it come the rustls server
//! configuration (for [`incoming`]) and the client configuration a member dials
//! its peers with. Both ports use rustls directly, not tonic's TLS wrapper,
//! because etcd's semantics (auto-TLS peers that skip verification, CRLs,
//! cipher suites, allowed CNs) need the full configuration.

mod accept;
mod ciphers;
mod listen;
mod selfcert;
mod verify;
mod x509;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use accept::{accepted, incoming};
pub use listen::{Accept, ListenUrl, Listener, UnixSocket};
pub use tokio_rustls::server::TlsStream;
pub use tokio_rustls::TlsAcceptor;

/// ALPN of the client port: gRPC needs h2, the JSON gateway's HTTP/1.1
/// clients (curl `--http1.1`, Python `requests`) need http/1.1; Go's servers
/// offer both.
pub const CLIENT_PORT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the peer port: members speak gRPC to each other.
pub const PEER_PORT_ALPN: &[&[u8]] = &[b"h2"];

/// The TLS of one port, as etcd's flags give it.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    /// An auto-TLS certificate: as etcd, a member dialing with it does not
    /// verify the other side's certificate (nobody signed it).
    pub self_signed: bool,
    /// `--client-crl-file` / `--peer-crl-file`: certificates (of the other
    /// side's chain) whose serial it lists are refused at the handshake.
    pub crl_file: Option<PathBuf>,
    /// `--peer-cert-allowed-cn`: the other side's certificate must have this CN.
    pub allowed_cn: Option<String>,
    /// `--client-cert-allowed-hostname` / `--peer-cert-allowed-hostname`: the
    /// other side's certificate must name this host.
    pub allowed_hostname: Option<String>,
    /// `--cipher-suites`, Go's names (empty: rustls' defaults).
    pub cipher_suites: Vec<String>,
    /// `""` for the client flags, `"peer-"` for the peer ones (error messages).
    pub flag_prefix: &'static str,
}

impl TlsSettings {
    /// The self-signed certificate of `--auto-tls` (`--peer-auto-tls`) for
    /// `hosts` (the listen URLs' `host:port`s), kept in `dir` (the data dir's
    /// `fixtures/client` or `fixtures/peer`): made once, reused on restart as
    /// etcd does.
    pub fn self_signed(
        dir: &Path,
        hosts: &[String],
        flag_prefix: &'static str,
    ) -> Result<Self, String> {
        let (cert_file, key_file) =
            selfcert::ensure(dir, hosts).map_err(|e| format!("--{flag_prefix}auto-tls: {e}"))?;
        Ok(TlsSettings { cert_file, key_file, self_signed: true, flag_prefix, ..Self::default() })
    }

    fn extra(&self) -> verify::Extra {
        verify::Extra {
            crl_file: self.crl_file.clone(),
            allowed_cn: self.allowed_cn.clone(),
            allowed_hostname: self.allowed_hostname.clone(),
        }
    }

    /// Checks what can be checked before serving: the rules' consistency, the
    /// cipher-suite names and the CRL file (the certificate files are read
    /// when the configurations are made).
    pub fn validate(&self) -> Result<(), String> {
        let p = self.flag_prefix;
        if self.allowed_cn.is_some() && self.allowed_hostname.is_some() {
            return Err(format!(
                "--{p}cert-allowed-cn and --{p}cert-allowed-hostname are mutually exclusive: \
                 give one"
            ));
        }
        if let Some(crl) = &self.crl_file {
            x509::check_crl_file(crl).map_err(|e| format!("--{p}crl-file: {e}"))?;
        }
        ciphers::provider(&self.cipher_suites).map(|_| ())
    }

    fn provider(&self) -> Result<Arc<rustls::crypto::CryptoProvider>, String> {
        ciphers::provider(&self.cipher_suites).map(Arc::new)
    }

    fn identity(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let p = self.flag_prefix;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_file)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| format!("cannot read --{p}cert-file {}: {e}", self.cert_file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--{p}cert-file {} holds no PEM certificate",
                self.cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| format!("cannot read --{p}key-file {}: {e}", self.key_file.display()))?;
        Ok((certs, key))
    }

    /// The trusted CA file: as rustls' root store, and the certificates.
    fn trusted_roots(&self, ca: &Path) -> Result<(rustls::RootCertStore, verify::Anchors), String> {
        let p = self.flag_prefix;
        let mut roots = rustls::RootCertStore::empty();
        let mut anchors = Vec::new();
        for cert in CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read --{p}trusted-ca-file {}: {e}", ca.display()))?
        {
            let cert = cert.map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca.display()))?;
            anchors.push(cert.clone());
            roots.add(cert).map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca.display()))?;
        }
        Ok((roots, verify::Anchors(anchors)))
    }

    /// The server side, offering `alpn`. With `--client-cert-auth` the other
    /// side must present a certificate signed by `--trusted-ca-file`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, String> {
        let p = self.flag_prefix;
        self.validate()?;
        let (certs, key) = self.identity()?;
        let provider = self.provider()?;
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
            let (roots, anchors) = self.trusted_roots(ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(Arc::new(verify::CheckedClientCert {
                inner: verifier,
                extra: self.extra(),
                anchors,
            }))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            format!("--{p}cert-file and --{p}key-file do not make a usable identity: {e}")
        })?;
        config.alpn_protocols = alpn.iter().map(|proto| proto.to_vec()).collect();
        Ok(config)
    }

    /// A TLS acceptor offering `alpn` (see [`incoming`]).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<TlsAcceptor, String> {
        Ok(TlsAcceptor::from(Arc::new(self.server_config(alpn)?)))
    }

    /// How this member dials `https://` peers: it presents its own
    /// certificate and trusts `--peer-trusted-ca-file`, or, with a self-signed
    /// certificate, verifies nothing (etcd's auto-TLS: encrypted, not
    /// authenticated).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let p = self.flag_prefix;
        self.validate()?;
        let (certs, key) = self.identity()?;
        let provider = self.provider()?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let mut anchors = verify::Anchors::default();
        let inner: Arc<dyn rustls::client::danger::ServerCertVerifier> = if self.self_signed {
            Arc::new(verify::AnyServerCert(provider))
        } else {
            let Some(ca) = &self.trusted_ca_file else {
                return Err(format!(
                    "https:// peers need --{p}trusted-ca-file: the CA that signs the members' \
                     certificates"
                ));
            };
            let (roots, trusted) = self.trusted_roots(ca)?;
            anchors = trusted;
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca.display()))?
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(Arc::new(
            verify::CheckedServerCert { inner, extra: self.extra(), anchors },
        ));
        let mut config = builder.with_client_auth_cert(certs, key).map_err(|e| {
            format!("--{p}cert-file and --{p}key-file do not make a usable identity: {e}")
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A failed handshake in Go's words when the other side refused it with an
/// alert (`remote error: tls: bad certificate`), as etcd logs it and as
/// operators (and etcd's e2e suite) look for it; otherwise the error itself.
pub fn describe_handshake_error(error: &std::io::Error) -> String {
    use rustls::AlertDescription as A;
    let alert = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).and_then(
        |e| match e {
            rustls::Error::AlertReceived(alert) => Some(*alert),
            _ => None,
        },
    );
    let go = match alert {
        Some(A::BadCertificate) => "bad certificate",
        Some(A::UnknownCA) => "unknown certificate authority",
        Some(A::CertificateExpired) => "expired certificate",
        Some(A::CertificateRevoked) => "revoked certificate",
        Some(A::UnsupportedCertificate) => "unsupported certificate",
        Some(A::HandshakeFailure) => "handshake failure",
        Some(A::AccessDenied) => "access denied",
        Some(A::ProtocolVersion) => "protocol version not supported",
        Some(A::CertificateRequired) => "certificate required",
        _ => return error.to_string(),
    };
    format!("remote error: tls: {go}")
}

#[cfg(test)]
mod tests;
