//! The deterministic core of a member, with no async runtime and no clock:
//! - [`ids`]: member and cluster IDs derived from the configuration, as etcd does;
//! - [`applier`]: applies committed Raft entries to the MVCC store, one backend
//!   transaction per batch, with the consistent index written in that same
//!   transaction so replaying the WAL after a crash is idempotent;
//! - [`auth`]: the auth requests and permission checks the applier runs, on
//!   the [`etcd_auth::AuthStore`] it shares with the API;
//! - [`raft_core`]: the Raft half of a member (the Raft node, the ReadIndex
//!   queue, leader-change follow-up, snapshot record and install) behind the
//!   [`raft_core::RaftIo`] trait, driven by inputs and a millisecond clock;
//! - [`member_core`]: the whole member as one state machine (both halves and
//!   what coordinates them), `step(input, now, io) -> effects`, for single-threaded
//!   drivers (the simulator, unit tests);
//! - [`waiters`]: the proposals waiting on this member, and who is woken with what;
//! - [`watch`]: the watch hub, where applied events meet watchers (a ring of
//!   recent revisions, the published revision, which watchers a batch concerns);
//! - [`compactor`]: automatic compaction's schedule (which revision the leader
//!   proposes to compact to, and when);
//! - [`error`]: every error a client can see, as one enum (the API layer maps it
//!   to etcd's gRPC codes and messages).

pub mod alarms;
pub mod applier;
pub mod apply_core;
pub mod auth;
pub mod compactor;
pub mod error;
pub mod ids;
pub mod member_core;
pub mod membership;
pub mod raft_core;
mod raft_io;
mod read_queue;
pub mod waiters;
pub mod wal_entries;
pub mod watch;

pub use applier::{Applied, Applier, ApplyContext, BatchOutcome, Response};
pub use error::ServerError;
