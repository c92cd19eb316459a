use etcd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_proto::etcdserverpb::RangeRequest;

use super::*;
use crate::MvccError;

/// a: v  create 2 mod 7 ver 3
/// b: y2 create 3 mod 5 ver 2
/// c: x  create 4 mod 4 ver 1
/// d: u  create 8 mod 8 ver 1
/// (plus "other" outside the a..e range)
fn fixture() -> Env {
    let e = open();
    for (k, v) in [
        ("a", "z"),
        ("b", "y"),
        ("c", "x"),
        ("b", "y2"),
        ("a", "w"),
        ("a", "v"),
        ("d", "u"),
        ("other", "o"),
    ] {
        e.put(k, v);
    }
    e
}

fn q(f: impl FnOnce(&mut RangeRequest)) -> RangeRequest {
    let mut r = rr("a", "e");
    f(&mut r);
    r
}

#[test]
fn prefix_from_key_and_all() {
    let e = fixture();
    let r = e.store.range(&rr("a", "e")).unwrap();
    assert_eq!(keys(&r.kvs), ["a", "b", "c", "d"]);
    assert_eq!(r.count, 4);
    assert_eq!(r.kvs[0], kv("a", "v", 2, 7, 3));
    let r = e.store.range(&rr("b", "\0")).unwrap();
    assert_eq!(keys(&r.kvs), ["b", "c", "d", "other"]);
    let r = e.store.range(&rr("\0", "\0")).unwrap();
    assert_eq!(r.count, 5);
    // prefix "o" == [o, p)
    assert_eq!(keys(&e.store.range(&rr("o", "p")).unwrap().kvs), ["other"]);
    // end before start: nothing
    assert_eq!(e.store.range(&rr("d", "a")).unwrap().count, 0);
}

#[test]
fn limit_more_count() {
    let e = fixture();
    let r = e.store.range(&q(|r| r.limit = 2)).unwrap();
    assert_eq!(keys(&r.kvs), ["a", "b"]);
    assert!(r.more);
    assert_eq!(r.count, 4);
    let r = e.store.range(&q(|r| r.limit = 4)).unwrap();
    assert_eq!(r.kvs.len(), 4);
    assert!(!r.more);
    let r = e.store.range(&q(|r| r.limit = 5)).unwrap();
    assert!(!r.more);
    assert_eq!(r.count, 4);
}

#[test]
fn sort_every_target_both_orders() {
    let e = fixture();
    let cases: &[(SortTarget, [&str; 4], [&str; 4])] = &[
        (SortTarget::Key, ["a", "b", "c", "d"], ["d", "c", "b", "a"]),
        (SortTarget::Version, ["c", "d", "b", "a"], ["a", "b", "c", "d"]),
        (SortTarget::Create, ["a", "b", "c", "d"], ["d", "c", "b", "a"]),
        (SortTarget::Mod, ["c", "b", "a", "d"], ["d", "a", "b", "c"]),
        (SortTarget::Value, ["d", "a", "c", "b"], ["b", "c", "a", "d"]),
    ];
    for (target, asc, desc) in cases {
        let r = e
            .store
            .range(&q(|r| {
                r.sort_target = *target as i32;
                r.sort_order = SortOrder::Ascend as i32;
            }))
            .unwrap();
        assert_eq!(keys(&r.kvs), asc, "{target:?} ascend");
        let r = e
            .store
            .range(&q(|r| {
                r.sort_target = *target as i32;
                r.sort_order = SortOrder::Descend as i32;
            }))
            .unwrap();
        assert_eq!(keys(&r.kvs), desc, "{target:?} descend");
        // order NONE with a non-key target means ascending
        let r = e.store.range(&q(|r| r.sort_target = *target as i32)).unwrap();
        assert_eq!(keys(&r.kvs), asc, "{target:?} none");
    }
    // sort then limit
    let r = e
        .store
        .range(&q(|r| {
            r.sort_target = SortTarget::Mod as i32;
            r.sort_order = SortOrder::Descend as i32;
            r.limit = 2;
        }))
        .unwrap();
    assert_eq!(keys(&r.kvs), ["d", "a"]);
    assert!(r.more);
    assert_eq!(r.count, 4);
}

#[test]
fn sort_with_order_none_and_limit_sorts_only_the_first_keys() {
    // etcd fetches limit+1 keys in key order when sort_order is NONE, then sorts
    let e = fixture();
    let r = e
        .store
        .range(&q(|r| {
            r.sort_target = SortTarget::Version as i32;
            r.limit = 2;
        }))
        .unwrap();
    assert_eq!(keys(&r.kvs), ["c", "b"]);
    assert!(r.more);
}

#[test]
fn keys_only_and_count_only() {
    let e = fixture();
    let r = e.store.range(&q(|r| r.keys_only = true)).unwrap();
    assert_eq!(keys(&r.kvs), ["a", "b", "c", "d"]);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(r.kvs[0].mod_revision, 7);
    let r = e
        .store
        .range(&q(|r| {
            r.count_only = true;
            r.limit = 1;
        }))
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 4);
    assert!(!r.more);
}

#[test]
fn revision_filters() {
    let e = fixture();
    let f = |g: fn(&mut RangeRequest)| {
        let r = e.store.range(&q(g)).unwrap();
        assert_eq!(r.count, 4, "count ignores filters");
        (keys(&r.kvs), r.more)
    };
    assert_eq!(f(|r| r.min_mod_revision = 5).0, ["a", "b", "d"]);
    assert_eq!(f(|r| r.max_mod_revision = 5).0, ["b", "c"]);
    assert_eq!(f(|r| r.min_create_revision = 3).0, ["b", "c", "d"]);
    assert_eq!(f(|r| r.max_create_revision = 3).0, ["a", "b"]);
    assert_eq!(
        f(|r| {
            r.min_mod_revision = 5;
            r.max_create_revision = 3;
        })
        .0,
        ["a", "b"]
    );
    // filters apply before limit; more counts filtered entries
    assert_eq!(
        f(|r| {
            r.min_mod_revision = 5;
            r.limit = 2;
        }),
        (vec!["a".to_string(), "b".to_string()], true)
    );
    assert_eq!(
        f(|r| {
            r.min_mod_revision = 5;
            r.limit = 3;
        }),
        (vec!["a".to_string(), "b".to_string(), "d".to_string()], false)
    );
}

#[test]
fn read_at_revision() {
    let e = fixture();
    let r = e.store.range(&q(|r| r.revision = 4)).unwrap();
    assert_eq!(r.kvs, vec![kv("a", "z", 2, 2, 1), kv("b", "y", 3, 3, 1), kv("c", "x", 4, 4, 1)]);
    assert_eq!(r.count, 3);
    let r = e.store.range(&q(|r| r.revision = 6)).unwrap();
    assert_eq!(r.kvs[0], kv("a", "w", 2, 6, 2));
    let err = e.store.range(&q(|r| r.revision = 10)).unwrap_err();
    assert!(matches!(err, MvccError::FutureRev));
    assert_eq!(err.to_string(), "mvcc: required revision is a future revision");
    // the current revision itself is fine
    assert_eq!(e.store.range(&q(|r| r.revision = 9)).unwrap().count, 4);
}

/// `range_encoded` answers every request with exactly the bytes of the
/// decoded answer's encoding (the plain ones copied from the stored values,
/// the rest shaped and encoded), at every revision, limit and option.
#[test]
fn encoded_answers_are_the_encoded_decoded_answers() {
    use prost::Message as _;
    let e = fixture();
    e.del("c", "");
    let mut requests = Vec::new();
    for (key, end) in [("a", "e"), ("\0", "\0"), ("b", ""), ("zz", ""), ("b", "\0"), ("d", "a")] {
        for revision in [0, 3, 7, 9] {
            for limit in [0, 1, 2, 3, 4, 10] {
                requests.push(RangeRequest {
                    key: key.into(),
                    range_end: end.into(),
                    revision,
                    limit,
                    ..Default::default()
                });
            }
        }
    }
    for base in requests.clone() {
        requests.push(RangeRequest { keys_only: true, ..base.clone() });
        requests.push(RangeRequest { count_only: true, ..base.clone() });
        requests.push(RangeRequest { sort_order: SortOrder::Ascend as i32, ..base.clone() });
        requests.push(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            ..base.clone()
        });
        requests.push(RangeRequest { min_mod_revision: 5, ..base.clone() });
    }
    let mut plain = 0;
    for request in &requests {
        let expected = e.store.range_with_rev(request).map(|(r, rev)| (r.encode_to_vec(), rev));
        let got = e.store.range_encoded(request);
        match (expected, got) {
            (Ok(expected), Ok(got)) => assert_eq!(got, expected, "{request:?}"),
            (Err(expected), Err(got)) => assert_eq!(got.to_string(), expected.to_string()),
            (expected, got) => panic!("{request:?}: {got:?} where {expected:?}"),
        }
        plain += usize::from(crate::range::plain(request));
    }
    assert!(plain > 100, "the plain path was exercised ({plain} requests)");
}
