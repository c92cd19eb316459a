use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use etcd_wal::{Entry, Error, HardState, Replay, SnapshotMarker, Wal, SEGMENT_BYTES_MAX};

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        entry_type: (index % 3) as u8,
        data: format!("data-{index}-{term}").into_bytes(),
        context: if index.is_multiple_of(2) { vec![index as u8; 3] } else { Vec::new() },
    }
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState { term, vote: term % 3 + 1, commit }
}

/// Segment files of `dir`, sorted by name (= by seq).
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Tiny deterministic PRNG (xorshift64*), so the tests need no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Offsets just past each record of a segment's bytes, read from the length fields, up to the
/// first zero length (the start of the zero-filled preallocated space). The last one is the
/// logical end of the segment's data.
fn record_ends(data: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut off = 0;
    while off + 8 <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 || off + 8 + len > data.len() {
            break;
        }
        off += 8 + len;
        ends.push(off);
    }
    ends
}

fn logical_len(data: &[u8]) -> usize {
    let end = record_ends(data).last().copied().unwrap_or(0);
    assert!(is_zero(&data[end..]), "bytes after the last record must be zero");
    end
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Length of `b` up to and including its last non-zero byte.
fn nonzero_len(b: &[u8]) -> usize {
    b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1)
}

/// True if the filesystem under `dir` supports `fallocate` (probed on a scratch file).
fn fallocate_supported(dir: &Path) -> bool {
    let probe = dir.join("fallocate-probe");
    let f = fs::File::create(&probe).unwrap();
    let ok = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 1 << 16).is_ok();
    fs::remove_file(&probe).unwrap();
    ok
}

/// Asserts that `path` is `len` bytes long with disk blocks allocated for all of them (not a
/// sparse file).
fn assert_preallocated(path: &Path, len: u64) {
    let m = fs::metadata(path).unwrap();
    assert_eq!(m.len(), len, "{}: file size", path.display());
    assert!(
        m.blocks() * 512 >= len,
        "{}: only {} bytes of {len} are allocated",
        path.display(),
        m.blocks() * 512
    );
}

fn assert_corrupt(r: Result<(Wal, Replay), Error>) -> String {
    match r {
        Err(e @ Error::Corrupt { .. }) => e.to_string(),
        Err(e) => panic!("expected Error::Corrupt, got {e:?}"),
        Ok((_, replay)) => panic!("expected Error::Corrupt, got a replay: {replay:?}"),
    }
}

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

/// Builds a log with `n` entries, each followed by a hard state, one sync per entry.
/// Returns the written entries and hard states.
/// `segment_bytes` sets the segment size limit (and preallocation) from the first segment on.
fn build_log(dir: &Path, n: u64, segment_bytes: Option<u64>) -> (Vec<Entry>, Vec<HardState>) {
    let mut wal = match segment_bytes {
        Some(b) => Wal::create_with_segment_bytes_max(dir, b"meta", b).unwrap(),
        None => Wal::create(dir, b"meta").unwrap(),
    };
    let (mut ents, mut hss) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let e = ent(i, 1 + i / 4);
        let h = hs(1 + i / 4, i.saturating_sub(1));
        wal.append(std::slice::from_ref(&e), Some(&h)).unwrap();
        wal.sync().unwrap();
        ents.push(e);
        hss.push(h);
    }
    (ents, hss)
}

/// Cuts the data of the last segment of a copy of `src` at every byte up to its logical end (the
/// end of its last record) and checks that the log opens to a valid prefix, that the repair
/// leaves the intact records followed by zeros, and that the log still accepts appends. The
/// crash is simulated two ways: inside the preallocated space (zeros after the cut, the file
/// keeps its size) and at the end of the file (a segment that could not be preallocated).
fn torn_tail_every_byte(src: &Path, ents: &[Entry], hss: &[HardState], single_segment: bool) {
    let last = segment_files(src).pop().unwrap();
    let full = fs::read(&last).unwrap();
    let ends = record_ends(&full);
    let logical = logical_len(&full);
    for preallocated in [true, false] {
        let mut prev_len = 0;
        for cut in 0..=logical {
            let tmp = tempfile::tempdir().unwrap();
            copy_dir(src, tmp.path());
            let seg = tmp.path().join(last.file_name().unwrap());
            let before = if preallocated {
                let mut b = full.clone();
                b[cut..].fill(0);
                b
            } else {
                full[..cut].to_vec()
            };
            fs::write(&seg, &before).unwrap();
            // The records left intact (zeroing bytes that were zero anyway keeps one intact).
            let valid_end = ends
                .iter()
                .copied()
                .filter(|&e| e <= before.len() && before[..e] == full[..e])
                .max()
                .unwrap_or(0);
            let opened = Wal::open(tmp.path());
            if single_segment && valid_end == 0 {
                // Only a lost, fsynced segment header can cause this; metadata is unrecoverable.
                assert_corrupt(opened);
                assert_eq!(fs::read(&seg).unwrap(), before, "cut at {cut}: refusing repaired");
                continue;
            }
            let (mut wal, replay) = opened.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let k = replay.entries.len();
            assert_eq!(replay.entries[..], ents[..k], "cut at {cut}: entries are not a prefix");
            assert!(k >= prev_len, "cut at {cut}: replay lost entries a shorter cut kept");
            prev_len = k;
            if let Some(h) = replay.hard_state {
                assert!(hss.contains(&h), "cut at {cut}: hard state {h:?} was never written");
            }
            // What was cut off is the damaged bytes up to the last non-zero one; on disk the
            // intact records remain, followed by zeros up to the former size (the segment is
            // re-allocated), unless the segment was left empty and removed.
            let torn = nonzero_len(&before[valid_end..]) as u64;
            assert_eq!(replay.torn_bytes, torn, "cut at {cut}");
            match fs::read(&seg) {
                Ok(after) => {
                    assert_eq!(after.len(), before.len(), "cut at {cut}: segment size changed");
                    assert_eq!(after[..valid_end], full[..valid_end], "cut at {cut}");
                    assert!(is_zero(&after[valid_end..]), "cut at {cut}: tail not repaired");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    assert!(!single_segment && valid_end == 0, "cut at {cut}: segment removed");
                }
                Err(e) => panic!("cut at {cut}: {e}"),
            }
            // The repaired log accepts appends, and they survive a reopen.
            let next = ent(k as u64 + 1, 99);
            wal.append(std::slice::from_ref(&next), Some(&hs(99, 1))).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (_, again) =
                Wal::open(tmp.path()).unwrap_or_else(|e| panic!("cut at {cut}, reopen: {e}"));
            assert_eq!(again.entries.len(), k + 1, "cut at {cut}");
            assert_eq!(again.entries[..k], ents[..k]);
            assert_eq!(again.entries[k], next);
            assert_eq!(again.hard_state, Some(hs(99, 1)));
            assert_eq!(again.torn_bytes, 0);
        }
        assert_eq!(prev_len, ents.len(), "the untruncated log must replay in full");
    }
}

#[test]
fn torn_tail_at_every_byte_single_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let (ents, hss) = build_log(tmp.path(), 12, Some(4096));
    assert_eq!(segment_files(tmp.path()).len(), 1);
    torn_tail_every_byte(tmp.path(), &ents, &hss, true);
}

#[test]
fn torn_tail_at_every_byte_of_last_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let (ents, hss) = build_log(tmp.path(), 30, Some(400));
    assert!(segment_files(tmp.path()).len() >= 3);
    torn_tail_every_byte(tmp.path(), &ents, &hss, false);
}

#[test]
fn garbage_at_the_tail_is_repaired() {
    const SEGMENT: usize = 16 << 10;
    let tmp = tempfile::tempdir().unwrap();
    let (ents, hss) = build_log(tmp.path(), 8, Some(SEGMENT as u64));
    let seg = segment_files(tmp.path()).pop().unwrap();
    let good = fs::read(&seg).unwrap();
    if fallocate_supported(tmp.path()) {
        assert_eq!(good.len(), SEGMENT);
    }
    // The records; preallocated space (zeros) follows them.
    let logical = logical_len(&good);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tails: Vec<Vec<u8>> = vec![
        // Zeros are preallocated space, not damage.
        vec![0; 1],
        vec![0; 7],
        vec![0; 4096],
        // A header promising a huge record, then nothing.
        vec![0xff, 0xff, 0xff, 0x00, 1, 2, 3, 4, 2],
        // A plausible header whose body never made it to disk.
        vec![40, 0, 0, 0, 1, 2, 3, 4, 2, 0, 0],
        // A block that reached the disk after one that did not.
        [vec![0; 600], vec![0xab; 100]].concat(),
    ];
    for n in [1, 3, 8, 9, 100, 5000] {
        tails.push(rng.bytes(n));
    }
    for tail in tails {
        // Garbage written into the preallocated space (the file keeps its size), or at the end
        // of a segment that could not be preallocated (the file grows).
        for preallocated in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(tmp.path(), dir.path());
            let seg = dir.path().join(seg.file_name().unwrap());
            let size = if preallocated { SEGMENT } else { logical + tail.len() };
            let mut bytes = good[..logical].to_vec();
            bytes.extend_from_slice(&tail);
            bytes.resize(size, 0);
            fs::write(&seg, &bytes).unwrap();
            let (mut wal, replay) = Wal::open(dir.path()).unwrap();
            assert_eq!(replay.entries, ents);
            assert_eq!(replay.hard_state, hss.last().copied());
            // Zeros after the last non-zero byte are preallocated space, not torn bytes.
            assert_eq!(replay.torn_bytes, nonzero_len(&tail) as u64);
            let mut repaired = good[..logical].to_vec();
            repaired.resize(size, 0);
            assert_eq!(fs::read(&seg).unwrap(), repaired, "the tail must be zeroed on disk");
            wal.append(&[ent(9, 5)], None).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (_, replay) = Wal::open(dir.path()).unwrap();
            assert_eq!(replay.entries.len(), 9);
            assert_eq!(replay.torn_bytes, 0);
        }
    }
}

#[test]
fn flipped_byte_in_an_early_record_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    build_log(tmp.path(), 6, Some(4096));
    let seg = segment_files(tmp.path()).pop().unwrap();
    let good = fs::read(&seg).unwrap();
    // Records: metadata (17 bytes), then entry 1 starts at offset 17.
    let start = 8 + 1 + 4 + 4;
    let entry_len = 8 + u32::from_le_bytes(good[start..start + 4].try_into().unwrap()) as usize;
    for pos in start..start + entry_len {
        for mask in [0x01u8, 0x80, 0xff] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = good.clone();
            bytes[pos] ^= mask;
            fs::write(dir.path().join(seg.file_name().unwrap()), &bytes).unwrap();
            let msg = assert_corrupt(Wal::open(dir.path()));
            assert!(msg.contains("followed by a valid record"), "{msg}");
            assert!(msg.contains("re-add"), "{msg}");
            // Refusing must not repair anything.
            assert_eq!(fs::read(dir.path().join(seg.file_name().unwrap())).unwrap(), bytes);
        }
    }
    // Flipping a byte in the metadata record is corruption too.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = good.clone();
    bytes[12] ^= 1;
    fs::write(dir.path().join(seg.file_name().unwrap()), &bytes).unwrap();
    assert_corrupt(Wal::open(dir.path()));
}

#[test]
fn damage_in_a_non_last_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    build_log(tmp.path(), 20, Some(300));
    let segs = segment_files(tmp.path());
    assert!(segs.len() >= 3);
    let victim = segs[segs.len() - 2].file_name().unwrap().to_owned();
    let good = fs::read(&segs[segs.len() - 2]).unwrap();
    let logical = logical_len(&good);

    // A flipped byte in the final record of a non-last segment (nothing valid after it in
    // that file) is still corruption.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), dir.path());
    let mut bytes = good.clone();
    bytes[logical - 1] ^= 0x10;
    fs::write(dir.path().join(&victim), &bytes).unwrap();
    let msg = assert_corrupt(Wal::open(dir.path()));
    assert!(msg.contains("not the newest"), "{msg}");

    // So is a non-last segment with a truncated tail (within preallocated space or at the end
    // of the file), or with non-zero garbage after its last record.
    let mut zeroed = good.clone();
    zeroed[nonzero_len(&good) - 1..].fill(0);
    let garbage = [&good[..logical], &[0u8; 16][..], &[7u8][..]].concat();
    for bytes in [good[..logical - 3].to_vec(), zeroed, garbage] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(tmp.path(), dir.path());
        fs::write(dir.path().join(&victim), &bytes).unwrap();
        assert_corrupt(Wal::open(dir.path()));
    }

    // A missing segment in the middle breaks the seq chain.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), dir.path());
    fs::remove_file(dir.path().join(&victim)).unwrap();
    let msg = assert_corrupt(Wal::open(dir.path()));
    assert!(msg.contains("missing"), "{msg}");
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
fn gap_in_entries_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"m").unwrap();
    wal.append(&[ent(1, 1), ent(2, 1), ent(5, 1)], None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let msg = assert_corrupt(Wal::open(dir));
    assert!(msg.contains("entries are missing"), "{msg}");
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
fn torn_record_inside_the_preallocated_space_is_repaired() {
    const LIMIT: u64 = 64 << 10;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let supported = fallocate_supported(dir);
    let (ents, hss) = build_log(dir, 5, Some(LIMIT));
    let seg = segment_files(dir).pop().unwrap();
    let good = fs::read(&seg).unwrap();
    let logical = logical_len(&good);
    let ends = record_ends(&good);
    // A crash part-way through writing a copy of the last entry record at the logical end:
    // its first half reached the disk, the preallocated zeros after it are untouched.
    let (start, end) = (ends[ends.len() - 3], ends[ends.len() - 2]);
    let partial = &good[start..start + (end - start) / 2];
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(partial, logical as u64).unwrap();
    drop(f);

    let (mut wal, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.entries, ents);
    assert_eq!(replay.hard_state, hss.last().copied());
    assert_eq!(replay.torn_bytes, nonzero_len(partial) as u64);
    assert_eq!(fs::read(&seg).unwrap(), good, "the torn record must be zeroed on disk");
    if supported {
        assert_preallocated(&seg, LIMIT);
    }
    wal.append(&[ent(6, 9)], Some(&hs(9, 6))).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(dir).unwrap();
    assert_eq!(replay.entries.len(), 6);
    assert_eq!(replay.entries[5], ent(6, 9));
    assert_eq!(replay.hard_state, Some(hs(9, 6)));
    assert_eq!(replay.torn_bytes, 0);
    if supported {
        assert_preallocated(&seg, LIMIT);
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

/// A crash flushed the writes since the last fsync out of order: a sector in the middle of the
/// last segment's tail never reached the disk (zeros) while later ones did. The log ends before
/// the first record that sector belonged to, as etcd's torn-entry rule has it, and the records
/// after it (never fsynced) are dropped; a byte changed instead of missing stays corruption
/// (`flipped_byte_in_an_early_record_is_corruption`).
#[test]
fn a_missing_sector_in_the_last_segment_ends_the_log_there() {
    let src = tempfile::tempdir().unwrap();
    let (ents, _) = build_log(src.path(), 120, Some(64 * 1024));
    let seg = segment_files(src.path()).pop().unwrap();
    let good = fs::read(&seg).unwrap();
    let ends = record_ends(&good);
    let logical = *ends.last().unwrap();
    assert!(logical > 4 * 512, "the log spans several sectors ({logical} bytes)");
    for sector in 1..logical / 512 {
        let (start, end) = (sector * 512, sector * 512 + 512);
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = good.clone();
        bytes[start..end].fill(0);
        let path = dir.path().join(seg.file_name().unwrap());
        fs::write(&path, &bytes).unwrap();
        let (mut wal, replay) = Wal::open(dir.path()).expect("a missing sector is a torn tail");
        // The log ends at the first record the zeros changed (bytes that were zero already,
        // as in the high bytes of a hard state's numbers, change nothing).
        let starts = std::iter::once(0).chain(ends.iter().copied());
        let cut = starts
            .zip(ends.iter().copied())
            .find(|&(s, e)| bytes[s..e] != good[s..e])
            .map(|(s, _)| s)
            .unwrap();
        assert_eq!(replay.torn_bytes as usize, nonzero_len(&bytes) - cut, "sector {sector}");
        let kept = replay.entries.len();
        assert_eq!(replay.entries[..], ents[..kept], "sector {sector}: a prefix");
        assert!(kept < ents.len(), "sector {sector}: the tail is gone");
        let repaired = fs::read(&path).unwrap();
        assert_eq!(repaired[..cut], good[..cut], "sector {sector}: intact records kept");
        assert!(is_zero(&repaired[cut..]), "sector {sector}: nothing after the cut");
        // The log goes on after it.
        let next = ent(kept as u64 + 1, 99);
        wal.append(std::slice::from_ref(&next), None).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, again) = Wal::open(dir.path()).unwrap();
        assert_eq!(again.entries.last(), Some(&next), "sector {sector}");
        assert_eq!(again.torn_bytes, 0);
    }
}

/// The operating system's files, except that a directory cannot be listed (a permission
/// or I/O error on the WAL directory).
#[derive(Debug)]
struct Unlistable;

impl etcd_wal::Fs for Unlistable {
    type File = <etcd_wal::OsFs as etcd_wal::Fs>::File;
    fn exists(&self, path: &Path) -> bool {
        etcd_wal::OsFs.exists(path)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        etcd_wal::OsFs.create_dir_all(dir)
    }
    fn list(&self, _: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
        Err(std::io::Error::other("cannot read the directory"))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        etcd_wal::OsFs.read(path)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        etcd_wal::OsFs.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        etcd_wal::OsFs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        etcd_wal::OsFs.sync_dir(dir)
    }
    fn create(&self, path: &Path) -> std::io::Result<Self::File> {
        etcd_wal::OsFs.create(path)
    }
    fn open_write(&self, path: &Path) -> std::io::Result<Self::File> {
        etcd_wal::OsFs.open_write(path)
    }
}

/// A WAL directory that cannot be read is not "no WAL": a member that took it for one would
/// start over as a new member on top of its data (found by the simulator, seed 11).
#[test]
fn an_unreadable_wal_directory_is_an_error_not_an_empty_log() {
    use etcd_wal::Fs as _;
    let tmp = tempfile::tempdir().unwrap();
    build_log(tmp.path(), 3, None);
    let before = segment_files(tmp.path());
    assert!(Wal::exists_on(&etcd_wal::OsFs, tmp.path()).unwrap());
    assert!(Wal::exists_on(&Unlistable, tmp.path()).is_err());
    assert!(Wal::create_on(Unlistable, tmp.path(), b"meta", 1 << 16).is_err());
    assert!(Wal::open_on(Unlistable, tmp.path()).is_err());
    assert_eq!(segment_files(tmp.path()), before, "nothing written");
    // A directory that does not exist holds no WAL.
    assert!(!Wal::exists_on(&Unlistable, &tmp.path().join("absent")).unwrap());
    assert!(!etcd_wal::OsFs.exists(&tmp.path().join("absent")));
}
