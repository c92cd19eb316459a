//! The persistent backend of an etcd-rs member: one redb file holding the
//! MVCC history (`key` table), server metadata (`meta`: schema version, Raft
//! consistent index, compaction state), cluster members and leases. This
//! crate owns the file, its schema ([`schema`]) and transactions; it knows
//! nothing of revisions' meaning, key indexes, Raft or gRPC — callers give
//! it bytes and ask for bytes. One write transaction is out at a time, and
//! one may be left open (parked) between writers; readers run concurrently
//! and see only committed state.
#![warn(missing_docs)]

mod backend;
mod error;
pub mod schema;
mod writer;

pub use backend::{
    consistent_index, members_delete, members_list, members_put, meta_get, meta_put,
    set_consistent_index, Backend, ReadTables, ReadTxn, Retained, WriteTxn,
};
pub use error::{Result, StorageError, VersionFound};

#[cfg(test)]
mod tests;
