//! etcd's auto-TLS certificate: self-signed, for the hosts of the listen URLs,
//! organisation `etcd`, valid for a year, usable to serve (ServerAuth) and
//! kept as `cert.pem` and `key.pem` in the data dir's `fixtures/{client,peer}`.
//! An existing pair is reused, so a restarted member keeps its certificate.
//!
//! etcd 3.4 makes a P-521 key; this server makes P-256 (rustls' ring provider
//! signs with P-256 and P-384 only). Clients do not verify the certificate, so
//! the curve is invisible to them.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

const VALIDITY: time::Duration = time::Duration::days(365);

/// The `host` of a `host:port` (brackets of an IPv6 literal removed).
fn host_of(host_port: &str) -> &str {
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => host_port,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The certificate and key paths in `dir`, made for `hosts` if not there yet.
pub(crate) fn ensure(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), String> {
    create_private_dir(dir)
        .map_err(|e| format!("cannot create the certificate directory {}: {e}", dir.display()))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let mut params = CertificateParams::default();
    let mut names = DistinguishedName::new();
    names.push(DnType::OrganizationName, "etcd");
    params.distinguished_name = names;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + VALIDITY;
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.is_ca = IsCa::ExplicitNoCa;
    for host in hosts {
        let host = host_of(host);
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string().try_into().map_err(|e| format!("host {host:?}: {e}"))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate an ECDSA key: {e}"))?;
    let cert = params.self_signed(&key).map_err(|e| format!("cannot make the certificate: {e}"))?;
    // The key first: a pair is reused only when both files exist.
    write_private(&key_path, key.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    std::fs::write(&cert_path, cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
    tracing::info!(path = %cert_path.display(), "created cert file");
    tracing::info!(path = %key_path.display(), "created key file");
    Ok((cert_path, key_path))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_listen_urls() {
        assert_eq!(host_of("127.0.0.1:2380"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2380"), "::1");
        assert_eq!(host_of("localhost:2379"), "localhost");
        assert_eq!(host_of("example.com"), "example.com");
    }
}
