//! `cargo test` runs {{name}}.wasm in the gateway's sandbox through `portcullis plugin test`
//! (build it first: `portcullis plugin build`). The binary is `portcullis` on PATH, or the
//! one `PORTCULLIS_BIN` names.

use portcullis_harness::{Action, Harness, Request};

#[test]
fn responses_get_the_header_and_lose_server() {
    let out = Harness::new(env!("CARGO_MANIFEST_DIR"))
        .run(Request::get("/hello").response(200, &[("server", "nginx")]))
        .expect("plugin test ran");
    assert_eq!(out.action, Action::Change, "{out:?}");
    assert_eq!(out.status, Some(200));
    assert_eq!(out.header("x-{{name}}"), Some("served"));
    assert_eq!(out.header("server"), None);
}
