//! Hand-built HTTP/2 frames and HPACK blocks (RFC 9113, RFC 7541) for abuse tests: what a
//! well-behaved client library refuses to send.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const RST_STREAM: u8 = 0x3;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string literal, not Huffman-coded (RFC 7541 §5.2), with a 7-bit prefix length.
pub fn hpack_str(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        let mut rest = n - 127;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
    out.extend_from_slice(s);
    out
}

/// The request pseudo-headers for `GET path` (static-table names, literal values).
pub fn hpack_get(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing
    b.extend(hpack_str(path.as_bytes()));
    b.push(0x01); // :authority
    b.extend(hpack_str(b"localhost"));
    b
}

/// A small header block that decodes to `copies` + 1 × a `value_len`-byte header: the header
/// is sent once with incremental indexing (dynamic index 62), then referenced by one byte per
/// copy.
pub fn hpack_bomb(path: &str, value_len: usize, copies: usize) -> Vec<u8> {
    let mut b = hpack_get(path);
    b.push(0x40);
    b.extend(hpack_str(b"x-bomb"));
    b.extend(hpack_str(&vec![b'a'; value_len]));
    b.extend(std::iter::repeat_n(0x80 | 62, copies));
    b
}

/// A raw HTTP/2 connection: the preface and an empty SETTINGS are sent; with `ack_settings`
/// the server's SETTINGS are awaited and acknowledged (so h2 applies our limits).
pub async fn raw(addr: SocketAddr, ack_settings: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    if ack_settings {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before its SETTINGS");
                buf.extend_from_slice(&chunk[..n]);
                while buf.len() >= 9 {
                    let len = (usize::from(buf[0]) << 16)
                        | (usize::from(buf[1]) << 8)
                        | usize::from(buf[2]);
                    if buf.len() < 9 + len {
                        break;
                    }
                    if buf[3] == SETTINGS && buf[4] & ACK == 0 {
                        return;
                    }
                    buf.drain(..9 + len);
                }
            }
        })
        .await;
        assert!(got.is_ok(), "no SETTINGS from the server");
        s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        // Let h2 read the acknowledgement before whatever comes next.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s
}

/// Reads (and drops) what the server sends until it closes the connection; the GOAWAY error
/// code, if one arrived. `None` from the outer option: still open after `within`.
pub async fn until_closed(
    r: &mut (impl AsyncReadExt + Unpin),
    within: Duration,
) -> Option<Option<u32>> {
    let mut goaway = None;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let read = async {
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            // Frame by frame, keeping only an incomplete tail.
            loop {
                if buf.len() < 9 {
                    break;
                }
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                if buf[3] == GOAWAY && len >= 8 {
                    goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
                }
                buf.drain(..9 + len);
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(()) => Some(goaway),
        Err(_) => None,
    }
}
