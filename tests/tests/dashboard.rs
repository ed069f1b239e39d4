//! The operator dashboard (`GET /` on the admin listener), in a real headless Chromium driven
//! over WebDriver, against a gateway serving traffic: sign-in with the read token, the live
//! request counter, a plugin's calls, a failed request's passport timeline, an upload from the
//! page. The same run writes the screenshots in docs/. Plus the HTTP-level guards: the feed
//! needs the session, the cookie never allows a mutation, DNS rebinding is refused.

use bytes::Bytes;
use fantoccini::Locator;
use http::Request;
use portcullis_tests::browser::Browser;
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const READ: &str = "r3ad-t0ken";
const ADMIN: &str = "adm1n-t0ken";

fn config(up: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{ADMIN}"
read_token = "{READ}"
slow_request_ms = 100000
hosts = ["gateway.internal"]
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "app"
endpoints = ["{up}"]
[[cluster]]
name = "gone"
endpoints = ["{dead}"]
[[route]]
name = "broken"
match = {{ path_prefix = "/broken" }}
cluster = "gone"
[[route]]
name = "app"
cluster = "app"
[plugins]
dir = "."
"#
    )
}

/// Traffic until stopped: mostly good requests, and one to a dead cluster now and then (502s
/// whose passports the dashboard draws).
fn traffic(addr: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = h1_client();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let path = if n.is_multiple_of(25) {
                "/broken/x"
            } else {
                "/app/x"
            };
            let _ =
                tokio::time::timeout(Duration::from_secs(5), client.request(get(addr, path))).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn docs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

async fn number(b: &Browser, css: &str) -> Option<u64> {
    b.text(css).await?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_traffic_plugins_passports_and_uploads_in_a_real_browser() {
    let up = Upstream::start("app").await;
    let dead = dead_addr().await;
    let dir = temp_dir("dashboard");
    install_plugin(
        &dir,
        "tag",
        "add-header",
        "kind = \"inbound\"\n[config]\nset = { \"x-tag\" = \"seen\" }\n",
    );
    let gw = gateway(&config(up.addr, dead), &dir).await;
    let (addr, admin) = (gw.listener_addr("main").expect("main"), gw.admin_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(addr, stop.clone());

    let b = Browser::start().await;
    b.client
        .goto(&format!("http://{admin}/"))
        .await
        .expect("open the dashboard");
    // The read token is required: the page asks for it.
    let token = b
        .until(
            Duration::from_secs(10),
            "the sign-in form",
            |c| async move {
                let e = c.find(Locator::Id("login-token")).await.ok()?;
                e.is_displayed().await.ok()?.then_some(e)
            },
        )
        .await;
    token.send_keys(READ).await.expect("type the token");
    b.click("#login-form button[type=submit]").await;

    // Live: the request counter moves while traffic flows, without a reload of the page.
    let first = b
        .until(Duration::from_secs(15), "the request counter", |_| async {
            number(&b, "#total-requests").await.filter(|n| *n > 0)
        })
        .await;
    let later = b
        .until(
            Duration::from_secs(15),
            "the counter to increase",
            |_| async {
                number(&b, "#total-requests")
                    .await
                    .filter(|n| *n > first + 20)
            },
        )
        .await;
    assert!(later > first);
    tokio::time::sleep(Duration::from_secs(3)).await; // some points for the charts
    b.screenshot(&docs().join("dashboard-overview.png")).await;

    // The plugin's row shows its calls.
    b.click("#tab-btn-plugins").await;
    let calls = b
        .until(
            Duration::from_secs(10),
            "the tag plugin's calls",
            |_| async {
                number(&b, "tr[data-plugin=\"tag\"] td.calls")
                    .await
                    .filter(|n| *n > 0)
            },
        )
        .await;
    assert!(calls > 0);

    // An upload from the page, with the admin token, loads a plugin.
    b.type_into("#admin-token", ADMIN).await;
    b.type_into("#upload-name", "uploaded").await;
    let wasm = guest("add-header");
    b.type_into("#upload-wasm", wasm.to_str().expect("path"))
        .await;
    b.type_into(
        "#upload-manifest",
        "kind = \"outbound\"\n[config]\nset = { \"x-uploaded\" = \"yes\" }\n",
    )
    .await;
    b.click("#upload-submit").await;
    let result = b
        .until(Duration::from_secs(60), "the upload's answer", |_| async {
            b.text("#upload-result")
                .await
                .filter(|t| t.starts_with("loaded") || t.starts_with("refused"))
        })
        .await;
    assert!(result.starts_with("loaded uploaded"), "{result}");
    b.until(
        Duration::from_secs(10),
        "the uploaded plugin's row",
        |_| async {
            b.text("tr[data-plugin=\"uploaded\"] td:nth-child(4)")
                .await
                .filter(|s| s == "loaded")
        },
    )
    .await;
    let (p, _) = send(addr, get(addr, "/app/after-upload")).await;
    assert_eq!(
        header(&p, "x-uploaded"),
        "yes",
        "the uploaded plugin serves"
    );
    b.screenshot(&docs().join("dashboard-plugins.png")).await;

    // A failed request appears as a passport timeline; selecting it shows its states.
    b.click("#tab-btn-passports").await;
    let failed = b
        .until(Duration::from_secs(15), "a 502 passport", |c| async move {
            for e in c
                .find_all(Locator::Css("#passports .passport"))
                .await
                .ok()?
            {
                let t = e.text().await.ok()?;
                let bars = e.find_all(Locator::Css("svg.timeline rect")).await.ok()?;
                if t.starts_with("502") && t.contains("/broken/x") && bars.len() >= 3 {
                    return Some(e);
                }
            }
            None
        })
        .await;
    failed.click().await.expect("select the passport");
    let detail = b
        .until(
            Duration::from_secs(10),
            "the passport's states",
            |_| async {
                b.text("#passport-detail")
                    .await
                    .filter(|t| t.contains("CONNECT_FAILED"))
            },
        )
        .await;
    assert!(
        detail.contains("ACCEPTED") && detail.contains("502"),
        "{detail}"
    );
    b.screenshot(&docs().join("dashboard-passports.png")).await;

    b.close().await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    // Load balancers probe /healthz by any name; it says nothing else.
    let r = Request::builder()
        .uri(format!("http://{admin}/healthz"))
        .header("host", "lb-probe.example")
        .body(body(Bytes::new()))
        .expect("request");
    assert_eq!(send(admin, r).await.0.status, 200);
    gw.shutdown().await;
}

fn req(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_: &str,
) -> Request<BoxBody> {
    let mut r = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("host", admin.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(body(Bytes::from(body_.to_string())))
        .expect("request")
}

/// One request to the admin listener.
async fn call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_: &str,
) -> (http::response::Parts, Bytes) {
    send(admin, req(admin, method, path, headers, body_)).await
}

#[tokio::test]
async fn the_feed_needs_a_session_the_cookie_never_mutates_and_rebinding_is_refused() {
    let up = Upstream::start("app").await;
    let dir = temp_dir("dashboard-guards");
    let gw = gateway(&config(up.addr, dead_addr().await), &dir).await;
    let admin = gw.admin_addr();

    // The page is served, hardened; its data is not, without the token.
    let (p, page) = call(admin, "GET", "/", &[], "").await;
    assert_eq!(p.status, 200);
    assert!(String::from_utf8_lossy(&page).contains("/dashboard/app.js"));
    let csp = header(&p, "content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let (p, _) = call(admin, "GET", "/dashboard/feed", &[], "").await;
    assert_eq!(p.status, 401);

    // Sign-in: a wrong token is refused; the right one gets an HttpOnly, SameSite=Strict cookie.
    let (p, _) = call(
        admin,
        "POST",
        "/dashboard/login",
        &[],
        r#"{"token":"nope"}"#,
    )
    .await;
    assert_eq!(p.status, 401);
    let (p, _) = call(
        admin,
        "POST",
        "/dashboard/login",
        &[],
        &format!(r#"{{"token":"{READ}"}}"#),
    )
    .await;
    assert_eq!(p.status, 200);
    let set = header(&p, "set-cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("cookie").to_string();

    // The cookie opens the feed: its first event is the history, then ticks with the state.
    let s = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = tx
        .send_request(req(
            admin,
            "GET",
            "/dashboard/feed",
            &[("cookie", &cookie)],
            "",
        ))
        .await
        .expect("feed");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut feed = resp.into_body();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: tick") {
        use http_body_util::BodyExt;
        let frame = tokio::time::timeout_at(deadline, feed.frame())
            .await
            .expect("a tick within 10 s")
            .expect("open")
            .expect("frame");
        if let Some(d) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(d));
        }
    }
    assert!(seen.starts_with("event: history\n"), "{seen}");
    let tick = seen.split("event: tick\ndata: ").nth(1).expect("tick");
    let v: serde_json::Value =
        serde_json::from_str(tick.lines().next().expect("line")).expect("json");
    assert_eq!(v["state"]["max_in_flight"], 10000);
    assert!(
        v["state"]["clusters"]
            .as_array()
            .is_some_and(|c| c.len() == 2),
        "{v}"
    );
    assert!(
        !tick.contains(ADMIN) && !tick.contains(READ),
        "no secrets in the feed"
    );
    drop(feed);

    // The cookie stands for the read token on reads, never for a mutation.
    let (p, _) = call(admin, "GET", "/admin/plugins", &[("cookie", &cookie)], "").await;
    assert_eq!(p.status, 200);
    for (method, path) in [
        ("DELETE", "/admin/plugins/x"),
        ("POST", "/admin/config/reload"),
    ] {
        let (p, _) = call(admin, method, path, &[("cookie", &cookie)], "").await;
        assert_eq!(p.status, 401, "{method} {path} with only the cookie");
    }
    // The last character changed, whatever it was (a fixed `0` left the cookie as it was
    // whenever it already ended in `0`: the feed then opened, and the test hung 1 time in 16).
    let swap = if cookie.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{swap}", &cookie[..cookie.len() - 1]);
    assert_ne!(forged, cookie);
    let (p, _) = call(admin, "GET", "/dashboard/feed", &[("cookie", &forged)], "").await;
    assert_eq!(p.status, 401, "a forged cookie");

    // DNS rebinding: a name that is not localhost or listed is refused, even with the token.
    let auth = format!("Bearer {READ}");
    for (host, want) in [
        ("evil.example", 403),
        ("evil.example:9901", 403),
        ("gateway.internal:9901", 200),
        ("localhost:1", 200),
        ("[::1]:9901", 200),
        ("10.1.2.3", 200),
    ] {
        let r = Request::builder()
            .uri(format!("http://{admin}/metrics"))
            .header("host", host)
            .header("authorization", &auth)
            .body(body(Bytes::new()))
            .expect("request");
        let (p, b) = send(admin, r).await;
        assert_eq!(p.status, want, "Host: {host}: {b:?}");
    }
    // Load balancers probe /healthz by any name; it says nothing else.
    let r = Request::builder()
        .uri(format!("http://{admin}/healthz"))
        .header("host", "lb-probe.example")
        .body(body(Bytes::new()))
        .expect("request");
    assert_eq!(send(admin, r).await.0.status, 200);
    gw.shutdown().await;
}
