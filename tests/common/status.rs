//! Reading the balancer's own view of itself: `/_lb/status` as JSON, one
//! backend's entry in it, one sample of `/_lb/metrics`, waiting until the
//! status shows a given number of healthy backends, and the `Authorization`
//! value a browser sends for `user:password@`.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::lb::LbProcess;

/// `GET /_lb/status` as JSON, whatever its status code (503 when none is healthy).
/// Panics when no answer comes back or the body is not JSON.
pub async fn status(client: &reqwest::Client, lb: &LbProcess) -> Value {
    let reply = super::get(client, &lb.url_for("/_lb/status")).await;
    serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("/_lb/status is not JSON ({e}): {reply:?}"))
}

/// `/_lb/status` as JSON, or why not (no answer, or not JSON).
pub async fn try_status(client: &reqwest::Client, lb: &LbProcess) -> Result<Value, String> {
    let reply = super::send(client.get(lb.url_for("/_lb/status"))).await?;
    serde_json::from_str(&reply.body).map_err(|e| format!("status is not JSON ({e}): {reply:?}"))
}

/// The entry of `status.backends` whose `url` is `url`.
pub fn entry<'a>(status: &'a Value, url: &str) -> &'a Value {
    status["backends"]
        .as_array()
        .and_then(|backends| backends.iter().find(|b| b["url"] == url))
        .unwrap_or_else(|| panic!("no backend {url} in /_lb/status: {status:#}"))
}

/// Poll `/_lb/status` every `poll` until the backend at `url` shows
/// `healthy: want`, for as long as `since.elapsed() < deadline`. Returns the
/// time since `since` and the backend's entry at that moment, or the last
/// entry seen when the deadline passed first.
pub async fn wait_backend_healthy(
    client: &reqwest::Client,
    lb: &LbProcess,
    url: &str,
    want: bool,
    since: Instant,
    deadline: Duration,
    poll: Duration,
) -> Result<(Duration, Value), Value> {
    let mut last = Value::Null;
    while since.elapsed() < deadline {
        let snapshot = status(client, lb).await;
        let backend = entry(&snapshot, url).clone();
        if backend["healthy"] == want {
            return Ok((since.elapsed(), backend));
        }
        last = backend;
        tokio::time::sleep(poll).await;
    }
    Err(last)
}

/// The value of the sample `name{backend="<backend>"}` in `/_lb/metrics`, if any.
pub async fn metric(
    client: &reqwest::Client,
    lb: &LbProcess,
    name: &str,
    backend: &str,
) -> Option<f64> {
    let reply = super::get(client, &lb.url_for("/_lb/metrics")).await;
    assert_eq!(reply.status, 200, "/_lb/metrics: {reply:?}");
    let series = format!("{name}{{backend=\"{backend}\"}} ");
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| {
            value
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series}{value}: not a number ({e})"))
        })
}

/// Wait (200 tries, 50 ms apart: about 10 s) until `/_lb/status` shows
/// `count` healthy backends; panics with the last status and the balancer's
/// output when it never does.
pub async fn wait_healthy(client: &reqwest::Client, lb: &LbProcess, count: u64) {
    wait_healthy_with(client, lb, &[], count).await
}

/// `wait_healthy`, sending `headers` (such as the status token) with every poll.
/// An answer that is missing or not JSON counts as "not yet".
pub async fn wait_healthy_with(
    client: &reqwest::Client,
    lb: &LbProcess,
    headers: &[(&str, &str)],
    count: u64,
) {
    let poll = || async {
        let mut request = client.get(lb.url_for("/_lb/status"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        super::send(request).await
    };
    let healthy = super::poll_until(200, Duration::from_millis(50), || async {
        matches!(poll().await, Ok(reply) if serde_json::from_str::<Value>(&reply.body)
            .is_ok_and(|s| s["backends_healthy"].as_u64() == Some(count)))
    })
    .await;
    if !healthy {
        let last = match poll().await {
            Ok(reply) => reply.body,
            Err(e) => e,
        };
        panic!(
            "never saw {count} healthy backends; last status: {last}\nbalancer output:\n{}",
            lb.output()
        );
    }
}

/// The `Authorization: Basic …` value for `user` and `password`, made by
/// reqwest (not by the balancer's own decoder).
pub fn basic_authorization(user: &str, password: &str) -> String {
    let request = reqwest::Client::new()
        .get("http://127.0.0.1/")
        .basic_auth(user, Some(password))
        .build()
        .expect("a request to a fixed loopback URL always builds");
    request.headers()["authorization"]
        .to_str()
        .expect("base64 is ASCII")
        .to_string()
}
