//! Conversion between raft-rs's `eraftpb` types (protobuf 2) and our prost
//! envelope (`etcd_proto::etcdrs::Raft*`). Every field is carried, including
//! presence of the optional snapshot, metadata and conf state, so a round trip
//! is lossless. Bytes from the network are only ever decoded by prost; this
//! module then builds the raft-rs values field by field.

use etcd_proto::etcdrs::{
    RaftConfState, RaftEntry, RaftEntryType, RaftMessage, RaftMessageType, RaftSnapshot,
    RaftSnapshotMetadata,
};
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

/// A wire message that cannot be turned into a raft-rs message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown raft message type {0}")]
    UnknownMessageType(i32),
    #[error("unknown raft entry type {0}")]
    UnknownEntryType(i32),
}

/// Converts a raft-rs message into its wire form.
pub fn message_to_wire(m: &Message) -> RaftMessage {
    RaftMessage {
        msg_type: message_type_to_wire(m.msg_type) as i32,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.entries.iter().map(entry_to_wire).collect(),
        commit: m.commit,
        commit_term: m.commit_term,
        snapshot: m.snapshot.as_ref().map(snapshot_to_wire),
        request_snapshot: m.request_snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: m.context.to_vec(),
        deprecated_priority: m.deprecated_priority,
        priority: m.priority,
    }
}

/// Converts a wire message (already decoded by prost) into a raft-rs message.
pub fn message_from_wire(w: RaftMessage) -> Result<Message, WireError> {
    let msg_type = RaftMessageType::try_from(w.msg_type)
        .map_err(|_| WireError::UnknownMessageType(w.msg_type))?;
    let entries = w.entries.into_iter().map(entry_from_wire).collect::<Result<Vec<_>, _>>()?;
    Ok(Message {
        msg_type: message_type_from_wire(msg_type),
        to: w.to,
        from: w.from,
        term: w.term,
        log_term: w.log_term,
        index: w.index,
        entries: entries.into(),
        commit: w.commit,
        commit_term: w.commit_term,
        snapshot: w.snapshot.map(snapshot_from_wire).into(),
        request_snapshot: w.request_snapshot,
        reject: w.reject,
        reject_hint: w.reject_hint,
        context: w.context.into(),
        deprecated_priority: w.deprecated_priority,
        priority: w.priority,
        ..Default::default()
    })
}

fn entry_to_wire(e: &Entry) -> RaftEntry {
    RaftEntry {
        entry_type: entry_type_to_wire(e.entry_type) as i32,
        term: e.term,
        index: e.index,
        data: e.data.to_vec(),
        context: e.context.to_vec(),
        sync_log: e.sync_log,
    }
}

fn entry_from_wire(w: RaftEntry) -> Result<Entry, WireError> {
    let entry_type = RaftEntryType::try_from(w.entry_type)
        .map_err(|_| WireError::UnknownEntryType(w.entry_type))?;
    Ok(Entry {
        entry_type: entry_type_from_wire(entry_type),
        term: w.term,
        index: w.index,
        data: w.data.into(),
        context: w.context.into(),
        sync_log: w.sync_log,
        ..Default::default()
    })
}

fn snapshot_to_wire(s: &Snapshot) -> RaftSnapshot {
    RaftSnapshot {
        data: s.data.to_vec(),
        metadata: s.metadata.as_ref().map(|md| RaftSnapshotMetadata {
            conf_state: md.conf_state.as_ref().map(conf_state_to_wire),
            index: md.index,
            term: md.term,
        }),
    }
}

fn snapshot_from_wire(w: RaftSnapshot) -> Snapshot {
    Snapshot {
        data: w.data.into(),
        metadata: w
            .metadata
            .map(|md| SnapshotMetadata {
                conf_state: md.conf_state.map(conf_state_from_wire).into(),
                index: md.index,
                term: md.term,
                ..Default::default()
            })
            .into(),
        ..Default::default()
    }
}

fn conf_state_to_wire(c: &ConfState) -> RaftConfState {
    RaftConfState {
        voters: c.voters.clone(),
        learners: c.learners.clone(),
        voters_outgoing: c.voters_outgoing.clone(),
        learners_next: c.learners_next.clone(),
        auto_leave: c.auto_leave,
    }
}

fn conf_state_from_wire(w: RaftConfState) -> ConfState {
    ConfState {
        voters: w.voters,
        learners: w.learners,
        voters_outgoing: w.voters_outgoing,
        learners_next: w.learners_next,
        auto_leave: w.auto_leave,
        ..Default::default()
    }
}

fn entry_type_to_wire(t: EntryType) -> RaftEntryType {
    match t {
        EntryType::EntryNormal => RaftEntryType::EntryNormal,
        EntryType::EntryConfChange => RaftEntryType::EntryConfChange,
        EntryType::EntryConfChangeV2 => RaftEntryType::EntryConfChangeV2,
    }
}

fn entry_type_from_wire(t: RaftEntryType) -> EntryType {
    match t {
        RaftEntryType::EntryNormal => EntryType::EntryNormal,
        RaftEntryType::EntryConfChange => EntryType::EntryConfChange,
        RaftEntryType::EntryConfChangeV2 => EntryType::EntryConfChangeV2,
    }
}

fn message_type_to_wire(t: MessageType) -> RaftMessageType {
    match t {
        MessageType::MsgHup => RaftMessageType::MsgHup,
        MessageType::MsgBeat => RaftMessageType::MsgBeat,
        MessageType::MsgPropose => RaftMessageType::MsgPropose,
        MessageType::MsgAppend => RaftMessageType::MsgAppend,
        MessageType::MsgAppendResponse => RaftMessageType::MsgAppendResponse,
        MessageType::MsgRequestVote => RaftMessageType::MsgRequestVote,
        MessageType::MsgRequestVoteResponse => RaftMessageType::MsgRequestVoteResponse,
        MessageType::MsgSnapshot => RaftMessageType::MsgSnapshot,
        MessageType::MsgHeartbeat => RaftMessageType::MsgHeartbeat,
        MessageType::MsgHeartbeatResponse => RaftMessageType::MsgHeartbeatResponse,
        MessageType::MsgUnreachable => RaftMessageType::MsgUnreachable,
        MessageType::MsgSnapStatus => RaftMessageType::MsgSnapStatus,
        MessageType::MsgCheckQuorum => RaftMessageType::MsgCheckQuorum,
        MessageType::MsgTransferLeader => RaftMessageType::MsgTransferLeader,
        MessageType::MsgTimeoutNow => RaftMessageType::MsgTimeoutNow,
        MessageType::MsgReadIndex => RaftMessageType::MsgReadIndex,
        MessageType::MsgReadIndexResp => RaftMessageType::MsgReadIndexResp,
        MessageType::MsgRequestPreVote => RaftMessageType::MsgRequestPreVote,
        MessageType::MsgRequestPreVoteResponse => RaftMessageType::MsgRequestPreVoteResponse,
    }
}

fn message_type_from_wire(t: RaftMessageType) -> MessageType {
    match t {
        RaftMessageType::MsgHup => MessageType::MsgHup,
        RaftMessageType::MsgBeat => MessageType::MsgBeat,
        RaftMessageType::MsgPropose => MessageType::MsgPropose,
        RaftMessageType::MsgAppend => MessageType::MsgAppend,
        RaftMessageType::MsgAppendResponse => MessageType::MsgAppendResponse,
        RaftMessageType::MsgRequestVote => MessageType::MsgRequestVote,
        RaftMessageType::MsgRequestVoteResponse => MessageType::MsgRequestVoteResponse,
        RaftMessageType::MsgSnapshot => MessageType::MsgSnapshot,
        RaftMessageType::MsgHeartbeat => MessageType::MsgHeartbeat,
        RaftMessageType::MsgHeartbeatResponse => MessageType::MsgHeartbeatResponse,
        RaftMessageType::MsgUnreachable => MessageType::MsgUnreachable,
        RaftMessageType::MsgSnapStatus => MessageType::MsgSnapStatus,
        RaftMessageType::MsgCheckQuorum => MessageType::MsgCheckQuorum,
        RaftMessageType::MsgTransferLeader => MessageType::MsgTransferLeader,
        RaftMessageType::MsgTimeoutNow => MessageType::MsgTimeoutNow,
        RaftMessageType::MsgReadIndex => MessageType::MsgReadIndex,
        RaftMessageType::MsgReadIndexResp => MessageType::MsgReadIndexResp,
        RaftMessageType::MsgRequestPreVote => MessageType::MsgRequestPreVote,
        RaftMessageType::MsgRequestPreVoteResponse => MessageType::MsgRequestPreVoteResponse,
    }
}

#[cfg(test)]
// The tests build raft-rs values the way raft-rs's own code does.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use etcd_proto::Message as _;

    fn entry(
        entry_type: EntryType,
        index: u64,
        data: &[u8],
        context: &[u8],
        sync_log: bool,
    ) -> Entry {
        let mut e = Entry::default();
        e.entry_type = entry_type;
        e.term = 7;
        e.index = index;
        e.data = data.to_vec().into();
        e.context = context.to_vec().into();
        e.sync_log = sync_log;
        e
    }

    fn full_snapshot() -> Snapshot {
        let mut conf = ConfState::default();
        conf.voters = vec![1, 2, 3];
        conf.learners = vec![4];
        conf.voters_outgoing = vec![1, 2, 5];
        conf.learners_next = vec![5];
        conf.auto_leave = true;
        let mut md = SnapshotMetadata::default();
        md.conf_state = Some(conf).into();
        md.index = 1000;
        md.term = 6;
        let mut s = Snapshot::default();
        s.data = vec![0xAB; 4096].into();
        s.metadata = Some(md).into();
        s
    }

    /// A message with every field set to a distinct non-default value.
    fn full_message(msg_type: MessageType) -> Message {
        let mut m = Message::default();
        m.msg_type = msg_type;
        m.to = 0x2;
        m.from = 0x1;
        m.term = 7;
        m.log_term = 6;
        m.index = 99;
        m.entries = vec![
            entry(EntryType::EntryNormal, 100, b"put foo bar", b"ctx-1", false),
            entry(EntryType::EntryConfChange, 101, b"\x08\x01\x10\x02", b"", true),
            entry(EntryType::EntryConfChangeV2, 102, b"", b"ctx-3", false),
            entry(EntryType::EntryNormal, 103, b"", b"", false),
        ]
        .into();
        m.commit = 98;
        m.commit_term = 5;
        m.snapshot = Some(full_snapshot()).into();
        m.request_snapshot = 42;
        m.reject = true;
        m.reject_hint = 97;
        m.context = b"campaign-transfer".to_vec().into();
        m.deprecated_priority = 3;
        m.priority = -9;
        m
    }

    /// Through the wire struct and through encoded bytes, as on the network.
    fn round_trip(m: &Message) -> Message {
        let wire = message_to_wire(m);
        let bytes = wire.encode_to_vec();
        let decoded =
            RaftMessage::decode(bytes.as_slice()).expect("prost decodes its own encoding");
        assert_eq!(decoded, wire);
        message_from_wire(decoded).expect("known types convert back")
    }

    #[test]
    fn message_with_every_field_set_round_trips_losslessly() {
        for t in [
            MessageType::MsgAppend,
            MessageType::MsgSnapshot,
            MessageType::MsgRequestVote,
            MessageType::MsgHeartbeatResponse,
            MessageType::MsgReadIndex,
        ] {
            let m = full_message(t);
            let back = round_trip(&m);
            assert_eq!(back, m, "{t:?}");
            // Spot-check fields whose loss PartialEq might not make obvious.
            assert_eq!(back.entries.len(), 4);
            assert_eq!(back.entries[1].entry_type, EntryType::EntryConfChange);
            assert!(back.entries[1].sync_log);
            assert_eq!(&back.entries[0].context[..], b"ctx-1");
            let md = back.snapshot.as_ref().unwrap().metadata.as_ref().unwrap();
            assert_eq!((md.index, md.term), (1000, 6));
            let cs = md.conf_state.as_ref().unwrap();
            assert_eq!(cs.voters_outgoing, vec![1, 2, 5]);
            assert_eq!(cs.learners_next, vec![5]);
            assert!(cs.auto_leave);
            assert_eq!(back.priority, -9);
        }
    }

    #[test]
    fn every_message_type_keeps_its_number_and_round_trips() {
        for n in 0..=18 {
            let wire_type = RaftMessageType::try_from(n).expect("wire enum covers 0..=18");
            let raft_type = message_type_from_wire(wire_type);
            assert_eq!(raft_type as i32, n);
            assert_eq!(message_type_to_wire(raft_type) as i32, n);
            let mut m = Message::default();
            m.msg_type = raft_type;
            m.to = 3;
            m.from = 4;
            assert_eq!(round_trip(&m), m);
        }
        for n in 0..=2 {
            let wire_type = RaftEntryType::try_from(n).expect("wire enum covers 0..=2");
            let raft_type = entry_type_from_wire(wire_type);
            assert_eq!(raft_type as i32, n);
            assert_eq!(entry_type_to_wire(raft_type) as i32, n);
        }
    }

    #[test]
    fn default_message_round_trips_without_inventing_a_snapshot() {
        let m = Message::default();
        let back = round_trip(&m);
        assert_eq!(back, m);
        assert!(back.snapshot.is_none());
    }

    #[test]
    fn snapshot_presence_is_kept_at_every_level() {
        let mut m = Message::default();
        m.msg_type = MessageType::MsgSnapshot;
        // A snapshot without metadata.
        m.snapshot = Some(Snapshot::default()).into();
        let back = round_trip(&m);
        assert_eq!(back, m);
        assert!(back.snapshot.is_some() && back.snapshot.as_ref().unwrap().metadata.is_none());
        // Metadata without a conf state.
        let mut s = Snapshot::default();
        s.metadata = Some(SnapshotMetadata::default()).into();
        m.snapshot = Some(s).into();
        let back = round_trip(&m);
        assert_eq!(back, m);
        let md = back.snapshot.as_ref().unwrap().metadata.as_ref().unwrap();
        assert!(md.conf_state.is_none());
    }

    #[test]
    fn unknown_types_from_the_network_are_errors() {
        let mut wire = message_to_wire(&full_message(MessageType::MsgAppend));
        wire.msg_type = 99;
        assert_eq!(message_from_wire(wire), Err(WireError::UnknownMessageType(99)));
        let mut wire = message_to_wire(&full_message(MessageType::MsgAppend));
        wire.entries[2].entry_type = 7;
        assert_eq!(message_from_wire(wire), Err(WireError::UnknownEntryType(7)));
    }
}
