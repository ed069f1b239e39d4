//! Request heads: bytes to `http::request::Parts`, and how the body that follows is framed.
//!
//! The rules are hyper's (the differential test in `h1::tests` holds us to them), written out
//! where the request path depends on them: one `Content-Length` value, `Transfer-Encoding`
//! only on HTTP/1.1 and only ending in `chunked`, and both together marked ambiguous so
//! admission refuses the request (RFC 9112 §6.3 lets a server process it; a gateway must not,
//! since the upstream may frame it the other way).

use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri, Version};
use smallvec::SmallVec;
use std::mem::MaybeUninit;

/// hyper's limit on a request target; longer is `414`.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// Room kept in a request's header map for what the gateway adds on the way up
/// (`x-request-id`, `x-forwarded-for`/`-proto`/`-host`, `via`, `traceparent`, and a spare).
/// Sized for the client's fields alone, the map grew twice per request while they were
/// inserted: a rehash and a reallocation each, ~1,200 instructions per request under
/// callgrind (`bench/PROFILE.md`, round 8).
const GATEWAY_ADDS: usize = 8;

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (no `Content-Length`, no `Transfer-Encoding`, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed head and what it says about the connection.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) parts: http::request::Parts,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    pub(crate) upgrade: bool,
    /// `Content-Length` and `Transfer-Encoding` both present: framed as chunked with the
    /// length removed (as hyper does), the connection closes after it, and admission
    /// refuses it with 400.
    pub(crate) ambiguous: bool,
}

/// Why a head is refused; each is answered by the codec before any request exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// 431: the head is larger than `max_header_bytes`, or has more than `max_headers`.
    TooLarge,
    /// 414.
    UriTooLong,
    /// 400, with the reason.
    Malformed(&'static str),
}

impl HeadError {
    pub(crate) fn status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::UriTooLong => 414,
            HeadError::Malformed(_) => 400,
        }
    }
    pub(crate) fn reason(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head too large",
            HeadError::UriTooLong => "request target too long",
            HeadError::Malformed(r) => r,
        }
    }
}

/// What `parse` found at the start of the buffer.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A whole head, split off the buffer.
    Complete(Box<Head>),
    /// More bytes are needed.
    Partial,
}

/// The head limits, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_head_bytes: usize,
    pub(crate) max_headers: usize,
}

/// Parses the head at the start of `buf` and, when it is whole, splits it off: the target
/// and header values become slices of those bytes, not copies.
pub(crate) fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Parsed, HeadError> {
    // Headers beyond this many go to the heap; 64 covers nearly every real request.
    const STACK: usize = 64;
    let mut stack: [MaybeUninit<httparse::Header<'_>>; STACK] = [MaybeUninit::uninit(); STACK];
    let mut heap: Vec<MaybeUninit<httparse::Header<'_>>>;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK {
        &mut stack[..limits.max_headers]
    } else {
        heap = vec![MaybeUninit::uninit(); limits.max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_head_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(Parsed::Partial)
            }
        }
        Err(e) => return Err(refusal(e)),
    };
    if len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("malformed request line"));
    };
    if path.len() >= MAX_URI_LEN {
        return Err(HeadError::UriTooLong);
    }
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // Offsets into the head, so the values can be sliced out of it once it is split off.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = at(path.as_bytes());
    // `new`, not `with_capacity`: that one builds the inline array and returns it by value,
    // a 1.1 KiB copy per request (136 instructions under callgrind).
    let mut fields: SmallVec<[(HeaderName, (usize, usize)); 24]> = SmallVec::new();
    for hdr in req.headers.iter() {
        let name = HeaderName::from_bytes(hdr.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        fields.push((name, at(hdr.value)));
    }
    let bytes = buf.split_to(len).freeze();
    let slice = |(off, n): (usize, usize)| bytes.slice(off..off + n);
    let uri = Uri::from_maybe_shared(slice(target))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut h = Headers::new(version, &method);
    let mut map = HeaderMap::with_capacity(fields.len() + GATEWAY_ADDS);
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(slice(range))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        match h.see(&name, &value)? {
            Keep::Yes => map.append(name, value),
            // A repeated equal length is kept once; after a `Transfer-Encoding` a length is
            // dropped (hyper's order of events).
            Keep::No => false,
            Keep::DropLength => {
                map.remove(header::CONTENT_LENGTH);
                map.append(name, value)
            }
        };
    }
    let head = h.finish(method, uri, version, map)?;
    Ok(Parsed::Complete(Box::new(head)))
}

fn refusal(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        httparse::Error::Token => HeadError::Malformed("invalid method"),
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        _ => HeadError::Malformed("malformed request line"),
    }
}

/// Whether a header goes into the request's map.
enum Keep {
    Yes,
    No,
    /// Yes, and the `Content-Length` before it goes.
    DropLength,
}

/// What the framing and connection headers said, as they are seen in order.
struct Headers {
    http11: bool,
    keep_alive: bool,
    saw_close: bool,
    te: bool,
    te_chunked: bool,
    cl: bool,
    length: Option<u64>,
    expect_continue: bool,
    upgrade: bool,
}

impl Headers {
    fn new(version: Version, method: &Method) -> Self {
        let http11 = version == Version::HTTP_11;
        Headers {
            http11,
            keep_alive: http11,
            saw_close: false,
            te: false,
            te_chunked: false,
            cl: false,
            length: None,
            expect_continue: false,
            upgrade: method == Method::CONNECT,
        }
    }

    /// Takes one header into account, and says whether it goes into the request.
    fn see(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<Keep, HeadError> {
        let mut keep = Keep::Yes;
        match *name {
            header::TRANSFER_ENCODING => {
                if !self.http11 {
                    return Err(HeadError::Malformed(
                        "transfer-encoding in an HTTP/1.0 request",
                    ));
                }
                self.te = true;
                if self.cl && self.length.take().is_some() {
                    keep = Keep::DropLength;
                }
                self.te_chunked = last_token_is(value, "chunked");
            }
            header::CONTENT_LENGTH => {
                self.cl = true;
                if self.te {
                    return Ok(Keep::No);
                }
                let n = parse_length(value.as_bytes())
                    .ok_or(HeadError::Malformed("invalid content-length"))?;
                match self.length {
                    Some(prev) if prev != n => {
                        return Err(HeadError::Malformed("conflicting content-length values"))
                    }
                    Some(_) => return Ok(Keep::No),
                    None => self.length = Some(n),
                }
            }
            header::CONNECTION => {
                if self.saw_close || has_token(value, "close") {
                    self.saw_close = true;
                    self.keep_alive = false;
                } else if !self.keep_alive {
                    self.keep_alive = has_token(value, "keep-alive");
                }
            }
            header::EXPECT => {
                self.expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
            }
            header::UPGRADE => self.upgrade = self.http11,
            _ => {}
        }
        Ok(keep)
    }

    fn finish(
        self,
        method: Method,
        uri: Uri,
        version: Version,
        headers: HeaderMap,
    ) -> Result<Head, HeadError> {
        if self.te && !self.te_chunked {
            return Err(HeadError::Malformed(
                "transfer-encoding does not end in chunked",
            ));
        }
        let framing = match (self.te, self.length) {
            (true, _) => Framing::Chunked,
            (false, Some(0)) | (false, None) => Framing::Empty,
            (false, Some(n)) => Framing::Length(n),
        };
        let ambiguous = self.te && self.cl;
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = method;
        parts.uri = uri;
        parts.version = version;
        parts.headers = headers;
        Ok(Head {
            parts,
            framing,
            keep_alive: self.keep_alive && !ambiguous,
            expect_continue: self.expect_continue,
            upgrade: self.upgrade,
            ambiguous,
        })
    }
}

/// `Content-Length`: digits only (a comma list, even of one repeated value, is refused, as
/// hyper does).
/// A `Content-Length` value: 1 to 19 ASCII digits (so it fits a u64), nothing else.
pub(super) fn parse_length(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

pub(super) fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.as_bytes()
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

pub(super) fn last_token_is(v: &HeaderValue, token: &str) -> bool {
    v.as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::headers;
    use http::HeaderValue;

    /// What the gateway adds to a request on its way up fits in the map the parser made: no
    /// rehash and no reallocation per request. Fails if the map is sized for the client's
    /// fields alone, or if the gateway comes to add more than `GATEWAY_ADDS` fields.
    #[test]
    fn the_gateways_request_headers_fit_without_growing_the_map() {
        let mut buf = BytesMut::from(
            &b"GET /a HTTP/1.1\r\nhost: example.com\r\nuser-agent: t\r\naccept: */*\r\n\r\n"[..],
        );
        let limits = Limits {
            max_head_bytes: 8192,
            max_headers: 100,
        };
        let Ok(Parsed::Complete(head)) = parse(&mut buf, limits) else {
            panic!("the head did not parse");
        };
        let mut h = head.parts.headers;
        let room = h.capacity();
        headers::ensure_request_id(&mut h);
        let host = h.get(http::header::HOST).cloned();
        headers::add_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), false, host);
        headers::add_via(&mut h, Version::HTTP_11);
        headers::propagate_traceparent(&mut h);
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
        assert_eq!(h.len(), 3 + 7, "the gateway's fields were not all added");
        assert_eq!(
            h.capacity(),
            room,
            "the map grew while the gateway added its fields"
        );
    }
}
