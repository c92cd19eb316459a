//! Key-range permissions, merged per user, with etcd's interval semantics.
//!
//! etcd keeps, per user, the union of the permissions of all the user's roles
//! as two interval sets (read and write) over "affine" byte strings: an empty
//! end means +infinity. A permission with no `range_end` covers one key, the
//! point interval `[key, key\0)`; a `range_end` of `"\0"` covers every key from
//! `key` on. A query for one key is permitted when any interval of the set
//! touches it; a query for a range is permitted only when the intervals that
//! overlap it, taken in order of their begin, join without a gap and reach
//! from its begin to its end. READWRITE counts as both READ and WRITE.

use std::cmp::Ordering;

use etcd_proto::authpb::{permission::Type as PermType, Permission};

/// Which half of a permission a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range, compares, `prev_kv`, watch.
    Read,
    /// Put, delete range.
    Write,
}

/// Compares two interval bounds where the empty string is +infinity.
fn affine_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// A half-open interval `[begin, end)` of affine byte strings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    fn point(key: &[u8]) -> Interval {
        let mut end = key.to_vec();
        end.push(0);
        Interval { begin: key.to_vec(), end }
    }

    /// Whether `self` (a stored interval) and `query` overlap, exactly as
    /// etcd's interval tree decides it (a query that begins before `self` and
    /// ends at or before its begin is left of it; one that begins at or after
    /// its end is right of it; anything else overlaps).
    fn overlaps(&self, query: &Interval) -> bool {
        let left = affine_cmp(&query.begin, &self.begin) == Ordering::Less
            && affine_cmp(&query.end, &self.begin) != Ordering::Greater;
        let right = affine_cmp(&query.begin, &self.end) != Ordering::Less;
        !left && !right
    }
}

/// One user's merged permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangePerms {
    /// Sorted by begin (affine order).
    read: Vec<Interval>,
    /// Sorted by begin (affine order).
    write: Vec<Interval>,
}

impl RangePerms {
    /// Merges the key permissions of `roles`.
    pub fn merge<'a>(roles: impl IntoIterator<Item = &'a [Permission]>) -> RangePerms {
        let mut perms = RangePerms::default();
        for permissions in roles {
            for perm in permissions {
                let interval = if perm.range_end.is_empty() {
                    Interval::point(&perm.key)
                } else if perm.range_end == [0] {
                    Interval { begin: perm.key.clone(), end: Vec::new() }
                } else {
                    Interval { begin: perm.key.clone(), end: perm.range_end.clone() }
                };
                match PermType::try_from(perm.perm_type) {
                    Ok(PermType::Read) => perms.read.push(interval),
                    Ok(PermType::Write) => perms.write.push(interval),
                    Ok(PermType::Readwrite) => {
                        perms.read.push(interval.clone());
                        perms.write.push(interval);
                    }
                    // An unknown type grants nothing (etcd's switch has no default).
                    Err(_) => {}
                }
            }
        }
        let by_begin = |a: &Interval, b: &Interval| affine_cmp(&a.begin, &b.begin);
        perms.read.sort_by(by_begin);
        perms.write.sort_by(by_begin);
        perms
    }

    /// Whether the permissions allow `access` to `key` (with `range_end`
    /// empty) or to the range `[key, range_end)` (`"\0"`: from `key` on).
    pub fn permits(&self, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            let point = Interval::point(key);
            return set.iter().any(|i| i.overlaps(&point));
        }
        let end = if range_end == [0] { Vec::new() } else { range_end.to_vec() };
        let query = Interval { begin: key.to_vec(), end };
        let mut covered: Option<(&[u8], &[u8])> = None;
        for interval in set.iter().filter(|i| i.overlaps(&query)) {
            match covered {
                None => covered = Some((&interval.begin, &interval.end)),
                Some((begin, max_end)) => {
                    if affine_cmp(max_end, &interval.begin) == Ordering::Less {
                        return false;
                    }
                    if affine_cmp(&interval.end, max_end) == Ordering::Greater {
                        covered = Some((begin, &interval.end));
                    }
                }
            }
        }
        covered.is_some_and(|(begin, max_end)| {
            affine_cmp(max_end, &query.end) != Ordering::Less
                && affine_cmp(begin, &query.begin) != Ordering::Greater
        })
    }
}

/// etcd's `isValidPermissionRange`: a key is required; a range end must be
/// empty (one key), `"\0"` (from the key on) or after the key.
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    range_end.is_empty() || affine_cmp(key, range_end) == Ordering::Less || range_end == [0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermType, key: &str, end: &[u8]) -> Permission {
        Permission { perm_type: kind as i32, key: key.as_bytes().to_vec(), range_end: end.to_vec() }
    }

    fn merged(perms: &[Permission]) -> RangePerms {
        RangePerms::merge([perms])
    }

    #[test]
    fn a_single_key_permission_covers_that_key_only() {
        let p = merged(&[perm(PermType::Read, "foo", b"")]);
        assert!(p.permits(b"foo", b"", Access::Read));
        assert!(!p.permits(b"foo", b"", Access::Write));
        assert!(!p.permits(b"fo", b"", Access::Read));
        assert!(!p.permits(b"foo0", b"", Access::Read));
        // The range [foo, foo\0) is exactly the key.
        assert!(p.permits(b"foo", b"foo\0", Access::Read));
        assert!(!p.permits(b"foo", b"fop", Access::Read));
    }

    #[test]
    fn a_prefix_permission_covers_keys_and_subranges_inside_it() {
        let p = merged(&[perm(PermType::Readwrite, "foo", b"fop")]);
        for access in [Access::Read, Access::Write] {
            assert!(p.permits(b"foo", b"", access));
            assert!(p.permits(b"foo/bar", b"", access));
            assert!(p.permits(b"foo", b"fop", access));
            assert!(p.permits(b"foo/a", b"foo/b", access));
            assert!(!p.permits(b"fop", b"", access));
            assert!(!p.permits(b"fo", b"fop", access));
            assert!(!p.permits(b"foo", b"foq", access));
            assert!(!p.permits(b"foo", b"\0", access));
        }
    }

    #[test]
    fn an_open_ended_permission_covers_everything_after_its_key() {
        let p = merged(&[perm(PermType::Write, "m", b"\0")]);
        assert!(p.permits(b"m", b"", Access::Write));
        assert!(p.permits(b"zzzz", b"", Access::Write));
        assert!(p.permits(b"m", b"\0", Access::Write));
        assert!(p.permits(b"n", b"z", Access::Write));
        assert!(!p.permits(b"a", b"", Access::Write));
        assert!(!p.permits(b"a", b"\0", Access::Write));
    }

    #[test]
    fn adjoining_permissions_of_several_roles_join_without_a_gap() {
        let a = [perm(PermType::Read, "a", b"c")];
        let b = [perm(PermType::Read, "c", b"e")];
        let p = RangePerms::merge([&a[..], &b[..]]);
        assert!(p.permits(b"a", b"e", Access::Read));
        assert!(p.permits(b"b", b"d", Access::Read));
        let gap = [perm(PermType::Read, "d", b"f")];
        let p = RangePerms::merge([&a[..], &gap[..]]);
        assert!(!p.permits(b"a", b"f", Access::Read));
        assert!(p.permits(b"d", b"f", Access::Read));
    }

    #[test]
    fn overlapping_permissions_extend_the_covered_range() {
        let p = merged(&[
            perm(PermType::Read, "a", b"d"),
            perm(PermType::Read, "b", b"c"),
            perm(PermType::Read, "c", b"g"),
        ]);
        assert!(p.permits(b"a", b"g", Access::Read));
        assert!(!p.permits(b"a", b"h", Access::Read));
    }

    #[test]
    fn no_permissions_permit_nothing() {
        let p = RangePerms::default();
        assert!(!p.permits(b"a", b"", Access::Read));
        assert!(!p.permits(b"a", b"b", Access::Write));
    }

    #[test]
    fn permission_ranges_are_validated_as_etcd_does() {
        assert!(is_valid_permission_range(b"a", b""));
        assert!(is_valid_permission_range(b"a", b"b"));
        assert!(is_valid_permission_range(b"a", b"\0"));
        assert!(!is_valid_permission_range(b"", b""));
        assert!(!is_valid_permission_range(b"b", b"a"));
        assert!(!is_valid_permission_range(b"a", b"a"));
    }
}
