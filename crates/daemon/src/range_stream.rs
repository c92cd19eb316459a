//! etcd 3.7's `RangeStream`: a range answered as a stream of chunks, so a client
//! can read millions of keys while the server holds one chunk at a time. The
//! chunks carry disjoint `kvs` in key order; the last one also carries the
//! header, `count` and `more`; merging them (protobuf merge: lists concatenate)
//! gives what `Range` answers for the same request.
//!
//! The read is pinned to one revision (the request's, or the current one when
//! it starts); each chunk is its own short read at that revision, so a
//! compaction past it fails the stream with `mvcc: required revision has been
//! compacted`, as etcd. Chunks start at 10 keys and double or halve towards a
//! target size below the request size limit. As in etcd 3.7, sort orders other
//! than key order and mod/create revision filters are refused (the caller answers
//! Unimplemented with [`unstreamable`]'s message): they need every key at once.

use etcd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_proto::etcdserverpb::{RangeRequest, RangeResponse};
use etcd_server::ServerError;
use prost::Message;

use crate::auth::Caller;
use crate::server::{read_error, EtcdServer};

/// Keys in the first chunk.
const FIRST_CHUNK_KEYS: usize = 10;
/// Keys in a chunk at most, whatever their size.
const MAX_CHUNK_KEYS: usize = 10_000;

/// Why etcd 3.7 refuses to stream `request` (None: it streams). Order NONE is
/// key order whatever the sort target, and ASCEND by KEY is the same order.
pub fn unstreamable(request: &RangeRequest) -> Option<&'static str> {
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    if !(order == SortOrder::None || (target == SortTarget::Key && order == SortOrder::Ascend)) {
        return Some("RangeStream does not support custom sort orders");
    }
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    filtered.then_some("RangeStream does not support revision filters")
}

/// A range being streamed: call [`RangeStream::next_chunk`] until it yields
/// the last chunk.
pub struct RangeStream {
    request: RangeRequest,
    /// The pinned revision, and the store's revision when the stream began
    /// (the header's, as `Range` reports it).
    at: i64,
    current: i64,
    /// Where the next chunk starts; none once the range is walked.
    cursor: Option<Vec<u8>>,
    chunk_keys: usize,
    /// Entries sent so far.
    sent: i64,
    /// Whether an entry past the limit was found.
    more: bool,
    done: bool,
    auth: etcd_auth::AuthInfo,
}

impl EtcdServer {
    /// Starts streaming `request` for `caller`: the same checks as `Range`
    /// (linearizable unless serializable, read permission on the range), then
    /// the revision is pinned.
    pub async fn range_stream(
        &self,
        request: RangeRequest,
        caller: &Caller,
    ) -> Result<RangeStream, ServerError> {
        assert!(
            unstreamable(&request).is_none(),
            "invariant: the caller refuses what cannot stream"
        );
        if !request.serializable {
            self.read_barrier().await?;
        }
        let auth = self.credentials(caller).await?;
        self.check_read(&auth, &request.key, &request.range_end)?;
        let (at, current) = self.kv().read_revision(request.revision).map_err(read_error)?;
        let cursor = (!request.count_only).then(|| request.key.clone());
        Ok(RangeStream {
            request,
            at,
            current,
            cursor,
            chunk_keys: FIRST_CHUNK_KEYS,
            sent: 0,
            more: false,
            done: false,
            auth,
        })
    }

    /// The next chunk of `stream`; `None` once the last one was returned.
    pub fn next_chunk(
        &self,
        stream: &mut RangeStream,
    ) -> Option<Result<RangeResponse, ServerError>> {
        if stream.done {
            return None;
        }
        match self.chunk(stream) {
            Ok(chunk) => Some(Ok(chunk)),
            Err(err) => {
                stream.done = true;
                Some(Err(err))
            }
        }
    }

    fn chunk(&self, stream: &mut RangeStream) -> Result<RangeResponse, ServerError> {
        let req = &stream.request;
        let limit = req.limit.max(0);
        let mut kvs = Vec::new();
        // Read chunks until one yields something to send or the range ends.
        while let Some(from) = stream.cursor.take() {
            let chunk = self
                .kv()
                .range_chunk(&from, &req.range_end, stream.at, stream.chunk_keys, req.keys_only)
                .map_err(read_error)?;
            stream.cursor = chunk.next;
            for kv in chunk.kvs {
                if limit > 0 && stream.sent == limit {
                    // One entry past the limit: that is all `more` needs.
                    stream.more = true;
                    stream.cursor = None;
                    break;
                }
                stream.sent += 1;
                kvs.push(kv);
            }
            let size: usize = kvs.iter().map(Message::encoded_len).sum();
            stream.chunk_keys = adapt(stream.chunk_keys, size, self.config().max_request_bytes);
            if !kvs.is_empty() {
                break;
            }
        }
        assert!(limit == 0 || stream.sent <= limit, "invariant: no more than the limit is sent");
        if stream.cursor.is_some() {
            return Ok(RangeResponse { kvs, ..Default::default() });
        }
        // The last chunk: the header, the count of the whole range, `more`.
        stream.done = true;
        self.check_still_current(&stream.auth)?;
        let count = self.kv().count_at(&req.key, &req.range_end, stream.at).map_err(read_error)?;
        // `more`: a key was found past the limit.
        let more = stream.more;
        Ok(RangeResponse { header: Some(self.header(stream.current)), kvs, more, count })
    }
}

/// The next chunk's key count: doubled while chunks stay under a quarter of the
/// request size limit, halved above half of it.
fn adapt(keys: usize, bytes: usize, max_request_bytes: usize) -> usize {
    let target = (max_request_bytes / 2).max(64 * 1024);
    if bytes < target / 2 {
        (keys * 2).min(MAX_CHUNK_KEYS)
    } else if bytes > target {
        (keys / 2).max(1)
    } else {
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_on_small_values_and_shrink_on_large_ones() {
        assert_eq!(adapt(10, 100, 1_572_864), 20);
        assert_eq!(adapt(MAX_CHUNK_KEYS, 100, 1_572_864), MAX_CHUNK_KEYS);
        assert_eq!(adapt(100, 2_000_000, 1_572_864), 50);
        assert_eq!(adapt(1, 2_000_000, 1_572_864), 1);
    }

    #[test]
    fn key_order_unfiltered_ranges_stream_as_in_etcd() {
        let request = |order: SortOrder, target: SortTarget| RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            ..Default::default()
        };
        assert_eq!(unstreamable(&request(SortOrder::None, SortTarget::Key)), None);
        assert_eq!(unstreamable(&request(SortOrder::None, SortTarget::Mod)), None);
        assert_eq!(unstreamable(&request(SortOrder::Ascend, SortTarget::Key)), None);
        let custom = Some("RangeStream does not support custom sort orders");
        assert_eq!(unstreamable(&request(SortOrder::Descend, SortTarget::Key)), custom);
        assert_eq!(unstreamable(&request(SortOrder::Ascend, SortTarget::Mod)), custom);
        let filtered = RangeRequest { min_mod_revision: 1, ..Default::default() };
        assert_eq!(unstreamable(&filtered), Some("RangeStream does not support revision filters"));
    }
}
