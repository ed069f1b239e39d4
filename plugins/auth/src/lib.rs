//! Authentication by API key or by JWT (HS256).
//!
//! ```toml
//! kind = "inbound"
//! order = 10
//! failure = "fail_closed"      # an auth filter that breaks must not let traffic through
//! [config]
//! mode = "api_key"             # or "jwt"
//! # api_key mode:
//! header = "x-api-key"
//! keys = { team-a = "s3cr3t", team-b = "0th3r" }   # principal = key
//! # jwt mode (token from `Authorization: Bearer …`):
//! secret = "shared-hs256-secret"
//! issuer = "https://auth.example.com"   # optional: required `iss`
//! audience = "portcullis"               # optional: required `aud`
//! leeway_s = 30                         # clock skew allowed on exp/nbf
//! ```
//!
//! On success the request gets `x-portcullis-principal: <name or sub>` (any incoming value is
//! replaced, so clients cannot forge it) and metadata `principal`. On failure: 401 with
//! `WWW-Authenticate`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use portcullis_sdk::prelude::*;
use sha2::Sha256;
use std::collections::BTreeMap;

struct Auth;

const PRINCIPAL: &str = "x-portcullis-principal";

fn unauthorized(why: &str) -> InboundAction {
    metrics::count("auth_rejected", 1);
    InboundAction::Respond(Response {
        status: 401,
        headers: vec![
            ("www-authenticate".into(), "Bearer".into()),
            ("content-type".into(), "text/plain; charset=utf-8".into()),
            ("portcullis-error".into(), "plugin-rejected".into()),
        ],
        body: format!("unauthorized: {why}\n").into_bytes(),
    })
}

/// Constant-time comparison, so a key cannot be guessed byte by byte from timings.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn api_key(req: &RequestView) -> Result<String, &'static str> {
    let header = config::get_or("header", "x-api-key");
    let given = req.header(&header).ok_or("missing API key")?;
    let keys: BTreeMap<String, String> = config::parse("keys").unwrap_or_default();
    keys.iter()
        .find(|(_, k)| ct_eq(k.as_bytes(), given.as_bytes()))
        .map(|(name, _)| name.clone())
        .ok_or("invalid API key")
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Verifies an HS256 JWT and returns its `sub`.
pub fn verify_jwt(token: &str, secret: &[u8], now: i64) -> Result<String, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token");
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed token header")?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err("unsupported algorithm (HS256 only)");
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "malformed signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| "bad secret")?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&sig).map_err(|_| "bad signature")?;
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed claims")?;
    let leeway: i64 = config::parse("leeway_s").unwrap_or(30);
    if let Some(exp) = claims.get("exp").and_then(|v| v.as_i64()) {
        if now > exp + leeway {
            return Err("token expired");
        }
    }
    if let Some(nbf) = claims.get("nbf").and_then(|v| v.as_i64()) {
        if now + leeway < nbf {
            return Err("token not yet valid");
        }
    }
    if let Some(iss) = config::get("issuer") {
        if claims.get("iss").and_then(|v| v.as_str()) != Some(iss.as_str()) {
            return Err("wrong issuer");
        }
    }
    if let Some(aud) = config::get("audience") {
        let ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => *a == aud,
            Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(&aud)),
            _ => false,
        };
        if !ok {
            return Err("wrong audience");
        }
    }
    Ok(claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string())
}

fn jwt(req: &RequestView) -> Result<String, &'static str> {
    let Some(secret) = config::get("secret") else {
        return Err("gateway misconfigured: no secret");
    };
    let header = req.header("authorization");
    let token = header
        .as_deref()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or("missing bearer token")?;
    verify_jwt(token.trim(), secret.as_bytes(), now_s())
}

impl Filter for Auth {
    fn on_request(req: &RequestView) -> InboundAction {
        let result = match config::get_or("mode", "api_key").as_str() {
            "api_key" => api_key(req),
            "jwt" => jwt(req),
            _ => Err("gateway misconfigured: mode must be api_key or jwt"),
        };
        match result {
            Ok(principal) => {
                metrics::count("auth_accepted", 1);
                Changes::new()
                    .set_header(PRINCIPAL, &principal)
                    .meta("principal", &principal)
                    .inbound()
            }
            Err(why) => unauthorized(why),
        }
    }
}

export_filter!(Auth);
