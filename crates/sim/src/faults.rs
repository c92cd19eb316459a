//! The faults the world injects: crashes (of one member, of all, in the middle
//! of an fsync), partitions (whole or one-way), message loss, leader transfer, compaction,
//! defragmentation, read errors, membership changes; and healing.

use etcd_proto::etcdrs::member_change::Kind;
use etcd_server::raft_core::Input;

use crate::member::{sim_member_record, Reply, SimMember};
use crate::{tracing, World};

impl World {
    pub(crate) fn maybe_fault(&mut self) {
        if self.rng.below(0, 1000) != 0 {
            return;
        }
        self.summary.faults += 1;
        let now = self.now;
        match self.rng.below(0, 11) {
            0 | 1 => {
                // Half the time, a member in the middle of an fsync if there
                // is one (where torn writes come from).
                let fsyncing: Vec<u64> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.busy_until > now)
                    .map(|(&id, _)| id)
                    .collect();
                let victim = match fsyncing.is_empty() || self.rng.below(0, 2) == 0 {
                    true => self.pick(),
                    false => fsyncing[self.rng.below(0, fsyncing.len() as u64) as usize],
                };
                let until = now + self.rng.below(100, 2_000);
                if !self.down.contains_key(&victim) {
                    self.crash(victim, until);
                }
            }
            2 => {
                let victim = self.pick();
                let until = now + self.rng.below(500, 4_000);
                if self.rng.below(0, 2) == 0 {
                    self.isolated.insert(victim, until);
                } else {
                    // A one-way link failure: the victim's messages to one
                    // peer are lost, that peer's to the victim still arrive.
                    let peer = self.pick();
                    if peer != victim {
                        self.one_way.insert((victim, peer), until);
                    }
                }
            }
            3 => self.drop_per_mille = self.rng.below(0, 100),
            4 => {
                // The leader hands over to another member.
                let to = self.pick();
                if let Some(leader) = self.leader().filter(|&l| l != to) {
                    self.member(leader).input(Input::TransferLeader { to });
                }
            }
            5 => {
                // Compact history a little behind the head, through any member.
                let member = self.pick();
                if let Some(revision) = self.member(member).revision() {
                    let back = self.rng.below(0, 20) as i64;
                    self.member(member).compact((revision - back).max(1));
                }
            }
            6 => self.reconfigure(),
            7 => {
                let member = self.pick();
                self.member(member).defragment();
            }
            9 => {
                // The power fails in the middle of a member's next fsync: its
                // unsynced WAL and backend writes reach the disk in part.
                let victim = self.pick();
                self.member(victim).fail_at_next_fsync();
            }
            8 => {
                // A few of the member's next backend reads fail; or it
                // restarts and the first reads of its WAL fail, so it does
                // not start until they succeed.
                let member = self.pick();
                let reads = self.rng.below(1, 4) as u32;
                if self.rng.below(0, 2) == 0 {
                    self.member(member).fail_reads(reads);
                } else if !self.down.contains_key(&member) {
                    let until = now + self.rng.below(100, 1_000);
                    self.crash(member, until);
                    self.member(member).fail_wal_reads(reads);
                }
            }
            _ => {
                // The power goes out everywhere.
                for victim in self.ids() {
                    let until = now + self.rng.below(100, 1_000);
                    if !self.down.contains_key(&victim) {
                        self.crash(victim, until);
                    }
                }
            }
        }
    }

    /// A membership change, through a random member, keeping two to four
    /// voters: a learner is promoted; otherwise a voter is removed, or a new
    /// member is added as a learner (and started, as an operator would).
    pub(crate) fn reconfigure(&mut self) {
        let via = self.pick();
        if !self.pending_joins.is_empty() {
            return;
        }
        let Some(members) = self.member(via).members() else { return };
        let voters: Vec<u64> = members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect();
        if let Some(learner) = members.iter().find(|m| m.is_learner) {
            let learner = learner.clone();
            self.member(via).change_membership(Kind::Promote, learner);
        } else if voters.len() >= 4 || (voters.len() == 3 && self.rng.below(0, 2) == 0) {
            let id = voters[self.rng.below(0, voters.len() as u64) as usize];
            let member = members.iter().find(|m| m.id == id).expect("a voter").clone();
            if tracing() {
                eprintln!("{:>6} remove member {id} via {via}", self.now);
            }
            self.member(via).change_membership(Kind::Remove, member);
        } else {
            let id = self.next_member;
            self.next_member += 1;
            let member = sim_member_record(id);
            if tracing() {
                eprintln!("{:>6} add learner {id} via {via}", self.now);
            }
            self.member(via).change_membership(Kind::AddLearner, member);
            self.pending_joins.insert(id, self.now + 5_000);
        }
    }

    /// Starts the members whose addition a running member has applied (as an
    /// operator starts a member once `member add` succeeded), with the members
    /// table it learned; gives up on additions not applied within 5 s.
    pub(crate) fn start_joiners(&mut self) {
        let now = self.now;
        for (id, deadline) in std::mem::take(&mut self.pending_joins) {
            let learned = self
                .members
                .values()
                .filter_map(SimMember::members)
                .find(|members| members.iter().any(|m| m.id == id));
            match learned {
                Some(members) => {
                    if tracing() {
                        eprintln!("{now:>6} start joining member {id}");
                    }
                    let mut new =
                        SimMember::joining(id, members, self.seed ^ (id << 56), self.bugs);
                    new.start(now).expect("a new member starts on an empty disk");
                    self.members.insert(id, new);
                }
                None if deadline > now => {
                    self.pending_joins.insert(id, deadline);
                }
                None => {}
            }
        }
    }

    pub(crate) fn crash(&mut self, victim: u64, until: u64) {
        if crate::tracing() {
            let busy = self.members.get(&victim).is_some_and(|m| m.busy_until > self.now);
            eprintln!(
                "{:>6} crash {victim} until {until}{}",
                self.now,
                if busy { " (mid-fsync)" } else { "" }
            );
        }
        let seed = self.rng.next_u64();
        let mut lost = self.member(victim).crash(seed);
        lost.extend(self.held.remove(&victim).unwrap_or_default().into_iter().map(|(op, _)| op));
        self.held_messages.remove(&victim);
        for op in lost {
            self.finish(op, Reply::Unknown(etcd_server::ServerError::Stopped));
        }
        self.safety.restarted(victim);
        self.down.insert(victim, until);
    }

    pub(crate) fn heal(&mut self) {
        let now = self.now;
        self.isolated.retain(|_, until| *until > now);
        self.one_way.retain(|_, until| *until > now);
        let back: Vec<u64> =
            self.down.iter().filter(|(_, until)| **until <= now).map(|(&id, _)| id).collect();
        for id in back {
            self.down.remove(&id);
            if crate::tracing() {
                eprintln!("{now:>6} start {id}");
            }
            if let Err(why) = self.member(id).start(now) {
                // Its supervisor starts it again a little later.
                if crate::tracing() {
                    eprintln!("{now:>6} member {id} does not start: {why}");
                }
                let until = now + self.rng.below(100, 500);
                self.down.insert(id, until);
            }
        }
    }

    pub(crate) fn heal_all(&mut self) {
        self.isolated.clear();
        self.one_way.clear();
        self.drop_per_mille = 0;
        for member in self.members.values() {
            member.disarm_power_failure();
        }
        for until in self.down.values_mut() {
            *until = 0;
        }
    }
}
