//! A fixed little-endian encoding of `ConfState`, so the WAL's snapshot markers do not
//! depend on the protobuf-2 codec of raft-rs.

use raft::eraftpb::ConfState;

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

fn take_ids(input: &mut &[u8]) -> Option<Vec<u64>> {
    let (count, rest) = input.split_first_chunk::<4>()?;
    let count = u32::from_le_bytes(*count) as usize;
    if rest.len() < count.checked_mul(8)? {
        return None;
    }
    let (ids, rest) = rest.split_at(count * 8);
    *input = rest;
    Some(
        ids.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect(),
    )
}

/// Encodes voters, learners, outgoing voters, outgoing learners and auto_leave.
pub fn encode_conf_state(cs: &ConfState) -> Vec<u8> {
    let mut out = Vec::new();
    put_ids(&mut out, &cs.voters);
    put_ids(&mut out, &cs.learners);
    put_ids(&mut out, &cs.voters_outgoing);
    put_ids(&mut out, &cs.learners_next);
    out.push(u8::from(cs.auto_leave));
    out
}

/// Decodes what [`encode_conf_state`] wrote; `None` if the bytes are malformed.
pub fn decode_conf_state(mut input: &[u8]) -> Option<ConfState> {
    let mut cs = ConfState {
        voters: take_ids(&mut input)?,
        learners: take_ids(&mut input)?,
        voters_outgoing: take_ids(&mut input)?,
        learners_next: take_ids(&mut input)?,
        ..Default::default()
    };
    match input {
        [flag] => cs.auto_leave = *flag != 0,
        _ => return None,
    }
    Some(cs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_state_round_trips() {
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![9],
            auto_leave: true,
            ..Default::default()
        };
        assert_eq!(decode_conf_state(&encode_conf_state(&cs)), Some(cs));
    }

    #[test]
    fn truncated_conf_state_is_rejected() {
        let bytes = encode_conf_state(&ConfState { voters: vec![1, 2], ..Default::default() });
        for len in 0..bytes.len() {
            assert_eq!(decode_conf_state(&bytes[..len]), None, "len {len}");
        }
    }
}
