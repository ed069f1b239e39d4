//! `cargo run -p portcullis-examples --bin demo`: demo services plus a gateway, on loopback.
//!
//! Starts four demo services (profile, recommendations, ratings, artwork) on 127.0.0.1:7101-7104
//! and a gateway from `examples/demo/portcullis.toml` (public 127.0.0.1:8080, admin :9901),
//! then prints curl lines to try. Ctrl-C drains and stops.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use portcullis_examples::{spawn, Behavior};
use std::path::PathBuf;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    portcullis::init_logging();
    let services = [
        ("127.0.0.1:7101", Behavior::from_env("profile", 5, 0.0)),
        (
            "127.0.0.1:7102",
            Behavior::from_env("recommendations", 20, 0.0),
        ),
        ("127.0.0.1:7103", Behavior::from_env("ratings", 10, 0.2)),
        ("127.0.0.1:7104", Behavior::from_env("artwork", 15, 0.0)),
    ];
    for (addr, b) in services {
        spawn(addr, b).await?;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo");
    prepare_plugins(&dir)?;
    let path = dir.join("portcullis.toml");
    let cfg = portcullis::Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gw = portcullis::Gateway::start(cfg)
        .await
        .context("starting the demo gateway")?;
    let public = gw.listener_addr("public").context("listener `public`")?;
    let admin = gw.admin_addr();
    println!(
        "\nPortcullis demo is up. Try:\n\
         \n  curl -i http://{public}/profile/1\
         \n  curl -i http://{public}/recommendations?user=1\
         \n  curl -i http://{public}/ratings?user=1        # fails 20% of the time, by design\
         \n  curl -s http://{public}/api/home?user=1 | jq    # one call, four services (endpoint plugin)\
         \n  curl -s http://{public}/api/home-js?user=1 | jq # the same endpoint, in JavaScript\
         \n  curl -i http://{public}/admin-api/ping         # 401: the auth filter wants an API key\
         \n  curl -i -H 'x-api-key: demo-key' http://{public}/admin-api/ping\
         \n  curl -i http://{public}/nothing               # 404 with portcullis-error: no-route\
         \n  curl -s http://{admin}/metrics | grep portcullis_requests_total\
         \n  curl -s http://{admin}/admin/passports\
         \n  curl -s http://{admin}/admin/plugins\
         \n\nThe live dashboard: http://{admin}/\
         \n\nCtrl-C to stop.\n"
    );
    gw.run_until(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

/// The demo's plugins: `(plugin name, guest crate, manifest)`. Manifests live in
/// `examples/demo/plugins/`; the `.wasm` files come from this crate's build script, which
/// builds `plugins/` for wasm32-wasip2.
const PLUGINS: [(&str, &str); 5] = [
    ("home", "home"),
    ("auth", "auth"),
    ("cors-preflight", "cors"),
    ("cors", "cors"),
    ("security-headers", "add-header"),
];

/// The demo's JavaScript/Python plugins: `(plugin name, built name)`, built by this crate's
/// build script from `plugins/js/` and `plugins/python/` (`plugins/build_js_py.rs`).
const JS_PY_PLUGINS: [(&str, &str); 1] = [("home-js", "home_js")];

/// Copies the freshly built plugins next to their manifests, so the gateway loads them like
/// any operator-provided plugin (and picks up edits to the manifests live).
fn prepare_plugins(dir: &std::path::Path) -> anyhow::Result<()> {
    let guests = std::path::Path::new(env!("PORTCULLIS_GUEST_DIR"));
    let jspy = std::path::Path::new(env!("PORTCULLIS_JSPY_DIR"));
    let plugins = dir.join("plugins");
    let rust = PLUGINS.iter().map(|(name, krate)| {
        (
            *name,
            guests.join(format!("{}.wasm", krate.replace('-', "_"))),
        )
    });
    let other = JS_PY_PLUGINS
        .iter()
        .map(|(name, built)| (*name, jspy.join(format!("{built}.wasm"))));
    for (name, from) in rust.chain(other) {
        let to = plugins.join(format!("{name}.wasm"));
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}
