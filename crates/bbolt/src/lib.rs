//! Reads and writes the bbolt database file format: the format of
//! go.etcd.io/bbolt 1.3, which etcd 3.4 and 3.5 use for their backend and for
//! the file `etcdctl snapshot save` makes (that file is the bbolt file followed
//! by a 32-byte SHA-256 of it).
//!
//! [`Writer`] streams a fresh file from buckets and keys given in order;
//! [`Reader`] walks an existing file, written by bbolt through any number of
//! transactions, checking every structure it reads against the file's bounds.
//! Only top-level buckets holding plain keys are supported, which is all etcd
//! makes; a bucket nested in a bucket is reported as an error by the reader.
//!
//! # The format
//!
//! All integers are little-endian (bbolt writes its structures in the byte
//! order of the machine; every platform etcd supports is little-endian). Sizes
//! below are in bytes.
//!
//! ## Pages
//!
//! The file is a sequence of pages of one size, the page size, stored in the
//! meta pages (usually 4096, the OS page size when the file was created). Page
//! `n` starts at offset `n * page_size`. Every page starts with a 16-byte
//! header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | page id: the page's own number |
//! | 8 | 2 | flags: the page type, `0x01` branch, `0x02` leaf, `0x04` meta, `0x10` freelist |
//! | 10 | 2 | count: number of elements (branch, leaf) or of page ids (freelist) |
//! | 12 | 4 | overflow: number of further pages this page spans |
//!
//! A page whose content does not fit in one page size takes `overflow + 1`
//! consecutive pages; the pages after the first have no header of their own.
//! That is how values larger than a page are stored: the leaf holding them is
//! one long page.
//!
//! ## Meta pages
//!
//! Pages 0 and 1 are meta pages. After the header comes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `0xED0CDAED` |
//! | 4 | 4 | version, 2 |
//! | 8 | 4 | page size |
//! | 12 | 4 | flags (unused, 0) |
//! | 16 | 16 | root bucket header: root page id and sequence (see buckets) |
//! | 32 | 8 | freelist page id, or `0xFFFF_FFFF_FFFF_FFFF` when the freelist is not stored |
//! | 40 | 8 | high-water mark: number of pages in use; every page id is below it |
//! | 48 | 8 | transaction id |
//! | 56 | 8 | checksum: FNV-1a 64 of the 56 bytes before it |
//!
//! A transaction commits by writing a new meta into page `txid % 2`, so the
//! two meta pages alternate. A meta page is valid when its magic, version and
//! checksum are right; the file is read through the valid meta with the higher
//! transaction id (the other one is the previous commit, the fallback after a
//! torn write). bbolt learns the page size from page 0; if page 0 is invalid
//! it assumes the OS page size. A snapshot made by bbolt's `Tx.WriteTo` (what
//! etcd sends) holds the same meta twice, the copy in page 1 with the
//! transaction id one lower.
//!
//! ## Trees and elements
//!
//! Each bucket is a B+tree of pages. A branch page holds `count` 16-byte
//! elements, one per child, in key order:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | pos: offset of the key from the start of this element |
//! | 4 | 4 | key size |
//! | 8 | 8 | child page id |
//!
//! The key is the first key of the child's subtree. A leaf page holds `count`
//! 16-byte elements, one per key, in strictly ascending byte order of keys:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | flags: `0x01` if the value is a bucket, else 0 |
//! | 4 | 4 | pos: offset of the key from the start of this element |
//! | 8 | 4 | key size |
//! | 12 | 4 | value size; the value follows the key |
//!
//! The element array starts right after the page header; bbolt puts keys and
//! values after the whole array, in element order. Keys are 1 to 32768 bytes,
//! values 0 to 2^31 - 2. A page holds fewer than 65535 elements.
//!
//! ## Buckets
//!
//! The meta's root bucket is a tree whose leaf elements are the top-level
//! buckets: key the bucket name, flag `0x01`, value the bucket's value. A
//! bucket value starts with a 16-byte bucket header: root page id (8) and a
//! sequence counter (8, bbolt's `NextSequence`). A root page id of 0 means the
//! bucket is inline: the rest of the value is the bucket's only page, a leaf
//! page (header and elements, page id 0, no padding), stored inside the
//! parent's leaf. bbolt makes a bucket inline when its tree is a single leaf of
//! at most a quarter of the page size and it has no nested buckets; a new,
//! empty bucket is inline with no elements. Other buckets have a value of just
//! the header, pointing at their root page. The root bucket itself is never
//! inline. The same scheme nests buckets inside buckets, which etcd does not
//! use.
//!
//! ## Freelist
//!
//! Pages freed by a transaction are listed on the freelist page (flag `0x10`):
//! after the header, `count` sorted 8-byte page ids. If there are 65535 ids or
//! more, `count` is `0xFFFF` and the first 8-byte slot holds the real number of
//! ids, which follow it. A long list makes the freelist page an overflow page.
//! Every page below the high-water mark is exactly one of: a meta page, the
//! freelist page (with its overflow), a page reachable from the root bucket
//! (each reached once), or listed as free. When the freelist is not stored
//! (bbolt's `NoFreelistSync`, which etcd 3.4 and 3.5 set) bbolt rebuilds it on
//! open from the pages not reachable.

mod check;
mod page;
mod read;
mod write;

pub use check::CheckReport;
pub use page::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
pub use read::Reader;
pub use write::Writer;

pub(crate) use page::valid_page_size;

/// Page size of files this crate writes unless told otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;

/// What went wrong reading or writing a bbolt file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bbolt file i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid bbolt file; the message says what and where
    /// (page id, offset).
    #[error("bbolt file corrupt: {0}")]
    Corrupt(String),
    /// Misuse of the writer: order, empty key, size.
    #[error("bbolt writer misuse: {0}")]
    Usage(String),
}
