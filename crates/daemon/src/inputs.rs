//! What the daemon's tasks hand each other: requests for the raft loop, work
//! for the apply loop, where Raft's messages go (the raft loop and the WAL
//! writer both send), and the way out when continuing could lose data. At the
//! bottom of the daemon, so the loops and the services that feed them do not
//! refer to each other.

use etcd_raftnode::{Entry, MembershipChange, Message};
use etcd_server::{Applied, ServerError};
use tokio::sync::oneshot;

/// Where a proposal's result goes, with the instant it was sent.
pub(crate) type Waiter = oneshot::Sender<(Applied, std::time::Instant)>;

/// A linearizable reader waiting for the index it must see applied.
pub(crate) type Reader = oneshot::Sender<Result<u64, ServerError>>;

/// What other tasks ask of the raft loop.
pub(crate) enum RaftInput {
    /// Propose an encoded `InternalRaftRequest` whose waiter is registered
    /// under `id`, sent `at`.
    Propose { id: u64, data: Vec<u8>, at: std::time::Instant },
    /// Ask for a read index; answered with the index to wait for.
    ReadIndex(Reader),
    /// The backend is durable up to `index`: record a snapshot and release the WAL.
    Snapshot { index: u64, term: u64 },
    /// Hand leadership to another member; answered once it leads (or not).
    TransferLeader { to: u64 },
    /// Propose a membership change whose waiter is registered under `id`.
    ProposeMembershipChange { id: u64, kind: MembershipChange, node_id: u64, context: Vec<u8> },
    /// A committed membership change was applied to the members table; apply it to
    /// Raft's configuration.
    ApplyMembershipChange { kind: MembershipChange, node_id: u64 },
    /// How sending a snapshot to a peer ended.
    ReportSnapshot { to: u64, delivered: bool },
    /// How far a peer's log matches (leader only): (matched, leader commit).
    PeerProgress { id: u64, reply: oneshot::Sender<Option<(u64, u64)>> },
    /// Rewrite the backend compactly, in order with the entries being applied.
    Defragment(DefragReply),
    /// Stop after this turn (graceful shutdown).
    Stop,
}

/// Work handed to the apply loop, in log order.
pub(crate) enum ApplyTask {
    /// Committed entries to apply, handed on at the instant given.
    Entries(Vec<Entry>, std::time::Instant),
    /// A leader's snapshot to install: the received backend file, at `index`; the
    /// raft loop waits on `done` before recording the snapshot.
    Install { index: u64, path: std::path::PathBuf, done: std::sync::mpsc::SyncSender<()> },
    /// Rewrite the backend between batches (see `defrag.rs`).
    Defragment(DefragReply),
}

/// The raft thread's end of the apply queue: bounded (a full queue holds the
/// raft thread up, as a slow apply should), and never awaited, because the
/// raft thread's Ready cycle is synchronous code.
pub(crate) struct ApplySender {
    /// `None` only while being dropped.
    tasks: Option<std::sync::mpsc::SyncSender<ApplyTask>>,
    ready: std::sync::Arc<tokio::sync::Notify>,
}

/// The apply task's end: waits without a thread of its own, so the proposers
/// it wakes run on the worker it runs on instead of behind a cross-thread
/// wake-up (on a 2-core VM, ~40 µs of a single client's put).
pub(crate) struct ApplyReceiver {
    tasks: std::sync::mpsc::Receiver<ApplyTask>,
    ready: std::sync::Arc<tokio::sync::Notify>,
}

/// A queue of `capacity` tasks from the raft thread to the apply task.
pub(crate) fn apply_queue(capacity: usize) -> (ApplySender, ApplyReceiver) {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
    let ready = std::sync::Arc::new(tokio::sync::Notify::new());
    (ApplySender { tasks: Some(tx), ready: ready.clone() }, ApplyReceiver { tasks: rx, ready })
}

impl ApplySender {
    /// Queues `task` (blocking while the queue is full); gives it back if the
    /// apply task is gone.
    pub fn send(&self, task: ApplyTask) -> Result<(), ApplyTask> {
        let tasks = self.tasks.as_ref().expect("a sender not being dropped");
        tasks.send(task).map_err(|e| e.0)?;
        // A permit is stored if the receiver is not waiting yet, so a task
        // queued between its check and its wait is not missed.
        self.ready.notify_one();
        Ok(())
    }
}

impl Drop for ApplySender {
    fn drop(&mut self) {
        // Disconnected first, then woken: the receiver sees it on its next check.
        drop(self.tasks.take());
        self.ready.notify_one();
    }
}

impl ApplyReceiver {
    /// The next task, waiting for one; `None` once the sender is gone.
    pub async fn recv(&mut self) -> Option<ApplyTask> {
        loop {
            match self.tasks.try_recv() {
                Ok(task) => return Some(task),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) => self.ready.notified().await,
            }
        }
    }

    /// The next task if one is queued.
    pub fn try_recv(&self) -> Result<ApplyTask, std::sync::mpsc::TryRecvError> {
        self.tasks.try_recv()
    }
}

/// Backend sizes before and after a defragmentation, in bytes.
pub(crate) type DefragSizes = (u64, u64);

/// What the apply loop answers a defragmentation with.
pub(crate) type DefragReply = oneshot::Sender<Result<DefragSizes, ServerError>>;

/// Stops the process: for failures after which continuing could lose or corrupt data.
pub(crate) fn fatal(what: &str, err: impl std::fmt::Display) -> ! {
    tracing::error!(error = %err, "{what}; the member cannot continue safely and stops now");
    std::process::abort();
}

/// Where Raft messages for other members go (the peer transport).
pub trait PeerSender: Send + Sync {
    /// Queues messages for their destinations without blocking.
    fn send(&self, messages: Vec<Message>);
    /// Peers that could not be reached since the last call.
    fn take_unreachable(&self) -> Vec<u64>;
    /// Peers with a stream up now.
    fn active_peers(&self) -> usize;
    /// Sends every peer an empty batch (a removed member is refused and stops).
    fn probe(&self);
}

impl PeerSender for etcd_transport::PeerTransport {
    fn send(&self, messages: Vec<Message>) {
        etcd_transport::PeerTransport::send(self, messages);
    }
    fn take_unreachable(&self) -> Vec<u64> {
        etcd_transport::PeerTransport::take_unreachable(self)
    }
    fn active_peers(&self) -> usize {
        etcd_transport::PeerTransport::active_peers(self)
    }
    fn probe(&self) {
        etcd_transport::PeerTransport::probe(self);
    }
}
