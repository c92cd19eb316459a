//! etcd's buckets and the encoding of every value in them, as etcd 3.4/3.5 write
//! them (interface facts: a real etcd must read what we write and we must read
//! what it writes).
//!
//! | bucket            | key                                   | value                                    |
//! |-------------------|---------------------------------------|------------------------------------------|
//! | `alarm`           | encoded `etcdserverpb.AlarmMember`    | empty                                    |
//! | `auth`            | `authEnabled`, `authRevision`         | 1 byte; u64 big-endian                   |
//! | `authRoles`       | role name                             | encoded `authpb.Role`                    |
//! | `authUsers`       | user name                             | encoded `authpb.User`                    |
//! | `cluster`         | `clusterVersion`                      | version text, e.g. `3.5.0`               |
//! | `key`             | revision key (17 bytes, 18 with `t`)  | encoded `mvccpb.KeyValue`                |
//! | `lease`           | lease ID, u64 big-endian              | encoded `leasepb.Lease`                  |
//! | `members`         | member ID in lower-case hex           | JSON (Go's `encoding/json` of etcd's `Member`) |
//! | `members_removed` | member ID in lower-case hex           | `removed`                                |
//! | `meta`            | `consistent_index`, `term`, `finishedCompactRev`, `scheduledCompactRev` | u64 BE; u64 BE; revision key; revision key |
//!
//! bbolt keeps buckets and keys in byte order; [`BUCKETS`] is that order.

use etcd_proto::etcdrs::Member;
use etcd_proto::leasepb::Lease;
use prost::Message;

/// Every bucket etcd creates, in bbolt's (byte) order.
pub const BUCKETS: [&str; 10] =
    [ALARM, AUTH, AUTH_ROLES, AUTH_USERS, CLUSTER, KEY, LEASE, MEMBERS, MEMBERS_REMOVED, META];

/// Active alarms.
pub const ALARM: &str = "alarm";
/// The auth enabled flag and revision.
pub const AUTH: &str = "auth";
/// Roles.
pub const AUTH_ROLES: &str = "authRoles";
/// Users.
pub const AUTH_USERS: &str = "authUsers";
/// The cluster version.
pub const CLUSTER: &str = "cluster";
/// MVCC history.
pub const KEY: &str = "key";
/// Leases.
pub const LEASE: &str = "lease";
/// Members.
pub const MEMBERS: &str = "members";
/// IDs of removed members.
pub const MEMBERS_REMOVED: &str = "members_removed";
/// Consistent index, term and compaction marks.
pub const META: &str = "meta";

/// meta: index of the last applied entry, u64 big-endian.
pub const META_CONSISTENT_INDEX: &str = "consistent_index";
/// meta: term of the last applied entry, u64 big-endian (etcd 3.5).
pub const META_TERM: &str = "term";
/// meta: the last finished compaction, a revision key with sub 0.
pub const META_FINISHED_COMPACT_REV: &str = "finishedCompactRev";
/// meta: the last scheduled compaction, a revision key with sub 0.
pub const META_SCHEDULED_COMPACT_REV: &str = "scheduledCompactRev";
/// cluster: the cluster version's key.
pub const CLUSTER_VERSION_KEY: &str = "clusterVersion";
/// members_removed: the value of every entry.
pub const REMOVED: &str = "removed";

/// The `members` key of member `id`: Go's `types.ID.String()`, lower-case hex.
pub fn member_key(id: u64) -> String {
    format!("{id:x}")
}

/// The `members` value of `member`: exactly what Go's `json.Marshal` makes of
/// etcd's `Member` (`id` as a decimal number; `peerURLs` always, `null` when
/// empty as a nil slice; `isLearner` only when true; `name` and `clientURLs`
/// only when non-empty), so etcd reads it and Hash covers the same bytes.
pub fn member_json(member: &Member) -> String {
    let mut out = format!("{{\"id\":{},\"peerURLs\":", member.id);
    push_string_list(&mut out, &member.peer_urls);
    if member.is_learner {
        out.push_str(",\"isLearner\":true");
    }
    if !member.name.is_empty() {
        out.push_str(",\"name\":");
        push_go_string(&mut out, &member.name);
    }
    if !member.client_urls.is_empty() {
        out.push_str(",\"clientURLs\":");
        push_string_list(&mut out, &member.client_urls);
    }
    out.push('}');
    out
}

/// Reads a `members` value written by etcd (or [`member_json`]).
pub fn parse_member_json(bytes: &[u8]) -> Result<Member, String> {
    #[derive(serde::Deserialize)]
    struct Stored {
        id: u64,
        #[serde(rename = "peerURLs", default)]
        peer_urls: Option<Vec<String>>,
        #[serde(rename = "isLearner", default)]
        is_learner: bool,
        #[serde(default)]
        name: String,
        #[serde(rename = "clientURLs", default)]
        client_urls: Option<Vec<String>>,
    }
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(Member {
        id: stored.id,
        name: stored.name,
        peer_urls: stored.peer_urls.unwrap_or_default(),
        client_urls: stored.client_urls.unwrap_or_default(),
        is_learner: stored.is_learner,
    })
}

fn push_string_list(out: &mut String, list: &[String]) {
    if list.is_empty() {
        out.push_str("null");
        return;
    }
    out.push('[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_go_string(out, s);
    }
    out.push(']');
}

/// A JSON string as Go's `encoding/json` writes it: besides `"`, `\` and control
/// characters it escapes `<`, `>`, `&`, U+2028 and U+2029 (HTML-safe output).
fn push_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The `lease` key of lease `id`.
pub fn lease_key(id: i64) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

/// The `lease` value: `leasepb.Lease` (RemainingTTL 0 when no checkpoint).
pub fn lease_value(id: i64, ttl: i64, remaining_ttl: i64) -> Vec<u8> {
    Lease { id, ttl, remaining_ttl }.encode_to_vec()
}

/// Reads a `lease` value.
pub fn parse_lease(bytes: &[u8]) -> Result<Lease, String> {
    Lease::decode(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes a real etcd 3.4 wrote for a one-member cluster (dumped from its
    /// `snapshot save` file).
    #[test]
    fn member_json_is_byte_for_byte_etcds() {
        let member = Member {
            id: 3319814642761637952,
            name: "default".into(),
            peer_urls: vec!["http://127.0.0.1:23800".into()],
            client_urls: vec!["http://127.0.0.1:23790".into()],
            is_learner: false,
        };
        let etcd = r#"{"id":3319814642761637952,"peerURLs":["http://127.0.0.1:23800"],"name":"default","clientURLs":["http://127.0.0.1:23790"]}"#;
        assert_eq!(member_json(&member), etcd);
        assert_eq!(member_key(member.id), "2e1259d415f2a040");
        assert_eq!(parse_member_json(etcd.as_bytes()).unwrap(), member);
    }

    #[test]
    fn member_json_of_an_unstarted_learner_and_escapes() {
        let member = Member {
            id: 1,
            name: String::new(),
            peer_urls: vec!["http://h:1/?a=<b>&c".into()],
            client_urls: Vec::new(),
            is_learner: true,
        };
        let json = member_json(&member);
        assert_eq!(
            json,
            r#"{"id":1,"peerURLs":["http://h:1/?a=\u003cb\u003e\u0026c"],"isLearner":true}"#
        );
        assert_eq!(parse_member_json(json.as_bytes()).unwrap(), member);
        let none = Member { peer_urls: Vec::new(), ..member };
        assert!(member_json(&none).contains(r#""peerURLs":null"#));
    }

    #[test]
    fn lease_encoding_is_etcds() {
        // etcd 3.4 wrote lease 0x2040a246aa755a09 with TTL 100 as these bytes.
        let id = 0x2040a246aa755a09_i64;
        assert_eq!(lease_key(id), [0x20, 0x40, 0xa2, 0x46, 0xaa, 0x75, 0x5a, 0x09]);
        let v = lease_value(id, 100, 0);
        assert_eq!(v, [0x08, 0x89, 0xb4, 0xd5, 0xd3, 0xea, 0xc8, 0xa8, 0xa0, 0x20, 0x10, 0x64]);
        let back = parse_lease(&v).unwrap();
        assert_eq!((back.id, back.ttl, back.remaining_ttl), (id, 100, 0));
    }

    #[test]
    fn buckets_are_in_byte_order() {
        let mut sorted = BUCKETS;
        sorted.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(sorted, BUCKETS);
    }
}
