//! The values of etcd's flags that need more than a number or a string: Go
//! durations, `--auth-token` with its options, `--cors` origins. Each is
//! checked as etcd checks it, with an error that names the flag's value.

use std::sync::Arc;
use std::time::Duration;

use etcd_daemon::config::comma_list;

/// `--auth-token`: `simple`, or `jwt,pub-key=FILE,priv-key=FILE,sign-method=M,ttl=D`
/// as etcd splits it (comma-separated `key=value` options after the type; a
/// malformed or repeated option is refused). `None`: simple tokens.
pub fn auth_token_provider(spec: &str) -> Result<Option<Arc<etcd_auth::JwtTokens>>, String> {
    const INVALID: &str = "auth: invalid auth options";
    let mut parts = spec.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut options = std::collections::HashMap::new();
    for option in parts {
        let Some((key, value)) = option.split_once('=').filter(|(_, v)| !v.contains('=')) else {
            return Err(format!("{INVALID} (option {option:?} is not key=value)"));
        };
        if options.insert(key, value).is_some() {
            return Err(format!("{INVALID} (option {key:?} given twice)"));
        }
    }
    match kind {
        "simple" => {
            tracing::warn!("simple token is not cryptographically signed");
            Ok(None)
        }
        "jwt" => {
            let unknown: Vec<&&str> = options
                .keys()
                .filter(|k| !["sign-method", "pub-key", "priv-key", "ttl"].contains(*k))
                .collect();
            if !unknown.is_empty() {
                tracing::warn!(keys = ?unknown, "unknown JWT options");
            }
            let ttl = match options.get("ttl").copied().unwrap_or_default() {
                "" => Duration::from_secs(etcd_auth::DEFAULT_JWT_TTL_S),
                text => parse_go_duration(text).map_err(|e| format!("{INVALID} ({e})"))?,
            };
            let read = |option: &str| -> Result<Option<Vec<u8>>, String> {
                match options.get(option).copied().unwrap_or_default() {
                    "" => Ok(None),
                    file => std::fs::read(file)
                        .map(Some)
                        .map_err(|e| format!("{INVALID} (cannot read {option} {file:?}: {e})")),
                }
            };
            let (private, public) = (read("priv-key")?, read("pub-key")?);
            let method = options.get("sign-method").copied().unwrap_or_default();
            // Go's duration is truncated to whole seconds in the token's `exp`.
            let tokens = etcd_auth::JwtTokens::new(
                method,
                private.as_deref(),
                public.as_deref(),
                ttl.as_secs().max(1),
            )
            .map_err(|e| e.to_string())?;
            if tokens.verify_only() {
                tracing::warn!("JWT: only a public key given; this member verifies tokens but cannot issue them");
            }
            Ok(Some(Arc::new(tokens)))
        }
        other => Err(format!("{INVALID} (unknown token type {other:?}; use simple or jwt)")),
    }
}

/// `--cors`: `*` or origins written as URLs with a port, as etcd checks them.
pub fn cors_origins(text: &str) -> Result<Vec<String>, String> {
    let origins = comma_list(text);
    for origin in origins.iter().filter(|o| *o != "*") {
        let host_port = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
        let has_port = host_port
            .and_then(|hp| hp.rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            return Err(format!(
                "invalid value {origin:?} for flag -cors: URL address does not have the form \
                 \"host:port\": {origin}"
            ));
        }
    }
    Ok(origins)
}

/// Parses Go's duration syntax (`1h30m`, `10s`, `250ms`, `1.5s`), as etcd's flags use.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: write it like 10s, 500ms or 1m30s");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    // Go's durations are never negative when written without a sign; zero is
    // valid ("0s"): the flags that take one read it as "off" or "default".
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_token_options_are_split_as_etcd_splits_them() {
        assert!(auth_token_provider("simple").expect("simple").is_none());
        let invalid = |spec: &str| auth_token_provider(spec).expect_err(spec);
        assert!(invalid("simple,ttl").contains("auth: invalid auth options"));
        assert!(invalid("jwt,sign-method=HS256,sign-method=HS256").contains("given twice"));
        assert!(invalid("jwt,priv-key=a=b").contains("auth: invalid auth options"));
        assert!(invalid("nop").contains("unknown token type"));
        assert_eq!(invalid("jwt,sign-method=XX1"), "auth: invalid auth signature method");
        assert_eq!(invalid("jwt,sign-method=RS256"), "auth: missing key data");
        assert!(invalid("jwt,sign-method=RS256,priv-key=/nonexistent").contains("cannot read"));
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/auth/testdata");
        let spec = format!("jwt,pub-key={dir}/p256.pub,sign-method=ES256,ttl=1m");
        let tokens = auth_token_provider(&spec).expect("verify-only").expect("jwt");
        assert!(tokens.verify_only());
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_go_duration("10").is_err());
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(cors_origins("*, http://a:80"), Ok(vec!["*".into(), "http://a:80".into()]));
        assert!(cors_origins("https://ui.example").unwrap_err().contains("host:port"));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("ten seconds").is_err());
    }
}
