//! The deterministic core of a member, with no async runtime and no clock:
//! - [`ids`]: member and cluster IDs derived from the configuration, as etcd does;
//! - [`applier`]: applies committed Raft entries to the MVCC store, one backend
//!   transaction per batch, with the consistent index written in that same
//!   transaction so replaying the WAL after a crash is idempotent;
//! - [`auth`]: the auth requests and permission checks the applier runs, on
//!   the [`etcd_auth::AuthStore`] it shares with the API;
//! - [`error`]: every error a client can see, as one enum (the API layer maps it
//!   to etcd's gRPC codes and messages).

pub mod alarms;
pub mod applier;
pub mod auth;
pub mod error;
pub mod ids;
pub mod membership;

pub use applier::{Applied, Applier, ApplyContext, BatchOutcome, Response};
pub use error::ServerError;
