//! Sticky sessions: a cookie that keeps a client on one backend app while it
//! is healthy (`LB_STICKY_COOKIE`). Heroku's router offers session affinity
//! only among the dynos of one app; across a pipeline's apps only the balancer
//! can.
//!
//! The cookie's value names the backend without revealing it: a keyed hash
//! (HMAC-SHA256, truncated) of the backend's URL identity. The key comes from
//! `LB_STICKY_SECRET`, else from the Heroku API key, so every balancer dyno
//! with the same configuration issues and honours the same tokens
//! (`heroku ps:scale web=2` keeps users where they are). A cookie that names
//! nothing usable (garbage, tampered, an app gone or down) is simply ignored:
//! the request is balanced by the policy and gets a fresh cookie. The proxy
//! strips our cookie before forwarding; the app's own cookies pass untouched.

pub use crate::values::valid_cookie_name;

use crate::backend::AppTarget;
use http::HeaderValue;
use ring::hmac;
use std::fmt::Write;
use std::time::Duration;

/// Hex digits in a token (16 bytes of the MAC).
const TOKEN_LEN: usize = 32;

/// The sticky cookie's settings and key.
pub struct StickyCookie {
    name: String,
    key: hmac::Key,
    ttl: Option<Duration>,
}

impl StickyCookie {
    /// `secret` keys the tokens; the same secret gives the same tokens everywhere.
    pub fn new(name: String, secret: &[u8], ttl: Option<Duration>) -> Self {
        StickyCookie {
            name,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            ttl,
        }
    }

    /// The token for `target` (cached on the target).
    pub fn token<'a>(&self, target: &'a AppTarget) -> &'a str {
        target.sticky_token(|| {
            let tag = hmac::sign(&self.key, target.url_text().as_bytes());
            let mut token = String::with_capacity(TOKEN_LEN);
            for byte in &tag.as_ref()[..TOKEN_LEN / 2] {
                let _ = write!(token, "{byte:02x}");
            }
            token
        })
    }

    /// Our cookie's value among the request's `Cookie` headers, if it has
    /// the shape of a token (anything else counts as absent). Works on bytes:
    /// browsers send non-ASCII cookie values, and one of them in the same
    /// header must not hide ours.
    pub fn find<'a>(
        &self,
        cookie_headers: impl Iterator<Item = &'a HeaderValue>,
    ) -> Option<String> {
        let value = cookie_headers
            .flat_map(|header| cookie_pairs(header.as_bytes()))
            .find(|(name, _)| *name == self.name.as_bytes())
            .map(|(_, value)| unquote(value))?;
        (value.len() == TOKEN_LEN && value.iter().all(u8::is_ascii_hexdigit))
            .then(|| String::from_utf8_lossy(value).into_owned())
    }

    /// A `Cookie` header value without our cookie: `None` when ours is not
    /// in it (pass the header on untouched), else the other pairs, byte for
    /// byte and in order, joined by `; ` (empty when nothing else is left).
    pub fn strip(&self, cookie_header: &[u8]) -> Option<Vec<u8>> {
        let name = self.name.as_bytes();
        // Most headers never mention us: skip the split for them.
        if !cookie_header
            .windows(name.len())
            .any(|window| window == name)
            || !cookie_pairs(cookie_header).any(|(pair_name, _)| pair_name == name)
        {
            return None;
        }
        let mut rest = Vec::with_capacity(cookie_header.len());
        for pair in cookie_header.split(|byte| *byte == b';').map(trim) {
            let ours = pair_name(pair) == name;
            if pair.is_empty() || ours {
                continue;
            }
            if !rest.is_empty() {
                rest.extend_from_slice(b"; ");
            }
            rest.extend_from_slice(pair);
        }
        Some(rest)
    }

    /// The `Set-Cookie` value pinning a client to `token`.
    pub fn set_cookie(&self, token: &str, secure: bool) -> String {
        let mut value = format!("{}={token}; Path=/; HttpOnly; SameSite=Lax", self.name);
        if secure {
            value.push_str("; Secure");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(value, "; Max-Age={}", ttl.as_secs());
        }
        value
    }
}

/// The `name=value` pairs of a `Cookie` header, trimmed; pairs without `=` are skipped.
fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|byte| *byte == b';').filter_map(|pair| {
        let equals = pair.iter().position(|byte| *byte == b'=')?;
        Some((trim(&pair[..equals]), trim(&pair[equals + 1..])))
    })
}

/// The name of one cookie pair (the whole pair when it has no `=`).
fn pair_name(pair: &[u8]) -> &[u8] {
    match pair.iter().position(|byte| *byte == b'=') {
        Some(equals) => trim(&pair[..equals]),
        None => pair,
    }
}

/// `value` without the optional double quotes of RFC 6265.
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| !matches!(byte, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|byte| !matches!(byte, b' ' | b'\t'))
        .map_or(start, |last| last + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendUrl;

    fn target(url: &str) -> AppTarget {
        AppTarget::new(1, BackendUrl::parse(url).expect("url"), "app".into())
    }

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).expect("header")
    }

    #[test]
    fn tokens_are_opaque_and_the_same_for_the_same_secret() {
        let one = StickyCookie::new("lb".into(), b"secret", None);
        let two = StickyCookie::new("lb".into(), b"secret", None);
        let other = StickyCookie::new("lb".into(), b"other", None);
        let url = "https://shop-1.herokuapp.com";
        let token = one.token(&target(url)).to_string();
        assert_eq!(token, two.token(&target(url)));
        assert_ne!(token, other.token(&target(url)));
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(!token.contains("shop"));
    }

    #[test]
    fn only_a_well_formed_token_in_our_cookie_is_found() {
        let sticky = StickyCookie::new("lb".into(), b"k", None);
        let token = "0123456789abcdef0123456789abcdef";
        let headers = [header("a=1; lb=0123456789abcdef0123456789abcdef; b=2")];
        assert_eq!(sticky.find(headers.iter()).as_deref(), Some(token));
        for bad in [
            "lb=garbage",
            "lb=",
            "lb=0123",
            "xlb=0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(sticky.find([header(bad)].iter()), None, "{bad}");
        }
    }

    #[test]
    fn stripping_keeps_the_apps_cookies_byte_for_byte() {
        let sticky = StickyCookie::new("lb".into(), b"k", None);
        let strip = |header: &[u8]| sticky.strip(header);
        assert_eq!(
            strip(b"a=1; lb=xyz; b=2").as_deref(),
            Some(&b"a=1; b=2"[..])
        );
        assert_eq!(strip(b"lb=xyz").as_deref(), Some(&b""[..]));
        // Not ours: left alone (None), whatever its bytes.
        assert_eq!(strip(b"lbx=1; xlb=2"), None);
        assert_eq!(strip("name=Zo\u{eb}; theme=dark".as_bytes()), None);
        // A UTF-8 value beside ours survives exactly, in order.
        assert_eq!(
            strip("name=Zo\u{eb}; lbpin=garbage; lb=0a; theme=dark".as_bytes()).as_deref(),
            Some("name=Zo\u{eb}; lbpin=garbage; theme=dark".as_bytes())
        );
    }

    #[test]
    fn our_token_is_found_beside_non_ascii_cookies() {
        let sticky = StickyCookie::new("lb".into(), b"k", None);
        let token = "0123456789abcdef0123456789abcdef";
        let raw = format!("name=Zo\u{eb}; lb=\"{token}\"; theme=dark");
        let headers = [HeaderValue::from_bytes(raw.as_bytes()).expect("obs-text is allowed")];
        assert_eq!(sticky.find(headers.iter()).as_deref(), Some(token));
    }

    #[test]
    fn set_cookie_has_the_attributes_asked_for() {
        let sticky = StickyCookie::new("lb".into(), b"k", Some(Duration::from_secs(3600)));
        assert_eq!(
            sticky.set_cookie("abc", true),
            "lb=abc; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=3600"
        );
        assert!(valid_cookie_name("heroku-lb_sticky"));
        assert!(
            !valid_cookie_name("bad name") && !valid_cookie_name("a;b") && !valid_cookie_name("")
        );
    }
}
