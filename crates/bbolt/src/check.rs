//! Whole-file consistency check, the counterpart of bbolt's `Tx.Check`:
//! every page below the high-water mark is a meta page, the freelist, reached
//! exactly once from the root bucket, or free; no free page is in use.

use crate::page::{
    flags_name, le_u64, PageHeader, FLAG_FREELIST, FREELIST_COUNT_IN_FIRST_SLOT, NO_FREELIST,
    PAGE_HEADER_SIZE,
};
use crate::read::{bucket_root, corrupt, entry_flags, Reader, Root, Walk};
use crate::Error;

/// What [`Reader::check`] found in a consistent file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Pages in use (the high-water mark), meta pages included.
    pub pages: u64,
    /// Pages reached from the root bucket, overflow pages included.
    pub tree_pages: u64,
    /// Pages of the freelist itself (0 when it is not stored).
    pub freelist_pages: u64,
    /// Free pages: listed on the freelist, or, when it is not stored, not
    /// reached from the root bucket.
    pub free_pages: u64,
    /// Whether the file stores its freelist (bbolt without `NoFreelistSync`).
    pub freelist_stored: bool,
    /// Levels of the deepest tree, the root bucket's included (1 = one page).
    pub depth: usize,
    /// Top-level buckets.
    pub buckets: u64,
    /// Top-level buckets stored inline.
    pub inline_buckets: u64,
    /// Keys in all top-level buckets.
    pub keys: u64,
}

impl Reader {
    /// Page ids listed on the freelist page, or `None` if the file does not
    /// store its freelist.
    pub fn free_pages(&self) -> Result<Option<Vec<u64>>, Error> {
        let id = self.meta().freelist;
        if id == NO_FREELIST {
            return Ok(None);
        }
        let page = self.read_page(id)?;
        let h = PageHeader::parse(&page);
        if h.flags != FLAG_FREELIST {
            return Err(corrupt(format!("freelist page {id} is a {} page", flags_name(h.flags))));
        }
        let slots = (page.len() - PAGE_HEADER_SIZE) / 8;
        let (first, count) = if h.count == FREELIST_COUNT_IN_FIRST_SLOT {
            if slots == 0 {
                return Err(corrupt(format!("freelist page {id}: no room for its count")));
            }
            (1, le_u64(&page, PAGE_HEADER_SIZE))
        } else {
            (0, u64::from(h.count))
        };
        if count > (slots - first) as u64 {
            return Err(corrupt(format!(
                "freelist page {id}: {count} ids do not fit in its {} bytes",
                page.len()
            )));
        }
        let hwm = self.meta().hwm;
        let mut ids = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let free = le_u64(&page, PAGE_HEADER_SIZE + (first + i) * 8);
            if free < 2 || free >= hwm {
                return Err(corrupt(format!(
                    "freelist page {id}: free page id {free} is outside the data pages 2..{hwm}"
                )));
            }
            ids.push(free);
        }
        Ok(Some(ids))
    }

    /// Checks the whole file as bbolt's `Tx.Check` does, plus the key order
    /// and element bounds every read checks; reports the first problem.
    pub fn check(&self) -> Result<CheckReport, Error> {
        let meta = *self.meta();
        let mut report = CheckReport {
            pages: meta.hwm,
            freelist_stored: meta.freelist != NO_FREELIST,
            ..CheckReport::default()
        };
        let mut walk = Walk::new(self);
        let (buckets, inline, keys) =
            (&mut report.buckets, &mut report.inline_buckets, &mut report.keys);
        walk.tree::<Error>(Root::Page(meta.root), b"", &mut |w, flags, name, value| {
            let root = bucket_root(name, flags, value)?;
            *buckets += 1;
            if matches!(root, Root::Inline(_)) {
                *inline += 1;
            }
            w.tree::<Error>(root, name, &mut |_, flags, key, _| {
                entry_flags(name, flags, key)?;
                *keys += 1;
                Ok(())
            })
        })?;
        report.tree_pages = walk.pages;
        report.depth = walk.depth;

        walk.mark(0);
        walk.mark(1);
        if let Some(free) = self.free_pages()? {
            let id = meta.freelist;
            let h = PageHeader::parse(&self.read_page(id)?);
            for p in id..=id + u64::from(h.overflow) {
                if !walk.mark(p) {
                    return Err(corrupt(format!(
                        "page {p} of the freelist (page {id}) is also in a tree"
                    )));
                }
            }
            report.freelist_pages = u64::from(h.overflow) + 1;
            for p in free {
                if !walk.mark(p) {
                    return Err(corrupt(format!(
                        "page {p} is on the freelist but in use or listed twice"
                    )));
                }
                report.free_pages += 1;
            }
            if let Some(p) = (2..meta.hwm).find(|&p| !walk.is_marked(p)) {
                return Err(corrupt(format!("page {p} is neither reachable nor free")));
            }
        } else {
            report.free_pages = (2..meta.hwm).filter(|&p| !walk.is_marked(p)).count() as u64;
        }
        Ok(report)
    }
}
