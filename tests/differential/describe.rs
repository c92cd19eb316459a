//! Requests described for divergence reports.

use super::*;

// Describing requests (for divergence reports)

pub(super) fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

pub(super) fn show_range(key: &[u8], range_end: &[u8]) -> String {
    match range_end {
        [] => show(key),
        _ => format!("[{}, {})", show(key), show(range_end)),
    }
}

pub(super) fn describe_put(p: &PutRequest) -> String {
    let mut s = format!("put {}={}", show(&p.key), show(&p.value));
    for (on, name) in
        [(p.prev_kv, "prev_kv"), (p.ignore_value, "ignore_value"), (p.ignore_lease, "ignore_lease")]
    {
        if on {
            let _ = write!(s, " {name}");
        }
    }
    if p.lease != 0 {
        let _ = write!(s, " lease={:#x}", p.lease);
    }
    s
}

pub(super) fn describe_range(r: &RangeRequest) -> String {
    let mut s = format!("range {}", show_range(&r.key, &r.range_end));
    for (v, name) in [
        (r.limit, "limit"),
        (r.revision, "rev"),
        (r.min_mod_revision, "min_mod"),
        (r.max_mod_revision, "max_mod"),
        (r.min_create_revision, "min_create"),
        (r.max_create_revision, "max_create"),
    ] {
        if v != 0 {
            let _ = write!(s, " {name}={v}");
        }
    }
    if r.sort_order != 0 || r.sort_target != 0 {
        let order = SortOrder::try_from(r.sort_order).map(|o| o.as_str_name()).unwrap_or("?");
        let target = SortTarget::try_from(r.sort_target).map(|t| t.as_str_name()).unwrap_or("?");
        let _ = write!(s, " sort={order}/{target}");
    }
    for (on, name) in
        [(r.serializable, "serializable"), (r.keys_only, "keys_only"), (r.count_only, "count_only")]
    {
        if on {
            let _ = write!(s, " {name}");
        }
    }
    s
}

pub(super) fn describe_delete(d: &DeleteRangeRequest) -> String {
    format!(
        "delete {}{}",
        show_range(&d.key, &d.range_end),
        if d.prev_kv { " prev_kv" } else { "" }
    )
}

pub(super) fn describe_compare(c: &Compare) -> String {
    let target = CompareTarget::try_from(c.target).map(|t| t.as_str_name()).unwrap_or("?");
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => "=",
        Ok(CompareResult::NotEqual) => "!=",
        Ok(CompareResult::Greater) => ">",
        Ok(CompareResult::Less) => "<",
        Err(_) => "?",
    };
    let value = match &c.target_union {
        Some(TargetUnion::Value(v)) => format!("value:{}", show(v)),
        Some(TargetUnion::Version(v)) => format!("version:{v}"),
        Some(TargetUnion::CreateRevision(v)) => format!("create:{v}"),
        Some(TargetUnion::ModRevision(v)) => format!("mod:{v}"),
        Some(TargetUnion::Lease(v)) => format!("lease:{v:#x}"),
        None => "none".into(),
    };
    format!("{target}({}) {result} {value}", show_range(&c.key, &c.range_end))
}

pub(super) fn describe_txn(t: &TxnRequest) -> String {
    let ops = |ops: &[RequestOp]| {
        ops.iter()
            .map(|op| match &op.request {
                Some(Req::RequestPut(p)) => describe_put(p),
                Some(Req::RequestRange(r)) => describe_range(r),
                Some(Req::RequestDeleteRange(d)) => describe_delete(d),
                Some(Req::RequestTxn(t)) => describe_txn(t),
                None => "none".into(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let compares: Vec<String> = t.compare.iter().map(describe_compare).collect();
    format!(
        "txn {{ if [{}] then [{}] else [{}] }}",
        compares.join(", "),
        ops(&t.success),
        ops(&t.failure)
    )
}

pub(super) fn describe_watch(w: &WatchCreateRequest) -> String {
    let mut s = format!("watch {} from rev {}", show_range(&w.key, &w.range_end), w.start_revision);
    if w.prev_kv {
        s.push_str(" prev_kv");
    }
    for f in &w.filters {
        let name = FilterType::try_from(*f).map(|f| f.as_str_name()).unwrap_or("?");
        let _ = write!(s, " {name}");
    }
    s
}

pub(super) fn describe(op: &Op) -> String {
    match op {
        Op::Put(p) => describe_put(p),
        Op::Range(r) => describe_range(r),
        Op::Delete(d) => describe_delete(d),
        Op::Txn(t) => describe_txn(t),
        Op::Grant(g) => format!("lease grant id={:#x} ttl={}", g.id, g.ttl),
        Op::Revoke(r) => format!("lease revoke id={:#x}", r.id),
        Op::TimeToLive(t) => {
            format!("lease timetolive id={:#x}{}", t.id, if t.keys { " keys" } else { "" })
        }
        Op::Compact(c) => {
            format!("compact rev={}{}", c.revision, if c.physical { " physical" } else { "" })
        }
    }
}
