//! `cargo test` runs {{name}}.wasm in the gateway's sandbox through `portcullis plugin test`
//! (build it first: `portcullis plugin build`). The binary is `portcullis` on PATH, or the
//! one `PORTCULLIS_BIN` names. Stub clusters are served on 127.0.0.1 for the run.

use portcullis_harness::{Action, Harness, Request};

#[test]
fn answers_with_what_the_backend_said() {
    let out = Harness::new(env!("CARGO_MANIFEST_DIR"))
        .stub("backend", 200, &[("content-type", "application/json")], r#"{"greeting":"hello"}"#)
        .run(Request::get("/api/{{name}}"))
        .expect("plugin test ran");
    assert_eq!(out.action, Action::Respond, "{out:?}");
    assert_eq!(out.status, Some(200));
    assert!(out.body.contains("hello"), "{}", out.body);
}

#[test]
fn a_failing_backend_is_a_502() {
    let out = Harness::new(env!("CARGO_MANIFEST_DIR"))
        .stub("backend", 503, &[], "down")
        .run(Request::get("/api/{{name}}"))
        .expect("plugin test ran");
    assert_eq!(out.status, Some(502), "{out:?}");
}
