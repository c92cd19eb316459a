//! `KV.Range` over gRPC without tonic's codec. The store keeps every revision
//! as an encoded `KeyValue`, so a range's answer is mostly those bytes one
//! after the other ([`etcd_mvcc::KvStore::range_encoded`]); this route sends
//! them as they are, behind the encoded header, in one gRPC message. Going
//! through tonic's codec would decode every value into a `KeyValue`, then
//! encode the whole answer into a second buffer: a range over millions of
//! keys held three times. Here it is held once, and never decoded.
//!
//! Everything else is the generated service's: the same checks in the same
//! order (learner, request validation, barrier, permission), the same status
//! codes and messages, the gRPC framing of a unary call.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{self, HeaderMap, HeaderValue};
use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::RangeRequest;
use http_body::Frame;
use prost::Message;
use tonic::Status;

use crate::auth::caller;
use crate::status::to_status;

/// The path tonic's router would send to the generated KV service.
pub(crate) const PATH: &str = "/etcdserverpb.KV/Range";

/// gRPC's message prefix: a compression flag and a 32-bit length.
const PREFIX_BYTES: usize = 5;
/// Answers up to this size are sent as one frame with their header.
const SMALL_ANSWER_BYTES: usize = 64 * 1024;

/// Serves one `KV.Range` call; requests larger than `max_message_bytes` are
/// refused as etcd refuses them.
pub(crate) async fn serve(
    State((server, max_message_bytes)): State<(Arc<EtcdServer>, usize)>,
    request: http::Request<Body>,
) -> http::Response<Body> {
    match answer(server, max_message_bytes, request).await {
        Ok(response) => response,
        Err(status) => status.into_http(),
    }
}

async fn answer(
    server: Arc<EtcdServer>,
    max_message_bytes: usize,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = request.into_parts();
    if let Some(encoding) = parts.headers.get("grpc-encoding") {
        if encoding != "identity" {
            let name = encoding.to_str().unwrap_or("?");
            return Err(Status::unimplemented(format!(
                "Content is compressed with `{name}` which isn't supported"
            )));
        }
    }
    let request = read_request(body, max_message_bytes).await?;
    let caller = caller(&tonic::Request::from_http(http::Request::from_parts(parts, ())));
    crate::kv::check_range(&server, &request)?;
    let (header, kvs) =
        server.range_encoded_as(&request, &caller).await.map_err(|e| to_status(&e))?;
    let mut head = Vec::with_capacity(PREFIX_BYTES + 64 + kvs.len().min(SMALL_ANSWER_BYTES));
    head.resize(PREFIX_BYTES, 0);
    prost::encoding::message::encode(1, &header, &mut head);
    let length = head.len() - PREFIX_BYTES + kvs.len();
    let length = u32::try_from(length).map_err(|_| {
        Status::resource_exhausted(format!(
            "grpc: trying to send message larger than max ({length} vs. {})",
            u32::MAX
        ))
    })?;
    head[1..PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    // A small answer goes out as one frame (copying it costs less than a
    // second HTTP/2 data frame); a big one is not copied.
    let frames = if kvs.len() <= SMALL_ANSWER_BYTES {
        head.extend_from_slice(&kvs);
        VecDeque::from([Frame::data(Bytes::from(head)), Frame::trailers(trailers)])
    } else {
        VecDeque::from([
            Frame::data(Bytes::from(head)),
            Frame::data(Bytes::from(kvs)),
            Frame::trailers(trailers),
        ])
    };
    let mut response = http::Response::new(Body::new(Frames(frames)));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    Ok(response)
}

/// The one `RangeRequest` of a unary call's body, read up to the end of its
/// message: the prefix first, so a message declared larger than the limit is
/// refused before it is read. A malformed one is refused as tonic refuses it.
async fn read_request(body: Body, max_message_bytes: usize) -> Result<RangeRequest, Status> {
    use tokio_stream::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut length = None;
    loop {
        if length.is_none() && bytes.len() >= PREFIX_BYTES {
            length = Some(declared_length(&bytes[..PREFIX_BYTES], max_message_bytes)?);
        }
        if let Some(message) = length.and_then(|len| bytes.get(PREFIX_BYTES..PREFIX_BYTES + len)) {
            return RangeRequest::decode(message).map_err(|e| Status::internal(e.to_string()));
        }
        match chunks.next().await {
            Some(Ok(chunk)) => bytes.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(Status::internal(format!("failed to read the request: {e}")))
            }
            None => return Err(Status::internal("Missing request message.")),
        }
    }
}

/// The length a gRPC message prefix declares, once its compression flag and
/// the length pass.
fn declared_length(prefix: &[u8], max_message_bytes: usize) -> Result<usize, Status> {
    match prefix[0] {
        0 => {}
        1 => {
            return Err(Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ))
        }
        flag => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
            )))
        }
    }
    let length = u32::from_be_bytes(prefix[1..PREFIX_BYTES].try_into().expect("four bytes"));
    let length = length as usize;
    if length > max_message_bytes {
        // etcd's (grpc-go's) refusal of a request larger than its receive limit.
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({length} vs. {max_message_bytes})"
        )));
    }
    Ok(length)
}

/// A response body of frames known up front.
struct Frames(VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}
