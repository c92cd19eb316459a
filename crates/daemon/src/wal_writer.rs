//! The WAL writer: the thread that owns the WAL, so the raft loop hands it
//! each Ready's writes and goes on ticking, heartbeating and stepping messages
//! while the disk syncs (a leader whose fsync stalls for seconds keeps its
//! followers from electing another, etcd issues #13587 and #7970).
//!
//! Writes are taken in the order queued; whatever queued up while the last
//! fsync ran is appended together and covered by one fsync. Only then do the
//! messages that had to wait for the disk leave (a follower's acknowledgements,
//! a candidate's votes), and the raft loop is told which Ready is written
//! (`persisted`), so Raft counts those entries as this member's and may commit
//! and apply them. Snapshot records, log releases and the rare synchronous
//! write (a Ready that installs a leader's snapshot) go through the same queue
//! and are waited for, so the WAL sees every change in Raft's order. When the
//! writer has nothing to do, a write the raft loop waits for (the only voter's,
//! which writes in its own turn; see `etcd_raftnode::ReadySink::persists_async`)
//! is made on the raft thread directly, with no hand-off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_raftnode::{Entry, HardState, ReadyWrite};
use etcd_wal::{SnapshotMarker, Wal};
use tokio::sync::mpsc::UnboundedSender;

use crate::inputs::{fatal, PeerSender};
use crate::shared::Shared;

/// Jobs taken in one go at most (their appends share one fsync).
const JOBS_PER_BATCH_MAX: usize = 1024;

/// A test-only fault: when this environment variable names a file holding a
/// number, every WAL fsync first sleeps that many milliseconds (a stalling
/// disk). Process-level tests write the file; production never sets it.
pub const FSYNC_DELAY_FILE_ENV: &str = "ETCD_RS_TEST_FSYNC_DELAY_FILE";

enum Job {
    /// A Ready's writes, then its messages, then the report.
    Append { write: ReadyWrite, queued: Instant },
    /// A write the raft loop waits for.
    Persist {
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        must_sync: bool,
        done: SyncSender<()>,
    },
    /// A snapshot record, durable before `done`.
    SaveSnapshot { marker: SnapshotMarker, done: SyncSender<()> },
    /// Drop the segments a durable snapshot record covers.
    Release { index: u64 },
}

/// The WAL, shared by the writer thread and (while the writer is idle) the
/// raft loop, with what every fsync of it does besides.
struct Log {
    wal: Mutex<Wal>,
    shared: Arc<Shared>,
    delay_file: Option<std::path::PathBuf>,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|_| fatal("the WAL writer failed", "it panicked"))
    }

    fn append(wal: &mut Wal, entries: &[Entry], hard_state: Option<&HardState>) {
        if let Err(err) = etcd_server::wal_entries::append(wal, entries, hard_state) {
            fatal("failed to append to the WAL", err);
        }
    }

    fn save_snapshot(wal: &mut Wal, marker: &SnapshotMarker) {
        if let Err(err) = wal.save_snapshot(marker) {
            fatal("failed to record a snapshot in the WAL", err);
        }
    }

    /// Makes everything appended durable, timed for `etcd_disk_wal_fsync_duration_seconds`.
    fn sync(&self, wal: &mut Wal) {
        self.stall_if_told();
        let syncing = Instant::now();
        if let Err(err) = wal.sync() {
            fatal("failed to fsync the WAL", err);
        }
        self.shared.metrics.wal_fsync_seconds.observe(syncing.elapsed().as_secs_f64());
    }

    /// The test-only stalling disk (see [`FSYNC_DELAY_FILE_ENV`]).
    fn stall_if_told(&self) {
        let Some(file) = &self.delay_file else { return };
        let ms = std::fs::read_to_string(file).ok().and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(ms) = ms.filter(|ms| *ms > 0) {
            tracing::warn!(ms, "test fault switch: this WAL fsync stalls");
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

/// The raft loop's handle on the writer thread.
pub(crate) struct WalWriter {
    jobs: Sender<Job>,
    /// Jobs sent and not finished yet. Only the raft loop sends, so when it
    /// reads zero the writer is idle and stays so until the next send.
    pending: Arc<AtomicUsize>,
    log: Arc<Log>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WalWriter {
    /// Starts the writer thread on `wal`: messages that waited for a write go
    /// to `peers`, written Readies are reported on `persisted`.
    pub fn start(
        wal: Wal,
        peers: Arc<dyn PeerSender>,
        persisted: UnboundedSender<u64>,
        shared: Arc<Shared>,
    ) -> std::io::Result<WalWriter> {
        let (jobs, queue) = std::sync::mpsc::channel();
        let delay_file = std::env::var_os(FSYNC_DELAY_FILE_ENV).map(std::path::PathBuf::from);
        if let Some(file) = &delay_file {
            tracing::warn!(file = %file.display(), "test fault switch enabled: WAL fsyncs wait as long as this file says");
        }
        let log = Arc::new(Log { wal: Mutex::new(wal), shared, delay_file });
        let pending = Arc::new(AtomicUsize::new(0));
        let writer = Writer { log: log.clone(), queue, peers, persisted, pending: pending.clone() };
        let thread = std::thread::Builder::new().name("wal".into()).spawn(move || writer.run())?;
        Ok(WalWriter { jobs, pending, log, thread: Some(thread) })
    }

    /// Queues a Ready's writes (see `RaftIo::persist_async`).
    pub fn append(&self, write: ReadyWrite) {
        self.send(Job::Append { write, queued: Instant::now() });
    }

    /// Writes (durably when `must_sync`) after everything queued before;
    /// returns once done.
    pub fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>, must_sync: bool) {
        if self.idle() {
            let started = Instant::now();
            let mut wal = self.log.lock();
            Log::append(&mut wal, entries, hard_state);
            if must_sync {
                self.log.sync(&mut wal);
            }
            let stages = &self.log.shared.metrics.write_stages;
            stages.wal_persist.observe(started.elapsed().as_secs_f64());
            return;
        }
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let (entries, hard_state) = (entries.to_vec(), hard_state.cloned());
        self.send(Job::Persist { entries, hard_state, must_sync, done });
        Self::wait(wait);
    }

    /// Records a snapshot durably, after everything queued before.
    pub fn save_snapshot(&self, marker: SnapshotMarker) {
        if self.idle() {
            let mut wal = self.log.lock();
            Log::save_snapshot(&mut wal, &marker);
            self.log.sync(&mut wal);
            return;
        }
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.send(Job::SaveSnapshot { marker, done });
        Self::wait(wait);
    }

    /// Releases the segments a recorded snapshot covers (without waiting).
    pub fn release_to(&self, index: u64) {
        self.send(Job::Release { index });
    }

    /// Finishes every queued write, syncs and stops the thread.
    pub fn stop(mut self) {
        let (jobs, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, jobs));
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                fatal("the WAL writer failed", "it panicked");
            }
        }
    }

    fn idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    fn send(&self, job: Job) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.jobs.send(job).is_err() {
            fatal("the WAL writer stopped", "channel closed");
        }
    }

    fn wait(done: Receiver<()>) {
        if done.recv().is_err() {
            fatal("the WAL writer stopped", "it dropped a write");
        }
    }
}

struct Writer {
    log: Arc<Log>,
    queue: Receiver<Job>,
    peers: Arc<dyn PeerSender>,
    persisted: UnboundedSender<u64>,
    pending: Arc<AtomicUsize>,
}

impl Writer {
    fn run(&self) {
        while let Ok(first) = self.queue.recv() {
            let mut jobs = vec![first];
            while jobs.len() < JOBS_PER_BATCH_MAX {
                match self.queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let taken = jobs.len();
            self.write(jobs);
            self.pending.fetch_sub(taken, Ordering::AcqRel);
        }
        if let Err(err) = self.log.lock().sync() {
            fatal("failed to fsync the WAL at shutdown", err);
        }
    }

    /// Appends a batch of jobs in order with at most one fsync, then lets out
    /// what waited for it.
    fn write(&self, jobs: Vec<Job>) {
        let started = Instant::now();
        let log = &self.log;
        let stages = &log.shared.metrics.write_stages;
        let mut must_sync = false;
        let mut written = None;
        let mut after = Vec::new();
        let mut done = Vec::new();
        let mut releases = Vec::new();
        let mut wal = log.lock();
        for job in jobs {
            match job {
                Job::Append { write, queued } => {
                    stages.wal_queue.observe(queued.elapsed().as_secs_f64());
                    Log::append(&mut wal, &write.entries, write.hard_state.as_ref());
                    must_sync |= write.must_sync;
                    written = Some(write.number);
                    after.extend(write.after);
                }
                Job::Persist { entries, hard_state, must_sync: sync, done: reply } => {
                    Log::append(&mut wal, &entries, hard_state.as_ref());
                    must_sync |= sync;
                    done.push(reply);
                }
                Job::SaveSnapshot { marker, done: reply } => {
                    Log::save_snapshot(&mut wal, &marker);
                    must_sync = true;
                    done.push(reply);
                }
                Job::Release { index } => releases.push(index),
            }
        }
        if must_sync {
            log.sync(&mut wal);
        }
        stages.wal_persist.observe(started.elapsed().as_secs_f64());
        // Released only after the snapshot records before them are durable.
        for index in releases {
            if let Err(err) = wal.release_to(index) {
                tracing::warn!(error = %err, index, "could not release old WAL segments; will retry at the next snapshot");
            }
        }
        drop(wal);
        if !after.is_empty() {
            self.peers.send(after);
        }
        for reply in done {
            let _ = reply.send(());
        }
        if let Some(number) = written {
            // The raft loop is gone only when the member stops.
            let _ = self.persisted.send(number);
        }
    }
}
