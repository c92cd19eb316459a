//! etcd 3.7's `RangeStream`: chunks of disjoint kvs in key order, the header,
//! count and more on the last one; merged as protobuf merges them, the chunks
//! are exactly `Range`'s answer to the same request (which other tests compare
//! with real etcd), for limits, keys_only, count_only, old revisions; custom
//! sorts and revision filters are refused as etcd 3.7 refuses them.

mod common;

use common::Server;
use etcd_proto::etcdserverpb::kv_client::KvClient;
use etcd_proto::etcdserverpb::range_request::SortOrder;
use etcd_proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest, RangeResponse};
use prost::Message;
use tonic::transport::Channel;

async fn client(server: &Server) -> KvClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", server.endpoint()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    KvClient::new(channel).max_decoding_message_size(64 << 20)
}

/// The stream's chunks, and their protobuf merge.
async fn streamed(
    kv: &mut KvClient<Channel>,
    req: &RangeRequest,
) -> Result<(Vec<RangeResponse>, RangeResponse), tonic::Status> {
    let mut stream = kv.range_stream(req.clone()).await?.into_inner();
    let mut chunks = Vec::new();
    let mut merged = RangeResponse::default();
    while let Some(message) = stream.message().await? {
        let chunk = message.range_response.expect("a range response");
        merged.merge(chunk.encode_to_vec().as_slice()).expect("merge");
        chunks.push(chunk);
    }
    Ok((chunks, merged))
}

fn prefix(p: &str) -> RangeRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    RangeRequest { key: p.as_bytes().to_vec(), range_end: end, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_stream_chunks_merge_into_ranges_answer() {
    let server = tokio::task::block_in_place(Server::start);
    let mut kv = client(&server).await;
    for i in 0..3000u32 {
        let value = vec![b'v'; 100 + (i % 7) as usize * 300];
        kv.put(PutRequest { key: format!("k/{i:05}").into_bytes(), value, ..Default::default() })
            .await
            .expect("put");
    }
    kv.put(PutRequest { key: b"z".to_vec(), value: b"outside".to_vec(), ..Default::default() })
        .await
        .expect("put");
    let old_revision = kv.range(prefix("k/")).await.unwrap().into_inner().header.unwrap().revision;
    for i in 0..500u32 {
        let key = format!("k/{:05}", i * 2).into_bytes();
        kv.put(PutRequest { key, value: b"rewritten".to_vec(), ..Default::default() })
            .await
            .expect("put");
    }

    let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    let requests = vec![
        prefix("k/"),
        RangeRequest { limit: 10, ..prefix("k/") },
        RangeRequest { limit: 2500, ..prefix("k/") },
        RangeRequest { limit: 3000, ..prefix("k/") },
        RangeRequest { keys_only: true, ..prefix("k/") },
        RangeRequest { count_only: true, ..prefix("k/") },
        RangeRequest { revision: old_revision, ..prefix("k/") },
        RangeRequest { serializable: true, ..prefix("k/0") },
        RangeRequest { key: b"k/00042".to_vec(), ..Default::default() },
        RangeRequest { key: b"nothing".to_vec(), ..Default::default() },
        RangeRequest { sort_order: SortOrder::Ascend as i32, ..prefix("k/") },
        all,
    ];
    for req in requests {
        let unary = kv.range(req.clone()).await.expect("range").into_inner();
        let (chunks, merged) = streamed(&mut kv, &req).await.expect("stream");
        assert_eq!(merged, unary, "{req:?}");
        let (last, rest) = chunks.split_last().expect("at least one chunk");
        assert!(last.header.is_some(), "the header comes last");
        for chunk in rest {
            assert!(chunk.header.is_none() && chunk.count == 0 && !chunk.more, "{req:?}");
            assert!(!chunk.kvs.is_empty(), "{req:?}: an empty intermediate chunk");
        }
        let keys: Vec<&[u8]> = chunks.iter().flat_map(|c| &c.kvs).map(|kv| &kv.key[..]).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{req:?}: chunks overlap or disorder");
        if unary.kvs.len() > 100 {
            assert!(chunks.len() > 2, "{req:?}: {} keys in {} chunks", keys.len(), chunks.len());
        }
    }

    // Custom sorts and revision filters need every key at once: refused with
    // etcd 3.7's answers; Range serves them.
    let sorted = RangeRequest { sort_order: SortOrder::Descend as i32, ..prefix("k/") };
    let filtered = RangeRequest { min_mod_revision: old_revision + 1, ..prefix("k/") };
    for (req, message) in [
        (sorted, "RangeStream does not support custom sort orders"),
        (filtered, "RangeStream does not support revision filters"),
    ] {
        let refused = streamed(&mut kv, &req).await.expect_err(message);
        assert_eq!((refused.code(), refused.message()), (tonic::Code::Unimplemented, message));
    }

    // A compacted revision fails as Range fails.
    let current = kv.range(prefix("k/")).await.unwrap().into_inner().header.unwrap().revision;
    kv.compact(CompactionRequest { revision: current, physical: true }).await.expect("compact");
    let compacted = RangeRequest { revision: old_revision, ..prefix("k/") };
    let unary = kv.range(compacted.clone()).await.expect_err("compacted");
    let stream = streamed(&mut kv, &compacted).await.expect_err("compacted");
    assert_eq!((stream.code(), stream.message()), (unary.code(), unary.message()));
}

/// Through a follower of a 3-member cluster: the stream waits for the read
/// index like Range, and answers what the leader's Range answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_stream_through_a_follower_answers_as_the_leaders_range() {
    let cluster = tokio::task::block_in_place(|| common::Cluster::start(3, &[]));
    let leader = tokio::task::block_in_place(|| cluster.leader(std::time::Duration::from_secs(10)))
        .expect("a leader");
    let mut on_leader = client(&cluster.members[leader]).await;
    let mut on_follower = client(&cluster.members[(leader + 1) % 3]).await;
    for i in 0..500u32 {
        let key = format!("f/{i:04}").into_bytes();
        on_leader
            .put(PutRequest { key, value: vec![b'x'; 64], ..Default::default() })
            .await
            .expect("put");
    }
    for req in [prefix("f/"), RangeRequest { limit: 123, ..prefix("f/") }] {
        // The last put is read at once: a linearizable read waits for it.
        let (_, merged) = streamed(&mut on_follower, &req).await.expect("stream");
        let mut unary = on_leader.range(req.clone()).await.expect("range").into_inner();
        let mut merged = merged;
        // Headers name the member that answered.
        merged.header = None;
        unary.header = None;
        assert_eq!(merged, unary, "{req:?}");
    }
}
