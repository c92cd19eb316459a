//! Which of etcd's flags this server acts on, which it accepts with a warning
//! (harmless to ignore) and which it refuses (ignoring them would start a
//! different member than asked for), for the command line and the `ETCD_*`
//! variables alike. `flags.rs` declares the flags it acts on.

/// etcd flags that take a value and are accepted, not acted on, with what that
/// means for the operator (logged as a warning).
const IGNORED_VALUE_FLAGS: &[(&str, &str)] =
    &[("discovery-fallback", "it only matters with --discovery, which this server refuses")];

/// Boolean etcd flags that are accepted, not acted on, with what that means.
const IGNORED_BOOL_FLAGS: &[(&str, &str)] =
    &[("enable-v2", "the v2 API is not served (v3 only, as etcd 3.6)")];

/// Why an accepted etcd flag has no effect here, for its warning.
pub fn ignored_because(name: &str) -> &'static str {
    IGNORED_VALUE_FLAGS
        .iter()
        .chain(IGNORED_BOOL_FLAGS)
        .find(|(n, _)| *n == name)
        .map_or("it is accepted for compatibility only", |(_, why)| why)
}

fn is_ignored(list: &[(&str, &str)], name: &str) -> bool {
    list.iter().any(|(n, _)| *n == name)
}

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
        if is_ignored(IGNORED_VALUE_FLAGS, &name) || is_ignored(IGNORED_BOOL_FLAGS, &name) {
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
        if is_ignored(IGNORED_VALUE_FLAGS, &name) {
            if inline_value.is_none() {
                iter.next();
            }
            ignored.push(name);
            continue;
        }
        if is_ignored(IGNORED_BOOL_FLAGS, &name) {
            ignored.push(name);
            continue;
        }
        out.push(arg);
    }
    Ok((out, ignored))
}
