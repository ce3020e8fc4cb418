//! Requests heroku-lb refuses before choosing a backend, with Heroku's router
//! limits: a request line or header line over 8 KiB (414, 431), a request
//! head over 64 KiB in all (431), or a body framed two ways at once
//! (`Content-Length` and `Transfer-Encoding`, 400), which is how request
//! smuggling starts. Also the responses it refuses to pass on (a header line
//! over 8 KiB, or over 64 KiB of headers), and the `Upgrade` header of a
//! request that did not ask to upgrade.
//!
//! Pingora's own parser reads heads of up to 1 MiB and at most 256 header
//! lines (more: a plain 400 before any filter runs), so Heroku's 1,000-header
//! limit can never be reached here and is not checked. When a body is framed
//! both ways Pingora drops `Content-Length` and closes the connection after
//! the answer (RFC 9112 §6.3), which is safe but hides the conflict from
//! filters: we look at the raw head to refuse it outright.

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use pingora::http::RequestHeader;

/// Heroku's router: request line and each header line at most 8 KiB.
pub const MAX_LINE: usize = 8 * 1024;
/// Largest request head passed on, request line and headers together (the
/// same bound as responses; nginx and HAProxy allow less by default).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The status to refuse `request` with, or `None` to let it through. `raw`
/// gives the request head as received (only read when the parsed head has
/// `Transfer-Encoding`).
pub fn refusal(
    request: &RequestHeader,
    raw: impl FnOnce() -> bytes::Bytes,
) -> Option<(u16, &'static str)> {
    // "GET " + URI + " HTTP/1.1"
    let line = request.method.as_str().len() + 1 + request.raw_path().len() + 9;
    if line > MAX_LINE {
        return Some((414, "request line longer than 8 KiB"));
    }
    // Request line, each header line and the empty line, with their CRLFs.
    let mut head = line + 2 + 2;
    for (name, value) in request.headers.iter() {
        let header_line = name.as_str().len() + 2 + value.len();
        if header_line > MAX_LINE {
            return Some((431, "a header line longer than 8 KiB"));
        }
        head += header_line + 2;
    }
    if head > MAX_REQUEST_HEAD {
        return Some((431, "request head larger than 64 KiB"));
    }
    if request.headers.contains_key(TRANSFER_ENCODING)
        && (request.headers.contains_key(CONTENT_LENGTH) || has_content_length(&raw()))
    {
        return Some((400, "both Content-Length and Transfer-Encoding"));
    }
    None
}

/// Largest response head passed on.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Why a response head is refused (the client then gets a 502), if it is.
pub fn response_refusal(response: &pingora::http::ResponseHeader) -> Option<&'static str> {
    let mut total = 0;
    for (name, value) in response.headers.iter() {
        let line = name.as_str().len() + 2 + value.len();
        if line > MAX_LINE {
            return Some("a response header line longer than 8 KiB");
        }
        total += line + 2;
    }
    (total > MAX_RESPONSE_HEAD).then_some("response headers larger than 64 KiB")
}

/// Whether the request asks to switch protocols: an `Upgrade` header *and* a
/// `Connection` header naming `upgrade` (RFC 9110 §7.8). Pingora treats
/// `Upgrade` alone as a WebSocket handshake, so a stray one is removed.
pub fn stray_upgrade(request: &RequestHeader) -> bool {
    request.headers.contains_key(UPGRADE)
        && !request.headers.get_all(CONNECTION).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
}

/// Whether a raw request head has a `Content-Length` line.
fn has_content_length(head: &[u8]) -> bool {
    head.split(|byte| *byte == b'\n')
        .skip(1)
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, String)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
        for (name, value) in headers {
            request
                .append_header(name.to_string(), value.as_str())
                .expect("header");
        }
        request
    }

    #[test]
    fn herokus_limits_are_enforced() {
        let none = bytes::Bytes::new;
        assert_eq!(refusal(&request("/", &[]), none), None);
        let long_path = format!("/{}", "a".repeat(MAX_LINE));
        assert_eq!(
            refusal(&request(&long_path, &[]), none).map(|r| r.0),
            Some(414)
        );
        let big = [("x-big", "b".repeat(MAX_LINE))];
        assert_eq!(refusal(&request("/", &big), none).map(|r| r.0), Some(431));
        // 200 headers of 1 KB: every line is short, the head is not.
        let heavy: Vec<(&str, String)> = (0..200).map(|_| ("x-h", "v".repeat(1000))).collect();
        assert_eq!(
            refusal(&request("/", &heavy), none),
            Some((431, "request head larger than 64 KiB"))
        );
        let just_under: Vec<(&str, String)> = (0..60).map(|_| ("x-h", "v".repeat(1000))).collect();
        assert_eq!(refusal(&request("/", &just_under), none), None);
    }

    #[test]
    fn an_upgrade_needs_connection_upgrade() {
        let stray = request(
            "/",
            &[
                ("upgrade", "websocket".to_string()),
                ("connection", "keep-alive".to_string()),
            ],
        );
        assert!(stray_upgrade(&stray));
        let real = request(
            "/",
            &[
                ("upgrade", "websocket".to_string()),
                ("connection", "keep-alive, Upgrade".to_string()),
            ],
        );
        assert!(!stray_upgrade(&real));
    }

    #[test]
    fn oversized_response_heads_are_refused() {
        let mut response = pingora::http::ResponseHeader::build(200, None).expect("response");
        assert_eq!(response_refusal(&response), None);
        response
            .append_header("x-big", "b".repeat(MAX_LINE))
            .expect("header");
        assert!(response_refusal(&response).is_some());
    }

    #[test]
    fn a_body_framed_two_ways_is_refused() {
        let smuggle = [
            ("content-length", "5".to_string()),
            ("transfer-encoding", "chunked".to_string()),
        ];
        assert_eq!(
            refusal(&request("/", &smuggle), bytes::Bytes::new).map(|r| r.0),
            Some(400)
        );
        // As Pingora hands it over: Content-Length already removed from the parsed head.
        let parsed = [("transfer-encoding", "chunked".to_string())];
        let raw = || {
            bytes::Bytes::from_static(b"POST / HTTP/1.1\r\nHost: x\r\nContent-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
        };
        assert_eq!(refusal(&request("/", &parsed), raw).map(|r| r.0), Some(400));
        let honest = || {
            bytes::Bytes::from_static(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
        };
        assert_eq!(refusal(&request("/", &parsed), honest), None);
    }
}
