//! What etcd reads out of certificates and CRLs: serial numbers (compared as
//! Go's `big.Int.Bytes()`: big-endian, no leading zero bytes), the subject's
//! common name, and the SANs a hostname is matched against.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// `bytes` without the leading zeros DER adds to keep a serial positive.
fn magnitude(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The serials a CRL file (PEM or DER) revokes.
pub(crate) fn revoked_serials(path: &Path) -> Result<HashSet<Vec<u8>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read CRL {}: {e}", path.display()))?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
            .map_err(|e| format!("CRL {} is not PEM: {e}", path.display()))?;
        pem.contents
    } else {
        bytes
    };
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        .map_err(|e| format!("CRL {} does not parse: {e}", path.display()))?;
    Ok(crl.iter_revoked_certificates().map(|revoked| magnitude(revoked.raw_serial())).collect())
}

/// Checks that a CRL file is readable and well-formed (at startup, so a
/// typo in the flag stops the member instead of refusing every client).
pub(crate) fn check_crl_file(path: &Path) -> Result<(), String> {
    revoked_serials(path).map(|_| ())
}

pub(crate) fn serial_of(cert: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    Ok(magnitude(parsed.raw_serial()))
}

/// Whether `now` (seconds since the epoch) is within the certificate's validity.
pub(crate) fn valid_at(cert: &CertificateDer<'_>, now: u64) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let validity = parsed.validity();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp()
}

/// The names of a certificate that etcd's rules look at.
pub(crate) struct Names {
    pub(crate) common_name: Option<String>,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Names {
    /// Whether the SANs name `host`, as Go's `VerifyHostname`: an IP against
    /// the IP SANs, a name against the DNS SANs (case-insensitive, `*.` for
    /// exactly one leftmost label).
    pub(crate) fn matches_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => pattern == host,
            }
        })
    }
}

pub(crate) fn names_of(cert: &CertificateDer<'_>) -> Result<Names, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let (mut dns_names, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("4 bytes"))),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("16 bytes"))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(Names { common_name, dns_names, ips })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_without_sign_padding() {
        assert_eq!(magnitude(&[0, 0x80, 1]), vec![0x80, 1]);
        assert_eq!(magnitude(&[5]), vec![5]);
    }

    #[test]
    fn hostnames_match_as_go_verifies_them() {
        let names = Names {
            common_name: None,
            dns_names: vec!["example.com".into(), "*.etcd.local".into()],
            ips: vec!["127.0.0.1".parse().expect("ip")],
        };
        assert!(names.matches_host("example.com"));
        assert!(names.matches_host("EXAMPLE.com"));
        assert!(names.matches_host("m1.etcd.local"));
        assert!(!names.matches_host("a.m1.etcd.local"));
        assert!(!names.matches_host("etcd.local"));
        assert!(names.matches_host("127.0.0.1"));
        assert!(!names.matches_host("127.0.0.2"));
    }
}
