//! etcd's Raft snapshot file (`member/snap/{term:016x}-{index:016x}.snap`),
//! written so a member of ours can be handed back to etcd.
//!
//! etcd 3.4 and 3.5 recover their membership from this file, not from the
//! backend: it holds the v2 store (a JSON tree) with every member under
//! `/0/members/{id:x}/raftAttributes` (`{"peerURLs":[...]}`, `isLearner` when
//! true) and `.../attributes` (`{"name":...,"clientURLs":[...]}`), the cluster
//! version under `/0/version`, and the empty `/1` directory of v2 keys.
//!
//! Format (interface facts): the file is a `snappb.Snapshot` (`crc` = 1, the
//! CRC-32C of `data`; `data` = 2) whose data is a `raftpb.Snapshot` (`data` =
//! 1, the v2 store's JSON; `metadata` = 2: `conf_state` = 1 with `voters` = 1,
//! `learners` = 2 and `auto_leave` = 5, `index` = 2, `term` = 3; proto2, every
//! scalar written).

use std::path::{Path, PathBuf};

use etcd_proto::etcdrs::Member;
use serde_json::{json, Map, Value};

use crate::etcd_wal::{put_bytes, put_uint};
use crate::SnapshotError;

/// The cluster version a member handed back to etcd starts with: both etcd
/// 3.4 and 3.5 run a 3.4 cluster (3.5 raises it once every member runs 3.5),
/// and 3.4 refuses to start in a cluster whose version is newer than its own.
pub const HANDBACK_CLUSTER_VERSION: &str = "3.4.0";

/// The v2 store etcd keeps, holding `members` and the cluster version, as the
/// JSON etcd's `store.Save` writes (Go's field names; a directory has
/// `Children`, a leaf has `null` there).
pub fn v2_store_json(members: &[Member], removed: &[u64], cluster_version: &str) -> Vec<u8> {
    let mut index = 0u64;
    let mut next = || {
        index += 1;
        index
    };
    let mut member_dirs = Map::new();
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by_key(|m| m.id);
    let mut first_index = None;
    for m in sorted {
        let dir = format!("/0/members/{:x}", m.id);
        let mut raft = json!({ "peerURLs": m.peer_urls });
        if m.is_learner {
            raft["isLearner"] = json!(true);
        }
        let raft_index = next();
        first_index.get_or_insert(raft_index);
        let mut children = Map::new();
        children.insert(
            "raftAttributes".into(),
            leaf(&format!("{dir}/raftAttributes"), raft_index, &raft.to_string()),
        );
        if !m.name.is_empty() || !m.client_urls.is_empty() {
            let mut attrs = Map::new();
            if !m.name.is_empty() {
                attrs.insert("name".into(), json!(m.name));
            }
            if !m.client_urls.is_empty() {
                attrs.insert("clientURLs".into(), json!(m.client_urls));
            }
            children.insert(
                "attributes".into(),
                leaf(&format!("{dir}/attributes"), next(), &Value::Object(attrs).to_string()),
            );
        }
        member_dirs.insert(format!("{:x}", m.id), directory(&dir, raft_index, children));
    }
    // etcd 3.4 refuses a removed ID by what `/0/removed_members` holds (an
    // empty node per ID).
    let mut removed_nodes = Map::new();
    let mut removed_first = None;
    let mut removed: Vec<u64> = removed.to_vec();
    removed.sort_unstable();
    for id in removed {
        let at = next();
        removed_first.get_or_insert(at);
        removed_nodes
            .insert(format!("{id:x}"), leaf(&format!("/0/removed_members/{id:x}"), at, ""));
    }
    let version_index = next();
    let mut cluster = Map::new();
    cluster.insert(
        "members".into(),
        directory("/0/members", first_index.unwrap_or(version_index), member_dirs),
    );
    if let Some(at) = removed_first {
        cluster
            .insert("removed_members".into(), directory("/0/removed_members", at, removed_nodes));
    }
    cluster.insert("version".into(), leaf("/0/version", version_index, cluster_version));
    let mut root = Map::new();
    root.insert("0".into(), directory("/0", 0, cluster));
    root.insert("1".into(), directory("/1", 0, Map::new()));
    let store = json!({
        "Root": directory("/", 0, root),
        "WatcherHub": {
            "EventHistory": {
                "Queue": {
                    "Events": vec![Value::Null; 1000],
                    "Size": 0, "Front": 0, "Back": 0, "Capacity": 1000
                },
                "StartIndex": 0,
                "LastIndex": 0
            }
        },
        "CurrentIndex": index,
        "Stats": {
            "getsSuccess": 0, "getsFail": 0, "setsSuccess": 0, "setsFail": 0,
            "deleteSuccess": 0, "deleteFail": 0, "updateSuccess": 0, "updateFail": 0,
            "createSuccess": index, "createFail": 0, "compareAndSwapSuccess": 0,
            "compareAndSwapFail": 0, "compareAndDeleteSuccess": 0, "compareAndDeleteFail": 0,
            "expireCount": 0, "watchers": 0
        },
        "CurrentVersion": 2
    });
    store.to_string().into_bytes()
}

fn node(path: &str, index: u64, value: &str, children: Value) -> Value {
    json!({
        "Path": path,
        "CreatedIndex": index,
        "ModifiedIndex": index,
        "ExpireTime": "0001-01-01T00:00:00Z",
        "Value": value,
        "Children": children,
    })
}

fn leaf(path: &str, index: u64, value: &str) -> Value {
    node(path, index, value, Value::Null)
}

fn directory(path: &str, index: u64, children: Map<String, Value>) -> Value {
    node(path, index, "", Value::Object(children))
}

/// The Raft configuration a snapshot records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapConfState {
    /// Voting members.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
}

/// The `.snap` file's name for a snapshot at `index` taken in `term`.
pub fn snap_file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// The bytes of a `.snap` file.
pub fn encode_snap_file(index: u64, term: u64, conf: &SnapConfState, data: &[u8]) -> Vec<u8> {
    let mut conf_state = Vec::new();
    for v in &conf.voters {
        put_uint(&mut conf_state, 1, *v);
    }
    for l in &conf.learners {
        put_uint(&mut conf_state, 2, *l);
    }
    put_uint(&mut conf_state, 5, 0);
    let mut metadata = Vec::new();
    put_bytes(&mut metadata, 1, &conf_state);
    put_uint(&mut metadata, 2, index);
    put_uint(&mut metadata, 3, term);
    let mut snapshot = Vec::new();
    put_bytes(&mut snapshot, 1, data);
    put_bytes(&mut snapshot, 2, &metadata);
    let mut file = Vec::new();
    put_uint(&mut file, 1, u64::from(crc32c::crc32c(&snapshot)));
    put_bytes(&mut file, 2, &snapshot);
    file
}

/// Writes the `.snap` file into `dir` (fsynced, with the directory).
pub fn write_snap_file(
    dir: &Path,
    index: u64,
    term: u64,
    conf: &SnapConfState,
    data: &[u8],
) -> Result<PathBuf, SnapshotError> {
    assert!(index > 0, "invariant: etcd treats a snapshot at index 0 as none");
    std::fs::create_dir_all(dir)?;
    let path = dir.join(snap_file_name(term, index));
    let mut file = std::fs::File::create(&path)?;
    std::io::Write::write_all(&mut file, &encode_snap_file(index, term, conf, data))?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snap_file_is_laid_out_as_etcds() {
        // The head and tail of the file real etcdctl 3.4's snapshot restore
        // wrote for two members (b71f75320dc06a6c, 9e85cc091d4d15bb) at index
        // 2, term 1: crc, data length, v2 JSON length ... conf state, index, term.
        let conf = SnapConfState {
            voters: vec![0x9e85cc091d4d15bb, 0xb71f75320dc06a6c],
            learners: vec![],
        };
        let data = vec![b'x'; 6984];
        let file = encode_snap_file(2, 1, &conf, &data);
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(&file[6..12]), "12eb360ac836");
        assert_eq!(
            hex(&file[file.len() - 32..]),
            "121e0a1808bbabb4ea9181f3c29e0108ecd481eea0a6dd8fb701280010021801"
        );
    }

    #[test]
    fn members_land_where_etcd_reads_them() {
        let members = vec![Member {
            id: 0xb71f75320dc06a6c,
            name: "m1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
            is_learner: true,
        }];
        let store: Value = serde_json::from_slice(&v2_store_json(&members, &[], "3.4.0")).unwrap();
        let m = &store["Root"]["Children"]["0"]["Children"]["members"]["Children"]
            ["b71f75320dc06a6c"]["Children"];
        assert_eq!(
            m["raftAttributes"]["Value"],
            r#"{"isLearner":true,"peerURLs":["http://127.0.0.1:2380"]}"#
        );
        assert_eq!(
            m["attributes"]["Value"],
            r#"{"clientURLs":["http://127.0.0.1:2379"],"name":"m1"}"#
        );
        assert_eq!(m["raftAttributes"]["Children"], Value::Null, "a leaf");
        assert_eq!(store["Root"]["Children"]["0"]["Children"]["version"]["Value"], "3.4.0");
        assert_eq!(store["Root"]["Children"]["1"]["Children"], json!({}), "an empty directory");
        assert_eq!(store["CurrentIndex"], 3);
    }

    #[test]
    fn removed_members_land_where_etcd_reads_them() {
        let store: Value =
            serde_json::from_slice(&v2_store_json(&[], &[0x1f, 0xa], "3.4.0")).unwrap();
        let removed = &store["Root"]["Children"]["0"]["Children"]["removed_members"];
        assert_eq!(removed["Path"], "/0/removed_members");
        assert_eq!(removed["Children"]["a"]["Path"], "/0/removed_members/a");
        assert_eq!(removed["Children"]["1f"]["Value"], "");
        assert_eq!(removed["Children"]["1f"]["Children"], Value::Null, "a leaf");
        assert_eq!(store["CurrentIndex"], 3);
    }
}
