//! The Ready cycle: what raft-rs hands over after each step, turned into calls
//! on a [`ReadySink`] in the order Raft requires, with the log written in the
//! cycle's own turn or by an asynchronous log writer ([`ReadyWrite`]).

use raft::eraftpb::{Entry, HardState, Message, Snapshot};
use raft::{ReadState, StateRole};

use crate::node::{RaftNode, Role};
use crate::Error;

/// The effects of one Ready, executed by the caller. Methods are called in the order
/// Raft requires: `send` (leader messages may go before the fsync, thesis 10.2.1),
/// `persist`, `send` again for messages that had to wait for the disk, then `apply`.
pub trait ReadySink {
    /// Sends messages to peers (best effort; Raft retries).
    fn send(&mut self, messages: Vec<Message>);
    /// Makes entries, the hard state and a snapshot durable. When `must_sync` is true
    /// the data must be on stable storage before this returns; a failure here must
    /// abort the process, since Raft's safety depends on it.
    fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
        must_sync: bool,
    );
    /// Hands committed entries to the state machine, in log order.
    fn apply(&mut self, committed: Vec<Entry>);
    /// Delivers answered ReadIndex requests.
    fn read_states(&mut self, states: Vec<ReadState>);
    /// Reports a change of leader or role.
    fn soft_state(&mut self, leader_id: u64, role: Role);
    /// Whether the log is written on a thread of its own, so a slow fsync does
    /// not hold up ticks, heartbeats and messages: then a Ready without a
    /// snapshot that has something to write (or messages that must wait for
    /// the writes in flight) goes to [`ReadySink::persist_async`], and the
    /// caller reports finished writes with [`RaftNode::on_persisted`].
    fn persists_async(&self) -> bool {
        false
    }
    /// Queues a Ready's writes for the log writer (only when
    /// [`ReadySink::persists_async`]); see [`ReadyWrite`]. Writes finish in order.
    fn persist_async(&mut self, write: ReadyWrite) {
        let _ = write;
        unreachable!("persist_async is called only on a sink that persists_async");
    }
}

/// One Ready's writes for an asynchronous log writer. The writer appends them
/// after everything queued before, makes them durable when `must_sync`, then
/// sends `after` and reports `number` back ([`RaftNode::on_persisted`]).
#[derive(Debug)]
pub struct ReadyWrite {
    /// The Ready's number.
    pub number: u64,
    /// Entries to append (maybe none).
    pub entries: Vec<Entry>,
    /// The hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// Whether the write must be on stable storage before it counts.
    pub must_sync: bool,
    /// Messages that may leave only once the write is done (a follower's
    /// acknowledgements, a candidate's votes).
    pub after: Vec<Message>,
}

impl RaftNode {
    /// Hands a Ready's writes to the sink's log writer. raft-rs reads entries
    /// from storage before they are durable, so they go into it first
    /// (`advance_append_async`'s contract); they count as persisted, and commit
    /// and apply follow, only once the writer reports them.
    fn queue_write(
        &mut self,
        mut ready: raft::Ready,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        sink: &mut impl ReadySink,
    ) -> Result<(), Error> {
        {
            let mut core = self.raw.mut_store().mem.wl();
            core.append(&entries)?;
            if let Some(hard_state) = &hard_state {
                core.set_hardstate(hard_state.clone());
            }
        }
        let number = ready.number();
        assert!(number > self.queued, "invariant: Readies are queued in order");
        let must_sync = ready.must_sync();
        let after = ready.take_persisted_messages();
        self.raw.advance_append_async(ready);
        self.queued = number;
        sink.persist_async(ReadyWrite { number, entries, hard_state, must_sync, after });
        Ok(())
    }

    /// Whether a write handed to the asynchronous log writer is not reported yet.
    pub fn write_in_flight(&self) -> bool {
        self.queued > self.persisted
    }

    /// The log writer finished every write up to Ready `number` (see
    /// [`ReadySink::persist_async`]): entries count as persisted now, so a
    /// leader may commit them and any member apply them in the next Ready.
    pub fn on_persisted(&mut self, number: u64) {
        assert!(
            number <= self.queued,
            "invariant: a write is reported only after it was queued ({number} > {})",
            self.queued
        );
        if number > self.persisted {
            self.persisted = number;
            self.raw.on_persist_ready(number);
        }
    }

    /// Runs one Ready cycle, if any work is pending. Returns whether there was work.
    pub fn process_ready(&mut self, sink: &mut impl ReadySink) -> Result<bool, Error> {
        if !self.raw.has_ready() {
            return Ok(false);
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            sink.soft_state(ss.leader_id, ss.raft_state.into());
        }
        if !ready.messages().is_empty() {
            sink.send(ready.take_messages());
        }
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        let committed = ready.take_committed_entries();
        if !committed.is_empty() {
            sink.apply(committed);
        }
        if !ready.read_states().is_empty() {
            sink.read_states(ready.take_read_states());
        }
        let entries = ready.take_entries();
        let mut hard_state = ready.hs().cloned();
        let lazy_commit = sink.persists_async();
        if lazy_commit && entries.is_empty() && !ready.must_sync() {
            // Only the commit index changed (term and vote changes must sync):
            // it goes with the next write instead of a write of its own, since
            // recovery re-derives a commit index that lags.
            if let Some(hard_state) = hard_state.take() {
                self.raw.mut_store().mem.wl().set_hardstate(hard_state.clone());
                self.unwritten_hard_state = Some(hard_state);
            }
        }
        let in_flight = self.write_in_flight();
        // Only a leader with followers hands its writes over: its heartbeats
        // must go on while it fsyncs, and its followers commit without it.
        // Anyone else writes in its own turn once nothing is in flight (a
        // follower's acknowledgements and a candidate's votes wait for its own
        // disk anyway, and the only voter has nobody to heartbeat), sparing
        // every write the hand-offs to the writer and back.
        let leading = self.raw.raft.state == StateRole::Leader;
        let hands_over = leading && !self.raw.raft.prs().is_singleton();
        if sink.persists_async() && (hands_over || in_flight) && snapshot.is_none() {
            let waiting = !ready.persisted_messages().is_empty();
            if !entries.is_empty() || hard_state.is_some() || (in_flight && waiting) {
                // A newer hard state replaces the one waiting (never write an older after it).
                let waiting_hard_state = self.unwritten_hard_state.take();
                let hard_state = hard_state.or(waiting_hard_state);
                self.queue_write(ready, entries, hard_state, sink)?;
                self.raw.advance_apply();
                return Ok(true);
            }
            if in_flight {
                // Nothing to write and nothing waiting for a write: the report
                // of a later write will cover this Ready.
                self.raw.advance_append_async(ready);
                self.raw.advance_apply();
                return Ok(true);
            }
        }
        let writes = !entries.is_empty() || hard_state.is_some();
        if writes {
            let waiting_hard_state = self.unwritten_hard_state.take();
            hard_state = hard_state.or(waiting_hard_state);
        }
        // Synchronous from here: `advance_append` below takes every Ready so far
        // as written, true when nothing was in flight or (a snapshot) the sink's
        // `persist` waited for the writes queued before it.
        self.persisted = self.queued;
        if writes || snapshot.is_some() {
            sink.persist(&entries, hard_state.as_ref(), snapshot.as_ref(), ready.must_sync());
            let store = self.raw.mut_store();
            let mut core = store.mem.wl();
            if let Some(snapshot) = snapshot {
                store.set_snapshot(snapshot.get_metadata().clone());
                core.apply_snapshot(snapshot)?;
            }
            core.append(&entries)?;
            if let Some(hard_state) = hard_state {
                core.set_hardstate(hard_state);
            }
        }
        if !ready.persisted_messages().is_empty() {
            sink.send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            let mut hard_state = self.raw.store().mem.rl().hard_state().clone();
            hard_state.commit = commit;
            // The commit index may lag on disk: recovery re-derives it from the log.
            if lazy_commit {
                self.unwritten_hard_state = Some(hard_state.clone());
            } else {
                sink.persist(&[], Some(&hard_state), None, false);
            }
            self.raw.mut_store().mem.wl().set_hardstate(hard_state);
        }
        if !light.messages().is_empty() {
            sink.send(light.take_messages());
        }
        let committed = light.take_committed_entries();
        if !committed.is_empty() {
            sink.apply(committed);
        }
        self.raw.advance_apply();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::tests::single;
    use crate::node::{NodeConfig, RestoreState};

    #[derive(Default)]
    struct Recorder {
        persisted: Vec<Entry>,
        applied: Vec<Entry>,
        reads: Vec<ReadState>,
        leader: u64,
        /// Writes on a log writer of their own: queued here until `write_queued`.
        asynchronous: bool,
        queued: Vec<ReadyWrite>,
        outbox: Vec<Message>,
    }

    impl Recorder {
        /// The log writer's turn: every queued write lands and what waited for
        /// it leaves; returns the newest Ready written.
        fn write_queued(&mut self) -> Option<u64> {
            let queued = std::mem::take(&mut self.queued);
            let newest = queued.last().map(|write| write.number);
            for write in queued {
                self.persisted.extend(write.entries);
                self.outbox.extend(write.after);
            }
            newest
        }
    }

    impl ReadySink for Recorder {
        fn send(&mut self, messages: Vec<Message>) {
            self.outbox.extend(messages);
        }
        fn persist(
            &mut self,
            entries: &[Entry],
            _: Option<&HardState>,
            _: Option<&Snapshot>,
            _: bool,
        ) {
            self.persisted.extend_from_slice(entries);
        }
        fn apply(&mut self, committed: Vec<Entry>) {
            for e in &committed {
                assert!(
                    self.persisted.iter().any(|p| p.index == e.index),
                    "entry {} applied before it was persisted",
                    e.index
                );
            }
            self.applied.extend(committed);
        }
        fn read_states(&mut self, states: Vec<ReadState>) {
            self.reads.extend(states);
        }
        fn soft_state(&mut self, leader_id: u64, _: Role) {
            self.leader = leader_id;
        }
        fn persists_async(&self) -> bool {
            self.asynchronous
        }
        fn persist_async(&mut self, write: ReadyWrite) {
            self.queued.push(write);
        }
    }

    fn drain(node: &mut RaftNode, sink: &mut Recorder) {
        while node.process_ready(sink).expect("ready") {}
    }

    #[test]
    fn single_member_elects_itself_and_commits_proposals_after_persisting() {
        let mut node = RaftNode::bootstrap(&single(0), &[1]).expect("bootstrap");
        let mut sink = Recorder::default();
        node.campaign().expect("campaign");
        drain(&mut node, &mut sink);
        assert_eq!(sink.leader, 1);
        assert_eq!(node.role(), Role::Leader);
        node.propose(b"a".to_vec()).expect("propose");
        node.propose(b"b".to_vec()).expect("propose");
        drain(&mut node, &mut sink);
        let data: Vec<&[u8]> = sink.applied.iter().map(|e| e.data.as_ref()).collect();
        assert_eq!(data, vec![&b""[..], b"a", b"b"], "leader's empty entry, then proposals");
    }

    /// Hands every message either member sent to the other until both are quiet.
    fn exchange(a: &mut RaftNode, sa: &mut Recorder, b: &mut RaftNode, sb: &mut Recorder) {
        loop {
            drain(a, sa);
            drain(b, sb);
            if sa.outbox.is_empty() && sb.outbox.is_empty() {
                return;
            }
            for m in std::mem::take(&mut sa.outbox) {
                b.step(m).expect("step");
            }
            for m in std::mem::take(&mut sb.outbox) {
                a.step(m).expect("step");
            }
        }
    }

    #[test]
    fn with_a_log_writer_nothing_counts_before_it_reports_the_write() {
        let (cfg_a, cfg_b) = (NodeConfig { id: 1, ..single(0) }, NodeConfig { id: 2, ..single(0) });
        let mut a = RaftNode::bootstrap(&cfg_a, &[1, 2]).expect("bootstrap");
        let mut b = RaftNode::bootstrap(&cfg_b, &[1, 2]).expect("bootstrap");
        let mut sa = Recorder { asynchronous: true, ..Default::default() };
        let mut sb = Recorder::default();
        a.campaign().expect("campaign");
        exchange(&mut a, &mut sa, &mut b, &mut sb);
        // A candidate writes its vote in its own turn; the leader hands its
        // first entry to the writer.
        assert_eq!(a.role(), Role::Leader);
        assert!(sa.persisted.is_empty() && sa.queued.len() == 1 && a.write_in_flight());
        // The follower has the leader's empty entry and acknowledged it, but a
        // quorum of two needs the leader's own write.
        assert_eq!(sb.persisted.len(), 1);
        assert!(sa.applied.is_empty() && a.commit_index() == 0, "committed before written");
        a.on_persisted(sa.write_queued().expect("the leader's entry"));
        exchange(&mut a, &mut sa, &mut b, &mut sb);
        assert_eq!(sa.applied.len(), 1);

        a.propose(b"x".to_vec()).expect("propose");
        exchange(&mut a, &mut sa, &mut b, &mut sb);
        a.propose(b"y".to_vec()).expect("propose");
        exchange(&mut a, &mut sa, &mut b, &mut sb);
        assert_eq!(sa.queued.len(), 2, "a second write queued while the first is in flight");
        assert_eq!(sa.applied.len(), 1, "nothing commits before the writer reports");
        // The writer reports the first write only: x commits, y waits.
        let first = sa.queued.remove(0);
        sa.persisted.extend(first.entries);
        a.on_persisted(first.number);
        exchange(&mut a, &mut sa, &mut b, &mut sb);
        let data: Vec<&[u8]> = sa.applied.iter().map(|e| e.data.as_ref()).collect();
        assert_eq!(data, vec![&b""[..], b"x"]);
        a.on_persisted(sa.write_queued().expect("y's write"));
        exchange(&mut a, &mut sa, &mut b, &mut sb);
        let data: Vec<&[u8]> = sa.applied.iter().map(|e| e.data.as_ref()).collect();
        assert_eq!(data, vec![&b""[..], b"x", b"y"]);
        assert!(!a.write_in_flight());
    }

    #[test]
    fn the_only_voter_writes_in_its_own_turn_even_with_a_log_writer() {
        let mut node = RaftNode::bootstrap(&single(0), &[1]).expect("bootstrap");
        let mut sink = Recorder { asynchronous: true, ..Default::default() };
        node.campaign().expect("campaign");
        drain(&mut node, &mut sink);
        node.propose(b"a".to_vec()).expect("propose");
        drain(&mut node, &mut sink);
        assert!(sink.queued.is_empty() && !node.write_in_flight());
        let data: Vec<&[u8]> = sink.applied.iter().map(|e| e.data.as_ref()).collect();
        assert_eq!(data, vec![&b""[..], b"a"]);
    }

    #[test]
    fn read_index_is_answered_once_the_leader_committed_in_its_term() {
        let mut node = RaftNode::bootstrap(&single(0), &[1]).expect("bootstrap");
        let mut sink = Recorder::default();
        node.campaign().expect("campaign");
        drain(&mut node, &mut sink);
        node.read_index(b"ctx".to_vec());
        drain(&mut node, &mut sink);
        assert_eq!(sink.reads.len(), 1);
        assert_eq!(sink.reads[0].request_ctx, b"ctx");
        assert_eq!(sink.reads[0].index, node.commit_index());
    }

    #[test]
    fn restored_member_does_not_reapply_what_was_applied() {
        let mut node = RaftNode::bootstrap(&single(0), &[1]).expect("bootstrap");
        let mut sink = Recorder::default();
        node.campaign().expect("campaign");
        drain(&mut node, &mut sink);
        for i in 0..5u8 {
            node.propose(vec![i]).expect("propose");
        }
        drain(&mut node, &mut sink);
        let hard_state = HardState {
            term: node.term(),
            vote: 1,
            commit: node.commit_index(),
            ..Default::default()
        };
        let state = RestoreState {
            conf_state: node.conf_state(),
            hard_state,
            entries: sink.persisted.clone(),
            ..Default::default()
        };
        let applied = 4;
        let mut restored = RaftNode::restore(&single(applied), state).expect("restore");
        let mut after = Recorder { persisted: sink.persisted.clone(), ..Default::default() };
        restored.campaign().expect("campaign");
        drain(&mut restored, &mut after);
        let first = after.applied.first().expect("entries after the applied index");
        assert_eq!(first.index, applied + 1);
    }
}
