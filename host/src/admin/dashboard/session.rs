//! The dashboard's sign-in: `EventSource` cannot send an `Authorization` header, so the page
//! trades the read token for a cookie once (`POST /dashboard/login`), and the cookie stands
//! for the token on reads only. It is stateless: `expiry.mac`, where the mac is an
//! HMAC-SHA256 of the expiry keyed by the token it was issued for, so rotating the token by a
//! reload signs every session out, and nothing is stored per session. HttpOnly (no script
//! reads it), SameSite=Strict (no other site's page sends it). Mutations never accept it.

use ring::hmac;

pub(crate) const COOKIE: &str = "portcullis_dashboard";
/// A session lasts this long; then the page asks for the token again.
const LIFETIME_S: u64 = 12 * 3600;

fn mac(token: &str, expiry: u64) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    hmac::sign(&key, format!("portcullis-dashboard:{expiry}").as_bytes())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `Set-Cookie` value of a new session for `token`.
pub(crate) fn issue(token: &str, now_s: u64) -> String {
    let expiry = now_s + LIFETIME_S;
    format!(
        "{COOKIE}={expiry}.{}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_S}",
        hex(mac(token, expiry).as_ref())
    )
}

/// The `Set-Cookie` value that ends a session.
pub(crate) fn clear() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether a `Cookie` header carries a live session issued for one of `tokens`.
pub(crate) fn valid(cookie_header: &str, tokens: &[&str], now_s: u64) -> bool {
    let Some(value) = cookie_header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
    else {
        return false;
    };
    let Some((expiry, given)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expiry), Some(given)) = (expiry.parse::<u64>(), unhex(given)) else {
        return false;
    };
    if expiry <= now_s || expiry > now_s + LIFETIME_S {
        return false;
    }
    tokens.iter().any(|t| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, t.as_bytes());
        hmac::verify(
            &key,
            format!("portcullis-dashboard:{expiry}").as_bytes(),
            &given,
        )
        .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_string()
    }

    #[test]
    fn a_session_holds_for_its_token_until_it_expires() {
        let c = value(&issue("reader", 1000));
        assert!(valid(&c, &["reader"], 1001));
        assert!(valid(&format!("a=b; {c}; x=y"), &["other", "reader"], 1001));
        assert!(!valid(&c, &["rotated"], 1001), "a new token signs it out");
        assert!(!valid(&c, &["reader"], 1000 + LIFETIME_S), "expired");
        let forged = c.replace(
            &format!("{}.", 1000 + LIFETIME_S),
            &format!("{}.", 2000 + LIFETIME_S),
        );
        assert!(!valid(&forged, &["reader"], 1001), "expiry is signed");
        assert!(!valid("portcullis_dashboard=garbage", &["reader"], 1001));
        assert!(!valid("", &["reader"], 1001));
        assert!(issue("t", 0).contains("HttpOnly; SameSite=Strict"));
    }
}
