use super::*;

use tokio::io::AsyncReadExt;

/// A reader that hands out its bytes `step` at a time.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.step.min(self.bytes.len() - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.bytes[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

async fn through(bytes: &[u8], step: usize) -> Vec<u8> {
    let reader = Trickle { bytes: bytes.to_vec(), at: 0, step };
    let mut out = Vec::new();
    DropInvalidAuthority::new(reader).read_to_end(&mut out).await.expect("read");
    out
}

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, kind, flags, stream_id, payload);
    out
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn request(authority: &[u8]) -> Fields {
    [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/etcdserverpb.Maintenance/Defragment"),
        (b":authority", authority),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.to_vec(), v.to_vec()))
    .collect()
}

/// The header blocks of the HEADERS/CONTINUATION frames in `bytes` (after
/// the preface), decoded as h2 would.
fn decoded_blocks(bytes: &[u8]) -> Vec<(u32, bool, Fields)> {
    let mut decoder = hpack::Decoder::new();
    let mut at = PREFACE.len();
    let mut blocks = Vec::new();
    let mut open: Option<(u32, bool, Vec<u8>)> = None;
    while at < bytes.len() {
        let length = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
        let id = u32::from_be_bytes(bytes[at + 5..at + 9].try_into().expect("4 bytes"));
        let payload = &bytes[at + 9..at + 9 + length];
        match kind {
            HEADERS => {
                open = Some((
                    id,
                    flags & END_STREAM != 0,
                    headers_fragment(flags, payload).expect("ok").to_vec(),
                ))
            }
            CONTINUATION => open.as_mut().expect("open").2.extend_from_slice(payload),
            _ => {}
        }
        if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
            let (id, end, block) = open.take().expect("open");
            blocks.push((id, end, decoder.decode(&block).expect("decodes")));
        }
        at += 9 + length;
    }
    blocks
}

#[tokio::test]
async fn http1_and_valid_authorities_pass_untouched() {
    let http1 = b"POST /v3/kv/range HTTP/1.1\r\nHost: localhost\r\n\r\n{}".to_vec();
    assert_eq!(through(&http1, 7).await, http1);

    let mut encoder = hpack::Encoder::new();
    let mut h2 = PREFACE.to_vec();
    h2.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    let block = encoder.encode(request(b"localhost:2379").iter().map(|(n, v)| (&n[..], &v[..])));
    h2.extend(frame(HEADERS, END_HEADERS, 1, &block));
    h2.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
    // Later blocks are not looked at: even an invalid one passes as sent.
    let later = encoder.encode(request(b"http://x:1").iter().map(|(n, v)| (&n[..], &v[..])));
    h2.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &later));
    for step in [1, 5, 4096] {
        assert_eq!(through(&h2, step).await, h2, "step {step}");
    }
}

#[tokio::test]
async fn an_invalid_authority_is_dropped_from_every_block_of_the_connection() {
    let mut encoder = hpack::Encoder::new();
    let mut h2 = PREFACE.to_vec();
    h2.extend(frame(0x4, 0, 0, &[]));
    let authority = b"http://localhost:20000";
    // The first block split over HEADERS (padded) and a CONTINUATION.
    let first = encoder.encode(request(authority).iter().map(|(n, v)| (&n[..], &v[..])));
    let (a, b) = first.split_at(first.len() / 2);
    let mut padded = vec![3u8];
    padded.extend_from_slice(a);
    padded.extend_from_slice(&[0, 0, 0]);
    h2.extend(frame(HEADERS, PADDED, 1, &padded));
    h2.extend(frame(CONTINUATION, END_HEADERS, 1, b));
    h2.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
    // The second refers to the first's entries in the client's dynamic table.
    let second = encoder.encode(request(authority).iter().map(|(n, v)| (&n[..], &v[..])));
    h2.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
    let want: Vec<_> = request(authority).into_iter().filter(|(n, _)| n != b":authority").collect();
    for step in [1, 9, 4096] {
        let out = through(&h2, step).await;
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let blocks = decoded_blocks(&out);
        assert_eq!(blocks, vec![(1, false, want.clone()), (3, true, want.clone())], "step {step}");
    }
}

#[test]
fn large_blocks_are_split_into_continuations() {
    let mut out = Vec::new();
    let block = vec![0u8; MAX_FRAME_BYTES * 2 + 10];
    write_block(&mut out, 5, true, &block);
    let kinds: Vec<(u8, u8)> = [0, MAX_FRAME_BYTES + 9, 2 * (MAX_FRAME_BYTES + 9)]
        .iter()
        .map(|at| (out[at + 3], out[at + 4]))
        .collect();
    assert_eq!(kinds, vec![(HEADERS, END_STREAM), (CONTINUATION, 0), (CONTINUATION, END_HEADERS)]);
}

#[test]
fn integers_encode_as_hpack_says() {
    // RFC 7541 C.1: 10 and 1337 with a 5-bit prefix.
    let mut out = Vec::new();
    encode_integer(&mut out, 0, 5, 10);
    assert_eq!(out, vec![10]);
    out.clear();
    encode_integer(&mut out, 0, 5, 1337);
    assert_eq!(out, vec![31, 154, 10]);
}
