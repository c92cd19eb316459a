//! A borrowed look at a stored `mvccpb.KeyValue`: the fields the index and the
//! lessor need, read straight from the encoded bytes. Whole-table scans at
//! startup (the index rebuild, re-attaching leased keys) decode every row;
//! copying each value out only to drop it cost a full pass of allocation, and
//! collecting decoded rows held the whole database in memory.

use prost::encoding::{decode_key, decode_varint, WireType};

use crate::error::MvccError;

/// The fields of a stored `KeyValue` other than its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct KvView<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl<'a> KvView<'a> {
    /// Reads `bytes` (an encoded `KeyValue`); unknown fields are skipped as
    /// protobuf says, a malformed row is corruption.
    pub fn parse(bytes: &'a [u8]) -> Result<KvView<'a>, MvccError> {
        let bad = |what: &str| MvccError::Corrupt(format!("bad KeyValue: {what}"));
        let mut view = KvView::default();
        let mut buf = bytes;
        while !buf.is_empty() {
            let (tag, wire) = decode_key(&mut buf).map_err(|e| bad(&e.to_string()))?;
            match wire {
                WireType::Varint => {
                    // int64 fields are two's complement in a varint.
                    let n = decode_varint(&mut buf).map_err(|e| bad(&e.to_string()))? as i64;
                    match tag {
                        2 => view.create_revision = n,
                        3 => view.mod_revision = n,
                        4 => view.version = n,
                        6 => view.lease = n,
                        _ => {}
                    }
                }
                WireType::LengthDelimited => {
                    let len = decode_varint(&mut buf).map_err(|e| bad(&e.to_string()))?;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&l| l <= buf.len())
                        .ok_or_else(|| bad("field runs past the row"))?;
                    let (field, rest) = buf.split_at(len);
                    if tag == 1 {
                        view.key = field;
                    }
                    buf = rest;
                }
                WireType::SixtyFourBit if buf.len() >= 8 => buf = &buf[8..],
                WireType::ThirtyTwoBit if buf.len() >= 4 => buf = &buf[4..],
                other => return Err(bad(&format!("unexpected wire type {other:?}"))),
            }
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use etcd_proto::mvccpb::KeyValue;
    use prost::Message;

    use super::KvView;

    #[test]
    fn reads_what_prost_wrote() {
        for kv in [
            KeyValue::default(),
            KeyValue {
                key: b"k".to_vec(),
                create_revision: 3,
                mod_revision: 9,
                version: 4,
                value: vec![7; 3000],
                lease: -5,
            },
            KeyValue { key: vec![0xff; 300], lease: i64::MAX, ..Default::default() },
        ] {
            let bytes = kv.encode_to_vec();
            let view = KvView::parse(&bytes).unwrap();
            assert_eq!(
                (view.key, view.create_revision, view.mod_revision, view.version, view.lease),
                (&kv.key[..], kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            );
        }
    }

    #[test]
    fn a_cut_row_is_corrupt() {
        let kv = KeyValue { key: b"key".to_vec(), value: b"value".to_vec(), ..Default::default() };
        let bytes = kv.encode_to_vec();
        for cut in 1..bytes.len() {
            // Every strict prefix either ends inside a field (refused) or at a
            // field boundary (then it parses, as protobuf would).
            if let Ok(view) = KvView::parse(&bytes[..cut]) {
                assert!(view.key.is_empty() || view.key == b"key");
            }
        }
        assert!(KvView::parse(&[0x0a, 0x05, b'a']).is_err());
    }
}
