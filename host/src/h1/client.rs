//! The client side of HTTP/1.1: the upstream leg of a proxied request, on `httparse`.
//!
//! Why not hyper's client: it runs every connection in a task of its own and hands each
//! request to that task through an mpsc channel, with a oneshot back for the response. That
//! machinery was ~12k of the 47.6k instructions a proxied request cost (`bench/PROFILE.md`,
//! round 6). Here the request's own task writes the head and body and reads the response
//! off the socket; a pooled idle connection is its socket alone, with no task and no buffer.
//!
//! Strictness is hyper's client on the same bytes, held to it by a differential test
//! (`client_tests`), with one difference a proxy needs: a response framed by
//! `Transfer-Encoding` loses its `Content-Length` (RFC 9112 §6.3), so it can never be
//! forwarded with a length that does not match its body.
//!
//! Tenets: the caller bounds every wait (this module has no clocks); a buffer exists only
//! while a response is being read; an answer that arrives while the request body is still
//! going up does not stop it: the rest goes up as the response is read (full duplex, as
//! hyper's client does), and stops, without an error, when the upstream stops reading. A
//! connection whose upload did not finish with its response is not reused.

use super::body::{Io, Upgraded};
use super::decode::{DecodeError, Decoder};
use super::encode::chunk_size;
use super::head::{has_token, last_token_is, parse_length};
use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt as _;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

/// Response header fields accepted; hyper's client default.
pub(crate) const MAX_HEADERS: usize = 100;
/// Bytes a response head may take; hyper's client default (its largest read buffer).
pub(crate) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Trailer bytes of a chunked response, read and dropped.
const MAX_TRAILERS: usize = 16 * 1024;
/// How much one read asks for.
const READ_BYTES: usize = 16 * 1024;
/// A buffered body this small goes in the same write as the head: one syscall.
const COALESCE: usize = 16 * 1024;
/// Room kept in a response's header map for what the gateway adds on the way down (`via`,
/// `x-request-id`, `x-portcullis-attempts`, `alt-svc`): no growth while they are inserted.
const GATEWAY_ADDS: usize = 4;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange failed. Every variant leaves the connection unusable; the caller tells
/// them apart only for the log and the passport.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before the response was complete")]
    Closed,
    #[error("invalid response from upstream: {0}")]
    Invalid(&'static str),
    #[error("upstream response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("request body: {0}")]
    Body(BoxError),
    #[error("request body length does not match its content-length")]
    BodyLength,
}

/// The body that goes up.
pub(crate) enum Outgoing<B> {
    Empty,
    /// Buffered: sent with its length.
    Full(Bytes),
    /// Streamed: with its length when the body knows it, else chunked.
    Stream(B),
}

/// The request head as it goes up: origin-form target, the caller's headers (hop-by-hop
/// fields already removed). `host` is written when the headers carry no `Host`. Framing
/// (`Content-Length`, `Transfer-Encoding`) is this module's to write, from the body.
pub(crate) struct ReqHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) target: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) host: &'a str,
    /// One more field, in place of any of that name in `headers` (a per-attempt
    /// `traceparent`: the map is shared by every attempt, and not copied for one).
    pub(crate) extra: Option<(&'a HeaderName, &'a HeaderValue)>,
}

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Sends one request on `io` and reads the response head. The response's body reads the
/// rest off the same connection and gives it back ([`RecvBody::take_reusable`]) when the
/// exchange ended cleanly. Unbounded in time: the caller wraps it in its timeouts.
///
/// The head is encoded before the future is made, so the future borrows nothing from the
/// request: it holds the encoded bytes, not the header map (the state machine that awaits
/// it is copied once per request, and is smaller for it).
pub(crate) fn send<I, B>(
    io: I,
    req: ReqHead<'_>,
    body: Outgoing<B>,
) -> impl std::future::Future<Output = Result<http::Response<RecvBody<I>>, Error>>
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let framing = match &body {
        Outgoing::Empty => Framing::None,
        Outgoing::Full(b) => Framing::Length(b.len() as u64),
        Outgoing::Stream(s) => s
            .size_hint()
            .exact()
            .map_or(Framing::Chunked, Framing::Length),
    };
    let mut out = Vec::with_capacity(128 + 64 * req.headers.len());
    encode_head(&mut out, &req, framing);
    exchange(io, out, body, framing, req.method == Method::HEAD)
}

async fn exchange<I, B>(
    mut io: I,
    mut out: Vec<u8>,
    body: Outgoing<B>,
    framing: Framing,
    head_request: bool,
) -> Result<http::Response<RecvBody<I>>, Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut rbuf = BytesMut::new();
    let rest = match body {
        Outgoing::Empty => {
            io.write_all(&out).await?;
            None
        }
        Outgoing::Full(b) if b.len() <= COALESCE => {
            out.extend_from_slice(&b);
            io.write_all(&out).await?;
            None
        }
        Outgoing::Full(b) => {
            io.write_all(&out).await?;
            let once = http_body_util::Full::new(b);
            upload(&mut io, &mut rbuf, Upload::new(once, framing)).await?
        }
        Outgoing::Stream(s) => {
            io.write_all(&out).await?;
            upload(&mut io, &mut rbuf, Upload::new(s, framing)).await?
        }
    };
    io.flush().await?;
    drop(out);
    let head = read_head(&mut io, &mut rbuf, head_request).await?;
    let mut resp = http::Response::new(());
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    let kind = match head.body {
        BodyKind::Length(n) => Kind::Fixed(Decoder::length(n)),
        BodyKind::Chunked => Kind::Fixed(Decoder::chunked()),
        BodyKind::Eof => Kind::Eof,
        BodyKind::Upgrade => Kind::Upgrade,
    };
    let body = RecvBody {
        io: Some(io),
        buf: rbuf,
        kind,
        keep_alive: head.keep_alive,
        rest,
    };
    Ok(resp.map(|()| body))
}

fn encode_head(out: &mut Vec<u8>, req: &ReqHead<'_>, framing: Framing) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(req.host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut had_length = false;
    for (name, value) in req.headers {
        if name == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        if name == header::TRANSFER_ENCODING || req.extra.is_some_and(|(n, _)| n == name) {
            continue;
        }
        field(out, name, value);
    }
    if let Some((name, value)) = req.extra {
        field(out, name, value);
    }
    match framing {
        // An empty body keeps a length the caller gave (`0`: a POST without a body).
        Framing::None if had_length => out.extend_from_slice(b"content-length: 0\r\n"),
        Framing::None => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Streams the body up, watching the socket as it goes. `None`: the whole body went up.
/// `Some`: a final answer (or the upstream closing) came first and is in `rbuf`; what is
/// left of the upload goes on as the response body is read ([`RecvBody`]).
async fn upload<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    rbuf: &mut BytesMut,
    mut up: Upload,
) -> Result<Option<Box<Upload>>, Error> {
    rbuf.reserve(READ_BYTES);
    let answered = poll_fn(|cx| {
        while let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *io), cx, rbuf) {
            match r {
                Ok(0) if rbuf.is_empty() => return Poll::Ready(Err(Error::Closed)),
                Ok(0) => return Poll::Ready(Ok(true)),
                // Too much for a head: the head reader refuses it.
                Ok(_) if skip_interim(rbuf) || rbuf.len() > MAX_HEAD_BYTES => {
                    return Poll::Ready(Ok(true))
                }
                Ok(_) if rbuf.capacity() == rbuf.len() => rbuf.reserve(READ_BYTES),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        up.poll_send(cx, io).map_ok(|()| false)
    })
    .await?;
    Ok(answered.then(|| Box::new(up)))
}

/// A request body on its way up: the body, its framing, and the piece being written.
struct Upload {
    body: UnsyncBoxBody<Bytes, BoxError>,
    /// Bytes still owed to a `Content-Length`.
    left: Option<u64>,
    chunked: bool,
    pending: Pending,
    ended: bool,
}

impl Upload {
    fn new<B>(body: B, framing: Framing) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Upload {
            body: body.map_err(Into::into).boxed_unsync(),
            left: match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            },
            chunked: framing == Framing::Chunked,
            pending: Pending::default(),
            ended: false,
        }
    }

    /// Writes until the body is all up and flushed (`Ready(Ok)`), or waits on the body or
    /// the socket.
    fn poll_send<I: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
    ) -> Poll<Result<(), Error>> {
        loop {
            ready!(self.pending.poll_write(cx, io))?;
            if self.ended {
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Request trailers are dropped: no HTTP/1.1 upstream of ours reads them.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(left) = &mut self.left {
                        *left = left
                            .checked_sub(data.len() as u64)
                            .ok_or(Error::BodyLength)?;
                    }
                    self.pending.set(data, self.chunked);
                }
                Some(Err(e)) => return Poll::Ready(Err(Error::Body(e))),
                None => {
                    if self.left.is_some_and(|l| l > 0) {
                        return Poll::Ready(Err(Error::BodyLength));
                    }
                    if self.chunked {
                        self.pending.set_tail(b"0\r\n\r\n");
                    }
                    self.ended = true;
                }
            }
        }
    }
}

/// Drops whole interim (`1xx` other than `101`) heads at the start of `buf`; true when what
/// is left starts a final response (or cannot be one: the head reader reports it).
fn skip_interim(buf: &mut BytesMut) -> bool {
    loop {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); 16];
        let mut resp = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(n)) => match resp.code {
                Some(c) if (100..200).contains(&c) && c != 101 => buf.advance(n),
                _ => return true,
            },
            // Not whole yet, or an interim head with many fields: keep uploading.
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => return false,
            Err(_) => return true,
        }
    }
}

/// A chunk header, the data, and the CRLF after it (or a bare length-framed piece).
#[derive(Default)]
struct Pending {
    head: [u8; 18],
    head_at: u8,
    head_len: u8,
    data: Bytes,
    tail: &'static [u8],
}

impl Pending {
    fn set(&mut self, data: Bytes, chunked: bool) {
        if chunked {
            let mut v = Vec::with_capacity(18);
            chunk_size(&mut v, data.len());
            self.head[..v.len()].copy_from_slice(&v);
            self.head_len = v.len() as u8;
            self.tail = b"\r\n";
        } else {
            self.head_len = 0;
            self.tail = b"";
        }
        self.head_at = 0;
        self.data = data;
    }

    fn set_tail(&mut self, tail: &'static [u8]) {
        self.head_at = 0;
        self.head_len = 0;
        self.data = Bytes::new();
        self.tail = tail;
    }

    fn poll_write<I: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
    ) -> Poll<io::Result<()>> {
        loop {
            let head = &self.head[self.head_at as usize..self.head_len as usize];
            if head.is_empty() && self.data.is_empty() && self.tail.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let bufs = [
                io::IoSlice::new(head),
                io::IoSlice::new(&self.data),
                io::IoSlice::new(self.tail),
            ];
            let mut n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let h = n.min(head.len());
            self.head_at += h as u8;
            n -= h;
            let d = n.min(self.data.len());
            self.data.advance(d);
            n -= d;
            self.tail = &self.tail[n.min(self.tail.len())..];
        }
    }
}

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Eof,
    /// `101 Switching Protocols`: the connection is the caller's.
    Upgrade,
}

struct RespHead {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: BodyKind,
    keep_alive: bool,
}

async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<RespHead, Error> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf, head_request)? {
                return Ok(head);
            }
        }
        buf.reserve(READ_BYTES);
        if io.read_buf(buf).await? == 0 {
            return Err(Error::Closed);
        }
    }
}

/// Parses the final response head at the start of `buf`, dropping interim ones, and splits
/// it off. `None`: more bytes are needed.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<RespHead>, Error> {
    loop {
        let Some(head) = parse_one(buf, head_request)? else {
            return Ok(None);
        };
        if !head.status.is_informational() || head.status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Some(head));
        }
    }
}

fn parse_one(buf: &mut BytesMut, head_request: bool) -> Result<Option<RespHead>, Error> {
    // Fields beyond this many go to the heap; 32 covers nearly every real response.
    const STACK: usize = 32;
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK];
    let mut heap: Vec<MaybeUninit<httparse::Header<'_>>>;
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let mut parsed = config.parse_response_with_uninit_headers(&mut resp, buf, &mut stack);
    if let Err(httparse::Error::TooManyHeaders) = parsed {
        heap = vec![MaybeUninit::uninit(); MAX_HEADERS];
        resp = httparse::Response::new(&mut []);
        parsed = config.parse_response_with_uninit_headers(&mut resp, buf, &mut heap);
    }
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(e) => return Err(Error::Invalid(refusal(e))),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Error::HeadTooLarge);
    }
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err(Error::Invalid("malformed status line"));
    };
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("invalid status code"))?;
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // Offsets into the head, so values can be sliced out of it once it is split off.
    let base = buf.as_ptr() as usize;
    // `new`, not `with_capacity`: that one returns the inline array by value (a copy).
    let mut fields: smallvec::SmallVec<[(HeaderName, usize, usize); 24]> =
        smallvec::SmallVec::new();
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::Invalid("invalid header name"))?;
        fields.push((name, h.value.as_ptr() as usize - base, h.value.len()));
    }
    let bytes = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len() + GATEWAY_ADDS);
    let mut f = Fields::new(version);
    for (name, at, n) in fields {
        let value = HeaderValue::from_maybe_shared(bytes.slice(at..at + n))
            .map_err(|_| Error::Invalid("invalid header value"))?;
        f.see(&name, &value)?;
        headers.append(name, value);
    }
    let body = f.body(status, head_request, &mut headers)?;
    Ok(Some(RespHead {
        status,
        version,
        headers,
        body,
        keep_alive: f.keep_alive && body != BodyKind::Eof && body != BodyKind::Upgrade,
    }))
}

fn refusal(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::Status => "invalid status code",
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        _ => "malformed status line",
    }
}

/// What the framing and connection fields of a response said, seen in order.
struct Fields {
    http11: bool,
    keep_alive: bool,
    saw_close: bool,
    te: bool,
    te_chunked: bool,
    length: Option<u64>,
}

impl Fields {
    fn new(version: Version) -> Self {
        let http11 = version == Version::HTTP_11;
        Fields {
            http11,
            keep_alive: http11,
            saw_close: false,
            te: false,
            te_chunked: false,
            length: None,
        }
    }

    fn see(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Error> {
        match *name {
            header::TRANSFER_ENCODING => {
                self.te = true;
                self.te_chunked = last_token_is(value, "chunked");
            }
            header::CONTENT_LENGTH => {
                // A list of one value repeated is one length (hyper's reading); anything else
                // is two bodies' worth of ambiguity.
                for part in value.as_bytes().split(|&b| b == b',') {
                    let n = parse_length(part.trim_ascii())
                        .ok_or(Error::Invalid("invalid content-length"))?;
                    match self.length {
                        Some(prev) if prev != n => {
                            return Err(Error::Invalid("conflicting content-length values"))
                        }
                        _ => self.length = Some(n),
                    }
                }
            }
            header::CONNECTION => {
                if self.saw_close || has_token(value, "close") {
                    self.saw_close = true;
                    self.keep_alive = false;
                } else if !self.http11 {
                    self.keep_alive = has_token(value, "keep-alive");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The body's framing (RFC 9112 §6.3). `Transfer-Encoding` wins over `Content-Length`,
    /// which is then removed: forwarded, it would contradict the body that goes down.
    fn body(
        &self,
        status: StatusCode,
        head_request: bool,
        headers: &mut HeaderMap,
    ) -> Result<BodyKind, Error> {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(BodyKind::Upgrade);
        }
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(BodyKind::Length(0));
        }
        if self.te {
            if self.length.is_some() {
                headers.remove(header::CONTENT_LENGTH);
            }
            return Ok(if self.te_chunked && self.http11 {
                BodyKind::Chunked
            } else {
                BodyKind::Eof
            });
        }
        Ok(self.length.map_or(BodyKind::Eof, BodyKind::Length))
    }
}

/// The response body, read off the connection as it is polled. Once the last byte is in,
/// [`RecvBody::take_reusable`] gives the connection back for the next request.
pub(crate) struct RecvBody<I> {
    io: Option<I>,
    buf: BytesMut,
    kind: Kind,
    keep_alive: bool,
    /// The rest of a request body the answer came before (full duplex).
    rest: Option<Box<Upload>>,
}

enum Kind {
    Fixed(Decoder),
    Eof,
    /// Read to the end: nothing more comes.
    Done,
    Upgrade,
}

impl<I> RecvBody<I> {
    /// The connection, when the response was read to its end, nothing unasked-for followed
    /// it, and both sides allow keep-alive.
    pub(crate) fn take_reusable(&mut self) -> Option<I> {
        let done = matches!(&self.kind, Kind::Fixed(d) if d.is_done());
        if done && self.keep_alive && self.rest.is_none() && self.buf.is_empty() {
            self.buf = BytesMut::new();
            return self.io.take();
        }
        None
    }

    /// After a `101`: the connection, with whatever the upstream sent past the head.
    pub(crate) fn take_upgraded(&mut self) -> Option<Upgraded>
    where
        I: Io,
    {
        if !matches!(self.kind, Kind::Upgrade) {
            return None;
        }
        let io = self.io.take()?;
        Some(Upgraded {
            read_buf: std::mem::take(&mut self.buf).freeze(),
            io: Box::new(io),
        })
    }
}

impl<I: AsyncWrite + Unpin> RecvBody<I> {
    /// Moves the rest of the upload along, never waiting. A failed write means the upstream
    /// stopped reading: the upload ends there and its answer still comes down. A failed
    /// request body (the client went away, or sent less than its length) ends both.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Option<Error> {
        let (Some(up), Some(io)) = (self.rest.as_mut(), self.io.as_mut()) else {
            return None;
        };
        match up.poll_send(cx, io) {
            Poll::Pending => None,
            Poll::Ready(Ok(())) => {
                self.rest = None;
                None
            }
            Poll::Ready(Err(Error::Io(_))) => {
                self.rest = None;
                self.keep_alive = false;
                None
            }
            Poll::Ready(Err(e)) => {
                self.rest = None;
                self.io = None;
                Some(e)
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Body for RecvBody<I> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if let Some(err) = this.poll_upload(cx) {
            return Poll::Ready(Some(Err(err)));
        }
        loop {
            match &mut this.kind {
                Kind::Fixed(d) => match d.decode(&mut this.buf, MAX_TRAILERS) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) if d.is_done() => return Poll::Ready(None),
                    Ok(None) => {}
                    Err(e) => {
                        this.io = None;
                        return Poll::Ready(Some(Err(Error::Invalid(match e {
                            DecodeError::Malformed(why) => why,
                            DecodeError::TrailersTooLarge => "trailers too large",
                        }))));
                    }
                },
                Kind::Eof if !this.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
                }
                Kind::Eof => {}
                Kind::Done | Kind::Upgrade => return Poll::Ready(None),
            }
            let Some(io) = this.io.as_mut() else {
                return Poll::Ready(Some(Err(Error::Closed)));
            };
            this.buf.reserve(READ_BYTES);
            match ready!(poll_read_buf(Pin::new(io), cx, &mut this.buf)) {
                Ok(0) => {
                    this.io = None;
                    if matches!(this.kind, Kind::Eof) {
                        this.kind = Kind::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Error::Closed)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.io = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Fixed(d) => d.is_done(),
            Kind::Eof => false,
            Kind::Done | Kind::Upgrade => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Fixed(Decoder::Length(n)) => SizeHint::with_exact(*n),
            Kind::Fixed(Decoder::Done) | Kind::Done | Kind::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the gateway adds to a response on its way down (`via`, `x-request-id`,
    /// `x-portcullis-attempts`, `alt-svc`) fits in the map the parser made.
    #[test]
    fn the_gateways_response_headers_fit_without_growing_the_map() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"[..],
        );
        let head = match parse_head(&mut buf, false) {
            Ok(Some(h)) => h,
            other => panic!("the head did not parse: {:?}", other.err()),
        };
        let mut h = head.headers;
        let room = h.capacity();
        for name in ["via", "x-request-id", "x-portcullis-attempts", "alt-svc"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        assert_eq!(h.len(), 2 + 4);
        assert_eq!(
            h.capacity(),
            room,
            "the map grew while the gateway added its fields"
        );
    }
}
