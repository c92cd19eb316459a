//! `--grpc-keepalive-min-time`: the ping rate a client may keep, enforced as
//! gRPC's Go server enforces it for etcd, on every HTTP/2 connection of the
//! client port.
//!
//! Go's rule: a client PING arriving sooner than the minimum time after the
//! previous one is a strike (with no stream open, sooner than two hours: etcd
//! does not permit pings without streams); a PING right after the server sent
//! headers or data clears the strikes (clients measure bandwidth with pings
//! after data arrives); a third strike gets GOAWAY with ENHANCE_YOUR_CALM and
//! the debug data `too_many_pings`, and the connection closes.
//!
//! h2 answers pings itself and has no such policy, so this layer watches the
//! frame headers going both ways (payloads are skipped, never copied) and does
//! it: the open streams are those the client opened with HEADERS and neither
//! side has ended (END_STREAM from the server, RST_STREAM from either).
//! HTTP/1.1 connections (the JSON gateway) are left alone.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// gRPC's limit: the third strike closes the connection.
const MAX_PING_STRIKES: u8 = 2;
/// How often a client with no stream open may ping (gRPC's default ping timeout).
const IDLE_PING_MIN_TIME: Duration = Duration::from_secs(2 * 60 * 60);
/// gRPC's own minimum when etcd passes none (`--grpc-keepalive-min-time=0`).
pub const DEFAULT_MIN_TIME: Duration = Duration::from_secs(5 * 60);

/// One HTTP/2 frame header as it went by.
#[derive(Clone, Copy, Debug, PartialEq)]
struct FrameHeader {
    kind: u8,
    flags: u8,
    stream_id: u32,
}

/// Splits a byte stream into frames, keeping only their headers.
#[derive(Default)]
struct FrameScanner {
    header: [u8; FRAME_HEADER_BYTES],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
}

impl FrameScanner {
    /// Whether the stream is between frames.
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.skip == 0
    }

    /// Feeds `bytes`, calling `seen` with every frame header completed in them.
    fn scan(&mut self, mut bytes: &[u8], mut seen: impl FnMut(FrameHeader)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_BYTES - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER_BYTES {
                let h = &self.header;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.have = 0;
                seen(FrameHeader {
                    kind: h[3],
                    flags: h[4],
                    stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                });
            }
        }
    }
}

/// What the client may still send before the frames start.
enum Preface {
    /// This many bytes of the HTTP/2 preface seen so far.
    Reading(usize),
    /// Frames follow.
    Done,
    /// Not HTTP/2: nothing to enforce.
    NotHttp2,
}

/// gRPC's count of a client's early pings.
struct Strikes {
    min_time: Duration,
    last_ping: Option<Instant>,
    count: u8,
    /// The server sent headers or data since the last client ping.
    reset: bool,
}

impl Strikes {
    /// A client ping at `now` (`idle`: no stream open); true on the strike too many.
    fn ping(&mut self, now: Instant, idle: bool) -> bool {
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.reset) {
            self.count = 0;
            return false;
        }
        let min_time = if idle { IDLE_PING_MIN_TIME } else { self.min_time };
        if last.is_some_and(|last| now < last + min_time) {
            self.count = self.count.saturating_add(1);
        }
        self.count > MAX_PING_STRIKES
    }
}

/// The policy's state for one connection, apart from the I/O (unit-tested alone).
struct Policy {
    preface: Preface,
    reads: FrameScanner,
    writes: FrameScanner,
    open: HashSet<u32>,
    last_client_stream: u32,
    strikes: Strikes,
}

impl Policy {
    fn new(min_time: Duration) -> Self {
        Policy {
            preface: Preface::Reading(0),
            reads: FrameScanner::default(),
            writes: FrameScanner::default(),
            open: HashSet::new(),
            last_client_stream: 0,
            strikes: Strikes {
                min_time: if min_time.is_zero() { DEFAULT_MIN_TIME } else { min_time },
                last_ping: None,
                count: 0,
                reset: false,
            },
        }
    }

    /// Takes bytes the client sent; true when they break the policy.
    fn client_sent(&mut self, mut bytes: &[u8], now: Instant) -> bool {
        if let Preface::Reading(seen) = self.preface {
            let n = (PREFACE.len() - seen).min(bytes.len());
            if bytes[..n] != PREFACE[seen..seen + n] {
                self.preface = Preface::NotHttp2;
                return false;
            }
            self.preface =
                if seen + n == PREFACE.len() { Preface::Done } else { Preface::Reading(seen + n) };
            bytes = &bytes[n..];
        }
        if !matches!(self.preface, Preface::Done) {
            return false;
        }
        let Policy { reads, open, last_client_stream, strikes, .. } = self;
        let mut broken = false;
        reads.scan(bytes, |frame| match frame.kind {
            HEADERS if frame.stream_id > *last_client_stream => {
                *last_client_stream = frame.stream_id;
                open.insert(frame.stream_id);
            }
            RST_STREAM => {
                open.remove(&frame.stream_id);
            }
            PING if frame.flags & ACK == 0 => broken |= strikes.ping(now, open.is_empty()),
            _ => {}
        });
        broken
    }

    /// Takes bytes the server wrote.
    fn server_sent(&mut self, bytes: &[u8]) {
        if matches!(self.preface, Preface::NotHttp2) {
            return;
        }
        let (open, reset) = (&mut self.open, &mut self.strikes.reset);
        self.writes.scan(bytes, |frame| match frame.kind {
            DATA | HEADERS => {
                *reset = true;
                if frame.flags & END_STREAM != 0 {
                    open.remove(&frame.stream_id);
                }
            }
            RST_STREAM => {
                open.remove(&frame.stream_id);
            }
            _ => {}
        });
    }

    /// The GOAWAY gRPC sends on the strike too many.
    fn goaway(&self) -> Vec<u8> {
        let debug = b"too_many_pings";
        let length = 8 + debug.len();
        let mut frame = vec![(length >> 16) as u8, (length >> 8) as u8, length as u8, GOAWAY, 0];
        frame.extend_from_slice(&0u32.to_be_bytes());
        frame.extend_from_slice(&self.last_client_stream.to_be_bytes());
        frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        frame.extend_from_slice(debug);
        frame
    }
}

/// What happens to the connection.
enum State {
    Serving,
    /// The policy was broken: this GOAWAY goes out (from `written`) once the
    /// server's writes are between frames, then the connection ends.
    SendingGoaway {
        frame: Vec<u8>,
        written: usize,
    },
    Closed,
}

/// A client connection with gRPC's ping policy enforced (see the module docs).
pub struct PingPolicy<IO> {
    inner: IO,
    policy: Policy,
    state: State,
    /// A read waiting for the server's writes to reach a frame boundary.
    read_waker: Option<Waker>,
}

impl<IO> PingPolicy<IO> {
    pub fn new(inner: IO, min_time: Duration) -> Self {
        PingPolicy { inner, policy: Policy::new(min_time), state: State::Serving, read_waker: None }
    }
}

fn too_many_pings() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "too many pings from the client (--grpc-keepalive-min-time)",
    )
}

impl<IO: AsyncWrite + Unpin> PingPolicy<IO> {
    /// Writes the GOAWAY once the server is between frames; ready when it is out.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.policy.writes.at_boundary() {
            self.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if let State::SendingGoaway { frame, written } = &mut self.state {
            while *written < frame.len() {
                let n = std::task::ready!(
                    Pin::new(&mut self.inner).poll_write(cx, &frame[*written..])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            tracing::warn!(
                "a client pinged too often (--grpc-keepalive-min-time); sent GOAWAY \
                 too_many_pings and closed the connection"
            );
            self.state = State::Closed;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for PingPolicy<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.state {
            State::Serving => {}
            State::SendingGoaway { .. } => {
                std::task::ready!(this.poll_goaway(cx))?;
                return Poll::Ready(Err(too_many_pings()));
            }
            State::Closed => return Poll::Ready(Err(too_many_pings())),
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.policy.client_sent(&buf.filled()[before..], Instant::now()) {
            // h2 still sees (and answers) this read; the next one ends it.
            this.state = State::SendingGoaway { frame: this.policy.goaway(), written: 0 };
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> PingPolicy<IO> {
    /// Notes what the server wrote and wakes a GOAWAY waiting for a boundary.
    fn wrote(&mut self, bytes: &[u8]) {
        self.policy.server_sent(bytes);
        if self.policy.writes.at_boundary() {
            if let Some(waker) = self.read_waker.take() {
                waker.wake();
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PingPolicy<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if matches!(this.state, State::Closed) {
            return Poll::Ready(Err(too_many_pings()));
        }
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.wrote(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if matches!(this.state, State::Closed) {
            return Poll::Ready(Err(too_many_pings()));
        }
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for buf in bufs {
            let take = left.min(buf.len());
            this.wrote(&buf[..take]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

forward_connect_info!(PingPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut out = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn ping() -> Vec<u8> {
        frame(PING, 0, 0, &[0; 8])
    }

    /// A policy past the preface, with stream 1 open.
    fn with_stream(min_time: Duration) -> (Policy, Instant) {
        let mut policy = Policy::new(min_time);
        let now = Instant::now();
        assert!(!policy.client_sent(PREFACE, now));
        assert!(!policy.client_sent(&frame(HEADERS, 0x4, 1, b"xyz"), now));
        (policy, now)
    }

    #[test]
    fn the_third_early_ping_breaks_the_policy_and_the_goaway_names_the_last_stream() {
        let (mut policy, now) = with_stream(Duration::from_secs(5));
        let at = |ms| now + Duration::from_millis(ms);
        assert!(!policy.client_sent(&ping(), at(0)), "the first ping is free");
        assert!(!policy.client_sent(&ping(), at(100)));
        assert!(!policy.client_sent(&ping(), at(200)));
        assert!(policy.client_sent(&ping(), at(300)), "the third strike");
        let mut payload = vec![0, 0, 0, 1, 0, 0, 0, 0xb];
        payload.extend_from_slice(b"too_many_pings");
        assert_eq!(policy.goaway(), frame(GOAWAY, 0, 0, &payload));
    }

    #[test]
    fn pings_at_the_minimum_time_and_acks_are_fine() {
        let (mut policy, now) = with_stream(Duration::from_millis(50));
        for i in 0..20 {
            let at = now + Duration::from_millis(50 * i);
            assert!(!policy.client_sent(&ping(), at), "ping {i}");
            assert!(!policy.client_sent(&frame(PING, ACK, 0, &[0; 8]), at));
        }
    }

    #[test]
    fn without_a_stream_only_one_ping_in_two_hours_is_fine() {
        let (mut policy, now) = with_stream(Duration::from_millis(50));
        policy.server_sent(&frame(HEADERS, END_STREAM | 0x4, 1, b"abc"));
        assert!(!policy.client_sent(&ping(), now), "first ping, and the server had written");
        let strikes =
            (1..=3).filter(|i| policy.client_sent(&ping(), now + Duration::from_secs(60 * i)));
        assert_eq!(strikes.count(), 1, "the third ping a minute apart breaks it");
    }

    #[test]
    fn a_client_reset_closes_its_stream() {
        let (mut policy, now) = with_stream(Duration::from_millis(50));
        assert!(!policy.client_sent(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]), now));
        assert!(policy.open.is_empty());
    }

    #[test]
    fn server_data_between_pings_clears_the_strikes() {
        let (mut policy, now) = with_stream(Duration::from_secs(5));
        for i in 0..50 {
            policy.server_sent(&frame(DATA, 0, 1, &[1, 2, 3]));
            assert!(!policy.client_sent(&ping(), now + Duration::from_millis(i)), "ping {i}");
        }
    }

    #[test]
    fn frames_split_anywhere_are_seen_whole() {
        let (mut policy, now) = with_stream(Duration::from_secs(5));
        let mut bytes = Vec::new();
        for _ in 0..4 {
            bytes.extend(frame(DATA, 0, 1, &[7; 300]));
            bytes.extend(ping());
        }
        let broken: Vec<bool> = bytes.chunks(7).map(|c| policy.client_sent(c, now)).collect();
        assert_eq!(broken.iter().filter(|b| **b).count(), 1);
        assert!(policy.reads.at_boundary());
    }

    #[test]
    fn a_flood_of_pings_in_one_read_breaks_the_policy_once_counted() {
        let (mut policy, now) = with_stream(Duration::from_secs(5));
        let flood: Vec<u8> = (0..1000).flat_map(|_| ping()).collect();
        assert!(policy.client_sent(&flood, now));
        assert_eq!(policy.strikes.count, u8::MAX, "counted without overflowing");
    }

    #[test]
    fn http1_connections_are_left_alone() {
        let mut policy = Policy::new(Duration::from_secs(5));
        let now = Instant::now();
        assert!(!policy.client_sent(b"GET /health HTTP/1.1\r\n\r\n", now));
        for _ in 0..10 {
            assert!(!policy.client_sent(&ping(), now));
        }
        policy.server_sent(b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(policy.writes.at_boundary());
    }
}
