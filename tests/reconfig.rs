//! `--strict-reconfig-check` (on by default, as in etcd): a member add sent to
//! a follower is refused while a voter is down (`etcdserver: unhealthy cluster`), a down
//! member can still be removed, and `=false` lets the add through. Checked
//! against real etcd 3.4 too.

mod common;

use std::time::{Duration, Instant};

use common::{etcdctl, must_etcdctl, Cluster, Flavor};

#[test]
fn a_member_add_is_refused_while_a_voter_is_down_unless_the_check_is_off() {
    for flavor in [Flavor::Ours, Flavor::RealEtcd] {
        if flavor == Flavor::RealEtcd && common::real_etcd().is_none() {
            continue;
        }
        for strict in [true, false] {
            let flags: &[&str] = if strict { &[] } else { &["--strict-reconfig-check=false"] };
            let mut cluster = Cluster::start_flavor(flavor, 3, flags);
            let leader = cluster.leader(Duration::from_secs(10)).expect("a leader");
            let down = (leader + 1) % 3;
            let ids = cluster.member_ids();
            cluster.members[down].kill9();
            // Asked of the other follower: the check is the receiving member's.
            let via = cluster.members[(leader + 2) % 3].endpoint();
            let add = ["member", "add", "m9", "--peer-urls=http://127.0.0.1:9", "--learner"];
            // The leader notices the dead connection at once; allow a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            let (ok, stderr) = loop {
                let out = etcdctl(&via, &add, None);
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                if strict && out.status.success() && Instant::now() < deadline {
                    // Added before the disconnect was seen: undo and try again.
                    let id = String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .nth(1)
                        .expect("an ID")
                        .to_owned();
                    must_etcdctl(&via, &["member", "remove", &id], None);
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                break (out.status.success(), stderr);
            };
            if strict {
                assert!(!ok, "{flavor:?}: added while a voter is down");
                assert!(stderr.contains("etcdserver: unhealthy cluster"), "{flavor:?}: {stderr}");
            } else {
                assert!(ok, "{flavor:?} with the check off: {stderr}");
            }
            // A member that is down is not part of the active quorum: removable.
            let removed =
                must_etcdctl(&via, &["member", "remove", &format!("{:x}", ids[down])], None);
            assert!(removed.contains("removed from cluster"), "{flavor:?}: {removed}");
        }
    }
}
