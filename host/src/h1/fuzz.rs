//! Fuzz targets for the HTTP/1.1 codec's parsers of outside input: the request head and the
//! chunked body decoder. Same engine as `crate::fuzz` (bolero under `cargo test`: the seed
//! corpus in `src/h1/__fuzz__/<target>/corpus/`, then random inputs for
//! `PORTCULLIS_FUZZ_SECS`). Each checks invariants beyond "no panic":
//!
//! * **head**: parsing is the same whether the bytes arrive at once or split anywhere (a
//!   prefix is `Partial` or the same refusal), a complete head consumes exactly its bytes, and
//!   the framing it reports is the one the kept headers say (one `Content-Length` at most,
//!   none beside chunked; no chunked on HTTP/1.0). The differential test against hyper
//!   (`h1::tests`) holds the *answers* to hyper's; this holds the parser to itself.
//! * **chunked**: any body, cut into any chunks with or without extensions and fed in any
//!   pieces, decodes to itself and ends; arbitrary bytes never yield more data than they hold.

use super::decode::Decoder;
use super::head::{self, Framing, HeadError, Limits, Parsed};
use crate::fuzz::{budget, tokens};
use bytes::BytesMut;

const LIMITS: Limits = Limits {
    max_head_bytes: 4096,
    max_headers: 32,
};

/// Pieces of request heads, smuggling shapes included.
const HEAD_DICT: &[&str] = &[
    "GET ",
    "POST ",
    "PUT ",
    "CONNECT ",
    "G\x01T ",
    "/",
    "/a",
    "/a?b=c",
    "*",
    "http://h/x",
    "%2e",
    " HTTP/1.1",
    " HTTP/1.0",
    " HTTP/2.0",
    " HTTP/1.1 ",
    "\r\n",
    "\r\n",
    "\r\n",
    "\n",
    "\r",
    "Host: a\r\n",
    "Host: b\r\n",
    "Content-Length: 5\r\n",
    "Content-Length: 05\r\n",
    "Content-Length: 6\r\n",
    "Content-Length: 5, 5\r\n",
    "Content-Length: -1\r\n",
    "Content-Length: 99999999999999999999\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Transfer-Encoding: chunked, gzip\r\n",
    "Transfer-Encoding : chunked\r\n",
    "Connection: close\r\n",
    "Connection: keep-alive\r\n",
    "Connection: upgrade\r\n",
    "Upgrade: websocket\r\n",
    "Expect: 100-continue\r\n",
    "X: \u{80}\u{ff}\r\n",
    "X:\tv\r\n",
    " folded\r\n",
    ": novalue\r\n",
    "X-A: 1\r\n",
    "x",
    ":",
    " ",
];

/// Same refusal, or the same head (method, target, version, headers, framing and flags).
fn same(a: &Result<Parsed, HeadError>, b: &Result<Parsed, HeadError>) -> bool {
    match (a, b) {
        (Err(x), Err(y)) => x == y,
        (Ok(Parsed::Partial), Ok(Parsed::Partial)) => true,
        (Ok(Parsed::Complete(x)), Ok(Parsed::Complete(y))) => {
            x.parts.method == y.parts.method
                && x.parts.uri == y.parts.uri
                && x.parts.version == y.parts.version
                && x.parts.headers == y.parts.headers
                && x.framing == y.framing
                && (x.keep_alive, x.expect_continue, x.upgrade, x.ambiguous)
                    == (y.keep_alive, y.expect_continue, y.upgrade, y.ambiguous)
        }
        _ => false,
    }
}

fn check_head(input: &[u8], split: usize) {
    let mut whole = BytesMut::from(input);
    let once = head::parse(&mut whole, LIMITS);
    if let Ok(Parsed::Complete(h)) = &once {
        let consumed = input.len() - whole.len();
        assert_eq!(
            &input[consumed..],
            &whole[..],
            "a head consumes a prefix only"
        );
        let cls = h
            .parts
            .headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .count();
        let te = h
            .parts
            .headers
            .contains_key(http::header::TRANSFER_ENCODING);
        assert!(
            cls <= 1,
            "one content-length kept at most: {:?}",
            h.parts.headers
        );
        match h.framing {
            Framing::Chunked => {
                assert!(te && cls == 0, "chunked, and no length beside it");
                assert_eq!(h.parts.version, http::Version::HTTP_11, "no chunked on 1.0");
            }
            Framing::Length(n) => {
                let v = h.parts.headers.get(http::header::CONTENT_LENGTH);
                let said = v.and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
                assert_eq!(said, Some(n), "the length framed is the length kept");
                assert!(!te, "a length never frames a transfer-encoded body");
            }
            Framing::Empty => {}
        }
        if h.ambiguous {
            assert!(
                te && cls == 0,
                "an ambiguous head keeps only its transfer-encoding"
            );
        }
    }
    // The same bytes in two reads: the prefix is incomplete or refused the same way, and
    // with the rest appended the outcome is the whole input's.
    let split = split.min(input.len());
    let mut buf = BytesMut::from(&input[..split]);
    let first = head::parse(&mut buf, LIMITS);
    match first {
        Ok(Parsed::Partial) => {
            buf.extend_from_slice(&input[split..]);
            let second = head::parse(&mut buf, LIMITS);
            assert!(
                same(&second, &once),
                "split at {split}: {second:?} vs {once:?}"
            );
        }
        Ok(Parsed::Complete(_)) => {
            assert!(
                same(&first, &once),
                "a complete prefix is the head: {first:?} vs {once:?}"
            )
        }
        Err(e) => assert_eq!(
            once.as_ref().err(),
            Some(&e),
            "a refused prefix stays refused"
        ),
    }
}

#[test]
fn fuzz_h1_head() {
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(96)
        .for_each(|input: &[u8]| {
            let split = input.first().copied().unwrap_or(0) as usize * 3;
            check_head(tokens(input, HEAD_DICT).as_bytes(), split);
            check_head(input, split);
        });
}

/// Decodes `wire` fed in pieces whose sizes come from `cuts`; returns the data and whether
/// the decoder ended, or the error.
fn decode_in_pieces(
    wire: &[u8],
    cuts: &[u8],
) -> Result<(Vec<u8>, bool), super::decode::DecodeError> {
    let mut d = Decoder::chunked();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < wire.len() {
        let n = (cuts.get(i).copied().unwrap_or(64) as usize % 17 + 1).min(wire.len() - at);
        i += 1;
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        while let Some(piece) = d.decode(&mut buf, 1024)? {
            out.extend_from_slice(&piece);
        }
    }
    Ok((out, d.is_done()))
}

#[test]
fn fuzz_h1_chunked() {
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(256)
        .for_each(|input: &[u8]| {
            // Arbitrary bytes: never more data out than bytes in, never a panic.
            if let Ok((out, _)) = decode_in_pieces(input, input) {
                assert!(out.len() <= input.len());
            }
            // A well-formed encoding of a body made from the input decodes to it.
            let (body, cuts) = input.split_at(input.len() / 2);
            let mut wire = Vec::new();
            let mut rest = body;
            let mut k = 0;
            while !rest.is_empty() {
                let n = (cuts.get(k).copied().unwrap_or(7) as usize % 9 + 1).min(rest.len());
                let ext = if cuts.get(k).is_some_and(|c| c & 0x80 != 0) {
                    ";ext=1"
                } else {
                    ""
                };
                wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                k += 1;
            }
            wire.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
            let (out, done) = decode_in_pieces(&wire, cuts).expect("a valid encoding decodes");
            assert_eq!(out, body, "round trip");
            assert!(done, "the last chunk and trailers end the body");
        });
}
