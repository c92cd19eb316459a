//! How the Raft half does its I/O: the [`RaftIo`] interface the daemon and the
//! simulator implement, and the adapter that turns each of raft-rs's Ready
//! cycles (`etcd_raftnode::ReadySink`) into its calls, in Raft's order.

use etcd_raftnode::{
    ConfState, Entry, HardState, Message, MessageType, ReadState, ReadySink, ReadyWrite, Role,
    Snapshot,
};

/// The disk and the network of one member, as the Raft half uses them. A failure
/// inside any of these must stop the member (Raft's safety depends on them), so
/// they return nothing.
pub trait RaftIo {
    /// Queues messages for peers without blocking (best effort; Raft retries).
    fn send(&mut self, messages: Vec<Message>);
    /// A `MsgSnapshot` for a lagging peer: the implementation attaches the
    /// backend's data and sends it, then reports how it went with
    /// [`crate::raft_core::Input::ReportSnapshot`]. Called after the turn's Ready cycles.
    fn send_snapshot(&mut self, message: Message);
    /// Appends entries and the hard state to the log; durable before returning
    /// when `must_sync`.
    fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>, must_sync: bool);
    /// Hands committed entries to the state machine, in log order.
    fn apply(&mut self, committed: Vec<Entry>);
    /// Replaces the backend with the leader's snapshot received as `data`, after
    /// every entry handed to [`RaftIo::apply`] before it; returns once done.
    fn install_backend(&mut self, index: u64, data: Vec<u8>);
    /// Records, durably, that the backend holds everything up to `index`.
    fn save_snapshot(&mut self, index: u64, term: u64, conf_state: &ConfState);
    /// Lets the log drop what the snapshot at `index` covers.
    fn release_log(&mut self, index: u64);
    /// Whether the log is written on a thread of its own (see
    /// `etcd_raftnode::ReadySink::persists_async`): Readies' writes then go to
    /// [`RaftIo::persist_async`] and come back as [`crate::raft_core::Input::Persisted`], so ticks
    /// and messages go on during a slow fsync. `persist`, `save_snapshot` and
    /// `release_log` still return only once done, after every queued write.
    fn persists_async(&self) -> bool {
        false
    }
    /// Queues a Ready's writes behind those queued before; once written the
    /// writer sends its `after` messages and reports [`crate::raft_core::Input::Persisted`] with
    /// its number.
    fn persist_async(&mut self, write: ReadyWrite) {
        let _ = write;
        unreachable!("persist_async is called only on an I/O that persists_async");
    }
    /// Peers with a stream up now.
    fn active_peers(&self) -> usize;
    /// The leader or this member's role changed. Called within the Ready that
    /// brings the change, before its committed entries are handed on: a new
    /// leader's state machine must know it leads when it applies its first entry
    /// (the lessor starts tracking expiries then).
    fn leader_changed(&mut self, leader: u64, role: Role);
}

/// Turns one Ready's work into [`RaftIo`] calls, in Raft's order.
pub(crate) struct Sink<'a, I: RaftIo> {
    pub io: &'a mut I,
    /// A leader's snapshot received and not installed yet: (index, data).
    pub incoming_snapshot: &'a mut Option<(u64, Vec<u8>)>,
    /// Snapshot messages, sent after the Ready cycles.
    pub outgoing_snapshots: Vec<Message>,
    pub read_states: Vec<ReadState>,
    /// The leader and role as last reported to the I/O.
    pub soft_state: (&'a mut u64, &'a mut Role),
    /// The newest entry handed to the state machine.
    pub handed_to_apply: &'a mut u64,
}

impl<I: RaftIo> ReadySink for Sink<'_, I> {
    fn send(&mut self, mut messages: Vec<Message>) {
        let is_snapshot = |m: &Message| m.get_msg_type() == MessageType::MsgSnapshot;
        if messages.iter().any(is_snapshot) {
            let (snapshots, rest): (Vec<Message>, Vec<Message>) =
                messages.into_iter().partition(is_snapshot);
            self.outgoing_snapshots.extend(snapshots);
            messages = rest;
        }
        if !messages.is_empty() {
            self.io.send(messages);
        }
    }

    fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
        must_sync: bool,
    ) {
        if let Some(snapshot) = snapshot {
            // The backend first, then the record of it: a crash in between leaves
            // a log that still holds what the old backend lacks.
            let meta = snapshot.get_metadata();
            let data = match self.incoming_snapshot.take() {
                Some((received, data)) if received == meta.index => data,
                _ => {
                    panic!("raft produced a snapshot at {} this member did not receive", meta.index)
                }
            };
            self.io.install_backend(meta.index, data);
            self.io.save_snapshot(meta.index, meta.term, meta.get_conf_state());
            *self.handed_to_apply = (*self.handed_to_apply).max(meta.index);
            tracing::info!(index = meta.index, "installed a snapshot from the leader");
        }
        if !entries.is_empty() || hard_state.is_some() {
            self.io.persist(entries, hard_state, must_sync);
        }
    }

    fn persists_async(&self) -> bool {
        self.io.persists_async()
    }

    fn persist_async(&mut self, write: ReadyWrite) {
        // Only a leader sends snapshots, and a leader's messages never wait for the disk.
        debug_assert!(write.after.iter().all(|m| m.get_msg_type() != MessageType::MsgSnapshot));
        self.io.persist_async(write);
    }

    fn apply(&mut self, committed: Vec<Entry>) {
        if let Some(first) = committed.first() {
            assert!(
                first.index <= *self.handed_to_apply + 1,
                "invariant: committed entries are handed on without a gap ({} after {})",
                first.index,
                self.handed_to_apply
            );
        }
        if let Some(last) = committed.last() {
            *self.handed_to_apply = (*self.handed_to_apply).max(last.index);
        }
        self.io.apply(committed);
    }

    fn read_states(&mut self, states: Vec<ReadState>) {
        self.read_states.extend(states);
    }

    fn soft_state(&mut self, leader_id: u64, role: Role) {
        if (leader_id, role) != (*self.soft_state.0, *self.soft_state.1) {
            *self.soft_state.0 = leader_id;
            *self.soft_state.1 = role;
            self.io.leader_changed(leader_id, role);
        }
    }
}
