//! Which of etcd's flags this server acts on, which it accepts with a warning
//! (harmless to ignore) and which it refuses (ignoring them would start a
//! different member than asked for), for the command line and the `ETCD_*`
//! variables alike. `flags.rs` declares the flags it acts on.

/// etcd flags that take a value and are accepted but not acted on yet.
const IGNORED_VALUE_FLAGS: &[&str] = &[
    "metrics",
    "grpc-keepalive-min-time",
    "discovery-fallback",
    "experimental-compaction-batch-limit",
];

/// Boolean etcd flags that are accepted but not acted on yet.
const IGNORED_BOOL_FLAGS: &[&str] =
    &["enable-v2", "enable-pprof", "strict-reconfig-check", "initial-election-tick-advance"];

/// etcd flags whose absence of support must stop the server when they ask for
/// something (ignoring them would start a different member than the operator
/// asked for), with why and what to do instead.
const REFUSED_FLAGS: &[(&str, &str)] = &[
    ("discovery", DISCOVERY_REFUSED),
    ("discovery-srv", DISCOVERY_REFUSED),
    ("discovery-srv-name", DISCOVERY_REFUSED),
    ("discovery-proxy", DISCOVERY_REFUSED),
    (
        "proxy",
        "the v2 proxy mode is not supported (etcd 3.4's --proxy=on|readonly); run `etcd \
         grpc-proxy` of real etcd, or remove the flag (--proxy=off is accepted)",
    ),
];

const DISCOVERY_REFUSED: &str = "bootstrapping through a discovery service is not supported: \
     starting without the cluster it names would bootstrap a wrong one-member cluster; list the \
     members in --initial-cluster instead";

/// Whether `value` of refused flag `name` asks for the unsupported thing (an
/// empty discovery URL and `--proxy=off` do not).
fn asks_for(name: &str, value: Option<&str>) -> bool {
    match (name, value) {
        ("proxy", v) => v.is_some_and(|v| v != "off"),
        (_, v) => v.is_some_and(|v| !v.is_empty()),
    }
}

/// The `ETCD_*` variables clap does not read (etcd flags we do not declare):
/// each goes through the same refusals and warnings as its flag. Returns the
/// ignored flags and the variables that name no etcd flag (etcd warns about
/// those too). Variables of flags given on the command line are shadowed.
pub fn check_env(
    vars: impl Iterator<Item = (String, String)>,
    declared: &[String],
    command_line: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut ignored = Vec::new();
    let mut unrecognized = Vec::new();
    for (key, value) in vars {
        let Some(rest) = key.strip_prefix("ETCD_") else { continue };
        if key.starts_with("ETCD_RS_TEST_") {
            continue; // this server's test switches (daemon::faults, daemon::config)
        }
        let name = rest.to_ascii_lowercase().replace('_', "-");
        if declared.contains(&name) || command_line.contains(&name) {
            continue;
        }
        if let Some((_, why)) = REFUSED_FLAGS.iter().find(|(n, _)| *n == name) {
            if asks_for(&name, Some(&value)) {
                return Err(format!("{key}={value} (--{name}): {why}"));
            }
            continue;
        }
        if IGNORED_VALUE_FLAGS.contains(&name.as_str())
            || IGNORED_BOOL_FLAGS.contains(&name.as_str())
        {
            ignored.push(name);
            continue;
        }
        unrecognized.push(key);
    }
    Ok((ignored, unrecognized))
}

/// Rewrites Go-style arguments into what clap parses: `-flag` becomes `--flag`,
/// ignored etcd flags are dropped (returned for a warning), refused ones error.
pub fn normalise(args: Vec<String>) -> Result<(Vec<String>, Vec<String>), String> {
    let mut out = Vec::with_capacity(args.len());
    let mut ignored = Vec::new();
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    while let Some(arg) = iter.next() {
        let arg = match arg.strip_prefix('-') {
            Some(rest) if !rest.starts_with('-') && rest.len() > 1 => format!("--{rest}"),
            _ => arg,
        };
        let Some(body) = arg.strip_prefix("--") else {
            out.push(arg);
            continue;
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (body.to_string(), None),
        };
        if let Some((_, why)) = REFUSED_FLAGS.iter().find(|(n, _)| *n == name) {
            let value = match &inline_value {
                Some(v) => Some(v.clone()),
                None => iter.next(),
            };
            if asks_for(&name, value.as_deref()) {
                return Err(format!("--{name}: {why}"));
            }
            continue;
        }
        if IGNORED_VALUE_FLAGS.contains(&name.as_str()) {
            if inline_value.is_none() {
                iter.next();
            }
            ignored.push(name);
            continue;
        }
        if IGNORED_BOOL_FLAGS.contains(&name.as_str()) {
            ignored.push(name);
            continue;
        }
        out.push(arg);
    }
    Ok((out, ignored))
}
