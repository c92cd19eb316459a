//! Reading a bbolt file with positioned reads, one page (with its overflow)
//! at a time. Nothing read from the file is trusted: every page id is checked
//! against the high-water mark (itself checked against the file length), every
//! element against its page's bytes, every page is visited at most once and
//! trees are at most [`MAX_DEPTH`] levels deep, so a corrupt file gives an
//! error, never a panic, a loop or an allocation larger than the file.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::page::{
    branch_element, flags_name, le_u64, leaf_element, show, Meta, PageHeader, BUCKET_HEADER_SIZE,
    BUCKET_LEAF_FLAG, FLAG_BRANCH, FLAG_LEAF, MAX_PAGE_SIZE, META_SIZE, MIN_PAGE_SIZE, NO_FREELIST,
    PAGE_HEADER_SIZE,
};
use crate::{Error, DEFAULT_PAGE_SIZE};

/// Deepest tree accepted (root = level 1). Real trees stay far below: with
/// 4096-byte pages ten levels hold more keys than any file can.
pub(crate) const MAX_DEPTH: usize = 64;

pub(crate) fn corrupt(msg: String) -> Error {
    Error::Corrupt(msg)
}

/// Reads a bbolt file, or the bbolt part of an etcd snapshot file.
#[derive(Debug)]
pub struct Reader {
    file: File,
    len: u64,
    meta: Meta,
}

impl Reader {
    /// Opens the file at `path`; all of it is the bbolt file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Self::from_file(file, len)
    }

    /// Reads the first `len` bytes of `file` as a bbolt file (for an etcd
    /// snapshot, `len` excludes the 32-byte SHA-256 trailer).
    pub fn from_file(file: File, len: u64) -> Result<Self, Error> {
        let m0 = read_meta(&file, len, 0)?;
        // bbolt takes the page size from page 0; when page 0 is invalid it
        // assumes the OS page size. Other page sizes are tried after that.
        let candidates: Vec<u32> = match &m0 {
            Ok(m) => vec![m.page_size],
            Err(_) => std::iter::once(DEFAULT_PAGE_SIZE)
                .chain(
                    (MIN_PAGE_SIZE.trailing_zeros()..=MAX_PAGE_SIZE.trailing_zeros())
                        .map(|s| 1u32 << s)
                        .filter(|&ps| ps != DEFAULT_PAGE_SIZE),
                )
                .collect(),
        };
        let mut m1 = Err(String::new());
        for (n, &ps) in candidates.iter().enumerate() {
            match read_meta(&file, len, u64::from(ps))? {
                Ok(m) if m.page_size == ps => {
                    m1 = Ok(m);
                    break;
                }
                Ok(m) => {
                    if n == 0 {
                        m1 = Err(format!("page size {} differs from page 0's {ps}", m.page_size));
                    }
                }
                Err(e) => {
                    if n == 0 {
                        m1 = Err(format!("at offset {ps}: {e}"));
                    }
                }
            }
        }
        let meta = match (m0, m1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(e0), Err(e1)) => {
                return Err(corrupt(format!("no valid meta page: page 0: {e0}; page 1: {e1}")))
            }
        };
        check_meta(&meta, len)?;
        Ok(Reader { file, len, meta })
    }

    /// Page size of the file.
    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// Transaction id of the meta page in use.
    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    /// Bytes of the bbolt part of the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the bbolt part is empty (never: a readable file has pages).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// High-water mark: the number of pages in use.
    pub fn page_count(&self) -> u64 {
        self.meta.hwm
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Reads data page `id` with its overflow pages.
    pub(crate) fn read_page(&self, id: u64) -> Result<Vec<u8>, Error> {
        let hwm = self.meta.hwm;
        if id < 2 || id >= hwm {
            return Err(corrupt(format!("page id {id} is outside the data pages 2..{hwm}")));
        }
        let ps = self.meta.page_size as usize;
        let mut buf = vec![0u8; ps];
        // id < hwm and hwm * page size <= len: no overflow.
        self.file.read_exact_at(&mut buf, id * ps as u64)?;
        let h = PageHeader::parse(&buf);
        if h.id != id {
            return Err(corrupt(format!(
                "page {id} (offset {}): header says page id {}",
                id * ps as u64,
                h.id
            )));
        }
        if h.overflow > 0 {
            let end = id + u64::from(h.overflow) + 1;
            if end > hwm {
                return Err(corrupt(format!(
                    "page {id}: {} overflow pages run past the high-water mark {hwm}",
                    h.overflow
                )));
            }
            // At most the file's length (checked against hwm above).
            buf.resize((end - id) as usize * ps, 0);
            self.file.read_exact_at(&mut buf[ps..], (id + 1) * ps as u64)?;
        }
        Ok(buf)
    }

    /// Top-level bucket names in order.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>, Error> {
        let mut names = Vec::new();
        let mut walk = Walk::new(self);
        walk.tree::<Error>(Root::Page(self.meta.root), b"", &mut |_, flags, name, value| {
            bucket_root(name, flags, value)?;
            names.push(name.to_vec());
            Ok(())
        })?;
        Ok(names)
    }

    /// Every top-level bucket and its entries in bbolt's order: `on_bucket(name)`
    /// then `on_entry(key, value)` for each of its keys. A bucket nested in a
    /// top-level bucket is reported as [`Error::Corrupt`] (etcd makes none).
    #[allow(clippy::type_complexity)] // the callbacks' signatures are the API
    pub fn walk<E: From<Error>>(
        &self,
        on_bucket: &mut dyn FnMut(&[u8]) -> Result<(), E>,
        on_entry: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut walk = Walk::new(self);
        walk.tree(Root::Page(self.meta.root), b"", &mut |w, flags, name, value| {
            let root = bucket_root(name, flags, value)?;
            on_bucket(name)?;
            w.tree(root, name, &mut |_, flags, key, value| {
                entry_flags(name, flags, key)?;
                on_entry(key, value)
            })
        })
    }

    /// One bucket's entries in order (`Ok(false)` if there is no such bucket).
    #[allow(clippy::type_complexity)]
    pub fn scan_bucket<E: From<Error>>(
        &self,
        name: &[u8],
        on_entry: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<bool, E> {
        let Some(value) = self.find_bucket(name)? else {
            return Ok(false);
        };
        let root = bucket_root(name, BUCKET_LEAF_FLAG, &value)?;
        let mut walk = Walk::new(self);
        walk.tree(root, name, &mut |_, flags, key, value| {
            entry_flags(name, flags, key)?;
            on_entry(key, value)
        })?;
        Ok(true)
    }

    /// Looks `name` up in the root bucket's tree; returns its value.
    fn find_bucket(&self, name: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let mut id = self.meta.root;
        for _ in 0..MAX_DEPTH {
            let page = self.read_page(id)?;
            let h = PageHeader::parse(&page);
            let count = usize::from(h.count);
            let bad = |m: String| corrupt(format!("root bucket: page {id}: {m}"));
            match h.flags {
                FLAG_BRANCH => {
                    if count == 0 {
                        return Err(bad("branch page without elements".into()));
                    }
                    // The last child whose first key is <= name, else the first.
                    let mut next = branch_element(&page, count, 0).map_err(bad)?.1;
                    for i in 1..count {
                        let (key, child) = branch_element(&page, count, i).map_err(bad)?;
                        if key > name {
                            break;
                        }
                        next = child;
                    }
                    id = next;
                }
                FLAG_LEAF => {
                    for i in 0..count {
                        let e = leaf_element(&page, count, i).map_err(bad)?;
                        if e.key == name {
                            bucket_root(name, e.flags, e.value)?;
                            return Ok(Some(e.value.to_vec()));
                        }
                    }
                    return Ok(None);
                }
                other => {
                    return Err(bad(format!(
                        "{} page where a branch or leaf page was expected",
                        flags_name(other)
                    )))
                }
            }
        }
        Err(corrupt(format!("root bucket: more than {MAX_DEPTH} levels")))
    }
}

/// Reads and validates the meta page at `offset`: the outer error is I/O, the
/// inner one says why the meta is invalid.
fn read_meta(file: &File, len: u64, offset: u64) -> Result<Result<Meta, String>, Error> {
    let need = (PAGE_HEADER_SIZE + META_SIZE) as u64;
    if offset + need > len {
        return Ok(Err(format!("the file ends at {len}")));
    }
    let mut buf = [0u8; PAGE_HEADER_SIZE + META_SIZE];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Meta::decode(&buf))
}

/// Checks the chosen meta's page ids against the file.
fn check_meta(m: &Meta, len: u64) -> Result<(), Error> {
    let ps = u64::from(m.page_size);
    let bad = |msg: String| corrupt(format!("meta (txid {}): {msg}", m.txid));
    match m.hwm.checked_mul(ps) {
        Some(end) if end <= len => {}
        _ => {
            return Err(bad(format!(
                "high-water mark of {} pages of {ps} bytes is past the end of the file \
                 ({len} bytes): truncated?",
                m.hwm
            )))
        }
    }
    if m.root < 2 || m.root >= m.hwm {
        return Err(bad(format!("root page {} is outside the data pages 2..{}", m.root, m.hwm)));
    }
    if m.freelist != NO_FREELIST && (m.freelist < 2 || m.freelist >= m.hwm) {
        return Err(bad(format!(
            "freelist page {} is outside the data pages 2..{}",
            m.freelist, m.hwm
        )));
    }
    Ok(())
}

/// `bucket "name"`, or `root bucket` for the empty name.
pub(crate) fn bucket_ctx(name: &[u8]) -> String {
    if name.is_empty() {
        "root bucket".into()
    } else {
        format!("bucket {}", show(name))
    }
}

/// The root of a bucket, from its element in the root bucket's leaf.
pub(crate) enum Root<'a> {
    Page(u64),
    /// The inline page (after the bucket header).
    Inline(&'a [u8]),
}

/// Parses the value of top-level bucket `name` (leaf element flags `flags`).
pub(crate) fn bucket_root<'a>(name: &[u8], flags: u32, value: &'a [u8]) -> Result<Root<'a>, Error> {
    let bad = |m: String| corrupt(format!("root bucket: bucket {}: {m}", show(name)));
    if flags != BUCKET_LEAF_FLAG {
        return Err(bad(format!("element flags 0x{flags:x}: not a bucket")));
    }
    if value.len() < BUCKET_HEADER_SIZE {
        return Err(bad(format!("bucket header of {} bytes", value.len())));
    }
    match le_u64(value, 0) {
        0 if value.len() < BUCKET_HEADER_SIZE + PAGE_HEADER_SIZE => {
            Err(bad(format!("inline bucket value of {} bytes has no page", value.len())))
        }
        0 => Ok(Root::Inline(&value[BUCKET_HEADER_SIZE..])),
        root if value.len() != BUCKET_HEADER_SIZE => {
            Err(bad(format!("value of {} bytes for a bucket with root page {root}", value.len())))
        }
        root => Ok(Root::Page(root)),
    }
}

/// Checks the flags of an entry of a top-level bucket.
pub(crate) fn entry_flags(bucket: &[u8], flags: u32, key: &[u8]) -> Result<(), Error> {
    match flags {
        0 => Ok(()),
        BUCKET_LEAF_FLAG => Err(corrupt(format!(
            "{}: nested bucket {} not supported",
            bucket_ctx(bucket),
            show(key)
        ))),
        other => Err(corrupt(format!(
            "{}: key {}: unknown element flags 0x{other:x}",
            bucket_ctx(bucket),
            show(key)
        ))),
    }
}

/// Where a leaf's elements are, for messages.
#[derive(Clone, Copy)]
enum Loc {
    Page(u64),
    Inline,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Page(id) => write!(f, "page {id}"),
            Loc::Inline => f.write_str("inline page"),
        }
    }
}

/// Callback for each leaf element of a tree: flags, key, value.
pub(crate) type OnLeaf<'w, 'r, E> =
    dyn FnMut(&mut Walk<'r>, u32, &[u8], &[u8]) -> Result<(), E> + 'w;

/// One traversal of trees: remembers which pages it has visited.
pub(crate) struct Walk<'r> {
    pub reader: &'r Reader,
    /// Bit per page id below the high-water mark.
    visited: Vec<u64>,
    /// Pages visited, overflow pages included.
    pub pages: u64,
    /// Deepest level reached (a tree's root is level 1).
    pub depth: usize,
}

impl<'r> Walk<'r> {
    pub(crate) fn new(reader: &'r Reader) -> Self {
        // hwm <= len / page size: bounded by the file.
        let words = reader.meta.hwm.div_ceil(64) as usize;
        Walk { reader, visited: vec![0; words], pages: 0, depth: 0 }
    }

    /// Marks page `id` (below the high-water mark); false if it already was.
    pub(crate) fn mark(&mut self, id: u64) -> bool {
        let (w, b) = ((id / 64) as usize, id % 64);
        let was = self.visited[w] & (1 << b) != 0;
        self.visited[w] |= 1 << b;
        !was
    }

    pub(crate) fn is_marked(&self, id: u64) -> bool {
        self.visited[(id / 64) as usize] & (1 << (id % 64)) != 0
    }

    /// Calls `on_leaf` for every leaf element of the tree at `root`, in key
    /// order, checking keys are strictly ascending. `bucket` names the tree
    /// in messages (empty for the root bucket).
    pub(crate) fn tree<E: From<Error>>(
        &mut self,
        root: Root<'_>,
        bucket: &[u8],
        on_leaf: &mut OnLeaf<'_, 'r, E>,
    ) -> Result<(), E> {
        let mut prev = None;
        match root {
            Root::Page(id) => self.node(id, 1, bucket, &mut prev, on_leaf),
            Root::Inline(page) => {
                let h = PageHeader::parse(page);
                if h.flags != FLAG_LEAF {
                    return Err(corrupt(format!(
                        "{}: inline page of type {}",
                        bucket_ctx(bucket),
                        flags_name(h.flags)
                    ))
                    .into());
                }
                self.depth = self.depth.max(1);
                self.leaf(page, usize::from(h.count), Loc::Inline, bucket, &mut prev, on_leaf)
            }
        }
    }

    fn node<E: From<Error>>(
        &mut self,
        id: u64,
        depth: usize,
        bucket: &[u8],
        prev: &mut Option<Vec<u8>>,
        on_leaf: &mut OnLeaf<'_, 'r, E>,
    ) -> Result<(), E> {
        let ctx = || bucket_ctx(bucket);
        if depth > MAX_DEPTH {
            return Err(corrupt(format!("{}: more than {MAX_DEPTH} levels", ctx())).into());
        }
        let page = self.reader.read_page(id).map_err(|e| match e {
            Error::Corrupt(m) => corrupt(format!("{}: {m}", ctx())),
            other => other,
        })?;
        let h = PageHeader::parse(&page);
        for p in id..=id + u64::from(h.overflow) {
            if !self.mark(p) {
                return Err(corrupt(format!(
                    "{}: page {p} (in page {id}) is reached a second time",
                    ctx()
                ))
                .into());
            }
        }
        self.pages += u64::from(h.overflow) + 1;
        self.depth = self.depth.max(depth);
        let count = usize::from(h.count);
        match h.flags {
            FLAG_LEAF => self.leaf(&page, count, Loc::Page(id), bucket, prev, on_leaf),
            FLAG_BRANCH => {
                if count == 0 {
                    return Err(corrupt(format!(
                        "{}: page {id}: branch page without elements",
                        ctx()
                    ))
                    .into());
                }
                let mut last: Option<&[u8]> = None;
                for i in 0..count {
                    let (key, child) = branch_element(&page, count, i)
                        .map_err(|m| corrupt(format!("{}: page {id}: {m}", ctx())))?;
                    if last.is_some_and(|l| key <= l) {
                        return Err(corrupt(format!(
                            "{}: page {id}: branch key {i} {} is not above the one before",
                            ctx(),
                            show(key)
                        ))
                        .into());
                    }
                    last = Some(key);
                    self.node(child, depth + 1, bucket, prev, on_leaf)?;
                }
                Ok(())
            }
            other => Err(corrupt(format!(
                "{}: page {id}: {} page where a branch or leaf page was expected",
                ctx(),
                flags_name(other)
            ))
            .into()),
        }
    }

    fn leaf<E: From<Error>>(
        &mut self,
        page: &[u8],
        count: usize,
        loc: Loc,
        bucket: &[u8],
        prev: &mut Option<Vec<u8>>,
        on_leaf: &mut OnLeaf<'_, 'r, E>,
    ) -> Result<(), E> {
        for i in 0..count {
            let e = leaf_element(page, count, i)
                .map_err(|m| corrupt(format!("{}: {loc}: {m}", bucket_ctx(bucket))))?;
            match prev {
                Some(p) if e.key <= p.as_slice() => {
                    return Err(corrupt(format!(
                        "{}: {loc}: key {} does not come after key {}",
                        bucket_ctx(bucket),
                        show(e.key),
                        show(p)
                    ))
                    .into())
                }
                Some(p) => {
                    p.clear();
                    p.extend_from_slice(e.key);
                }
                None => *prev = Some(e.key.to_vec()),
            }
            on_leaf(self, e.flags, e.key, e.value)?;
        }
        Ok(())
    }
}
