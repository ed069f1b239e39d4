//! The first-party filters in `plugins/`, built from source and run in a real gateway.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::Request;
use portcullis_tests::*;
use std::path::Path;

struct Env {
    gw: portcullis::Gateway,
    addr: std::net::SocketAddr,
    _main: Upstream,
    canary: Upstream,
}

async fn env(plugins: &[(&str, &str, &str)]) -> Env {
    let main = Upstream::start("main").await;
    let canary = Upstream::start("canary").await;
    let dir = temp_dir("first-party");
    for (name, krate, manifest) in plugins {
        install_plugin(&dir, name, krate, manifest);
    }
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nslow_request_ms = 0\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
         [[cluster]]\nname = \"main\"\nendpoints = [\"{}\"]\n[[cluster]]\nname = \"canary\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"all\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"main\"\n[plugins]\ndir = \"{}\"\n",
        main.addr,
        canary.addr,
        dir.display()
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    Env {
        gw,
        addr,
        _main: main,
        canary,
    }
}

fn req(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<BoxBody> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body("")).expect("request")
}

fn echo(b: &bytes::Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("json: {}", String::from_utf8_lossy(b)))
}

fn jwt(secret: &str, claims: serde_json::Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{h}.{p}").as_bytes());
    let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{s}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn api_key_auth_rejects_missing_and_wrong_keys_and_sets_the_principal() {
    let e = env(&[(
        "auth",
        "auth",
        "kind = \"inbound\"\n[config]\nmode = \"api_key\"\nkeys = { team-a = \"k-aaa\", team-b = \"k-bbb\" }\n",
    )])
    .await;
    let (p, b) = send(e.addr, req(e.addr, "GET", "/x", &[])).await;
    assert_eq!(p.status, 401);
    assert_eq!(header(&p, "www-authenticate"), "Bearer");
    assert_eq!(header(&p, "portcullis-error"), "plugin-rejected");
    assert_eq!(&b[..], b"unauthorized: missing API key\n");
    // A rejection (WIT 0.2.0, with its header), not an answer: the passport (every one is
    // kept: `slow_request_ms = 0`) says so.
    let admin = e.gw.admin_addr();
    let (_, pp) = send(admin, get(admin, "/admin/passports")).await;
    let pp: serde_json::Value = serde_json::from_slice(&pp).expect("passports");
    let states: Vec<&str> = pp[0]["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert!(states.contains(&"PLUGIN_REJECTED"), "{states:?}");
    assert!(!states.contains(&"PLUGIN_RESPONDED"), "{states:?}");
    let (p, _) = send(e.addr, req(e.addr, "GET", "/x", &[("x-api-key", "k-zzz")])).await;
    assert_eq!(p.status, 401);
    assert_eq!(header(&p, "www-authenticate"), "Bearer");
    // A forged principal header is replaced.
    let (p, b) = send(
        e.addr,
        req(
            e.addr,
            "GET",
            "/x",
            &[("x-api-key", "k-bbb"), ("x-portcullis-principal", "admin")],
        ),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(echo(&b)["headers"]["x-portcullis-principal"], "team-b");
}

#[tokio::test]
async fn jwt_auth_checks_signature_expiry_issuer_and_audience() {
    let e = env(&[(
        "auth",
        "auth",
        "kind = \"inbound\"\n[config]\nmode = \"jwt\"\nsecret = \"topsecret\"\nissuer = \"https://id.example\"\naudience = \"gw\"\nleeway_s = 0\n",
    )])
    .await;
    let good = jwt(
        "topsecret",
        serde_json::json!({"sub": "user-7", "iss": "https://id.example", "aud": "gw", "exp": now() + 60}),
    );
    let (p, b) = send(
        e.addr,
        req(
            e.addr,
            "GET",
            "/x",
            &[("authorization", &format!("Bearer {good}"))],
        ),
    )
    .await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(echo(&b)["headers"]["x-portcullis-principal"], "user-7");

    let cases = [
        jwt(
            "wrong-secret",
            serde_json::json!({"sub": "u", "iss": "https://id.example", "aud": "gw", "exp": now() + 60}),
        ),
        jwt(
            "topsecret",
            serde_json::json!({"sub": "u", "iss": "https://id.example", "aud": "gw", "exp": now() - 10}),
        ),
        jwt(
            "topsecret",
            serde_json::json!({"sub": "u", "iss": "https://evil.example", "aud": "gw", "exp": now() + 60}),
        ),
        jwt(
            "topsecret",
            serde_json::json!({"sub": "u", "iss": "https://id.example", "aud": "other", "exp": now() + 60}),
        ),
        "not.a.jwt".to_string(),
    ];
    for (i, t) in cases.iter().enumerate() {
        let (p, b) = send(
            e.addr,
            req(
                e.addr,
                "GET",
                "/x",
                &[("authorization", &format!("Bearer {t}"))],
            ),
        )
        .await;
        assert_eq!(p.status, 401, "case {i}: {}", String::from_utf8_lossy(&b));
    }
    let (p, _) = send(e.addr, req(e.addr, "GET", "/x", &[])).await;
    assert_eq!(p.status, 401);
}

#[tokio::test]
async fn canary_by_header_cookie_and_sticky_percentage() {
    let e = env(&[(
        "canary",
        "canary",
        "kind = \"inbound\"\n[config]\ncluster = \"canary\"\nheader = \"x-canary\"\nheader_value = \"1\"\ncookie = \"canary\"\npercent = 30\nsticky_header = \"x-user\"\n",
    )])
    .await;
    let (_, b) = send(
        e.addr,
        req(e.addr, "GET", "/x", &[("x-canary", "1"), ("x-user", "u0")]),
    )
    .await;
    assert_eq!(echo(&b)["upstream"], "canary");
    let (_, b) = send(
        e.addr,
        req(
            e.addr,
            "GET",
            "/x",
            &[("cookie", "a=b; canary=true"), ("x-user", "u0")],
        ),
    )
    .await;
    assert_eq!(echo(&b)["upstream"], "canary");
    // The percentage is sticky per user and close to the configured share.
    let mut to_canary = 0;
    for u in 0..100 {
        let user = format!("user-{u}");
        let (_, b1) = send(e.addr, req(e.addr, "GET", "/x", &[("x-user", &user)])).await;
        let (_, b2) = send(e.addr, req(e.addr, "GET", "/x", &[("x-user", &user)])).await;
        assert_eq!(
            echo(&b1)["upstream"],
            echo(&b2)["upstream"],
            "sticky for {user}"
        );
        if echo(&b1)["upstream"] == "canary" {
            to_canary += 1;
        }
    }
    assert!(
        (15..=45).contains(&to_canary),
        "about 30% to canary: {to_canary}"
    );
    assert!(e.canary.requests() > 0);
}

#[tokio::test]
async fn cors_answers_preflight_and_decorates_responses() {
    let cfg = "[config]\norigins = [\"https://app.example\"]\nmethods = [\"GET\", \"POST\"]\nheaders = [\"authorization\"]\nmax_age = 300\n";
    let e = env(&[
        (
            "cors-preflight",
            "cors",
            &format!("kind = \"inbound\"\n{cfg}"),
        ),
        ("cors", "cors", &format!("kind = \"outbound\"\n{cfg}")),
    ])
    .await;
    let (p, _) = send(
        e.addr,
        req(
            e.addr,
            "OPTIONS",
            "/x",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
        ),
    )
    .await;
    assert_eq!(p.status, 204);
    assert_eq!(
        header(&p, "access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(header(&p, "access-control-allow-methods"), "GET, POST");
    assert_eq!(header(&p, "access-control-max-age"), "300");
    let (p, _) = send(
        e.addr,
        req(
            e.addr,
            "OPTIONS",
            "/x",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
        ),
    )
    .await;
    assert_eq!(p.status, 403);
    let (p, _) = send(
        e.addr,
        req(e.addr, "GET", "/x", &[("origin", "https://app.example")]),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(
        header(&p, "access-control-allow-origin"),
        "https://app.example"
    );
    let (p, _) = send(
        e.addr,
        req(e.addr, "GET", "/x", &[("origin", "https://evil.example")]),
    )
    .await;
    assert_eq!(header(&p, "access-control-allow-origin"), "");
}

#[tokio::test]
async fn guard_refuses_methods_and_oversized_bodies_and_headers_are_injected() {
    let e = env(&[
        ("guard", "guard", "kind = \"inbound\"\norder = 1\n[config]\nmethods = [\"GET\", \"POST\"]\nmax_body_bytes = 10\n"),
        ("sec", "add-header", "kind = \"outbound\"\n[config]\nset = { \"strict-transport-security\" = \"max-age=600\" }\n"),
    ])
    .await;
    let (p, _) = send(e.addr, req(e.addr, "DELETE", "/x", &[])).await;
    assert_eq!(p.status, 405);
    assert_eq!(header(&p, "portcullis-error"), "plugin-rejected");
    let big = Request::builder()
        .method("POST")
        .uri(format!("http://{}/x", e.addr))
        .header("host", "localhost")
        .body(body(vec![b'x'; 100]))
        .expect("request");
    let (p, _) = send(e.addr, big).await;
    assert_eq!(p.status, 413);
    let (p, _) = send(e.addr, req(e.addr, "GET", "/x", &[])).await;
    assert_eq!(p.status, 200);
    assert_eq!(header(&p, "strict-transport-security"), "max-age=600");
    let m = metrics(e.gw.admin_addr()).await;
    // Strictly valid exposition text: one HELP/TYPE per family, samples under it.
    assert_valid_exposition(&m);
    assert_eq!(
        sample(
            &m,
            "portcullis_plugin_guest_counter_total{plugin=\"guard\",name=\"rejected_method\"}"
        ),
        Some(1.0)
    );
}

/// `quota` (WIT 0.3 `kv`): 3 requests per API key per window, counted across the plugin's
/// instances; the fourth is a 429 with `retry-after`; another key and keyless requests are
/// not counted against it.
#[tokio::test]
async fn quota_counts_requests_per_api_key_in_kv() {
    let e = env(&[(
        "quota",
        "quota",
        "kind = \"inbound\"\n[config]\nlimit = 3\nwindow_ms = 60000\n",
    )])
    .await;
    for left in ["2", "1", "0"] {
        let (p, b) = send(e.addr, req(e.addr, "GET", "/x", &[("x-api-key", "k1")])).await;
        assert_eq!(p.status, 200);
        assert_eq!(echo(&b)["headers"]["x-quota-remaining"], left);
    }
    let (p, _) = send(e.addr, req(e.addr, "GET", "/x", &[("x-api-key", "k1")])).await;
    assert_eq!(p.status, 429);
    assert_eq!(header(&p, "retry-after"), "60");
    assert_eq!(header(&p, "portcullis-error"), "plugin-rejected");
    let (p, b) = send(e.addr, req(e.addr, "GET", "/x", &[("x-api-key", "k2")])).await;
    assert_eq!(p.status, 200);
    assert_eq!(echo(&b)["headers"]["x-quota-remaining"], "2");
    let (p, _) = send(e.addr, req(e.addr, "GET", "/x", &[])).await;
    assert_eq!(p.status, 200, "no key: not counted");
}
