//! Between `http` types and WIT records, with every plugin output checked before it touches
//! the request: header names and values must be valid, counts and sizes stay under the
//! gateway's `[limits]`, statuses must be real. Invalid output is a plugin failure
//! (`bad-output`), never a panic and never a malformed message on the wire.

use super::api;
use super::view::RespData;
use super::{FilterState, OutputLimits};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use std::net::SocketAddr;

/// Metadata pairs a request may carry, and the size of each key or value.
const MAX_METADATA: usize = 64;
const MAX_METADATA_LEN: usize = 1024;

pub(super) fn headers_to_wit(h: &HeaderMap) -> Vec<api::Header> {
    h.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

pub(super) fn request(
    parts: &http::request::Parts,
    client: SocketAddr,
    route: Option<&str>,
    body: Option<&Bytes>,
    state: &FilterState,
) -> api::Request {
    api::Request {
        method: parts.method.as_str().to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string(),
        authority: crate::routing::request_host(parts)
            .unwrap_or_default()
            .to_string(),
        headers: headers_to_wit(&parts.headers),
        client_addr: client.to_string(),
        body: body.map(|b| b.to_vec()),
        metadata: state.metadata.clone(),
        route: route.unwrap_or_default().to_string(),
    }
}

fn header_pair(k: &str, v: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(k.as_bytes())
        .map_err(|_| format!("invalid header name {:?}", truncate(k)))?;
    let value =
        HeaderValue::from_str(v).map_err(|_| format!("invalid value for header `{name}`"))?;
    Ok((name, value))
}

/// Framing and hop-by-hop headers are the gateway's: a filter that set `content-length` or
/// `transfer-encoding` would make the head disagree with the body the gateway frames (found
/// by `plugin::fuzz`), and the hop-by-hop ones are removed at the boundary anyway. A change
/// that names one is the filter's `bad-output`, so its author hears about it.
fn refuse_framing(set: &[api::Header], remove: &[String]) -> Result<(), String> {
    const GATEWAY_OWNED: [&str; 8] = [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ];
    let mut names = set
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(remove.iter().map(String::as_str));
    match names.find(|n| GATEWAY_OWNED.iter().any(|g| g.eq_ignore_ascii_case(n))) {
        Some(n) => Err(format!(
            "header `{}` is framing or hop-by-hop: the gateway owns it",
            truncate(n)
        )),
        None => Ok(()),
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Applies removals, then sets (each replacing every value of its name), but only if the
/// result stays within the header limits: the result is sized first, so a change that is
/// refused leaves `h` exactly as it was, without copying `h` to get there.
fn edit_headers(
    h: &mut HeaderMap,
    remove: Vec<String>,
    set: Vec<api::Header>,
    limits: &OutputLimits,
) -> Result<(), String> {
    if set.len() > limits.max_headers || remove.len() > limits.max_headers {
        return Err(format!(
            "more header changes than the limit of {}",
            limits.max_headers
        ));
    }
    let mut staged = Vec::with_capacity(set.len());
    for (k, v) in &set {
        staged.push(header_pair(k, v)?);
    }
    let removed: Vec<HeaderName> = remove
        .iter()
        .filter_map(|r| HeaderName::from_bytes(r.as_bytes()).ok())
        .collect();
    let size = |k: &HeaderName, v: &HeaderValue| k.as_str().len() + v.len() + 4;
    let touched = |k: &HeaderName| removed.contains(k) || staged.iter().any(|(n, _)| n == k);
    let (mut count, mut bytes) = (0usize, 0usize);
    for (k, v) in h.iter().filter(|(k, _)| !touched(k)) {
        count += 1;
        bytes += size(k, v);
    }
    // Of several sets of one name, the last wins.
    for (i, (k, v)) in staged.iter().enumerate() {
        if staged[i + 1..].iter().all(|(n, _)| n != k) {
            count += 1;
            bytes += size(k, v);
        }
    }
    if count > limits.max_headers {
        return Err(format!(
            "{count} headers, more than the limit of {}",
            limits.max_headers
        ));
    }
    if bytes > limits.max_header_bytes {
        return Err(format!(
            "{bytes} header bytes, more than the limit of {}",
            limits.max_header_bytes
        ));
    }
    for n in removed {
        h.remove(n);
    }
    for (k, v) in staged {
        h.insert(k, v);
    }
    Ok(())
}

/// Applies an inbound filter's changes to the request head, its metadata and the filter
/// state, all or nothing.
pub(super) fn apply_request(
    parts: &mut http::request::Parts,
    metadata: &mut Vec<(String, String)>,
    state: &mut FilterState,
    ch: api::RequestChanges,
    limits: &OutputLimits,
) -> Result<(), String> {
    // Validate everything before changing anything: a bad change leaves the request as it was.
    refuse_framing(&ch.set_headers, &ch.remove_headers)?;
    let new_uri = match &ch.path {
        Some(p) => {
            if !p.starts_with('/') {
                return Err(format!("path {:?} does not start with `/`", truncate(p)));
            }
            // Parsed first, as a client's target is (a `#…` fragment is dropped there, which
            // could turn `/x/..#` into `/x/..`; found by `plugin::fuzz`), then normalized like
            // the client's path, or a filter would reopen the bypass that admission closed.
            // The query is left as the filter wrote it.
            let parsed: http::uri::PathAndQuery = p
                .parse()
                .map_err(|_| format!("invalid path {:?}", truncate(p)))?;
            let path = crate::core::identity::normalize_path(parsed.path(), &limits.path)
                .map_err(|e| format!("path {:?}: {}", truncate(p), e.reason()))?;
            let pq: http::uri::PathAndQuery = match (path, parsed.query()) {
                (std::borrow::Cow::Borrowed(_), _) => Ok(parsed.clone()),
                (path, Some(q)) => format!("{path}?{q}").parse(),
                (path, None) => path.parse(),
            }
            .map_err(|_| format!("invalid path {:?}", truncate(p)))?;
            let mut up = parts.uri.clone().into_parts();
            up.path_and_query = Some(pq);
            Some(http::Uri::from_parts(up).map_err(|e| format!("invalid path: {e}"))?)
        }
        None => None,
    };
    if metadata.len() + ch.metadata.len() > MAX_METADATA {
        return Err(format!("more than {MAX_METADATA} metadata pairs"));
    }
    if ch
        .metadata
        .iter()
        .any(|(k, v)| k.len() > MAX_METADATA_LEN || v.len() > MAX_METADATA_LEN)
    {
        return Err(format!(
            "metadata key or value over {MAX_METADATA_LEN} bytes"
        ));
    }
    edit_headers(
        &mut parts.headers,
        ch.remove_headers,
        ch.set_headers,
        limits,
    )?;
    if let Some(u) = new_uri {
        parts.uri = u;
    }
    if let Some(c) = ch.cluster {
        state.cluster = Some(c);
    }
    if let Some(p) = ch.priority {
        state.priority = Some(p);
    }
    metadata.extend(ch.metadata);
    Ok(())
}

/// Applies an outbound filter's changes to the response head, all or nothing.
pub(super) fn apply_response(
    head: &mut RespData,
    ch: api::ResponseChanges,
    limits: &OutputLimits,
) -> Result<(), String> {
    let status = match ch.status {
        Some(s) => Some(valid_status(s)?),
        None => None,
    };
    refuse_framing(&ch.set_headers, &ch.remove_headers)?;
    edit_headers(&mut head.headers, ch.remove_headers, ch.set_headers, limits)?;
    if let Some(s) = status {
        head.status = s;
    }
    Ok(())
}

fn valid_status(s: u16) -> Result<StatusCode, String> {
    match StatusCode::from_u16(s) {
        Ok(st) if (200..=599).contains(&s) => Ok(st),
        _ => Err(format!("invalid status {s}")),
    }
}

/// A complete response produced by a plugin (`respond`, or an endpoint's result).
pub(super) fn response(r: api::Response, limits: &OutputLimits) -> Result<Response<Bytes>, String> {
    let status = valid_status(r.status)?;
    if r.body.len() > limits.max_body_bytes {
        return Err(format!(
            "response body of {} bytes, more than the limit of {}",
            r.body.len(),
            limits.max_body_bytes
        ));
    }
    let mut h = HeaderMap::new();
    edit_headers(&mut h, Vec::new(), r.headers, limits)?;
    // Framing is the gateway's job: a plugin cannot lie about the body length.
    crate::core::headers::strip_hop_by_hop(&mut h);
    h.remove(http::header::CONTENT_LENGTH);
    let mut resp = Response::new(Bytes::from(r.body));
    *resp.status_mut() = status;
    *resp.headers_mut() = h;
    Ok(resp)
}

/// The gateway's answer to a `reject`: `reason` as a `text/plain` body, stamped
/// `portcullis-error: plugin-rejected`. The rejection's own headers (WIT 0.2.0) are added by
/// [`rejection_headers`].
pub(super) fn rejection(rj: &api::Rejection) -> Response<Bytes> {
    let status = match StatusCode::from_u16(rj.status) {
        Ok(s) if (400..=599).contains(&rj.status) => s,
        _ => StatusCode::FORBIDDEN,
    };
    let reason: String = rj
        .reason
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect();
    let mut resp = Response::new(Bytes::from(format!("{reason}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        crate::core::headers::PORTCULLIS_ERROR.clone(),
        HeaderValue::from_static("plugin-rejected"),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Adds a rejection's headers to its answer, all or nothing, checked like a response's. The
/// stamp and the content type are the gateway's: naming one, or a framing header, is the
/// filter's bad output (and the answer keeps none of the headers).
pub(super) fn rejection_headers(
    resp: &mut Response<Bytes>,
    headers: Vec<api::Header>,
    limits: &OutputLimits,
) -> Result<(), String> {
    if headers.is_empty() {
        return Ok(());
    }
    refuse_framing(&headers, &[])?;
    let owned = [
        crate::core::headers::PORTCULLIS_ERROR.as_str(),
        http::header::CONTENT_TYPE.as_str(),
    ];
    if let Some((n, _)) = headers
        .iter()
        .find(|(n, _)| owned.iter().any(|o| o.eq_ignore_ascii_case(n)))
    {
        return Err(format!(
            "rejection header `{}` is the gateway's",
            truncate(n)
        ));
    }
    edit_headers(resp.headers_mut(), Vec::new(), headers, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OutputLimits = OutputLimits {
        max_headers: 4,
        max_header_bytes: 200,
        max_body_bytes: 1024,
        path: crate::core::identity::PathPolicy::DEFAULT,
    };

    fn head(pairs: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::get("http://a.example/x");
        for (k, v) in pairs {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn set(pairs: &[(&str, &str)]) -> api::RequestChanges {
        api::RequestChanges {
            set_headers: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove_headers: Vec::new(),
            path: None,
            cluster: None,
            priority: None,
            metadata: Vec::new(),
        }
    }

    fn names(p: &http::request::Parts) -> Vec<String> {
        p.headers
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
            .collect()
    }

    /// A filter's path goes through the client's normalization, or a filter could reopen the
    /// bypass admission closed; the query stays as the filter wrote it.
    #[test]
    fn a_path_a_filter_sets_is_normalized_and_its_query_kept() {
        let (mut meta, mut st) = (Vec::new(), FilterState::default());
        let mut p = head(&[]);
        let mut ch = set(&[]);
        ch.path = Some("/public/../%61dmin//x?q=%2e%2e//".into());
        apply_request(&mut p, &mut meta, &mut st, ch, &LIMITS).unwrap();
        assert_eq!(
            p.uri.path_and_query().map(|pq| pq.as_str()),
            Some("/admin/x?q=%2e%2e//")
        );
        let mut ch = set(&[]);
        ch.path = Some("/../etc".into());
        let err = apply_request(&mut p, &mut meta, &mut st, ch, &LIMITS).unwrap_err();
        assert!(err.contains("above the root"), "{err}");
        assert_eq!(
            p.uri.path(),
            "/admin/x",
            "a refused change leaves the request as it was"
        );
    }

    #[test]
    fn a_change_over_the_header_count_leaves_the_request_as_it_was() {
        let mut p = head(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let before = names(&p);
        let (mut meta, mut st) = (Vec::new(), FilterState::default());
        let err = apply_request(
            &mut p,
            &mut meta,
            &mut st,
            set(&[("d", "4"), ("e", "5")]),
            &LIMITS,
        )
        .unwrap_err();
        assert!(err.contains("5 headers"), "{err}");
        assert_eq!(names(&p), before);
    }

    #[test]
    fn a_change_over_the_header_bytes_leaves_the_request_as_it_was() {
        let mut p = head(&[("a", "1")]);
        let (mut meta, mut st) = (Vec::new(), FilterState::default());
        let big = "v".repeat(300);
        let err =
            apply_request(&mut p, &mut meta, &mut st, set(&[("b", &big)]), &LIMITS).unwrap_err();
        assert!(err.contains("header bytes"), "{err}");
        assert_eq!(names(&p), vec!["a=1"]);
    }

    #[test]
    fn replacing_and_removing_headers_is_sized_as_the_result() {
        // At the limit of 4 already: replacing a name (all its values) and removing one keeps
        // the result at 4, so the change is allowed.
        let mut p = head(&[("a", "1"), ("a", "2"), ("b", "3"), ("c", "4")]);
        let (mut meta, mut st) = (Vec::new(), FilterState::default());
        let mut ch = set(&[("a", "x"), ("d", "first"), ("d", "last")]);
        ch.remove_headers = vec!["b".into()];
        apply_request(&mut p, &mut meta, &mut st, ch, &LIMITS).unwrap();
        let mut got = names(&p);
        got.sort();
        assert_eq!(got, vec!["a=x", "c=4", "d=last"]);
    }

    #[test]
    fn an_invalid_header_changes_nothing() {
        let mut p = head(&[("a", "1")]);
        let (mut meta, mut st) = (Vec::new(), FilterState::default());
        let mut ch = set(&[("ok", "1"), ("bad name", "v")]);
        ch.metadata = vec![("k".into(), "v".into())];
        assert!(apply_request(&mut p, &mut meta, &mut st, ch, &LIMITS).is_err());
        assert_eq!(names(&p), vec!["a=1"]);
        assert!(meta.is_empty());
    }

    fn rejected(headers: &[(&str, &str)]) -> Result<Response<Bytes>, String> {
        let rj = api::Rejection {
            status: 401,
            reason: "no\u{7}pe".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut resp = rejection(&rj);
        rejection_headers(&mut resp, rj.headers, &LIMITS)?;
        Ok(resp)
    }

    /// WIT 0.2.0: a rejection's own headers are sent next to the gateway's stamp.
    #[test]
    fn a_rejection_carries_its_headers_and_the_gateways_stamp() {
        let r = rejected(&[("www-authenticate", "Bearer")]).unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(r.headers()["portcullis-error"], "plugin-rejected");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(&r.body()[..], b"nope\n", "control characters dropped");
        let r = rejected(&[]).unwrap();
        assert_eq!(r.headers().len(), 2, "a 0.1.0 rejection: the stamp alone");
    }

    #[test]
    fn a_rejection_cannot_set_the_gateways_headers() {
        for bad in [
            ("portcullis-error", "none"),
            ("Content-Type", "text/html"),
            ("content-length", "1"),
            ("bad name", "v"),
        ] {
            let err = rejected(&[bad]).unwrap_err();
            assert!(!err.is_empty(), "{bad:?}");
            // What the chain answers then: the refusal, without the refused headers.
            let rj = api::Rejection {
                status: 401,
                reason: "no".into(),
                headers: vec![(bad.0.to_string(), bad.1.to_string())],
            };
            let mut resp = rejection(&rj);
            assert!(rejection_headers(&mut resp, rj.headers, &LIMITS).is_err());
            assert_eq!(resp.headers().len(), 2, "{bad:?}: unchanged");
            assert_eq!(resp.headers()["portcullis-error"], "plugin-rejected");
        }
    }
}
