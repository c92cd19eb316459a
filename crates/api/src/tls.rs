//! TLS for the client port, from etcd's flags: `--cert-file` and `--key-file`
//! (the server's identity), `--trusted-ca-file` and `--client-cert-auth`
//! (require clients to present a certificate signed by that CA).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

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
    /// The rustls configuration tonic serves with. Errors name the flag and file.
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
