//! Automatic compaction's schedule (`--auto-compaction-mode`,
//! `--auto-compaction-retention`), a leader-only duty: only the leader proposes
//! compactions, through Raft, so every member compacts at the same revision;
//! when leadership moves, the new leader's compactor takes over.
//!
//! Deterministic: time is a millisecond argument. The driver calls
//! [`Compactor::tick`] at [`Compactor::next_check`] with the store's revision
//! and whether this member leads; a revision back means "propose a compaction
//! to it now", and the driver reports the outcome with [`Compactor::finished`]
//! (no other compaction is asked for meanwhile).
//!
//! Periodic mode follows etcd's schedule: the store revision is sampled every
//! tenth of the retention (of at most an hour); once a retention period has
//! passed since the last compaction, the store is compacted at the revision
//! sampled one retention ago, then again every retention (at most an hour).
//! Revision mode keeps the newest `retention` revisions and checks every five
//! minutes.

use std::collections::VecDeque;

/// etcd's fixed interval between revision-mode checks.
pub const REVISION_CHECK_MS: u64 = 300_000;
const HOUR_MS: u64 = 3_600_000;

/// How history is compacted automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionMode {
    /// Keep history for this many milliseconds.
    Periodic {
        /// The retention.
        retention_ms: u64,
    },
    /// Keep this many revisions, checking every `check_ms`.
    Revision {
        /// Revisions kept.
        retain: i64,
        /// Between checks ([`REVISION_CHECK_MS`] in the server).
        check_ms: u64,
    },
}

/// One member's automatic compaction schedule.
#[derive(Debug)]
pub struct Compactor {
    mode: CompactionMode,
    /// When to look next.
    next_check: u64,
    /// Whether the first look (which only samples) happened.
    started: bool,
    /// A compaction was asked for and its outcome is not known yet.
    in_flight: Option<i64>,
    // Periodic mode.
    samples: VecDeque<i64>,
    last_success: u64,
    wait_ms: u64,
    // Revision mode: the last revision compacted to.
    last_revision: i64,
}

impl Compactor {
    /// A schedule starting at `now`.
    pub fn new(mode: CompactionMode, now: u64) -> Compactor {
        let wait_ms = match mode {
            CompactionMode::Periodic { retention_ms } => retention_ms,
            CompactionMode::Revision { .. } => 0,
        };
        Compactor {
            mode,
            next_check: now,
            started: false,
            in_flight: None,
            samples: VecDeque::new(),
            last_success: now,
            wait_ms,
            last_revision: 0,
        }
    }

    /// Periodic mode's sampling interval: a tenth of the retention (of at
    /// most an hour), at least a millisecond.
    fn sample_ms(retention_ms: u64) -> u64 {
        (retention_ms.min(HOUR_MS) / 10).max(1)
    }

    /// When [`Compactor::tick`] wants to be called next.
    pub fn next_check(&self) -> u64 {
        self.next_check
    }

    /// At `now`, with the store at `revision`: the revision to compact to, when
    /// it is time and this member leads.
    pub fn tick(&mut self, now: u64, revision: i64, leading: bool) -> Option<i64> {
        if now < self.next_check || self.in_flight.is_some() {
            return None;
        }
        let first = !self.started;
        self.started = true;
        let due = match self.mode {
            CompactionMode::Periodic { retention_ms } => {
                let every = Self::sample_ms(retention_ms);
                self.next_check = now + every;
                let due = (!first && leading && now - self.last_success >= self.wait_ms)
                    .then(|| {
                        self.wait_ms = retention_ms.min(HOUR_MS);
                        self.samples.front().copied()
                    })
                    .flatten();
                // Keep one retention's worth of samples (plus the current one).
                let keep = (retention_ms / every) as usize + 1;
                self.samples.push_back(revision);
                while self.samples.len() > keep {
                    self.samples.pop_front();
                }
                due
            }
            CompactionMode::Revision { retain, check_ms } => {
                self.next_check = now + check_ms;
                let target = revision - retain;
                (!first && leading && target > 0 && target != self.last_revision).then_some(target)
            }
        };
        let due = due.filter(|&r| r > 0);
        self.in_flight = due;
        due
    }

    /// The compaction to `revision` asked for by [`Compactor::tick`] succeeded
    /// (`ok`; a revision already compacted counts) or failed, at `now`.
    pub fn finished(&mut self, revision: i64, ok: bool, now: u64) {
        assert_eq!(self.in_flight, Some(revision), "invariant: finishing the compaction asked for");
        self.in_flight = None;
        if ok {
            self.last_success = now;
            self.last_revision = revision;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `compactor` from 0 to `until` (inclusive), the store at
    /// `revision(now)`, every compaction succeeding at once; the compactions.
    fn drive(
        compactor: &mut Compactor,
        until: u64,
        leading: impl Fn(u64) -> bool,
        revision: impl Fn(u64) -> i64,
    ) -> Vec<(u64, i64)> {
        let mut done = Vec::new();
        let mut now = compactor.next_check();
        while now <= until {
            if let Some(r) = compactor.tick(now, revision(now), leading(now)) {
                compactor.finished(r, true, now);
                done.push((now, r));
            }
            now = compactor.next_check();
        }
        done
    }

    #[test]
    fn periodic_compacts_at_the_revision_one_retention_ago() {
        // A revision a millisecond; retention 10 s: samples every second.
        let mut c = Compactor::new(CompactionMode::Periodic { retention_ms: 10_000 }, 0);
        let done = drive(&mut c, 35_000, |_| true, |now| now as i64 + 1);
        // First once a retention has passed, to the first sample; then every
        // retention, to the oldest sample of the window (eleven samples back).
        assert_eq!(done, vec![(10_000, 1), (20_000, 9_001), (30_000, 19_001)]);
    }

    #[test]
    fn periodic_waits_for_leadership_and_retries_after_failure() {
        let mut c = Compactor::new(CompactionMode::Periodic { retention_ms: 1_000 }, 0);
        let done = drive(&mut c, 3_000, |now| now >= 2_500, |now| now as i64);
        assert_eq!(done.first().map(|d| d.0), Some(2_500));
        // The compacted revision is the window's oldest sample.
        assert_eq!(done[0].1, 1_400);

        let mut c = Compactor::new(CompactionMode::Periodic { retention_ms: 1_000 }, 0);
        let mut now = 0;
        let mut failed_at = None;
        while failed_at.is_none() {
            if let Some(r) = c.tick(now, now as i64 + 1, true) {
                c.finished(r, false, now);
                failed_at = Some(now);
            }
            now = c.next_check();
        }
        // After a failure it tries again at the next sample, not a retention later.
        let retry = c.next_check();
        assert_eq!(retry - failed_at.unwrap(), 100);
        assert!(c.tick(retry, retry as i64, true).is_some());
    }

    #[test]
    fn revision_mode_keeps_the_newest_revisions() {
        let mode = CompactionMode::Revision { retain: 100, check_ms: 1_000 };
        let mut c = Compactor::new(mode, 0);
        // The store moves 50 revisions a second.
        let done = drive(&mut c, 5_000, |_| true, |now| (now / 20) as i64);
        assert_eq!(done, vec![(3_000, 50), (4_000, 100), (5_000, 150)]);
        // An idle store is not compacted to the same revision twice.
        let mut c = Compactor::new(mode, 0);
        let done = drive(&mut c, 5_000, |_| true, |_| 500);
        assert_eq!(done, vec![(1_000, 400)]);
        // A follower never compacts.
        let mut c = Compactor::new(mode, 0);
        assert!(drive(&mut c, 5_000, |_| false, |_| 500).is_empty());
    }

    #[test]
    fn nothing_is_asked_while_a_compaction_is_in_flight() {
        let mode = CompactionMode::Revision { retain: 1, check_ms: 10 };
        let mut c = Compactor::new(mode, 0);
        assert_eq!(c.tick(0, 5, true), None);
        assert_eq!(c.tick(10, 5, true), Some(4));
        assert_eq!(c.tick(20, 6, true), None);
        c.finished(4, true, 25);
        assert_eq!(c.tick(25, 6, true), Some(5));
    }
}
