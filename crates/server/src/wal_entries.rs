//! Raft's entries as the WAL stores them, and back.

use etcd_raftnode::{Entry, EntryType};

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

/// The WAL's view of a raft entry.
pub fn to_wal_entry(entry: &Entry) -> etcd_wal::Entry {
    etcd_wal::Entry {
        index: entry.index,
        term: entry.term,
        entry_type: match entry.get_entry_type() {
            EntryType::EntryNormal => 0,
            EntryType::EntryConfChange => 1,
            EntryType::EntryConfChangeV2 => 2,
        },
        data: entry.data.to_vec(),
        context: entry.context.to_vec(),
    }
}
