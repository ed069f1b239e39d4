//! The one way the gateway connects to Redis (`[redis]`): the global rate limiter, the plugin
//! KV store and the fleet plugin store each hold a [`ConnectionManager`] made here, so URL
//! parsing, AUTH, TLS trust and the reconnect policy are the same for all three.
//!
//! A password in the URL (`redis://:secret@host:port`, or `user:secret@` for an ACL user) is
//! sent with `AUTH` on every (re)connect. `rediss://` verifies the server against `[redis] ca`
//! when given (a private CA, as Redis deployments use), else the Web PKI roots.

use crate::config;
use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::time::Duration;

/// A client for `cfg` (no connection is made yet). Fails on a malformed URL, an unreadable
/// `ca`, or a `ca` given for a plain `redis://` URL.
pub(crate) fn client(cfg: &config::Redis) -> anyhow::Result<redis::Client> {
    let Some(ca) = &cfg.ca else {
        return redis::Client::open(cfg.url.as_str()).context("not a Redis URL");
    };
    anyhow::ensure!(
        cfg.url.starts_with("rediss://"),
        "a CA is only used with `rediss://` (TLS) URLs"
    );
    let pem = std::fs::read(ca).with_context(|| format!("cannot read `{}`", ca.display()))?;
    anyhow::ensure!(
        CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()),
        "`{}` holds no PEM certificate",
        ca.display()
    );
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(cfg.url.as_str(), certs).context("not a Redis URL")
}

/// A lazily connecting manager: the first command connects (each attempt bounded by
/// `connect_timeout_ms`), a lost connection is re-made in the background, and every command
/// waits at most `response_timeout`. A gateway therefore starts and serves while Redis is down.
pub(crate) fn manager(
    cfg: &config::Redis,
    response_timeout: Duration,
) -> anyhow::Result<(redis::Client, ConnectionManager)> {
    let client = client(cfg)?;
    let mc = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), mc)?;
    Ok((client, conn))
}
