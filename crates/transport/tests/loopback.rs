//! Two (or more) transports in one process on loopback, each served with
//! `etcd_transport::serve`, exchanging real Raft messages over gRPC.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_proto::etcdrs::raft_transport_client::RaftTransportClient;
use etcd_proto::etcdrs::{RaftBatch, RaftMessage, RaftMessageType};
use etcd_transport::{serve, PeerTransport};
use raft::eraftpb::{Message, MessageType, Snapshot};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const CLUSTER: u64 = 0xc1;
const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(500);

/// One member: its transport, its inbound channel and its running server.
struct Member {
    transport: PeerTransport,
    inbound: mpsc::Receiver<Message>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Member {
    async fn start(id: u64, cluster_id: u64) -> Member {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Member::start_on(id, cluster_id, listener)
    }

    fn start_on(id: u64, cluster_id: u64, listener: TcpListener) -> Member {
        let (tx, inbound) = mpsc::channel(1024);
        let transport = PeerTransport::new(id, cluster_id, tx);
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = transport.clone();
        let server = tokio::spawn(async move {
            serve(
                etcd_tls::Listener::Tcp(listener),
                served,
                tonic::service::Routes::default(),
                None,
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("peer server runs");
        });
        Member { transport, inbound, addr, stop: Some(stop), server }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap();
    }

    /// Receives the next message or panics after `WAIT`.
    async fn recv(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.inbound.recv())
            .await
            .expect("a message arrives in time")
            .expect("inbound channel open")
    }

    /// Asserts nothing arrives for `QUIET`.
    async fn assert_quiet(&mut self) {
        if let Ok(Some(m)) = tokio::time::timeout(QUIET, self.inbound.recv()).await {
            panic!("expected no delivery, got {:?} index {} from {}", m.msg_type, m.index, m.from);
        }
    }
}

fn append(from: u64, to: u64, index: u64) -> Message {
    Message { msg_type: MessageType::MsgAppend, from, to, term: 3, index, ..Default::default() }
}

fn appends(from: u64, to: u64, indexes: std::ops::Range<u64>) -> Vec<Message> {
    indexes.map(|i| append(from, to, i)).collect()
}

/// Starts two members of one cluster that know each other.
async fn pair() -> (Member, Member) {
    let a = Member::start(1, CLUSTER).await;
    let b = Member::start(2, CLUSTER).await;
    a.transport.set_peer(2, vec![b.url()]);
    b.transport.set_peer(1, vec![a.url()]);
    (a, b)
}

/// Sends probe messages from `from` to `to` until one arrives; returns the
/// index of the first one received. Probe indexes start at `first_index`.
async fn send_until_delivered(from: &Member, to: &mut Member, first_index: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    let (from_id, to_id) = (from.transport.local_id(), to.transport.local_id());
    let mut index = first_index;
    loop {
        assert!(Instant::now() < deadline, "nothing from {from_id} reached {to_id}");
        from.transport.send(vec![append(from_id, to_id, index)]);
        index += 1;
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(50), to.inbound.recv()).await
        {
            return m.index;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_order_in_both_directions() {
    let (mut a, mut b) = pair().await;
    for chunk in 0..10u64 {
        a.transport.send(appends(1, 2, chunk * 50..(chunk + 1) * 50));
    }
    for expected in 0..500u64 {
        let m = b.recv().await;
        assert_eq!((m.from, m.to, m.index), (1, 2, expected));
        assert_eq!(m.msg_type, MessageType::MsgAppend);
    }
    b.transport.send(appends(2, 1, 1000..1200));
    for expected in 1000..1200u64 {
        let m = a.recv().await;
        assert_eq!((m.from, m.to, m.index), (2, 1, expected));
    }
    assert!(a.transport.take_unreachable().is_empty());
    assert!(b.transport.take_unreachable().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_snapshot_message_fits_the_size_limits() {
    let (a, mut b) = pair().await;
    let mut m = append(1, 2, 77);
    m.msg_type = MessageType::MsgSnapshot;
    let mut snap = Snapshot { data: vec![0x5A; 32 * 1024 * 1024].into(), ..Default::default() };
    snap.mut_metadata().index = 77;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2];
    m.snapshot = Some(snap).into();
    // Small messages queued around it still arrive, in order.
    a.transport.send(vec![append(1, 2, 76), m.clone(), append(1, 2, 78)]);
    assert_eq!(b.recv().await.index, 76);
    let got = b.recv().await;
    assert_eq!(got, m);
    assert_eq!(b.recv().await.index, 78);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_from_another_cluster_is_rejected() {
    let a = Member::start(1, CLUSTER).await;
    let mut b = Member::start(2, CLUSTER + 1).await;
    a.transport.set_peer(2, vec![b.url()]);
    a.transport.send(appends(1, 2, 0..10));
    b.assert_quiet().await;
    // The rejected stream counts as a failed send.
    let deadline = Instant::now() + WAIT;
    loop {
        a.transport.send(vec![append(1, 2, 100)]);
        if a.transport.take_unreachable().contains(&2) {
            break;
        }
        assert!(Instant::now() < deadline, "rejection was not reported as unreachable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.assert_quiet().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_names_both_cluster_ids_and_drops_misaddressed_messages() {
    let mut b = Member::start(2, CLUSTER).await;
    let mut client = RaftTransportClient::connect(b.url()).await.unwrap();
    let wire = |from: u64, to: u64, index: u64| RaftMessage {
        msg_type: RaftMessageType::MsgHeartbeat as i32,
        from,
        to,
        index,
        ..Default::default()
    };

    // Wrong cluster: failed_precondition naming both IDs, nothing delivered.
    let batch = RaftBatch { cluster_id: 0xbad, from: 1, to: 2, messages: vec![wire(1, 2, 1)] };
    let status = client
        .stream(tokio_stream::iter(vec![batch]))
        .await
        .expect_err("foreign cluster is rejected");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("c1"), "{}", status.message());
    assert!(status.message().contains("bad"), "{}", status.message());
    b.assert_quiet().await;

    // Right cluster: only the message addressed to member 2 (from the batch's
    // sender) is delivered; a batch for another member is dropped whole.
    let batches = vec![
        RaftBatch {
            cluster_id: CLUSTER,
            from: 1,
            to: 2,
            messages: vec![wire(1, 3, 10), wire(1, 2, 11), wire(5, 2, 12)],
        },
        RaftBatch { cluster_id: CLUSTER, from: 1, to: 3, messages: vec![wire(1, 2, 13)] },
        RaftBatch { cluster_id: CLUSTER, from: 1, to: 2, messages: vec![wire(1, 2, 14)] },
    ];
    client.stream(tokio_stream::iter(batches)).await.expect("valid stream is accepted");
    assert_eq!(b.recv().await.index, 11);
    assert_eq!(b.recv().await.index, 14);
    b.assert_quiet().await;
    assert_eq!(b.transport.dropped_messages(), 3);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_down_is_unreachable_and_reconnects_when_up() {
    // Member 2 is "down": its port is bound but not listening, so connects are
    // refused and no other test in this process can be handed the same port
    // (a released port could be, and a stranger answering would look healthy).
    let placeholder = tokio::net::TcpSocket::new_v4().unwrap();
    placeholder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let b_addr = placeholder.local_addr().unwrap();

    let a = Member::start(1, CLUSTER).await;
    a.transport.set_peer(2, vec![format!("http://{b_addr}")]);
    let deadline = Instant::now() + WAIT;
    let mut index = 0;
    loop {
        a.transport.send(vec![append(1, 2, index)]);
        index += 1;
        if a.transport.take_unreachable() == vec![2] {
            break;
        }
        assert!(Instant::now() < deadline, "down peer never reported unreachable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Member 2 comes up on the same port; traffic resumes after backoff.
    drop(placeholder);
    let listener = TcpListener::bind(b_addr).await.unwrap();
    let mut b = Member::start_on(2, CLUSTER, listener);
    send_until_delivered(&a, &mut b, 10_000).await;
    while b.inbound.try_recv().is_ok() {}
    a.transport.send(appends(1, 2, 20_000..20_100));
    let mut last = None;
    // Probes queued while the peer was down may still be arriving: skip them
    // (each recv still fails the test if nothing comes in time).
    loop {
        let m = b.recv().await;
        if m.index < 20_000 {
            continue;
        }
        if let Some(prev) = last {
            assert_eq!(m.index, prev + 1, "in order once reconnected");
        }
        last = Some(m.index);
        if m.index == 20_099 {
            break;
        }
    }
    assert_eq!(last, Some(20_099));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_peer_gets_nothing_either_way_until_unblocked() {
    let (mut a, mut b) = pair().await;
    // Both streams are up.
    send_until_delivered(&a, &mut b, 0).await;
    send_until_delivered(&b, &mut a, 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    while a.inbound.try_recv().is_ok() {}
    while b.inbound.try_recv().is_ok() {}

    // Member 1 partitions itself from 2: both directions stop.
    a.transport.set_blocked(BTreeSet::from([2]));
    a.transport.send(appends(1, 2, 100..150));
    b.transport.send(appends(2, 1, 100..150));
    a.assert_quiet().await;
    b.assert_quiet().await;

    // Healed: traffic flows again, and nothing from the partition leaks through.
    a.transport.set_blocked(BTreeSet::new());
    a.transport.send(appends(1, 2, 200..210));
    b.transport.send(appends(2, 1, 200..210));
    for expected in 200..210 {
        assert_eq!(b.recv().await.index, expected);
        assert_eq!(a.recv().await.index, expected);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_never_blocks_when_the_peer_is_unreachable_and_the_queue_is_full() {
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = reserved.local_addr().unwrap();
    drop(reserved);
    let (tx, _inbound) = mpsc::channel(1);
    let transport = PeerTransport::new(1, CLUSTER, tx);
    transport.set_peer(2, vec![format!("http://{dead}")]);
    transport.send(appends(1, 2, 0..100_000));
    for chunk in 0..100u64 {
        transport.send(appends(1, 2, chunk * 1000..(chunk + 1) * 1000));
    }
    // Unknown peers are dropped, too.
    transport.send(appends(1, 9, 0..10));
    assert!(
        transport.dropped_messages()
            >= 200_000 - 2 * etcd_transport::QUEUE_CAPACITY_MESSAGES as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_peer_receives_nothing_and_first_reachable_url_is_used() {
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = reserved.local_addr().unwrap();
    drop(reserved);
    let a = Member::start(1, CLUSTER).await;
    let mut b = Member::start(2, CLUSTER).await;
    // The first URL is down: the sender falls back to the second.
    a.transport.set_peer(2, vec![format!("http://{dead}"), b.url()]);
    send_until_delivered(&a, &mut b, 0).await;
    assert_eq!(a.transport.peer_ids(), vec![2]);

    a.transport.remove_peer(2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    while b.inbound.try_recv().is_ok() {}
    a.transport.send(appends(1, 2, 0..10));
    b.assert_quiet().await;
    assert!(a.transport.peer_ids().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_mounted_by_the_caller_works_and_stop_inbound_lets_shutdown_finish() {
    let (tx, mut inbound) = mpsc::channel(16);
    let a = PeerTransport::new(1, CLUSTER, tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let routes = tonic::service::Routes::new(a.service());
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
    });

    let b = Member::start(2, CLUSTER).await;
    b.transport.set_peer(1, vec![a_url]);
    b.transport.send(vec![append(2, 1, 5)]);
    let got = tokio::time::timeout(WAIT, inbound.recv()).await.unwrap().unwrap();
    assert_eq!(got.index, 5);

    // Member 2's stream stays open; stopping the inbound streams lets the
    // graceful shutdown complete.
    a.stop_inbound();
    let _ = stop.send(());
    tokio::time::timeout(WAIT, server)
        .await
        .expect("shutdown does not wait on open peer streams")
        .unwrap()
        .unwrap();
    b.shutdown().await;
}
