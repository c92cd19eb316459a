//! `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`: the server pings a
//! client connection that has been idle for the interval and closes it when the
//! ping is not answered within the timeout. `--grpc-keepalive-min-time`: a client
//! that pings more often is sent GOAWAY (ENHANCE_YOUR_CALM, `too_many_pings`)
//! and disconnected. Checked with raw HTTP/2 frames against ours and real etcd
//! 3.4 alike.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Flavor, Server};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const HEADERS: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// What an HTTP/2 client that never answers a ping sees: the frame types in
/// order, up to the connection's end (or `limit`).
fn frames_until_closed(endpoint: &str, limit: Duration) -> (Vec<(u8, u8)>, bool) {
    let mut stream = TcpStream::connect(endpoint).expect("connect");
    stream.write_all(PREFACE).expect("preface");
    stream.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).expect("settings");
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let deadline = Instant::now() + limit;
    let (mut frames, mut buf) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => return (frames, true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (frames, true), // reset by the server
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            frames.push((buf[3], buf[4]));
            if buf[3] == SETTINGS && buf[4] & ACK == 0 {
                // Acknowledge the server's settings, as any client does.
                stream.write_all(&[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0]).expect("settings ack");
            }
            buf.drain(..9 + len);
        }
    }
    (frames, false)
}

#[test]
fn an_idle_client_that_does_not_answer_pings_is_pinged_then_disconnected() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            eprintln!("real etcd is not installed: checking ours only");
            continue;
        }
        let server = Server::start_with(
            flavor,
            &["--grpc-keepalive-interval=1s", "--grpc-keepalive-timeout=1s"],
        );
        let (frames, closed) = frames_until_closed(&server.endpoint(), Duration::from_secs(20));
        let pings = frames.iter().filter(|(t, f)| *t == PING && f & ACK == 0).count();
        assert!(pings >= 1, "{flavor:?}: the server never pinged: {frames:?}");
        assert!(closed, "{flavor:?}: the unanswered connection stayed open: {frames:?}");
        let after_ping = frames.iter().skip_while(|(t, _)| *t != PING).any(|(t, _)| *t == GOAWAY);
        eprintln!("{flavor:?}: {frames:?} (GOAWAY after the ping: {after_ping})");

        // Without the flags (2 hours), an idle connection is left alone.
        let quiet = Server::start_with(flavor, &[]);
        let (frames, closed) = frames_until_closed(&quiet.endpoint(), Duration::from_secs(3));
        assert!(!closed, "{flavor:?}: closed without keepalive: {frames:?}");
        assert!(!frames.iter().any(|(t, _)| *t == PING), "{flavor:?}: {frames:?}");
    }
}

/// A header field as an HPACK literal without indexing (short strings only).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

/// How a connection that pings every `every` ends within `limit`: the GOAWAY's
/// error code and debug data if one came, and whether the server closed it.
/// With `open_stream`, a Watch call stays open on stream 1 meanwhile.
fn ping_every(
    endpoint: &str,
    open_stream: bool,
    every: Duration,
    limit: Duration,
) -> (Option<(u32, String)>, bool) {
    let mut stream = TcpStream::connect(endpoint).expect("connect");
    stream.write_all(PREFACE).expect("preface");
    stream.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).expect("settings");
    if open_stream {
        let mut block = Vec::new();
        literal(&mut block, ":method", "POST");
        literal(&mut block, ":scheme", "http");
        literal(&mut block, ":path", "/etcdserverpb.Watch/Watch");
        literal(&mut block, ":authority", endpoint);
        literal(&mut block, "content-type", "application/grpc");
        literal(&mut block, "te", "trailers");
        let n = block.len();
        let mut frame = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, HEADERS, END_HEADERS];
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&block);
        stream.write_all(&frame).expect("headers");
    }
    stream.set_read_timeout(Some(every)).expect("timeout");
    let deadline = Instant::now() + limit;
    let mut next_ping = Instant::now();
    let (mut goaway, mut buf) = (None, Vec::new());
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        if Instant::now() >= next_ping {
            let ping = [0, 0, 8, PING, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
            if stream.write_all(&ping).is_err() {
                return (goaway, true);
            }
            next_ping += every;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return (goaway, true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (goaway, true),
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let payload = &buf[9..9 + len];
            if buf[3] == SETTINGS && buf[4] & ACK == 0 {
                stream.write_all(&[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0]).expect("settings ack");
            }
            if buf[3] == GOAWAY && len >= 8 {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                goaway = Some((code, String::from_utf8_lossy(&payload[8..]).into_owned()));
            }
            buf.drain(..9 + len);
        }
    }
    (goaway, false)
}

#[test]
fn a_client_pinging_more_often_than_the_minimum_time_is_sent_away() {
    let too_many_pings = Some((ENHANCE_YOUR_CALM, "too_many_pings".to_string()));
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            eprintln!("real etcd is not installed: checking ours only");
            continue;
        }
        // The default minimum (5 s): pings every 50 ms on an open call.
        let strict = Server::start_with(flavor, &[]);
        let fast = Duration::from_millis(50);
        let (goaway, closed) = ping_every(&strict.endpoint(), true, fast, Duration::from_secs(5));
        assert_eq!(goaway, too_many_pings, "{flavor:?}: 5 s minimum, pings every 50 ms");
        assert!(closed, "{flavor:?}: the connection stayed open after GOAWAY");

        // A 10 ms minimum: pings every 100 ms are fine while a call is open...
        let lenient = Server::start_with(flavor, &["--grpc-keepalive-min-time=10ms"]);
        let every = Duration::from_millis(100);
        let (goaway, closed) = ping_every(&lenient.endpoint(), true, every, Duration::from_secs(2));
        assert_eq!((goaway, closed), (None, false), "{flavor:?}: 10 ms minimum, open call");
        // ...and not without one (etcd does not permit pings without streams).
        let (goaway, closed) =
            ping_every(&lenient.endpoint(), false, every, Duration::from_secs(3));
        assert_eq!(goaway, too_many_pings, "{flavor:?}: 10 ms minimum, no call open");
        assert!(closed, "{flavor:?}: the idle connection stayed open after GOAWAY");
    }
}
