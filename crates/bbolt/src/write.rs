//! Streaming writer of a fresh bbolt file.
//!
//! Trees are built bottom-up while keys arrive in order: each tree keeps one
//! partly filled page per level. When the next element does not fit on a
//! level's page, that page is written at the next free page id and its first
//! key and id go up to the level above as a branch element. Finishing a tree
//! writes the partial pages from the bottom up; the one page left at the top is
//! the root. Memory is one page per level whatever the number of keys (a page
//! takes at least two elements, so a page of large values is larger).
//!
//! Layout of the output: page 0 and 1 meta, page 2 an empty freelist, tree
//! pages from page 3 on in the order they fill up, the root bucket's pages
//! among them. Pages are filled as full as they go (bbolt's own writes split at
//! half a page; any fill is valid for it).

use std::io::{Seek, SeekFrom, Write};

use crate::page::{
    Meta, PageBuilder, PageHeader, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, FLAG_FREELIST, FLAG_META,
    MAX_KEY_SIZE, MAX_PAGE_ELEMENTS, MAX_VALUE_SIZE, PAGE_HEADER_SIZE,
};
use crate::{valid_page_size, Error, DEFAULT_PAGE_SIZE};

/// Page id of the freelist page the writer emits.
const FREELIST_PAGE: u64 = 2;
/// First page id available to trees.
const FIRST_TREE_PAGE: u64 = 3;
/// bbolt refuses a file shorter than 4096 bytes (it reads that much to learn
/// the page size), so a file of smaller pages is padded up to it.
const MIN_FILE_LEN: u64 = 4096;
/// Fewest elements on a page that is not the last of its level.
const MIN_KEYS_PER_PAGE: usize = 2;

/// Where pages go: sequential writes from page 3 on.
struct Sink<W> {
    out: W,
    page_size: usize,
    next_page: u64,
    buf: Vec<u8>,
}

impl<W: Write + Seek> Sink<W> {
    /// Encodes `page` at the next free page id (taking as many pages as it
    /// needs) and returns that id.
    fn write(&mut self, page: &PageBuilder) -> Result<u64, Error> {
        let id = self.next_page;
        page.encode(id, Some(self.page_size), &mut self.buf);
        self.out.write_all(&self.buf)?;
        self.next_page += (self.buf.len() / self.page_size) as u64;
        Ok(id)
    }
}

/// How a finished tree ended up.
enum TreeEnd {
    /// The tree fitted on one page, not yet written (it may go inline).
    Single,
    /// The root page was written at this id.
    Root(u64),
}

/// A B+tree being built: `levels[0]` is the partial leaf page, each further
/// entry the partial branch page above.
struct Tree {
    levels: Vec<PageBuilder>,
    /// First key of a page being moved up a level (reused buffer).
    key_buf: Vec<u8>,
}

impl Tree {
    fn new() -> Self {
        Tree { levels: vec![PageBuilder::new(true)], key_buf: Vec::new() }
    }

    /// Whether an element of `elem_size` bytes must go on a new page rather
    /// than on `page`. A page takes at least two elements, however large
    /// (it then spans overflow pages): one-element branch pages would stack
    /// levels without ever fanning out.
    fn is_full(page: &PageBuilder, elem_size: usize, page_size: usize) -> bool {
        page.len() >= MIN_KEYS_PER_PAGE
            && (page.size() + elem_size > page_size || page.len() >= MAX_PAGE_ELEMENTS)
    }

    fn put_leaf<W: Write + Seek>(
        &mut self,
        sink: &mut Sink<W>,
        flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Error> {
        let size = PageBuilder::element_size(key, value.len());
        if Self::is_full(&self.levels[0], size, sink.page_size) {
            self.flush(sink, 0)?;
        }
        self.levels[0].push_leaf(flags, key, value);
        Ok(())
    }

    /// Writes the partial page of `level` and adds it to the level above.
    fn flush<W: Write + Seek>(&mut self, sink: &mut Sink<W>, level: usize) -> Result<(), Error> {
        let id = sink.write(&self.levels[level])?;
        self.key_buf.clear();
        self.key_buf.extend_from_slice(self.levels[level].first_key());
        self.levels[level].clear();
        if level + 1 == self.levels.len() {
            self.levels.push(PageBuilder::new(false));
        }
        let size = PageBuilder::element_size(&self.key_buf, 0);
        if Self::is_full(&self.levels[level + 1], size, sink.page_size) {
            // The key travels up through key_buf again: keep this one aside.
            let key = std::mem::take(&mut self.key_buf);
            self.flush(sink, level + 1)?;
            self.key_buf = key;
        }
        self.levels[level + 1].push_branch(&self.key_buf, id);
        Ok(())
    }

    /// Writes every partial page but the top one, which is the root; if the
    /// tree never grew past one page that page is left in `levels[0]`.
    fn finish<W: Write + Seek>(&mut self, sink: &mut Sink<W>) -> Result<TreeEnd, Error> {
        if self.levels.len() == 1 {
            return Ok(TreeEnd::Single);
        }
        let mut level = 0;
        // Below the top, every level has written a page before, so its partial
        // page holds at least the element that did not fit then. The top level
        // gets at least two elements: the root fans out.
        while level + 1 < self.levels.len() {
            self.flush(sink, level)?;
            level += 1;
        }
        let top = self.levels.last().expect("at least one level");
        Ok(TreeEnd::Root(sink.write(top)?))
    }
}

/// Streams one bbolt file: top-level buckets in ascending byte order, each
/// bucket's keys in strictly ascending byte order. Memory stays bounded
/// whatever the number of keys: one partial page per tree level.
///
/// The file starts at offset 0 of `out`. Pages are written with one
/// `write_all` each; wrap a `File` in a `BufWriter` if that matters.
pub struct Writer<W: Write + Seek> {
    sink: Sink<W>,
    /// The root bucket: one leaf element per top-level bucket.
    root: Tree,
    /// The bucket being filled and its tree.
    current: Option<(Vec<u8>, Tree)>,
    last_bucket: Option<Vec<u8>>,
    last_key: Option<Vec<u8>>,
    /// Set once an I/O error left the output incomplete.
    failed: bool,
    value_buf: Vec<u8>,
}

impl<W: Write + Seek> Writer<W> {
    /// A writer with [`DEFAULT_PAGE_SIZE`] pages.
    pub fn new(out: W) -> Result<Self, Error> {
        Self::with_page_size(out, DEFAULT_PAGE_SIZE)
    }

    /// A writer with pages of `page_size` bytes (a power of two from 512 to
    /// 1 MiB).
    pub fn with_page_size(mut out: W, page_size: u32) -> Result<Self, Error> {
        if !valid_page_size(page_size) {
            return Err(Error::Usage(format!(
                "page size {page_size} is not a power of two from 512 to 1 MiB"
            )));
        }
        out.seek(SeekFrom::Start(FIRST_TREE_PAGE * u64::from(page_size)))?;
        Ok(Writer {
            sink: Sink {
                out,
                page_size: page_size as usize,
                next_page: FIRST_TREE_PAGE,
                buf: Vec::new(),
            },
            root: Tree::new(),
            current: None,
            last_bucket: None,
            last_key: None,
            failed: false,
            value_buf: Vec::new(),
        })
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.failed {
            return Err(Error::Usage("an earlier write failed; the output is incomplete".into()));
        }
        Ok(())
    }

    /// Marks the writer failed if `r` is an error.
    fn track<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Starts top-level bucket `name`; the previous bucket is complete. Names
    /// must be non-empty, at most 32768 bytes and strictly ascending.
    pub fn bucket(&mut self, name: &[u8]) -> Result<(), Error> {
        self.check_usable()?;
        if name.is_empty() {
            return Err(Error::Usage("empty bucket name".into()));
        }
        if name.len() > MAX_KEY_SIZE {
            return Err(Error::Usage(format!(
                "bucket name of {} bytes is longer than {MAX_KEY_SIZE}",
                name.len()
            )));
        }
        if let Some(last) = &self.last_bucket {
            if name <= last.as_slice() {
                return Err(Error::Usage(format!(
                    "bucket {} does not come after bucket {}",
                    crate::page::show(name),
                    crate::page::show(last)
                )));
            }
        }
        let r = self.close_bucket();
        self.track(r)?;
        self.last_bucket = Some(name.to_vec());
        self.last_key = None;
        self.current = Some((name.to_vec(), Tree::new()));
        Ok(())
    }

    /// Puts `key` = `value` into the current bucket. Keys must be non-empty,
    /// at most 32768 bytes and strictly ascending within the bucket; values at
    /// most 2^31 - 2 bytes.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.check_usable()?;
        if self.current.is_none() {
            return Err(Error::Usage("put before the first bucket".into()));
        }
        if key.is_empty() {
            return Err(Error::Usage("empty key".into()));
        }
        if key.len() > MAX_KEY_SIZE {
            return Err(Error::Usage(format!(
                "key of {} bytes is longer than {MAX_KEY_SIZE}",
                key.len()
            )));
        }
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::Usage(format!(
                "value of {} bytes is longer than {MAX_VALUE_SIZE}",
                value.len()
            )));
        }
        if let Some(last) = &self.last_key {
            if key <= last.as_slice() {
                return Err(Error::Usage(format!(
                    "key {} does not come after key {}",
                    crate::page::show(key),
                    crate::page::show(last)
                )));
            }
        }
        let (_, tree) = self.current.as_mut().expect("checked above");
        let r = tree.put_leaf(&mut self.sink, 0, key, value);
        self.track(r)?;
        let last = self.last_key.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(key);
        Ok(())
    }

    /// Completes the current bucket, if any: writes the rest of its tree and
    /// adds its header (or the whole bucket, inline) to the root bucket.
    fn close_bucket(&mut self) -> Result<(), Error> {
        let Some((name, mut tree)) = self.current.take() else {
            return Ok(());
        };
        let page_size = self.sink.page_size;
        let value = &mut self.value_buf;
        value.clear();
        match tree.finish(&mut self.sink)? {
            TreeEnd::Single if tree.levels[0].size() <= page_size / 4 => {
                // Inline: header with root 0, then the leaf page itself.
                value.resize(BUCKET_HEADER_SIZE, 0);
                let mut page = Vec::new();
                tree.levels[0].encode(0, None, &mut page);
                value.extend_from_slice(&page);
            }
            TreeEnd::Single => {
                let root = self.sink.write(&tree.levels[0])?;
                push_bucket_header(value, root);
            }
            TreeEnd::Root(root) => push_bucket_header(value, root),
        }
        let value = std::mem::take(&mut self.value_buf);
        let r = self.root.put_leaf(&mut self.sink, BUCKET_LEAF_FLAG, &name, &value);
        self.value_buf = value;
        r
    }

    /// Writes the tree roots, the root bucket, the (empty) freelist and both
    /// meta pages (seeking back to pages 0 to 2), flushes, and returns the
    /// output, positioned at the end of the file, and the file length (a
    /// multiple of the page size; at least 4096 bytes, which bbolt needs, a
    /// file of smaller pages being padded with unused pages).
    pub fn finish(mut self) -> Result<(W, u64), Error> {
        self.check_usable()?;
        self.close_bucket()?;
        let root = match self.root.finish(&mut self.sink)? {
            TreeEnd::Single => self.sink.write(&self.root.levels[0])?,
            TreeEnd::Root(root) => root,
        };
        let ps = self.sink.page_size;
        let hwm = self.sink.next_page;
        let mut head = vec![0u8; 3 * ps];
        for id in 0..2u64 {
            let page = &mut head[id as usize * ps..(id as usize + 1) * ps];
            PageHeader { id, flags: FLAG_META, count: 0, overflow: 0 }.encode(page);
            Meta {
                page_size: ps as u32,
                flags: 0,
                root,
                sequence: 0,
                freelist: FREELIST_PAGE,
                hwm,
                // Both metas valid; bbolt uses the one with the higher txid
                // and writes its next transaction over the other.
                txid: id,
            }
            .encode(&mut page[PAGE_HEADER_SIZE..]);
        }
        PageHeader { id: FREELIST_PAGE, flags: FLAG_FREELIST, count: 0, overflow: 0 }
            .encode(&mut head[2 * ps..]);
        let out = &mut self.sink.out;
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&head)?;
        let mut len = hwm * ps as u64;
        out.seek(SeekFrom::Start(len))?;
        if len < MIN_FILE_LEN {
            // Unused pages after the high-water mark.
            out.write_all(&vec![0; (MIN_FILE_LEN - len) as usize])?;
            len = MIN_FILE_LEN;
        }
        out.flush()?;
        Ok((self.sink.out, len))
    }
}

fn push_bucket_header(value: &mut Vec<u8>, root: u64) {
    value.extend_from_slice(&root.to_le_bytes());
    // Sequence (bbolt's NextSequence counter): 0.
    value.extend_from_slice(&0u64.to_le_bytes());
}
