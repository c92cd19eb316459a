//! The log storage raft-rs reads: raft-rs's `MemStorage` for entries and hard
//! state, plus the metadata of this member's newest snapshot, which is what a
//! lagging follower is sent. The snapshot's data (the backend) is attached by the
//! caller when the message leaves: any backend at or past the snapshot index will
//! do, because the receiver's applier skips entries at or below the backend's own
//! consistent index. For the same reason the configuration sent with it is the
//! current one.

use std::sync::{Arc, PoisonError, RwLock};

use raft::eraftpb::{Entry, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// raft-rs's storage for one member.
#[derive(Clone, Default)]
pub struct RaftStorage {
    /// Entries after the compaction point, the hard state and the configuration.
    pub(crate) mem: MemStorage,
    /// The newest snapshot this member recorded or installed (index 0: none).
    snapshot: Arc<RwLock<SnapshotMetadata>>,
}

impl RaftStorage {
    pub(crate) fn new(mem: MemStorage) -> RaftStorage {
        RaftStorage { mem, snapshot: Arc::default() }
    }

    /// The index of the newest snapshot (0: none).
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner).index
    }

    /// Records that a snapshot at `metadata.index` exists (backend durable there).
    pub(crate) fn set_snapshot(&self, metadata: SnapshotMetadata) {
        *self.snapshot.write().unwrap_or_else(PoisonError::into_inner) = metadata;
    }
}

impl Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let metadata = self.snapshot.read().unwrap_or_else(PoisonError::into_inner).clone();
        if metadata.index == 0 || metadata.index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut metadata = metadata;
        // The data sent with it is a copy of the backend taken when the message
        // leaves, past every membership change applied so far: so the
        // configuration that goes with it is today's, not the one recorded at
        // `metadata.index`. (With the recorded one, a member added after the
        // last recorded snapshot would be sent a configuration without itself,
        // which raft refuses, and never catch up until the next snapshot.)
        metadata.set_conf_state(self.mem.initial_state()?.conf_state);
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        Ok(snapshot)
    }
}
