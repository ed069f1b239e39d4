//! A real headless browser for the dashboard tests: Debian's `chromium`, driven over WebDriver
//! by `chromedriver` (the `chromium-driver` package) through `fantoccini`. Both packages are
//! installed on first use if missing (as root, with apt-get), so `cargo test` needs no manual
//! step on a fresh machine.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Installs chromium and chromium-driver from Debian when they are missing.
fn ensure_installed() {
    crate::debian::ensure(
        &[CHROMIUM, CHROMEDRIVER],
        &["chromium", "chromium-driver"],
        "the dashboard tests",
    );
}

/// A headless Chromium session at 1280×800; the driver process ends with it.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Child,
}

impl Browser {
    pub async fn start() -> Browser {
        ensure_installed();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,800", "--no-first-run", "--disable-extensions",
                ],
            }),
        );
        let started = Instant::now();
        let client = loop {
            match fantoccini::ClientBuilder::new(
                hyper_util::client::legacy::connect::HttpConnector::new(),
            )
            .capabilities(caps.clone())
            .connect(&url)
            .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver did not start a session: {e}"),
            }
        };
        Browser { client, driver }
    }

    /// Polls `f` every 100 ms until it gives `Some`, for at most `within`.
    pub async fn until<T, F, Fut>(&self, within: Duration, what: &str, mut f: F) -> T
    where
        F: FnMut(fantoccini::Client) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let end = Instant::now() + within;
        loop {
            if let Some(v) = f(self.client.clone()).await {
                return v;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let e = self.client.find(fantoccini::Locator::Css(css)).await.ok()?;
        e.text().await.ok()
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to click: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    /// Types `text` into the field matching `css`, replacing what it held.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to type into: {e}"));
        // A file input cannot be cleared; it takes the path as typed.
        let _ = e.clear().await;
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
    }

    /// Saves a PNG of the window.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
