//! Raft's entries, hard state and snapshot records as the WAL stores them,
//! and back: one place for the daemon and the simulator.

use etcd_raftnode::{encode_conf_state, ConfState, Entry, EntryType, HardState, RestoreState};

/// The Raft entry a WAL entry holds.
pub fn to_raft_entry(entry: etcd_wal::Entry) -> Entry {
    let mut out = Entry {
        index: entry.index,
        term: entry.term,
        data: entry.data.into(),
        context: entry.context.into(),
        ..Default::default()
    };
    out.set_entry_type(match entry.entry_type {
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    });
    out
}

/// The WAL's view of a raft entry, borrowed (appending copies the bytes once).
pub fn wal_entry_ref(entry: &Entry) -> etcd_wal::EntryRef<'_> {
    etcd_wal::EntryRef {
        index: entry.index,
        term: entry.term,
        entry_type: match entry.get_entry_type() {
            EntryType::EntryNormal => 0,
            EntryType::EntryConfChange => 1,
            EntryType::EntryConfChangeV2 => 2,
        },
        data: &entry.data,
        context: &entry.context,
    }
}

/// The WAL's view of Raft's hard state.
pub fn to_wal_hard_state(hs: &HardState) -> etcd_wal::HardState {
    etcd_wal::HardState { term: hs.term, vote: hs.vote, commit: hs.commit }
}

/// Appends Raft's entries and hard state to the WAL (durable only after a sync).
pub fn append<F: etcd_wal::Fs>(
    wal: &mut etcd_wal::Wal<F>,
    entries: &[Entry],
    hard_state: Option<&HardState>,
) -> etcd_wal::Result<()> {
    let hard_state = hard_state.map(to_wal_hard_state);
    wal.append_refs(entries.iter().map(wal_entry_ref), hard_state.as_ref())
}

/// The Raft hard state a WAL record holds.
pub fn to_raft_hard_state(hs: &etcd_wal::HardState) -> HardState {
    HardState { term: hs.term, vote: hs.vote, commit: hs.commit, ..Default::default() }
}

/// The WAL record of a snapshot at `index` (term `term`) with this membership.
pub fn snapshot_marker(index: u64, term: u64, conf_state: &ConfState) -> etcd_wal::SnapshotMarker {
    etcd_wal::SnapshotMarker { index, term, conf_state: encode_conf_state(conf_state) }
}

/// What Raft restarts from: the WAL's newest snapshot marker, hard state and
/// the entries after the marker, with the membership the caller read from the
/// backend (as of its consistent index, newer than the marker's).
pub fn restore_state(
    marker: &etcd_wal::SnapshotMarker,
    hard_state: &etcd_wal::HardState,
    entries: Vec<etcd_wal::Entry>,
    conf_state: ConfState,
) -> RestoreState {
    RestoreState {
        snapshot_index: marker.index,
        snapshot_term: marker.term,
        conf_state,
        hard_state: to_raft_hard_state(hard_state),
        entries: entries.into_iter().map(to_raft_entry).collect(),
    }
}
