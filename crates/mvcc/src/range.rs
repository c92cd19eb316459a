//! RangeRequest option handling, shared by concurrent readers and by the
//! apply batch. A range is answered in two steps so that readers can drop
//! the index lock before touching the backend:
//! [`plan`] (under the index lock: revision checks, which revisions to
//! fetch, the count) and [`finish`] (filters, sort, limit, keys_only), with
//! [`fetch`] in between reading the values from a backend transaction.
//!
//! The order of the steps is etcd's (`etcdserver/apply.go` Range):
//! 1. `count` is the number of keys of the range that exist at the revision,
//!    before any filter or limit;
//! 2. if no sort order and no revision filter is asked, only `limit + 1`
//!    keys (in key order) are fetched; otherwise all of them;
//! 3. the mod/create revision filters drop entries;
//! 4. the entries are sorted (a sort target other than KEY with order NONE
//!    means ascending); ties keep key order;
//! 5. if more than `limit` entries remain they are cut to `limit` and `more` is set.
//!
//! A consequence kept from etcd: with `sort_target != KEY`, `sort_order ==
//! NONE` and a limit, only the first `limit + 1` keys are fetched and sorted.

use etcd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_proto::etcdserverpb::{RangeRequest, RangeResponse};
use etcd_proto::mvccpb::KeyValue;
use prost::Message;

use crate::error::MvccError;
use crate::index::{Index, KeyRange};
use crate::recent::ValueSource;
use crate::revision::Revision;

/// The revision a read at `req_rev` is served at, given the store's current
/// and compacted revisions (`req_rev <= 0` means current).
pub(crate) fn read_revision(req_rev: i64, current: i64, compacted: i64) -> Result<i64, MvccError> {
    if req_rev > current {
        return Err(MvccError::FutureRev);
    }
    let at = if req_rev <= 0 { current } else { req_rev };
    if at < compacted {
        return Err(MvccError::Compacted);
    }
    Ok(at)
}

/// What a range needs from the backend.
#[derive(Debug)]
pub(crate) struct RangePlan {
    /// Revisions to fetch, in key order.
    pub revs: Vec<Revision>,
    /// Keys of the range existing at the revision.
    pub count: i64,
}

/// Step 1 and 2: runs under the index lock.
pub(crate) fn plan(
    req: &RangeRequest,
    index: &Index,
    current: i64,
    compacted: i64,
) -> Result<RangePlan, MvccError> {
    let at = read_revision(req.revision, current, compacted)?;
    let range = KeyRange::new(&req.key, &req.range_end);
    if req.count_only {
        return Ok(RangePlan { revs: Vec::new(), count: index.count(range, at) as i64 });
    }
    let fetch_all = req.sort_order != SortOrder::None as i32 || has_filters(req);
    if !fetch_all && req.limit > 0 {
        // Count the whole range, but hold only the keys that are fetched: a page
        // of a huge range costs its page, not the range.
        let n = usize::try_from(req.limit).unwrap_or(usize::MAX).saturating_add(1);
        let count = index.count(range, at) as i64;
        let revs = index.range_limited(range, at, n).iter().map(|(_, kr)| kr.modified).collect();
        return Ok(RangePlan { revs, count });
    }
    let revs = index.revisions(range, at);
    Ok(RangePlan { count: revs.len() as i64, revs })
}

/// Whether `req` filters by mod or create revision.
pub(crate) fn has_filters(req: &RangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

/// Whether `kv` passes `req`'s mod and create revision filters (0: no bound).
fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
}

/// Reads and decodes the values of `revs` (plain, non-tombstone revisions).
pub(crate) fn fetch(src: &impl ValueSource, revs: &[Revision]) -> Result<Vec<KeyValue>, MvccError> {
    let mut kvs = Vec::with_capacity(revs.len());
    let mut failed = None;
    src.each_value(revs, &mut |value| {
        let decoded = match value {
            Some(v) => decode_kv(v),
            None => Err(not_stored(revs[kvs.len()])),
        };
        match decoded {
            Ok(kv) => kvs.push(kv),
            Err(e) => failed = Some(e),
        }
        failed.is_none()
    })?;
    failed.map_or(Ok(kvs), Err)
}

fn not_stored(r: Revision) -> MvccError {
    MvccError::Corrupt(format!("revision {}.{} is indexed but not stored", r.main, r.sub))
}

pub(crate) fn decode_kv(v: &[u8]) -> Result<KeyValue, MvccError> {
    KeyValue::decode(v).map_err(|e| MvccError::Corrupt(format!("bad KeyValue: {e}")))
}

/// Whether `req` is answered by the stored `KeyValue` encodings as they are:
/// in key order, unfiltered, with values, not just a count. The store keeps
/// each revision as an encoded `KeyValue`, so such an answer is a copy of
/// those bytes ([`fetch_encoded`]), never decoded or held twice.
pub(crate) fn plain(req: &RangeRequest) -> bool {
    let key_order = req.sort_target == SortTarget::Key as i32
        && (req.sort_order == SortOrder::None as i32 || req.sort_order == SortOrder::Ascend as i32);
    key_order && !req.count_only && !req.keys_only && !has_filters(req)
}

/// Steps 3 to 5 for a [`plain`] request, straight into the encoding of a
/// `RangeResponse` without its header: each stored value of `plan.revs` (in
/// key order, at most `limit`) as a `kvs` entry, then `more` and `count`.
/// Byte for byte what encoding [`finish`]'s answer gives.
pub(crate) fn fetch_encoded(
    src: &impl ValueSource,
    req: &RangeRequest,
    plan: &RangePlan,
) -> Result<Vec<u8>, MvccError> {
    debug_assert!(plain(req), "only plain ranges are answered from the stored encodings");
    use prost::encoding::{encode_key, encode_varint, int64, WireType};
    let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0).unwrap_or(usize::MAX);
    let more = plan.revs.len() > limit;
    let revs = &plan.revs[..plan.revs.len().min(limit)];
    let mut out = Vec::new();
    let mut missing = None;
    let mut at = 0;
    src.each_value(revs, &mut |value| {
        let Some(value) = value else {
            missing = Some(revs[at]);
            return false;
        };
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        at += 1;
        true
    })?;
    if let Some(r) = missing {
        return Err(not_stored(r));
    }
    if more {
        prost::encoding::bool::encode(3, &true, &mut out);
    }
    if plan.count != 0 {
        int64::encode(4, &plan.count, &mut out);
    }
    Ok(out)
}

/// Steps 3 to 5. The header is left `None`.
pub(crate) fn finish(
    req: &RangeRequest,
    plan: &RangePlan,
    mut kvs: Vec<KeyValue>,
) -> RangeResponse {
    if has_filters(req) {
        kvs.retain(|kv| passes_filters(req, kv));
    }

    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        let cmp = |a: &KeyValue, b: &KeyValue| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        match order {
            SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
            _ => kvs.sort_by(cmp),
        }
    }

    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse { header: None, kvs, more, count: plan.count }
}
