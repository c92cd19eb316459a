//! Revisions and their byte form in the `key` table.

use etcd_storage::schema;

/// A point in the store's history. `main` is bumped once per mutating
/// request (a whole Txn shares one `main`); `sub` orders the changes made
/// inside that request, starting at 0. Ordering is `(main, sub)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// Store revision of the request.
    pub main: i64,
    /// Index of the change within the request.
    pub sub: i64,
}

impl Revision {
    /// Builds a revision.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// The `key` table key of this revision. The layout (`main` big-endian,
    /// `'_'`, `sub` big-endian, optional `'t'`) is defined in
    /// [`etcd_storage::schema`]; big-endian makes byte order equal numeric order.
    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        schema::encode_rev_key(self.main, self.sub, tombstone)
    }

    /// Parses a `key` table key into the revision and its tombstone flag.
    pub fn from_key(k: &[u8]) -> Option<(Revision, bool)> {
        schema::decode_rev_key(k).map(|(main, sub, t)| (Revision { main, sub }, t))
    }
}
