//! WebSocket: the upgrade and the tunnel after it.
//!
//! A WebSocket starts as a request: HTTP/1.1 `GET` with `Connection: upgrade` and `Upgrade:
//! websocket`, or HTTP/2 extended CONNECT with `:protocol = websocket` (RFC 8441). It goes
//! through admission, shedding, inbound filters (so authentication applies) and routing like
//! any request. A route with `websocket = false` refuses it (403 `websocket-refused`). Then the
//! upgrade goes to an HTTP/1.1 endpoint of the cluster as `Upgrade: websocket` (an HTTP/2
//! client's CONNECT is translated: the upstream gets a `Sec-WebSocket-Key` made here, and the
//! client a 200 instead of the 101).
//!
//! The request ends at the upstream's 101: request timing, shedding and the cluster's
//! concurrency slot stop there (`UPGRADED`). A tunnel task then copies bytes both ways,
//! bounded by `tunnel_idle_ms`, the listener's `max_tunnels` and the drain; when it ends, its
//! end state (`TUNNEL_CLOSED`, `TUNNEL_IDLE_TIMEOUT`, `TUNNEL_DRAINED`, `TUNNEL_ERROR`) is
//! stamped, its duration and bytes go to the tunnel metrics, and the passport is finished.

use super::{Answer, ConnInfo, Exchange, Finisher, RespBody, Services};
use crate::config::UpstreamProtocol;
use crate::core::failure::Failure;
use crate::core::headers::{self, X_REQUEST_ID};
use crate::core::passport::State;
use crate::upstream::client::{self, Answered, Body, Policy};
use crate::upstream::pool::Conn;
use crate::upstream::Cluster;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use hyper::upgrade::OnUpgrade;

/// The client's side of an upgrade: from hyper (HTTP/2 extended CONNECT, or HTTP/1.1 when
/// `[http] http1_server = "hyper"`) or from our own HTTP/1.1 codec.
pub(crate) enum ClientUpgrade {
    Hyper(OnUpgrade),
    Own(crate::h1::OnUpgrade),
}

impl ClientUpgrade {
    fn take(ext: &mut http::Extensions) -> Option<Self> {
        if let Some(u) = ext.remove::<OnUpgrade>() {
            return Some(ClientUpgrade::Hyper(u));
        }
        ext.remove::<crate::h1::OnUpgrade>().map(ClientUpgrade::Own)
    }

    /// The client's stream once the answer to the upgrade has been written.
    async fn connection(self) -> std::io::Result<Box<dyn crate::h1::Io>> {
        match self {
            ClientUpgrade::Hyper(u) => match u.await {
                Ok(up) => Ok(Box::new(TokioIo::new(up))),
                Err(e) => Err(std::io::Error::other(e)),
            },
            ClientUpgrade::Own(u) => Ok(Box::new(u.get().await?)),
        }
    }
}
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};

/// Per-direction copy buffer: a tunnel holds two.
const BUF: usize = 16 * 1024;
/// Once one side closed, how long the other gets to close too.
const LINGER: Duration = Duration::from_secs(2);

/// The gateway's open tunnels, counted for the drain: listeners stop, then the gateway waits
/// for the tunnels, which close at their generation's deadline ([`Services::tunnel_drain`]).
#[derive(Debug)]
pub struct Tunnels {
    open: AtomicUsize,
    none_open: Notify,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            open: AtomicUsize::new(0),
            none_open: Notify::new(),
        }
    }
}

impl Tunnels {
    /// Tunnels open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Returns once no tunnel is open.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.none_open.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// How the client asked for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// HTTP/1.1 `Upgrade: websocket`; the client gets the upstream's 101.
    H1,
    /// HTTP/2 extended CONNECT (RFC 8441); the client gets 200.
    H2,
}

/// Whether the head asks for a WebSocket.
pub(crate) fn requested(parts: &http::request::Parts) -> Option<Kind> {
    if parts.version == http::Version::HTTP_2 {
        let p = parts.extensions.get::<hyper::ext::Protocol>()?;
        let ws = parts.method == Method::CONNECT && p.as_str().eq_ignore_ascii_case("websocket");
        return ws.then_some(Kind::H2);
    }
    let has = |name: header::HeaderName, token: &str| {
        parts.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|l| l.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let ws = parts.version == http::Version::HTTP_11
        && parts.method == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket");
    ws.then_some(Kind::H1)
}

/// An upstream that switched protocols, and everything the tunnel needs.
pub(crate) struct Upgrade {
    answered: Box<Answered>,
    client: ClientUpgrade,
    slot: Slot,
    kind: Kind,
}

impl Exchange<'_> {
    /// Sends a WebSocket upgrade to `cluster`. `Answer::Upgraded` when the upstream switched
    /// protocols; its other answers (a 403, a 400) go back as ordinary responses.
    pub(super) async fn upgrade(&mut self, cluster: Arc<Cluster>, kind: Kind) -> Answer {
        let Some(route) = self.route else {
            return Answer::Failed(Failure::NoRoute);
        };
        if !route.websocket {
            return Answer::Failed(Failure::WebsocketRefused);
        }
        let h1 = cluster.endpoints.protocol() == UpstreamProtocol::H1;
        // hyper hands the client's connection over only where it can (not over HTTP/3).
        let client = ClientUpgrade::take(&mut self.parts.extensions);
        let (true, Some(client)) = (h1, client) else {
            return Answer::Failed(Failure::UpgradeUnsupported);
        };
        let Some(slot) = Slot::take(self.svc, self.conn, kind) else {
            return Answer::Failed(Failure::TunnelLimit);
        };
        self.f.cluster = Some(cluster.name.clone());
        let t = route.timeouts;
        let deadline = self.deadline();
        let priority = self.filters.priority.unwrap_or(route.priority);
        let policy = Policy::for_request(
            &Method::GET,
            &route.retry,
            t.connect,
            t.upstream_headers,
            deadline,
            priority,
        );
        let mut head = self.upstream_head(deadline);
        head.method = Method::GET;
        let h = &mut head.headers;
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if kind == Kind::H2 {
            h.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
            h.entry(header::SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
        let body = Body::Replayable(Bytes::new());
        match client::send(&cluster, head, body, &policy, &mut self.f).await {
            Ok(a) if a.response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                Answer::Upgraded(Box::new(Upgrade {
                    answered: a,
                    client,
                    slot,
                    kind,
                }))
            }
            Ok(a) => Answer::Upstream(a),
            Err(why) => Answer::Failed(why),
        }
    }

    /// Answers the client's upgrade (101, or 200 to an HTTP/2 CONNECT) after outbound
    /// filters, ends the request, and starts the tunnel.
    pub(super) async fn respond_upgraded(&mut self, u: Upgrade) -> Response<RespBody> {
        let Upgrade {
            answered: mut a,
            client,
            slot,
            kind,
        } = u;
        let upstream = a.response.body_mut().take_upgraded();
        let (mut rparts, _) = a.response.into_parts();
        self.f.passport.stamp_at(State::RespHeadersReceived, a.at);
        let h = &mut rparts.headers;
        headers::strip_hop_by_hop(h);
        let expected = match kind {
            Kind::H1 => {
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                StatusCode::SWITCHING_PROTOCOLS
            }
            Kind::H2 => {
                h.remove(header::SEC_WEBSOCKET_ACCEPT);
                rparts.status = StatusCode::OK;
                StatusCode::OK
            }
        };
        headers::add_via(h, http::Version::HTTP_11);
        if let Some(id) = &self.f.request_id {
            h.insert(X_REQUEST_ID.clone(), id.clone());
        }
        if let Err(why) = self.outbound(&mut rparts, false).await {
            return self.respond_unfiltered(why);
        }
        self.f.status = rparts.status.as_u16();
        self.f.passport.stamp(State::RespHeadersSent);
        if rparts.status != expected {
            // An outbound filter turned the upgrade into a refusal: no tunnel.
            self.f.complete();
            return Response::from_parts(rparts, RespBody::Full(None));
        }
        self.f.passport.stamp(State::Upgraded);
        // The request is over: its shedding permit, cluster slot and retry budget go back.
        // The upstream connection stays with the tunnel (it still counts in its pool).
        drop(a.permits);
        self.f.permits.clear();
        self.f.retry_permits.clear();
        let idle = self.route.map_or(
            Duration::from_millis(self.svc.timeouts.tunnel_idle_ms),
            |r| r.timeouts.tunnel_idle,
        );
        let tunnel = Tunnel {
            client,
            upstream,
            _upstream_conn: a.conn,
            _slot: slot,
            idle,
            drain: self.svc.tunnel_drain.subscribe(),
            finisher: self.f.take(),
        };
        tokio::spawn(tunnel.run());
        Response::from_parts(rparts, RespBody::Full(None))
    }
}

/// A random `Sec-WebSocket-Key` (RFC 6455 §4.1: 16 random bytes, base64).
fn websocket_key() -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = fastrand::u128(..).to_be_bytes();
    let mut out = [b'='; 24];
    for (i, chunk) in raw.chunks(3).enumerate() {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (j, b)| n | u32::from(*b) << (16 - 8 * j));
        for k in 0..=chunk.len() {
            out[i * 4 + k] = B64[(n >> (18 - 6 * k) & 63) as usize];
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// One open tunnel's place on its listener (`max_tunnels`) and in the gateway's count (drain).
/// An HTTP/1.1 tunnel took its client connection out of hyper, so it also counts that
/// connection against the listener's `max_connections` itself.
struct Slot {
    svc: Arc<Services>,
    listener: Arc<crate::telemetry::ListenerMetrics>,
    connection: bool,
}

impl Slot {
    fn take(svc: &Arc<Services>, conn: &ConnInfo, kind: Kind) -> Option<Slot> {
        let m = &conn.listener;
        let was = m.tunnels_active.fetch_add(1, Ordering::AcqRel);
        if was >= conn.max_tunnels as i64 {
            m.tunnels_active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let connection = kind == Kind::H1;
        if connection {
            m.active.fetch_add(1, Ordering::Relaxed);
        }
        svc.tunnels.open.fetch_add(1, Ordering::AcqRel);
        Some(Slot {
            svc: svc.clone(),
            listener: conn.listener.clone(),
            connection,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let m = &self.listener;
        m.tunnels_active.fetch_sub(1, Ordering::AcqRel);
        if self.connection {
            m.active.fetch_sub(1, Ordering::Relaxed);
        }
        if self.svc.tunnels.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.svc.tunnels.none_open.notify_waiters();
        }
    }
}

/// How a tunnel ended; the index is `telemetry::TUNNEL_ENDS`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed = 0,
    IdleTimeout = 1,
    Drained = 2,
    Error = 3,
}

impl End {
    fn state(self) -> State {
        match self {
            End::Closed => State::TunnelClosed,
            End::IdleTimeout => State::TunnelIdleTimeout,
            End::Drained => State::TunnelDrained,
            End::Error => State::TunnelError,
        }
    }
}

struct Tunnel {
    client: ClientUpgrade,
    /// The upstream's connection after its 101 (`None`: it was not an HTTP/1.1 one).
    upstream: Option<crate::h1::Upgraded>,
    /// Kept open (and counted in its pool) for the tunnel's life, never pooled again.
    _upstream_conn: Conn,
    _slot: Slot,
    idle: Duration,
    drain: watch::Receiver<Option<Instant>>,
    /// The request's passport, finished when the tunnel ends; it keeps the client connection
    /// busy meanwhile, so the listener's keep-alive idle timeout does not cut the tunnel.
    finisher: Finisher,
}

impl Tunnel {
    async fn run(mut self) {
        let started = Instant::now();
        // hyper hands over both connections once the 101 is written; bounded like silence.
        let ios = tokio::time::timeout(self.idle, async {
            let client = self.client.connection().await?;
            let upstream = self
                .upstream
                .take()
                .ok_or_else(|| std::io::Error::other("upstream connection not upgraded"))?;
            Ok::<_, std::io::Error>((client, upstream))
        })
        .await;
        let (end, up, down) = match ios {
            Ok(Ok((client, upstream))) => pump(client, upstream, self.idle, &mut self.drain).await,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed after the 101");
                (End::Error, 0, 0)
            }
            Err(_) => (End::IdleTimeout, 0, 0),
        };
        let lived = started.elapsed();
        let svc = self.finisher.svc.clone();
        svc.metrics.tunnels.record(end as usize, up, down, lived);
        tracing::debug!(
            request_id = ?self.finisher.request_id,
            end = ?end,
            up, down,
            lived_ms = lived.as_millis() as u64,
            "WebSocket tunnel ended"
        );
        self.finisher.tunnel = Some(Box::new(crate::telemetry::TunnelStats {
            lived,
            bytes_in: up,
            bytes_out: down,
            end: crate::telemetry::TUNNEL_ENDS[end as usize],
        }));
        self.finisher.passport.stamp(end.state());
        self.finisher.finish();
    }
}

/// Copies bytes both ways until both sides closed (or one did and the other lingered past
/// `LINGER`), nothing moved for `idle`, a write stalled for `idle`, an I/O error, or the drain
/// deadline. Returns how it ended and the bytes sent up and down.
///
/// At the drain deadline each side gets a WebSocket close frame, 1001 "going away", written
/// at a frame boundary of its direction (the frames are followed, never buffered), so
/// clients see a clean close they reconnect after; past `LINGER` the tunnel is cut anyway.
async fn pump<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    drain: &mut watch::Receiver<Option<Instant>>,
) -> (End, u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let (mut cbuf, mut ubuf) = (vec![0u8; BUF], vec![0u8; BUF]);
    let (mut up, mut down) = (0u64, 0u64);
    let (mut client_open, mut upstream_open) = (true, true);
    // Frame boundaries of each direction, and whether it got its close frame.
    let (mut up_frames, mut down_frames) = (Frames::default(), Frames::default());
    let (mut draining, mut closed_up, mut closed_down) = (false, false, false);
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let drained = drain_deadline(drain);
    tokio::pin!(drained);
    loop {
        if !client_open && !upstream_open {
            return (End::Closed, up, down);
        }
        let step = tokio::select! {
            r = cr.read(&mut cbuf), if client_open && !closed_up => {
                if let Ok(n) = r { up_frames.feed(&cbuf[..n]); }
                copy_step(r, &cbuf, &mut uw, idle, &mut up, &mut client_open).await
            }
            r = ur.read(&mut ubuf), if upstream_open && !closed_down => {
                if let Ok(n) = r { down_frames.feed(&ubuf[..n]); }
                copy_step(r, &ubuf, &mut cw, idle, &mut down, &mut upstream_open).await
            }
            _ = &mut timer => {
                if draining {
                    return (End::Drained, up, down);
                }
                let half_closed = !client_open || !upstream_open;
                return (if half_closed { End::Closed } else { End::IdleTimeout }, up, down);
            }
            _ = &mut drained, if !draining => {
                draining = true;
                timer.as_mut().reset((Instant::now() + LINGER).into());
                Ok(())
            }
        };
        if let Err(end) = step {
            return (end, up, down);
        }
        if draining {
            if !closed_down && down_frames.at_boundary() {
                closed_down = true;
                let _ = tokio::time::timeout(LINGER, write_close(&mut cw, false)).await;
            }
            if !closed_up && up_frames.at_boundary() {
                closed_up = true;
                let _ = tokio::time::timeout(LINGER, write_close(&mut uw, true)).await;
            }
            if closed_up && closed_down {
                return (End::Drained, up, down);
            }
            continue;
        }
        let wait = if client_open && upstream_open {
            idle
        } else {
            idle.min(LINGER)
        };
        timer.as_mut().reset((Instant::now() + wait).into());
    }
}

/// A WebSocket close frame with status 1001 (going away): masked toward the upstream, as
/// frames from a client must be (RFC 6455 §5.3).
async fn write_close<W: AsyncWrite + Unpin>(to: &mut W, masked: bool) -> std::io::Result<()> {
    let code = 1001u16.to_be_bytes();
    if masked {
        let m = fastrand::u32(..).to_be_bytes();
        let frame = [
            0x88,
            0x82,
            m[0],
            m[1],
            m[2],
            m[3],
            code[0] ^ m[0],
            code[1] ^ m[1],
        ];
        to.write_all(&frame).await?;
    } else {
        to.write_all(&[0x88, 0x02, code[0], code[1]]).await?;
    }
    to.flush().await
}

/// Follows WebSocket frame boundaries in one direction's byte stream: the frame headers are
/// parsed as bytes pass, the payloads only counted.
#[derive(Default)]
struct Frames {
    /// Payload bytes left in the current frame.
    need: u64,
    /// A frame header being read (at most 14 bytes), and how much of it came.
    head: [u8; 14],
    have: usize,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.need == 0 && self.have == 0
    }

    fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.need > 0 {
                let take = self.need.min(b.len() as u64);
                self.need -= take;
                b = &b[take as usize..];
                continue;
            }
            self.head[self.have] = b[0];
            self.have += 1;
            b = &b[1..];
            if let Some(len) = self.header_done() {
                self.need = len;
                self.have = 0;
            }
        }
    }

    /// The payload length once the header is complete.
    fn header_done(&self) -> Option<u64> {
        let h = &self.head[..self.have];
        if h.len() < 2 {
            return None;
        }
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        let (ext, len) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        if h.len() < 2 + ext + mask {
            return None;
        }
        let len = len.unwrap_or_else(|| {
            h[2..2 + ext]
                .iter()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
        });
        Some(len)
    }
}

/// One read's result passed on: data written to the other side (bounded by `idle`), or an
/// end of stream passed on as a write shutdown.
async fn copy_step<W: AsyncWrite + Unpin>(
    read: std::io::Result<usize>,
    buf: &[u8],
    to: &mut W,
    idle: Duration,
    count: &mut u64,
    open: &mut bool,
) -> Result<(), End> {
    match read {
        Ok(0) => {
            *open = false;
            let _ = tokio::time::timeout(idle.min(LINGER), to.shutdown()).await;
            Ok(())
        }
        Ok(n) => {
            let write = async {
                to.write_all(&buf[..n]).await?;
                to.flush().await
            };
            match tokio::time::timeout(idle, write).await {
                Ok(Ok(())) => {
                    *count += n as u64;
                    Ok(())
                }
                Ok(Err(_)) => Err(End::Error),
                Err(_) => Err(End::IdleTimeout),
            }
        }
        Err(_) => Err(End::Error),
    }
}

/// Resolves at the drain deadline, once one is set.
async fn drain_deadline(rx: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let at = *rx.borrow_and_update();
        if let Some(at) = at {
            tokio::time::sleep_until(at.into()).await;
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: http::Version, method: Method, h: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder()
            .version(version)
            .method(method)
            .uri("/ws");
        for (k, v) in h {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn websocket_upgrades_are_recognised() {
        use http::Version as V;
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert_eq!(
            requested(&head(V::HTTP_11, Method::GET, &ws)),
            Some(Kind::H1)
        );
        assert_eq!(requested(&head(V::HTTP_11, Method::POST, &ws)), None);
        assert_eq!(requested(&head(V::HTTP_10, Method::GET, &ws)), None);
        let h2c = [("connection", "upgrade"), ("upgrade", "h2c")];
        assert_eq!(requested(&head(V::HTTP_11, Method::GET, &h2c)), None);
        assert_eq!(requested(&head(V::HTTP_11, Method::GET, &ws[1..])), None);
        let mut p = head(V::HTTP_2, Method::CONNECT, &[]);
        assert_eq!(requested(&p), None);
        p.extensions
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(requested(&p), Some(Kind::H2));
    }

    #[test]
    fn websocket_keys_are_16_bytes_of_base64() {
        let k = websocket_key();
        let k = k.to_str().unwrap();
        assert_eq!(k.len(), 24);
        assert!(k.ends_with("=="), "{k}");
        assert!(k[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
        assert_ne!(websocket_key(), websocket_key());
    }

    /// A frame as a client (masked) or server (unmasked) would send it.
    fn frame(len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, len));
        f
    }

    #[test]
    fn frame_boundaries_are_followed_across_any_split() {
        let sizes = [0usize, 1, 125, 126, 300, 65535, 65536, 70_000];
        for masked in [false, true] {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for &n in &sizes {
                stream.extend(frame(n, masked));
                ends.push(stream.len());
            }
            for chunk in [1usize, 2, 3, 7, 1000, 16 * 1024] {
                let mut f = Frames::default();
                for (i, piece) in stream.chunks(chunk).enumerate() {
                    f.feed(piece);
                    let end = (i * chunk + piece.len()).min(stream.len());
                    assert_eq!(
                        f.at_boundary(),
                        ends.contains(&end),
                        "masked={masked} chunk={chunk} at {end}"
                    );
                }
                let mut whole = Frames::default();
                whole.feed(&stream);
                assert!(whole.at_boundary());
                let mut cut = Frames::default();
                cut.feed(&stream[..stream.len() - 1]);
                assert!(!cut.at_boundary());
            }
        }
    }
}
