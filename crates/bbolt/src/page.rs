//! Byte layouts of the structures described in the crate documentation:
//! page header, meta, branch and leaf elements, bucket header. Everything is
//! little-endian. Parsing functions never index outside the slice they are
//! given; they report what is wrong as a message the caller puts in context.

use std::fmt::Write as _;

/// Size of the header that starts every page (and every inline bucket page).
pub(crate) const PAGE_HEADER_SIZE: usize = 16;
/// Size of one branch or leaf element.
pub(crate) const ELEMENT_SIZE: usize = 16;
/// Size of the meta structure after the page header, checksum included.
pub(crate) const META_SIZE: usize = 64;
/// Bytes of the meta structure covered by the checksum (all before it).
const META_CHECKSUMMED: usize = 56;
/// Size of a bucket header (root page id + sequence).
pub(crate) const BUCKET_HEADER_SIZE: usize = 16;

pub(crate) const FLAG_BRANCH: u16 = 0x01;
pub(crate) const FLAG_LEAF: u16 = 0x02;
pub(crate) const FLAG_META: u16 = 0x04;
pub(crate) const FLAG_FREELIST: u16 = 0x10;

/// Leaf element flag: the value is a bucket header (possibly with an inline page).
pub(crate) const BUCKET_LEAF_FLAG: u32 = 0x01;

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
/// Freelist page id meaning "freelist not stored" (bbolt's NoFreelistSync).
pub(crate) const NO_FREELIST: u64 = u64::MAX;
/// A freelist page whose count field has this value stores the real count in
/// its first 8-byte slot.
pub(crate) const FREELIST_COUNT_IN_FIRST_SLOT: u16 = 0xFFFF;

/// Page sizes accepted when reading or writing: powers of two in this range.
pub(crate) const MIN_PAGE_SIZE: u32 = 512;
pub(crate) const MAX_PAGE_SIZE: u32 = 1 << 20;

/// Largest key bbolt accepts.
pub const MAX_KEY_SIZE: usize = 32768;
/// Largest value bbolt accepts.
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;
/// Most elements the writer puts on one page (bbolt refuses to write a node of
/// 0xFFFF or more elements).
pub(crate) const MAX_PAGE_ELEMENTS: usize = 0xFFFF - 1;

pub(crate) fn le_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[off..off + 2]);
    u16::from_le_bytes(a)
}

pub(crate) fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// FNV-1a, 64 bits: the meta page checksum.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A byte string for messages: printable ASCII as is, other bytes as `\xNN`,
/// cut after 64 bytes.
pub(crate) fn show(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b.iter().take(64) {
        if (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\' {
            s.push(char::from(c));
        } else {
            let _ = write!(s, "\\x{c:02x}");
        }
    }
    s.push('"');
    if b.len() > 64 {
        let _ = write!(s, "... ({} bytes)", b.len());
    }
    s
}

pub(crate) fn valid_page_size(ps: u32) -> bool {
    ps.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&ps)
}

/// The 16-byte page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    /// `b` must hold at least [`PAGE_HEADER_SIZE`] bytes.
    pub(crate) fn parse(b: &[u8]) -> PageHeader {
        PageHeader {
            id: le_u64(b, 0),
            flags: le_u16(b, 8),
            count: le_u16(b, 10),
            overflow: le_u32(b, 12),
        }
    }

    pub(crate) fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }
}

pub(crate) fn flags_name(flags: u16) -> String {
    match flags {
        FLAG_BRANCH => "branch".into(),
        FLAG_LEAF => "leaf".into(),
        FLAG_META => "meta".into(),
        FLAG_FREELIST => "freelist".into(),
        other => format!("unknown type 0x{other:04x}"),
    }
}

/// The meta structure that follows the page header of pages 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub page_size: u32,
    pub flags: u32,
    /// Root page of the root bucket (the tree of top-level buckets).
    pub root: u64,
    pub sequence: u64,
    /// Freelist page id, or [`NO_FREELIST`].
    pub freelist: u64,
    /// High-water mark: number of pages in use; every page id is below it.
    pub hwm: u64,
    pub txid: u64,
}

impl Meta {
    /// Writes the meta structure and its checksum into `out` (at least
    /// [`META_SIZE`] bytes, the part of the page after its header).
    pub(crate) fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..24].copy_from_slice(&self.root.to_le_bytes());
        out[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        out[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        out[40..48].copy_from_slice(&self.hwm.to_le_bytes());
        out[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&out[..META_CHECKSUMMED]);
        out[56..64].copy_from_slice(&sum.to_le_bytes());
    }

    /// Parses and validates a meta page (`page` starts at the page header and
    /// holds at least the header and the meta structure).
    pub(crate) fn decode(page: &[u8]) -> Result<Meta, String> {
        if page.len() < PAGE_HEADER_SIZE + META_SIZE {
            return Err(format!("only {} bytes", page.len()));
        }
        let header = PageHeader::parse(page);
        if header.flags != FLAG_META {
            return Err(format!("page type is {}", flags_name(header.flags)));
        }
        let m = &page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE];
        let magic = le_u32(m, 0);
        if magic != MAGIC {
            return Err(format!("magic 0x{magic:08x}, expected 0x{MAGIC:08x}"));
        }
        let version = le_u32(m, 4);
        if version != VERSION {
            return Err(format!("version {version}, expected {VERSION}"));
        }
        let stored = le_u64(m, 56);
        let computed = fnv1a64(&m[..META_CHECKSUMMED]);
        if stored != computed {
            return Err(format!("checksum 0x{stored:016x}, computed 0x{computed:016x}"));
        }
        let page_size = le_u32(m, 8);
        if !valid_page_size(page_size) {
            return Err(format!("unsupported page size {page_size}"));
        }
        Ok(Meta {
            page_size,
            flags: le_u32(m, 12),
            root: le_u64(m, 16),
            sequence: le_u64(m, 24),
            freelist: le_u64(m, 32),
            hwm: le_u64(m, 40),
            txid: le_u64(m, 48),
        })
    }
}

/// One leaf element, resolved against its page bytes.
pub(crate) struct LeafElement<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Where element `i`'s data lies: checks the element and its key (and value)
/// are inside `page` and after the element array.
fn element_data(
    page: &[u8],
    count: usize,
    i: usize,
    pos: u32,
    len: u64,
) -> Result<std::ops::Range<usize>, String> {
    let elem_off = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
    let start = elem_off as u64 + u64::from(pos);
    let end = start + len;
    let data_min = (PAGE_HEADER_SIZE + count * ELEMENT_SIZE) as u64;
    if start < data_min || end > page.len() as u64 {
        return Err(format!(
            "element {i}: data at offset {start}..{end} is outside {data_min}..{}",
            page.len()
        ));
    }
    // Both bounds are at most page.len(), so they fit in usize.
    Ok(start as usize..end as usize)
}

fn check_element_array(page: &[u8], count: usize) -> Result<(), String> {
    let need = PAGE_HEADER_SIZE + count * ELEMENT_SIZE;
    if need > page.len() {
        return Err(format!("{count} elements need {need} bytes, the page has {}", page.len()));
    }
    Ok(())
}

/// Element `i` of a leaf page of `count` elements.
pub(crate) fn leaf_element(page: &[u8], count: usize, i: usize) -> Result<LeafElement<'_>, String> {
    check_element_array(page, count)?;
    let e = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
    let flags = le_u32(page, e);
    let pos = le_u32(page, e + 4);
    let ksize = le_u32(page, e + 8);
    let vsize = le_u32(page, e + 12);
    if ksize == 0 {
        return Err(format!("element {i}: empty key"));
    }
    let r = element_data(page, count, i, pos, u64::from(ksize) + u64::from(vsize))?;
    let split = r.start + ksize as usize;
    Ok(LeafElement { flags, key: &page[r.start..split], value: &page[split..r.end] })
}

/// Element `i` of a branch page of `count` elements: first key of the child
/// and the child's page id.
pub(crate) fn branch_element(page: &[u8], count: usize, i: usize) -> Result<(&[u8], u64), String> {
    check_element_array(page, count)?;
    let e = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
    let pos = le_u32(page, e);
    let ksize = le_u32(page, e + 4);
    let child = le_u64(page, e + 8);
    if ksize == 0 {
        return Err(format!("element {i}: empty key"));
    }
    let r = element_data(page, count, i, pos, u64::from(ksize))?;
    Ok((&page[r], child))
}

/// Builds one branch or leaf page: elements are appended in order; the
/// element array is laid out when the page is encoded.
#[derive(Debug)]
pub(crate) struct PageBuilder {
    leaf: bool,
    /// (flags for a leaf or low half of the child id, key size, value size or
    /// high half of the child id) per element.
    elems: Vec<(u32, u32, u32)>,
    /// Keys and values, concatenated in element order.
    data: Vec<u8>,
}

impl PageBuilder {
    pub(crate) fn new(leaf: bool) -> Self {
        PageBuilder { leaf, elems: Vec::new(), data: Vec::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.elems.len()
    }

    /// Bytes the page needs: header, element array, keys and values.
    pub(crate) fn size(&self) -> usize {
        PAGE_HEADER_SIZE + self.elems.len() * ELEMENT_SIZE + self.data.len()
    }

    /// Size an element adds to a page.
    pub(crate) fn element_size(key: &[u8], value_len: usize) -> usize {
        ELEMENT_SIZE + key.len() + value_len
    }

    pub(crate) fn first_key(&self) -> &[u8] {
        match self.elems.first() {
            Some(&(_, ksize, _)) => &self.data[..ksize as usize],
            None => &[],
        }
    }

    /// Appends a leaf element. Sizes were checked by the caller (key at most
    /// [`MAX_KEY_SIZE`], value at most [`MAX_VALUE_SIZE`]).
    pub(crate) fn push_leaf(&mut self, flags: u32, key: &[u8], value: &[u8]) {
        debug_assert!(self.leaf);
        self.elems.push((flags, key.len() as u32, value.len() as u32));
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
    }

    /// Appends a branch element: first key of the child page and its id.
    pub(crate) fn push_branch(&mut self, key: &[u8], child: u64) {
        debug_assert!(!self.leaf);
        self.elems.push((child as u32, key.len() as u32, (child >> 32) as u32));
        self.data.extend_from_slice(key);
    }

    pub(crate) fn clear(&mut self) {
        self.elems.clear();
        self.data.clear();
    }

    /// Encodes the page with header id `id` into `out`, which is cleared and
    /// then holds exactly [`Self::size`] bytes, or, if `page_size` is given,
    /// that rounded up to whole pages with the header's overflow field
    /// counting the pages after the first.
    pub(crate) fn encode(&self, id: u64, page_size: Option<usize>, out: &mut Vec<u8>) {
        let size = self.size();
        let (total, overflow) = match page_size {
            Some(ps) => {
                let pages = size.div_ceil(ps);
                (pages * ps, (pages - 1) as u32)
            }
            None => (size, 0),
        };
        out.clear();
        out.resize(total, 0);
        PageHeader {
            id,
            flags: if self.leaf { FLAG_LEAF } else { FLAG_BRANCH },
            count: self.elems.len() as u16,
            overflow,
        }
        .encode(out);
        let data_start = PAGE_HEADER_SIZE + self.elems.len() * ELEMENT_SIZE;
        let mut data_off = data_start;
        for (i, &(a, ksize, b)) in self.elems.iter().enumerate() {
            let e = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
            // Offset of the element's data from the element itself.
            let pos = (data_off - e) as u32;
            let slot = &mut out[e..e + ELEMENT_SIZE];
            if self.leaf {
                slot[0..4].copy_from_slice(&a.to_le_bytes());
                slot[4..8].copy_from_slice(&pos.to_le_bytes());
                slot[8..12].copy_from_slice(&ksize.to_le_bytes());
                slot[12..16].copy_from_slice(&b.to_le_bytes());
                data_off += ksize as usize + b as usize;
            } else {
                let child = u64::from(a) | (u64::from(b) << 32);
                slot[0..4].copy_from_slice(&pos.to_le_bytes());
                slot[4..8].copy_from_slice(&ksize.to_le_bytes());
                slot[8..16].copy_from_slice(&child.to_le_bytes());
                data_off += ksize as usize;
            }
        }
        out[data_start..data_start + self.data.len()].copy_from_slice(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn meta_round_trip_and_checksum() {
        let m =
            Meta { page_size: 4096, flags: 0, root: 3, sequence: 0, freelist: 2, hwm: 4, txid: 7 };
        let mut page = vec![0u8; 4096];
        PageHeader { id: 1, flags: FLAG_META, count: 0, overflow: 0 }.encode(&mut page);
        m.encode(&mut page[PAGE_HEADER_SIZE..]);
        assert_eq!(Meta::decode(&page), Ok(m));
        page[PAGE_HEADER_SIZE + 48] ^= 1;
        assert!(Meta::decode(&page).unwrap_err().contains("checksum"));
    }

    #[test]
    fn leaf_and_branch_pages_parse_back() {
        let mut leaf = PageBuilder::new(true);
        leaf.push_leaf(0, b"a", b"1");
        leaf.push_leaf(BUCKET_LEAF_FLAG, b"bb", b"");
        let mut buf = Vec::new();
        leaf.encode(9, Some(512), &mut buf);
        assert_eq!(buf.len(), 512);
        let e = leaf_element(&buf, 2, 1).unwrap();
        assert_eq!((e.flags, e.key, e.value), (BUCKET_LEAF_FLAG, &b"bb"[..], &b""[..]));
        assert!(leaf_element(&buf[..40], 2, 0).is_err());

        let mut branch = PageBuilder::new(false);
        branch.push_branch(b"k", 0x1_0000_0002);
        branch.encode(3, None, &mut buf);
        assert_eq!(buf.len(), PAGE_HEADER_SIZE + ELEMENT_SIZE + 1);
        assert_eq!(branch_element(&buf, 1, 0).unwrap(), (&b"k"[..], 0x1_0000_0002));
    }

    #[test]
    fn show_escapes() {
        assert_eq!(show(b"a\x00\""), "\"a\\x00\\x22\"");
    }
}
