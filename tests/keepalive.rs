//! `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`: the server pings a
//! client connection that has been idle for the interval and closes it when the
//! ping is not answered within the timeout. Checked with raw HTTP/2 frames
//! against ours and real etcd 3.4 alike.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Flavor, Server};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

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
