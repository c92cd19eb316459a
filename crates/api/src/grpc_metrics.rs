//! Counting the client port's gRPC calls into go-grpc-prometheus's counters, as
//! etcd exports them (`grpc_server_started_total`, `grpc_server_handled_total`
//! by status code, `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`).
//! The front layer ([`crate::front`]) starts a [`Call`] for each request to a
//! known method; the messages of both bodies are counted from their gRPC framing
//! (5-byte header: flag, length) and the status read from the trailers; a
//! response body dropped before its trailers is a call the client cancelled
//! (`Canceled`, as etcd records a watch its client closed).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{Request, Response};
use etcd_daemon::{EtcdServer, MethodCounters, GRPC_CODES};
use http_body::Frame;
use tonic::body::Body;

/// One gRPC call of one of etcd's methods, being counted.
pub(crate) struct Call {
    counters: Arc<MethodCounters>,
    /// `--metrics=extensive`: when the call started.
    started: Option<std::time::Instant>,
    recorded: bool,
}

impl Call {
    /// Starts counting `request` if it is a gRPC call of a known method; its
    /// body is then counted as it is read.
    pub(crate) fn start(server: &EtcdServer, request: &mut Request<Body>) -> Option<Call> {
        let grpc = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            return None;
        }
        let counters = server.grpc_metrics().method(request.uri().path())?.clone();
        counters.started.inc();
        let body = std::mem::take(request.body_mut());
        let received = Some(counters.msg_received.clone());
        *request.body_mut() = Body::new(Counted::new(body, received, None));
        let started = counters.handling_seconds.is_some().then(std::time::Instant::now);
        Some(Call { counters, started, recorded: false })
    }

    /// The response, its messages and its status counted for this call. A
    /// "trailers-only" answer (an error before any message) has its status in
    /// the headers.
    pub(crate) fn respond(mut self, response: Response<Body>) -> Response<Counted> {
        if let Some(code) = response.headers().get("grpc-status") {
            self.record(code.as_bytes());
            return response.map(Counted::passing);
        }
        let sent = Some(self.counters.msg_sent.clone());
        response.map(|body| Counted::new(body, sent, Some(self)))
    }

    /// Records the call's completion once, by gRPC status code.
    fn record(&mut self, status: &[u8]) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let unknown = GRPC_CODES.iter().position(|c| *c == "Unknown").expect("a known code");
        let handled = &self.counters.handled;
        let code = std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n < handled.len())
            .unwrap_or(unknown);
        handled[code].inc();
        if let (Some(histogram), Some(started)) = (&self.counters.handling_seconds, self.started) {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(b"1"); // Canceled: the body went away before its trailers
    }
}

/// A body whose gRPC messages are counted as they pass (when `messages` is
/// set; otherwise it only passes through).
pub(crate) struct Counted {
    inner: Body,
    messages: Option<prometheus::IntCounter>,
    /// Bytes of the current message's 5-byte header seen so far.
    header: [u8; 5],
    header_len: usize,
    /// Bytes left of the current message's payload.
    payload_left: u64,
    call: Option<Call>,
}

impl Counted {
    fn new(inner: Body, messages: Option<prometheus::IntCounter>, call: Option<Call>) -> Counted {
        Counted { inner, messages, header: [0; 5], header_len: 0, payload_left: 0, call }
    }

    /// A body that is not counted.
    pub(crate) fn passing(inner: Body) -> Counted {
        Counted::new(inner, None, None)
    }

    /// Walks the framing of `data`, counting each message whose header it completes.
    fn scan(&mut self, mut data: &[u8]) {
        let Some(messages) = &self.messages else { return };
        while !data.is_empty() {
            if self.payload_left > 0 {
                let skip = (self.payload_left.min(data.len() as u64)) as usize;
                self.payload_left -= skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            data = &data[take..];
            if self.header_len == 5 {
                let [_, a, b, c, d] = self.header;
                self.payload_left = u64::from(u32::from_be_bytes([a, b, c, d]));
                self.header_len = 0;
                messages.inc();
            }
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if self.messages.is_none() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.scan(&data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    let status = trailers.get("grpc-status").map(|v| v.as_bytes().to_vec());
                    if let Some(call) = self.call.as_mut() {
                        call.record(status.as_deref().unwrap_or(b"0"));
                    }
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: nothing said otherwise.
                if let Some(call) = self.call.as_mut() {
                    call.record(b"0");
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
        let counter = prometheus::IntCounter::new("t", "t").unwrap();
        let mut body = Counted::new(Body::empty(), Some(counter.clone()), None);
        // Two messages of 3 and 0 bytes, split at awkward places.
        let stream = [0u8, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0];
        for chunk in [&stream[..2], &stream[2..6], &stream[6..9], &stream[9..]] {
            body.scan(chunk);
        }
        assert_eq!(counter.get(), 2);
        assert!(body.header_len == 0 && body.payload_left == 0);
    }
}
