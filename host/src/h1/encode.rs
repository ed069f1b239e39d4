//! Response heads and body framing for HTTP/1.1 clients.

use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};
use std::cell::RefCell;
use std::time::{Duration, SystemTime};

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No body bytes at all (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and no length).
    Close,
}

/// What the request said that shapes the response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReqInfo {
    pub(crate) head: bool,
    pub(crate) http10: bool,
}

/// Writes the status line and headers into `dst` and says how the body follows. `close`
/// is set when the connection ends after this response (it gains `connection: close`);
/// an HTTP/1.0 client with no length forces it.
pub(crate) fn head(
    dst: &mut Vec<u8>,
    status: StatusCode,
    headers: &mut HeaderMap,
    req: ReqInfo,
    exact_len: Option<u64>,
    close: &mut bool,
) -> Mode {
    let bodyless = req.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // One pass over the names says which framing fields are there; most responses carry
    // only `content-length`, and each hashed lookup or removal of an absent name cost ~100
    // instructions (four per response under callgrind).
    let seen = Seen::of(headers);
    // Framing is ours to decide: whatever the handler put there is replaced.
    if seen.transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if seen.connection
        && headers
            .remove(header::CONNECTION)
            .is_some_and(|v| has_close(&v))
    {
        *close = true;
    }
    let declared = if seen.content_length {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    } else {
        None
    };
    if declared.is_none() && seen.content_length && !bodyless {
        // An unparseable length from the handler: the body's own size decides instead.
        headers.remove(header::CONTENT_LENGTH);
    }
    let mode = if bodyless {
        if declared.is_none() && req.head {
            if let Some(n) = exact_len.filter(|n| *n > 0) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        Mode::None
    } else if let Some(n) = declared {
        Mode::Length(n)
    } else if let Some(n) = exact_len {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        Mode::Length(n)
    } else if !req.http10 {
        Mode::Chunked
    } else {
        *close = true;
        Mode::Close
    };
    status_line(dst, status);
    for (name, value) in headers.iter() {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if mode == Mode::Chunked {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !seen.date {
        dst.extend_from_slice(b"date: ");
        with_date(|d| dst.extend_from_slice(d));
        dst.extend_from_slice(b"\r\n");
    }
    if *close {
        dst.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        dst.extend_from_slice(b"connection: keep-alive\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    mode
}

/// Which of the fields `head` acts on a response carries.
#[derive(Default)]
struct Seen {
    transfer_encoding: bool,
    connection: bool,
    content_length: bool,
    date: bool,
}

impl Seen {
    fn of(headers: &HeaderMap) -> Seen {
        let mut s = Seen::default();
        for name in headers.keys() {
            if name == header::CONTENT_LENGTH {
                s.content_length = true;
            } else if name == header::DATE {
                s.date = true;
            } else if name == header::CONNECTION {
                s.connection = true;
            } else if name == header::TRANSFER_ENCODING {
                s.transfer_encoding = true;
            }
        }
        s
    }
}

/// Headers for the upgrade's `101`: written as given (`connection: upgrade` included).
pub(crate) fn switching_head(dst: &mut Vec<u8>, headers: &HeaderMap) {
    status_line(dst, StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in headers.iter() {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

fn status_line(dst: &mut Vec<u8>, status: StatusCode) {
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// A chunk header: the size in hex and CRLF.
pub(crate) fn chunk_size(dst: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = HEX[v & 15];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
    dst.extend_from_slice(b"\r\n");
}

fn has_close(v: &HeaderValue) -> bool {
    v.as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// An error the codec answers itself, before a request exists: 400, 414, 431, 408.
pub(crate) fn error_response(
    status: u16,
    code: &str,
    reason: &str,
    extra: &[(http::HeaderName, HeaderValue)],
) -> Vec<u8> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = Vec::with_capacity(256);
    status_line(&mut r, status);
    r.extend_from_slice(b"connection: close\r\ncontent-type: text/plain\r\nportcullis-error: ");
    r.extend_from_slice(code.as_bytes());
    r.extend_from_slice(b"\r\n");
    for (k, v) in extra {
        r.extend_from_slice(k.as_str().as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(
        format!("content-length: {}\r\n\r\n{reason}\n", reason.len() + 1).as_bytes(),
    );
    r
}

thread_local! {
    /// The `date` value, formatted once a second per thread (as hyper does).
    static DATE: RefCell<(SystemTime, [u8; 29])> = const { RefCell::new((SystemTime::UNIX_EPOCH, [0; 29])) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        let now = SystemTime::now();
        if now
            .duration_since(d.0)
            .map_or(true, |e| e >= Duration::from_secs(1))
        {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                d.1.copy_from_slice(s.as_bytes());
            }
            // Next refresh at the start of the next second.
            let into = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(Duration::ZERO, |e| {
                    Duration::from_nanos(e.subsec_nanos().into())
                });
            d.0 = now - into;
        }
        f(&d.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(headers: &[(&str, &str)], exact: Option<u64>) -> (String, Mode, bool) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let req = ReqInfo {
            head: false,
            http10: false,
        };
        let (mut out, mut close) = (Vec::new(), false);
        let mode = head(&mut out, StatusCode::OK, &mut map, req, exact, &mut close);
        (String::from_utf8(out).expect("ascii head"), mode, close)
    }

    /// The framing fields a handler sets are ours to decide: `transfer-encoding` is replaced,
    /// `connection` is dropped (a `close` in it ends the connection), a valid length is kept
    /// and a bad one replaced by the body's size; `date` is added unless the handler set one.
    #[test]
    fn the_handlers_framing_fields_are_replaced_and_date_added_once() {
        let (h, mode, close) = encoded(
            &[
                ("transfer-encoding", "chunked"),
                ("connection", "keep-alive, close"),
                ("content-length", "5"),
                ("x-a", "1"),
            ],
            Some(5),
        );
        assert_eq!(mode, Mode::Length(5));
        assert!(close, "a close in the handler's connection was lost");
        assert!(!h.contains("transfer-encoding"), "{h}");
        assert!(!h.contains("keep-alive"), "{h}");
        assert_eq!(h.matches("content-length: 5\r\n").count(), 1, "{h}");
        assert_eq!(h.matches("date: ").count(), 1, "{h}");
        assert!(h.ends_with("connection: close\r\n\r\n"), "{h}");

        let (h, mode, close) = encoded(&[("content-length", "x"), ("date", "then")], Some(3));
        assert_eq!(mode, Mode::Length(3));
        assert!(!close);
        assert!(
            h.contains("content-length: 3\r\n") && !h.contains(": x"),
            "{h}"
        );
        assert_eq!(h.matches("date: ").count(), 1, "{h}");

        let (h, mode, _) = encoded(&[("x-a", "1")], None);
        assert_eq!(mode, Mode::Chunked);
        assert!(h.contains("transfer-encoding: chunked\r\n"), "{h}");
        assert!(!h.contains("content-length"), "{h}");
    }

    #[test]
    fn chunk_sizes_are_lower_hex() {
        for (n, s) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (255, "ff\r\n"),
        ] {
            let mut v = Vec::new();
            super::chunk_size(&mut v, n);
            assert_eq!(v, s.as_bytes());
        }
    }
}
