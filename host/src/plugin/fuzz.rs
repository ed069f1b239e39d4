//! Fuzz targets for what plugins and plugin uploads hand the host: a filter's request and
//! response changes, an endpoint's response, and the multipart upload body. See
//! `crate::fuzz` for how they run (bolero; corpus in `src/plugin/__fuzz__/<target>/corpus/`).

use super::api as types;
use super::convert;
use super::view::RespData;
use super::{FilterState, OutputLimits};
use crate::core::identity::{self, PathPolicy};
use crate::fuzz::{budget, tokens};
use bytes::Bytes;

const NAMES: &[&str] = &[
    "x-a",
    "X-A",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "bad name",
    "",
    "x\n",
    ":path",
    "set-cookie",
    "\u{e9}",
];
const VALUES: &[&str] = &[
    "1",
    "",
    " v ",
    "a\r\nb",
    "\u{e9}",
    "\0",
    "keep-alive",
    "x-a",
    "chunked",
];
const PATHS: &[&str] = &[
    "/", "a", "..", ".", "%2e", "%2F", "?", "x=1", "//", "#", " ", "%", "\u{e9}",
];

fn limits() -> OutputLimits {
    OutputLimits {
        max_headers: 8,
        max_header_bytes: 256,
        max_body_bytes: 64,
        path: PathPolicy::default(),
    }
}

/// Byte `i` of the input, cycling; the input drives every choice.
fn at(input: &[u8], i: usize) -> u8 {
    if input.is_empty() {
        0
    } else {
        input[i % input.len()]
    }
}

fn pairs(input: &[u8], from: usize) -> Vec<(String, String)> {
    (0..at(input, from) as usize % 12)
        .map(|i| {
            let n = NAMES[at(input, from + 1 + 2 * i) as usize % NAMES.len()];
            let v = VALUES[at(input, from + 2 + 2 * i) as usize % VALUES.len()];
            let long = at(input, from + 3 + i).is_multiple_of(16);
            (
                n.to_string(),
                if long { v.repeat(100) } else { v.to_string() },
            )
        })
        .collect()
}

fn head_bytes(h: &http::HeaderMap) -> usize {
    h.iter().map(|(k, v)| k.as_str().len() + v.len()).sum()
}

/// A filter's request changes: all or nothing, within the header limits, never a
/// hop-by-hop or framing header smuggled in, and the path stays normalized.
#[test]
fn fuzz_request_changes() {
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(64)
        .for_each(|input: &[u8]| {
            let lim = limits();
            let mut parts = http::Request::builder()
                .uri("/orig?q=1")
                .header("x-orig", "1")
                .body(())
                .expect("request")
                .into_parts()
                .0;
            let ch = types::RequestChanges {
                set_headers: pairs(input, 0),
                remove_headers: (0..at(input, 40) % 3)
                    .map(|i| NAMES[at(input, 41 + i as usize) as usize % NAMES.len()].to_string())
                    .collect(),
                path: at(input, 50)
                    .is_multiple_of(2)
                    .then(|| tokens(input.get(51..).unwrap_or(&[]), PATHS)),
                cluster: None,
                priority: None,
                metadata: Vec::new(),
            };
            let before = parts.clone();
            let (mut meta, mut state) = (Vec::new(), FilterState::default());
            match convert::apply_request(&mut parts, &mut meta, &mut state, ch, &lim) {
                Ok(()) => {
                    assert!(
                        parts.headers.len() <= lim.max_headers + 1,
                        "{:?}",
                        parts.headers
                    );
                    let p = parts.uri.path();
                    let again = identity::normalize_path(p, &lim.path).expect("normalized path");
                    assert_eq!(again, p, "the path a filter set is not normalized");
                    assert!(!parts.headers.contains_key(http::header::TRANSFER_ENCODING));
                }
                Err(why) => {
                    assert!(!why.is_empty());
                    assert_eq!(parts.uri, before.uri, "a refused change moved the path");
                    assert_eq!(
                        parts.headers, before.headers,
                        "a refused change edited headers"
                    );
                }
            }
        });
}

/// An endpoint's or filter's own response and an outbound change: the status is one the
/// gateway may send, headers are within limits, and the plugin never sets the framing.
#[test]
fn fuzz_plugin_responses() {
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(64)
        .for_each(|input: &[u8]| {
            let lim = limits();
            let status = u16::from_le_bytes([at(input, 0), at(input, 1) % 4]);
            let r = types::Response {
                status,
                headers: pairs(input, 2),
                body: vec![b'x'; at(input, 30) as usize],
            };
            if let Ok(resp) = convert::response(r, &lim) {
                assert!((200..=599).contains(&resp.status().as_u16()));
                assert!(resp.body().len() <= lim.max_body_bytes);
                assert!(head_bytes(resp.headers()) <= lim.max_header_bytes);
                assert!(!resp.headers().contains_key(http::header::CONTENT_LENGTH));
                assert!(!resp.headers().contains_key(http::header::CONNECTION));
            }
            let mut head = RespData {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
            };
            let ch = types::ResponseChanges {
                status: at(input, 31).is_multiple_of(2).then_some(status),
                set_headers: pairs(input, 32),
                remove_headers: Vec::new(),
            };
            match convert::apply_response(&mut head, ch, &lim) {
                Ok(()) => assert!((200..=599).contains(&head.status.as_u16())),
                Err(_) => {
                    assert_eq!(head.status, http::StatusCode::OK);
                    assert!(head.headers.is_empty(), "a refused change edited headers");
                }
            }
        });
}

/// The upload body: never a panic or hang; both parts come back as sent when the body is
/// well formed, and a malformed body is an error with a reason.
#[test]
fn fuzz_multipart_upload() {
    const PIECES: &[&str] = &[
        "--B\r\n",
        "--B--\r\n",
        "Content-Disposition: form-data; name=\"wasm\"\r\n",
        "Content-Disposition: form-data; name=\"manifest\"\r\n",
        "Content-Disposition: form-data; name=\"other\"; filename=\"x\"\r\n",
        "Content-Disposition: form-data\r\n",
        "Content-Type: application/octet-stream\r\n",
        "\r\n",
        "kind = \"inbound\"\r\n",
        "\0asm",
        "--",
        "B",
        "\r",
        "\n",
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(48)
        .for_each(|input: &[u8]| {
            let body = Bytes::from(tokens(input, PIECES));
            let out = rt.block_on(super::admin::upload_parts(body.clone(), "B".into()));
            match out {
                Ok((w, m)) => assert!(w.len() + m.len() <= body.len()),
                Err(why) => assert!(!why.is_empty()),
            }
            let raw = Bytes::copy_from_slice(input);
            let _ = rt.block_on(super::admin::upload_parts(raw, "B".into()));
        });
    // The well-formed case, so the target is known to reach the parts.
    let body =
        "--B\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\nkind = \"inbound\"\r\n\
                --B\r\nContent-Disposition: form-data; name=\"wasm\"\r\n\r\n\0asm\r\n--B--\r\n";
    let (w, m) = rt
        .block_on(super::admin::upload_parts(Bytes::from(body), "B".into()))
        .expect("well-formed upload");
    assert_eq!(
        (&w[..], &m[..]),
        (&b"\0asm"[..], &b"kind = \"inbound\""[..])
    );
}
