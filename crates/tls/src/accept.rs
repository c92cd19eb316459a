//! The accept loop of a TLS port: handshakes run concurrently, so a slow or
//! failing client never holds up the others.

use std::time::Duration;

use tokio_rustls::server::TlsStream;

use crate::listen::Accept;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;

/// Accepts connections on `listener`, completes their TLS handshakes and yields
/// the connections ready to serve.
pub fn incoming<L: Accept>(
    listener: L,
    acceptor: TlsAcceptor,
) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<L::Stream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept_one().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, ready) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = ready.send(Ok(tls)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(%peer, error = %crate::describe_handshake_error(&err), "rejected a client's TLS handshake")
                    }
                    Err(_) => tracing::warn!(%peer, "a client's TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Accepts plaintext connections on `listener` and yields them (the same stream
/// shape as [`incoming`], for TCP and Unix sockets alike).
pub fn accepted<L: Accept>(
    listener: L,
) -> impl tokio_stream::Stream<Item = std::io::Result<L::Stream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept_one() => accepted,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    if tx.send(Ok(stream)).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
