//! The WAL's normal life: appends, syncs, reopens, conflicts, rollover and release,
//! snapshot markers, preallocation.

mod common;

use std::fs;

use common::*;
use etcd_wal::{Entry, Error, SnapshotMarker, Wal, SEGMENT_BYTES_MAX};

#[test]
fn round_trip_across_syncs_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"cluster-7/member-3").unwrap();
    assert!(Wal::exists(&dir).unwrap());
    let mut written = Vec::new();
    for batch in 0..5u64 {
        let ents: Vec<Entry> = (batch * 4 + 1..=batch * 4 + 4).map(|i| ent(i, batch + 1)).collect();
        wal.append(&ents, Some(&hs(batch + 1, batch * 4))).unwrap();
        written.extend(ents);
        wal.sync().unwrap();
    }
    // Hard state without entries, entries without hard state.
    wal.append(&[], Some(&hs(9, 20))).unwrap();
    wal.append(&[ent(21, 9)], None).unwrap();
    written.push(ent(21, 9));
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), 21);
    drop(wal);

    let (mut wal, replay) = Wal::open(&dir).unwrap();
    assert_eq!(replay.metadata, b"cluster-7/member-3");
    assert_eq!(replay.snapshot, None);
    assert_eq!(replay.hard_state, Some(hs(9, 20)));
    assert_eq!(replay.entries, written);
    assert_eq!(replay.torn_bytes, 0);
    assert_eq!(wal.last_index(), 21);

    // Keep appending to the reopened log.
    wal.append(&[ent(22, 9), ent(23, 9)], Some(&hs(9, 23))).unwrap();
    wal.sync().unwrap();
    written.extend([ent(22, 9), ent(23, 9)]);
    drop(wal);
    let (_, replay) = Wal::open(&dir).unwrap();
    assert_eq!(replay.entries, written);
    assert_eq!(replay.hard_state, Some(hs(9, 23)));
}

#[test]
fn later_entries_overwrite_conflicting_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"m").unwrap();
    let first: Vec<Entry> = (1..=10).map(|i| ent(i, 1)).collect();
    wal.append(&first, Some(&hs(1, 3))).unwrap();
    wal.sync().unwrap();
    let second: Vec<Entry> = (6..=8).map(|i| ent(i, 2)).collect();
    wal.append(&second, Some(&hs(2, 5))).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), 8);
    drop(wal);

    let (mut wal, replay) = Wal::open(dir).unwrap();
    let expected: Vec<Entry> = (1..=5).map(|i| ent(i, 1)).chain(second.clone()).collect();
    assert_eq!(replay.entries, expected);
    assert_eq!(replay.hard_state, Some(hs(2, 5)));

    // Overwrite again after a reopen, reaching back before the previous conflict.
    wal.append(&[ent(3, 3)], None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(dir).unwrap();
    let expected: Vec<Entry> = vec![ent(1, 1), ent(2, 1), ent(3, 3)];
    assert_eq!(replay.entries, expected);
}

#[test]
fn create_refuses_existing_log_and_open_refuses_empty_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(!Wal::exists(dir).unwrap());
    assert!(matches!(Wal::open(dir), Err(Error::NotFound(_))));
    assert!(Wal::open(&dir.join("missing")).is_err());
    let wal = Wal::create(dir, b"m").unwrap();
    drop(wal);
    match Wal::create(dir, b"m") {
        Err(e @ Error::AlreadyExists(_)) => assert!(e.to_string().contains("Wal::open")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // A freshly created log replays as empty.
    let (_, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.metadata, b"m");
    assert!(replay.entries.is_empty() && replay.hard_state.is_none() && replay.snapshot.is_none());
}

#[test]
fn rollover_and_release() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"meta").unwrap();
    wal.set_segment_bytes_max(512);
    for i in 1..=100 {
        wal.append(&[ent(i, 2)], Some(&hs(2, i - 1))).unwrap();
        if i % 7 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    let before = segment_files(dir);
    assert!(before.len() > 10, "expected many segments, got {}", before.len());
    assert_eq!(before.len(), wal.segments().len());
    for (i, s) in wal.segments().iter().enumerate() {
        assert_eq!(s.seq, i as u64);
    }

    // Without a snapshot marker nothing may be released.
    wal.release_to(90).unwrap();
    assert_eq!(segment_files(dir), before);

    let marker = SnapshotMarker { index: 60, term: 2, conf_state: b"voters=1,2,3".to_vec() };
    wal.save_snapshot(&marker).unwrap();
    // Asking for more than the newest marker covers is capped at the marker.
    wal.release_to(1000).unwrap();
    let after = segment_files(dir);
    assert!(after.len() < before.len(), "nothing was released");
    assert!(after.len() >= 2);
    let first = &wal.segments()[0];
    assert!(first.first_index <= 60, "released a segment holding entries > 60");
    assert!(wal.segments()[1].first_index > 60, "kept a segment it could release");
    assert_eq!(after.len(), wal.segments().len());
    for p in &before[..before.len() - after.len()] {
        assert!(!p.exists());
    }

    // More appends after the release, then replay what remains.
    wal.append(&[ent(101, 3)], Some(&hs(3, 100))).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (mut wal, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.snapshot, Some(marker.clone()));
    assert_eq!(replay.hard_state, Some(hs(3, 100)));
    let expected: Vec<Entry> = (61..=100).map(|i| ent(i, 2)).chain([ent(101, 3)]).collect();
    assert_eq!(replay.entries, expected);

    // One segment per entry from here on; segments cut before a marker carry the older
    // marker in their header, and replay from the remaining suffix must still work.
    wal.set_segment_bytes_max(0);
    for i in 102..=110 {
        wal.append(&[ent(i, 3)], Some(&hs(3, i - 1))).unwrap();
    }
    let marker2 = SnapshotMarker { index: 108, term: 3, conf_state: b"voters=1,2".to_vec() };
    wal.save_snapshot(&marker2).unwrap();
    wal.release_to(108).unwrap();
    // The segment holding entry 108 is the oldest kept: everything before it held < 108.
    assert_eq!(wal.segments()[0].first_index, 108);
    assert_eq!(segment_files(dir).len(), wal.segments().len());
    drop(wal);
    let (_, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.snapshot, Some(marker2));
    assert_eq!(replay.hard_state, Some(hs(3, 109)));
    assert_eq!(replay.entries, vec![ent(109, 3), ent(110, 3)]);
}

#[test]
fn snapshot_marker_discards_older_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"m").unwrap();
    wal.append(&(1..=5).map(|i| ent(i, 1)).collect::<Vec<_>>(), None).unwrap();
    // A follower receives a snapshot far ahead of its log, then entries after it.
    let marker = SnapshotMarker { index: 50, term: 4, conf_state: vec![] };
    wal.save_snapshot(&marker).unwrap();
    assert_eq!(wal.last_index(), 50);
    wal.append(&[ent(51, 4)], Some(&hs(4, 51))).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wal, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.snapshot, Some(marker));
    assert_eq!(replay.entries, vec![ent(51, 4)]);
    assert_eq!(wal.last_index(), 51);
}

#[test]
fn unsynced_appends_are_not_durable_and_leftover_temp_segments_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"m").unwrap();
    wal.append(&[ent(1, 1)], None).unwrap();
    wal.sync().unwrap();
    wal.append(&[ent(2, 1)], None).unwrap();
    drop(wal); // never synced: still buffered
    let tmp_seg = dir.join("0000000000000001-0000000000000002.wal.tmp");
    fs::write(&tmp_seg, b"half a header").unwrap();
    let (_, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.entries, vec![ent(1, 1)]);
    assert!(!tmp_seg.exists(), "leftover temp segment was not removed");
}

#[test]
fn oversized_records_are_rejected_and_the_log_stays_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"m").unwrap();
    let mut big = ent(1, 1);
    big.data = vec![0; etcd_wal::MAX_RECORD_BYTES];
    let err = wal.append(&[ent(1, 1), big], Some(&hs(1, 0))).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    wal.append(&[ent(1, 2)], None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.entries, vec![ent(1, 2)]);
    assert_eq!(replay.hard_state, None);
}

#[test]
fn every_segment_header_restates_snapshot_and_hard_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"m").unwrap();
    let ents: Vec<Entry> = (1..=5).map(|i| ent(i, 1)).collect();
    wal.append(&ents, Some(&hs(1, 5))).unwrap();
    let marker = SnapshotMarker { index: 5, term: 1, conf_state: b"cs".to_vec() };
    wal.set_segment_bytes_max(0); // every write cuts a new segment after it
    wal.save_snapshot(&marker).unwrap();
    wal.append(&[ent(6, 1)], None).unwrap();
    wal.append(&[ent(7, 1)], None).unwrap();
    wal.sync().unwrap();
    let names: Vec<String> = wal
        .segments()
        .iter()
        .map(|s| s.path.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "0000000000000000-0000000000000000.wal",
            "0000000000000001-0000000000000006.wal",
            "0000000000000002-0000000000000007.wal",
            "0000000000000003-0000000000000008.wal",
        ]
    );
    drop(wal);
    // The suffix starting at the segment for entry 6 replays on its own.
    let suffix = tempfile::tempdir().unwrap();
    for name in &names[1..] {
        fs::copy(dir.join(name), suffix.path().join(name)).unwrap();
    }
    let (_, replay) = Wal::open(suffix.path()).unwrap();
    assert_eq!(replay.metadata, b"m");
    assert_eq!(replay.snapshot, Some(marker));
    assert_eq!(replay.hard_state, Some(hs(1, 5)));
    assert_eq!(replay.entries, vec![ent(6, 1), ent(7, 1)]);
}

#[test]
fn a_foreign_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0000000000000000-0000000000000000.wal");
    let foreign = b"written by something else, e.g. etcd's own WAL".repeat(8);
    fs::write(&path, &foreign).unwrap();
    assert_corrupt(Wal::open(dir.path()));
    assert_eq!(fs::read(&path).unwrap(), foreign, "open() modified a file it cannot read");
}

#[test]
fn fresh_segments_are_preallocated_to_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let supported = fallocate_supported(tmp.path());
    let metadata_record_len = 8 + 1 + 4 + b"meta".len() as u64;

    // The segment made by `create`, at the default limit.
    let dir = tmp.path().join("default");
    let wal = Wal::create(&dir, b"meta").unwrap();
    let first = wal.segments()[0].path.clone();
    if supported {
        assert_preallocated(&first, SEGMENT_BYTES_MAX);
    } else {
        assert_eq!(fs::metadata(&first).unwrap().len(), metadata_record_len);
    }
    drop(wal);
    let (_, replay) = Wal::open(&dir).unwrap();
    assert_eq!(replay.metadata, b"meta");
    assert_eq!(replay.torn_bytes, 0);

    // Segments made by `cut`.
    const LIMIT: u64 = 8 << 10;
    let dir = tmp.path().join("cut");
    let mut wal = Wal::create_with_segment_bytes_max(&dir, b"meta", LIMIT).unwrap();
    for i in 1..=300 {
        wal.append(&[ent(i, 1)], Some(&hs(1, i - 1))).unwrap();
        wal.sync().unwrap();
    }
    assert!(wal.segments().len() >= 3);
    for seg in wal.segments() {
        let len = fs::metadata(&seg.path).unwrap().len();
        if supported {
            // A segment is cut once its data exceeds the limit, so older ones may be longer.
            assert_preallocated(&seg.path, len.max(LIMIT));
        }
        let data = fs::read(&seg.path).unwrap();
        logical_len(&data);
    }
    if supported {
        assert_preallocated(&wal.segments().last().unwrap().path, LIMIT);
    }
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{names:?}");
}

#[test]
fn reopen_with_a_zero_tail_replays_exactly_and_appends_at_the_logical_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let supported = fallocate_supported(dir);
    let mut wal = Wal::create(dir, b"meta").unwrap();
    let seg = wal.segments()[0].path.clone();
    let mut written: Vec<Entry> = (1..=10).map(|i| ent(i, 1)).collect();
    wal.append(&written, Some(&hs(1, 10))).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let size = fs::metadata(&seg).unwrap().len();
    if supported {
        assert_eq!(size, SEGMENT_BYTES_MAX);
    }

    for round in 0..3u64 {
        let before = fs::read(&seg).unwrap();
        let logical = logical_len(&before);
        let (mut wal, replay) = Wal::open(dir).unwrap();
        assert_eq!(replay.entries, written, "round {round}");
        assert_eq!(replay.hard_state, Some(hs(1 + round, 10 + 3 * round)));
        assert_eq!(replay.torn_bytes, 0);
        assert_eq!(fs::read(&seg).unwrap(), before, "round {round}: open modified the segment");
        // Appends go right after the last record, inside the preallocated space.
        let more: Vec<Entry> = (0..3).map(|j| ent(11 + 3 * round + j, 2 + round)).collect();
        wal.append(&more, Some(&hs(2 + round, 13 + 3 * round))).unwrap();
        wal.sync().unwrap();
        written.extend(more);
        drop(wal);
        let after = fs::read(&seg).unwrap();
        assert_eq!(after.len() as u64, size, "round {round}: the append extended the file");
        assert_eq!(after[..logical], before[..logical], "round {round}");
        assert!(logical_len(&after) > logical);
    }
    let (_, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.entries, written);
    if supported {
        assert_preallocated(&seg, SEGMENT_BYTES_MAX);
    }
}

#[test]
fn older_segment_with_a_zero_tail_replays() {
    const LIMIT: u64 = 64 << 10;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create_with_segment_bytes_max(dir, b"meta", LIMIT).unwrap();
    wal.append(&(1..=3).map(|i| ent(i, 1)).collect::<Vec<_>>(), Some(&hs(1, 3))).unwrap();
    wal.sync().unwrap();
    // A lower limit cuts the next segments long before the first one's preallocated space is
    // used up, so it keeps a zero tail.
    wal.set_segment_bytes_max(200);
    for i in 4..=10 {
        wal.append(&[ent(i, 2)], Some(&hs(2, i))).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let segs = segment_files(dir);
    assert!(segs.len() >= 3);
    let first = fs::read(&segs[0]).unwrap();
    let logical = logical_len(&first);
    assert!(logical < first.len() || !fallocate_supported(dir), "no zero tail to test");

    let (_, replay) = Wal::open(dir).unwrap();
    assert_eq!(
        replay.entries,
        (1..=3).map(|i| ent(i, 1)).chain((4..=10).map(|i| ent(i, 2))).collect::<Vec<_>>()
    );
    assert_eq!(replay.hard_state, Some(hs(2, 10)));
    assert_eq!(replay.torn_bytes, 0);
    assert_eq!(fs::read(&segs[0]).unwrap(), first, "an older segment must not be modified");

    // A non-zero byte anywhere in that tail is still corruption in a non-last segment.
    if logical < first.len() {
        for pos in [logical, first.len() - 1] {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(dir, copy.path());
            let mut bytes = first.clone();
            bytes[pos] = 1;
            fs::write(copy.path().join(segs[0].file_name().unwrap()), &bytes).unwrap();
            let msg = assert_corrupt(Wal::open(copy.path()));
            assert!(msg.contains("not the newest"), "{msg}");
        }
    }
}
