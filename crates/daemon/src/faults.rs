//! A test-only fault switch: when the environment variable named by
//! [`BLOCK_FILE_ENV`] points at a file, the member drops all Raft traffic to and from
//! the member IDs (hex, comma or whitespace separated) listed in it, re-reading it
//! every 100 ms. Process-level partition tests write these files; production never
//! sets the variable.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use etcd_transport::PeerTransport;

/// The environment variable naming the block file.
pub const BLOCK_FILE_ENV: &str = "ETCD_RS_TEST_BLOCK_PEERS_FILE";

fn parse(text: &str) -> BTreeSet<u64> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .filter_map(|s| u64::from_str_radix(s, 16).ok())
        .collect()
}

/// Applies the block file's contents to the transport until the process ends.
pub(crate) async fn follow_block_file(transport: PeerTransport, path: PathBuf) {
    tracing::warn!(file = %path.display(), "test fault switch enabled: peer traffic follows this file");
    let mut current = BTreeSet::new();
    loop {
        let blocked = std::fs::read_to_string(&path).map(|t| parse(&t)).unwrap_or_default();
        if blocked != current {
            tracing::warn!(blocked = ?blocked.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>(), "test fault switch changed");
            transport.set_blocked(blocked.clone());
            current = blocked;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_file_lists_hex_ids() {
        assert_eq!(parse("8e9e05c52164694d, 1a\n"), BTreeSet::from([0x8e9e05c52164694d, 0x1a]));
        assert!(parse("").is_empty());
    }
}
