//! The status page for a browser: one self-contained HTML document (no
//! external assets) with the summary, discovery, a table of backends (a
//! colour per state, the last minute's rate, latency and 5xx, a sparkline of
//! the last ten minutes) and the recent events. A small inline script fetches
//! the JSON every 5 seconds with the browser's credentials and redraws the
//! table and events in place; without scripts a `<noscript>` refresh reloads
//! the page. Every value from outside is escaped (the script only sets
//! `textContent`). Input: a [`StatusSnapshot`] and the caller's [`Access`]
//! from `mod.rs`, which decides who sees what.

use super::{Access, StatusSnapshot, Summary};
use std::fmt::Write;

const STYLE: &str = "body{font:13px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}th,td{padding:.3em .45em;border-bottom:1px solid #ddd;text-align:left}\
td{white-space:nowrap}th{vertical-align:bottom}\
th{background:#f4f4f4}.healthy{background:#d9f7d9}.ejected,.failing{background:#fbd5d5}\
.waiting,.unresolved{background:#fff3c4}.badge{padding:.2em .6em;border-radius:.3em;font-weight:600}\
.ok{background:#2e7d32;color:#fff}.degraded{background:#f9a825}.down{background:#c62828;color:#fff}\
svg{display:block}ol{padding-left:1.2em}li{margin:.2em 0}\
code{font-size:13px}";

/// The columns of the backend table, as the script fills them: JSON field
/// and heading. The sparkline column follows.
const COLUMNS: [(&str, &str); 15] = [
    ("name", "App"),
    ("url", "URL"),
    ("state", "State"),
    ("weight", "Weight"),
    ("address", "Address"),
    ("last_check", "Last check"),
    ("last_check_at", "Checked at"),
    ("consecutive_failures", "Failures in a row"),
    ("in_flight", "In flight"),
    ("requests", "Requests"),
    ("responses_5xx", "5xx"),
    ("rps_1m", "req/s (1 min)"),
    ("p50_ms_1m", "p50 ms"),
    ("p99_ms_1m", "p99 ms"),
    ("errors_5xx_per_min", "5xx/min"),
];

/// Redraws the table, the events and the summary from the JSON every 5 s.
/// `location.origin + location.pathname`: a relative URL would carry the
/// `user:token@` of the page's URL, which `fetch` refuses; the browser
/// re-sends the Basic credentials it cached for the origin instead.
const SCRIPT: &str = r##"(function(){
var cols=COLS,classes={"healthy":"healthy","ejected":"ejected","failing checks":"failing","unresolved":"unresolved"};
function el(tag,text){var e=document.createElement(tag);if(text!==undefined)e.textContent=text==null?"-":String(text);return e;}
function points(r){var m=Math.max.apply(null,r.concat([0]))||1,n=Math.max(r.length-1,1);return r.map(function(v,i){return (i*100/n).toFixed(1)+","+(19-v/m*18).toFixed(1);}).join(" ");}
function spark(r){var ns="http"+"://www.w3.org/2000/svg",s=document.createElementNS(ns,"svg"),p=document.createElementNS(ns,"polyline");
s.setAttribute("width","100");s.setAttribute("height","20");s.setAttribute("viewBox","0 0 100 20");
p.setAttribute("points",points(r||[]));p.setAttribute("fill","none");p.setAttribute("stroke","#1565c0");s.appendChild(p);return s;}
function update(s){if(!s||!s.backends)return;
var rows=document.createDocumentFragment();
s.backends.forEach(function(b){var tr=el("tr");tr.className=classes[b.state]||"waiting";
cols.forEach(function(c){tr.appendChild(el("td",b[c]));});var td=el("td");td.appendChild(spark(b.rate_10m));tr.appendChild(td);rows.appendChild(tr);});
document.getElementById("rows").replaceChildren(rows);
var events=document.createDocumentFragment();
(s.events||[]).forEach(function(e){var li=el("li");li.appendChild(el("code",e.at));li.appendChild(document.createTextNode(" "));
li.appendChild(el("strong",e.kind));li.appendChild(document.createTextNode((e.app?" "+e.app:"")+": "+e.text));events.appendChild(li);});
document.getElementById("events").replaceChildren(events);
var badge=document.getElementById("badge");badge.textContent=s.status;badge.className="badge "+s.status;
document.getElementById("healthy").textContent=s.backends_healthy+" of "+s.backends_total;
document.getElementById("updated").textContent="updated "+new Date().toISOString().slice(11,19)+" UTC";}
setInterval(function(){fetch(location.origin+location.pathname,{headers:{Accept:"application/json"},credentials:"same-origin",cache:"no-store"})
.then(function(r){return r.json();}).then(update).catch(function(){});},5000);
})();"##;

/// The page's head and its first line: the overall status, how many
/// backends are healthy, panic routing. Everyone sees this much.
fn head(page: &mut String, summary: &Summary) {
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>\
         <title>heroku-lb: {status}</title><style>{STYLE}</style></head><body>\
         <h1>heroku-lb <span id=\"badge\" class=\"badge {status}\">{status}</span></h1>\
         <p><span id=\"healthy\">{healthy} of {total}</span> backends healthy",
        status = summary.status,
        healthy = summary.backends_healthy,
        total = summary.backends_total,
    );
    if summary.panic {
        page.push_str(
            ". <strong>Panic routing</strong>: no backend is fit, so requests go to every backend \
             with an address",
        );
    }
}

/// The page for a caller who may not see the detail: the summary line and
/// how to see more.
pub fn render_summary(summary: &Summary, access: Access) -> String {
    let mut page = String::with_capacity(2048);
    head(&mut page, summary);
    let hint = match access {
        Access::Detail | Access::TokenRequired => {
            "Sign in with any user name and the status token (LB_STATUS_TOKEN) as the \
             password, or send the token as a bearer token, for the detail."
        }
        Access::LoopbackOnly => {
            "LB_STATUS_TOKEN is not set, so the detail is shown only to callers on this \
             machine (loopback). Set it to see the detail from elsewhere."
        }
        Access::NoTokenOnDyno => {
            "LB_STATUS_TOKEN is not set, so nobody sees the detail: behind Heroku's router no \
             caller counts as local. Set it (heroku config:set LB_STATUS_TOKEN=…) and sign in \
             with it as the password."
        }
    };
    let _ = write!(page, ".</p><p>{hint}</p></body></html>");
    page
}

/// The whole page, for a caller who may see the detail.
pub fn render(snapshot: &StatusSnapshot) -> String {
    let mut page = String::with_capacity(8192);
    head(
        &mut page,
        &Summary {
            status: snapshot.status,
            backends_total: snapshot.backends_total,
            backends_healthy: snapshot.backends_healthy,
            panic: snapshot.panic,
        },
    );
    let d = &snapshot.discovery;
    let _ = write!(
        page,
        " · policy {} · instance {} · up {} s · version {} · <span id=\"updated\"></span></p>\
         <p>Discovery: {} · {} rounds, {} failed · last success {}",
        escape(snapshot.policy),
        escape(snapshot.instance.as_deref().unwrap_or("local")),
        snapshot.uptime_seconds,
        escape(snapshot.version),
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
    page.push_str("</p><table><thead><tr>");
    for (_, heading) in COLUMNS {
        let _ = write!(page, "<th>{heading}</th>");
    }
    page.push_str("<th>Last 10 min (req/s)</th></tr></thead><tbody id=\"rows\">");
    let optional = |value: Option<f64>| value.map_or("-".to_string(), |v| v.to_string());
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
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
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
            b.rps_1m,
            optional(b.p50_ms_1m),
            optional(b.p99_ms_1m),
            b.errors_5xx_per_min,
            sparkline(&b.rate_10m),
        );
    }
    page.push_str("</tbody></table><h2>Recent events</h2><ol id=\"events\">");
    for event in &snapshot.events {
        let app = event
            .app
            .as_deref()
            .map_or(String::new(), |app| format!(" {}", escape(app)));
        let _ = write!(
            page,
            "<li><code>{}</code> <strong>{}</strong>{app}: {}</li>",
            escape(&event.at),
            escape(event.kind),
            escape(&event.text)
        );
    }
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(field, _)| format!("\"{field}\""))
        .collect();
    let _ = write!(
        page,
        "</ol><script>{}</script></body></html>",
        SCRIPT.replace("COLS", &format!("[{}]", columns.join(",")))
    );
    page
}

/// A 100×20 inline SVG line of `rates`, scaled to their maximum.
fn sparkline(rates: &[f64]) -> String {
    let max = rates.iter().copied().fold(0.0, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let steps = rates.len().saturating_sub(1).max(1) as f64;
    let points: Vec<String> = rates
        .iter()
        .enumerate()
        .map(|(i, rate)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * 100.0 / steps,
                19.0 - rate / max * 18.0
            )
        })
        .collect();
    format!(
        "<svg width=\"100\" height=\"20\" viewBox=\"0 0 100 20\"><polyline points=\"{}\" \
         fill=\"none\" stroke=\"#1565c0\"/></svg>",
        points.join(" ")
    )
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

    fn sample() -> StatusSnapshot {
        super::super::tests::sample()
    }

    fn summary(snapshot: &StatusSnapshot) -> Summary {
        super::super::summary(snapshot)
    }

    #[test]
    fn the_page_is_self_contained_and_escaped() {
        let mut snapshot = sample();
        snapshot.discovery.last_error = Some("<script>alert('x')</script> & \"quoted\"".into());
        snapshot.discovery.last_error_at = Some("2026-11-23T09:00:00Z".into());
        let page = render(&snapshot);
        assert!(page.contains("<table>"));
        assert!(page.contains("shop-&lt;2&gt;"));
        assert!(!page.contains("shop-<2>"));
        assert!(page
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;"));
        assert!(!page.contains("<script>alert"));
        assert!(
            page.contains("&lt;b&gt;status 503&lt;/b&gt; &amp; &quot;&#39;"),
            "event text"
        );
        for external in ["src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
        assert!(page.contains("class=\"failing\""));
        // Exactly one script: ours.
        assert_eq!(page.matches("<script>").count(), 1);
    }

    #[test]
    fn escaping_covers_markup_ampersands_and_both_quotes() {
        assert_eq!(
            escape("<a href=\"x\" title='y'>&amp;</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_detail_shows_the_recent_figures_a_sparkline_and_the_events() {
        let page = render(&sample());
        for heading in [
            "req/s (1 min)",
            "p50 ms",
            "p99 ms",
            "5xx/min",
            "Last 10 min",
        ] {
            assert!(page.contains(heading), "{heading}");
        }
        assert!(page.contains("<td>45.25</td>"));
        assert_eq!(page.matches("<svg").count(), 2, "one sparkline per backend");
        assert!(page.contains("<polyline points=\"0.0,19.0 11.1,16.8"));
        assert!(page.contains("<ol id=\"events\"><li>"));
        assert!(page.contains("panic_off"));
        assert!(page.contains("<noscript><meta http-equiv=\"refresh\""));
    }

    #[test]
    fn without_the_detail_no_hostname_is_shown_and_the_hint_fits_the_reason() {
        for (access, hint) in [
            (Access::TokenRequired, "any user name and the status token"),
            (Access::LoopbackOnly, "only to callers on this machine"),
            (Access::NoTokenOnDyno, "Heroku&#39;s router"),
        ] {
            let page = render_summary(&summary(&sample()), access);
            assert!(!page.contains("herokuapp"), "{access:?}");
            assert!(!page.contains("shop-"), "{access:?}");
            assert!(!page.contains("<script"), "{access:?}");
            assert!(
                page.contains("1 of 2</span> backends healthy"),
                "{access:?}"
            );
            assert!(
                page.contains(hint) || page.contains(&hint.replace("&#39;", "'")),
                "{access:?}: {page}"
            );
        }
        assert!(!render_summary(&summary(&sample()), Access::LoopbackOnly).contains("status token"));
    }
}
