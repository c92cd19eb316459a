//! `Watch.Watch` over gRPC with a codec of its own: a watcher's events are
//! written from the hub's shared copies ([`Selected`]), each event's bytes
//! encoded once for every watcher that delivers it without `prev_kv`, instead
//! of every watcher copying the key and value into a `WatchResponse` and
//! encoding it again. Everything else is tonic's: the framing, the request
//! decoding and its size limit, the status trailers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http;
use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
use etcd_server::watch::Selected;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

use crate::BoxStream;

/// The path of the Watch RPC.
pub(crate) const PATH: &str = "/etcdserverpb.Watch/Watch";

/// `WatchResponse.events`' field number.
const EVENTS_FIELD: u32 = 11;

/// What a watch stream sends: a `WatchResponse` either way on the wire.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A response as it is (created, canceled, progress, or events shaped for
    /// one watcher).
    Response(WatchResponse),
    /// One watcher's events, shared with other watchers.
    Events { header: ResponseHeader, watch_id: i64, events: Vec<Selected> },
}

impl Outbound {
    /// The response as a message of its own (the JSON gateway's; the gRPC
    /// route encodes shared events without materializing them).
    pub(crate) fn into_response(self) -> WatchResponse {
        match self {
            Outbound::Response(response) => response,
            Outbound::Events { header, watch_id, events } => WatchResponse {
                header: Some(header),
                watch_id,
                events: events.into_iter().map(Selected::into_event).collect(),
                ..Default::default()
            },
        }
    }

    /// Writes the `WatchResponse` encoding. A shared response is the fields
    /// prost would write for it, in its order: header, watch_id, events.
    fn encode(&self, buf: &mut impl prost::bytes::BufMut) {
        match self {
            Outbound::Response(response) => response.encode_raw(buf),
            Outbound::Events { header, watch_id, events } => {
                prost::encoding::message::encode(1, header, buf);
                if *watch_id != 0 {
                    prost::encoding::int64::encode(2, watch_id, buf);
                }
                for event in events {
                    encode_key(EVENTS_FIELD, WireType::LengthDelimited, buf);
                    encode_varint(event.message_len() as u64, buf);
                    event.encode_message(buf);
                }
            }
        }
    }
}

/// The Watch RPC's codec: requests decoded as the generated service does,
/// responses written as [`Outbound`].
#[derive(Default)]
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = Outbound;
    type Decode = WatchRequest;
    type Encoder = OutboundEncoder;
    type Decoder = ProstDecoder<WatchRequest>;

    fn encoder(&mut self) -> OutboundEncoder {
        OutboundEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<WatchRequest> {
        ProstDecoder::default()
    }
}

struct OutboundEncoder;

impl Encoder for OutboundEncoder {
    type Item = Outbound;
    type Error = Status;

    fn encode(&mut self, item: Outbound, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

/// The Watch RPC's one method.
struct WatchMethod(Arc<EtcdServer>);

impl tonic::server::StreamingService<WatchRequest> for WatchMethod {
    type Response = Outbound;
    type ResponseStream = BoxStream<Outbound>;
    type Future = std::future::Ready<Result<tonic::Response<BoxStream<Outbound>>, Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<WatchRequest>>) -> Self::Future {
        let caller = crate::auth::caller(&request);
        let outbound = crate::watch::open(self.0.clone(), caller, request.into_inner());
        std::future::ready(Ok(tonic::Response::new(Box::pin(outbound.map(Ok)))))
    }
}

/// Serves one Watch stream; requests larger than `max_message_bytes` are
/// refused as etcd refuses them.
pub(crate) async fn serve(
    State((server, max_message_bytes)): State<(Arc<EtcdServer>, usize)>,
    request: http::Request<Body>,
) -> http::Response<Body> {
    let mut grpc = tonic::server::Grpc::new(WatchCodec)
        .apply_max_message_size_config(Some(max_message_bytes), Some(usize::MAX));
    grpc.streaming(WatchMethod(server), request).await.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::mvccpb::event::EventType;
    use etcd_proto::mvccpb::{Event, KeyValue};
    use etcd_server::watch::Published;

    #[test]
    fn shared_events_encode_as_the_response_prost_would_write() {
        let kv = |key: &str, revision| KeyValue {
            key: key.into(),
            value: vec![b'v'; 300],
            create_revision: 2,
            mod_revision: revision,
            version: 1,
            lease: 7,
        };
        let published = Arc::new(Published::new(vec![
            Event {
                r#type: EventType::Put as i32,
                kv: Some(kv("a", 9)),
                prev_kv: Some(kv("a", 8)),
            },
            Event { r#type: EventType::Delete as i32, kv: Some(kv("b", 9)), prev_kv: None },
        ]));
        let header = ResponseHeader { cluster_id: 1, member_id: 2, revision: 9, raft_term: 3 };
        for watch_id in [0, 5] {
            let events = vec![
                Selected::Shared { events: published.clone(), index: 0 },
                Selected::Shaped(published.events()[1].clone()),
                Selected::Shared { events: published.clone(), index: 1 },
            ];
            let outbound = Outbound::Events { header, watch_id, events };
            let mut bytes = Vec::new();
            outbound.encode(&mut bytes);
            let response = outbound.into_response();
            assert!(response.events[0].prev_kv.is_none(), "shared events leave prev_kv out");
            assert_eq!(bytes, response.encode_to_vec());
        }
    }
}
