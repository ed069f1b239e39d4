//! WIT versions served side by side: a plugin built against `portcullis:plugin@0.1.0` (the
//! `legacy-v01*` fixtures, `wit-bindgen` straight from the frozen `wit/v0.1`, no SDK) loads
//! and acts next to plugins built with the SDK (0.3.0 now) and `legacy-v02` (0.2.0, no SDK),
//! in one gateway, and behaves as 0.1.0 always did; a component for a version the gateway
//! does not serve is refused with the versions it does. And what 0.3.0 adds, through the
//! `kvbox` fixture: the local `kv` store and a plugin's `rate-limit.check` (the Redis side is
//! in `rate_limits.rs`, next to the Redis it needs).

use http::Request;
use portcullis_tests::*;
use std::path::Path;

fn req(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Request<BoxBody> {
    let mut b = Request::get(format!("http://{addr}{path}")).header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body("")).expect("request")
}

fn json(b: &bytes::Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("json: {}", String::from_utf8_lossy(b)))
}

/// The states of the one passport for `path`.
async fn states(admin: std::net::SocketAddr, path: &str) -> Vec<String> {
    let (_, b) = send(admin, get(admin, "/admin/passports")).await;
    let all = json(&b);
    let mine: Vec<&serde_json::Value> = all
        .as_array()
        .expect("passports array")
        .iter()
        .filter(|p| p["path"] == path)
        .collect();
    assert_eq!(mine.len(), 1, "one passport for {path}: {all}");
    mine[0]["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s["state"].as_str().map(str::to_string))
        .collect()
}

const LEGACY_IN: &str = "kind = \"inbound\"\norder = 10\n";
const LEGACY_OUT: &str = "kind = \"outbound\"\norder = 10\n";
const STAMP: &str = "kind = \"inbound\"\norder = 20\n[config]\nset = { \"x-v02\" = \"1\" }\n";
const AUTH: &str = "kind = \"inbound\"\norder = 30\n[match]\npath_prefix = \"/echo/secure\"\n\
                    [config]\nmode = \"api_key\"\nkeys = { team = \"k1\" }\n";

#[tokio::test]
async fn a_0_1_filter_and_0_2_filters_act_side_by_side() {
    let up = Upstream::start("echo").await;
    let dir = temp_dir("versions");
    install_plugin(&dir, "legacy-in", "legacy-v01", LEGACY_IN);
    install_plugin(&dir, "legacy-out", "legacy-v01", LEGACY_OUT);
    install_plugin(&dir, "stamp", "add-header", STAMP);
    install_plugin(&dir, "auth", "auth", AUTH);
    // Every passport kept (a rejection is neither slow nor a failure), to read its states.
    let cfg = basic_config(
        &[("echo", up.addr)],
        &format!("[plugins]\ndir = \"{}\"\n", dir.display()),
    )
    .replacen("[admin]\n", "[admin]\nslow_request_ms = 0\n", 1);
    let gw = gateway(&cfg, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());

    // Each plugin was bound with the version it targets.
    let (_, b) = send(admin, get(admin, "/admin/plugins")).await;
    let listed = json(&b);
    let wit = |name: &str| {
        listed
            .as_array()
            .expect("plugins")
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["wit"].clone())
            .unwrap_or_default()
    };
    assert_eq!(wit("legacy-in"), "0.1.0", "{listed}");
    assert_eq!(wit("legacy-out"), "0.1.0", "{listed}");
    // The SDK targets 0.3.0 now; the 0.2.0 side is `legacy-v02`, built without it.
    assert_eq!(wit("stamp"), "0.3.0", "{listed}");
    assert_eq!(wit("auth"), "0.3.0", "{listed}");

    // Both versions change the request (and the 0.1.0 metadata reaches the upstream side
    // unchanged), and the 0.1.0 outbound filter changes the response.
    let (p, b) = send(addr, req(addr, "/echo/x", &[])).await;
    assert_eq!(p.status, 200);
    let seen = json(&b);
    assert_eq!(seen["headers"]["x-legacy"], "0.1.0", "{seen}");
    assert_eq!(seen["headers"]["x-v02"], "1", "{seen}");
    assert_eq!(header(&p, "x-legacy-out"), "200");

    // The 0.1.0 rejection: as it always was, no headers of its own, stamped as a rejection.
    let (p, b) = send(addr, req(addr, "/echo/old", &[("x-legacy-reject", "1")])).await;
    assert_eq!(p.status, 401);
    assert_eq!(&b[..], b"legacy says no\n");
    assert_eq!(header(&p, "portcullis-error"), "plugin-rejected");
    assert_eq!(header(&p, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&p, "www-authenticate"), "");
    assert_eq!(header(&p, "x-legacy-out"), "401", "outbound filters see it");
    assert!(
        states(admin, "/echo/old")
            .await
            .iter()
            .any(|s| s == "PLUGIN_REJECTED"),
        "a 0.1.0 reject is stamped as one"
    );

    // The 0.2.0 rejection carries `www-authenticate`, and is stamped the same way.
    let before = up.requests();
    let (p, b) = send(addr, req(addr, "/echo/secure", &[])).await;
    assert_eq!(p.status, 401);
    assert_eq!(&b[..], b"unauthorized: missing API key\n");
    assert_eq!(header(&p, "www-authenticate"), "Bearer");
    assert_eq!(header(&p, "portcullis-error"), "plugin-rejected");
    assert_eq!(header(&p, "x-legacy-out"), "401");
    assert!(states(admin, "/echo/secure")
        .await
        .iter()
        .any(|s| s == "PLUGIN_REJECTED"));
    assert_eq!(
        up.requests(),
        before,
        "a rejected request never reaches the upstream"
    );

    let (p, b) = send(addr, req(addr, "/echo/secure", &[("x-api-key", "k1")])).await;
    assert_eq!(p.status, 200);
    let seen = json(&b);
    assert_eq!(seen["headers"]["x-portcullis-principal"], "team", "{seen}");
    assert_eq!(seen["headers"]["x-legacy"], "0.1.0", "{seen}");
    gw.shutdown().await;
}

/// The one behaviour 0.2.0 changed for calls: a malformed call is `invalid-call` for a 0.2.0
/// endpoint, and stays `limit-exceeded` (same reason) for a 0.1.0 one.
#[tokio::test]
async fn a_malformed_call_is_invalid_call_in_0_2_and_still_limit_exceeded_in_0_1() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("versions-ep");
    install_plugin(&dir, "old", "legacy-v01-endpoint", "kind = \"endpoint\"\n");
    install_plugin(
        &dir,
        "new",
        "fanout",
        "kind = \"endpoint\"\n[config]\nclusters = \"up\"\ntimeout_ms = 0\n",
    );
    let cfg = basic_config(
        &[("up", up.addr)],
        &format!(
            "[[route]]\nname = \"old\"\nmatch = {{ path_prefix = \"/old\" }}\nendpoint = \"old\"\n\
             [[route]]\nname = \"new\"\nmatch = {{ path_prefix = \"/new\" }}\nendpoint = \"new\"\n\
             [plugins]\ndir = \"{}\"\n",
            dir.display()
        ),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let (p, b) = send(addr, get(addr, "/old?cluster=up")).await;
    assert_eq!(p.status, 200);
    assert_eq!(&b[..], b"status 200\n", "a 0.1.0 endpoint's calls work");
    let (_, b) = send(addr, get(addr, "/old?cluster=up&timeout_ms=0")).await;
    assert_eq!(
        String::from_utf8_lossy(&b),
        "limit-exceeded: timeout-ms must be greater than 0\n"
    );

    let (p, b) = send(addr, get(addr, "/new")).await;
    assert_eq!(p.status, 200);
    let v = json(&b);
    assert_eq!(
        v["results"][0]["error"], "invalid call: timeout-ms must be greater than 0",
        "{v}"
    );
    gw.shutdown().await;
}

/// A rejection whose headers the gateway refuses is still a rejection, even from a
/// `fail_open` filter (a bad header must never let a refused request through): answered
/// without the headers, and counted as the filter's bad output.
#[tokio::test]
async fn a_rejection_with_refused_headers_still_rejects_under_fail_open() {
    let up = Upstream::start("echo").await;
    let dir = temp_dir("versions-owned");
    install_plugin(
        &dir,
        "owned",
        "testbed",
        "kind = \"inbound\"\nfailure = \"fail_open\"\n[config]\nmode = \"reject-owned\"\n",
    );
    let cfg = basic_config(
        &[("echo", up.addr)],
        &format!("[plugins]\ndir = \"{}\"\n", dir.display()),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    let (p, b) = send(addr, get(addr, "/echo/x")).await;
    assert_eq!(p.status, 401);
    assert_eq!(&b[..], b"testbed says no\n");
    assert_eq!(header(&p, "portcullis-error"), "plugin-rejected");
    assert_eq!(header(&p, "www-authenticate"), "", "all of them or none");
    assert_eq!(up.requests(), 0, "the request never reached the upstream");
    let m = metrics(admin).await;
    assert_eq!(
        sample(
            &m,
            "portcullis_plugin_failures_total{plugin=\"owned\",kind=\"bad-output\"}"
        ),
        Some(1.0),
        "{m}"
    );
    gw.shutdown().await;
}

/// `bytes` with every `from` replaced by `to` (same length, so the component stays valid).
fn patched(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut i = 0;
    let mut hits = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            hits += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "{} not found", String::from_utf8_lossy(from));
    out
}

async fn boot_error(wasm: &[u8]) -> String {
    let dir = temp_dir("versions-bad");
    install_plugin_bytes(&dir, "odd", wasm, "kind = \"inbound\"\n");
    let cfg = basic_config(&[], &format!("[plugins]\ndir = \"{}\"\n", dir.display()));
    let cfg = portcullis::Config::parse(&cfg, Path::new(".")).expect("config");
    match portcullis::Gateway::start(cfg).await {
        Ok(gw) => {
            gw.shutdown().await;
            panic!("a component for no served version booted");
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_component_for_a_version_not_served_is_refused_naming_the_served_ones() {
    let legacy = std::fs::read(guest("legacy-v01")).expect("fixture built");
    // The same component, claiming a version this gateway never served.
    let mut future = legacy.clone();
    for iface in ["types", "log", "config", "metrics"] {
        let from = format!("portcullis:plugin/{iface}@0.1.0");
        let to = format!("portcullis:plugin/{iface}@0.9.0");
        if legacy.windows(from.len()).any(|w| w == from.as_bytes()) {
            future = patched(&future, from.as_bytes(), to.as_bytes());
        }
    }
    let err = boot_error(&future).await;
    assert!(
        err.contains("odd.wasm")
            && err.contains("portcullis:plugin@0.9.0")
            && err.contains("serves 0.1.0, 0.2.0"),
        "{err}"
    );

    // One interface of 0.1.0 and one of 0.2.0: a component targets one version.
    let mixed = patched(
        &legacy,
        b"portcullis:plugin/log@0.1.0",
        b"portcullis:plugin/log@0.2.0",
    );
    let err = boot_error(&mixed).await;
    assert!(err.contains("versions 0.1.0 and 0.2.0 at once"), "{err}");
}

/// One request to a `kvbox` filter (mounted at `/<name>`): the text of its answer.
async fn kv(addr: std::net::SocketAddr, name: &str, query: &str) -> String {
    let (p, b) = send(addr, get(addr, &format!("/{name}?{query}"))).await;
    assert_eq!(
        p.status,
        200,
        "{name}?{query}: {}",
        String::from_utf8_lossy(&b)
    );
    String::from_utf8_lossy(&b).trim_end().to_string()
}

fn kvbox_manifest(name: &str, kv: &str) -> String {
    format!("kind = \"inbound\"\n[match]\npath_prefix = \"/{name}\"\n[kv]\n{kv}")
}

/// A 0.1.0, a 0.2.0 and a 0.3.0 plugin in one gateway, each bound with its own version.
#[tokio::test]
async fn plugins_of_all_three_versions_load_and_act_side_by_side() {
    let up = Upstream::start("echo").await;
    let dir = temp_dir("versions3");
    install_plugin(&dir, "legacy-in", "legacy-v01", LEGACY_IN);
    install_plugin(
        &dir,
        "v02",
        "legacy-v02",
        "kind = \"inbound\"\norder = 20\n",
    );
    install_plugin(&dir, "box", "kvbox", &kvbox_manifest("box", ""));
    let cfg = basic_config(
        &[("echo", up.addr)],
        &format!("[plugins]\ndir = \"{}\"\n", dir.display()),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    for (name, v) in [("legacy-in", "0.1.0"), ("v02", "0.2.0"), ("box", "0.3.0")] {
        assert_eq!(admin_plugin(admin, name).await["wit"], v, "{name}");
    }
    let (p, b) = send(addr, req(addr, "/echo/x", &[])).await;
    assert_eq!(p.status, 200);
    let seen = json(&b);
    assert_eq!(seen["headers"]["x-legacy"], "0.1.0", "{seen}");
    assert_eq!(seen["headers"]["x-v02"], "1", "{seen}");
    let (p, _) = send(addr, req(addr, "/echo/x", &[("x-v02-reject", "1")])).await;
    assert_eq!(
        (p.status.as_u16(), header(&p, "www-authenticate")),
        (401, "Bearer".into())
    );
    assert_eq!(kv(addr, "box", "op=set&k=a&v=1").await, "ok");
    assert_eq!(kv(addr, "box", "op=get&k=a").await, "some:1");
}

/// The local store: set, get, delete, increment, TTL expiry, the manifest's bounds, and one
/// namespace per plugin (the same component under two names shares nothing).
#[tokio::test]
async fn kv_values_are_bounded_expire_and_are_namespaced_per_plugin() {
    let dir = temp_dir("kv-local");
    let limits = "max_keys = 2\nmax_key_bytes = 8\nmax_value_bytes = 16\nmax_ttl_ms = 60000\n";
    install_plugin(&dir, "one", "kvbox", &kvbox_manifest("one", limits));
    install_plugin(&dir, "two", "kvbox", &kvbox_manifest("two", limits));
    let cfg = basic_config(&[], &format!("[plugins]\ndir = \"{}\"\n", dir.display()));
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    assert_eq!(kv(addr, "one", "op=get&k=a").await, "none");
    assert_eq!(kv(addr, "one", "op=set&k=a&v=hello").await, "ok");
    assert_eq!(kv(addr, "one", "op=get&k=a").await, "some:hello");
    assert_eq!(
        kv(addr, "two", "op=get&k=a").await,
        "none",
        "another plugin's namespace"
    );
    assert_eq!(kv(addr, "two", "op=set&k=a&v=other").await, "ok");
    assert_eq!(kv(addr, "one", "op=get&k=a").await, "some:hello");

    // Bounds: key size, value size, key count (an existing key can still be set).
    assert_eq!(kv(addr, "one", "op=get&k=123456789").await, "err:too-large");
    assert_eq!(kv(addr, "one", "op=set&k=b&v=@17").await, "err:too-large");
    assert_eq!(kv(addr, "one", "op=set&k=b&v=@16").await, "ok");
    assert_eq!(
        kv(addr, "one", "op=set&k=c&v=1").await,
        "err:limit-exceeded"
    );
    assert_eq!(kv(addr, "one", "op=set&k=a&v=again").await, "ok");

    // Delete frees the place; increment counts from 0 and refuses text.
    assert_eq!(kv(addr, "one", "op=del&k=b").await, "true");
    assert_eq!(kv(addr, "one", "op=del&k=b").await, "false");
    assert_eq!(kv(addr, "one", "op=incr&k=n&d=5").await, "5");
    assert_eq!(kv(addr, "one", "op=incr&k=n&d=-2").await, "3");
    assert_eq!(kv(addr, "one", "op=get&k=n").await, "some:3");
    assert_eq!(kv(addr, "one", "op=incr&k=a&d=1").await, "err:not-a-number");

    // A TTL expires the value and frees its place.
    assert_eq!(kv(addr, "two", "op=set&k=t&v=soon&ttl=50").await, "ok");
    assert_eq!(kv(addr, "two", "op=get&k=t").await, "some:soon");
    let expired = eventually_async(std::time::Duration::from_secs(3), || async move {
        kv(addr, "two", "op=get&k=t").await == "none"
    })
    .await;
    assert!(expired, "a 50 ms TTL expired within 3 s");
    assert_eq!(
        kv(addr, "two", "op=set&k=u&v=1").await,
        "ok",
        "its place is free"
    );
}

/// `rate-limit.check` from a plugin: a local limit of 3 allows 3 checks of one key, then
/// denies with a retry time; another key, and another plugin's same key, have their own
/// budgets; an unknown limit is an error, not a decision.
#[tokio::test]
async fn a_plugin_rate_limit_check_denies_after_n() {
    let dir = temp_dir("kv-rl");
    install_plugin(&dir, "one", "kvbox", &kvbox_manifest("one", ""));
    install_plugin(&dir, "two", "kvbox", &kvbox_manifest("two", ""));
    let cfg = basic_config(
        &[],
        &format!(
            "[plugins]\ndir = \"{}\"\n[[rate_limit]]\nname = \"tenant\"\nlimit = 3\nwindow_ms = 60000\n\
             match = {{ path_prefix = \"/nothing-routes-here\" }}\n",
            dir.display()
        ),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    for left in [2, 1, 0] {
        assert_eq!(
            kv(addr, "one", "op=rl&name=tenant&k=acme").await,
            format!("allowed=true remaining={left} retry=0 fallback=false")
        );
    }
    // Denied, with the time until the next check fits: one window / limit = 20 s.
    let denied = kv(addr, "one", "op=rl&name=tenant&k=acme").await;
    let retry: u64 = denied
        .strip_prefix("allowed=false remaining=0 retry=")
        .and_then(|r| r.strip_suffix(" fallback=false"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("a denial: {denied}"));
    assert!((19_000..=20_000).contains(&retry), "{denied}");
    assert!(kv(addr, "one", "op=rl&name=tenant&k=other")
        .await
        .starts_with("allowed=true"));
    assert!(kv(addr, "two", "op=rl&name=tenant&k=acme")
        .await
        .starts_with("allowed=true"));
    assert_eq!(
        kv(addr, "one", "op=rl&name=nope&k=acme").await,
        "err:unknown-limit"
    );
    assert_eq!(
        kv(addr, "one", "op=rl&name=tenant&k=").await,
        "err:invalid-key"
    );
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(&m, "portcullis_rate_limited_total{limit=\"tenant\"}"),
        Some(1.0)
    );
}
