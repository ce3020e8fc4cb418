//! The headers each hop adds, as Heroku's router does for its own:
//! `X-Forwarded-For` (appended), and an `X-Request-Id` kept from the client
//! when sane, else generated. Pure functions, used by `upstream_request_filter`
//! and by `forwarded.rs`, which decides whose `X-Forwarded-*` are kept.

use http::HeaderValue;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest client-supplied `X-Request-Id` kept, as Heroku's router does.
const MAX_REQUEST_ID_LEN: usize = 200;

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
    pub(super) fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let high = self.keys.0.hash_one(n);
        let low = self.keys.1.hash_one(n);
        // Version 4 / variant 1 bits, so the id reads as a UUID.
        let high = (high & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        // 8-4-4-4-12 hex digits, written without the formatting machinery
        // (this runs once per request).
        let mut id = String::with_capacity(36);
        for (value, digits) in [
            (high >> 32, 8),
            ((high >> 16) & 0xffff, 4),
            (high & 0xffff, 4),
            (low >> 48, 4),
            (low & 0xffff_ffff_ffff, 12),
        ] {
            if !id.is_empty() {
                id.push('-');
            }
            for shift in (0..digits).rev() {
                let nibble = ((value >> (4 * shift)) & 0xf) as u8;
                id.push(char::from(b"0123456789abcdef"[nibble as usize]));
            }
        }
        id
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
    }
}
