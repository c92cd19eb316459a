//! Every table of the backend file and the encoding of every key and value
//! that is not an opaque blob. Nothing outside this module names a table.
//!
//! | table     | key                         | value                                        |
//! |-----------|-----------------------------|----------------------------------------------|
//! | `key`     | revision key (see below)    | prost-encoded `mvccpb.KeyValue`              |
//! | `meta`    | UTF-8 name                  | bytes; layout per name, see the `META_*` consts |
//! | `members` | member id (`u64`)           | opaque bytes owned by the server             |
//! | `lease`   | lease id (`i64`)            | opaque bytes owned by the server             |
//! | `members_removed` | member id (`u64`)   | `()`: the ID was removed and never comes back |
//! | `auth`    | etcd's key name (bytes)     | `authEnabled`: 1 byte; `authRevision`: u64 BE |
//! | `authUsers` | user name (bytes)         | prost-encoded `authpb.User` (bcrypt hash)    |
//! | `authRoles` | role name (bytes)         | prost-encoded `authpb.Role`                  |
//!
//! The three auth tables carry etcd's bucket names and encodings, so a later
//! conversion to etcd's file format copies them unchanged. Files written before
//! they existed simply lack them: reads treat a missing auth table as empty.
//!
//! ## Revision keys (`key` table)
//!
//! A revision `(main, sub)` is stored exactly as etcd lays it out so that
//! hashes over the table (HashKV) are computed over the same bytes:
//! `main` as 8 bytes big-endian, one `'_'` separator byte, `sub` as 8 bytes
//! big-endian (17 bytes). Revisions are never negative, so big-endian byte
//! order equals numeric order and a byte-wise range scan of the table walks
//! revisions in increasing `(main, sub)` order. A tombstone (a deletion
//! record) has one extra trailing byte `'t'` (18 bytes); a tombstone key
//! sorts right after the plain key of the same revision, which never exists.

use redb::TableDefinition;

/// MVCC history: revision key -> encoded `mvccpb.KeyValue` (a tombstone stores a KeyValue holding only the key).
pub const KEY: TableDefinition<'static, &'static [u8], &'static [u8]> = TableDefinition::new("key");
/// Small named values: schema version, consistent index, compaction state, server metadata.
pub const META: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("meta");
/// Cluster members: member id -> server-defined encoding.
pub const MEMBERS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("members");
/// IDs of removed members (etcd's `members_removed` bucket): a removed ID is
/// refused by every later membership change and its Raft messages are
/// rejected. Files written before it existed lack it: reads treat it as empty.
pub const MEMBERS_REMOVED: TableDefinition<'static, u64, ()> =
    TableDefinition::new("members_removed");
/// Leases: lease id -> server-defined encoding.
pub const LEASE: TableDefinition<'static, i64, &'static [u8]> = TableDefinition::new("lease");

/// etcd's `auth` bucket: the enabled flag and the auth revision.
pub const AUTH: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("auth");
/// etcd's `authUsers` bucket: user name -> `authpb.User`.
pub const AUTH_USERS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("authUsers");
/// etcd's `authRoles` bucket: role name -> `authpb.Role`.
pub const AUTH_ROLES: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("authRoles");

/// Name of each table, for error messages and copies.
pub const TABLE_NAMES: [&str; 8] =
    ["key", "meta", "members", "members_removed", "lease", "auth", "authUsers", "authRoles"];

/// One of the three auth tables (etcd's auth buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthTable {
    /// `auth`: `authEnabled` and `authRevision`.
    Meta,
    /// `authUsers`.
    Users,
    /// `authRoles`.
    Roles,
}

impl AuthTable {
    /// The redb table behind it.
    pub fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        match self {
            AuthTable::Meta => AUTH,
            AuthTable::Users => AUTH_USERS,
            AuthTable::Roles => AUTH_ROLES,
        }
    }
}

/// meta: schema version of the file, `u64` big-endian. Written once at creation.
pub const META_SCHEMA_VERSION: &str = "schema_version";
/// meta: last applied Raft entry, `index u64 BE ++ term u64 BE` (16 bytes).
pub const META_CONSISTENT_INDEX: &str = "consistent_index";
/// meta: revision of the last finished compaction, as a 17-byte revision key
/// with `sub = 0` (etcd's `finishedCompactRev`). Written by the mvcc crate.
pub const META_FINISHED_COMPACT_REV: &str = "finishedCompactRev";
/// meta: revision of the last compaction scheduled (etcd's
/// `scheduledCompactRev`): the index is compacted there at once, the `key`
/// table in batches after it; newer than `finishedCompactRev` while batches
/// are left (a restart resumes them).
pub const META_SCHEDULED_COMPACT_REV: &str = "scheduledCompactRev";

/// meta: the active alarms, a prost-encoded `etcdserverpb.AlarmResponse` listing
/// them (written by the server crate; absent when none was ever raised).
pub const META_ALARMS: &str = "alarms";

/// The schema version this build creates and accepts.
pub const SCHEMA_VERSION: u64 = 1;

/// Length of a plain revision key.
pub const REV_KEY_LEN: usize = 17;
/// Length of a tombstone revision key.
pub const TOMBSTONE_KEY_LEN: usize = 18;
/// Separator byte between main and sub.
pub const REV_SEPARATOR: u8 = b'_';
/// Trailing marker byte of a tombstone key.
pub const TOMBSTONE_MARK: u8 = b't';

/// Encodes revision `(main, sub)` as a key of the `key` table; `tombstone`
/// appends the tombstone marker. Both numbers must be non-negative.
pub fn encode_rev_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    debug_assert!(main >= 0 && sub >= 0, "negative revision ({main}, {sub})");
    let mut k = Vec::with_capacity(TOMBSTONE_KEY_LEN);
    k.extend_from_slice(&(main as u64).to_be_bytes());
    k.push(REV_SEPARATOR);
    k.extend_from_slice(&(sub as u64).to_be_bytes());
    if tombstone {
        k.push(TOMBSTONE_MARK);
    }
    k
}

/// Decodes a key of the `key` table into `(main, sub, is_tombstone)`;
/// `None` if the bytes are not a revision key.
pub fn decode_rev_key(k: &[u8]) -> Option<(i64, i64, bool)> {
    let tombstone = match k.len() {
        REV_KEY_LEN => false,
        TOMBSTONE_KEY_LEN if k[17] == TOMBSTONE_MARK => true,
        _ => return None,
    };
    if k[8] != REV_SEPARATOR {
        return None;
    }
    let main = u64::from_be_bytes(k[0..8].try_into().ok()?);
    let sub = u64::from_be_bytes(k[9..17].try_into().ok()?);
    Some((i64::try_from(main).ok()?, i64::try_from(sub).ok()?, tombstone))
}

/// Encodes the consistent index meta value.
pub fn encode_consistent_index(index: u64, term: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&index.to_be_bytes());
    b[8..].copy_from_slice(&term.to_be_bytes());
    b
}

/// Decodes the consistent index meta value; `None` if malformed.
pub fn decode_consistent_index(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != 16 {
        return None;
    }
    Some((u64::from_be_bytes(b[..8].try_into().ok()?), u64::from_be_bytes(b[8..].try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rev_key_round_trip_and_order() {
        let a = encode_rev_key(2, 0, false);
        let b = encode_rev_key(2, 1, false);
        let bt = encode_rev_key(2, 1, true);
        let c = encode_rev_key(256, 0, false);
        assert_eq!(a.len(), REV_KEY_LEN);
        assert_eq!(bt.len(), TOMBSTONE_KEY_LEN);
        assert!(a < b && b < bt && bt < c);
        assert_eq!(decode_rev_key(&bt), Some((2, 1, true)));
        assert_eq!(decode_rev_key(&c), Some((256, 0, false)));
        assert_eq!(decode_rev_key(b"short"), None);
        // etcd's exact layout
        assert_eq!(
            encode_rev_key(1, 2, true),
            [0, 0, 0, 0, 0, 0, 0, 1, b'_', 0, 0, 0, 0, 0, 0, 0, 2, b't']
        );
    }

    #[test]
    fn consistent_index_round_trip() {
        let b = encode_consistent_index(7, 3);
        assert_eq!(decode_consistent_index(&b), Some((7, 3)));
        assert_eq!(decode_consistent_index(&b[..3]), None);
    }
}
