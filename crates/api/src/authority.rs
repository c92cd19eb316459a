//! Go clients with an invalid `:authority`, accepted as Go's server accepts
//! them.
//!
//! etcd 3.4's clientv3 dials a single endpoint (what `etcdctl defrag`,
//! `endpoint hashkv`, `endpoint status` and every `Client.Status(ctx, ep)`
//! do) as `passthrough:///http://host:port`, so gRPC sends
//! `:authority: http://host:port`. Go's HTTP/2 server ignores the
//! authority; h2 refuses the stream with PROTOCOL_ERROR (and its
//! maintainers keep that strict). Nothing here uses the authority, so this
//! layer, between the connection and h2, drops an invalid one:
//!
//! - it reads the client preface and frames up to the end of the first
//!   header block; if that block's `:authority` is valid or absent (every
//!   well-behaved client, HTTP/1.1 clients of the gateway too), it hands
//!   everything on untouched and steps aside for the rest of the connection
//!   (reads go straight to the connection);
//! - otherwise the connection is rewritten for its whole life: every header
//!   block is decoded (HPACK, keeping the client's dynamic table) and
//!   re-encoded without `:authority`, as literals that leave h2's table
//!   empty; every other frame passes unchanged. A gRPC client uses one
//!   authority per connection, so this costs only those clients.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE's initial value: what h2 accepts before it says more.
const MAX_FRAME_BYTES: usize = 16_384;
const READ_CHUNK_BYTES: usize = 16 * 1024;

enum Mode {
    /// Waiting for the client preface.
    Preface,
    /// Reading frames up to the end of the first header block.
    Sniffing,
    /// Rewriting every header block (the client's authority is invalid).
    Rewriting,
    /// Out of the way.
    Passthrough,
}

/// A header block being collected (HEADERS, then CONTINUATIONs).
struct Block {
    stream_id: u32,
    end_stream: bool,
    fragment: Vec<u8>,
    /// The frames as received, handed on untouched if no rewrite is needed.
    raw: Vec<u8>,
}

/// The connection `inner` with invalid `:authority` headers dropped (see the
/// module docs).
pub struct DropInvalidAuthority<IO> {
    inner: IO,
    mode: Mode,
    /// Bytes read from `inner`, not processed yet.
    input: Vec<u8>,
    /// Processed bytes, not read by h2 yet (from `output_at`).
    output: Vec<u8>,
    output_at: usize,
    block: Option<Block>,
    decoder: hpack::Decoder<'static>,
    eof: bool,
}

impl<IO> DropInvalidAuthority<IO> {
    pub fn new(inner: IO) -> Self {
        DropInvalidAuthority {
            inner,
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            output_at: 0,
            block: None,
            decoder: hpack::Decoder::new(),
            eof: false,
        }
    }

    /// Hands everything still buffered on and steps aside.
    fn pass_the_rest(&mut self) {
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.raw);
        }
        self.output.append(&mut self.input);
        self.mode = Mode::Passthrough;
    }

    /// Processes what `input` holds, as far as whole frames go.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    self.output.append(&mut self.input);
                    return;
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        // Not HTTP/2 with prior knowledge (HTTP/1.1, say).
                        self.pass_the_rest();
                        return;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.output.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Sniffing;
                }
                Mode::Sniffing | Mode::Rewriting => {
                    if !self.next_frame() {
                        return;
                    }
                }
            }
        }
    }

    /// Handles one whole frame from `input`; false when there is none yet.
    fn next_frame(&mut self) -> bool {
        if self.input.len() < FRAME_HEADER_BYTES {
            return false;
        }
        let length = usize::from(self.input[0]) << 16
            | usize::from(self.input[1]) << 8
            | usize::from(self.input[2]);
        if self.input.len() < FRAME_HEADER_BYTES + length {
            return false;
        }
        let frame: Vec<u8> = self.input.drain(..FRAME_HEADER_BYTES + length).collect();
        let (kind, flags) = (frame[3], frame[4]);
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_BYTES..];
        match kind {
            HEADERS if self.block.is_none() => {
                let Some(fragment) = headers_fragment(flags, payload) else {
                    // Malformed: h2 says so.
                    self.output.extend_from_slice(&frame);
                    self.pass_the_rest();
                    return true;
                };
                self.block = Some(Block {
                    stream_id,
                    end_stream: flags & END_STREAM != 0,
                    fragment: fragment.to_vec(),
                    raw: frame.clone(),
                });
            }
            CONTINUATION if self.block.as_ref().is_some_and(|b| b.stream_id == stream_id) => {
                let block = self.block.as_mut().expect("checked");
                block.fragment.extend_from_slice(payload);
                block.raw.extend_from_slice(&frame);
            }
            _ if self.block.is_some() => {
                // A protocol error of the client's: let h2 answer it.
                self.output.extend_from_slice(&frame);
                self.pass_the_rest();
                return true;
            }
            _ => {
                self.output.extend_from_slice(&frame);
                return true;
            }
        }
        if flags & END_HEADERS != 0 {
            let block = self.block.take().expect("a block is open");
            self.finish_block(block);
        }
        true
    }

    fn finish_block(&mut self, block: Block) {
        let Ok(fields) = self.decoder.decode(&block.fragment) else {
            self.output.extend_from_slice(&block.raw);
            self.pass_the_rest();
            return;
        };
        let invalid = |(name, value): &(Vec<u8>, Vec<u8>)| {
            name.as_slice() == b":authority"
                && tonic::codegen::http::uri::Authority::try_from(value.as_slice()).is_err()
        };
        match self.mode {
            Mode::Sniffing if !fields.iter().any(invalid) => {
                self.output.extend_from_slice(&block.raw);
                self.pass_the_rest();
            }
            _ => {
                if matches!(self.mode, Mode::Sniffing) {
                    tracing::debug!(
                        "a client sends an invalid :authority; dropping it on this connection"
                    );
                    self.mode = Mode::Rewriting;
                }
                let mut encoded = Vec::new();
                for field in fields.iter().filter(|f| !invalid(f)) {
                    encode_literal(&mut encoded, &field.0, &field.1);
                }
                write_block(&mut self.output, block.stream_id, block.end_stream, &encoded);
            }
        }
    }
}

/// The header block fragment of a HEADERS payload (padding and priority
/// removed); none if the payload is malformed.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start += 1;
        end = end.checked_sub(pad)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end)
}

/// An HPACK integer with an `prefix_bits`-bit prefix, `first` holding the
/// representation's leading bits.
fn encode_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u8, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// "Literal Header Field without Indexing — New Name" (RFC 7541 6.2.2),
/// plain strings: nothing enters the receiver's dynamic table.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_integer(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    encode_integer(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

/// A header block as a HEADERS frame and as many CONTINUATIONs as it needs.
fn write_block(out: &mut Vec<u8>, stream_id: u32, end_stream: bool, block: &[u8]) {
    let mut chunks = block.chunks(MAX_FRAME_BYTES).peekable();
    let mut first = true;
    if block.is_empty() {
        write_frame(
            out,
            HEADERS,
            END_HEADERS | if end_stream { END_STREAM } else { 0 },
            stream_id,
            &[],
        );
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut flags = if last { END_HEADERS } else { 0 };
        let kind = if first { HEADERS } else { CONTINUATION };
        if first && end_stream {
            flags |= END_STREAM;
        }
        write_frame(out, kind, flags, stream_id, chunk);
        first = false;
    }
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let length = payload.len();
    out.extend_from_slice(&[(length >> 16) as u8, (length >> 8) as u8, length as u8, kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

impl<IO: AsyncRead + Unpin> AsyncRead for DropInvalidAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.output_at < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.output_at);
                buf.put_slice(&this.output[this.output_at..this.output_at + n]);
                this.output_at += n;
                if this.output_at == this.output.len() {
                    this.output.clear();
                    this.output_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Passthrough) || this.eof {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The end: hand on whatever partial frame is left.
                    this.eof = true;
                    this.pass_the_rest();
                }
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(read.filled());
                    this.process();
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for DropInvalidAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

forward_connect_info!(DropInvalidAuthority);

#[cfg(test)]
mod tests;
