//! Record framing and payload codec.
//!
//! A record is `len: u32 LE | crc: u32 LE | type: u8 | payload`, where `len` counts the type byte
//! plus the payload and `crc` is the CRC32C of those same bytes. Payloads are fixed-width
//! little-endian integers and `u32`-length-prefixed byte strings; every payload must be consumed
//! exactly, so a length field that does not add up is detected as corruption.

use crate::{Entry, EntryRef, HardState, SnapshotMarker};

/// Size of the `len | crc` header that precedes every record body.
pub(crate) const HEADER_LEN: usize = 8;

/// Largest accepted record body (type byte + payload). A larger length field is corruption.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

pub(crate) const TYPE_METADATA: u8 = 1;
pub(crate) const TYPE_ENTRY: u8 = 2;
pub(crate) const TYPE_HARD_STATE: u8 = 3;
pub(crate) const TYPE_SNAPSHOT: u8 = 4;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Metadata(Vec<u8>),
    Entry(Entry),
    HardState(HardState),
    Snapshot(SnapshotMarker),
}

/// Body size of a record that failed to encode because it exceeds [`MAX_RECORD_BYTES`].
#[derive(Debug)]
pub(crate) struct TooLarge(pub usize);

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // A length that does not fit in u32 makes the body exceed MAX_RECORD_BYTES, which `frame`
    // rejects, so the truncating cast can never reach the disk.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends one framed record to `out`; `body` writes the payload. On error `out` is unchanged.
fn frame(out: &mut Vec<u8>, ty: u8, body: impl FnOnce(&mut Vec<u8>)) -> Result<(), TooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out.push(ty);
    body(out);
    let body_len = out.len() - start - HEADER_LEN;
    if body_len > MAX_RECORD_BYTES {
        out.truncate(start);
        return Err(TooLarge(body_len));
    }
    let crc = crc32c::crc32c(&out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

pub(crate) fn encode_metadata(out: &mut Vec<u8>, metadata: &[u8]) -> Result<(), TooLarge> {
    frame(out, TYPE_METADATA, |o| put_bytes(o, metadata))
}

pub(crate) fn encode_entry(out: &mut Vec<u8>, e: &EntryRef<'_>) -> Result<(), TooLarge> {
    frame(out, TYPE_ENTRY, |o| {
        put_u64(o, e.index);
        put_u64(o, e.term);
        o.push(e.entry_type);
        put_bytes(o, e.data);
        put_bytes(o, e.context);
    })
}

pub(crate) fn encode_hard_state(out: &mut Vec<u8>, hs: &HardState) -> Result<(), TooLarge> {
    frame(out, TYPE_HARD_STATE, |o| {
        put_u64(o, hs.term);
        put_u64(o, hs.vote);
        put_u64(o, hs.commit);
    })
}

pub(crate) fn encode_snapshot(out: &mut Vec<u8>, s: &SnapshotMarker) -> Result<(), TooLarge> {
    frame(out, TYPE_SNAPSHOT, |o| {
        put_u64(o, s.index);
        put_u64(o, s.term);
        put_bytes(o, &s.conf_state);
    })
}

/// Cursor over a payload; every getter returns `None` when the payload is too short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(n as usize).map(<[u8]>::to_vec)
    }
    fn finish<T>(self, v: T) -> Option<T> {
        self.0.is_empty().then_some(v)
    }
}

/// Parses a record body (type byte + payload). `None` if the type is unknown or the payload
/// does not have exactly the expected shape.
fn parse_body(body: &[u8]) -> Option<Record> {
    let (&ty, payload) = body.split_first()?;
    let mut r = Reader(payload);
    match ty {
        TYPE_METADATA => {
            let m = r.bytes()?;
            r.finish(Record::Metadata(m))
        }
        TYPE_ENTRY => {
            let e = Entry {
                index: r.u64()?,
                term: r.u64()?,
                entry_type: r.u8()?,
                data: r.bytes()?,
                context: r.bytes()?,
            };
            r.finish(Record::Entry(e))
        }
        TYPE_HARD_STATE => {
            let hs = HardState { term: r.u64()?, vote: r.u64()?, commit: r.u64()? };
            r.finish(Record::HardState(hs))
        }
        TYPE_SNAPSHOT => {
            let s = SnapshotMarker { index: r.u64()?, term: r.u64()?, conf_state: r.bytes()? };
            r.finish(Record::Snapshot(s))
        }
        _ => None,
    }
}

/// Result of decoding the record at the start of a buffer.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A valid record occupying `len` bytes (header included).
    Valid { record: Record, len: usize },
    /// The buffer ends before the record does.
    Incomplete(&'static str),
    /// The record is complete but invalid; the string says why.
    Bad(String),
}

/// Decodes the record at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER_LEN {
        return Decoded::Incomplete("has a header cut short by the end of the file");
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD_BYTES {
        return Decoded::Bad(format!(
            "has an invalid length {len} (valid lengths are 1..={MAX_RECORD_BYTES})"
        ));
    }
    if buf.len() - HEADER_LEN < len {
        return Decoded::Incomplete("has a body cut short by the end of the file");
    }
    let body = &buf[HEADER_LEN..HEADER_LEN + len];
    let crc_ok = crc32c::crc32c(body) == crc;
    match (parse_body(body), crc_ok) {
        (Some(record), true) => Decoded::Valid { record, len: HEADER_LEN + len },
        (_, false) => Decoded::Bad("fails its CRC".to_string()),
        (None, true) => Decoded::Bad(format!(
            "passes its CRC but has an unknown type {} or a malformed payload \
             (was it written by a newer version?)",
            body[0]
        )),
    }
}

/// True if a complete, valid record starts at the beginning of `buf`. Cheaper than [`decode`]
/// for rejecting garbage: the structural checks run before the CRC.
pub(crate) fn is_valid_record(buf: &[u8]) -> bool {
    if buf.len() < HEADER_LEN {
        return false;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_RECORD_BYTES || buf.len() - HEADER_LEN < len {
        return false;
    }
    let body = &buf[HEADER_LEN..HEADER_LEN + len];
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    parse_body(body).is_some() && crc32c::crc32c(body) == crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(buf: &[u8]) -> Record {
        match decode(buf) {
            Decoded::Valid { record, len } => {
                assert_eq!(len, buf.len());
                assert!(is_valid_record(buf));
                record
            }
            other => panic!("expected a valid record, got {other:?}"),
        }
    }

    #[test]
    fn encode_decode_every_type() {
        let e = Entry {
            index: 7,
            term: 3,
            entry_type: 1,
            data: b"hello".to_vec(),
            context: b"ctx".to_vec(),
        };
        let hs = HardState { term: 3, vote: 2, commit: 6 };
        let s = SnapshotMarker { index: 5, term: 2, conf_state: vec![1, 2, 3] };
        let mut b = Vec::new();
        encode_entry(&mut b, &e.as_ref()).unwrap();
        assert_eq!(roundtrip(&b), Record::Entry(e));
        b.clear();
        encode_hard_state(&mut b, &hs).unwrap();
        assert_eq!(roundtrip(&b), Record::HardState(hs));
        b.clear();
        encode_snapshot(&mut b, &s).unwrap();
        assert_eq!(roundtrip(&b), Record::Snapshot(s));
        b.clear();
        encode_metadata(&mut b, b"meta").unwrap();
        assert_eq!(roundtrip(&b), Record::Metadata(b"meta".to_vec()));
    }

    #[test]
    fn detects_damage() {
        let mut b = Vec::new();
        encode_metadata(&mut b, b"meta").unwrap();
        assert!(matches!(decode(&b[..5]), Decoded::Incomplete(_)));
        assert!(matches!(decode(&b[..b.len() - 1]), Decoded::Incomplete(_)));
        let mut flipped = b.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(decode(&flipped), Decoded::Bad(ref r) if r.contains("CRC")));
        assert!(!is_valid_record(&flipped));
        assert!(matches!(decode(&[0u8; 16]), Decoded::Bad(_)));
        let huge = [0xff_u8; 16];
        assert!(matches!(decode(&huge), Decoded::Bad(ref r) if r.contains("length")));
    }

    #[test]
    fn rejects_oversized_record_without_touching_buffer() {
        let mut b = vec![9u8];
        let big = vec![0u8; MAX_RECORD_BYTES];
        assert!(encode_metadata(&mut b, &big).is_err());
        assert_eq!(b, vec![9u8]);
    }
}
