//! Who sees the status detail and the metrics ([`may_see_detail`]), and
//! what a caller presents: a bearer token, or the password of HTTP Basic auth
//! with any user name ([`presented_token`]), which is what a browser sends
//! for `https://user:TOKEN@…` or after its login prompt.
//!
//! Input: the `Authorization` header and the TCP peer, from `mod.rs`.
//! Output: an [`Access`], from which `mod.rs` picks the answer and `html.rs`
//! the hint. The token is compared in constant time; a malformed header is
//! no token at all, never an error.

use std::net::IpAddr;

/// What a caller may see, and why not when it may not see the detail; the
/// summary page says how to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Detail,
    /// A token is set and the caller did not present it.
    TokenRequired,
    /// No token is set: only loopback callers see the detail.
    LoopbackOnly,
    /// No token is set and every caller comes through Heroku's router.
    NoTokenOnDyno,
}

/// The token a caller presents in `Authorization`: a `Bearer` token, or the
/// password of `Basic base64(user:password)`, whatever the user name. Empty
/// when there is none or it is malformed (then it matches no token).
pub(super) fn presented_token(authorization: Option<&str>) -> String {
    let Some((scheme, credentials)) = authorization.and_then(|value| value.split_once(' ')) else {
        return String::new();
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        credentials.to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        crate::base64::decode(credentials.trim())
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(_, password)| password.to_string())
            })
            .unwrap_or_default()
    } else {
        String::new()
    }
}

/// Who sees the detail and the metrics. With a token: whoever presents it
/// (as a bearer token or a Basic password, [`presented_token`]). Without one: a loopback caller (127.0.0.0/8, ::1), except
/// behind Heroku's router, where every caller's peer is the router and none
/// is local.
pub(super) fn may_see_detail(
    token: Option<&str>,
    presented: &str,
    peer: Option<IpAddr>,
    behind_heroku_router: bool,
) -> bool {
    match token {
        Some(token) => constant_time_eq(presented.trim().as_bytes(), token.as_bytes()),
        None => !behind_heroku_router && peer.is_some_and(|peer| peer.to_canonical().is_loopback()),
    }
}

/// Compare without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        difference |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_callers_off_heroku_see_the_detail() {
        let ip = |raw: &str| Some(raw.parse::<IpAddr>().expect("a test IP"));
        for local in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.0.9",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(may_see_detail(None, "", ip(local), false), "{local}");
            assert!(
                !may_see_detail(None, "", ip(local), true),
                "{local} on a dyno"
            );
        }
        for remote in [
            "10.0.0.1",
            "203.0.113.7",
            "::2",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!may_see_detail(None, "", ip(remote), false), "{remote}");
        }
        assert!(!may_see_detail(None, "", None, false), "no peer: not local");
    }

    #[test]
    fn with_a_token_only_its_bearer_sees_the_detail_wherever_they_are() {
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let remote = Some(IpAddr::from([203, 0, 113, 7]));
        assert!(may_see_detail(Some("s3cret"), "s3cret", remote, true));
        assert!(may_see_detail(Some("s3cret"), " s3cret ", remote, false));
        assert!(!may_see_detail(Some("s3cret"), "", local, false));
        assert!(!may_see_detail(Some("s3cret"), "wrong", local, false));
    }

    #[test]
    fn a_basic_password_or_a_bearer_token_is_the_presented_token() {
        // "anyone:s3cret", "ops:s3cret" (no padding needed), ":s3cret"
        assert_eq!(
            presented_token(Some("Basic YW55b25lOnMzY3JldA==")),
            "s3cret"
        );
        assert_eq!(presented_token(Some("basic b3BzOnMzY3JldA==")), "s3cret");
        assert_eq!(presented_token(Some("Basic OnMzY3JldA==")), "s3cret");
        assert_eq!(presented_token(Some("Bearer s3cret")), "s3cret");
        // "user:pa:ss": the password may contain ':'
        assert_eq!(presented_token(Some("Basic dXNlcjpwYTpzcw==")), "pa:ss");
        for malformed in [
            None,
            Some("Basic"),
            Some("Basic !!!!"),
            Some("Basic YW55b25l"),
            Some("Basic YW55b25lOnMzY3JldA=x"),
            Some("Basic Y"),
            Some("Digest s3cret"),
            Some("s3cret"),
        ] {
            assert_eq!(presented_token(malformed), "", "{malformed:?}");
        }
    }

    #[test]
    fn token_comparison_needs_the_exact_token() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cretx", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
    }
}
