//! The Watch service: one bidirectional stream carries many watchers.
//!
//! A task reads the client's requests, checks each creation (permission, range)
//! and hands them on in order to the stream's [`Outlet`], which owns the
//! watchers and makes every response when the client's connection asks for
//! the next one (`watch_outlet.rs`).

use std::sync::Arc;

use etcd_daemon::{Caller, EtcdServer};
use etcd_proto::etcdserverpb::watch_request::RequestUnion;
use etcd_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use etcd_server::watch::KeyRange;
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::watch_outlet::{self, Control, Outlet, Requests};

/// The watch ID of responses that belong to no watcher (clientv3's InvalidWatchID).
pub(crate) const INVALID_WATCH_ID: i64 = -1;

/// A creation refused with etcd's `reason`: etcd answers it as a watcher
/// created and canceled at once, with no watch ID.
pub(crate) fn refusal(header: ResponseHeader, reason: &str) -> WatchResponse {
    WatchResponse {
        header: Some(header),
        watch_id: INVALID_WATCH_ID,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}

/// Serves one watch stream whose requests arrive on `inbound`; its responses
/// come out of the returned outlet. Shared by the gRPC and JSON gateway routes.
pub(crate) fn open(
    server: Arc<EtcdServer>,
    caller: Caller,
    inbound: impl Stream<Item = Result<WatchRequest, Status>> + Unpin + Send + 'static,
) -> Outlet {
    let (requests, outlet) = watch_outlet::outlet(server.clone());
    tokio::spawn(read_requests(server, caller, inbound, requests));
    outlet
}

/// Turns the client's requests into the outlet's controls, in order, until
/// the client's last request (its watchers go on until it leaves, as etcd's
/// do) or until the outlet is gone.
async fn read_requests(
    server: Arc<EtcdServer>,
    caller: Caller,
    mut inbound: impl Stream<Item = Result<WatchRequest, Status>> + Unpin + Send,
    requests: Requests,
) {
    while let Some(request) = inbound.next().await {
        let control = match request {
            Err(_) => Control::End,
            Ok(request) => match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => {
                    creation(&server, &caller, create).await
                }
                Some(RequestUnion::CancelRequest(cancel)) => Control::Cancel(cancel.watch_id),
                Some(RequestUnion::ProgressRequest(_)) => {
                    Control::Progress(server.watch_hub().revision())
                }
                None => continue,
            },
        };
        let end = matches!(control, Control::End);
        if requests.send(control).await.is_err() || end {
            return;
        }
    }
}

/// A creation as the outlet takes it: the watcher, or its refusal.
async fn creation(server: &EtcdServer, caller: &Caller, mut create: WatchCreateRequest) -> Control {
    let hub_revision = server.watch_hub().revision();
    if create.key.is_empty() {
        create.key = vec![0];
    }
    let refused = |reason: &str| Control::Respond(refusal(server.header(hub_revision), reason));
    if let Err(reason) = permitted(server, caller, &create).await {
        return refused(&reason);
    }
    let range = match create.range_end.as_slice() {
        [] => KeyRange::Single(std::mem::take(&mut create.key)),
        [0] => KeyRange::From(std::mem::take(&mut create.key)),
        end => KeyRange::Between(std::mem::take(&mut create.key), end.to_vec()),
    };
    if let KeyRange::Between(start, end) = &range {
        if start >= end {
            return refused("mvcc: watcher range is empty");
        }
    }
    Control::Create { create, range, hub_revision }
}

/// etcd's `isWatchPermitted`: read permission on the watched range with
/// the stream's credentials. A from-key watch (`range_end` "\0") is
/// checked as its key alone, as etcd does (it turns the end into an empty
/// one first). The refusal is the text of etcd's gRPC error, as etcd puts
/// it in `cancel_reason`.
async fn permitted(
    server: &EtcdServer,
    caller: &Caller,
    create: &WatchCreateRequest,
) -> Result<(), String> {
    let range_end: &[u8] = if create.range_end == [0] { &[] } else { &create.range_end };
    let checked = match server.credentials(caller).await {
        Ok(info) => server.check_read(&info, &create.key, range_end),
        Err(err) => Err(err),
    };
    checked.map_err(|err| {
        let status = crate::status::to_status(&err);
        // Anything but these three is reported as a denial, as etcd does.
        let status = match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::Unauthenticated => status,
            _ => crate::status::to_status(&etcd_server::ServerError::Auth(
                etcd_auth::AuthError::PermissionDenied,
            )),
        };
        format!("rpc error: code = {:?} desc = {}", status.code(), status.message())
    })
}

/// Splits a response whose encoding exceeds `limit` bytes into several, all but the
/// last marked `fragment` (for watchers that asked for fragmentation, and never
/// below one event per response), as etcd does.
pub(crate) fn fragments(response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < limit {
        return vec![response];
    }
    let mut parts = Vec::new();
    let template = WatchResponse { events: Vec::new(), fragment: true, ..response.clone() };
    let mut current = template.clone();
    for event in response.events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= limit {
            let overflow = current.events.pop().expect("just pushed");
            parts.push(std::mem::replace(&mut current, template.clone()));
            current.events.push(overflow);
        }
    }
    current.fragment = false;
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::mvccpb::event::EventType;
    use etcd_proto::mvccpb::{Event, KeyValue};

    fn event(key: &str, value_bytes: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.into(),
                value: vec![b'v'; value_bytes],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn large_responses_fragment_only_when_asked_and_keep_every_event_in_order() {
        let events: Vec<Event> = (0..10).map(|i| event(&format!("k{i}"), 100)).collect();
        let response = WatchResponse { watch_id: 3, events: events.clone(), ..Default::default() };
        assert_eq!(fragments(response.clone(), 100_000).len(), 1);
        let parts = fragments(response, 300);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().expect("last").fragment);
        let rejoined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(rejoined, events);
    }
}
