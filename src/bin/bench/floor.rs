//! The floor of one client's write, measured on this machine: a write is
//! durable after one fsync of the log, and its client hears of it after one
//! loopback round trip. `bench fsync` and `bench loopback` (ours, not etcd's
//! tool) time each part alone, with the same report as the workloads, so a
//! script can set a single client's put latency against their sum.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of each timed write: one WAL page, as etcd's own disk check writes.
const FSYNC_WRITE_BYTES: usize = 4096;
/// Bytes sent each way per round trip: about a small put's request.
const LOOPBACK_MESSAGE_BYTES: usize = 64;

/// Times `total` appends of one page to a file in `dir`, each followed by
/// fdatasync (what the WAL does per Ready). The file is removed afterwards.
pub fn fsync(dir: &Path, total: u64) -> Result<Vec<Duration>, String> {
    let path = dir.join("bench-fsync.test");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e} (is --dir writable?)", path.display()))?;
    let page = vec![0xa5u8; FSYNC_WRITE_BYTES];
    let mut latencies = Vec::with_capacity(total as usize);
    let mut timed = || -> std::io::Result<()> {
        for _ in 0..total {
            let begin = Instant::now();
            file.write_all(&page)?;
            file.sync_data()?;
            latencies.push(begin.elapsed());
        }
        Ok(())
    };
    let result = timed();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(latencies)
}

/// Where the two ends of `loopback` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cores {
    /// Both on the first core this process may use: no cross-core wake-up.
    Same,
    /// On the first two cores: each message wakes the other core.
    Apart,
    /// Wherever the scheduler puts them.
    Any,
}

/// The cores the two ends are pinned to (echo, caller), if any.
fn placement(cores: Cores) -> Result<Option<(usize, usize)>, String> {
    if cores == Cores::Any {
        return Ok(None);
    }
    let allowed = rustix::thread::sched_getaffinity(None)
        .map_err(|e| format!("cannot read this process's cores: {e}"))?;
    let mut usable = (0..rustix::thread::CpuSet::MAX_CPU).filter(|&cpu| allowed.is_set(cpu));
    let first = usable.next().ok_or("this process may run on no core")?;
    match cores {
        Cores::Same => Ok(Some((first, first))),
        _ => match usable.next() {
            Some(second) => Ok(Some((first, second))),
            None => Err("--cores=apart needs two cores; this process may use one".into()),
        },
    }
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

/// Times `total` round trips of a small message over one TCP connection on
/// 127.0.0.1 (Nagle off, as gRPC sets it) to an echoing thread, both ends
/// placed as `cores` says.
pub fn loopback(total: u64, cores: Cores) -> Result<Vec<Duration>, String> {
    let pinned = placement(cores)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        if let Some((cpu, _)) = pinned {
            pin(cpu)?;
        }
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        let mut message = [0u8; LOOPBACK_MESSAGE_BYTES];
        loop {
            match peer.read_exact(&mut message) {
                Ok(()) => peer.write_all(&message)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    // The caller's end runs on a thread of its own, so pinning it leaves the
    // calling thread as it was.
    let caller = std::thread::spawn(move || -> Result<Vec<Duration>, String> {
        if let Some((_, cpu)) = pinned {
            pin(cpu).map_err(|e| format!("cannot pin to core {cpu}: {e}"))?;
        }
        let mut stream = TcpStream::connect(address).map_err(|e| format!("cannot connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut message = [0x5au8; LOOPBACK_MESSAGE_BYTES];
        let mut latencies = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let begin = Instant::now();
            stream.write_all(&message).map_err(|e| format!("loopback write: {e}"))?;
            stream.read_exact(&mut message).map_err(|e| format!("loopback read: {e}"))?;
            latencies.push(begin.elapsed());
        }
        Ok(latencies)
    });
    let latencies = match caller.join().map_err(|_| "the caller thread panicked")? {
        Ok(latencies) => latencies,
        // An echo end that failed (to pin) closed the listener: its error is the
        // cause. One still waiting in accept is left behind.
        Err(e) if echo.is_finished() => match echo.join() {
            Ok(Err(cause)) => return Err(format!("the echo end failed: {cause}")),
            _ => return Err(e),
        },
        Err(e) => return Err(e),
    };
    echo.join().map_err(|_| "the echo thread panicked")?.map_err(|e| e.to_string())?;
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_of_the_floor_times_every_attempt() {
        let dir = std::env::temp_dir().join(format!("bench-floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(fsync(&dir, 3).unwrap().len(), 3);
        assert!(!dir.join("bench-fsync.test").exists(), "the test file is removed");
        std::fs::remove_dir_all(&dir).unwrap();
        for cores in [Cores::Same, Cores::Any] {
            assert_eq!(loopback(5, cores).unwrap().len(), 5);
        }
    }
}
