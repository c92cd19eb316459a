//! The registry of proposals waiting for their entry to be applied on this
//! member, by request ID. What a waiter is (a channel, a simulated client's
//! operation) is the caller's; the registry decides who is woken, and with what:
//! an applied entry wakes its proposer with the result, a lost leader fails
//! every proposal still waiting ([`crate::raft_core::Effect::FailPendingProposals`]),
//! a refused proposal fails its own ([`crate::raft_core::Effect::ProposalFailed`]).

use std::collections::BTreeMap;

use crate::{Applied, ServerError};

/// Waiters by request ID.
#[derive(Debug)]
pub struct Waiters<W> {
    waiting: BTreeMap<u64, W>,
}

impl<W> Default for Waiters<W> {
    fn default() -> Self {
        Waiters { waiting: BTreeMap::new() }
    }
}

impl<W> Waiters<W> {
    /// Registers the waiter of request `id` (IDs are unique per member run).
    pub fn register(&mut self, id: u64, waiter: W) {
        let previous = self.waiting.insert(id, waiter);
        assert!(previous.is_none(), "invariant: request IDs are unique ({id:x})");
    }

    /// Forgets the waiter of `id` (its caller gave up).
    pub fn forget(&mut self, id: u64) -> Option<W> {
        self.waiting.remove(&id)
    }

    /// The waiter an applied entry wakes, with its result (none when another
    /// member proposed it, or its caller gave up).
    pub fn applied(&mut self, applied: Applied) -> Option<(W, Applied)> {
        self.waiting.remove(&applied.id).map(|waiter| (waiter, applied))
    }

    /// Every waiter, with the failure each gets (this member lost its leader).
    pub fn fail_all(&mut self, error: &ServerError) -> Vec<(W, Applied)> {
        std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|(id, waiter)| (waiter, Applied { id, result: Err(error.clone()), revision: 0 }))
            .collect()
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applied_entry_wakes_its_proposer_and_a_lost_leader_fails_the_rest() {
        let mut waiters = Waiters::default();
        waiters.register(1, "one");
        waiters.register(2, "two");
        let done = Applied { id: 1, result: Err(ServerError::NoLeader), revision: 7 };
        assert_eq!(waiters.applied(done).map(|(w, a)| (w, a.revision)), Some(("one", 7)));
        let other = Applied { id: 99, result: Err(ServerError::NoLeader), revision: 8 };
        assert!(waiters.applied(other).is_none(), "another member's proposal");
        let failed = waiters.fail_all(&ServerError::LeaderChanged);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "two");
        assert!(matches!(failed[0].1.result, Err(ServerError::LeaderChanged)));
        assert!(waiters.is_empty());
    }
}
