//! The Raft driver: owns a raft-rs `RawNode` and turns each `Ready` into calls on a
//! [`ReadySink`] (persist, send, apply, read states) in the order Raft requires.
//!
//! It performs no I/O and reads no clock: time arrives as `tick()`, the disk and the
//! network are the sink's business. That keeps the same driver usable by the async
//! daemon and by a deterministic simulation.
//!
//! Every raft option is set explicitly (raft-rs defaults `pre_vote` and `check_quorum`
//! to off). raft-rs drops a ReadIndex request until a new leader has committed an
//! entry of its term, so callers must retry unanswered read requests.

mod conf_state;
mod node;
mod ready;
mod storage;

pub use conf_state::{decode_conf_state, encode_conf_state};
pub use node::{
    conf_change_entry, MembershipChange, NodeConfig, RaftNode, RestoreState, Role, SplitMix64,
};
pub use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
pub use raft::ReadState;
pub use ready::{ReadySink, ReadyWrite};

/// Errors the driver reports to its caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The proposal was dropped by Raft (no leader, or leadership transfer in progress).
    #[error("raft: proposal dropped")]
    ProposalDropped,
    /// Any other error from the raft library.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}
