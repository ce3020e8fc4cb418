//! One logfmt line per request, with the field names and units of Heroku's
//! router lines, so the queries operators already run on `heroku logs` and
//! their log add-ons keep working:
//! `at=info method=GET path="/cart" host=shop.example request_id=… fwd="203.0.113.7" dyno=web.1 connect=3ms service=41ms status=200 bytes=512 protocol=https backend=https://shop-1.herokuapp.com app=shop-1`.
//!
//! Failures carry a stable code and description in the router's style
//! (`at=error code=L10 desc="No backend available"`), listed in
//! [`LineCode`] and in README's table; a detail follows at the end. As
//! Heroku's router does, unknown values are left empty (`connect=`).
//! Written from the proxy's `logging` phase under the log target [`TARGET`]
//! (errors at error level), so `RUST_LOG` controls it like every other line.
//! The path is logged without its query string, and no header but `Host`
//! appears: `Authorization` and cookies never do.

use std::fmt;

/// The log target of request lines (`RUST_LOG=heroku_lb::access=warn` silences them).
pub const TARGET: &str = "heroku_lb::access";

/// The stable codes of request lines that did not simply succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineCode {
    /// 503: no backend to send the request to.
    NoBackend,
    /// 502: every connection tried failed.
    ConnectFailed,
    /// 504: the backend did not answer in time.
    Timeout,
    /// 502: the backend closed, reset or garbled the exchange.
    BackendError,
    /// 502: the backend's answer broke our limits (a head over 64 KiB ...).
    AnswerRefused,
    /// 400/414/431: the request broke Heroku's limits or its framing.
    RequestRefused,
    /// Served, but by panic routing: no backend was fit.
    PanicRouting,
    /// 503: every fit backend was at its cap and the admission queue was full.
    QueueFull,
    /// 503: the request waited in the admission queue for its whole timeout.
    QueueTimeout,
    /// 499: the client closed the connection before it got an answer.
    ClientClosed,
    /// 408: the client stopped sending its request body.
    ClientTimeout,
    /// 500: a fault of the balancer itself.
    Internal,
}

impl LineCode {
    pub fn code(self) -> &'static str {
        match self {
            LineCode::NoBackend => "L10",
            LineCode::ConnectFailed => "L11",
            LineCode::Timeout => "L12",
            LineCode::BackendError => "L13",
            LineCode::AnswerRefused => "L14",
            LineCode::RequestRefused => "L15",
            LineCode::PanicRouting => "L16",
            LineCode::QueueFull => "L17",
            LineCode::QueueTimeout => "L18",
            LineCode::ClientClosed => "L27",
            LineCode::ClientTimeout => "L28",
            LineCode::Internal => "L99",
        }
    }

    pub fn desc(self) -> &'static str {
        match self {
            LineCode::NoBackend => "No backend available",
            LineCode::ConnectFailed => "Backend connection failed",
            LineCode::Timeout => "Backend timeout",
            LineCode::BackendError => "Backend error",
            LineCode::AnswerRefused => "Backend answer refused",
            LineCode::RequestRefused => "Request refused",
            LineCode::PanicRouting => "Panic routing",
            LineCode::QueueFull => "Queue full",
            LineCode::QueueTimeout => "Queue timeout",
            LineCode::ClientClosed => "Client closed request",
            LineCode::ClientTimeout => "Client request timeout",
            LineCode::Internal => "Internal error",
        }
    }

    /// Whether a line with this code is at error level (`at=error`); the
    /// others are served or not our fault (`at=info`, as the router's H27).
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            LineCode::PanicRouting | LineCode::ClientClosed | LineCode::ClientTimeout
        )
    }
}

/// What one request line says.
pub struct AccessRecord<'a> {
    pub code: Option<LineCode>,
    /// What happened, in a few words, for a line with a code.
    pub detail: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub request_id: Option<&'a str>,
    pub fwd: &'a str,
    /// The balancer's own dyno (`DYNO`), when on Heroku.
    pub dyno: Option<&'a str>,
    pub connect_ms: Option<u128>,
    pub service_ms: u128,
    pub status: u16,
    pub bytes: usize,
    /// `https` or `http`, as the client used it (trusted hops only).
    pub protocol: &'a str,
    pub backend: Option<&'a str>,
    pub app: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// The logfmt line, written straight into the logger's buffer: no line
    /// is built on its own, and no `fmt` machinery runs (this is per request;
    /// formatting with `write!` cost twice as many instructions).
    pub fn write(&self, line: &mut String) {
        line.reserve(320);
        match self.code {
            Some(code) => {
                line.push_str(if code.is_error() {
                    "at=error"
                } else {
                    "at=info"
                });
                line.push_str(" code=");
                line.push_str(code.code());
                line.push_str(" desc=\"");
                line.push_str(code.desc());
                line.push('"');
            }
            None => line.push_str("at=info"),
        }
        line.push_str(" method=");
        line.push_str(self.method);
        line.push_str(" path=");
        write_quoted(line, self.path);
        line.push_str(" host=");
        write_value(line, self.host);
        line.push_str(" request_id=");
        write_value(line, self.request_id.unwrap_or(""));
        line.push_str(" fwd=");
        write_quoted(line, self.fwd);
        line.push_str(" dyno=");
        write_value(line, self.dyno.unwrap_or(""));
        line.push_str(" connect=");
        if let Some(ms) = self.connect_ms {
            write_number(line, ms);
            line.push_str("ms");
        }
        line.push_str(" service=");
        write_number(line, self.service_ms);
        line.push_str("ms status=");
        write_number(line, u128::from(self.status));
        line.push_str(" bytes=");
        write_number(line, self.bytes as u128);
        line.push_str(" protocol=");
        line.push_str(self.protocol);
        line.push_str(" backend=");
        write_value(line, self.backend.unwrap_or(""));
        line.push_str(" app=");
        write_value(line, self.app.unwrap_or(""));
        if let Some(detail) = self.detail {
            line.push_str(" detail=");
            write_quoted(line, detail);
        }
    }
}

impl fmt::Display for AccessRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        self.write(&mut line);
        f.write_str(&line)
    }
}

/// A number in decimal.
fn write_number(line: &mut String, n: u128) {
    // Milliseconds and bytes fit in 64 bits; u128 division is slow.
    let Ok(mut n) = u64::try_from(n) else {
        line.push_str(&n.to_string());
        return;
    };
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        line.push(char::from(digit));
    }
}

/// Bytes by what they may be in a logfmt value: bare (visible ASCII but
/// `"`, `=` and `\`), or at least quoted as they are (also space and `=`).
/// Tables, because every byte of every request line is looked up.
const BARE: u8 = 1;
const QUOTABLE: u8 = 2;
const CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0x20;
    while b < 0x7f {
        class[b] = match b as u8 {
            b'"' | b'\\' => 0,
            b' ' | b'=' => QUOTABLE,
            _ => BARE | QUOTABLE,
        };
        b += 1;
    }
    class
};

/// A logfmt value: bare when safe (or empty), else quoted.
fn write_value(line: &mut String, value: &str) {
    if value.bytes().all(|b| CLASS[b as usize] & BARE != 0) {
        line.push_str(value);
    } else {
        write_quoted(line, value);
    }
}

/// A quoted logfmt value, `"` and `\` escaped; control characters are
/// dropped so a line stays one line.
fn write_quoted(line: &mut String, value: &str) {
    line.push('"');
    // Printable ASCII without `"` or `\` (nearly every path): whole.
    if value.bytes().all(|b| CLASS[b as usize] & QUOTABLE != 0) {
        line.push_str(value);
        line.push('"');
        return;
    }
    let mut rest = value;
    // Runs of plain characters are written whole.
    while let Some((at, c)) = rest
        .char_indices()
        .find(|&(_, c)| c == '"' || c == '\\' || c.is_control())
    {
        line.push_str(&rest[..at]);
        if !c.is_control() {
            line.push('\\');
            line.push(c);
        }
        rest = &rest[at + c.len_utf8()..];
    }
    line.push_str(rest);
    line.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            code: None,
            detail: None,
            method: "GET",
            path: "/cart",
            host: "shop.example",
            request_id: Some("abc-123"),
            fwd: "203.0.113.7",
            dyno: Some("web.1"),
            connect_ms: Some(3),
            service_ms: 41,
            status: 200,
            bytes: 512,
            protocol: "https",
            backend: Some("https://shop-1.herokuapp.com"),
            app: Some("shop-1"),
        }
    }

    #[test]
    fn a_request_line_has_herokus_router_fields_and_units_in_order() {
        assert_eq!(
            record().to_string(),
            "at=info method=GET path=\"/cart\" host=shop.example request_id=abc-123 \
             fwd=\"203.0.113.7\" dyno=web.1 connect=3ms service=41ms status=200 bytes=512 \
             protocol=https backend=https://shop-1.herokuapp.com app=shop-1"
        );
    }

    #[test]
    fn a_failure_carries_its_code_and_desc_first_and_unknowns_are_empty() {
        let mut failed = record();
        failed.code = Some(LineCode::NoBackend);
        failed.detail = Some("no backend available");
        failed.status = 503;
        failed.connect_ms = None;
        failed.backend = None;
        failed.app = None;
        failed.dyno = None;
        let line = failed.to_string();
        assert!(
            line.starts_with("at=error code=L10 desc=\"No backend available\" method=GET"),
            "{line}"
        );
        assert!(
            line.contains(" dyno= connect= service=41ms status=503 "),
            "{line}"
        );
        assert!(
            line.ends_with(" backend= app= detail=\"no backend available\""),
            "{line}"
        );
    }

    #[test]
    fn served_but_notable_lines_stay_at_info() {
        let mut closed = record();
        closed.code = Some(LineCode::ClientClosed);
        closed.status = 499;
        assert!(closed
            .to_string()
            .starts_with("at=info code=L27 desc=\"Client closed request\""));
    }

    #[test]
    fn odd_values_are_quoted_and_stay_on_one_line() {
        let mut odd = record();
        odd.path = "/a b\"c\n";
        odd.host = "h st";
        let line = odd.to_string();
        assert!(line.contains("path=\"/a b\\\"c\""), "{line}");
        assert!(line.contains("host=\"h st\""), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0u128, 7, 10, 41, 65_535, u128::from(u64::MAX), u128::MAX] {
            let mut line = String::new();
            write_number(&mut line, n);
            assert_eq!(line, n.to_string());
        }
    }
}
