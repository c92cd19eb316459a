//! Writer -> Reader round trips.

mod common;

use std::io::Cursor;

use common::{assert_content, random_content, round_trip, Content, Rng};
use etcd_bbolt::{Error, Reader, Writer, DEFAULT_PAGE_SIZE, MAX_KEY_SIZE};

fn kv(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (k.to_vec(), v.to_vec())
}

#[test]
fn empty_file() {
    let r = round_trip(&Vec::new(), DEFAULT_PAGE_SIZE);
    // Two metas, the freelist and the root bucket's empty leaf.
    assert_eq!(r.len(), 4 * 4096);
    assert_eq!(r.page_count(), 4);
    assert_eq!(r.txid(), 1);
    assert!(r.buckets().unwrap().is_empty());
    assert_content(&r, &Vec::new());
    let report = r.check().unwrap();
    assert_eq!((report.tree_pages, report.free_pages, report.freelist_pages), (1, 0, 1));
    assert_eq!(r.free_pages().unwrap(), Some(vec![]));

    // bbolt reads 4096 bytes to find the page size: smaller pages are padded.
    let r = round_trip(&Vec::new(), 512);
    assert_eq!((r.len(), r.page_count()), (4096, 4));
    assert_content(&r, &Vec::new());
}

#[test]
fn empty_buckets_are_inline() {
    let content: Content =
        ["a", "b", "key", "zz"].iter().map(|n| (n.as_bytes().to_vec(), vec![])).collect();
    let r = round_trip(&content, DEFAULT_PAGE_SIZE);
    assert_content(&r, &content);
    assert_eq!(r.check().unwrap().inline_buckets, 4);
    assert_eq!(r.page_count(), 4);
    assert!(!r.scan_bucket::<Error>(b"c", &mut |_, _| Ok(())).unwrap());
    assert!(!r.scan_bucket::<Error>(b"0", &mut |_, _| Ok(())).unwrap());
    assert!(!r.scan_bucket::<Error>(b"zzz", &mut |_, _| Ok(())).unwrap());
}

#[test]
fn one_key() {
    let content = vec![(b"b".to_vec(), vec![kv(b"k", b"v")])];
    let r = round_trip(&content, DEFAULT_PAGE_SIZE);
    assert_content(&r, &content);
}

#[test]
fn inline_threshold_is_a_quarter_page() {
    // A leaf of exactly page_size / 4 bytes is inline, one byte more is not.
    for (extra, inline) in [(0usize, 1u64), (1, 0)] {
        let value = vec![7u8; 1024 - 16 - 16 - 1 + extra];
        let content = vec![(b"b".to_vec(), vec![(b"k".to_vec(), value)])];
        let r = round_trip(&content, DEFAULT_PAGE_SIZE);
        assert_content(&r, &content);
        assert_eq!(r.check().unwrap().inline_buckets, inline, "extra {extra}");
    }
}

#[test]
fn many_small_keys() {
    let keys: Vec<(Vec<u8>, Vec<u8>)> = (0u64..100_000)
        .map(|i| (i.to_be_bytes().to_vec(), (i * 7).to_le_bytes()[..(i % 9) as usize].to_vec()))
        .collect();
    let content = vec![
        (b"a".to_vec(), vec![kv(b"x", b"y")]),
        (b"key".to_vec(), keys),
        (b"z".to_vec(), vec![]),
    ];
    let r = round_trip(&content, DEFAULT_PAGE_SIZE);
    assert_content(&r, &content);
    let report = r.check().unwrap();
    assert!(report.depth >= 3, "{report:?}");
    assert_eq!(report.free_pages, 0);
}

#[test]
fn value_and_key_sizes() {
    let ps = DEFAULT_PAGE_SIZE as usize;
    let mut rng = Rng::new(1);
    let sizes = [0, 1, ps - 48, ps - 33, ps - 32, ps, ps + 1, 10 * ps, 10 * ps + 17, 1 << 20];
    let values: Vec<(Vec<u8>, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("v{i:02}").into_bytes(), rng.bytes(n)))
        .collect();
    let key_sizes = [1, 100, ps - 32, ps, 5000, 20000, MAX_KEY_SIZE - 1, MAX_KEY_SIZE];
    let keys: Vec<(Vec<u8>, Vec<u8>)> = key_sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut k = vec![b'a' + i as u8; n];
            k[0] = b'a' + i as u8;
            (k, format!("{n}").into_bytes())
        })
        .collect();
    // Long keys in a big bucket, so they also appear in branch pages.
    let many_long: Vec<(Vec<u8>, Vec<u8>)> = (0u32..40)
        .map(|i| {
            let mut k = vec![0u8; 9000];
            k[..4].copy_from_slice(&i.to_be_bytes());
            (k, rng.bytes(i as usize * 100))
        })
        .collect();
    let content = vec![
        (b"keys".to_vec(), keys),
        (b"long".to_vec(), many_long),
        (b"values".to_vec(), values),
        (b"zero".to_vec(), vec![kv(b"a", b""), kv(b"b", b"")]),
    ];
    for ps in [512, 4096, 65536] {
        let r = round_trip(&content, ps);
        assert_content(&r, &content);
        // Every page takes at least two elements, so the trees fan out.
        let depth = r.check().unwrap().depth;
        assert!(depth <= 8, "page size {ps}: depth {depth}");
    }
}

#[test]
fn random_round_trips() {
    let mut rng = Rng::new(0x5eed);
    for _ in 0..150 {
        let ps = [512, 1024, 4096, 4096, 16384][rng.below(5) as usize];
        let content = random_content(&mut rng, 6, ps);
        let r = round_trip(&content, ps);
        assert_content(&r, &content);
    }
}

#[test]
fn writes_into_a_cursor_and_a_snapshot_trailer_is_ignored() {
    let content = vec![(b"key".to_vec(), vec![kv(b"1", b"one"), kv(b"2", b"two")])];
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    w.bucket(b"key").unwrap();
    w.put(b"1", b"one").unwrap();
    w.put(b"2", b"two").unwrap();
    let (mut cur, len) = w.finish().unwrap();
    assert_eq!(cur.position(), len);
    std::io::Write::write_all(&mut cur, &[0xAB; 32]).unwrap();
    let bytes = cur.into_inner();
    assert_eq!(bytes.len() as u64, len + 32);
    let mut f = tempfile::tempfile().unwrap();
    common::overwrite(&mut f, &bytes);
    let r = Reader::from_file(f, len).unwrap();
    assert_content(&r, &content);
}

#[test]
fn writer_misuse() {
    let usage = |r: Result<(), Error>| match r {
        Err(Error::Usage(m)) => m,
        other => panic!("expected a usage error, got {other:?}"),
    };
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    assert!(usage(w.put(b"k", b"v")).contains("before the first bucket"));
    assert!(usage(w.bucket(b"")).contains("empty"));
    w.bucket(b"m").unwrap();
    assert!(usage(w.bucket(b"m")).contains("does not come after"));
    assert!(usage(w.bucket(b"a")).contains("does not come after"));
    assert!(usage(w.bucket(&vec![b'z'; MAX_KEY_SIZE + 1])).contains("longer"));
    assert!(usage(w.put(b"", b"v")).contains("empty key"));
    w.put(b"b", b"v").unwrap();
    assert!(usage(w.put(b"b", b"v")).contains("does not come after"));
    assert!(usage(w.put(b"a", b"v")).contains("does not come after"));
    assert!(usage(w.put(&vec![b'z'; MAX_KEY_SIZE + 1], b"v")).contains("longer"));
    w.put(b"c", b"v").unwrap();
    // A new bucket restarts the key order.
    w.bucket(b"n").unwrap();
    w.put(b"a", b"v").unwrap();
    let (cur, len) = w.finish().unwrap();
    assert_eq!(cur.get_ref().len() as u64, len);
    for ps in [0, 256, 4095, 1 << 21] {
        assert!(matches!(
            Writer::with_page_size(Cursor::new(Vec::new()), ps),
            Err(Error::Usage(_))
        ));
    }
}
