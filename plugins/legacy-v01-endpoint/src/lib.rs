//! An endpoint exactly as a plugin author wrote one against `portcullis:plugin@0.1.0`:
//! `wit-bindgen` straight from the frozen `wit/v0.1`, no SDK. It makes one upstream call to
//! `?cluster=` with `?timeout_ms=` (default 1000) and answers, as plain text, the reply's
//! status or the error's WIT case and reason, so the tests can see what a 0.1.0 plugin is
//! told (a malformed call is `limit-exceeded` in 0.1.0, `invalid-call` in 0.2.0).

wit_bindgen::generate!({
    path: "../../wit/v0.1",
    world: "portcullis:plugin/endpoint",
});

use portcullis::plugin::upstream::{fetch, Call, CallError};

struct LegacyEndpoint;

fn query<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

impl Guest for LegacyEndpoint {
    fn handle(req: Request) -> Response {
        let call = Call {
            cluster: query(&req.path, "cluster").unwrap_or("up").to_string(),
            method: "GET".into(),
            path: "/".into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: query(&req.path, "timeout_ms")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1000),
        };
        let text = match fetch(&call) {
            Ok(reply) => format!("status {}", reply.status),
            Err(CallError::LimitExceeded(why)) => format!("limit-exceeded: {why}"),
            Err(CallError::Timeout) => "timeout".into(),
            Err(CallError::ConnectFailed) => "connect-failed".into(),
            Err(CallError::Overloaded) => "overloaded".into(),
            Err(CallError::UnknownCluster) => "unknown-cluster".into(),
            Err(CallError::UpstreamReset) => "upstream-reset".into(),
        };
        Response {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: format!("{text}\n").into_bytes(),
        }
    }
}

export!(LegacyEndpoint);
