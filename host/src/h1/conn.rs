//! The connection driver: one request at a time, as the lifecycle reads.
//!
//! ```text
//! idle (no buffer held) ──bytes──▶ head (header timeout) ──▶ exchange ──▶ idle | close | upgrade
//!                                                             │ handler runs, pulls the body
//!                                                             │ response head + body written
//! ```
//!
//! While idle a connection holds no read or write buffer: they exist only while a request
//! is in flight. That is what keeps an idle keep-alive connection to a few hundred bytes
//! (hyper keeps ~16 KiB of buffers for a connection's life).

use super::body::{self, BodyError, OnUpgrade, RecvBody, Upgraded};
use super::decode::{DecodeError, Decoder};
use super::encode::{self, Mode, ReqInfo};
use super::head::{self, Framing, Head, Parsed};
use super::{Outcome, ReadReady, Settings};
use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Body pieces up to this size are copied next to the head or chunk size, so a small
/// response is one write; larger ones are written from their own buffer.
const COALESCE: usize = 16 * 1024;
/// A closing connection reads (and drops) what the client still sends for this long, so its
/// unread bytes do not turn our close into a reset that destroys the response in flight.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

pub(super) enum Next {
    Head(Box<Head>),
    Close,
    H2,
    TimedOut,
    Refused(head::HeadError),
}

/// How long a drained connection that has not sent its first request yet waits for it.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits for and reads the next head. Holds no buffer while nothing arrives.
pub(super) async fn next_head<I: AsyncRead + ReadReady + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    s: &Settings,
    drain: &mut watch::Receiver<bool>,
    first: bool,
) -> io::Result<Next> {
    if buf.is_empty() {
        // A drain closes an idle keep-alive connection at once: its client retries a request
        // that meets the close (RFC 9112 §9.3.1). A connection accepted but not yet read is
        // owed its first request instead: closing it unread resets a client that did nothing
        // wrong (an upgrade under load lost 1 request in 5 runs that way). It gets
        // FIRST_REQUEST_GRACE for the bytes to arrive, and its answer closes it.
        let mut drained = *drain.borrow();
        if drained && !first {
            return Ok(Next::Close);
        }
        let wait = poll_fn(|cx| io.poll_ready_to_read(cx));
        let mut wait = pin!(wait);
        let grace = FIRST_REQUEST_GRACE.min(s.idle_timeout);
        let idle = tokio::time::sleep(if drained { grace } else { s.idle_timeout });
        let mut idle = pin!(idle);
        let ready = loop {
            tokio::select! {
                biased;
                r = &mut wait => break Ok(r),
                _ = &mut idle => break Err(()),
                _ = drain.changed(), if !drained => {
                    if !first {
                        return Ok(Next::Close);
                    }
                    drained = true;
                    idle.as_mut().reset(Instant::now() + grace);
                }
            }
        };
        match ready {
            Err(()) => return Ok(Next::Close),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
        }
    }
    let deadline = Instant::now() + s.header_timeout;
    loop {
        if !buf.is_empty() {
            if first
                && s.detect_h2
                && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())])
            {
                if buf.len() >= H2_PREFACE.len() {
                    return Ok(Next::H2);
                }
            } else {
                match head::parse(buf, s.limits) {
                    Ok(Parsed::Complete(h)) => return Ok(Next::Head(h)),
                    Ok(Parsed::Partial) => {}
                    Err(e) => return Ok(Next::Refused(e)),
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(s.read_buf_bytes);
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_) => return Ok(Next::TimedOut),
            // A close between requests is the normal end; mid-head there is no one to answer.
            Ok(Ok(0)) => return Ok(Next::Close),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

pub(super) enum Done<I> {
    KeepAlive(I, BytesMut),
    Close(I),
    Upgraded,
}

/// One request: the handler runs while the body is fed to it on demand, then the response
/// is written while any body it still reads keeps flowing.
pub(super) async fn exchange<I, F, Fut, B>(
    io: I,
    buf: BytesMut,
    head: Box<Head>,
    s: &Settings,
    handler: &F,
    drain: &watch::Receiver<bool>,
) -> io::Result<Done<I>>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<RecvBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let keep_alive = head.keep_alive;
    let (request, mut feed, upgrade) = prepare(*head, buf, s);
    let req = ReqInfo {
        head: request.method() == http::Method::HEAD,
        http10: request.version() == http::Version::HTTP_10,
    };
    let mut fut = pin!(handler(request));
    let (mut rd, mut wr) = tokio::io::split(io);
    let resp = loop {
        tokio::select! {
            biased;
            r = &mut fut => break r,
            r = feed.step(&mut rd, Some(&mut wr)), if feed.active() => r?,
        }
    };
    let close = !keep_alive || *drain.borrow() || feed.broken;
    respond(rd, wr, feed, resp, req, close, upgrade, s).await
}

/// The request as the handler gets it (body channel, upgrade slot, ambiguity marker), and
/// the driver's ends of them.
fn prepare(head: Head, buf: BytesMut, s: &Settings) -> (Request<RecvBody>, Feed, Upgrade) {
    let Head {
        mut parts,
        framing,
        expect_continue,
        upgrade,
        ambiguous,
        ..
    } = head;
    let (tx, body, dec) = match framing {
        Framing::Empty => (None, RecvBody::empty(), Decoder::length(0)),
        Framing::Length(n) => {
            let (t, b) = body::channel(Some(n));
            (Some(t), b, Decoder::length(n))
        }
        Framing::Chunked => {
            let (t, b) = body::channel(None);
            (Some(t), b, Decoder::chunked())
        }
    };
    if ambiguous {
        parts.extensions.insert(body::AmbiguousFraming);
    }
    let upgrade_tx = upgrade.then(|| {
        let (t, r) = oneshot::channel();
        parts.extensions.insert(OnUpgrade::new(r));
        t
    });
    let feed = Feed {
        tx,
        dec,
        buf,
        continue_sent: if expect_continue { 0 } else { CONTINUE.len() },
        max_trailers: s.limits.max_head_bytes,
        broken: false,
        read_buf_bytes: s.read_buf_bytes,
    };
    (Request::from_parts(parts, body), feed, upgrade_tx)
}

/// Where the stream goes after a `101`, when the request asked to upgrade.
type Upgrade = Option<oneshot::Sender<Upgraded>>;

/// Writes the handler's response (or switches protocols), feeding the body meanwhile, and
/// says whether the connection can take another request.
#[allow(clippy::too_many_arguments)]
async fn respond<I, B>(
    mut rd: ReadHalf<I>,
    mut wr: WriteHalf<I>,
    mut feed: Feed,
    resp: Response<B>,
    req: ReqInfo,
    mut close: bool,
    upgrade: Upgrade,
    s: &Settings,
) -> io::Result<Done<I>>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut rparts, rbody) = resp.into_parts();
    let mut out = Vec::with_capacity(512);
    if feed.continue_sent > 0 && feed.continue_sent < CONTINUE.len() {
        out.extend_from_slice(&CONTINUE[feed.continue_sent..]);
    }
    if let (true, Some(up)) = (
        rparts.status == http::StatusCode::SWITCHING_PROTOCOLS,
        upgrade,
    ) {
        encode::switching_head(&mut out, &rparts.headers);
        wr.write_all(&out).await?;
        wr.flush().await?;
        let io = rd.unsplit(wr);
        let _ = up.send(Upgraded {
            read_buf: feed.buf.freeze(),
            io: Box::new(io),
        });
        return Ok(Done::Upgraded);
    }
    let exact = rbody.size_hint().exact();
    let mode = encode::head(
        &mut out,
        rparts.status,
        &mut rparts.headers,
        req,
        exact,
        &mut close,
    );
    let mut w = Writer::new(out, mode);
    let mut rbody = pin!(rbody);
    w.take_ready(rbody.as_mut());
    loop {
        tokio::select! {
            biased;
            r = w.step(&mut wr, rbody.as_mut(), s.write_idle_timeout) => if r? { break },
            r = feed.step(&mut rd, None), if feed.active() => r?,
        }
    }
    wr.flush().await?;
    let reusable = !close && w.clean && feed.settle();
    let io = rd.unsplit(wr);
    Ok(if reusable {
        Done::KeepAlive(io, feed.buf)
    } else {
        Done::Close(io)
    })
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Feeds the request body to the handler, one piece per ask.
struct Feed {
    tx: Option<body::Sender>,
    dec: Decoder,
    buf: BytesMut,
    /// Bytes of `100 Continue` written (its full length when none is due).
    continue_sent: usize,
    max_trailers: usize,
    /// The body's framing broke or the client went away: the connection cannot be reused.
    broken: bool,
    read_buf_bytes: usize,
}

impl Feed {
    fn active(&self) -> bool {
        self.tx.is_some()
    }

    /// Waits until the handler wants a piece, then delivers one (reading the socket if the
    /// buffer has none). Cancel-safe: nothing is lost if dropped at an await.
    async fn step<I: AsyncRead + AsyncWrite>(
        &mut self,
        rd: &mut ReadHalf<I>,
        wr: Option<&mut WriteHalf<I>>,
    ) -> io::Result<()> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        if !poll_fn(|cx| tx.poll_want(cx)).await {
            // The handler dropped the body: stop feeding it; `settle` decides about reuse.
            self.tx = None;
            return Ok(());
        }
        if let Some(wr) = wr {
            // The client waits for this before sending the body (hyper's behaviour: only
            // once the body is read, so a request refused early never invites it).
            while self.continue_sent < CONTINUE.len() {
                let n = wr.write(&CONTINUE[self.continue_sent..]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.continue_sent += n;
            }
            wr.flush().await?;
        }
        loop {
            match self.dec.decode(&mut self.buf, self.max_trailers) {
                Ok(Some(data)) => {
                    tx.send(data);
                    if self.dec.is_done() {
                        tx.finish();
                        self.tx = None;
                    }
                    return Ok(());
                }
                Ok(None) if self.dec.is_done() => {
                    tx.finish();
                    self.tx = None;
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    tx.fail(BodyError::Malformed(match e {
                        DecodeError::Malformed(why) => why,
                        DecodeError::TrailersTooLarge => "trailers too large",
                    }));
                    self.break_off();
                    return Ok(());
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(self.read_buf_bytes);
            }
            match rd.read_buf(&mut self.buf).await {
                Ok(0) => {
                    tx.fail(BodyError::Incomplete);
                    self.break_off();
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    tx.fail(BodyError::Io(e));
                    self.break_off();
                    return Ok(());
                }
            }
        }
    }

    fn break_off(&mut self) {
        self.tx = None;
        self.broken = true;
    }

    /// After the response: can the next request be read from this connection? Only if the
    /// handler read the body to its end. A body it abandoned (a 413, a 401 before reading)
    /// closes the connection, as hyper does: skipping the rest would mean reading, unasked,
    /// whatever the client keeps sending.
    fn settle(&mut self) -> bool {
        self.tx = None;
        !self.broken && self.dec.is_done()
    }
}

/// Writes the response: head, then body frames, framed by `mode`. Cancel-safe: what is
/// pending stays in `out`/`tail` until written.
struct Writer {
    out: Vec<u8>,
    pos: usize,
    tail: Bytes,
    tail_pos: usize,
    suffix: &'static [u8],
    mode: Mode,
    /// Body bytes taken so far (checked against a declared length).
    sent: u64,
    ended: bool,
    /// False when the body broke off: the client cannot tell where it ended, so close.
    clean: bool,
}

impl Writer {
    /// A writer with the head already in `out`.
    fn new(out: Vec<u8>, mode: Mode) -> Self {
        Writer {
            out,
            pos: 0,
            tail: Bytes::new(),
            tail_pos: 0,
            suffix: b"",
            mode,
            sent: 0,
            ended: false,
            clean: true,
        }
    }

    /// Writes what is pending, or takes the next frames. `Ok(true)` when all is written.
    async fn step<I: AsyncWrite, B>(
        &mut self,
        wr: &mut WriteHalf<I>,
        mut body: std::pin::Pin<&mut B>,
        write_idle: std::time::Duration,
    ) -> io::Result<bool>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        if self.pending() {
            // A client that stopped reading: bounded here, not by the upstream's patience.
            tokio::time::timeout(write_idle, self.write_some(wr))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "client write idle timeout")
                })??;
            return Ok(false);
        }
        self.out.clear();
        self.pos = 0;
        self.tail = Bytes::new();
        self.tail_pos = 0;
        self.suffix = b"";
        if self.ended {
            return Ok(true);
        }
        // The first frame is waited for; more are taken only while ready, so a small
        // response is one write.
        let mut waited = false;
        while !self.ended && self.tail.is_empty() && self.out.len() < COALESCE {
            let frame = if waited {
                match futures_util::FutureExt::now_or_never(body.frame()) {
                    Some(f) => f,
                    None => break,
                }
            } else {
                waited = true;
                body.frame().await
            };
            self.take(frame);
        }
        Ok(false)
    }

    /// Takes the frames the body has ready now, without waiting: a response whose body came
    /// with its head (a small upstream answer, read in one go) goes out in one write with it.
    /// Without this the head went alone and the body after it: 3 writes per proxied request
    /// instead of 2 (`strace -c` under wrk), a syscall a request.
    fn take_ready<B>(&mut self, mut body: std::pin::Pin<&mut B>)
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        while !self.ended && self.tail.is_empty() && self.out.len() < COALESCE {
            match futures_util::FutureExt::now_or_never(body.frame()) {
                Some(frame) => self.take(frame),
                None => break,
            }
        }
    }

    fn take<E: Into<BoxError>>(&mut self, frame: Option<Result<http_body::Frame<Bytes>, E>>) {
        match frame {
            None => self.end(),
            Some(Err(e)) => {
                tracing::debug!(error = %e.into(), "response body failed mid-way");
                self.clean = false;
                self.ended = true;
            }
            Some(Ok(f)) => {
                // Trailers are not sent to HTTP/1.1 clients.
                if let Ok(data) = f.into_data() {
                    self.data(data);
                }
            }
        }
    }

    fn data(&mut self, mut data: Bytes) {
        if data.is_empty() {
            return;
        }
        match self.mode {
            Mode::None => return,
            Mode::Length(n) => {
                let room = n.saturating_sub(self.sent);
                if data.len() as u64 > room {
                    // More than declared: send what was promised, then close.
                    data.truncate(room as usize);
                    self.clean = false;
                    self.ended = true;
                }
            }
            Mode::Chunked => encode::chunk_size(&mut self.out, data.len()),
            Mode::Close => {}
        }
        self.sent += data.len() as u64;
        let suffix: &'static [u8] = if self.mode == Mode::Chunked {
            b"\r\n"
        } else {
            b""
        };
        if data.len() <= COALESCE {
            self.out.extend_from_slice(&data);
            self.out.extend_from_slice(suffix);
        } else {
            self.tail = data;
            self.suffix = suffix;
        }
    }

    fn end(&mut self) {
        self.ended = true;
        match self.mode {
            Mode::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
            Mode::Length(n) if self.sent < n => self.clean = false,
            _ => {}
        }
    }

    fn pending(&self) -> bool {
        self.pos < self.out.len() || self.tail_pos < self.tail.len() || !self.suffix.is_empty()
    }

    async fn write_some<I: AsyncWrite>(&mut self, wr: &mut WriteHalf<I>) -> io::Result<()> {
        let bufs = [
            io::IoSlice::new(&self.out[self.pos..]),
            io::IoSlice::new(&self.tail[self.tail_pos..]),
            io::IoSlice::new(self.suffix),
        ];
        let n = wr.write_vectored(&bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut n = n;
        let a = (self.out.len() - self.pos).min(n);
        self.pos += a;
        n -= a;
        let b = (self.tail.len() - self.tail_pos).min(n);
        self.tail_pos += b;
        n -= b;
        self.suffix = &self.suffix[n.min(self.suffix.len())..];
        Ok(())
    }
}

/// Closes without turning unread client bytes into a reset: our side is shut, then what the
/// client still sends is read and dropped, bounded in bytes and time.
pub(super) async fn linger_close<I: AsyncRead + AsyncWrite + Unpin>(mut io: I) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

pub(super) fn outcome_of(next: &Next) -> Option<Outcome> {
    match next {
        Next::Close => Some(Outcome::Closed),
        Next::TimedOut => Some(Outcome::HeaderTimeout),
        _ => None,
    }
}
