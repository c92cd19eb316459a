//! Revisions published but not committed, and where readers fetch values.
//!
//! An apply batch usually parks its write transaction instead of committing
//! it (`etcd_storage::WriteTxn::park`; etcd's bbolt batch transaction also
//! commits only every 100 ms): a redb commit was about half of a small batch's
//! time. Readers open read transactions, which see only commits, so the store
//! keeps the encoded `KeyValue` of every revision it published while parked
//! ([`Recent`], under the index lock) and a reader takes the ones it needs
//! while it holds that lock ([`Values`]).
//!
//! Why a reader never misses a revision: a revision is added here when it is
//! published, in the same critical section, and removed only once a commit
//! covered it (the backend's committed mark, which the batch sets to its
//! revision). A reader opens its read transaction and copies what it needs
//! from here under one hold of the lock, so each revision it can see is in
//! one or the other.

use std::collections::BTreeMap;

use etcd_storage::{ReadTables, ReadTxn, WriteTxn};
use prost::bytes::Bytes;

use crate::error::MvccError;
use crate::revision::Revision;

/// Encodings above this many bytes make a batch commit instead of parking:
/// they are held here and in redb's transaction until a commit.
pub(crate) const PARK_LIMIT_BYTES: usize = 4 * 1024 * 1024;

/// The encodings of published revisions a commit may not cover yet.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    encoded: BTreeMap<Revision, Bytes>,
    bytes: usize,
}

impl Recent {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a batch's encodings (their revisions are being published).
    pub fn add(&mut self, added: Vec<(Revision, Bytes)>) {
        for (rev, encoded) in added {
            self.bytes += encoded.len();
            let old = self.encoded.insert(rev, encoded);
            assert!(old.is_none(), "invariant: a revision is published once");
        }
    }

    /// Drops the encodings of revisions at or below `committed` (main
    /// revision): readers find them in the backend.
    pub fn trim(&mut self, committed: i64) {
        if self.encoded.first_key_value().is_none_or(|(r, _)| r.main > committed) {
            return;
        }
        let keep = self.encoded.split_off(&Revision::new(committed.saturating_add(1), 0));
        self.encoded = keep;
        self.bytes = self.encoded.values().map(Bytes::len).sum();
    }

    /// Drops everything (a commit covered every published revision).
    pub fn clear(&mut self) {
        self.encoded.clear();
        self.bytes = 0;
    }

    /// The values of a read of `revs` at or below the published revision:
    /// opens the read transaction (when there is anything to fetch) and takes
    /// the encodings held here. Call under the index lock.
    pub fn values(
        &self,
        backend: &etcd_storage::Backend,
        revs: &[Revision],
    ) -> Result<Values, MvccError> {
        if revs.is_empty() {
            return Ok(Values { rtx: None, recent: BTreeMap::new() });
        }
        let mut recent = BTreeMap::new();
        if let Some((first, _)) = self.encoded.first_key_value() {
            for rev in revs.iter().filter(|r| *r >= first) {
                if let Some(encoded) = self.encoded.get(rev) {
                    recent.insert(*rev, encoded.clone());
                }
            }
        }
        Ok(Values { rtx: Some(backend.read_committed()?), recent })
    }
}

/// Where a reader fetches the values of the revisions it planned.
pub(crate) struct Values {
    rtx: Option<ReadTxn>,
    /// Those of its revisions no commit covered when it began.
    recent: BTreeMap<Revision, Bytes>,
}

/// The stored encodings of revisions, in the order asked.
pub(crate) trait ValueSource {
    /// Hands `f` the stored encoding of each of `revs` in order (none: not
    /// stored) until it returns false.
    fn each_value(
        &self,
        revs: &[Revision],
        f: &mut dyn FnMut(Option<&[u8]>) -> bool,
    ) -> Result<(), MvccError>;
}

impl ValueSource for Values {
    fn each_value(
        &self,
        revs: &[Revision],
        f: &mut dyn FnMut(Option<&[u8]>) -> bool,
    ) -> Result<(), MvccError> {
        let Some(rtx) = &self.rtx else {
            assert!(revs.is_empty(), "invariant: revisions to fetch come with a read");
            return Ok(());
        };
        let mut keys = revs.iter().map(|r| r.to_key(false));
        if self.recent.is_empty() {
            return Ok(rtx.key_get_each(&mut keys, f)?);
        }
        // A recent revision is not in the read's snapshot: its lookup misses
        // and the held encoding stands in.
        let mut at = 0;
        rtx.key_get_each(&mut keys, &mut |found| {
            let rev = revs[at];
            at += 1;
            match found {
                Some(v) => f(Some(v)),
                None => f(self.recent.get(&rev).map(|b| b.as_ref())),
            }
        })?;
        Ok(())
    }
}

/// An apply batch reads its own writes, parked ones included.
impl ValueSource for WriteTxn {
    fn each_value(
        &self,
        revs: &[Revision],
        f: &mut dyn FnMut(Option<&[u8]>) -> bool,
    ) -> Result<(), MvccError> {
        let mut keys = revs.iter().map(|r| r.to_key(false));
        Ok(self.key_get_each(&mut keys, f)?)
    }
}
