//! The WAL after a crash or damage: torn tails repaired, holes in the unsynced tail taken
//! for its end, corruption refused, unreadable directories reported.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use etcd_wal::{Entry, HardState, Wal};

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
