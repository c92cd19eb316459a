//! Deterministic IDs. etcd derives a member's ID from its peer URLs and the cluster
//! token, and the cluster ID from the member IDs, so every member of a new cluster
//! computes the same values without talking to the others. We use etcd's exact
//! derivation so a default single member gets the IDs operators know from etcd.

use sha1::{Digest, Sha1};

fn first_8_bytes_be(digest: &[u8]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("sha1 digest is 20 bytes"))
}

/// A member's ID: SHA-1 of its sorted peer URLs concatenated, followed by the
/// cluster token; the first 8 bytes read big-endian.
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut hasher = Sha1::new();
    hasher.update(urls.concat().as_bytes());
    hasher.update(cluster_token.as_bytes());
    first_8_bytes_be(&hasher.finalize())
}

/// The cluster ID: SHA-1 of the sorted member IDs, each as 8 big-endian bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_8_bytes_be(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_single_member_ids_match_etcd() {
        // etcd 3.x started with no flags reports member 8e9e05c52164694d in
        // cluster cdf818194e3a8c32.
        let id = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[id])), "cdf818194e3a8c32");
    }

    #[test]
    fn member_id_ignores_url_order() {
        let a = member_id(&["http://a:2380".into(), "http://b:2380".into()], "t");
        let b = member_id(&["http://b:2380".into(), "http://a:2380".into()], "t");
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://a:2380".into(), "http://b:2380".into()], "u"));
    }
}
