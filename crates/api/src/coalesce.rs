//! Coalesced writes on a client connection. HTTP/2 writes and flushes whenever
//! its connection task runs, and a watcher that queues a response wakes that
//! task at once (tokio runs a task woken by the running one next), so a
//! revision delivered to the many watch streams of one connection would leave
//! as one small write per stream. This wrapper buffers what the connection
//! writes and, at a flush, lets the tasks already waiting run once before it
//! writes: the responses they queue meanwhile go out in the same write. The
//! cost is one pass through the scheduler per flush; nothing is held longer.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes buffered at most before writes wait for the socket.
const BUFFERED_MAX: usize = 256 * 1024;

/// A connection whose writes are gathered until a flush, and whose flushes
/// yield once to the tasks already waiting.
pub struct CoalescedWrites<IO> {
    inner: IO,
    buffered: Vec<u8>,
    /// Written to `inner` already, from the front of `buffered`.
    written: usize,
    /// This flush already let the waiting tasks run.
    yielded: bool,
}

impl<IO> CoalescedWrites<IO> {
    pub fn new(inner: IO) -> Self {
        CoalescedWrites { inner, buffered: Vec::new(), written: 0, yielded: false }
    }
}

impl<IO: AsyncWrite + Unpin> CoalescedWrites<IO> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.buffered.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.buffered[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buffered.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Room for more: a full buffer is written out first.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.buffered.len() >= BUFFERED_MAX {
            std::task::ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CoalescedWrites<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_room(cx))?;
        this.buffered.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_room(cx))?;
        let mut n = 0;
        for buf in bufs {
            this.buffered.extend_from_slice(buf);
            n += buf.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.written < this.buffered.len() && !this.yielded {
            // Let the tasks already queued run first (a task that wakes itself
            // goes to the back of the queue), then write what they added too.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        std::task::ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

forward_connect_info!(CoalescedWrites);
