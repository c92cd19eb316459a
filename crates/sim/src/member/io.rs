//! A member's disk and network as its Raft half sees them (`RaftIo`): the
//! real WAL on the simulated filesystem, the outbox, the apply half run in
//! place, snapshot install and copy.

use std::path::Path;
use std::sync::Arc;

use etcd_raftnode::{ConfState, Entry, HardState, Message, Role};
use etcd_server::apply_core::{ApplyCore, ApplyResult};
use etcd_server::raft_core::RaftIo;
use etcd_server::wal_entries::{snapshot_marker, to_wal_entry, to_wal_hard_state};
use etcd_server::watch::WatchHub;
use etcd_storage::Backend;
use etcd_wal::Wal;

use super::Observed;
use crate::disk::{SimFile, SimFs, SimStorage};

pub(super) struct Io<'a> {
    pub(super) id: u64,
    pub(super) wal: &'a mut Wal<SimFs>,
    pub(super) file: &'a mut SimFile,
    pub(super) backend: &'a Arc<Backend>,
    pub(super) apply: &'a mut ApplyCore,
    pub(super) hub: &'a WatchHub,
    pub(super) removed: &'a mut bool,
    /// The outbox's length at the Ready cycles' first fsync.
    pub(super) fsynced_at: &'a mut Option<usize>,
    /// A failure after which the daemon would abort.
    pub(super) fatal: &'a mut Option<String>,
    /// Peers whose snapshot could not be sent.
    pub(super) failed_snapshots: Vec<u64>,
    pub(super) outbox: &'a mut Vec<Message>,
    pub(super) results: Vec<ApplyResult>,
    pub(super) observed: &'a mut Vec<Observed>,
    pub(super) leader: u64,
    pub(super) now: u64,
}

impl RaftIo for Io<'_> {
    fn send(&mut self, messages: Vec<Message>) {
        self.outbox.extend(messages);
    }

    fn send_snapshot(&mut self, mut message: Message) {
        // A read error while copying fails this send (Raft is told, and retries).
        let copy = SimFile::default();
        let label = Path::new("sim").join("snapshot-copy");
        let stamped = self
            .backend
            .copy_to_storage(SimStorage(copy.clone()))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                Backend::open_on(SimStorage(copy.clone()), &label).map_err(|e| e.to_string())
            })
            .and_then(|opened| etcd_server::apply_core::stamp_snapshot(&mut message, &opened));
        match stamped {
            Ok(()) => {
                message.mut_snapshot().data = copy.durable_bytes().into();
                self.outbox.push(message);
            }
            Err(_) => self.failed_snapshots.push(message.to),
        }
    }

    fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>, must_sync: bool) {
        let entries: Vec<etcd_wal::Entry> = entries.iter().map(to_wal_entry).collect();
        let hard_state = hard_state.map(to_wal_hard_state);
        self.wal.append(&entries, hard_state.as_ref()).expect("simulated WAL append");
        if must_sync {
            self.wal.sync().expect("simulated WAL fsync");
        }
        if must_sync && self.fsynced_at.is_none() {
            // What is sent from now on waits for the fsync (see `fsync_cut`).
            *self.fsynced_at = Some(self.outbox.len());
        }
    }

    fn apply(&mut self, committed: Vec<Entry>) {
        if self.fatal.is_some() {
            return;
        }
        for entry in &committed {
            self.observed.push(Observed::Applied {
                index: entry.index,
                term: entry.term,
                data: entry.data.to_vec(),
            });
        }
        let leading = self.leader == self.id;
        let mut result = match self.apply.apply(&committed, self.now, leading) {
            Ok(result) => result,
            Err(err) => {
                // The daemon aborts: continuing could apply later entries over
                // a lost batch. The world crashes this member.
                *self.fatal = Some(format!("failed to apply committed entries: {err}"));
                return;
            }
        };
        if result.outcome.applied_index > 0 {
            let revision = self.apply.kv().current_revision();
            self.observed
                .push(Observed::Revision { index: result.outcome.applied_index, revision });
        }
        let events = std::mem::take(&mut result.outcome.events);
        for (revision, list) in &events {
            self.observed.push(Observed::Events { revision: *revision, events: list.clone() });
        }
        self.hub.publish(events, self.apply.kv().current_revision());
        self.results.push(result);
    }

    fn install_backend(&mut self, index: u64, data: Vec<u8>) {
        if crate::tracing() {
            eprintln!("{:>6} member {} installs a snapshot at {index}", self.now, self.id);
        }
        let file = SimFile::with_bytes(data);
        self.backend
            .replace_with_storage(SimStorage(file.clone()))
            .expect("invariant: a received simulated backend opens");
        *self.file = file;
        let members = match self.apply.installed(index) {
            Ok(members) => members,
            Err(err) => {
                *self.fatal = Some(err);
                return;
            }
        };
        self.hub.reset(self.apply.kv().current_revision());
        if !members.iter().any(|m| m.id == self.id) {
            // The snapshot's cluster no longer has this member: it was removed.
            *self.removed = true;
        }
        self.observed.push(Observed::Installed { index });
    }

    fn save_snapshot(&mut self, index: u64, term: u64, conf_state: &ConfState) {
        if crate::tracing() {
            eprintln!("{:>6} member {} saves a snapshot at {index}", self.now, self.id);
        }
        let marker = snapshot_marker(index, term, conf_state);
        self.wal.save_snapshot(&marker).expect("simulated WAL snapshot marker");
        self.wal.sync().expect("simulated WAL fsync");
    }

    fn release_log(&mut self, index: u64) {
        self.wal.release_to(index).expect("simulated WAL release");
    }

    fn active_peers(&self) -> usize {
        0
    }

    fn leader_changed(&mut self, leader: u64, _role: Role) {
        self.leader = leader;
    }
}
