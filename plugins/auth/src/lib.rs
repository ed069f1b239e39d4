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
//! replaced, so clients cannot forge it) and metadata `principal`. On failure the request is
//! rejected (WIT 0.2.0 rejection headers): 401 with `www-authenticate: Bearer` and
//! `portcullis-error: plugin-rejected`, recorded as a rejection in the passport.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use portcullis_sdk::prelude::*;
use sha2::Sha256;
use std::collections::BTreeMap;

struct Auth;

const PRINCIPAL: &str = "x-portcullis-principal";

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default = "api_key_mode")]
    mode: String,
    #[serde(default = "api_key_header")]
    header: String,
    #[serde(default)]
    keys: BTreeMap<String, String>,
    secret: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    #[serde(default = "thirty")]
    leeway_s: i64,
}

fn api_key_mode() -> String {
    "api_key".into()
}
fn api_key_header() -> String {
    "x-api-key".into()
}
fn thirty() -> i64 {
    30
}

static CONFIG: Config<Settings> = Config::new();

fn unauthorized(why: &str) -> InboundAction {
    metrics::count("auth_rejected", 1);
    reject_with(
        401,
        &format!("unauthorized: {why}"),
        &[("www-authenticate", "Bearer")],
    )
}

/// Constant-time comparison, so a key cannot be guessed byte by byte from timings.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn api_key(cfg: &Settings, req: &RequestView) -> Result<String, &'static str> {
    let given = req.header(&cfg.header).ok_or("missing API key")?;
    cfg.keys
        .iter()
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

/// Verifies an HS256 JWT against `cfg` and returns its `sub`.
fn verify_jwt(
    cfg: &Settings,
    token: &str,
    secret: &[u8],
    now: i64,
) -> Result<String, &'static str> {
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
    let leeway = cfg.leeway_s;
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
    if let Some(iss) = &cfg.issuer {
        if claims.get("iss").and_then(|v| v.as_str()) != Some(iss.as_str()) {
            return Err("wrong issuer");
        }
    }
    if let Some(aud) = &cfg.audience {
        let ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == aud,
            Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(aud)),
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

fn jwt(cfg: &Settings, req: &RequestView) -> Result<String, &'static str> {
    let Some(secret) = &cfg.secret else {
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
    verify_jwt(cfg, token.trim(), secret.as_bytes(), now_s())
}

impl Filter for Auth {
    fn on_request(req: &RequestView) -> InboundAction {
        let cfg = CONFIG.get();
        let result = match cfg.mode.as_str() {
            "api_key" => api_key(cfg, req),
            "jwt" => jwt(cfg, req),
            _ => Err("gateway misconfigured: mode must be api_key or jwt"),
        };
        match result {
            Ok(principal) => {
                metrics::count("auth_accepted", 1);
                RequestEdit::new()
                    .set_header(PRINCIPAL, &principal)
                    .meta("principal", &principal)
                    .action()
            }
            Err(why) => unauthorized(why),
        }
    }
}

export_filter!(Auth);
