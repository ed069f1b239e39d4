//! The operator dashboard at `GET /` on the admin listener: one page whose assets are
//! compiled into the binary (nothing is fetched from elsewhere), fed live by Server-Sent
//! Events from [`feed`]. Everything is drawn in the browser, in plain SVG.
//!
//! The page itself is code with no data in it; every data request (the feed, the plugin
//! list, uploads) goes through the admin listener's token model, the feed by the session
//! cookie of [`session`].

pub(crate) mod feed;
pub(crate) mod session;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;

/// What the admin listener answers with: whole bodies, or the feed's stream.
pub(crate) type AdminBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Strict by construction: the page loads only its own script and style, and no one may
/// frame it (clickjacking an upload form).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn hardened(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The page and its assets, by path.
pub(crate) fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, ctype) = match path {
        "/" | "/dashboard" | "/dashboard/" => (INDEX, "text/html; charset=utf-8"),
        "/dashboard/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/dashboard/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(hardened(r))
}

/// `GET /dashboard/feed`: the history, then one event a second until the viewer leaves or
/// the gateway shuts down.
pub(crate) fn sse(
    feed: &Arc<feed::Feed>,
    live: &Arc<crate::reload::Live>,
    shutdown: watch::Receiver<bool>,
) -> Response<AdminBody> {
    let Some((viewer, first)) = feed.watch(live) else {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"too many dashboard viewers\n",
        )));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r.map(|b| b.boxed_unsync());
    };
    let state = (viewer, Some(first), shutdown);
    let stream = futures_util::stream::unfold(state, |(mut v, first, mut stop)| async move {
        if let Some(f) = first {
            return Some((Ok::<_, Infallible>(Frame::data(f)), (v, None, stop)));
        }
        loop {
            tokio::select! {
                changed = v.rx.changed() => changed.ok()?,
                _ = stop.changed() => return None,
            }
            let next = v.rx.borrow_and_update().clone();
            if let Some(b) = next {
                return Some((Ok(Frame::data(b)), (v, None, stop)));
            }
        }
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
