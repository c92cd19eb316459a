//! `--cipher-suites`: Go's cipher-suite names (`crypto/tls`), as etcd takes
//! them. They restrict TLS 1.2; TLS 1.3's suites are not configurable in Go
//! and stay on here too. Go knows suites rustls does not implement (CBC, RSA
//! key exchange, 3DES, RC4): those are skipped with a warning, and a list
//! with none this server can offer is refused.

use rustls::crypto::ring::cipher_suite as suite;
use rustls::crypto::CryptoProvider;
use rustls::SupportedCipherSuite;

/// Go's TLS 1.2 suite names and the rustls suite for each (none: Go has it,
/// rustls does not).
const TLS12: &[(&str, Option<SupportedCipherSuite>)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        Some(suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        Some(suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", Some(suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", Some(suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        Some(suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        Some(suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", None),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", None),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", None),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", None),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", None),
    ("TLS_RSA_WITH_RC4_128_SHA", None),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", None),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", None),
    ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", None),
];

/// Go's TLS 1.3 names: accepted, always on.
const TLS13: &[&str] =
    &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

/// Checks `names` (etcd's message for an unknown one) and returns the
/// TLS 1.2 suites to offer, in the given order.
pub(crate) fn tls12_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, String> {
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        if TLS13.contains(&name.as_str()) {
            continue;
        }
        match TLS12.iter().find(|(known, _)| known == name) {
            Some((_, Some(suite))) => {
                if !chosen.contains(suite) {
                    chosen.push(*suite)
                }
            }
            Some((_, None)) => skipped.push(name.as_str()),
            None => return Err(format!("unexpected TLS cipher suite {name:?}")),
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            skipped = ?skipped,
            "--cipher-suites names suites this server's TLS library (rustls) does not implement; \
             they are not offered (only ECDHE with AES-GCM or ChaCha20-Poly1305 are)"
        );
    }
    if chosen.is_empty() && names.iter().any(|n| !TLS13.contains(&n.as_str())) {
        return Err(format!(
            "--cipher-suites {}: none of these TLS 1.2 suites is implemented by this server; \
             use ECDHE suites with AES-GCM or ChaCha20-Poly1305 (e.g. \
             TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
            names.join(",")
        ));
    }
    Ok(chosen)
}

/// The ring provider restricted to `names` (all suites when empty).
pub(crate) fn provider(names: &[String]) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    let tls12 = tls12_suites(names)?;
    provider.cipher_suites.retain(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
    provider.cipher_suites.extend(tls12);
    Ok(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_names_map_and_unknown_ones_are_refused_with_etcds_message() {
        let chosen = tls12_suites(&names(&[
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        ]))
        .expect("known names");
        assert_eq!(
            chosen,
            vec![
                suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        assert_eq!(
            tls12_suites(&names(&["TLS_BOGUS"])).expect_err("unknown"),
            "unexpected TLS cipher suite \"TLS_BOGUS\""
        );
        assert!(tls12_suites(&names(&["TLS_RSA_WITH_RC4_128_SHA"])).is_err());
        assert!(tls12_suites(&names(&["TLS_AES_128_GCM_SHA256"])).expect("1.3").is_empty());
    }
}
