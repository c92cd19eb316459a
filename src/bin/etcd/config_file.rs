//! `--config-file`: etcd's YAML configuration file (`etcd.conf.yml.sample`).
//!
//! As in etcd, a configuration file replaces the command line and the `ETCD_*`
//! variables entirely. Its keys are etcd's flag names, except for the two TLS
//! blocks (`client-transport-security`, `peer-transport-security`), so the file
//! is turned into the equivalent `--flag=value` arguments and parsed by the one
//! flag parser: every key gets exactly the checks, refusals and warnings its flag
//! gets.
//!
//! etcd 3.4 reads the file into its `Config` structure; a `null` or absent key
//! keeps the default (the initial cluster too: derived from `name` and the
//! advertised peer URLs, as on the command line). Durations are integers of
//! nanoseconds there (Go's `time.Duration` in JSON); a Go duration string such as
//! `10s` is accepted too. Departure: etcd skips keys it does not know, which hides
//! a misspelt key for good; here a key of a later etcd version (3.5, 3.6) is
//! skipped with a warning, and a key no etcd version has is refused.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

/// The top-level keys etcd 3.4's configuration file knows (the JSON tags of
/// `embed.Config` and of its YAML wrapper), besides the two TLS blocks.
const KNOWN_KEYS: &[&str] = &[
    "advertise-client-urls",
    "auth-token",
    "auth-token-ttl",
    "auto-compaction-mode",
    "auto-compaction-retention",
    "backend-batch-interval",
    "backend-batch-limit",
    "bcrypt-cost",
    "cipher-suites",
    "cors",
    "data-dir",
    "debug",
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "election-timeout",
    "enable-grpc-gateway",
    "enable-pprof",
    "enable-v2",
    "experimental-backend-bbolt-freelist-type",
    "experimental-compaction-batch-limit",
    "experimental-corrupt-check-time",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "experimental-enable-v2v3",
    "experimental-initial-corrupt-check",
    "experimental-warning-apply-duration",
    "experimental-watch-progress-notify-interval",
    "force-new-cluster",
    "grpc-keepalive-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-timeout",
    "heartbeat-interval",
    "host-whitelist",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "initial-election-tick-advance",
    "listen-client-urls",
    "listen-metrics-urls",
    "listen-peer-urls",
    "log-level",
    "log-output",
    "log-outputs",
    "log-package-levels",
    "logger",
    "max-concurrent-streams",
    "max-request-bytes",
    "max-snapshots",
    "max-txn-ops",
    "max-wals",
    "metrics",
    "name",
    "pre-vote",
    "proxy",
    "quota-backend-bytes",
    "snapshot-count",
    "strict-reconfig-check",
    "unsafe-no-fsync",
    "wal-dir",
];

/// The keys of `KNOWN_KEYS` whose values are Go durations (`time.Duration`).
const DURATION_KEYS: &[&str] = &[
    "backend-batch-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "experimental-corrupt-check-time",
    "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration",
];

/// Keys that later etcd versions (3.5, 3.6) read and 3.4 does not: a file
/// written for them still starts this member, without these settings.
const LATER_KEYS: &[&str] = &[
    "snapshot-catchup-entries",
    "experimental-snapshot-catchup-entries",
    "backend-bbolt-freelist-type",
    "self-signed-cert-validity",
    "tls-min-version",
    "tls-max-version",
    "discovery-config",
    "socket-options",
    "corrupt-check-time",
    "compact-hash-check-time",
    "experimental-compact-hash-check-enabled",
    "experimental-compact-hash-check-time",
    "compaction-batch-limit",
    "compaction-sleep-interval",
    "experimental-compaction-sleep-interval",
    "watch-progress-notify-interval",
    "warning-apply-duration",
    "bootstrap-defrag-threshold-megabytes",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "warning-unary-request-duration",
    "experimental-warning-unary-request-duration",
    "max-learners",
    "experimental-max-learners",
    "enable-distributed-tracing",
    "experimental-enable-distributed-tracing",
    "distributed-tracing-address",
    "experimental-distributed-tracing-address",
    "distributed-tracing-service-name",
    "experimental-distributed-tracing-service-name",
    "distributed-tracing-instance-id",
    "experimental-distributed-tracing-instance-id",
    "distributed-tracing-sampling-rate",
    "experimental-distributed-tracing-sampling-rate",
    "log-format",
    "disable-log-sampling",
    "enable-log-rotation",
    "log-rotation-config-json",
    "downgrade-check-time",
    "experimental-downgrade-check-time",
    "memory-mlock",
    "experimental-memory-mlock",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-wait-cluster-ready-timeout",
    "experimental-stop-grpc-service-on-defrag",
    "experimental-peer-skip-client-san-verification",
    "listen-client-http-urls",
    "feature-gates",
];

/// The v2 proxy's timeouts (etcd 3.4's sample sets them): they matter only with
/// `proxy` on, which this server refuses, so they are skipped as etcd skips them
/// with the proxy off.
const PROXY_KEYS: &[&str] = &[
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
];

/// TLS block keys of later etcd versions (3.5+), skipped with a warning.
const LATER_SECURITY_KEYS: &[&str] = &[
    "client-cert-file",
    "client-key-file",
    "allowed-cn",
    "allowed-hostname",
    "skip-client-san-verification",
];

/// The keys of a TLS block and the flag each one is for the client block; the
/// peer block's flags carry the `peer-` prefix. etcd 3.4 reads these five only.
const SECURITY_KEYS: &[(&str, &str)] = &[
    ("cert-file", "cert-file"),
    ("key-file", "key-file"),
    ("client-cert-auth", "client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file"),
    ("auto-tls", "auto-tls"),
];

/// The file named by `--config-file` (or `-config-file`, with `=` or as the
/// next argument), else by `ETCD_CONFIG_FILE`; `None` when neither is set or
/// the value is empty.
pub fn requested(args: &[String], env: Option<String>) -> Option<String> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
        match body.map(|b| b.split_once('=').unwrap_or((b, ""))) {
            Some(("config-file", "")) if !arg.contains('=') => {
                return iter.next().cloned().filter(|v| !v.is_empty());
            }
            Some(("config-file", value)) => {
                return Some(value.to_owned()).filter(|v| !v.is_empty())
            }
            _ => {}
        }
    }
    env.filter(|v| !v.is_empty())
}

/// What a configuration file amounts to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileArgs {
    /// The arguments it stands for (program name first).
    pub args: Vec<String>,
    /// Keys etcd does not know either (etcd skips them silently; we warn).
    pub unknown: Vec<String>,
}

/// Reads the configuration file at `path` into arguments.
pub fn load(program: &str, path: &Path) -> Result<FileArgs, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!("cannot read the configuration file {}: {e} (check --config-file)", path.display())
    })?;
    from_yaml(program, &text).map_err(|e| format!("the configuration file {}: {e}", path.display()))
}

/// Turns the text of a configuration file into arguments.
pub fn from_yaml(program: &str, text: &str) -> Result<FileArgs, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut out = FileArgs { args: vec![program.to_owned()], unknown: Vec::new() };
    let root = match docs.into_iter().next() {
        None | Some(Yaml::Null) => return Ok(out),
        Some(Yaml::Hash(root)) => root,
        Some(_) => return Err("the top level must be a mapping of etcd's keys to values".into()),
    };
    for (key, value) in root {
        let Yaml::String(key) = key else {
            return Err(format!("the key {key:?} is not a name"));
        };
        match key.as_str() {
            "client-transport-security" | "peer-transport-security" => {
                let prefix = if key.starts_with("peer") { "peer-" } else { "" };
                security_block(&key, prefix, value, &mut out)?;
            }
            name if DURATION_KEYS.contains(&name) => {
                if let Some(text) = duration(name, &value)? {
                    out.args.push(format!("--{name}={text}"));
                }
            }
            name if KNOWN_KEYS.contains(&name) => {
                if let Some(text) = scalar(name, &value)? {
                    out.args.push(format!("--{name}={text}"));
                }
            }
            name if LATER_KEYS.contains(&name) => out.unknown.push(key),
            name if PROXY_KEYS.contains(&name) => {}
            _ => return Err(unknown_key(&key)),
        }
    }
    Ok(out)
}

fn security_block(
    block: &str,
    prefix: &str,
    value: Yaml,
    out: &mut FileArgs,
) -> Result<(), String> {
    let entries = match value {
        Yaml::Null => return Ok(()),
        Yaml::Hash(entries) => entries,
        _ => return Err(format!("{block} must be a mapping (cert-file, key-file, ...)")),
    };
    for (key, value) in entries {
        let Yaml::String(key) = key else {
            return Err(format!("{block}: the key {key:?} is not a name"));
        };
        match SECURITY_KEYS.iter().find(|(k, _)| *k == key) {
            Some((_, flag)) => {
                let flag = format!("{prefix}{flag}");
                if let Some(text) = scalar(&format!("{block}.{key}"), &value)? {
                    out.args.push(format!("--{flag}={text}"));
                }
            }
            None if LATER_SECURITY_KEYS.contains(&key.as_str()) => {
                out.unknown.push(format!("{block}.{key}"))
            }
            None => return Err(unknown_key(&format!("{block}.{key}"))),
        }
    }
    Ok(())
}

fn unknown_key(key: &str) -> String {
    format!(
        "unknown key {key:?}: no etcd version reads it; check its spelling against etcd's \
         etcd.conf.yml.sample, or remove it"
    )
}

/// A duration value as its flag's text: an integer is nanoseconds (Go's JSON form
/// of `time.Duration`, what etcd reads), a string a Go duration (`10s`).
fn duration(name: &str, value: &Yaml) -> Result<Option<String>, String> {
    match value {
        Yaml::Integer(ns) if *ns >= 0 => Ok(Some(format!("{ns}ns"))),
        Yaml::Integer(_) => Err(format!("{name} must not be negative")),
        Yaml::Array(_) => Err(format!("{name} must be a duration (nanoseconds, or e.g. 10s)")),
        other => scalar(name, other),
    }
}

/// A value as its flag's text: `None` for null and for an empty string (the
/// default stays, as etcd leaves it), lists joined with commas (etcd's list
/// flags are comma-separated on the command line).
fn scalar(name: &str, value: &Yaml) -> Result<Option<String>, String> {
    let text = match value {
        Yaml::Null => return Ok(None),
        Yaml::String(s) if s.is_empty() => return Ok(None),
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match scalar(name, item)? {
                    Some(part) => parts.push(part),
                    None => return Err(format!("{name}: a list item is empty")),
                }
            }
            if parts.is_empty() {
                return Ok(None);
            }
            parts.join(",")
        }
        Yaml::Hash(_) | Yaml::Alias(_) | Yaml::BadValue => {
            return Err(format!("{name} must be a single value or a list"));
        }
    };
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        from_yaml("etcd", text).unwrap().args
    }

    #[test]
    fn keys_become_flags_and_blocks_their_tls_flags() {
        let file = "name: 'm1'\ndata-dir:\nsnapshot-count: 10000\nenable-pprof: true\n\
                    listen-client-urls: http://localhost:2379\nlog-outputs: [stderr]\n\
                    initial-cluster: m1=http://localhost:2380\n\
                    cipher-suites: [\n  A,\n  B\n]\n\
                    client-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: false\n\
                    \x20 trusted-ca-file:\n\
                    peer-transport-security:\n  key-file: /k.pem\n  auto-tls: true\n";
        assert_eq!(
            args(file),
            [
                "etcd",
                "--name=m1",
                "--snapshot-count=10000",
                "--enable-pprof=true",
                "--listen-client-urls=http://localhost:2379",
                "--log-outputs=stderr",
                "--initial-cluster=m1=http://localhost:2380",
                "--cipher-suites=A,B",
                "--cert-file=/c.pem",
                "--client-cert-auth=false",
                "--peer-key-file=/k.pem",
                "--peer-auto-tls=true",
            ]
        );
    }

    #[test]
    fn durations_are_nanoseconds_as_in_etcd_or_go_strings() {
        let file = "grpc-keepalive-interval: 7200000000000\nbackend-batch-interval: 10ms\n\
                    experimental-corrupt-check-time: 0\n";
        assert_eq!(
            args(file),
            [
                "etcd",
                "--grpc-keepalive-interval=7200000000000ns",
                "--backend-batch-interval=10ms",
                "--experimental-corrupt-check-time=0ns",
            ]
        );
        assert!(from_yaml("etcd", "grpc-keepalive-timeout: -1\n").is_err());
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(args(""), ["etcd"]);
        assert_eq!(args("# nothing\n"), ["etcd"]);
    }

    #[test]
    fn later_keys_are_reported_unknown_keys_and_bad_shapes_refused() {
        let loaded =
            from_yaml("etcd", "log-format: json\nclient-transport-security:\n  allowed-cn: x\n")
                .unwrap();
        assert_eq!(loaded.unknown, ["log-format", "client-transport-security.allowed-cn"]);
        let typo = from_yaml("etcd", "snapshot-cout: 5\n").unwrap_err();
        assert!(typo.contains("unknown key \"snapshot-cout\""), "{typo}");
        let in_block = from_yaml("etcd", "peer-transport-security:\n  cert-fil: x\n").unwrap_err();
        assert!(in_block.contains("peer-transport-security.cert-fil"), "{in_block}");
        assert!(from_yaml("etcd", "- a\n- b\n").unwrap_err().contains("mapping"));
        assert!(from_yaml("etcd", "name: {a: 1}\n").unwrap_err().contains("name must be"));
        assert!(from_yaml("etcd", "name: [unclosed\n").unwrap_err().contains("not valid YAML"));
    }

    #[test]
    fn the_file_is_found_as_etcd_finds_it() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            requested(&argv(&["etcd", "--config-file", "a.yml"]), None).as_deref(),
            Some("a.yml")
        );
        assert_eq!(
            requested(&argv(&["etcd", "-config-file=b.yml"]), None).as_deref(),
            Some("b.yml")
        );
        assert_eq!(requested(&argv(&["etcd"]), Some("c.yml".into())).as_deref(), Some("c.yml"));
        assert_eq!(
            requested(&argv(&["etcd", "--config-file=d.yml"]), Some("c.yml".into())).as_deref(),
            Some("d.yml")
        );
        assert_eq!(requested(&argv(&["etcd", "--name", "x"]), Some(String::new())), None);
    }
}
