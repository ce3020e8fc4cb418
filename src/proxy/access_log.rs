//! One logfmt line per request, in the manner of Heroku's router lines, so
//! `heroku logs --tail` reads naturally:
//! `at=info method=GET path="/cart" host=shop.example status=200 backend=https://shop-1.herokuapp.com app=shop-1 connect_ms=3 service_ms=41 bytes=512 request_id=… fwd="203.0.113.7"`.
//!
//! Written from the proxy's `logging` phase under the log target
//! [`TARGET`] at info level (errors at error level), so `RUST_LOG` controls
//! it like every other line. The path is logged without its query string,
//! and no header but `Host` appears: `Authorization` and cookies never do.

use std::fmt::Write;

/// The log target of request lines (`RUST_LOG=heroku_lb::access=warn` silences them).
pub const TARGET: &str = "heroku_lb::access";

/// What one request line says.
pub struct AccessRecord<'a> {
    pub error: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub status: u16,
    pub backend: Option<&'a str>,
    pub app: Option<&'a str>,
    pub connect_ms: Option<u128>,
    pub service_ms: u128,
    pub bytes: usize,
    pub request_id: Option<&'a str>,
    pub fwd: &'a str,
}

impl AccessRecord<'_> {
    /// The logfmt line.
    pub fn line(&self) -> String {
        let mut line = String::with_capacity(256);
        match self.error {
            None => line.push_str("at=info"),
            Some(desc) => {
                line.push_str("at=error desc=");
                push_value(&mut line, desc);
            }
        }
        for (key, value) in [
            ("method", self.method),
            ("path", self.path),
            ("host", self.host),
        ] {
            let _ = write!(line, " {key}=");
            push_value(&mut line, value);
        }
        let _ = write!(line, " status={}", self.status);
        line.push_str(" backend=");
        push_value(&mut line, self.backend.unwrap_or("-"));
        line.push_str(" app=");
        push_value(&mut line, self.app.unwrap_or("-"));
        match self.connect_ms {
            Some(ms) => {
                let _ = write!(line, " connect_ms={ms}");
            }
            None => line.push_str(" connect_ms=-"),
        }
        let _ = write!(line, " service_ms={} bytes={}", self.service_ms, self.bytes);
        line.push_str(" request_id=");
        push_value(&mut line, self.request_id.unwrap_or("-"));
        line.push_str(" fwd=");
        push_value(&mut line, self.fwd);
        line
    }
}

/// A logfmt value: bare when safe, else quoted with `"` and `\` escaped;
/// control characters are dropped so a line stays one line.
fn push_value(line: &mut String, value: &str) {
    let bare = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\');
    if bare {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            line.push('\\');
        }
        line.push(c);
    }
    line.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            error: None,
            method: "GET",
            path: "/cart",
            host: "shop.example",
            status: 200,
            backend: Some("https://shop-1.herokuapp.com"),
            app: Some("shop-1"),
            connect_ms: Some(3),
            service_ms: 41,
            bytes: 512,
            request_id: Some("abc-123"),
            fwd: "203.0.113.7",
        }
    }

    #[test]
    fn a_request_line_has_herokus_router_fields_in_order() {
        assert_eq!(
            record().line(),
            "at=info method=GET path=/cart host=shop.example status=200 \
             backend=https://shop-1.herokuapp.com app=shop-1 connect_ms=3 service_ms=41 \
             bytes=512 request_id=abc-123 fwd=203.0.113.7"
        );
    }

    #[test]
    fn odd_values_are_quoted_and_stay_on_one_line() {
        let mut odd = record();
        odd.path = "/a b\"c\n";
        odd.error = Some("no backend available");
        odd.backend = None;
        let line = odd.line();
        assert!(line.starts_with("at=error desc=\"no backend available\""));
        assert!(line.contains("path=\"/a b\\\"c\""));
        assert!(line.contains("backend=-"));
        assert!(!line.contains('\n'));
    }
}
