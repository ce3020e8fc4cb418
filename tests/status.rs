//! `/_lb/status`: JSON for machines (200 while a backend is healthy, 503 when
//! none is), an HTML page for browsers, detail only for holders of
//! `LB_STATUS_TOKEN` when one is set (as a bearer token or a Basic password;
//! browsers and scrapers without it get 401 and a Basic challenge), else only
//! for loopback callers off Heroku; the last minute's figures and the recent
//! events; and the admin prefix, whose paths are answered by the balancer and
//! never forwarded to an app.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::backend::{TestBackend, BACKEND_HEADER};
use common::lb::{balancer, LbProcess};
use common::status::{basic_authorization, poll_status, Seen, StatusPoll};
use common::Reply;
use serde_json::Value;

/// The token the token tests configure.
const TOKEN: &str = "s3cret-status-token";

/// What a browser sends as `Accept` for a page.
const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

/// GET `path` on the balancer with `headers`.
async fn get_with(
    client: &reqwest::Client,
    lb: &LbProcess,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = client.get(lb.url_for(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    common::send(request)
        .await
        .unwrap_or_else(|e| panic!("GET {path} {headers:?}: {e}"))
}

/// Parse a status body as JSON.
fn json(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("the status body is not JSON ({e}): {reply:?}"))
}

/// A poll of `/_lb/status` as the tests here wait: every 25 ms for up to
/// 8 s, failing at once on an answer that is missing or not JSON.
fn poll<'a>(client: &'a reqwest::Client, lb: &'a LbProcess) -> StatusPoll<'a> {
    poll_status(client, lb)
        .every(Duration::from_millis(25))
        .within(Duration::from_secs(8))
        .strict()
}

/// Two backends behind a balancer with `LB_STATUS_TOKEN`, both healthy.
async fn two_apps_behind_the_token() -> (Vec<TestBackend>, LbProcess, reqwest::Client) {
    let backends = TestBackend::start_many("app", 2).await;
    let (lb, client) = balancer(&backends)
        .status_token(TOKEN)
        .start_healthy(2)
        .await;
    (backends, lb, client)
}

/// Panics unless `value` is an object with at least the keys `expected`
/// (fields added later do not break the documented ones).
fn assert_has_keys(value: &Value, expected: &[&str]) {
    let present = keys(value);
    let missing: Vec<&&str> = expected.iter().filter(|k| !present.contains(**k)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in {value:#}");
}

/// The keys of a JSON object.
fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {value:#}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// Whether `body` gives away where any of `backends` is.
fn leaks(body: &str, backends: &[TestBackend]) -> Vec<String> {
    let mut found = Vec::new();
    for needle in ["127.0.0.1", "http://", "https://"] {
        if body.contains(needle) {
            found.push(needle.to_string());
        }
    }
    for backend in backends {
        let port = backend.port().to_string();
        if body.contains(&port) {
            found.push(port);
        }
    }
    found
}

/// Every documented field is there with the right type, and the answer goes 200 ok, 200 degraded, 503 down as backends fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_json_reports_ok_degraded_and_down_with_200_200_and_503() {
    let backends = TestBackend::start_many("app", 2).await;
    // On a dyno the detail needs the token, whoever asks.
    let lb = balancer(&backends)
        .env("DYNO", "web.7")
        .status_token(TOKEN)
        .start()
        .await;
    let client = common::http_client();

    let Seen { reply, status, .. } = poll(&client, &lb)
        .token(TOKEN)
        .until("status ok", |s| s["status"] == "ok")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let content_type = reply.headers["content-type"].to_str().unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_has_keys(
        &status,
        &[
            "status",
            "instance",
            "version",
            "uptime_seconds",
            "policy",
            "backends_total",
            "backends_healthy",
            "discovery",
            "backends",
        ],
    );
    assert_eq!(status["instance"], "web.7");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_seconds"].is_u64(), "{status:#}");
    assert!(
        status["policy"].as_str().is_some_and(|p| !p.is_empty()),
        "{status:#}"
    );
    assert_eq!(status["backends_total"], 2);
    assert_eq!(status["backends_healthy"], 2);

    let discovery = &status["discovery"];
    assert_has_keys(
        discovery,
        &[
            "source",
            "rounds",
            "failed_rounds",
            "last_success",
            "last_error",
            "last_error_at",
            "apps_known",
            "api_requests",
            "api_rate_limit_remaining",
        ],
    );
    assert_eq!(discovery["source"], "static");
    assert!(discovery["rounds"].as_u64() >= Some(1), "{discovery:#}");
    assert_eq!(discovery["failed_rounds"], 0);
    assert!(discovery["last_success"].is_string(), "{discovery:#}");
    assert!(discovery["last_error"].is_null(), "{discovery:#}");
    assert!(discovery["last_error_at"].is_null(), "{discovery:#}");
    assert_eq!(discovery["apps_known"], 2);
    // No Platform API in static mode.
    assert!(discovery["api_requests"].is_null(), "{discovery:#}");
    assert!(
        discovery["api_rate_limit_remaining"].is_null(),
        "{discovery:#}"
    );

    let listed = status["backends"].as_array().expect("backends is a list");
    assert_eq!(listed.len(), 2, "{status:#}");
    for backend in &backends {
        let view = listed
            .iter()
            .find(|v| v["url"] == backend.url())
            .unwrap_or_else(|| panic!("{} not listed: {status:#}", backend.url()));
        assert_has_keys(
            view,
            &[
                "name",
                "url",
                "healthy",
                "state",
                "weight",
                "address",
                "last_check",
                "last_check_ok",
                "last_check_at",
                "consecutive_failures",
                "requests",
                "responses_5xx",
                "connect_failures",
            ],
        );
        assert_eq!(view["name"], backend.addr().to_string(), "{view:#}");
        assert_eq!(view["healthy"], true, "{view:#}");
        assert_eq!(view["state"], "healthy", "{view:#}");
        assert_eq!(view["weight"], 1, "{view:#}");
        assert_eq!(view["address"], backend.addr().to_string(), "{view:#}");
        assert_eq!(view["last_check"], "ok", "{view:#}");
        assert_eq!(view["last_check_ok"], true, "{view:#}");
        let checked_at = view["last_check_at"].as_str().unwrap_or("");
        assert!(
            checked_at.len() >= 20 && checked_at.as_bytes()[10] == b'T',
            "last_check_at is not an RFC 3339 time: {view:#}"
        );
        assert_eq!(view["consecutive_failures"], 0, "{view:#}");
        for counter in ["requests", "responses_5xx", "connect_failures"] {
            assert!(view[counter].is_u64(), "{counter}: {view:#}");
        }
    }

    backends[0].stop_listening().await;
    let Seen { reply, status, .. } = poll(&client, &lb)
        .token(TOKEN)
        .until("status degraded", |s| s["status"] == "degraded")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(status["backends_total"], 2);
    assert_eq!(status["backends_healthy"], 1);
    let view = status["backends"]
        .as_array()
        .and_then(|list| list.iter().find(|v| v["url"] == backends[0].url()))
        .expect("the stopped backend is still listed");
    assert_eq!(view["healthy"], false, "{view:#}");
    assert_eq!(view["state"], "failing checks", "{view:#}");
    assert_eq!(view["last_check"], "connection refused", "{view:#}");
    assert_eq!(view["last_check_ok"], false, "{view:#}");

    backends[1].stop_listening().await;
    let Seen { reply, status, .. } = poll(&client, &lb)
        .token(TOKEN)
        .until("status down", |s| s["status"] == "down")
        .await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(status["backends_total"], 2);
    assert_eq!(status["backends_healthy"], 0);
    assert_eq!(status["instance"], "web.7");
}

/// With LB_STATUS_TOKEN set, only `Authorization: Bearer <token>` gets the detail; everyone else gets a summary naming no backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_token_hides_the_detail_from_callers_without_it() {
    let (backends, lb, client) = two_apps_behind_the_token().await;

    let wrong = [
        vec![],
        vec![("Authorization", "Bearer wrong-token".to_string())],
        vec![("Authorization", format!("Bearer {TOKEN}x"))],
        vec![(
            "Authorization",
            format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        )],
        vec![("Authorization", "Bearer ".to_string())],
        vec![("Authorization", TOKEN.to_string())],
        vec![("Authorization", format!("Basic {TOKEN}"))],
        vec![("X-Status-Token", TOKEN.to_string())],
    ];
    for headers in &wrong {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = get_with(&client, &lb, "/_lb/status", &headers).await;
        assert_eq!(reply.status, 200, "{headers:?}: {reply:?}");
        let summary = json(&reply);
        assert_eq!(
            keys(&summary),
            BTreeSet::from(["status", "backends_total", "backends_healthy", "panic"]),
            "{headers:?}: {summary:#}"
        );
        assert_eq!(summary["status"], "ok");
        assert_eq!(summary["backends_total"], 2);
        assert_eq!(summary["backends_healthy"], 2);
        let leaked = leaks(&reply.body, &backends);
        assert!(
            leaked.is_empty(),
            "{headers:?}: the summary gives away {leaked:?}: {}",
            reply.body
        );
    }

    let bearer = format!("Bearer {TOKEN}");
    let reply = get_with(&client, &lb, "/_lb/status", &[("Authorization", &bearer)]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let detail = json(&reply);
    assert!(detail["discovery"].is_object(), "{detail:#}");
    assert!(
        detail["instance"].is_null(),
        "no DYNO, no instance: {detail:#}"
    );
    let urls: BTreeSet<&str> = detail["backends"]
        .as_array()
        .expect("the detail lists backends")
        .iter()
        .filter_map(|v| v["url"].as_str())
        .collect();
    let expected: Vec<String> = backends.iter().map(|b| b.url()).collect();
    assert_eq!(
        urls,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
}

/// Without LB_STATUS_TOKEN a loopback caller off Heroku gets the detail and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_loopback_caller_off_heroku_gets_the_detail() {
    let backends = TestBackend::start_many("app", 1).await;
    let lb = balancer(&backends).start().await;
    let client = common::http_client();

    let detail = poll(&client, &lb).until_healthy(1).await.status;
    assert_eq!(
        detail["backends"][0]["url"],
        backends[0].url(),
        "{detail:#}"
    );
    let metrics = get_with(&client, &lb, "/_lb/metrics", &[]).await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
}

/// On a dyno without LB_STATUS_TOKEN every caller is Heroku's router, loopback or not: the status is the summary, metrics answer 401, and a warning at start says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_dyno_without_a_token_the_detail_and_metrics_are_hidden() {
    let backends = TestBackend::start_many("app", 2).await;
    let lb = balancer(&backends).env("DYNO", "web.1").start().await;
    let client = common::http_client();

    let Seen {
        reply,
        status: summary,
        ..
    } = poll(&client, &lb).until_healthy(2).await;
    assert_eq!(
        keys(&summary),
        BTreeSet::from(["status", "backends_total", "backends_healthy", "panic"]),
        "{summary:#}"
    );
    let leaked = leaks(&reply.body, &backends);
    assert!(leaked.is_empty(), "the summary gives away {leaked:?}");
    let page = get_with(&client, &lb, "/_lb/status", &[("Accept", BROWSER_ACCEPT)]).await;
    assert!(!page.body.contains("<table"), "{}", page.body);
    assert!(leaks(&page.body, &backends).is_empty(), "{}", page.body);
    // No token could help, so no login prompt; the page says what to set.
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.headers.get("www-authenticate").is_none(), "{page:?}");
    assert!(
        page.body.contains("LB_STATUS_TOKEN is not set"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("Send the status token"),
        "{}",
        page.body
    );

    let metrics = get_with(&client, &lb, "/_lb/metrics", &[]).await;
    assert_eq!(metrics.status, 401, "{metrics:?}");
    assert!(!metrics.body.contains("heroku_lb_"), "{metrics:?}");
    assert!(
        metrics.headers.get("www-authenticate").is_none(),
        "{metrics:?}"
    );

    let warning = lb
        .output()
        .lines()
        .find(|line| line.contains("level=warn") && line.contains("LB_STATUS_TOKEN"))
        .map(str::to_string);
    println!("start-up warning: {warning:?}");
    assert!(
        warning.is_some(),
        "no warning about LB_STATUS_TOKEN; output:\n{}",
        lb.output()
    );
}

/// A browser gets one self-contained HTML page with a table of the backends (only with the token) that refreshes itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_gets_a_self_contained_html_status_page() {
    let (backends, lb, client) = two_apps_behind_the_token().await;

    let bearer = format!("Bearer {TOKEN}");
    let page = get_with(
        &client,
        &lb,
        "/_lb/status",
        &[("Accept", BROWSER_ACCEPT), ("Authorization", &bearer)],
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    let content_type = page.headers["content-type"].to_str().unwrap_or("");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = &page.body;
    let lower = body.to_ascii_lowercase();
    assert!(lower.starts_with("<!doctype html"), "{body}");
    assert!(lower.contains("<table"), "no table: {body}");
    assert!(
        lower.contains("<meta http-equiv=\"refresh\""),
        "no refresh: {body}"
    );
    for backend in &backends {
        assert!(
            body.contains(&backend.url()),
            "{} missing: {body}",
            backend.url()
        );
    }
    // Self-contained: nothing for the browser to fetch from elsewhere.
    for external in ["src=", "href=", "@import", "url("] {
        assert!(
            !lower.contains(external),
            "'{external}' in the page: {body}"
        );
    }

    for headers in [
        vec![("Accept", BROWSER_ACCEPT)],
        vec![("Accept", BROWSER_ACCEPT), ("Authorization", "Bearer nope")],
    ] {
        let page = get_with(&client, &lb, "/_lb/status", &headers).await;
        assert_eq!(page.status, 401, "{headers:?}: {page:?}");
        assert_basic_challenge(&page);
        let content_type = page.headers["content-type"].to_str().unwrap_or("");
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let leaked = leaks(&page.body, &backends);
        assert!(
            leaked.is_empty(),
            "{headers:?}: the page gives away {leaked:?}: {}",
            page.body
        );
        assert!(!page.body.contains("<table"), "{}", page.body);
    }
}

/// Panics unless `reply` is a 401 asking for Basic credentials in realm heroku-lb.
fn assert_basic_challenge(reply: &Reply) {
    assert_eq!(reply.status, 401, "{reply:?}");
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok());
    assert_eq!(challenge, Some("Basic realm=\"heroku-lb\""), "{reply:?}");
}

/// Basic credentials with any user name and the token as password (what a browser sends for `user:TOKEN@`) get the detail page, the JSON and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_the_token_as_password_gets_the_detail_and_the_metrics() {
    let (backends, lb, client) = two_apps_behind_the_token().await;

    for user in ["user", "", "operator@example.com"] {
        let basic = basic_authorization(user, TOKEN);
        let auth = ("Authorization", basic.as_str());
        let reply = get_with(&client, &lb, "/_lb/status", &[auth]).await;
        assert_eq!(reply.status, 200, "{user:?}: {reply:?}");
        let detail = json(&reply);
        assert_eq!(
            detail["backends"].as_array().map(Vec::len),
            Some(2),
            "{user:?}: {detail:#}"
        );

        let page = get_with(
            &client,
            &lb,
            "/_lb/status",
            &[auth, ("Accept", BROWSER_ACCEPT)],
        )
        .await;
        assert_eq!(page.status, 200, "{user:?}: {page:?}");
        assert!(page.body.contains("<table"), "{}", page.body);
        for backend in &backends {
            assert!(page.body.contains(&backend.url()), "{}", page.body);
        }

        let metrics = get_with(&client, &lb, "/_lb/metrics", &[auth]).await;
        assert_eq!(metrics.status, 200, "{user:?}: {metrics:?}");
        assert!(metrics.body.contains("heroku_lb_requests_total"));
    }
}

/// With the token set, a wrong Basic password, malformed base64 or no credentials get 401 with `WWW-Authenticate: Basic realm="heroku-lb"` on the browser page and the metrics, while a monitor's JSON stays the 200 summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_browsers_and_scrapers_are_challenged_for_basic_credentials() {
    let (backends, lb, client) = two_apps_behind_the_token().await;

    let wrong = basic_authorization("user", "wrong-token");
    let prefix = basic_authorization("user", &TOKEN[..TOKEN.len() - 1]);
    let as_user_name = basic_authorization(TOKEN, "");
    let cases: Vec<Option<String>> = vec![
        None,
        Some(wrong),
        Some(prefix),
        Some(as_user_name),
        Some("Basic !!!not-base64!!!".to_string()),
        Some("Basic dXNlcg".to_string()), // "user", no colon
        Some("Basic x".to_string()),
        Some("Bearer wrong".to_string()),
    ];
    for authorization in &cases {
        let mut headers = vec![("Accept", BROWSER_ACCEPT)];
        if let Some(value) = authorization {
            headers.push(("Authorization", value.as_str()));
        }
        let page = get_with(&client, &lb, "/_lb/status", &headers).await;
        assert_basic_challenge(&page);
        assert!(!page.body.contains("<table"), "{}", page.body);
        assert!(leaks(&page.body, &backends).is_empty(), "{}", page.body);
        assert!(
            page.body.contains("any user name and the status token"),
            "{}",
            page.body
        );

        let metrics = get_with(&client, &lb, "/_lb/metrics", &headers[1..]).await;
        assert_basic_challenge(&metrics);
        assert!(!metrics.body.contains("heroku_lb_"), "{metrics:?}");

        let summary = get_with(&client, &lb, "/_lb/status", &headers[1..]).await;
        assert_eq!(summary.status, 200, "{authorization:?}: {summary:?}");
        assert!(summary.headers.get("www-authenticate").is_none());
        assert_eq!(
            keys(&json(&summary)),
            BTreeSet::from(["status", "backends_total", "backends_healthy", "panic"])
        );
    }
}

/// After some traffic the detail shows each backend's last-minute rate, latency percentiles, 5xx per minute and ten per-minute rates, and the events name each backend's admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_shows_the_last_minute_of_traffic_and_the_recent_events() {
    let (backends, lb, client) = two_apps_behind_the_token().await;
    for _ in 0..20 {
        let reply = common::get(&client, &lb.url_for("/some/page")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let status = poll(&client, &lb)
        .token(TOKEN)
        .until("the traffic in the last minute", |s| {
            s["backends"].as_array().is_some_and(|all| {
                all.iter()
                    .map(|b| b["rps_1m"].as_f64().unwrap_or(0.0))
                    .sum::<f64>()
                    > 0.0
            })
        })
        .await
        .status;
    for backend in &backends {
        let entry = common::status::entry(&status, &backend.url());
        assert_has_keys(
            entry,
            &[
                "rps_1m",
                "p50_ms_1m",
                "p99_ms_1m",
                "errors_5xx_per_min",
                "rate_10m",
            ],
        );
        assert!(
            entry["rps_1m"].as_f64().is_some_and(|r| r > 0.0),
            "{entry:#}"
        );
        assert!(
            entry["p50_ms_1m"].as_f64().is_some_and(|p| p > 0.0),
            "{entry:#}"
        );
        assert!(
            entry["p99_ms_1m"].as_f64() >= entry["p50_ms_1m"].as_f64(),
            "{entry:#}"
        );
        assert_eq!(entry["errors_5xx_per_min"], 0, "{entry:#}");
        let rates = entry["rate_10m"].as_array().expect("rate_10m is a list");
        assert_eq!(rates.len(), 10, "{entry:#}");
        assert_eq!(rates[9], entry["rps_1m"], "{entry:#}");
    }
    let events = status["events"].as_array().expect("events is a list");
    assert!(events.len() <= 20, "{status:#}");
    for event in events {
        assert_has_keys(event, &["at", "kind", "text"]);
    }
    let admitted: BTreeSet<&str> = events
        .iter()
        .filter(|event| event["kind"] == "admitted")
        .filter_map(|event| event["app"].as_str())
        .collect();
    assert_eq!(admitted.len(), 2, "{status:#}");
}

/// Every path under /_lb/ is answered by the balancer (status, metrics, 404, 405) and none reaches a backend; /_lbx is an ordinary path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_are_answered_by_the_balancer_and_never_forwarded() {
    let backends = TestBackend::start_many("app", 2).await;
    let lb = balancer(&backends).start().await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    let cases: [(reqwest::Method, &str, u16); 11] = [
        (reqwest::Method::GET, "/_lb/status", 200),
        (reqwest::Method::GET, "/_lb/status?verbose=1", 200),
        (reqwest::Method::GET, "/_lb/metrics", 200),
        (reqwest::Method::GET, "/_lb/nope", 404),
        (reqwest::Method::GET, "/_lb/status/more", 404),
        (reqwest::Method::GET, "/_lb/", 404),
        (reqwest::Method::GET, "/_lb", 404),
        (reqwest::Method::HEAD, "/_lb/status", 200),
        (reqwest::Method::POST, "/_lb/status", 405),
        (reqwest::Method::DELETE, "/_lb/metrics", 405),
        (reqwest::Method::PUT, "/_lb/nope", 405),
    ];
    for (method, path, expected) in &cases {
        let mut request = client.request(method.clone(), lb.url_for(path));
        if *method == reqwest::Method::POST || *method == reqwest::Method::PUT {
            request = request.body("x=1");
        }
        let reply = common::send(request)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(reply.status, *expected, "{method} {path}: {reply:?}");
        assert!(
            !reply.headers.contains_key(BACKEND_HEADER),
            "{method} {path} was answered by a backend: {reply:?}"
        );
    }

    let reply = common::get(&client, &lb.url_for("/_lbx")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.headers.contains_key(BACKEND_HEADER),
        "/_lbx is not under /_lb/ and goes to an app: {reply:?}"
    );

    for backend in &backends {
        let forwarded: Vec<String> = backend
            .requests()
            .into_iter()
            .map(|r| r.path)
            .filter(|path| path == "/_lb" || path.starts_with("/_lb/") || path.starts_with("/_lb?"))
            .collect();
        assert!(
            forwarded.is_empty(),
            "{} received admin paths: {forwarded:?}",
            backend.name()
        );
    }
    let lbx: usize = backends.iter().map(|b| b.count_to("/_lbx")).sum();
    assert_eq!(lbx, 1);
}

/// With `admin_path_prefix: /_admin/` the status lives there, and /_lb/status becomes an ordinary path proxied to an app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_prefix_can_be_moved_and_the_old_one_is_then_proxied() {
    let backends = TestBackend::start_many("app", 2).await;
    let lb = balancer(&backends)
        .config("admin_path_prefix", "\"/_admin/\"")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    let reply = common::get(&client, &lb.url_for("/_admin/status")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(!reply.headers.contains_key(BACKEND_HEADER), "{reply:?}");
    let status = json(&reply);
    assert_eq!(status["backends_total"], 2, "{status:#}");
    assert!(
        status["instance"].is_null(),
        "no DYNO, no instance: {status:#}"
    );

    let reply = common::get(&client, &lb.url_for("/_admin/metrics")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("heroku_lb_requests_total"), "{reply:?}");
    let reply = common::get(&client, &lb.url_for("/_admin/nope")).await;
    assert_eq!(reply.status, 404, "{reply:?}");

    let reply = common::get(&client, &lb.url_for("/_lb/status")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let from = reply
        .headers
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("/_lb/status was not proxied: {reply:?}"));
    assert_eq!(reply.body, from, "the app's own answer comes back");
    let proxied: usize = backends.iter().map(|b| b.count_to("/_lb/status")).sum();
    assert_eq!(proxied, 1);
    let admin: usize = backends.iter().map(|b| b.count_to("/_admin")).sum();
    assert_eq!(admin, 0, "an /_admin/ path reached an app");
}
