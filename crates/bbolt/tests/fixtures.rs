//! Files written by the real thing: an etcd 3.4 snapshot and a file made by
//! Go's bbolt through many transactions (see testdata/*.txt and
//! testdata/gen/main.go).

mod common;

use std::fs::File;

use common::{read_all, testdata, Content};
use etcd_bbolt::{Error, Reader};
use sha2::{Digest, Sha256};

/// Opens an etcd snapshot file: the bbolt file then a SHA-256 of it.
fn open_snapshot(name: &str) -> Reader {
    let path = testdata(name);
    let bytes = std::fs::read(&path).unwrap();
    let len = bytes.len() as u64 - 32;
    assert_eq!(
        Sha256::digest(&bytes[..len as usize]).as_slice(),
        &bytes[len as usize..],
        "snapshot trailer"
    );
    Reader::from_file(File::open(&path).unwrap(), len).unwrap()
}

fn count(content: &Content, bucket: &str) -> usize {
    content
        .iter()
        .find(|(n, _)| n == bucket.as_bytes())
        .map(|(_, e)| e.len())
        .unwrap_or_else(|| panic!("no bucket {bucket}"))
}

fn get<'a>(content: &'a Content, bucket: &str, key: &[u8]) -> &'a [u8] {
    let (_, entries) = content.iter().find(|(n, _)| n == bucket.as_bytes()).unwrap();
    &entries.iter().find(|(k, _)| k == key).unwrap().1
}

/// An etcd revision key: main revision, '_', sub revision, all big-endian.
fn rev_key(main: u64, sub: u64) -> Vec<u8> {
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

#[test]
fn etcd_34_snapshot() {
    let r = open_snapshot("etcd34.snap.db");
    assert_eq!(r.page_size(), 4096);
    assert_eq!(r.len(), 155_648);
    // tx.WriteTo writes the meta twice, page 1 with the txid one lower.
    assert_eq!(r.txid(), 58);
    let names: Vec<String> =
        r.buckets().unwrap().into_iter().map(|n| String::from_utf8(n).unwrap()).collect();
    assert_eq!(
        names,
        [
            "alarm",
            "auth",
            "authRoles",
            "authUsers",
            "cluster",
            "key",
            "lease",
            "members",
            "members_removed",
            "meta"
        ]
    );

    let content = read_all(&r).unwrap();
    // What `etcdctl snapshot status -w json` said (testdata/etcd34.snap.txt):
    // {"hash":2762516576,"revision":321,"totalKey":327,"totalSize":155648}.
    let total: usize = content.iter().map(|(_, e)| e.len()).sum();
    assert_eq!(total, 327);
    let mut hash = 0u32;
    for (name, entries) in &content {
        hash = crc32c::crc32c_append(hash, name);
        for (k, v) in entries {
            hash = crc32c::crc32c_append(hash, k);
            hash = crc32c::crc32c_append(hash, v);
        }
    }
    assert_eq!(hash, 2_762_516_576);
    let (_, keys) = &content[5];
    let (last, _) = keys.last().unwrap();
    assert_eq!(u64::from_be_bytes(last[..8].try_into().unwrap()), 321);

    for (bucket, n) in [
        ("alarm", 0),
        ("auth", 1),
        ("authRoles", 0),
        ("authUsers", 0),
        ("cluster", 1),
        ("key", 320),
        ("lease", 1),
        ("members", 1),
        ("members_removed", 0),
        ("meta", 3),
    ] {
        assert_eq!(count(&content, bucket), n, "bucket {bucket}");
    }
    assert_eq!(get(&content, "cluster", b"clusterVersion"), b"3.4.0");
    assert_eq!(get(&content, "auth", b"authRevision"), 1u64.to_be_bytes());
    // Compacted at revision 307.
    assert_eq!(get(&content, "meta", b"finishedCompactRev"), rev_key(307, 0));
    assert_eq!(get(&content, "meta", b"scheduledCompactRev"), rev_key(307, 0));
    // Two deletions left tombstones (revision key + 't'): k/000 and big/4.
    assert_eq!(keys.iter().filter(|(k, _)| k.len() == 18 && k[17] == b't').count(), 2);
    assert!(keys.iter().all(|(k, _)| k.len() == 17 || k.len() == 18));
    // The mvccpb.KeyValue of k/150 holds its key and value.
    let find = |needle: &[u8]| {
        keys.iter().filter(|(_, v)| v.windows(needle.len()).any(|w| w == needle)).count()
    };
    assert_eq!(find(b"\x0a\x05k/150"), 1);
    assert_eq!(find(b"v150"), 1);
    // k/001 was put twice; both revisions are after the compaction point.
    assert_eq!(find(b"\x0a\x05k/001"), 2);
    // 10 KB values (the test put them as 10240 times one letter).
    for c in b"abcd" {
        let big = vec![*c; 10240];
        assert_eq!(find(&big), 1, "big value of {}", *c as char);
    }
    // The lease: leasepb.Lease{ID, TTL: 3600}, TTL encoded as 0x10 0x90 0x1c.
    let (_, leases) = content.iter().find(|(n, _)| n == b"lease").unwrap();
    assert!(leases[0].1.ends_with(&[0x10, 0x90, 0x1c]));
    let members = String::from_utf8(content[7].1[0].1.clone()).unwrap();
    assert!(members.contains("\"peerURLs\":[\"http://127.0.0.1:23800\"]"), "{members}");

    // scan_bucket agrees with walk.
    let mut n = 0;
    assert!(r
        .scan_bucket::<Error>(b"key", &mut |k, v| {
            assert_eq!((k, v), (&keys[n].0[..], &keys[n].1[..]));
            n += 1;
            Ok(())
        })
        .unwrap());
    assert_eq!(n, 320);
    assert!(!r.scan_bucket::<Error>(b"nope", &mut |_, _| Ok(())).unwrap());

    // etcd 3.4 sets NoFreelistSync: no freelist page; pages freed by earlier
    // transactions are simply not reachable.
    let report = r.check().unwrap();
    eprintln!("etcd34.snap.db: {report:?}");
    assert!(!report.freelist_stored);
    assert_eq!(r.free_pages().unwrap(), None);
    assert_eq!(report.pages, 38);
    assert_eq!(report.tree_pages + report.free_pages + 2, 38);
    assert!(report.free_pages > 0, "{report:?}");
}

// Mirrors testdata/gen/main.go.
const BIG_N: usize = 1000;

fn big_key(i: usize) -> Vec<u8> {
    format!("{i:08}").into_bytes()
}

fn big_val(i: usize, generation: usize) -> Vec<u8> {
    (0..(i + generation) % 9).map(|j| (i * 31 + j * 7 + generation) as u8).collect()
}

fn blob(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|j| ((j * 13 + seed) % 251) as u8).collect()
}

/// The final content gen.db holds, per testdata/gen/main.go.
fn gen_expected() -> Content {
    let big = (0..BIG_N)
        .filter(|i| i % 5 != 0)
        .map(|i| (big_key(i), big_val(i, usize::from(i % 11 == 0))))
        .collect();
    let blob_sizes = [300, 512, 1000, 3000];
    let blobs = blob_sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let v = if k == 2 { blob(2000, 42) } else { blob(n, k) };
            (format!("b{k}").into_bytes(), v)
        })
        .collect();
    let inline = [("a", "1"), ("b", "2"), ("c", "3")]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let single = (0..4).map(|i| (format!("s{i}").into_bytes(), blob(20, 100 + i))).collect();
    vec![
        (b"big".to_vec(), big),
        (b"blobs".to_vec(), blobs),
        (b"empty".to_vec(), vec![]),
        (b"inline".to_vec(), inline),
        (b"single".to_vec(), single),
    ]
}

#[test]
fn go_bbolt_file() {
    let r = Reader::open(&testdata("gen.db")).unwrap();
    assert_eq!(r.page_size(), 512);
    // Both metas are real commits: 28 (page 0) and 27 (page 1).
    assert_eq!(r.txid(), 28);
    let expected = gen_expected();
    common::assert_content(&r, &expected);
    assert!(!r.scan_bucket::<Error>(b"gone", &mut |_, _| Ok(())).unwrap());

    let report = r.check().unwrap();
    eprintln!("gen.db: {report:?}");
    assert!(report.freelist_stored);
    assert!(report.depth >= 3, "{report:?}");
    assert!(report.freelist_pages > 1, "{report:?}");
    assert_eq!(report.inline_buckets, 2); // "empty" and "inline"
    let free = r.free_pages().unwrap().unwrap();
    assert_eq!(free.len() as u64, report.free_pages);
    assert!(free.len() > 100, "{report:?}");
    assert_eq!(report.tree_pages + report.freelist_pages + report.free_pages + 2, report.pages);
}

#[test]
fn nested_bucket_is_refused() {
    let r = Reader::open(&testdata("nested.db")).unwrap();
    assert_eq!(r.buckets().unwrap(), vec![b"outer".to_vec()]);
    let err = read_all(&r).unwrap_err().to_string();
    assert!(err.contains("bucket \"outer\": nested bucket \"inner\" not supported"), "{err}");
    let err = r.scan_bucket::<Error>(b"outer", &mut |_, _| Ok(())).unwrap_err().to_string();
    assert!(err.contains("nested bucket"), "{err}");
    assert!(matches!(r.check(), Err(Error::Corrupt(_))));
}
