//! A member's disk and network as its core sees them (`MemberIo`): the real
//! WAL on the simulated filesystem, the outbox, snapshot copies and installs
//! on simulated files, and what the checkers observe.

use std::path::Path;

use etcd_proto::mvccpb::Event;
use etcd_raftnode::{ConfState, Entry, HardState, Message, ReadyWrite};
use etcd_server::member_core::MemberIo;
use etcd_server::wal_entries::{self, snapshot_marker};
use etcd_storage::Backend;
use etcd_wal::Wal;

use super::Observed;
use crate::disk::{SimFile, SimFs, SimStorage};

pub(super) struct Io<'a> {
    pub(super) id: u64,
    pub(super) wal: &'a mut Wal<SimFs>,
    pub(super) file: &'a mut SimFile,
    /// The outbox's length at the Ready cycles' first fsync.
    pub(super) fsynced_at: &'a mut Option<usize>,
    pub(super) outbox: &'a mut Vec<Message>,
    pub(super) observed: &'a mut Vec<Observed>,
    pub(super) now: u64,
    /// With a log writer of its own (the daemon's way): the writes queued for
    /// it, which the world carries out (`Simulation::writers`).
    pub(super) writes: Option<&'a mut Vec<ReadyWrite>>,
    /// The newest queued write a synchronous one wrote ahead of itself: the
    /// core is told, as the daemon's writer reports it.
    pub(super) flushed: &'a mut Option<u64>,
}

impl Io<'_> {
    /// Writes what is queued for the log writer before a synchronous write
    /// (the daemon's writer takes its jobs in order); returns the messages
    /// that waited for those writes, to leave after the synchronous fsync.
    fn flush_queued(&mut self) -> Vec<Message> {
        let Some(writes) = self.writes.as_deref_mut() else { return Vec::new() };
        let mut after = Vec::new();
        for write in writes.drain(..) {
            wal_entries::append(self.wal, &write.entries, write.hard_state.as_ref())
                .expect("simulated WAL append");
            after.extend(write.after);
            *self.flushed = Some(write.number);
        }
        after
    }

    /// Messages that waited for a write leave after this turn's fsync.
    fn after_fsync(&mut self, after: Vec<Message>) {
        if after.is_empty() {
            return;
        }
        if self.fsynced_at.is_none() {
            *self.fsynced_at = Some(self.outbox.len());
        }
        self.outbox.extend(after);
    }
}

impl MemberIo for Io<'_> {
    fn send(&mut self, messages: Vec<Message>) {
        self.outbox.extend(messages);
    }

    fn send_snapshot(&mut self, mut message: Message, backend: &Backend) -> Result<(), String> {
        // A read error while copying fails this send (Raft is told, and retries).
        let copy = SimFile::default();
        let label = Path::new("sim").join("snapshot-copy");
        backend.copy_to_storage(SimStorage(copy.clone())).map_err(|e| e.to_string())?;
        let opened =
            Backend::open_on(SimStorage(copy.clone()), &label).map_err(|e| e.to_string())?;
        etcd_server::apply_core::stamp_snapshot(&mut message, &opened)?;
        message.mut_snapshot().data = copy.durable_bytes().into();
        self.outbox.push(message);
        Ok(())
    }

    fn persists_async(&self) -> bool {
        self.writes.is_some()
    }

    fn persist_async(&mut self, write: ReadyWrite) {
        self.writes.as_deref_mut().expect("only with a log writer").push(write);
    }

    fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>, must_sync: bool) {
        let after = self.flush_queued();
        wal_entries::append(self.wal, entries, hard_state).expect("simulated WAL append");
        if must_sync {
            self.wal.sync().expect("simulated WAL fsync");
        }
        if must_sync && self.fsynced_at.is_none() {
            // What is sent from now on waits for the fsync (see `fsync_cut`).
            *self.fsynced_at = Some(self.outbox.len());
        }
        self.after_fsync(after);
    }

    fn save_snapshot(&mut self, index: u64, term: u64, conf_state: &ConfState) {
        if crate::tracing() {
            eprintln!("{:>6} member {} saves a snapshot at {index}", self.now, self.id);
        }
        let after = self.flush_queued();
        let marker = snapshot_marker(index, term, conf_state);
        self.wal.save_snapshot(&marker).expect("simulated WAL snapshot marker");
        self.wal.sync().expect("simulated WAL fsync");
        self.after_fsync(after);
    }

    fn release_log(&mut self, index: u64) {
        self.wal.release_to(index).expect("simulated WAL release");
    }

    fn active_peers(&self) -> usize {
        0
    }

    fn replace_backend(&mut self, backend: &Backend, data: Vec<u8>) -> Result<(), String> {
        if crate::tracing() {
            eprintln!("{:>6} member {} installs a snapshot", self.now, self.id);
        }
        let file = SimFile::with_bytes(data);
        backend
            .replace_with_storage(SimStorage(file.clone()))
            .expect("invariant: a received simulated backend opens");
        *self.file = file;
        Ok(())
    }

    fn applying(&mut self, entries: &[Entry]) {
        for entry in entries {
            self.observed.push(Observed::Applied {
                index: entry.index,
                term: entry.term,
                data: entry.data.to_vec(),
            });
        }
    }

    fn applied(&mut self, index: u64, revision: i64, events: &[(i64, Vec<Event>)]) {
        if crate::tracing() && index > 0 {
            eprintln!("{:>6} member {} applied to {index} rev {revision}", self.now, self.id);
        }
        if index > 0 {
            self.observed.push(Observed::Revision { index, revision });
        }
        for (revision, list) in events {
            self.observed.push(Observed::Events { revision: *revision, events: list.clone() });
        }
    }

    fn installed(&mut self, index: u64) {
        self.observed.push(Observed::Installed { index });
    }
}
