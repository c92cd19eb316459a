//! Checkers over a finished run: linearizability of the clients' history (per
//! key, Wing & Gong's search with memoized states, as porcupine does), and
//! Raft's safety properties over what members applied and who led.

use std::collections::{BTreeMap, HashSet};

/// What a client asked, on one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// Put this value.
    Put(Vec<u8>),
    /// Delete the key.
    Delete,
    /// Read the key (linearizably).
    Get,
    /// A transaction: if the value is `expect` (`None`: the key is absent), put `new`.
    Cas {
        /// The value compared against.
        expect: Option<Vec<u8>>,
        /// The value put when it matches.
        new: Vec<u8>,
    },
}

/// What the client got back.
#[derive(Debug, Clone, PartialEq)]
pub enum Ret {
    /// A put or delete was applied.
    Done,
    /// A read returned this value (`None`: no such key).
    Value(Option<Vec<u8>>),
    /// A transaction's compare succeeded or not.
    Cas(bool),
}

/// One client operation on one key, as the client saw it.
#[derive(Debug, Clone)]
pub struct Op {
    /// Its number in the run.
    pub id: u64,
    /// The client that issued it.
    pub client: u64,
    /// The key.
    pub key: Vec<u8>,
    /// What was asked.
    pub call: Call,
    /// What came back; `None` for a write whose outcome is unknown (it may take
    /// effect at any point after `invoked`, or never).
    pub ret: Option<Ret>,
    /// When it was issued.
    pub invoked: u64,
    /// When it completed (`None` with `ret`).
    pub completed: Option<u64>,
}

/// The register's next value if `op` can take effect when it holds `value`.
fn step(value: &Option<Vec<u8>>, op: &Op) -> Option<Option<Vec<u8>>> {
    match (&op.call, &op.ret) {
        (Call::Put(v), _) => Some(Some(v.clone())),
        (Call::Delete, _) => Some(None),
        (Call::Get, Some(Ret::Value(read))) => (read == value).then(|| value.clone()),
        (Call::Cas { expect, new }, Some(Ret::Cas(true))) => {
            (expect == value).then(|| Some(new.clone()))
        }
        (Call::Cas { expect, .. }, Some(Ret::Cas(false))) => {
            (expect != value).then(|| value.clone())
        }
        // Unknown outcome: if it took effect, it did what it does.
        (Call::Cas { expect, new }, None) => {
            Some(if expect == value { Some(new.clone()) } else { value.clone() })
        }
        _ => None,
    }
}

/// Checks that the history of one key is linearizable for a register that
/// starts absent. Returns `Err` with a description when no order exists.
fn check_key(ops: &[&Op]) -> Result<(), String> {
    const MAX_STATES: usize = 2_000_000;
    let n = ops.len();
    let words = n.div_ceil(64);
    // Depth-first over prefixes of a linearization: (done set, value).
    let mut seen: HashSet<(Vec<u64>, Option<Vec<u8>>)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, Option<Vec<u8>>)> = vec![(vec![0; words], None)];
    let is_done = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    // The longest linearized prefix found, to say where the search got stuck.
    let mut best: (usize, Vec<u64>, Option<Vec<u8>>) = (0, vec![0; words], None);
    while let Some((done, value)) = stack.pop() {
        let count = done.iter().map(|w| w.count_ones() as usize).sum::<usize>();
        if count > best.0 {
            best = (count, done.clone(), value.clone());
        }
        // Every completed operation linearized: the rest are unknown writes,
        // which may never have happened.
        let open_completed = (0..n).any(|i| !is_done(&done, i) && ops[i].completed.is_some());
        if !open_completed {
            return Ok(());
        }
        if !seen.insert((done.clone(), value.clone())) {
            continue;
        }
        if seen.len() > MAX_STATES {
            return Err(format!("search gave up after {MAX_STATES} states (undecided)"));
        }
        // The earliest completion among the remaining: nothing invoked after it
        // can go before it.
        let horizon = (0..n)
            .filter(|&i| !is_done(&done, i))
            .filter_map(|i| ops[i].completed)
            .min()
            .expect("some completed operation remains");
        for i in (0..n).filter(|&i| !is_done(&done, i)) {
            let op = ops[i];
            if op.invoked > horizon {
                continue;
            }
            let Some(next) = step(&value, op) else { continue };
            let mut set = done.clone();
            set[i / 64] |= 1 << (i % 64);
            stack.push((set, next));
        }
    }
    let (count, done, value) = best;
    let stuck = (0..n)
        .filter(|&i| !is_done(&done, i) && ops[i].completed.is_some())
        .min_by_key(|&i| ops[i].completed)
        .map_or(0, |i| ops[i].id);
    Err(format!(
        "no linearization exists: the longest order found places {count} of {n} operations, \
         with the value then {:?}, and cannot place #{stuck}",
        value.as_deref().map(String::from_utf8_lossy)
    ))
}

/// The operation a failure message names as stuck.
fn stuck_op(why: &str) -> Option<u64> {
    why.rsplit('#').next()?.trim().parse().ok()
}

/// Checks every key's history; on failure names the key and shows its history.
pub fn linearizable(history: &[Op]) -> Result<(), String> {
    let mut by_key: BTreeMap<&[u8], Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        if let Err(why) = check_key(&ops) {
            let mut text = format!(
                "linearizability: key {:?}: {why}; its history (invoked..completed, client, op):\n",
                String::from_utf8_lossy(key)
            );
            // The history around the operation that could not be placed.
            let at = stuck_op(&why)
                .and_then(|id| ops.iter().position(|op| op.id == id))
                .unwrap_or(ops.len());
            for op in &ops[at.saturating_sub(25)..(at + 10).min(ops.len())] {
                let completed = op.completed.map_or("?".to_string(), |c| c.to_string());
                let show = |v: &Option<Vec<u8>>| {
                    v.as_deref()
                        .map_or("(none)".into(), |v| String::from_utf8_lossy(v).into_owned())
                };
                let what = match (&op.call, &op.ret) {
                    (Call::Put(v), _) => format!("put {}", show(&Some(v.clone()))),
                    (Call::Delete, _) => "delete".to_string(),
                    (Call::Get, Some(Ret::Value(v))) => format!("get -> {}", show(v)),
                    (Call::Get, _) => "get -> ?".to_string(),
                    (Call::Cas { expect, new }, ret) => format!(
                        "if {} then put {} -> {}",
                        show(expect),
                        show(&Some(new.clone())),
                        match ret {
                            Some(Ret::Cas(true)) => "succeeded",
                            Some(Ret::Cas(false)) => "failed",
                            _ => "?",
                        }
                    ),
                };
                text.push_str(&format!(
                    "  {:>6}..{:>6}  client {}  #{} {what}\n",
                    op.invoked, completed, op.client, op.id
                ));
            }
            return Err(text);
        }
    }
    Ok(())
}

/// Raft's safety over the run: at most one leader per term, every member
/// applied the same entry at every index, in index order without gaps, with
/// the same effect (the same store revision after it).
#[derive(Debug, Default)]
pub struct RaftSafety {
    leaders: BTreeMap<u64, u64>,
    revisions: BTreeMap<u64, (u64, i64)>,
    applied: BTreeMap<u64, (u64, Vec<u8>)>,
    last_applied: BTreeMap<u64, u64>,
}

impl RaftSafety {
    /// A member leads in `term`.
    pub fn leader(&mut self, term: u64, member: u64) -> Result<(), String> {
        match self.leaders.insert(term, member) {
            Some(other) if other != member => {
                Err(format!("raft safety: two leaders in term {term}: {other} and {member}"))
            }
            _ => Ok(()),
        }
    }

    /// A member applied an entry.
    pub fn applied(
        &mut self,
        member: u64,
        index: u64,
        term: u64,
        data: &[u8],
    ) -> Result<(), String> {
        let last = self.last_applied.entry(member).or_insert(0);
        if *last != 0 && index != *last + 1 {
            return Err(format!(
                "raft safety: member {member} applied index {index} after {last} (a gap)"
            ));
        }
        *last = index;
        match self.applied.get(&index) {
            Some((t, d)) if (*t, d.as_slice()) != (term, data) => Err(format!(
                "raft safety: index {index} applied as term {t} on one member and term {term} \
                 on member {member} (committed entries changed)"
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(index, (term, data.to_vec()));
                Ok(())
            }
        }
    }

    /// After applying up to `index`, a member's store is at `revision`.
    pub fn revision(&mut self, member: u64, index: u64, revision: i64) -> Result<(), String> {
        match self.revisions.get(&index) {
            Some((other, r)) if *r != revision => Err(format!(
                "state machine safety: after index {index} member {other} is at revision {r} \
                 and member {member} at {revision} (an entry applied differently)"
            )),
            Some(_) => Ok(()),
            None => {
                self.revisions.insert(index, (member, revision));
                Ok(())
            }
        }
    }

    /// A member restarted: it re-applies from its durable backend, which may
    /// be behind what it applied before.
    pub fn restarted(&mut self, member: u64) {
        self.last_applied.remove(&member);
    }

    /// A member installed the leader's snapshot at `index`: its next entry
    /// follows it.
    pub fn installed(&mut self, member: u64, index: u64) {
        self.last_applied.insert(member, index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, write: Option<&str>, read: Option<Option<&str>>, t: (u64, Option<u64>)) -> Op {
        let (call, ret) = match (write, read) {
            (Some(v), _) => (Call::Put(v.as_bytes().to_vec()), t.1.map(|_| Ret::Done)),
            (None, Some(r)) => (Call::Get, Some(Ret::Value(r.map(|v| v.as_bytes().to_vec())))),
            (None, None) => (Call::Delete, t.1.map(|_| Ret::Done)),
        };
        Op { id, client: id, key: b"k".to_vec(), call, ret, invoked: t.0, completed: t.1 }
    }

    fn cas(
        id: u64,
        expect: Option<&str>,
        new: &str,
        ret: Option<bool>,
        t: (u64, Option<u64>),
    ) -> Op {
        let call = Call::Cas {
            expect: expect.map(|v| v.as_bytes().to_vec()),
            new: new.as_bytes().to_vec(),
        };
        Op {
            id,
            client: id,
            key: b"k".to_vec(),
            call,
            ret: ret.map(Ret::Cas),
            invoked: t.0,
            completed: t.1,
        }
    }

    #[test]
    fn compare_and_swap_follows_the_value() {
        let ok = [
            op(1, Some("a"), None, (0, Some(1))),
            cas(2, Some("a"), "b", Some(true), (2, Some(3))),
            cas(3, Some("a"), "c", Some(false), (4, Some(5))),
            op(4, None, Some(Some("b")), (6, Some(7))),
        ];
        assert!(linearizable(&ok).is_ok());
        let wrong = [
            op(1, Some("a"), None, (0, Some(1))),
            cas(2, Some("x"), "b", Some(true), (2, Some(3))),
        ];
        assert!(linearizable(&wrong).is_err(), "a compare that cannot have matched succeeded");
        let deleted = [
            op(1, Some("a"), None, (0, Some(1))),
            op(2, None, None, (2, Some(3))),
            cas(3, None, "n", Some(true), (4, Some(5))),
        ];
        assert!(linearizable(&deleted).is_ok(), "a deleted key compares as absent");
    }

    #[test]
    fn a_read_of_the_latest_write_is_linearizable() {
        let h = [op(1, Some("a"), None, (0, Some(5))), op(2, None, Some(Some("a")), (6, Some(7)))];
        assert!(linearizable(&h).is_ok());
    }

    #[test]
    fn a_stale_read_is_not() {
        let h = [
            op(1, Some("a"), None, (0, Some(5))),
            op(2, Some("b"), None, (6, Some(8))),
            op(3, None, Some(Some("a")), (9, Some(10))),
        ];
        assert!(linearizable(&h).is_err());
    }

    #[test]
    fn concurrent_operations_may_go_either_way() {
        let h = [op(1, Some("a"), None, (0, Some(10))), op(2, None, Some(None), (1, Some(2)))];
        assert!(linearizable(&h).is_ok());
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not() {
        let seen =
            [op(1, Some("a"), None, (0, None)), op(2, None, Some(Some("a")), (50, Some(51)))];
        assert!(linearizable(&seen).is_ok());
        let unseen = [op(1, Some("a"), None, (0, None)), op(2, None, Some(None), (50, Some(51)))];
        assert!(linearizable(&unseen).is_ok());
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let h = [op(1, Some("a"), None, (0, Some(1))), op(2, None, Some(None), (5, Some(6)))];
        assert!(linearizable(&h).is_err());
    }

    #[test]
    fn two_leaders_in_a_term_are_caught() {
        let mut safety = RaftSafety::default();
        assert!(safety.leader(3, 1).is_ok());
        assert!(safety.leader(3, 1).is_ok());
        assert!(safety.leader(3, 2).is_err());
    }

    #[test]
    fn a_changed_entry_is_caught() {
        let mut safety = RaftSafety::default();
        assert!(safety.applied(1, 1, 1, b"x").is_ok());
        assert!(safety.applied(2, 1, 2, b"y").is_err());
    }
}
