//! The headers each hop adds, as Heroku's router does for its own:
//! `X-Forwarded-For` (appended), and an `X-Request-Id` kept from the client
//! when sane, else generated. Pure functions, used by `upstream_request_filter`
//! and by `forwarded.rs`, which decides whose `X-Forwarded-*` are kept; and
//! [`edit_headers`], how they are written.
//!
//! Why [`edit_headers`] steps around `RequestHeader::insert_header`: Pingora
//! hands `upstream_request_filter` a copy of the client's head that keeps
//! each header name's case in a second map, and every insert through it
//! parses the name again, copies a non-standard one twice (two allocations)
//! and writes, and may grow, both maps. Our six hop headers cost about 5,500
//! instructions a request that way, the largest step of ours
//! (`bench/instructions.py`). Taken apart into `http::request::Parts`, the
//! head takes names parsed once ([`X_FORWARDED_FOR`] and the rest) into room
//! reserved once. The price is the case map: names reach the app as HAProxy
//! and Envoy send them, lowercase (Pingora writes a few standard ones titled,
//! `Host`, `Content-Type`); HTTP field names are case-insensitive (RFC 9110
//! §5.1), and Heroku's router is free to change them too.

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest client-supplied `X-Request-Id` kept, as Heroku's router does.
const MAX_REQUEST_ID_LEN: usize = 200;

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Headers a request may add at most: `Host`, the four above and the id.
const HOP_HEADERS: usize = 6;

/// Let `edit` change `upstream`'s headers as a plain `HeaderMap`, with room
/// for the hop headers reserved (why: the module doc). The request target,
/// method, version and extensions go through unchanged; a target the URI
/// cannot hold (absolute-form, not UTF-8) is put back byte for byte.
pub(super) fn edit_headers(
    upstream: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> pingora::Result<()>,
) -> pingora::Result<()> {
    let from_uri = upstream.uri.path_and_query().map(|p| p.as_str().as_bytes());
    let verbatim = (!upstream.raw_path_is_utf8() || from_uri != Some(upstream.raw_path()))
        .then(|| upstream.raw_path().to_vec());
    let end_stream = upstream.send_end_stream();
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(upstream, empty));
    parts.headers.reserve(HOP_HEADERS);
    let edited = edit(&mut parts.headers);
    *upstream = RequestHeader::from(parts);
    if let Some(target) = verbatim {
        upstream.set_raw_path(&target)?;
    }
    if let Some(end_stream) = end_stream {
        upstream.set_send_end_stream(end_stream);
    }
    edited
}

/// `X-Forwarded-For` for the next hop: what the client sent (all lines,
/// joined) with the client's address appended.
pub(super) fn forwarded_for<'a>(
    incoming: impl Iterator<Item = &'a HeaderValue>,
    client_ip: Option<&str>,
) -> Option<String> {
    let mut parts: Vec<&str> = incoming
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    parts.extend(client_ip);
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A client's request id is kept when it is 1 to 200 visible ASCII characters.
pub(super) fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Request ids in UUID form: a per-process random key hashed with a counter.
/// Unique per process, unguessable enough for tracing; not a secret.
pub(super) struct RequestIds {
    keys: (RandomState, RandomState),
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            keys: (RandomState::new(), RandomState::new()),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    pub(super) fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let high = self.keys.0.hash_one(n);
        let low = self.keys.1.hash_one(n);
        // Version 4 / variant 1 bits, so the id reads as a UUID.
        let high = (high & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        // 8-4-4-4-12 hex digits, written without the formatting machinery
        // (this runs once per request).
        let mut id = [0u8; 36];
        let mut at = 0;
        for (value, digits) in [
            (high >> 32, 8),
            ((high >> 16) & 0xffff, 4),
            (high & 0xffff, 4),
            (low >> 48, 4),
            (low & 0xffff_ffff_ffff, 12),
        ] {
            if at > 0 {
                id[at] = b'-';
                at += 1;
            }
            for shift in (0..digits).rev() {
                let nibble = (value >> (4 * shift)) & 0xf;
                id[at] = b"0123456789abcdef"[nibble as usize];
                at += 1;
            }
        }
        // Hex digits and dashes: always a valid header value.
        HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).expect("valid header value")
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let incoming = [header("203.0.113.7"), header("198.51.100.2, 10.0.0.1")];
        assert_eq!(
            forwarded_for(incoming.iter(), Some("127.0.0.1")).as_deref(),
            Some("203.0.113.7, 198.51.100.2, 10.0.0.1, 127.0.0.1")
        );
        assert_eq!(
            forwarded_for([].iter(), Some("127.0.0.1")).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(forwarded_for([].iter(), None), None);
    }

    #[test]
    fn request_ids_are_kept_up_to_200_visible_characters() {
        assert!(valid_request_id("abc-123"));
        assert!(valid_request_id(&"x".repeat(200)));
        assert!(!valid_request_id(&"x".repeat(201)));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
    }

    #[test]
    fn generated_request_ids_look_like_uuids_and_differ() {
        let ids = RequestIds::default();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(a
            .to_str()
            .is_ok_and(|id| id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())));
    }

    #[test]
    fn edited_heads_keep_their_target_and_lose_only_name_case() {
        for target in [&b"/cart?id=7"[..], b"http://shop.example/cart", b"/caf\xe9"] {
            let mut head = RequestHeader::build("POST", target, None).expect("a request head");
            head.append_header("X-Custom", "1").expect("a header");
            edit_headers(&mut head, |headers| {
                headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
                Ok(())
            })
            .expect("edited");
            assert_eq!(head.raw_path(), target);
            assert_eq!(head.method, http::Method::POST);
            assert_eq!(
                head.headers.get("x-custom").map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
            assert_eq!(
                head.headers.get(X_REQUEST_ID).map(|v| v.as_bytes()),
                Some(&b"abc"[..])
            );
            let mut wire = Vec::new();
            head.header_to_h1_wire(&mut wire);
            assert!(
                wire.starts_with(b"x-custom: 1\r\n"),
                "{}",
                String::from_utf8_lossy(&wire)
            );
        }
    }
}
