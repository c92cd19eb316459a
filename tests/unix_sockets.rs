//! etcd's `unix://` URLs: clients and peers on Unix domain sockets (the socket's
//! path is the URL's host and path, relative to the working directory; etcd
//! accepts only the `unix://host:port` form). A 3-member cluster replicates over them,
//! etcdctl talks to them, and a member killed with its socket files left behind
//! starts again on the same paths. Run against real etcd 3.4 too.

mod common;

use common::{must_etcdctl, Cluster, Flavor};

#[test]
fn a_cluster_on_unix_sockets_replicates_and_restarts_over_stale_socket_files() {
    // The sockets are files in the working directory of every server and of
    // etcdctl: this test process's (the only test of this binary).
    let cwd = tempfile::tempdir().expect("tempdir");
    std::env::set_current_dir(cwd.path()).expect("cd");
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            eprintln!("real etcd is not installed: checking ours only");
            continue;
        }
        let mut cluster = Cluster::start_unix(flavor, 3);
        let (first, last) = (cluster.members[0].endpoint(), cluster.members[2].endpoint());
        assert!(first.starts_with("unix://"), "{first}");
        must_etcdctl(&first, &["put", "over", "unix"], None);
        let got = must_etcdctl(&last, &["get", "over", "--print-value-only"], None);
        assert_eq!(got.trim(), "unix", "{flavor:?}");
        let members = must_etcdctl(&last, &["member", "list"], None);
        assert_eq!(members.lines().count(), 3, "{flavor:?}: {members}");
        assert!(
            members.lines().all(|l| l.contains(".peer:") && l.contains(", unix://m")),
            "{flavor:?}: {members}"
        );

        // kill -9 leaves the socket files; the member binds the same paths again.
        // A follower, so that the writes meanwhile need no new election.
        let leader = cluster.leader(std::time::Duration::from_secs(10)).expect("a leader");
        let victim = (leader + 1) % 3;
        let via = cluster.members[leader].endpoint();
        cluster.members[victim].kill9();
        let socket = cluster.members[victim].endpoint();
        let path = socket.trim_start_matches("unix://").to_string();
        assert!(std::path::Path::new(&path).exists(), "{flavor:?}: a stale socket is left");
        must_etcdctl(&via, &["put", "while-down", "1"], None);
        if flavor == Flavor::RealEtcd {
            // etcd 3.4 replaces a stale peer socket but fails on a stale client
            // socket ("bind: address already in use"); ours replaces both.
            std::fs::remove_file(&path).expect("remove the stale client socket");
        }
        cluster.members[victim].restart();
        let got = must_etcdctl(&socket, &["get", "while-down", "--print-value-only"], None);
        assert_eq!(got.trim(), "1", "{flavor:?}");
    }
}
