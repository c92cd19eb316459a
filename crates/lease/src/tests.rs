use etcd_storage::{Backend, ReadTables};

use super::*;

struct Env {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    backend: Backend,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let backend = Backend::open(&path).unwrap();
    Env { _dir: dir, path, backend }
}

/// Runs `f` in one committed write transaction.
fn write<T>(b: &Backend, f: impl FnOnce(&WriteTxn) -> T) -> T {
    let txn = b.begin_write().unwrap();
    let out = f(&txn);
    txn.commit(false).unwrap();
    out
}

fn stored(b: &Backend) -> Vec<(i64, i64)> {
    let r = b.begin_read().unwrap();
    r.leases_list().unwrap().into_iter().map(|(_, v)| decode_lease(&v).unwrap()).collect()
}

#[test]
fn encoding_round_trip() {
    let b = encode_lease(-5, 9_000_000_000);
    assert_eq!(b.len(), LEASE_VALUE_LEN);
    assert_eq!(&b[..8], &(-5i64).to_be_bytes());
    assert_eq!(decode_lease(&b), Some((-5, 9_000_000_000)));
    assert_eq!(decode_lease(&b[..15]), None);
}

#[test]
fn grant_revoke_attach_detach_round_trip() {
    let e = env();
    let mut le = Lessor::new(5);
    let info = write(&e.backend, |t| le.grant(t, 7, 10, 0)).unwrap();
    assert_eq!(info, LeaseInfo { id: 7, granted_ttl: 10, remaining_ttl: 10, keys: vec![] });
    assert!(le.exists(7));
    assert!(!le.exists(8));
    assert_eq!(stored(&e.backend), vec![(7, 10)]);

    le.attach(7, b"b");
    le.attach(7, b"a");
    le.attach(7, b"c");
    le.detach(7, b"c");
    le.detach(7, b"zz"); // not attached: no-op
    le.attach(0, b"x"); // no lease: no-op
    le.attach(99, b"x"); // unknown lease: no-op
    assert!(!le.exists(99));
    let ttl = le.time_to_live(7, 0, true).unwrap();
    assert_eq!(ttl.keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(le.time_to_live(7, 0, false).unwrap().keys.is_empty());

    let keys = write(&e.backend, |t| le.revoke(t, 7)).unwrap();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(!le.exists(7));
    assert!(le.leases().is_empty());
    assert!(stored(&e.backend).is_empty());
    assert_eq!(write(&e.backend, |t| le.revoke(t, 7)), Err(LeaseError::NotFound));
    assert_eq!(le.time_to_live(7, 0, false), Err(LeaseError::NotFound));
}

#[test]
fn revoke_returns_exactly_attached_keys_of_that_lease() {
    let e = env();
    let mut le = Lessor::new(1);
    write(&e.backend, |t| {
        le.grant(t, 1, 10, 0).unwrap();
        le.grant(t, 2, 10, 0).unwrap();
    });
    for k in ["k3", "k1", "k2"] {
        le.attach(1, k.as_bytes());
    }
    le.attach(2, b"other");
    le.detach(1, b"k2");
    let keys = write(&e.backend, |t| le.revoke(t, 1)).unwrap();
    assert_eq!(keys, vec![b"k1".to_vec(), b"k3".to_vec()]);
    assert_eq!(le.time_to_live(2, 0, true).unwrap().keys, vec![b"other".to_vec()]);
    assert_eq!(le.leases(), vec![2]);
    assert_eq!([b"k1", b"k2", b"k3"].map(|k| le.lease_of(k)), [0, 0, 0]);
    assert_eq!(le.lease_of(b"other"), 2);
}

#[test]
fn a_key_is_attached_to_one_lease_and_knows_which() {
    let e = env();
    let mut le = Lessor::new(1);
    write(&e.backend, |t| {
        le.grant(t, 1, 10, 0).unwrap();
        le.grant(t, 2, 10, 0).unwrap();
    });
    le.attach(1, b"k");
    assert_eq!(le.lease_of(b"k"), 1);
    // attaching elsewhere moves the key
    le.attach(2, b"k");
    assert_eq!(le.lease_of(b"k"), 2);
    assert!(le.keys(1).is_empty());
    // detaching from a lease it is not attached to changes nothing
    le.detach(1, b"k");
    assert_eq!(le.lease_of(b"k"), 2);
    le.detach(2, b"k");
    assert_eq!(le.lease_of(b"k"), 0);
    le.attach(99, b"k"); // unknown lease
    assert_eq!(le.lease_of(b"k"), 0);
}

#[test]
fn min_ttl_is_applied() {
    let e = env();
    let mut le = Lessor::new(5);
    assert_eq!(le.min_ttl_secs(), 5);
    let info = write(&e.backend, |t| le.grant(t, 1, 2, 0)).unwrap();
    assert_eq!(info.granted_ttl, 5);
    let info = write(&e.backend, |t| le.grant(t, 2, -3, 0)).unwrap();
    assert_eq!(info.granted_ttl, 5);
    assert_eq!(stored(&e.backend), vec![(1, 5), (2, 5)]);
}

#[test]
fn grant_errors() {
    let e = env();
    let mut le = Lessor::new(1);
    assert_eq!(
        write(&e.backend, |t| le.grant(t, 1, MAX_LEASE_TTL + 1, 0)),
        Err(LeaseError::TtlTooLarge)
    );
    assert!(!le.exists(1));
    assert!(stored(&e.backend).is_empty());
    assert_eq!(
        write(&e.backend, |t| le.grant(t, 1, MAX_LEASE_TTL, 0)).unwrap().granted_ttl,
        MAX_LEASE_TTL
    );
    assert_eq!(write(&e.backend, |t| le.grant(t, 1, 10, 0)), Err(LeaseError::LeaseExists));
    assert_eq!(le.time_to_live(1, 0, false).unwrap().granted_ttl, MAX_LEASE_TTL);
    assert_eq!(write(&e.backend, |t| le.grant(t, 0, 10, 0)), Err(LeaseError::NotFound));
    assert_eq!(LeaseError::NotFound.to_string(), "lease not found");
    assert_eq!(LeaseError::LeaseExists.to_string(), "lease already exists");
    assert_eq!(LeaseError::TtlTooLarge.to_string(), "too large lease TTL");
    assert_eq!(LeaseError::NotPrimary.to_string(), "not a primary lessor");
}

#[test]
fn recover_from_backend_file() {
    let e = env();
    {
        let mut le = Lessor::new(1);
        write(&e.backend, |t| {
            le.grant(t, 1, 10, 0).unwrap();
            le.grant(t, 2, 3, 0).unwrap();
            le.grant(t, 3, 30, 0).unwrap();
        });
        write(&e.backend, |t| le.revoke(t, 3)).unwrap();
        // an uncommitted grant must not survive
        let t = e.backend.begin_write().unwrap();
        le.grant(&t, 4, 10, 0).unwrap();
        t.abort().unwrap();
    }
    let Env { _dir, path, backend } = e;
    drop(backend);
    let backend = Backend::open(&path).unwrap();
    let r = backend.begin_read().unwrap();
    let keys = vec![
        (b"b".to_vec(), 1),
        (b"a".to_vec(), 1),
        (b"c".to_vec(), 2),
        (b"nolease".to_vec(), 0),
        (b"gone".to_vec(), 3),
    ];
    // min TTL raised on recovery too
    let mut le = Lessor::recover(&r, keys, 5).unwrap();
    drop(r);
    assert_eq!(le.leases(), vec![1, 2]);
    assert!(!le.is_primary());
    let l1 = le.time_to_live(1, 0, true).unwrap();
    assert_eq!(l1.granted_ttl, 10);
    assert_eq!(l1.keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(le.time_to_live(2, 0, true).unwrap().granted_ttl, 5);
    assert_eq!(["a", "c", "nolease", "gone"].map(|k| le.lease_of(k.as_bytes())), [1, 2, 0, 0]);
    // not primary: nothing expires until promoted, then each gets a full TTL
    assert!(le.expired(1_000_000, 10).is_empty());
    le.promote(1_000_000);
    assert!(le.expired(1_004_999, 10).is_empty());
    assert_eq!(le.expired(1_005_000, 10), vec![2]);
    let keys = write(&backend, |t| le.revoke(t, 1)).unwrap();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn recover_rejects_malformed_rows() {
    let e = env();
    write(&e.backend, |t| t.lease_put(1, b"short").unwrap());
    let r = e.backend.begin_read().unwrap();
    assert!(matches!(Lessor::recover(&r, Vec::new(), 1), Err(LeaseError::Storage(_))));
    drop(r);
    write(&e.backend, |t| t.lease_put(1, &encode_lease(2, 10)).unwrap());
    let r = e.backend.begin_read().unwrap();
    assert!(matches!(Lessor::recover(&r, Vec::new(), 1), Err(LeaseError::Storage(_))));
}

#[test]
fn expiry_only_when_primary() {
    let e = env();
    let mut le = Lessor::new(1);
    write(&e.backend, |t| le.grant(t, 1, 1, 0)).unwrap();
    assert!(!le.is_primary());
    assert!(le.expired(u64::MAX / 2, 10).is_empty());
    assert_eq!(le.next_check_ms(), None);
    assert_eq!(le.renew(1, 0), Err(LeaseError::NotPrimary));
    assert_eq!(le.renew(42, 0), Err(LeaseError::NotPrimary));
    // follower reports the granted TTL as remaining
    assert_eq!(le.time_to_live(1, 123_456, false).unwrap().remaining_ttl, 1);

    le.promote(10_000);
    assert!(le.is_primary());
    assert_eq!(le.next_check_ms(), Some(11_000));
    assert!(le.expired(10_999, 10).is_empty());
    assert_eq!(le.expired(11_000, 10), vec![1]);
}

#[test]
fn grant_while_primary_tracks_expiry() {
    let e = env();
    let mut le = Lessor::new(1);
    le.promote(0);
    write(&e.backend, |t| le.grant(t, 5, 10, 2_000)).unwrap();
    assert!(le.expired(11_999, 10).is_empty());
    assert_eq!(le.expired(12_000, 10), vec![5]);
    // revoke removes it from the queue
    write(&e.backend, |t| le.revoke(t, 5)).unwrap();
    assert!(le.expired(100_000, 10).is_empty());
    assert_eq!(le.next_check_ms(), None);
}

#[test]
fn promote_refreshes_all_expiries() {
    let e = env();
    let mut le = Lessor::new(1);
    le.promote(0);
    write(&e.backend, |t| {
        le.grant(t, 1, 10, 0).unwrap();
        le.grant(t, 2, 20, 0).unwrap();
    });
    le.demote();
    // long after both would have expired under the old leader
    le.promote(1_000_000);
    assert!(le.expired(1_000_000 + 9_999, 10).is_empty());
    assert_eq!(le.time_to_live(1, 1_000_000, false).unwrap().remaining_ttl, 10);
    assert_eq!(le.time_to_live(2, 1_000_000, false).unwrap().remaining_ttl, 20);
    assert_eq!(le.expired(1_010_000, 10), vec![1]);
    write(&e.backend, |t| le.revoke(t, 1)).unwrap();
    assert_eq!(le.expired(1_020_000, 10), vec![2]);
    write(&e.backend, |t| le.grant(t, 1, 10, 1_020_000)).unwrap();

    // promote while already primary also refreshes (and does not duplicate queue entries)
    le.promote(2_000_000);
    le.promote_with_extend(2_000_000, 1_000);
    assert_eq!(le.next_check_ms(), Some(2_011_000));
    assert_eq!(le.expired(2_021_000, 10), vec![1, 2]);
    assert!(le.expired(2_021_000, 10).is_empty());
}

#[test]
fn promote_spreads_piled_up_leases() {
    let e = env();
    let mut le = Lessor::new(1);
    let n = 2 * LEASE_REVOKE_RATE as i64;
    write(&e.backend, |t| {
        for id in 1..=n {
            le.grant(t, id, 10, 0).unwrap();
        }
    });
    le.promote(0);
    // 2000 leases all due at 10s: at most 750 expire in the first second, all within a few seconds
    let first = le.expired(10_999, usize::MAX);
    assert!(first.len() <= 3 * LEASE_REVOKE_RATE / 4, "{}", first.len());
    assert!(!first.is_empty());
    let mut seen: std::collections::BTreeSet<i64> = first.iter().copied().collect();
    let mut now = 10_999;
    while seen.len() < n as usize {
        now += 500;
        assert!(now <= 15_000, "not all leases expired by {now}");
        seen.extend(le.expired(now, usize::MAX));
    }
    // without the spread all would have expired at once
    assert!(now > 11_000);
}

#[test]
fn renew_extends() {
    let e = env();
    let mut le = Lessor::new(1);
    write(&e.backend, |t| le.grant(t, 1, 10, 0)).unwrap();
    le.promote(0);
    assert_eq!(le.renew(2, 0), Err(LeaseError::NotFound));
    assert_eq!(le.renew(1, 8_000).map(|r| r.ttl), Ok(10));
    assert!(le.expired(17_999, 10).is_empty());
    assert_eq!(le.time_to_live(1, 8_000, false).unwrap().remaining_ttl, 10);
    assert_eq!(le.expired(18_000, 10), vec![1]);
    // an expired lease (revoke pending) cannot be renewed back to life
    assert_eq!(le.renew(1, 18_001), Err(LeaseError::NotFound));
    assert!(le.exists(1));
}

#[test]
fn expired_respects_max_and_does_not_repeat_immediately() {
    let e = env();
    let mut le = Lessor::new(1);
    le.promote(0);
    write(&e.backend, |t| {
        for id in 1..=5 {
            le.grant(t, id, id, 0).unwrap();
        }
    });
    assert!(le.expired(100_000, 0).is_empty());
    assert_eq!(le.expired(100_000, 2), vec![1, 2]);
    assert_eq!(le.expired(100_000, 2), vec![3, 4]);
    assert_eq!(le.expired(100_500, 10), vec![5]);
    // none of them comes back within the retry interval
    assert!(le.expired(100_500, 10).is_empty());
    assert!(le.expired(100_000 + EXPIRED_LEASE_RETRY_INTERVAL_MS - 1, 10).is_empty());
    // ... but unrevoked ones are reported again after it
    write(&e.backend, |t| le.revoke(t, 2)).unwrap();
    assert_eq!(le.expired(100_000 + EXPIRED_LEASE_RETRY_INTERVAL_MS, 10), vec![1, 3, 4]);
    assert_eq!(le.expired(100_500 + EXPIRED_LEASE_RETRY_INTERVAL_MS, 10), vec![5]);

    le.set_expired_retry_interval_ms(10);
    assert_eq!(le.expired(200_000, 10), vec![1, 3, 4, 5]);
    assert!(le.expired(200_009, 10).is_empty());
    assert_eq!(le.expired(200_010, 10), vec![1, 3, 4, 5]);
}

#[test]
fn demote_stops_expiry() {
    let e = env();
    let mut le = Lessor::new(1);
    le.promote(0);
    write(&e.backend, |t| le.grant(t, 1, 5, 0)).unwrap();
    le.demote();
    assert!(!le.is_primary());
    assert!(le.expired(1_000_000, 10).is_empty());
    assert_eq!(le.next_check_ms(), None);
    assert_eq!(le.renew(1, 0), Err(LeaseError::NotPrimary));
    // granting while not primary does not track expiry either
    write(&e.backend, |t| le.grant(t, 2, 5, 0)).unwrap();
    assert!(le.expired(1_000_000, 10).is_empty());
    assert_eq!(le.time_to_live(1, 1_000_000, false).unwrap().remaining_ttl, 5);
}

#[test]
fn time_to_live_counts_down() {
    let e = env();
    let mut le = Lessor::new(1);
    le.promote(1_000);
    write(&e.backend, |t| le.grant(t, 9, 10, 1_000)).unwrap();
    let rem = |le: &Lessor, now| le.time_to_live(9, now, false).unwrap().remaining_ttl;
    assert_eq!(rem(&le, 1_000), 10);
    assert_eq!(rem(&le, 1_001), 9); // truncated, as etcd does
    assert_eq!(rem(&le, 4_000), 7);
    assert_eq!(rem(&le, 10_999), 0);
    assert_eq!(rem(&le, 11_000), 0);
    assert_eq!(rem(&le, 13_500), -2); // expired, revoke pending
    let info = le.time_to_live(9, 4_000, false).unwrap();
    assert_eq!(info.granted_ttl, 10);
    assert_eq!(info.id, 9);
}

#[test]
fn lessor_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Lessor>();
}

fn checkpointing(persist: bool) -> Option<Checkpointing> {
    Some(Checkpointing { interval_ms: 1_000, persist })
}

#[test]
fn checkpoints_are_due_one_interval_after_the_deadline_is_set() {
    let e = env();
    let mut le = Lessor::new(1);
    le.set_checkpointing(checkpointing(false));
    le.promote(0);
    write(&e.backend, |t| le.grant(t, 1, 10, 0).unwrap());
    // A lease whose TTL is not longer than the interval is never checkpointed.
    write(&e.backend, |t| le.grant(t, 2, 1, 0).unwrap());
    assert_eq!(le.due_checkpoints(999, 10), vec![]);
    // 10 s TTL, 1.5 s later: 8.5 s left, recorded rounded up.
    assert_eq!(le.due_checkpoints(1_500, 10), vec![(1, 9)]);
    assert_eq!(le.due_checkpoints(1_600, 10), vec![], "handed out once");
    // Applying the checkpoint schedules the next one.
    write(&e.backend, |t| le.checkpoint(t, 1, 9, 1_600).unwrap());
    assert_eq!(le.due_checkpoints(2_600, 10), vec![(1, 8)]);
    // Not primary: nothing is due.
    le.demote();
    assert_eq!(le.due_checkpoints(100_000, 10), vec![]);
}

#[test]
fn a_new_leader_starts_leases_from_their_checkpointed_remaining_ttl() {
    let e = env();
    let mut le = Lessor::new(1);
    le.set_checkpointing(checkpointing(false));
    write(&e.backend, |t| le.grant(t, 1, 30, 0).unwrap());
    write(&e.backend, |t| le.checkpoint(t, 1, 12, 0).unwrap());
    le.promote_with_extend(100_000, 1_000);
    assert_eq!(le.time_to_live(1, 100_000, false).unwrap().remaining_ttl, 13);
    // A renewal gives the full TTL back and asks to clear the checkpoint.
    let renewed = le.renew(1, 100_000).unwrap();
    assert_eq!(renewed, Renewed { ttl: 30, clear_checkpoint: true });
    assert_eq!(le.time_to_live(1, 100_000, false).unwrap().remaining_ttl, 30);
    write(&e.backend, |t| le.checkpoint(t, 1, 0, 100_000).unwrap());
    assert!(!le.renew(1, 100_000).unwrap().clear_checkpoint);
    // Without checkpointing, nothing is ever cleared.
    le.set_checkpointing(None);
    write(&e.backend, |t| le.checkpoint(t, 1, 5, 100_000).unwrap());
    assert!(!le.renew(1, 100_000).unwrap().clear_checkpoint);
}

#[test]
fn persisted_checkpoints_survive_recovery_and_plain_ones_do_not() {
    for persist in [false, true] {
        let e = env();
        let mut le = Lessor::new(1);
        le.set_checkpointing(checkpointing(persist));
        write(&e.backend, |t| le.grant(t, 7, 60, 0).unwrap());
        write(&e.backend, |t| le.checkpoint(t, 7, 20, 0).unwrap());
        write(&e.backend, |t| le.checkpoint(t, 99, 20, 0).unwrap());
        let txn = e.backend.begin_read().unwrap();
        let mut recovered = Lessor::recover(&txn, Vec::new(), 1).unwrap();
        recovered.promote(0);
        let left = recovered.time_to_live(7, 0, false).unwrap().remaining_ttl;
        assert_eq!(left, if persist { 20 } else { 60 }, "persist: {persist}");
        assert!(!recovered.exists(99), "a checkpoint of an unknown lease creates nothing");
    }
    let row = encode_lease_with_remaining(3, 60, 20);
    assert_eq!(decode_lease_with_remaining(&row), Some((3, 60, 20)));
    assert_eq!(decode_lease(&row), Some((3, 60)));
    assert_eq!(decode_lease_with_remaining(&encode_lease(3, 60)), Some((3, 60, 0)));
    assert_eq!(decode_lease_with_remaining(&row[..20]), None);
}
