//! The server's log: `--log-level`, `--logger` and `--log-outputs` (with the
//! deprecated `--log-output`), checked as etcd 3.4 checks them. Lines are JSON in
//! zap's field layout whatever the logger; outputs are `stderr`, `stdout` and files
//! (appended to, created if missing), several at once as with zap.

use std::fs::OpenOptions;
use std::sync::Arc;

use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

/// etcd's name for "wherever the logger writes by default" (stderr here).
const DEFAULT_OUTPUT: &str = "default";
/// zap's journald output; this server does not talk to journald itself.
const JOURNAL_OUTPUT: &str = "systemd/journal";

/// The logging flags as given.
pub struct LogFlags<'a> {
    pub level: &'a str,
    pub logger: &'a str,
    /// `--log-outputs`, comma-separated.
    pub outputs: &'a str,
    /// `--log-output` (deprecated, single output).
    pub deprecated_output: &'a str,
}

/// Where log lines go: each entry is `stderr`, `stdout` or a file path.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub level: tracing::Level,
    pub outputs: Vec<String>,
    /// A warning to log once logging runs (the capnslog format is not offered).
    pub warning: Option<String>,
}

/// Checks the flags as etcd does, without touching any file.
pub fn plan(flags: &LogFlags<'_>) -> Result<Plan, String> {
    let level = match flags.level {
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warn" => tracing::Level::WARN,
        "error" | "dpanic" | "panic" | "fatal" => tracing::Level::ERROR,
        other => {
            return Err(format!(
                "invalid --log-level {other:?}: use debug, info, warn, error, panic or fatal"
            ))
        }
    };
    let mut outputs = etcd_daemon::config::comma_list(flags.outputs);
    if outputs.is_empty() {
        outputs.push(DEFAULT_OUTPUT.into());
    }
    let deprecated = flags.deprecated_output.trim();
    if !deprecated.is_empty() && deprecated != DEFAULT_OUTPUT {
        if outputs != [DEFAULT_OUTPUT] && outputs != [deprecated] {
            return Err(format!(
                "'--log-output={deprecated:?}' and '--log-outputs={:?}' are incompatible; only \
                 set --log-outputs",
                outputs.join(",")
            ));
        }
        outputs = vec![deprecated.to_string()];
    }
    let mut warning = None;
    match flags.logger {
        "zap" => {
            if outputs.len() > 1 && outputs.iter().any(|o| o == DEFAULT_OUTPUT) {
                return Err(format!(
                    "multi logoutput for {DEFAULT_OUTPUT:?} is not supported yet: list stderr \
                     instead of default in --log-outputs"
                ));
            }
        }
        "capnslog" => {
            if outputs.len() != 1 {
                return Err(format!(
                    "--logger=capnslog supports only 1 value in '--log-outputs', got {:?}",
                    outputs.join(",")
                ));
            }
            if ![DEFAULT_OUTPUT, "stderr", "stdout"].contains(&outputs[0].as_str()) {
                return Err(format!(
                    "unknown log-output {:?} (only supports \"default\", \"stderr\", \"stdout\") \
                     with --logger=capnslog; use --logger=zap to log to a file",
                    outputs[0]
                ));
            }
            warning = Some(
                "--logger=capnslog: capnslog's text format is not available (it is gone from \
                 etcd 3.5); logging zap's JSON lines to the same output"
                    .to_string(),
            );
        }
        other => {
            return Err(format!("unknown logger option {other:?}: use --logger=zap (or capnslog)"))
        }
    }
    for output in &mut outputs {
        if output == DEFAULT_OUTPUT {
            *output = "stderr".into();
        } else if output == JOURNAL_OUTPUT {
            return Err(format!(
                "--log-outputs={JOURNAL_OUTPUT}: writing to journald directly is not supported; \
                 use stderr (systemd's journal captures it)"
            ));
        }
    }
    Ok(Plan { level, outputs, warning })
}

/// Opens the outputs and installs the global subscriber.
pub fn init(plan: &Plan) -> Result<(), String> {
    let mut writer: Option<BoxMakeWriter> = None;
    for output in &plan.outputs {
        let next = match output.as_str() {
            "stderr" => BoxMakeWriter::new(std::io::stderr),
            "stdout" => BoxMakeWriter::new(std::io::stdout),
            path => {
                let file =
                    OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
                        format!("cannot open the log output {path:?} (--log-outputs): {e}")
                    })?;
                BoxMakeWriter::new(Arc::new(file))
            }
        };
        writer = Some(match writer {
            None => next,
            Some(previous) => BoxMakeWriter::new(previous.and(next)),
        });
    }
    let writer = writer.expect("invariant: plan() yields at least one output");
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_max_level(plan.level)
        .with_writer(writer)
        .init();
    if let Some(warning) = &plan.warning {
        tracing::warn!("{warning}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(logger: &'a str, outputs: &'a str, deprecated: &'a str) -> LogFlags<'a> {
        LogFlags { level: "info", logger, outputs, deprecated_output: deprecated }
    }

    #[test]
    fn outputs_are_checked_as_etcd_checks_them() {
        let ok = |f: LogFlags<'_>| plan(&f).expect("valid").outputs;
        assert_eq!(ok(flags("zap", "default", "default")), ["stderr"]);
        assert_eq!(ok(flags("zap", "stdout,/tmp/x.log", "default")), ["stdout", "/tmp/x.log"]);
        assert_eq!(ok(flags("zap", "default", "stdout")), ["stdout"]);
        assert_eq!(ok(flags("capnslog", "stderr", "default")), ["stderr"]);
        assert!(plan(&flags("capnslog", "stderr", "default")).unwrap().warning.is_some());

        let err = |f: LogFlags<'_>| plan(&f).expect_err("invalid");
        assert!(err(flags("zap", "default,stdout", "default")).contains("multi logoutput"));
        assert!(err(flags("capnslog", "stderr,stdout", "default")).contains("only 1 value"));
        assert!(err(flags("capnslog", "/tmp/x.log", "default")).contains("unknown log-output"));
        assert!(err(flags("logrus", "default", "default")).contains("unknown logger option"));
        assert!(err(flags("zap", "stdout", "stderr")).contains("are incompatible"));
        assert!(err(flags("zap", "systemd/journal", "default")).contains("journald"));
        let bad_level = LogFlags { level: "loud", ..flags("zap", "default", "default") };
        assert!(plan(&bad_level).unwrap_err().contains("--log-level"));
    }
}
