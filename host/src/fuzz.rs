//! Fuzz targets for the parsers of outside input that live outside the plugin runtime (those
//! are in `plugin::fuzz`): path normalization, host/authority handling, the gateway config and
//! the plugin manifest.
//!
//! They run under `cargo test` on stable with bolero's test engine: first the seed corpus in
//! `src/__fuzz__/<target>/corpus/`, then random inputs for `PORTCULLIS_FUZZ_SECS` seconds
//! each (default 2; CI sets more). `cargo bolero test <target>` runs the same target under
//! libFuzzer on a nightly toolchain, a local extra. Each checks an invariant, not only "no
//! panic".
//!
//! Random bytes rarely form a path or a TOML table that reaches deep code, so inputs are
//! also read as *token lists*: each byte picks a piece from a dictionary of the grammar's
//! interesting parts (`%2e`, `..`, `//`, `[[route]]`, …), libFuzzer-dictionary style.

use crate::core::identity::{self, EscapedSlashes, PathPolicy};
use std::path::Path;
use std::time::Duration;

/// Time each target gets after its corpus.
pub(crate) fn budget() -> Duration {
    let secs = std::env::var("PORTCULLIS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Joins the dictionary pieces the input's bytes select.
pub(crate) fn tokens(input: &[u8], dict: &[&str]) -> String {
    input
        .iter()
        .map(|b| dict[*b as usize % dict.len()])
        .collect()
}

const PATH_DICT: &[&str] = &[
    "/",
    "/",
    "//",
    ".",
    "..",
    "/..",
    "/.",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%25",
    "%",
    "%4",
    "%zz",
    "%41",
    "%7e",
    "%00",
    ";",
    ";x",
    "a",
    "b",
    "api",
    "admin-api",
    "~",
    "-",
    "?",
    "#",
    "\u{e9}",
    "%C3%A9",
    " ",
    "\\",
    "*",
];

fn policies() -> [PathPolicy; 4] {
    let d = PathPolicy::default();
    [
        d,
        PathPolicy {
            merge_slashes: false,
            ..d
        },
        PathPolicy {
            escaped_slashes: EscapedSlashes::Reject,
            ..d
        },
        PathPolicy {
            escaped_slashes: EscapedSlashes::Unescape,
            ..d
        },
    ]
}

/// Normalization is idempotent, keeps the path absolute, and leaves no segment a later hop
/// would resolve differently (`.`, `..`, empty when merging, an escaped dot or unreserved).
fn check_path(path: &str) {
    for policy in policies() {
        let Ok(once) = identity::normalize_path(path, &policy) else {
            continue;
        };
        assert!(once.starts_with('/'), "{path:?} → {once:?} is not absolute");
        let twice = identity::normalize_path(&once, &policy)
            .unwrap_or_else(|e| panic!("{path:?} → {once:?} refused on the second pass: {e:?}"));
        assert_eq!(once, twice, "not idempotent for {path:?} under {policy:?}");
        for seg in once.split('/').skip(1) {
            assert!(
                seg != "." && seg != "..",
                "{path:?} → {once:?} keeps a dot segment"
            );
        }
        if policy.merge_slashes {
            assert!(!once.contains("//"), "{path:?} → {once:?} keeps `//`");
        }
        let lower = once.to_ascii_lowercase();
        assert!(
            !lower.contains("%2e"),
            "{path:?} → {once:?} keeps an escaped dot"
        );
        if policy.escaped_slashes == EscapedSlashes::Reject {
            assert!(
                !lower.contains("%2f"),
                "{path:?} → {once:?} passed %2F under reject"
            );
        }
    }
}

#[test]
fn fuzz_path_normalization() {
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(64)
        .for_each(|input: &[u8]| {
            check_path(&tokens(input, PATH_DICT));
            if let Ok(s) = std::str::from_utf8(input) {
                check_path(s);
            }
        });
}

/// The host a request is matched and forwarded with: resolving never panics, a resolved
/// value is a valid header whose port-less part is a prefix of it, and resolving is stable.
#[test]
fn fuzz_host_and_authority() {
    const DICT: &[&str] = &[
        "a",
        "example.com",
        ".",
        ":",
        ":80",
        ":99999",
        "[",
        "]",
        "::1",
        "@",
        "user@",
        " ",
        "\t",
        "%",
        "-",
        "_",
        "\u{e9}",
        "*",
        "/",
        "127.0.0.1",
        "",
    ];
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(48)
        .for_each(|input: &[u8]| {
            let (split, rest) = input.split_first().map_or((0, input), |(a, r)| (*a, r));
            let cut = (split as usize).min(rest.len());
            let host = tokens(&rest[..cut], DICT);
            let authority = tokens(&rest[cut..], DICT);
            let bare = identity::host_without_port(&host);
            assert!(host.contains(bare), "{host:?} → {bare:?}");
            let mut b = http::Request::builder();
            if let Ok(v) = http::HeaderValue::from_str(&host) {
                b = b.header(http::header::HOST, v);
            }
            if !authority.is_empty() {
                if let Ok(u) = format!("http://{authority}/x").parse::<http::Uri>() {
                    b = b.uri(u);
                }
            }
            let Ok(req) = b.body(()) else { return };
            let (parts, ()) = req.into_parts();
            if let Ok(Some(v)) = identity::resolve_host(&parts) {
                let s = v.to_str().expect("a resolved host is visible ASCII");
                assert!(s.contains(identity::host_without_port(s)));
                let mut again = parts;
                again.headers.insert(http::header::HOST, v.clone());
                if again.uri.authority().is_none() {
                    let r2 = identity::resolve_host(&again).expect("stable");
                    assert_eq!(r2.as_ref(), Some(&v), "resolving is not stable");
                }
            }
        });
}

const CONFIG_DICT: &[&str] = &[
    "[admin]\nlisten = \"127.0.0.1:9901\"\n",
    "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:8080\"\n",
    "[[listener]]\nname = \"l\"\nlisten = \"nope\"\n",
    "[[cluster]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n",
    "[[cluster]]\nname = \"c\"\nendpoints = []\n",
    "balancer = \"round_robin\"\n",
    "balancer = \"nope\"\n",
    "[[route]]\nname = \"r\"\nmatch = { path_prefix = \"/\" }\ncluster = \"c\"\n",
    "[[route]]\nname = \"r\"\nmatch = { path_prefix = \"x\" }\ncluster = \"missing\"\n",
    "[[route]]\nname = \"e\"\nmatch = { host = \"*.example.com\", method = \"GET\" }\nendpoint = \"home\"\n",
    "[timeouts]\nconnect_ms = 0\n",
    "[timeouts]\nrequest_deadline_ms = 18446744073709551615\n",
    "[limits]\nmax_in_flight = 10\nmax_body_bytes = 1\n",
    "[http]\nescaped_slashes = \"reject\"\n",
    "[http]\nescaped_slashes = \"maybe\"\n",
    "[http]\nerror_headers = { \"x-a\" = \"1\", \"bad name\" = \"v\" }\n",
    "[plugins]\ndir = \"p\"\nmax_instances = 0\n",
    "retry = { attempts = 3 }\n",
    "unknown = 1\n",
    "\"",
    "=",
    "[",
    "\n",
    "# c\n",
];

/// Config parsing never panics; a refused config names a key and a reason for every
/// problem; an accepted one builds its route table with every route in it.
#[test]
fn fuzz_config() {
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(24)
        .for_each(|input: &[u8]| {
            let text = tokens(input, CONFIG_DICT);
            check_config(&text);
            check_config(&String::from_utf8_lossy(input));
        });
}

fn check_config(text: &str) {
    match crate::config::Config::parse(text, Path::new(".")) {
        Ok(cfg) => {
            let t = crate::routing::RouteTable::build(&cfg, |n| {
                cfg.clusters.iter().position(|c| c.name == n)
            });
            assert_eq!(
                t.routes().len(),
                cfg.routes.len(),
                "a valid route was dropped"
            );
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in problems {
                assert!(!p.reason.is_empty(), "problem without a reason in {text:?}");
            }
        }
    }
}

const MANIFEST_DICT: &[&str] = &[
    "kind = \"inbound\"\n",
    "kind = \"outbound\"\n",
    "kind = \"endpoint\"\n",
    "kind = \"sideways\"\n",
    "order = 10\n",
    "order = -1\n",
    "failure = \"fail_open\"\n",
    "failure = \"fail_closed\"\n",
    "body = true\nmax_body_bytes = 1048576\n",
    "max_body_bytes = 99999999999\n",
    "memory_mb = 1\n",
    "memory_mb = 100000\n",
    "fuel = 0\n",
    "gateway_responses = false\n",
    "[match]\npath_prefix = \"/api\"\n",
    "[match]\npath_prefix = \"api\"\n",
    "[match]\nheaders = { \"x-a\" = \"1\" }\n",
    "[config]\nkey = \"v\"\n",
    "[config]\nn = 1\n",
    "what = 1\n",
    "\"",
    "[",
    "\n",
];

/// Manifest parsing never panics, and an accepted manifest keeps the ceilings it was
/// parsed against.
#[test]
fn fuzz_manifest() {
    let cfg = crate::config::Config::parse(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[plugins]\ndir = \"p\"\n",
        Path::new("."),
    )
    .expect("minimal config");
    let ceilings = cfg.plugins.expect("[plugins]");
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(16)
        .for_each(|input: &[u8]| {
            for text in [
                tokens(input, MANIFEST_DICT),
                String::from_utf8_lossy(input).into(),
            ] {
                if let Ok(m) = crate::plugin::manifest::Manifest::parse(&text, &ceilings) {
                    assert!(
                        m.max_body_bytes <= ceilings.max_body_bytes,
                        "{text:?}: body cap {} over the gateway's {}",
                        m.max_body_bytes,
                        ceilings.max_body_bytes
                    );
                    assert!(
                        m.memory_bytes as u64 <= ceilings.max_memory_mb * 1024 * 1024,
                        "{text:?}: memory over the ceiling"
                    );
                }
            }
        });
}
