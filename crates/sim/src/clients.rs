//! The clients of the world: key-value clients (put, delete, compare-and-swap,
//! linearizable and serializable gets), watch clients and the lease client,
//! and how their answers become the history the checkers judge.

use crate::check::{Call, Op, Ret};
use crate::member::{KeepAlive, Reply};
use crate::{leases, mix, tracing, watches, watches_new, InFlight, World, KEYS, OP_TIMEOUT_MS};

impl World {
    /// Each watch client pulls through its member, or resumes on another one
    /// from where it was when its member went away (and now and then anyway,
    /// sometimes from an older revision).
    pub(crate) fn watch(&mut self) -> Result<(), String> {
        let mut clients = std::mem::take(&mut self.watch_clients);
        let result = clients.iter_mut().try_for_each(|client| self.watch_one(client));
        self.watch_clients = clients;
        result
    }

    pub(crate) fn watch_one(&mut self, client: &mut watches::WatchClient) -> Result<(), String> {
        if let Some((member, incarnation)) = client.on() {
            let gone = self
                .members
                .get(&member)
                .is_none_or(|m| !m.is_up() || m.incarnation() != incarnation);
            if gone {
                client.detach();
            } else if self.rng.below(0, 3_000) == 0 {
                // The client moves; half the time it starts over from an
                // older revision.
                match self.rng.below(0, 2) {
                    0 => client.detach(),
                    _ => client.rewind(self.rng.below(1, client.next() as u64 + 1) as i64),
                }
            }
        }
        let Some((member, _)) = client.on() else {
            let member = self.pick();
            let spec = client.spec();
            let incarnation = self.member(member).incarnation();
            if let Some(watcher) = self.member(member).with_watch(|hub, _| watches_new(hub, spec)) {
                if tracing() {
                    eprintln!("{:>6} watch client {} on member {member}", self.now, client.id);
                }
                client.attach(member, incarnation, watcher);
            }
            return Ok(());
        };
        let reference = &self.reference;
        let skip = &mut self.skip_watch_event;
        let member = self.members.get(&member).expect("checked above");
        let outcome = member
            .with_watch(|hub, kv| client.pull(hub, kv, reference, skip))
            .unwrap_or(Ok(watches::Outcome::Restart))?;
        if matches!(outcome, watches::Outcome::Restart) {
            client.detach();
        }
        mix(&mut self.summary.digest, client.batches);
        Ok(())
    }

    /// A lease's grant or the put of its key answered.
    pub(crate) fn lease_reply(&mut self, op: u64, reply: Reply) {
        let Some(lease) = self.lease_client.by_op(op) else { return };
        let (id, key, stage) = (lease.id, lease.key.clone(), lease.stage);
        match (stage, reply) {
            (leases::Stage::Granting(_), Reply::Done) => {
                self.next_op += 1;
                let put = self.next_op;
                if let Some(lease) = self.lease_client.leases.get_mut(&id) {
                    lease.stage = leases::Stage::Putting(put);
                }
                let member = self.pick();
                let value = format!("v{put}").into_bytes();
                self.member(member).put_with_lease(put, &key, &value, id);
            }
            (leases::Stage::Putting(_), Reply::Done) => {
                if let Some(lease) = self.lease_client.leases.get_mut(&id) {
                    lease.stage = leases::Stage::Alive;
                }
            }
            _ => {
                if let Some(lease) = self.lease_client.leases.get_mut(&id) {
                    lease.stage = leases::Stage::Abandoned;
                }
            }
        }
    }

    /// Grants leases now and then, keeps the live ones alive through random
    /// members (forwarded to the leader when they do not lead), and runs each
    /// member's lease duty every 500 ms.
    pub(crate) fn leases(&mut self, faults: bool) -> Result<(), String> {
        let now = self.now;
        for id in self.ids() {
            let offset = (id * 37) % etcd_server::apply_core::LEASE_DUTY_INTERVAL_MS;
            if now % etcd_server::apply_core::LEASE_DUTY_INTERVAL_MS == offset {
                self.member(id).lease_duty(now);
            }
            self.member(id).compaction_duty(now);
        }
        let live = self
            .lease_client
            .leases
            .values()
            .filter(|l| l.stage != leases::Stage::Abandoned && l.keep_until > now)
            .count();
        if faults && live < 2 && now >= self.lease_client.next_grant {
            self.lease_client.next_grant = now + self.rng.below(500, 3_000);
            self.next_op += 1;
            let op = self.next_op;
            let keep_for = self.rng.below(0, 8_000);
            let (id, _) = self.lease_client.start(op, now, keep_for);
            let member = self.pick();
            self.member(member).grant(op, id, leases::TTL_SECS);
        }
        let due: Vec<i64> = self
            .lease_client
            .leases
            .values()
            .filter(|l| {
                l.stage == leases::Stage::Alive && l.next_keepalive <= now && now < l.keep_until
            })
            .map(|l| l.id)
            .collect();
        for id in due {
            if let Some(lease) = self.lease_client.leases.get_mut(&id) {
                lease.next_keepalive = now + 1_000;
            }
            let via = self.pick();
            if !self.member(via).is_up() {
                continue;
            }
            let mut answer = self.member(via).keepalive(id, now);
            if answer == KeepAlive::NotLeader {
                // Forwarded to the leader, if this member reaches it.
                if let Some(leader) = self.leader().filter(|&l| l != via && self.round_trip(via, l))
                {
                    answer = self.member(leader).keepalive(id, now);
                }
            }
            match answer {
                KeepAlive::Renewed => self.lease_client.renewed(id, now),
                KeepAlive::NotFound => self.lease_client.not_found(id, now)?,
                KeepAlive::NotLeader => {}
            }
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self, op: u64, reply: Reply) {
        let Some(mut flight) = self.in_flight.remove(&op) else { return };
        if crate::tracing() {
            eprintln!("{:>6} op #{op} done: {reply:?}", self.now);
        }
        mix(&mut self.summary.digest, op ^ self.now << 20);
        let pause = self.rng.below(0, 20);
        if let Some(idle) = self.idle_until.get_mut(flight.op.client as usize) {
            *idle = self.now + pause;
        }
        let ret = match reply {
            Reply::Done => Ret::Done,
            Reply::Cas(succeeded) => Ret::Cas(succeeded),
            Reply::Read(value) => Ret::Value(value),
            // Certainly not applied: not part of the history.
            Reply::Refused(_) => return,
            // A read that failed says nothing; a write may still be applied.
            Reply::Unknown(_) if flight.op.call == Call::Get => return,
            Reply::Unknown(_) => {
                self.summary.unknown += 1;
                self.history.push(flight.op);
                return;
            }
        };
        let seen = match (&flight.op.call, &ret) {
            (Call::Put(v), _) => Some(Some(v.clone())),
            (Call::Delete, _) => Some(None),
            (_, Ret::Value(v)) => Some(v.clone()),
            (Call::Cas { new, .. }, Ret::Cas(true)) => Some(Some(new.clone())),
            _ => None,
        };
        if let Some(seen) = seen {
            self.last_seen.insert((flight.op.client, flight.op.key.clone()), seen);
        }
        flight.op.ret = Some(ret);
        flight.op.completed = Some(self.now);
        self.summary.completed += 1;
        self.history.push(flight.op);
    }

    pub(crate) fn clients(&mut self, faults: bool) -> Result<(), String> {
        let now = self.now;
        let expired: Vec<u64> =
            self.in_flight.iter().filter(|(_, f)| f.deadline <= now).map(|(&op, _)| op).collect();
        for op in expired {
            self.finish(op, Reply::Unknown(etcd_server::ServerError::Timeout));
        }
        if !faults {
            return Ok(());
        }
        for client in 0..self.idle_until.len() {
            let busy = self.in_flight.values().any(|f| f.op.client == client as u64);
            if busy || self.idle_until[client] > now {
                continue;
            }
            let member = self.pick();
            if !self.member(member).is_up() {
                self.idle_until[client] = now + 50;
                continue;
            }
            self.next_op += 1;
            let id = self.next_op;
            let key = format!("k{}", self.rng.below(0, KEYS)).into_bytes();
            let value = format!("c{client}-{id}").into_bytes();
            let call = match self.rng.below(0, 20) {
                0..=6 => Call::Put(value),
                7 => Call::Delete,
                8..=10 => {
                    // Compare against what this client last saw of the key.
                    let expect =
                        self.last_seen.get(&(client as u64, key.clone())).cloned().flatten();
                    Call::Cas { expect, new: value }
                }
                11..=12 => {
                    self.serializable_read(member, &key)?;
                    self.idle_until[client] = now + self.rng.below(1, 20);
                    continue;
                }
                _ => Call::Get,
            };
            if tracing() {
                eprintln!(
                    "{now:>6} op #{id} client {client} -> member {member}: {:?} {call:?}",
                    String::from_utf8_lossy(&key)
                );
            }
            let op = Op {
                id,
                client: client as u64,
                key: key.clone(),
                call: call.clone(),
                ret: None,
                invoked: now,
                completed: None,
            };
            self.in_flight.insert(id, InFlight { op, deadline: now + OP_TIMEOUT_MS });
            match call {
                Call::Get => self.member(member).read(id, &key),
                write => self.member(member).write(id, &key, &write),
            }
        }
        Ok(())
    }

    /// A serializable read answers at once from the member's store; on one
    /// member (in one run of it) its revision never goes backwards.
    pub(crate) fn serializable_read(&mut self, member: u64, key: &[u8]) -> Result<(), String> {
        let incarnation = self.member(member).incarnation();
        let Some((revision, _)) = self.member(member).read_serializable(key) else {
            return Ok(());
        };
        let last = self.serializable.entry((member, incarnation)).or_insert(0);
        if revision < *last {
            return Err(format!(
                "serializable reads: member {member} answered at revision {revision} after {last}"
            ));
        }
        *last = revision;
        Ok(())
    }
}
