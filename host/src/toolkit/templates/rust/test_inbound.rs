//! `cargo test` runs {{name}}.wasm in the gateway's sandbox through `portcullis plugin test`
//! (build it first: `portcullis plugin build`). The binary is `portcullis` on PATH, or the
//! one `PORTCULLIS_BIN` names.

use portcullis_harness::{Action, Harness, Request};

fn harness() -> Harness {
    Harness::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn requests_without_the_key_are_rejected() {
    let out = harness().run(Request::get("/hello")).expect("plugin test ran");
    assert_eq!(out.action, Action::Reject, "{out:?}");
    assert_eq!(out.status, Some(401));
}

#[test]
fn requests_with_the_key_go_on_with_a_header() {
    let out = harness()
        .run(Request::get("/hello").header("x-api-key", "k1"))
        .expect("plugin test ran");
    assert_eq!(out.action, Action::Change, "{out:?}");
    assert_eq!(out.header("x-{{name}}"), Some("ok"));
}
