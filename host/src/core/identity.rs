//! The request's identity, fixed once at admission: one normalized path, exactly one host,
//! unambiguous framing.
//!
//! Routes, filter `[match]`es, plugins (`req.path()`), the passport, the access log and the
//! upstream all read the values this module produces, so a filter that guards `/admin` can
//! never be walked around by `/./admin`, `//admin` or `/%61dmin` (the class of Envoy's
//! CVE-2019-9901, where the filter chain matched one path and the upstream served another).
//!
//! Path normalization runs in a fixed order, so its result is a fixed point (normalizing it
//! again changes nothing):
//!
//! 1. percent-decoding of unreserved characters (RFC 3986 §2.3, §6.2.2.2); other escapes get
//!    upper-case hex digits (§6.2.2.1); `%2F` / `%5C` follow [`EscapedSlashes`];
//! 2. merging of repeated slashes (not an RFC rule: most upstream frameworks do it, so a
//!    gateway that does not sees a different path than the upstream);
//! 3. dot-segment removal (RFC 3986 §5.2.4). A path that climbs above the root is refused,
//!    not clamped, and so is a `.` or `..` segment carrying `;` parameters (`/..;x/`, the
//!    Tomcat-style bypass).
//!
//! The query string is never changed. The common case (a path with no `%`, no `//`, no dot
//! segment) is checked in one scan and allocates nothing.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` (encoded `/` and `\`) in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Forward them encoded (hex upper-cased): they are not separators, so `/a%2Fb` is one
    /// segment to routes, filters and the upstream alike.
    #[default]
    Keep,
    /// Refuse the request with 400.
    Reject,
    /// Decode both to `/` before slashes are merged and dot segments removed, for upstreams
    /// that would decode them into separators themselves.
    Unescape,
}

/// How paths are normalized; from `[http]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// Decode unreserved escapes and remove dot segments.
    pub normalize: bool,
    /// Merge runs of `/` into one.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl PathPolicy {
    /// The defaults: normalize, merge slashes, keep encoded slashes.
    pub const DEFAULT: PathPolicy = PathPolicy {
        normalize: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::Keep,
    };
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy::DEFAULT
    }
}

/// Why a request head was refused at admission. Each becomes a 400 `bad-request` whose body
/// is [`BadHead::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHead {
    PathNotAbsolute,
    BadPercentEncoding,
    EscapedSlash,
    AboveRoot,
    DotSegmentParameters,
    InvalidPath,
    DuplicateHost,
    MissingHost,
    InvalidHost,
    AuthorityMismatch,
    LengthWithChunked,
}

impl BadHead {
    /// One line that tells the client what to fix.
    pub fn reason(self) -> &'static str {
        match self {
            BadHead::PathNotAbsolute => "the request path must start with `/`",
            BadHead::BadPercentEncoding => "the path has an invalid percent-encoding",
            BadHead::EscapedSlash => {
                "the path has an encoded slash (%2F or %5C), which this gateway refuses"
            }
            BadHead::AboveRoot => "the path climbs above the root with `..`",
            BadHead::DotSegmentParameters => {
                "the path has a `.` or `..` segment with `;` parameters"
            }
            BadHead::InvalidPath => "the normalized path is not a valid request target",
            BadHead::DuplicateHost => "the request has more than one Host header",
            BadHead::MissingHost => "an HTTP/1.1 request must have a Host header",
            BadHead::InvalidHost => "the Host header is not a valid authority",
            BadHead::AuthorityMismatch => "the Host header disagrees with the request's authority",
            BadHead::LengthWithChunked => {
                "the request has both Content-Length and Transfer-Encoding"
            }
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` may need work under `policy`: one scan for `%`, `//`, `/.` and `;`.
fn needs_work(path: &[u8], policy: &PathPolicy) -> bool {
    let mut prev = 0u8;
    for &b in path {
        match b {
            b'%' if policy.normalize || policy.escaped_slashes != EscapedSlashes::Keep => {
                return true
            }
            b'/' if prev == b'/' && policy.merge_slashes => return true,
            b'.' if prev == b'/' && policy.normalize => return true,
            _ => {}
        }
        prev = b;
    }
    false
}

/// Normalizes a request path (without its query) under `policy`. Returns the input itself
/// when nothing changes, which is the common case.
pub(crate) fn normalize_path<'a>(
    path: &'a str,
    policy: &PathPolicy,
) -> Result<Cow<'a, str>, BadHead> {
    if !path.starts_with('/') {
        return Err(BadHead::PathNotAbsolute);
    }
    if !needs_work(path.as_bytes(), policy) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Escapes.
    let decoded = decode_escapes(path.as_bytes(), policy)?;
    // 2. Slashes.
    let merged = if policy.merge_slashes {
        merge_slashes(decoded)
    } else {
        decoded
    };
    // 3. Dot segments.
    let out = if policy.normalize {
        remove_dot_segments(&merged)?
    } else {
        merged
    };
    // Only ASCII went in (the http crate's paths are visible ASCII) and only ASCII comes out.
    let out = String::from_utf8(out).map_err(|_| BadHead::InvalidPath)?;
    if out == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(out))
    }
}

fn decode_escapes(p: &[u8], policy: &PathPolicy) -> Result<Vec<u8>, BadHead> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            p.get(i + 1).copied().and_then(hex),
            p.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(BadHead::BadPercentEncoding);
        };
        let c = h << 4 | l;
        i += 3;
        if c == b'/' || c == b'\\' {
            match policy.escaped_slashes {
                EscapedSlashes::Reject => return Err(BadHead::EscapedSlash),
                EscapedSlashes::Unescape => {
                    out.push(b'/');
                    continue;
                }
                EscapedSlashes::Keep => {}
            }
        } else if policy.normalize && is_unreserved(c) {
            out.push(c);
            continue;
        }
        if policy.normalize {
            out.extend_from_slice(&[b'%', HEX_UPPER[usize::from(h)], HEX_UPPER[usize::from(l)]]);
        } else {
            out.extend_from_slice(&p[i - 3..i]);
        }
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn merge_slashes(mut p: Vec<u8>) -> Vec<u8> {
    p.dedup_by(|a, b| *a == b'/' && *b == b'/');
    p
}

/// RFC 3986 §5.2.4 on an absolute path, refusing to climb above the root.
fn remove_dot_segments(p: &[u8]) -> Result<Vec<u8>, BadHead> {
    // Segments between slashes; the leading `/` gives an empty first piece.
    let mut out: Vec<&[u8]> = Vec::new();
    let mut segs = p[1..].split(|&b| b == b'/').peekable();
    // Whether the output must end with `/` (a trailing `.` or `..` names a directory).
    let mut trailing_slash = false;
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        let (name, params) = match seg.iter().position(|&b| b == b';') {
            Some(i) => (&seg[..i], true),
            None => (seg, false),
        };
        match name {
            b"." | b".." if params => return Err(BadHead::DotSegmentParameters),
            b"." => trailing_slash = last,
            b".." => {
                if out.pop().is_none() {
                    return Err(BadHead::AboveRoot);
                }
                trailing_slash = last;
            }
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut r = Vec::with_capacity(p.len());
    for s in &out {
        r.push(b'/');
        r.extend_from_slice(s);
    }
    if trailing_slash || r.is_empty() {
        r.push(b'/');
    }
    Ok(r)
}

/// Checks the framing headers: `Content-Length` together with `Transfer-Encoding` is
/// ambiguous (RFC 9112 §6.3; the classic request-smuggling vector).
pub(crate) fn check_framing(h: &http::HeaderMap) -> Result<(), BadHead> {
    if h.contains_key(http::header::CONTENT_LENGTH)
        && h.contains_key(http::header::TRANSFER_ENCODING)
    {
        return Err(BadHead::LengthWithChunked);
    }
    Ok(())
}

/// Whether an HTTP/1.1 head (as read from the socket) declares both `Content-Length` and
/// `Transfer-Encoding`. hyper's codec drops the length in that case, so the request path can
/// only learn of it from the raw bytes. Scans header line starts up to the blank line.
pub(crate) fn head_has_length_and_chunked(raw: &[u8]) -> bool {
    let (mut cl, mut te) = (false, false);
    for line in raw.split(|&b| b == b'\n').skip(1) {
        if line.is_empty() || line == b"\r" {
            break;
        }
        let starts =
            |name: &[u8]| line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name);
        cl |= starts(b"content-length:");
        te |= starts(b"transfer-encoding:");
    }
    cl && te
}

/// Fixes the request's one host and returns the value the `Host` header must carry.
///
/// - HTTP/1.1: exactly one `Host` (RFC 9112 §3.2); an absolute-form target's authority wins
///   and replaces it (§3.2.2).
/// - HTTP/2 and HTTP/3: `:authority` (in the URI) wins; a `Host` that disagrees is refused
///   (RFC 9113 §8.3.1, RFC 9114 §4.3.1).
/// - HTTP/1.0 may have no host at all (`Ok(None)`).
pub(crate) fn resolve_host(
    parts: &http::request::Parts,
) -> Result<Option<http::HeaderValue>, BadHead> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(BadHead::DuplicateHost);
    }
    if let Some(h) = header {
        if !valid_authority(h.as_bytes()) {
            return Err(BadHead::InvalidHost);
        }
    }
    let authority = parts.uri.authority();
    let h1 = matches!(
        parts.version,
        http::Version::HTTP_11 | http::Version::HTTP_10 | http::Version::HTTP_09
    );
    match (authority, header) {
        (Some(a), Some(h)) if !h1 && !a.as_str().eq_ignore_ascii_case(host_str(h)) => {
            Err(BadHead::AuthorityMismatch)
        }
        (Some(a), _) => {
            if !valid_authority(a.as_str().as_bytes()) {
                return Err(BadHead::InvalidHost);
            }
            if parts.version == http::Version::HTTP_11 && header.is_none() {
                return Err(BadHead::MissingHost);
            }
            http::HeaderValue::from_str(a.as_str())
                .map(Some)
                .map_err(|_| BadHead::InvalidHost)
        }
        (None, Some(h)) => Ok(Some(h.clone())),
        (None, None) if parts.version == http::Version::HTTP_10 => Ok(None),
        (None, None) => Err(BadHead::MissingHost),
    }
}

fn host_str(h: &http::HeaderValue) -> &str {
    h.to_str().unwrap_or("")
}

/// `host[:port]` per RFC 3986 §3.2.2, loosely: no userinfo, no spaces, no path characters.
fn valid_authority(a: &[u8]) -> bool {
    !a.is_empty()
        && a.len() <= 255 + 6
        && a.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'[' | b']')
        })
}

/// The host without port, for matching: `[::1]:8080` → `::1`, `a.example:80` → `a.example`.
pub(crate) fn host_without_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, BadHead> {
        normalize_path(p, &PathPolicy::default()).map(|c| c.into_owned())
    }

    #[test]
    fn the_bypass_paths_of_the_issue_normalize_to_the_guarded_path() {
        for p in [
            "/public/../admin-api/ping",
            "/./admin-api/ping",
            "/public/%2e%2e/admin-api/ping",
            "/public/%2E%2e/admin-api/ping",
            "/%61dmin-api/ping",
            "/admin%2Dapi/ping",
            "/admin%2dapi/ping",
            "//admin-api/ping",
            "/admin-api//ping",
            "/admin-api/./ping",
            "/x/y/../../admin-api/ping",
            "/%2e/admin-api/ping",
        ] {
            assert_eq!(n(p).as_deref(), Ok("/admin-api/ping"), "{p}");
        }
    }

    #[test]
    fn dot_segments_at_the_end_leave_a_directory() {
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/..").as_deref(), Ok("/"));
        assert_eq!(n("/.").as_deref(), Ok("/"));
        assert_eq!(n("/").as_deref(), Ok("/"));
        assert_eq!(n("/a/b/").as_deref(), Ok("/a/b/"));
        // Dots that are not whole segments are names.
        assert_eq!(n("/a/.b/..c/...").as_deref(), Ok("/a/.b/..c/..."));
    }

    #[test]
    fn refusals() {
        assert_eq!(n("/.."), Err(BadHead::AboveRoot));
        assert_eq!(n("/a/../.."), Err(BadHead::AboveRoot));
        assert_eq!(n("/%2e%2e/x"), Err(BadHead::AboveRoot));
        assert_eq!(n("/..;x/admin"), Err(BadHead::DotSegmentParameters));
        assert_eq!(n("/a/.;x/b"), Err(BadHead::DotSegmentParameters));
        assert_eq!(
            n("/a/%2e%2e;jsessionid=1/b"),
            Err(BadHead::DotSegmentParameters)
        );
        assert_eq!(n("/a%zz"), Err(BadHead::BadPercentEncoding));
        assert_eq!(n("/a%4"), Err(BadHead::BadPercentEncoding));
        assert_eq!(n("a/b"), Err(BadHead::PathNotAbsolute));
        // Parameters on an ordinary segment are the upstream's business.
        assert_eq!(n("/a;v=1/b").as_deref(), Ok("/a;v=1/b"));
    }

    #[test]
    fn escapes_other_than_unreserved_stay_encoded_with_upper_hex() {
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(n("/a%3fb").as_deref(), Ok("/a%3Fb"));
        assert_eq!(n("/100%25").as_deref(), Ok("/100%25"));
        assert_eq!(n("/%7euser").as_deref(), Ok("/~user"));
    }

    #[test]
    fn escaped_slash_policies() {
        let keep = PathPolicy::default();
        assert_eq!(normalize_path("/a%2fb/..", &keep).as_deref(), Ok("/"));
        assert_eq!(normalize_path("/a%2fb", &keep).as_deref(), Ok("/a%2Fb"));
        let reject = PathPolicy {
            escaped_slashes: EscapedSlashes::Reject,
            ..keep
        };
        assert_eq!(
            normalize_path("/a%2Fb", &reject),
            Err(BadHead::EscapedSlash)
        );
        assert_eq!(
            normalize_path("/a%5cb", &reject),
            Err(BadHead::EscapedSlash)
        );
        let unescape = PathPolicy {
            escaped_slashes: EscapedSlashes::Unescape,
            ..keep
        };
        assert_eq!(
            normalize_path("/public%2F..%2Fadmin", &unescape).as_deref(),
            Ok("/admin")
        );
        assert_eq!(
            normalize_path("/a%5C%5Cb", &unescape).as_deref(),
            Ok("/a/b")
        );
    }

    #[test]
    fn switches_off() {
        let no_merge = PathPolicy {
            merge_slashes: false,
            ..PathPolicy::default()
        };
        assert_eq!(normalize_path("//a//b", &no_merge).as_deref(), Ok("//a//b"));
        assert_eq!(normalize_path("/a//../b", &no_merge).as_deref(), Ok("/a/b"));
        let off = PathPolicy {
            normalize: false,
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
        };
        for p in ["/a/../b", "/%61", "//x", "/a/%2e%2e/b"] {
            assert_eq!(normalize_path(p, &off).as_deref(), Ok(p));
        }
    }

    #[test]
    fn the_common_path_is_borrowed() {
        let p = PathPolicy::default();
        assert!(matches!(
            normalize_path("/api/users/42", &p),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(
            normalize_path("/a.b/c-d_e~f", &p),
            Ok(Cow::Borrowed(_))
        ));
    }

    /// Every policy's output is a fixed point, over an exhaustive set of short paths built
    /// from the characters that matter.
    #[test]
    fn normalizing_twice_changes_nothing() {
        let atoms = [
            "/", ".", "..", "%2e", "%2F", "%5c", "a", "%61", ";p", "%20", "//",
        ];
        let policies = [
            PathPolicy::default(),
            PathPolicy {
                merge_slashes: false,
                ..PathPolicy::default()
            },
            PathPolicy {
                escaped_slashes: EscapedSlashes::Unescape,
                ..PathPolicy::default()
            },
            PathPolicy {
                escaped_slashes: EscapedSlashes::Unescape,
                merge_slashes: false,
                ..PathPolicy::default()
            },
        ];
        let mut paths = vec![String::from("/")];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &paths {
                for a in atoms {
                    next.push(format!("{p}{a}"));
                }
            }
            paths = next;
        }
        let mut checked = 0;
        for pol in &policies {
            for p in &paths {
                if let Ok(once) = normalize_path(p, pol) {
                    let twice = normalize_path(&once, pol);
                    assert_eq!(twice.as_deref(), Ok(&*once), "{p} under {pol:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    fn head(version: http::Version, uri: &str, hosts: &[&str]) -> http::request::Parts {
        let mut b = http::Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(http::header::HOST, *h);
        }
        b.body(()).map(|r| r.into_parts().0).expect("head")
    }

    #[test]
    fn one_host() {
        use http::Version as V;
        let ok = |p: &http::request::Parts| {
            resolve_host(p).map(|h| h.map(|v| v.to_str().map(str::to_owned).unwrap_or_default()))
        };
        assert_eq!(
            ok(&head(V::HTTP_11, "/", &["a.example"])),
            Ok(Some("a.example".into()))
        );
        assert_eq!(
            ok(&head(V::HTTP_11, "/", &["a", "b"])),
            Err(BadHead::DuplicateHost)
        );
        assert_eq!(ok(&head(V::HTTP_11, "/", &[])), Err(BadHead::MissingHost));
        assert_eq!(ok(&head(V::HTTP_10, "/", &[])), Ok(None));
        assert_eq!(
            ok(&head(V::HTTP_11, "/", &["a b"])),
            Err(BadHead::InvalidHost)
        );
        // Absolute-form: the target's authority wins over Host.
        assert_eq!(
            ok(&head(V::HTTP_11, "http://b.example:81/x", &["a.example"])),
            Ok(Some("b.example:81".into()))
        );
        assert_eq!(
            ok(&head(V::HTTP_11, "http://b.example/x", &[])),
            Err(BadHead::MissingHost)
        );
        // HTTP/2: :authority wins; a disagreeing Host is refused.
        assert_eq!(
            ok(&head(V::HTTP_2, "https://a.example/x", &[])),
            Ok(Some("a.example".into()))
        );
        assert_eq!(
            ok(&head(V::HTTP_2, "https://a.example/x", &["A.example"])),
            Ok(Some("a.example".into()))
        );
        assert_eq!(
            ok(&head(V::HTTP_2, "https://a.example/x", &["b.example"])),
            Err(BadHead::AuthorityMismatch)
        );
        assert_eq!(
            ok(&head(V::HTTP_2, "/x", &["a.example", "a.example"])),
            Err(BadHead::DuplicateHost)
        );
        assert_eq!(ok(&head(V::HTTP_2, "/x", &[])), Err(BadHead::MissingHost));
    }

    #[test]
    fn framing() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("3"),
        );
        assert_eq!(check_framing(&h), Ok(()));
        h.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
        assert_eq!(check_framing(&h), Err(BadHead::LengthWithChunked));
    }

    #[test]
    fn raw_heads_with_length_and_chunked() {
        assert!(head_has_length_and_chunked(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(head_has_length_and_chunked(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 3\r\n\r\n"
        ));
        assert!(!head_has_length_and_chunked(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\ntransfer-encoding: x\r\n"
        ));
        assert!(!head_has_length_and_chunked(
            b"POST / HTTP/1.1\r\nX-Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_without_port("a.example:80"), "a.example");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("a.example"), "a.example");
    }
}
