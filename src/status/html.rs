//! The status page for a browser: one self-contained HTML document (no
//! external assets) with a table of backends, a colour per state, refreshed
//! every 5 seconds. Every value from outside is escaped.

use super::StatusSnapshot;
use std::fmt::Write;

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}th,td{padding:.35em .8em;border-bottom:1px solid #ddd;text-align:left}\
th{background:#f4f4f4}.healthy{background:#d9f7d9}.ejected,.failing{background:#fbd5d5}\
.waiting,.unresolved{background:#fff3c4}.badge{padding:.2em .6em;border-radius:.3em;font-weight:600}\
.ok{background:#2e7d32;color:#fff}.degraded{background:#f9a825}.down{background:#c62828;color:#fff}\
code{font-size:13px}";

/// Render `snapshot`; without authorization only the summary line.
pub fn render(snapshot: &StatusSnapshot, authorized: bool) -> String {
    let mut page = String::with_capacity(4096);
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>heroku-lb: {status}</title><style>{STYLE}</style></head><body>\
         <h1>heroku-lb <span class=\"badge {status}\">{status}</span></h1>\
         <p>{healthy} of {total} backends healthy",
        status = snapshot.status,
        healthy = snapshot.backends_healthy,
        total = snapshot.backends_total,
    );
    if snapshot.panic {
        page.push_str(
            ". <strong>Panic routing</strong>: no backend is fit, so requests go to every backend \
             with an address",
        );
    }
    if !authorized {
        page.push_str(
            ". Send the status token as a bearer token for the detail.</p></body></html>",
        );
        return page;
    }
    let d = &snapshot.discovery;
    let _ = write!(
        page,
        " · policy {} · instance {} · up {} s · version {}</p><p>Discovery: {} · {} rounds, {} failed · last success {}",
        snapshot.policy,
        escape(snapshot.instance.as_deref().unwrap_or("local")),
        snapshot.uptime_seconds,
        snapshot.version,
        escape(&d.source),
        d.rounds,
        d.failed_rounds,
        escape(d.last_success.as_deref().unwrap_or("never")),
    );
    if let (Some(error), Some(at)) = (&d.last_error, &d.last_error_at) {
        let _ = write!(
            page,
            " · last error at {}: <code>{}</code>",
            escape(at),
            escape(error)
        );
    }
    if let Some(held) = &d.shrink_pending {
        let _ = write!(
            page,
            " · <strong>holding a removal</strong> of {} of {} apps since {} (applied if the next \
             round agrees): <code>{}</code>",
            held.removing.len(),
            held.known,
            escape(&held.since),
            escape(&held.removing.join(", "))
        );
    }
    if let Some(remaining) = d.api_rate_limit_remaining {
        let _ = write!(page, " · API RateLimit-Remaining {remaining}");
    }
    page.push_str(
        "</p><table><tr><th>App</th><th>URL</th><th>State</th><th>Weight</th><th>Address</th>\
         <th>Last check</th><th>Checked at</th><th>Failures in a row</th><th>In flight</th><th>Requests</th><th>5xx</th></tr>",
    );
    for b in &snapshot.backends {
        let class = match b.state {
            "healthy" => "healthy",
            "ejected" => "ejected",
            "failing checks" => "failing",
            "unresolved" => "unresolved",
            _ => "waiting",
        };
        let _ = write!(
            page,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&b.name),
            escape(&b.url),
            escape(b.state),
            b.weight,
            escape(b.address.as_deref().unwrap_or("-")),
            escape(b.last_check.as_deref().unwrap_or("-")),
            escape(b.last_check_at.as_deref().unwrap_or("-")),
            b.consecutive_failures,
            b.in_flight,
            b.requests,
            b.responses_5xx,
        );
    }
    page.push_str("</table></body></html>");
    page
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_escaped() {
        let page = render(&super::super::tests::sample(), true);
        assert!(page.contains("<table>"));
        assert!(page.contains("shop-&lt;2&gt;"));
        assert!(!page.contains("shop-<2>"));
        assert!(!page.contains("src=") && !page.contains("href="));
        assert!(page.contains("class=\"failing\""));
    }

    #[test]
    fn without_the_token_no_hostname_is_shown() {
        let page = render(&super::super::tests::sample(), false);
        assert!(!page.contains("herokuapp"));
        assert!(page.contains("1 of 2 backends healthy"));
    }
}
