//! The ReadIndex queue of the Raft half: linearizable readers batched under
//! one context, sent when due, retried while unanswered (sooner right after a
//! leader change), answered or failed together.

use etcd_raftnode::{RaftNode, ReadState};

use crate::raft_core::Effect;

/// An unanswered ReadIndex is re-sent after this long (raft-rs silently drops one
/// sent before the leader committed an entry of its term).
const READ_INDEX_RETRY_MS: u64 = 500;
/// Right after a leader change the retry is this much shorter: a new leader drops
/// every ReadIndex until it has committed an entry of its term, which takes
/// about one round trip.
const READ_INDEX_RETRY_AFTER_LEADER_CHANGE_MS: u64 = 50;
/// How long after a leader change the short retry applies.
const LEADER_CHANGE_WINDOW_MS: u64 = 2_000;
/// ReadIndex requests: those waiting to be sent, and the batch in flight with
/// its context and when it was (re)sent.
pub(crate) struct ReadQueue {
    /// This member: contexts must be unique across members, because the leader
    /// ignores a ReadIndex whose context equals one it already has pending.
    pub(crate) member_id: u64,
    pub(crate) next_ctx: u64,
    pub(crate) waiting: Vec<u64>,
    pub(crate) in_flight: Option<([u8; 16], Vec<u64>, u64)>,
    /// Until when retries are short (a leader change happened just before).
    pub(crate) short_retries_until: Option<u64>,
}

impl ReadQueue {
    pub(crate) fn send_if_due(&mut self, node: &mut RaftNode, now: u64) {
        let retry = match self.short_retries_until {
            Some(until) if now < until => READ_INDEX_RETRY_AFTER_LEADER_CHANGE_MS,
            _ => READ_INDEX_RETRY_MS,
        };
        let due = match &self.in_flight {
            None => !self.waiting.is_empty(),
            Some((_, _, sent)) => now.saturating_sub(*sent) >= retry,
        };
        if !due {
            return;
        }
        self.next_ctx = self.next_ctx.wrapping_add(1);
        let mut ctx = [0u8; 16];
        ctx[..8].copy_from_slice(&self.member_id.to_be_bytes());
        ctx[8..].copy_from_slice(&self.next_ctx.to_be_bytes());
        let mut batch = self.in_flight.take().map(|(_, b, _)| b).unwrap_or_default();
        batch.append(&mut self.waiting);
        node.read_index(ctx.to_vec());
        self.in_flight = Some((ctx, batch, now));
    }

    /// Every reader, waiting or in flight (this member lost its leader: nobody
    /// can confirm a read index, and the client may find a leader elsewhere).
    pub(crate) fn take_all(&mut self) -> Vec<u64> {
        let mut readers = std::mem::take(&mut self.waiting);
        readers.extend(self.in_flight.take().map(|(_, batch, _)| batch).unwrap_or_default());
        readers
    }

    /// Makes the batch in flight due now (a new leader knows nothing of it), and
    /// retries soon for a while (the new leader may drop it until it commits).
    pub(crate) fn resend_now(&mut self, now: u64) {
        self.short_retries_until = Some(now + LEADER_CHANGE_WINDOW_MS);
        if let Some((_, _, sent)) = &mut self.in_flight {
            *sent = now.saturating_sub(READ_INDEX_RETRY_MS);
        }
    }

    pub(crate) fn answer(&mut self, states: Vec<ReadState>, effects: &mut Vec<Effect>) {
        for state in states {
            let matches = self
                .in_flight
                .as_ref()
                .is_some_and(|(ctx, _, _)| state.request_ctx == ctx.as_slice());
            if matches {
                let (_, readers, _) = self.in_flight.take().expect("checked above");
                effects.push(Effect::ReadsReady { readers, index: state.index });
            }
        }
    }
}
