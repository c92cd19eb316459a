//! `--enable-pprof`: etcd's `/debug/pprof/` on the client port, for the profile
//! operators take most: `/debug/pprof/profile?seconds=N`, a CPU profile in
//! pprof's protobuf format (what `go tool pprof` reads; sampled at Go's 100 Hz
//! by pprof-rs, which interrupts the threads with SIGPROF), and
//! `/debug/pprof/cmdline`. Go's runtime profiles (heap, goroutine, block,
//! mutex, trace) describe Go's runtime and have no counterpart here: they
//! answer 404, as Go answers an unknown profile, saying what exists.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, RawQuery};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prost::Message;

/// Go's sampling rate for CPU profiles.
const FREQUENCY_HZ: i32 = 100;
/// Go's default profile length.
const DEFAULT_SECONDS: u64 = 30;

/// The `/debug/pprof/` routes.
pub fn router() -> Router {
    Router::new()
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/profile", get(profile))
        .route("/debug/pprof/cmdline", get(cmdline))
        .route("/debug/pprof/{name}", get(unknown))
}

async fn index() -> impl IntoResponse {
    Html(
        "<html><head><title>/debug/pprof/</title></head><body>/debug/pprof/<br><br>\n\
         <a href=\"profile?seconds=30\">profile</a>: CPU profile (pprof protobuf; \
         <code>go tool pprof http://host:2379/debug/pprof/profile</code>)<br>\n\
         <a href=\"cmdline\">cmdline</a>: the command line<br>\n\
         <br>Go's runtime profiles (heap, goroutine, threadcreate, block, mutex, allocs, \
         trace) do not exist in this server.\n</body></html>\n",
    )
}

fn text(status: StatusCode, body: String) -> Response {
    let plain = "text/plain; charset=utf-8";
    (status, [(header::CONTENT_TYPE, plain), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], body)
        .into_response()
}

async fn unknown(Path(name): Path<String>) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "Unknown profile: {name} (this server offers /debug/pprof/profile, a CPU \
             profile, and /debug/pprof/cmdline)\n"
        ),
    )
}

/// The command line, arguments separated by NUL bytes (Go's format).
async fn cmdline() -> Response {
    text(StatusCode::OK, std::env::args().collect::<Vec<_>>().join("\0"))
}

async fn profile(query: RawQuery) -> Response {
    let seconds = crate::http::query_pairs(query.0.as_deref())
        .find(|(name, _)| *name == "seconds")
        .map(|(_, value)| value.parse::<u64>().ok().filter(|s| *s > 0));
    let seconds = match seconds {
        None => DEFAULT_SECONDS,
        Some(Some(seconds)) => seconds,
        Some(None) => {
            let body = "Could not enable CPU profiling: bad seconds (a positive integer)\n";
            return text(StatusCode::BAD_REQUEST, body.into());
        }
    };
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY_HZ)
        // Unwinding through these from a signal handler can deadlock (pprof-rs's advice).
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(guard) => guard,
        Err(pprof::Error::Running) => {
            let body = "Could not enable CPU profiling: cpu profiling already in use\n";
            return text(StatusCode::INTERNAL_SERVER_ERROR, body.into());
        }
        Err(e) => {
            let body = format!("Could not enable CPU profiling: {e}\n");
            return text(StatusCode::INTERNAL_SERVER_ERROR, body);
        }
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    // Symbolizing takes a while: off the async threads.
    let built = tokio::task::spawn_blocking(move || {
        let report = guard.report().build();
        drop(guard);
        report.map(|report| encode(&report))
    })
    .await;
    match built {
        Ok(Ok(bytes)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"profile\""),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("profile failed: {e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("profile failed: {e}\n")),
    }
}

/// pprof's `profile.proto` (perftools.profiles), the fields written here.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

/// Interned strings: pprof refers to every string by its index, "" first.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut strings = Strings::default();
        strings.id("");
        strings
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(id) = self.index.get(s) {
            return *id;
        }
        let id = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), id);
        id
    }
}

/// The frames of a sampled stack from the interrupted function on: the
/// sampler's own frames (the unwinder, pprof-rs's signal handler, the signal
/// trampoline) come first and are not the program's.
fn interrupted_frames(frames: &[Vec<pprof::Symbol>]) -> &[Vec<pprof::Symbol>] {
    let sampler = |frame: &Vec<pprof::Symbol>| {
        frame.iter().any(|symbol| {
            let name = symbol.name();
            name.starts_with("backtrace::")
                || name.contains("pprof::")
                || name.contains("perf_signal_handler")
                || name == "__restore_rt"
        })
    };
    let own = frames.iter().take_while(|frame| sampler(frame)).count();
    &frames[own..]
}

/// A sampled report as Go's CPU profile: sample types samples/count and
/// cpu/nanoseconds, one location per stack frame (inlined functions as its
/// lines, innermost first), the thread's name as a label.
fn encode(report: &pprof::Report) -> Vec<u8> {
    let mut strings = Strings::new();
    let period = 1_000_000_000 / i64::from(report.timing.frequency.max(1));
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut function_list = Vec::new();
    let mut locations: HashMap<Vec<(u64, i64)>, u64> = HashMap::new();
    let mut location_list = Vec::new();
    let mut samples = Vec::new();
    let thread_key = strings.id("thread");
    for (frames, count) in &report.data {
        let mut location_ids = Vec::with_capacity(frames.frames.len());
        for frame in interrupted_frames(&frames.frames) {
            let mut lines = Vec::with_capacity(frame.len());
            for symbol in frame {
                let (name, file) = (symbol.name(), symbol.filename().into_owned());
                let next_id = function_list.len() as u64 + 1;
                let function_id =
                    *functions.entry((name.clone(), file.clone())).or_insert_with(|| {
                        function_list.push(proto::Function {
                            id: next_id,
                            name: strings.id(&name),
                            system_name: strings.id(&name),
                            filename: strings.id(&file),
                        });
                        next_id
                    });
                lines.push((function_id, i64::from(symbol.lineno())));
            }
            let next_id = location_list.len() as u64 + 1;
            let location_id = *locations.entry(lines.clone()).or_insert_with(|| {
                location_list.push(proto::Location {
                    id: next_id,
                    line: lines
                        .iter()
                        .map(|&(function_id, line)| proto::Line { function_id, line })
                        .collect(),
                });
                next_id
            });
            location_ids.push(location_id);
        }
        let count = *count as i64;
        samples.push(proto::Sample {
            location_id: location_ids,
            value: vec![count, count * period],
            label: vec![proto::Label {
                key: thread_key,
                str: strings.id(&frames.thread_name_or_id()),
            }],
        });
    }
    let value_type = |strings: &mut Strings, kind: &str, unit: &str| proto::ValueType {
        r#type: strings.id(kind),
        unit: strings.id(unit),
    };
    let profile = proto::Profile {
        sample_type: vec![
            value_type(&mut strings, "samples", "count"),
            value_type(&mut strings, "cpu", "nanoseconds"),
        ],
        period_type: Some(value_type(&mut strings, "cpu", "nanoseconds")),
        period,
        sample: samples,
        location: location_list,
        function: function_list,
        time_nanos: report
            .timing
            .start_time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: report.timing.duration.as_nanos() as i64,
        string_table: strings.table,
    };
    profile.encode_to_vec()
}
