//! The multi-version key-value store of an etcd-rs member: revisions, the
//! in-memory key index with generations, and etcd's Range / Put /
//! DeleteRange / Txn / Compact semantics on top of the `key` table of
//! [`etcd_storage`]. It owns the meaning of revisions and of the `key`
//! table and the compaction record in `meta`.
//!
//! It must not know about Raft, gRPC, authentication, or leases beyond the
//! lease id stored on a key (the caller says which leases exist and is told
//! which keys changed lease). Response headers are the caller's, except the
//! revision-only headers etcd puts on the responses nested in a Txn.
//!
//! Writes go through a [`Batch`] (one redb write transaction, ended by the
//! caller together with its own meta writes: committed, or parked for the
//! next batch); reads on [`KvStore`] run concurrently and only ever see whole
//! batches (see `kvstore.rs`).
#![warn(missing_docs)]

mod batch;
mod error;
pub mod index;
pub mod key_index;
mod kv_view;
mod kvstore;
mod range;
mod recent;
pub mod revision;
mod txn;

pub use batch::{Batch, Finished, LeaseChange, Leases};
pub use error::MvccError;
pub use kvstore::{
    CompactStep, HashKv, KvStore, OpCounts, RangeChunk, DEFAULT_COMPACTION_BATCH_LIMIT,
};
pub use revision::Revision;

#[cfg(test)]
mod tests;
