//! The history of one key: a list of generations.
//!
//! A generation is one life of the key: it begins with the put that creates
//! the key and ends with the tombstone that deletes it (the tombstone is the
//! generation's last revision). The last generation is the current one; it
//! is empty when the key is currently deleted. `ver` is the key's version at
//! the generation's newest revision (the number of puts in it, tombstone
//! included, which matters only for counting back). After compaction the
//! oldest revisions of a generation are gone but `ver` and `created` stay,
//! so versions of the remaining revisions are still computed correctly.

use std::collections::HashSet;

use smallvec::SmallVec;

use crate::revision::Revision;

/// A generation's revisions: most keys have one live revision (history is
/// compacted), held inline with no allocation of its own.
pub type Revisions = SmallVec<[Revision; 1]>;

/// One life of a key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    /// Version at the newest revision of this generation.
    pub ver: i64,
    /// Revision of the put that created the key in this generation.
    pub created: Revision,
    /// Revisions in increasing order; for a finished generation the last is the tombstone.
    pub revs: Revisions,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }
}

/// What [`KeyIndex::get`] finds: the revision visible at the asked revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRev {
    /// Revision of the visible change (the KeyValue's `mod_revision`, with sub).
    pub modified: Revision,
    /// Revision that created the key's current generation.
    pub created: Revision,
    /// Version of the key at `modified`.
    pub version: i64,
}

/// The history of one key (the key bytes themselves are the map key in
/// [`crate::index::Index`]). A million keys means a million of these, so the
/// common one (one generation, one revision) is held inline, with no
/// allocation beyond the index's own node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIndex {
    generations: SmallVec<[Generation; 1]>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex::new()
    }
}

impl KeyIndex {
    /// A key with no history.
    pub fn new() -> Self {
        KeyIndex { generations: smallvec::smallvec![Generation::default()] }
    }

    /// The generations, oldest first (for tests and diagnostics).
    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// Newest revision recorded for this key.
    pub fn modified(&self) -> Revision {
        self.generations.iter().rev().find_map(|g| g.revs.last().copied()).unwrap_or_default()
    }

    /// Records a put at `rev`, which must be newer than every recorded revision.
    pub fn put(&mut self, rev: Revision) {
        debug_assert!(rev > self.modified(), "put {rev:?} not after {:?}", self.modified());
        let g = self.generations.last_mut().expect("a key index always has a generation");
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
    }

    /// Rebuilds a key from its newest stored put (used on open): the current
    /// generation was created at `created`, and `ver` is the version at `modified`.
    pub fn restore(created: Revision, modified: Revision, ver: i64) -> Self {
        let revs = smallvec::smallvec![modified];
        KeyIndex { generations: smallvec::smallvec![Generation { ver, created, revs }] }
    }

    /// Records the deletion of the key at `rev`, ending the current
    /// generation. Returns false (and changes nothing) if the key is not live.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if self.generations.last().is_none_or(Generation::is_empty) {
            return false;
        }
        self.put(rev);
        self.generations.push(Generation::default());
        true
    }

    /// The change of this key visible at main revision `at`, if the key
    /// exists at `at` (a tombstone at or before `at` hides it).
    pub fn get(&self, at: i64) -> Option<KeyRev> {
        let g = self.find_generation(at)?;
        let n = g.revs.iter().rposition(|r| r.main <= at)?;
        Some(KeyRev {
            modified: g.revs[n],
            created: g.created,
            version: g.ver - (g.revs.len() - n - 1) as i64,
        })
    }

    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(tail)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            if i != last && tail.main <= at {
                // the generation was closed by a tombstone at or before `at`
                return None;
            }
            if first.main <= at {
                return Some(g);
            }
        }
        None
    }

    /// Every revision of this key with `main >= since`, oldest first; when a
    /// main revision has several subs only the last is kept (what a watcher
    /// starting at `since` must be sent for this key).
    pub fn since(&self, since: i64) -> Vec<Revision> {
        let mut out: Vec<Revision> = Vec::new();
        for g in &self.generations {
            for r in &g.revs {
                if r.main < since {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if last.main == r.main => *last = *r,
                    _ => out.push(*r),
                }
            }
        }
        out
    }

    /// Where compaction at `at` cuts: the index of the first generation that
    /// survives and, within it, the index of the newest revision `<= at`
    /// (which survives), if any. Generations closed by a tombstone at or
    /// before `at` are dropped whole; the current generation always survives.
    fn compaction_point(&self, at: i64) -> (usize, Option<usize>) {
        let last = self.generations.len() - 1;
        let mut gi = 0;
        while gi < last {
            let tomb = self.generations[gi].revs.last().map_or(i64::MIN, |r| r.main);
            if tomb > at {
                break;
            }
            gi += 1;
        }
        let ri = self.generations[gi].revs.iter().rposition(|r| r.main <= at);
        (gi, ri)
    }

    /// Adds to `keep` the revision of this key that a compaction at `at`
    /// would keep (the newest revision `<= at` of a surviving generation),
    /// without changing anything.
    pub fn keep(&self, at: i64, keep: &mut HashSet<Revision>) {
        let (gi, ri) = self.compaction_point(at);
        if let Some(ri) = ri {
            keep.insert(self.generations[gi].revs[ri]);
        }
    }

    /// Compacts at `at`: drops every revision older than the newest one `<= at`
    /// of each surviving generation, and every generation closed by a
    /// tombstone `<= at`. The kept revision (if any) is added to `keep`.
    pub fn compact(&mut self, at: i64, keep: &mut HashSet<Revision>) {
        let (gi, ri) = self.compaction_point(at);
        if let Some(ri) = ri {
            let g = &mut self.generations[gi];
            keep.insert(g.revs[ri]);
            g.revs.drain(..ri);
            // Back inline once history is compacted to one revision.
            g.revs.shrink_to_fit();
        }
        self.generations.drain(..gi);
        self.generations.shrink_to_fit();
    }

    /// True when no revision is left (only an empty current generation):
    /// the key can leave the index.
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// Forgets every revision with `main > after` (undo of an uncommitted
    /// batch). Returns true if the key has no revision left.
    pub fn rollback(&mut self, after: i64) -> bool {
        loop {
            let n = self.generations.len();
            let g = &mut self.generations[n - 1];
            match g.revs.last() {
                Some(r) if r.main > after => {
                    g.revs.pop();
                    g.ver -= 1;
                    if g.revs.is_empty() {
                        *g = Generation::default();
                    }
                }
                Some(_) => break,
                None => {
                    // an empty current generation opened by a tombstone newer than `after`
                    let reopen = n > 1
                        && self.generations[n - 2].revs.last().is_some_and(|r| r.main > after);
                    if !reopen {
                        break;
                    }
                    self.generations.pop();
                }
            }
        }
        self.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64, sub: i64) -> Revision {
        Revision::new(main, sub)
    }

    /// etcd's worked example: put 2, put 4, del 6, put 8, put 10, del 12,
    /// put 14.0, put 14.1, del 16.
    fn example() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(2, 0));
        ki.put(r(4, 0));
        assert!(ki.tombstone(r(6, 0)));
        ki.put(r(8, 0));
        ki.put(r(10, 0));
        assert!(ki.tombstone(r(12, 0)));
        ki.put(r(14, 0));
        ki.put(r(14, 1));
        assert!(ki.tombstone(r(16, 0)));
        ki
    }

    #[test]
    fn get_across_generations() {
        let ki = example();
        type Want = (i64, Option<(Revision, Revision, i64)>);
        let want: &[Want] = &[
            (17, None),
            (16, None),
            (15, Some((r(14, 1), r(14, 0), 2))),
            (14, Some((r(14, 1), r(14, 0), 2))),
            (13, None),
            (12, None),
            (11, Some((r(10, 0), r(8, 0), 2))),
            (10, Some((r(10, 0), r(8, 0), 2))),
            (9, Some((r(8, 0), r(8, 0), 1))),
            (8, Some((r(8, 0), r(8, 0), 1))),
            (7, None),
            (6, None),
            (5, Some((r(4, 0), r(2, 0), 2))),
            (4, Some((r(4, 0), r(2, 0), 2))),
            (3, Some((r(2, 0), r(2, 0), 1))),
            (2, Some((r(2, 0), r(2, 0), 1))),
            (1, None),
            (0, None),
        ];
        for (at, w) in want {
            let got = ki.get(*at).map(|k| (k.modified, k.created, k.version));
            assert_eq!(got, *w, "get at {at}");
        }
        // after compaction at 4, reads at >= 4 are unchanged
        let mut c = ki.clone();
        c.compact(4, &mut HashSet::new());
        for (at, w) in want.iter().filter(|(at, _)| *at >= 4) {
            let got = c.get(*at).map(|k| (k.modified, k.created, k.version));
            assert_eq!(got, *w, "get at {at} after compaction");
        }
    }

    fn revs_of(ki: &KeyIndex) -> Vec<Vec<(i64, i64)>> {
        ki.generations().iter().map(|g| g.revs.iter().map(|r| (r.main, r.sub)).collect()).collect()
    }

    #[test]
    fn compact_and_keep_at_every_revision() {
        // (compact at, surviving revisions per generation, kept revision)
        type Case = (i64, Vec<Vec<(i64, i64)>>, Option<(i64, i64)>);
        let cases: Vec<Case> = vec![
            (
                1,
                vec![
                    vec![(2, 0), (4, 0), (6, 0)],
                    vec![(8, 0), (10, 0), (12, 0)],
                    vec![(14, 0), (14, 1), (16, 0)],
                    vec![],
                ],
                None,
            ),
            (
                2,
                vec![
                    vec![(2, 0), (4, 0), (6, 0)],
                    vec![(8, 0), (10, 0), (12, 0)],
                    vec![(14, 0), (14, 1), (16, 0)],
                    vec![],
                ],
                Some((2, 0)),
            ),
            (
                3,
                vec![
                    vec![(2, 0), (4, 0), (6, 0)],
                    vec![(8, 0), (10, 0), (12, 0)],
                    vec![(14, 0), (14, 1), (16, 0)],
                    vec![],
                ],
                Some((2, 0)),
            ),
            (
                4,
                vec![
                    vec![(4, 0), (6, 0)],
                    vec![(8, 0), (10, 0), (12, 0)],
                    vec![(14, 0), (14, 1), (16, 0)],
                    vec![],
                ],
                Some((4, 0)),
            ),
            (
                5,
                vec![
                    vec![(4, 0), (6, 0)],
                    vec![(8, 0), (10, 0), (12, 0)],
                    vec![(14, 0), (14, 1), (16, 0)],
                    vec![],
                ],
                Some((4, 0)),
            ),
            (
                6,
                vec![vec![(8, 0), (10, 0), (12, 0)], vec![(14, 0), (14, 1), (16, 0)], vec![]],
                None,
            ),
            (
                7,
                vec![vec![(8, 0), (10, 0), (12, 0)], vec![(14, 0), (14, 1), (16, 0)], vec![]],
                None,
            ),
            (
                8,
                vec![vec![(8, 0), (10, 0), (12, 0)], vec![(14, 0), (14, 1), (16, 0)], vec![]],
                Some((8, 0)),
            ),
            (
                10,
                vec![vec![(10, 0), (12, 0)], vec![(14, 0), (14, 1), (16, 0)], vec![]],
                Some((10, 0)),
            ),
            (12, vec![vec![(14, 0), (14, 1), (16, 0)], vec![]], None),
            (14, vec![vec![(14, 1), (16, 0)], vec![]], Some((14, 1))),
            (15, vec![vec![(14, 1), (16, 0)], vec![]], Some((14, 1))),
            (16, vec![vec![]], None),
            (17, vec![vec![]], None),
        ];
        // continuous compaction: each step on the result of the previous one
        let mut cont = example();
        for (at, want_revs, want_keep) in &cases {
            let want_keep: HashSet<Revision> = want_keep.iter().map(|&(m, s)| r(m, s)).collect();
            // keep() does not mutate and agrees with compact()
            let before = cont.clone();
            let mut k = HashSet::new();
            cont.keep(*at, &mut k);
            assert_eq!(cont, before);
            assert_eq!(k, want_keep, "keep at {at}");
            let mut k2 = HashSet::new();
            cont.compact(*at, &mut k2);
            assert_eq!(k2, want_keep, "compact keep at {at}");
            assert_eq!(revs_of(&cont), *want_revs, "continuous compaction at {at}");
            // one-shot compaction of a fresh index gives the same result
            let mut once = example();
            once.compact(*at, &mut HashSet::new());
            assert_eq!(revs_of(&once), *want_revs, "one-shot compaction at {at}");
        }
        assert!(cont.is_empty());
    }

    #[test]
    fn versions_survive_compaction_and_restore() {
        let mut ki = KeyIndex::new();
        for m in 2..=5 {
            ki.put(r(m, 0));
        }
        ki.compact(4, &mut HashSet::new());
        assert_eq!(ki.get(4).unwrap().version, 3);
        assert_eq!(ki.get(5).unwrap().version, 4);
        assert_eq!(ki.get(5).unwrap().created, r(2, 0));
        let mut re = KeyIndex::restore(r(2, 0), r(4, 0), 3);
        re.put(r(5, 0));
        assert_eq!(re.get(5), ki.get(5));
    }

    #[test]
    fn since_collapses_subs() {
        let ki = example();
        let got: Vec<_> = ki.since(10).iter().map(|r| (r.main, r.sub)).collect();
        assert_eq!(got, vec![(10, 0), (12, 0), (14, 1), (16, 0)]);
    }

    #[test]
    fn tombstone_of_deleted_key_is_refused() {
        let mut ki = example();
        assert!(!ki.tombstone(r(20, 0)));
        assert_eq!(ki.modified(), r(16, 0));
    }

    #[test]
    fn rollback_undoes_newer_revisions() {
        let full = example();
        for after in [0, 2, 4, 6, 10, 12, 14, 16] {
            // rebuild the index as it was at `after` by replaying, and compare
            let mut want = KeyIndex::new();
            let mut ops = vec![];
            for g in full.generations() {
                for (i, rv) in g.revs.iter().enumerate() {
                    let tomb = i + 1 == g.revs.len()
                        && !std::ptr::eq(g, full.generations().last().unwrap());
                    ops.push((*rv, tomb));
                }
            }
            for (rv, tomb) in ops.iter().filter(|(rv, _)| rv.main <= after) {
                if *tomb {
                    want.tombstone(*rv);
                } else {
                    want.put(*rv);
                }
            }
            let mut got = full.clone();
            let empty = got.rollback(after);
            assert_eq!(got, want, "rollback after {after}");
            assert_eq!(empty, want.is_empty());
        }
    }
}
