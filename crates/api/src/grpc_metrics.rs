//! Counting the client port's gRPC calls into go-grpc-prometheus's counters, as
//! etcd exports them (`grpc_server_started_total`, `grpc_server_handled_total`
//! by status code, `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`).
//! A middleware in front of the gRPC services: it sees the path, counts the
//! messages of both bodies from their gRPC framing (5-byte header: flag, length)
//! and reads the status from the trailers; a response body dropped before its
//! trailers is a call the client cancelled (`Canceled`, as etcd records a watch
//! its client closed).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use etcd_daemon::{EtcdServer, GRPC_CODES};
use http_body::Frame;
use prometheus::IntCounter;

/// Counts one gRPC call of a known method; other requests pass untouched.
pub(crate) async fn count(
    State(server): State<Arc<EtcdServer>>,
    request: Request,
    next: Next,
) -> Response {
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let counters = match grpc {
        true => server.grpc_metrics().method(request.uri().path()),
        false => None,
    };
    let Some(counters) = counters else {
        return next.run(request).await;
    };
    counters.started.inc();
    let handled = Handled {
        counters: counters.handled.clone(),
        handling: counters.handling_seconds.clone().map(|h| (h, std::time::Instant::now())),
        recorded: false,
    };
    let (received, sent) = (counters.msg_received.clone(), counters.msg_sent.clone());
    let request = request.map(|body| Body::new(Counted::new(body, received, None)));
    let response = next.run(request).await;
    // A "trailers-only" answer (an error before any message) has its status here.
    if let Some(code) = response.headers().get("grpc-status") {
        let mut handled = handled;
        handled.record(code.as_bytes());
        return response;
    }
    response.map(|body| Body::new(Counted::new(body, sent, Some(handled))))
}

/// Records the call's completion once, by gRPC status code.
struct Handled {
    /// By code, as [`GRPC_CODES`] orders them.
    counters: Vec<IntCounter>,
    /// `--metrics=extensive`: the latency histogram and the call's start.
    handling: Option<(prometheus::Histogram, std::time::Instant)>,
    recorded: bool,
}

impl Handled {
    fn record(&mut self, status: &[u8]) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let unknown = GRPC_CODES.iter().position(|c| *c == "Unknown").expect("a known code");
        let code = std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n < self.counters.len())
            .unwrap_or(unknown);
        self.counters[code].inc();
        if let Some((histogram, started)) = &self.handling {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Handled {
    fn drop(&mut self) {
        self.record(b"1"); // Canceled: the body went away before its trailers
    }
}

/// A body whose gRPC messages are counted as they pass.
struct Counted {
    inner: Body,
    messages: IntCounter,
    /// Bytes left of the current message's 5-byte header, then of its payload.
    header: Vec<u8>,
    payload_left: u64,
    handled: Option<Handled>,
}

impl Counted {
    fn new(inner: Body, messages: IntCounter, handled: Option<Handled>) -> Counted {
        Counted { inner, messages, header: Vec::with_capacity(5), payload_left: 0, handled }
    }

    /// Walks the framing of `data`, counting each message whose header it completes.
    fn scan(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let skip = (self.payload_left.min(data.len() as u64)) as usize;
                self.payload_left -= skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.payload_left = u64::from(len);
                self.header.clear();
                self.messages.inc();
            }
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.scan(&data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    let status = trailers.get("grpc-status").map(|v| v.as_bytes().to_vec());
                    if let Some(handled) = self.handled.as_mut() {
                        handled.record(status.as_deref().unwrap_or(b"0"));
                    }
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: nothing said otherwise.
                if let Some(handled) = self.handled.as_mut() {
                    handled.record(b"0");
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_across_frame_boundaries() {
        let counter = IntCounter::new("t", "t").unwrap();
        let mut body = Counted::new(Body::empty(), counter.clone(), None);
        // Two messages of 3 and 0 bytes, split at awkward places.
        let stream = [0u8, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0];
        for chunk in [&stream[..2], &stream[2..6], &stream[6..9], &stream[9..]] {
            body.scan(chunk);
        }
        assert_eq!(counter.get(), 2);
        assert!(body.header.is_empty() && body.payload_left == 0);
    }
}
