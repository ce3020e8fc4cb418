//! Requests heroku-lb refuses before choosing a backend, with Heroku's router
//! limits: a request line or header line over 8 KiB, more than 1,000 headers,
//! or a body framed two ways at once (`Content-Length` and
//! `Transfer-Encoding`), which is how request smuggling starts.
//! Pingora's own parser refuses larger heads (64 KiB) with a plain 400, and
//! when a body is framed both ways it drops `Content-Length` and closes the
//! connection after the answer (RFC 9112 §6.3), which is safe but hides the
//! conflict from filters: we look at the raw head to refuse it outright.

use pingora::http::RequestHeader;

/// Heroku's router: request line and each header line at most 8 KiB.
pub const MAX_LINE: usize = 8 * 1024;
/// Heroku's router: at most 1,000 headers.
pub const MAX_HEADERS: usize = 1000;

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
    if request.headers.len() > MAX_HEADERS {
        return Some((431, "more than 1000 headers"));
    }
    if request
        .headers
        .iter()
        .any(|(name, value)| name.as_str().len() + 2 + value.len() > MAX_LINE)
    {
        return Some((431, "a header line longer than 8 KiB"));
    }
    if request.headers.contains_key("transfer-encoding")
        && (request.headers.contains_key("content-length") || has_content_length(&raw()))
    {
        return Some((400, "both Content-Length and Transfer-Encoding"));
    }
    None
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
        let many: Vec<(&str, String)> = (0..=MAX_HEADERS)
            .map(|_| ("x-h", "v".to_string()))
            .collect();
        assert_eq!(refusal(&request("/", &many), none).map(|r| r.0), Some(431));
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
