//! The writer's turn: who holds the backend's write transaction, and the
//! transaction left open ("parked") between apply batches.
//!
//! redb commits cost the apply loop about 25 µs each, most of a small
//! batch's time. etcd's bbolt batch transaction stays open across many
//! applies and commits every 100 ms; here a batch may park its transaction
//! instead of committing it, and the next writer resumes it. Readers of the
//! database see only commits, so whoever parks writes must serve them to its
//! readers itself until a commit (the MVCC store keeps the parked revisions'
//! encodings for that), and tells which of them a commit covered with a
//! *mark*: the number it parked with, recorded as committed when the
//! transaction that holds it commits.
//!
//! redb's own `begin_write` blocks while a write transaction exists, parked
//! or not, so every writer goes through this turn instead: it waits until no
//! other holds it and then takes the parked transaction, if any.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

/// Shared by a backend and every write transaction it hands out.
#[derive(Default)]
pub(crate) struct Writer {
    state: Mutex<State>,
    released: Condvar,
    /// The newest mark a commit covered.
    committed_mark: AtomicI64,
}

#[derive(Default)]
struct State {
    /// The thread holding the writer's turn (for the deadlock check).
    holder: Option<ThreadId>,
    /// A transaction left open, with its mark.
    parked: Option<(redb::WriteTransaction, i64)>,
}

/// The writer's turn, given back when dropped.
pub(crate) struct Turn {
    writer: Arc<Writer>,
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the writer's turn and takes it, with the parked transaction if
    /// there is one. Panics if this thread already holds the turn: waiting
    /// would never end.
    pub(crate) fn acquire(self: &Arc<Self>) -> (Turn, Option<(redb::WriteTransaction, i64)>) {
        let me = std::thread::current().id();
        let mut state = self.lock();
        assert_ne!(
            state.holder,
            Some(me),
            "invariant: a thread holding the backend's write transaction waits for it"
        );
        while state.holder.is_some() {
            state = self.released.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.holder = Some(me);
        (Turn { writer: self.clone() }, state.parked.take())
    }

    /// The newest mark a commit covered.
    pub(crate) fn committed_mark(&self) -> i64 {
        self.committed_mark.load(Ordering::Acquire)
    }

    /// Takes the writer's turn to replace the database: the parked
    /// transaction, superseded, is discarded and the committed mark forgotten.
    pub(crate) fn discard_parked(self: &Arc<Self>) -> Turn {
        let (turn, parked) = self.acquire();
        drop(parked);
        self.committed_mark.store(0, Ordering::Release);
        turn
    }
}

impl Turn {
    /// Records that a transaction holding writes up to `mark` committed.
    pub(crate) fn committed(&self, mark: i64) {
        self.writer.committed_mark.fetch_max(mark, Ordering::AcqRel);
    }

    /// Leaves `txn` open for the next writer and gives the turn back.
    pub(crate) fn park(self, txn: redb::WriteTransaction, mark: i64) {
        let mut state = self.writer.lock();
        assert!(state.parked.is_none(), "invariant: one write transaction at a time");
        state.parked = Some((txn, mark));
        // `self` drops after the lock is let go, releasing the turn.
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.writer.lock().holder = None;
        self.writer.released.notify_all();
    }
}
