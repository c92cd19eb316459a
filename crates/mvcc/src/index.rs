//! The in-memory index: every key's history, ordered by key for range scans.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use crate::key_index::{KeyIndex, KeyRev};
use crate::revision::Revision;

/// A key range as etcd defines it: `end` empty means the single key `start`;
/// `end == [0]` means every key `>= start`; otherwise `[start, end)`.
#[derive(Clone, Copy, Debug)]
pub struct KeyRange<'a> {
    /// First key.
    pub start: &'a [u8],
    /// Range end in etcd's request encoding.
    pub end: &'a [u8],
}

impl<'a> KeyRange<'a> {
    /// Builds a range from a request's `key` and `range_end`.
    pub fn new(start: &'a [u8], end: &'a [u8]) -> Self {
        KeyRange { start, end }
    }

    /// True if the range is the single key `start`.
    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }

    /// True if `key` falls in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.is_single() {
            return key == self.start;
        }
        key >= self.start && (self.end == [0] || key < self.end)
    }

    fn bounds(&self) -> Option<KeyBounds<'a>> {
        if self.is_single() {
            return Some((Bound::Included(self.start), Bound::Included(self.start)));
        }
        if self.end == [0] {
            return Some((Bound::Included(self.start), Bound::Unbounded));
        }
        if self.end <= self.start {
            return None;
        }
        Some((Bound::Included(self.start), Bound::Excluded(self.end)))
    }
}

/// Lower and upper bound of a key range for `BTreeMap::range`.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Every key's history. Keys are boxed slices (no spare capacity, 8 bytes
/// less per key than a `Vec` in every node).
#[derive(Debug, Default)]
pub struct Index {
    keys: BTreeMap<Box<[u8]>, KeyIndex>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Index::default()
    }

    /// Number of keys with any history (live or not yet compacted away).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if no key has any history.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The change visible for `key` at main revision `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyRev> {
        self.keys.get(key)?.get(at)
    }

    /// The history of one key.
    pub fn key_index(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    /// Keys of `range` that exist at `at`, in key order, with what is visible
    /// (reads need only [`Index::revisions`]).
    #[cfg(test)]
    pub fn range(&self, range: KeyRange<'_>, at: i64) -> Vec<(Vec<u8>, KeyRev)> {
        let mut out = Vec::new();
        self.visit(range, |k, ki| {
            if let Some(kr) = ki.get(at) {
                out.push((k.to_vec(), kr));
            }
        });
        out
    }

    /// The visible revision of every key of `range` that exists at `at`, in
    /// key order (what a range reads, without copying the keys).
    pub fn revisions(&self, range: KeyRange<'_>, at: i64) -> Vec<Revision> {
        let mut out = Vec::new();
        self.visit(range, |_, ki| {
            if let Some(kr) = ki.get(at) {
                out.push(kr.modified);
            }
        });
        out
    }

    /// The first `max` keys of `range` that exist at `at`, in key order (a
    /// bounded walk: what a limited range needs, whatever the range's size).
    pub fn range_limited(
        &self,
        range: KeyRange<'_>,
        at: i64,
        max: usize,
    ) -> Vec<(Vec<u8>, KeyRev)> {
        let mut out = Vec::new();
        if max == 0 {
            return out;
        }
        let Some(bounds) = range.bounds() else {
            return out;
        };
        for (k, ki) in self.keys.range::<[u8], _>(bounds) {
            if let Some(kr) = ki.get(at) {
                out.push((k.to_vec(), kr));
                if out.len() == max {
                    break;
                }
            }
        }
        out
    }

    /// Number of keys of `range` that exist at `at`.
    pub fn count(&self, range: KeyRange<'_>, at: i64) -> usize {
        let mut n = 0;
        self.visit(range, |_, ki| {
            if ki.get(at).is_some() {
                n += 1;
            }
        });
        n
    }

    fn visit(&self, range: KeyRange<'_>, mut f: impl FnMut(&[u8], &KeyIndex)) {
        let Some(bounds) = range.bounds() else {
            return;
        };
        for (k, ki) in self.keys.range::<[u8], _>(bounds) {
            f(k, ki);
        }
    }

    /// Every revision with `main >= since` of the keys in `range`, ordered by
    /// revision (etcd's `RangeSince`, for watchers catching up).
    pub fn range_since(&self, range: KeyRange<'_>, since: i64) -> Vec<(Revision, Vec<u8>)> {
        let mut out = Vec::new();
        self.visit(range, |k, ki| {
            out.extend(ki.since(since).into_iter().map(|r| (r, k.to_vec())));
        });
        out.sort();
        out
    }

    /// Records a put of `key` at `rev`.
    pub fn put(&mut self, key: &[u8], rev: Revision) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.put(rev),
            None => {
                let mut ki = KeyIndex::new();
                ki.put(rev);
                self.keys.insert(key.into(), ki);
            }
        }
    }

    /// Records the deletion of a live `key` at `rev`; false if it is not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    /// Inserts a key rebuilt from storage (see [`KeyIndex::restore`]).
    pub fn insert(&mut self, key: Vec<u8>, ki: KeyIndex) {
        self.keys.insert(key.into_boxed_slice(), ki);
    }

    /// Mutable access to one key's history (used while rebuilding).
    pub fn key_index_mut(&mut self, key: &[u8]) -> Option<&mut KeyIndex> {
        self.keys.get_mut(key)
    }

    /// The revisions a compaction at `at` keeps, computed without changing anything.
    pub fn keep(&self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        for ki in self.keys.values() {
            ki.keep(at, &mut keep);
        }
        keep
    }

    /// Compacts every key at `at`; keys left without history are removed.
    /// Returns the kept revisions `<= at`.
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut keep);
            !ki.is_empty()
        });
        keep
    }

    /// Forgets, for each of `keys`, every revision with `main > after`.
    pub fn rollback<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>, after: i64) {
        for k in keys {
            if let Some(ki) = self.keys.get_mut(k) {
                if ki.rollback(after) {
                    self.keys.remove(k);
                }
            }
        }
    }

    /// Every live key at `at` (in key order) with its visible revision.
    pub fn live_keys(&self, at: i64) -> impl Iterator<Item = (&[u8], KeyRev)> + '_ {
        self.keys.iter().filter_map(move |(k, ki)| ki.get(at).map(|kr| (&**k, kr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: Vec<(Vec<u8>, KeyRev)>) -> Vec<Vec<u8>> {
        v.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn range_rules() {
        let mut ix = Index::new();
        for (i, k) in [&b"a"[..], b"b", b"ba", b"c", b"\xff"].iter().enumerate() {
            ix.put(k, Revision::new(i as i64 + 2, 0));
        }
        ix.tombstone(b"c", Revision::new(10, 0));
        let at = 10;
        assert_eq!(keys(ix.range(KeyRange::new(b"b", b""), at)), vec![b"b".to_vec()]);
        assert_eq!(
            keys(ix.range(KeyRange::new(b"b", b"c"), at)),
            vec![b"b".to_vec(), b"ba".to_vec()]
        );
        assert_eq!(
            keys(ix.range(KeyRange::new(b"b", b"\0"), at)),
            vec![b"b".to_vec(), b"ba".to_vec(), b"\xff".to_vec()]
        );
        assert_eq!(ix.count(KeyRange::new(b"\0", b"\0"), at), 4);
        assert_eq!(ix.count(KeyRange::new(b"\0", b"\0"), 9), 5);
        assert!(ix.range(KeyRange::new(b"c", b"b"), at).is_empty());
        assert!(ix.range(KeyRange::new(b"c", b"c"), at).is_empty());
        assert!(KeyRange::new(b"b", b"\0").contains(b"zz"));
        assert!(!KeyRange::new(b"b", b"c").contains(b"c"));
        assert!(KeyRange::new(b"b", b"").contains(b"b"));
        assert!(!KeyRange::new(b"b", b"").contains(b"ba"));
    }

    #[test]
    fn compact_removes_dead_keys() {
        let mut ix = Index::new();
        ix.put(b"a", Revision::new(2, 0));
        ix.tombstone(b"a", Revision::new(3, 0));
        ix.put(b"b", Revision::new(4, 0));
        ix.put(b"b", Revision::new(5, 0));
        let keep = ix.keep(4);
        let kept = ix.compact(4);
        assert_eq!(keep, kept);
        assert_eq!(kept, HashSet::from([Revision::new(4, 0)]));
        assert_eq!(ix.len(), 1);
        assert!(ix.key_index(b"a").is_none());
    }
}
