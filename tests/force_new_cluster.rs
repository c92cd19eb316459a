//! `--force-new-cluster`, etcd's disaster recovery: after a 3-member cluster is
//! lost, one surviving member restarts as a cluster of one with every
//! acknowledged key, stays one after a plain restart, and the members it dropped
//! are refused if they come back. Run against real etcd 3.4 too.

mod common;

use std::time::Duration;

use common::{etcdctl, must_etcdctl, Cluster, Flavor};

const KEYS: usize = 60;

fn keys_of(endpoint: &str) -> Vec<String> {
    let out = must_etcdctl(endpoint, &["get", "key/", "--prefix"], None);
    out.lines().map(str::to_owned).collect()
}

fn member_count(endpoint: &str) -> usize {
    must_etcdctl(endpoint, &["member", "list"], None).lines().count()
}

#[test]
fn force_new_cluster_recovers_a_lost_cluster_from_one_member_with_every_key() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            eprintln!("real etcd is not installed: checking ours only");
            continue;
        }
        let mut cluster = Cluster::start_flavor(flavor, 3, &[]);
        let ids = cluster.member_ids();
        // Every write is acknowledged by the cluster, through every member.
        for i in 0..KEYS {
            let via = cluster.members[i % 3].endpoint();
            must_etcdctl(&via, &["put", &format!("key/{i:03}"), &format!("value-{i}")], None);
        }
        let before = keys_of(&cluster.members[0].endpoint());
        assert_eq!(before.len(), 2 * KEYS, "{flavor:?}");
        if flavor == Flavor::RealEtcd {
            // etcd drops what the survivor had not yet persisted as committed (a
            // follower learns it with the leader's next message, and writes it
            // with the next entries it appends): one more write outside the keys,
            // and every member caught up, puts their commit on disk. Ours keeps
            // its whole log, so it is killed right after the last acknowledgement.
            must_etcdctl(&cluster.members[0].endpoint(), &["put", "barrier", "1"], None);
            cluster.wait_for_equal_raft_indexes();
        }

        // The cluster is lost: every member dies.
        for member in &mut cluster.members {
            member.kill9();
        }

        // Member 0 alone, forced: one member, same ID, every key, writable.
        let survivor = &mut cluster.members[0];
        survivor.extra_args.push("--force-new-cluster".into());
        survivor.restart();
        let via = survivor.endpoint();
        assert_eq!(keys_of(&via), before, "{flavor:?}: keys after --force-new-cluster");
        let members = must_etcdctl(&via, &["member", "list"], None);
        assert_eq!(members.lines().count(), 1, "{flavor:?}: {members}");
        assert!(members.starts_with(&format!("{:x},", ids[0])), "{flavor:?}: {members}");
        must_etcdctl(&via, &["put", "key/after", "forced"], None);

        // The new membership is durable: a restart without the flag keeps it.
        survivor.kill9();
        survivor.extra_args.retain(|a| a != "--force-new-cluster");
        survivor.restart();
        assert_eq!(member_count(&via), 1, "{flavor:?}");
        assert_eq!(keys_of(&via).len(), 2 * KEYS + 2, "{flavor:?}");
        must_etcdctl(&via, &["put", "key/after-restart", "1"], None);

        // A dropped member that comes back is refused and stops; the survivor
        // keeps serving alone.
        let dropped = &mut cluster.members[1];
        dropped.spawn();
        let exited = dropped.wait_exit(Duration::from_secs(30));
        let log = dropped.full_log().join("\n");
        assert!(exited, "{flavor:?}: the dropped member kept running:\n{log}");
        assert!(
            log.contains("the member has been permanently removed from the cluster"),
            "{flavor:?}: {log}"
        );
        assert_eq!(member_count(&via), 1, "{flavor:?}");
        let got = etcdctl(&via, &["get", "key/after-restart", "--print-value-only"], None);
        assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "1", "{flavor:?}");
    }
}
