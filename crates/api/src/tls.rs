//! TLS for the client port, from etcd's flags: `--cert-file` and `--key-file`
//! (the server's identity), `--trusted-ca-file` and `--client-cert-auth`
//! (require clients to present a certificate signed by that CA).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The PEM files and policy of a TLS listener.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

impl TlsFiles {
    /// The rustls configuration tonic serves with. Errors name the flag and file.
    pub fn server_config(&self) -> Result<ServerTlsConfig, String> {
        let cert = read(&self.cert_file, "--cert-file")?;
        let key = read(&self.key_file, "--key-file")?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if self.client_cert_auth {
            let Some(ca) = &self.trusted_ca_file else {
                return Err("--client-cert-auth needs --trusted-ca-file: the CA that signs the \
                            clients' certificates"
                    .to_string());
            };
            config = config.client_ca_root(Certificate::from_pem(read(ca, "--trusted-ca-file")?));
        }
        Ok(config)
    }
}
