//! Reading the balancer's own view of itself: `/_lb/status` as JSON, one
//! backend's entry in it, one sample of `/_lb/metrics`, the `Authorization`
//! value a browser sends for `user:password@`, and the one way to wait for
//! the status to show something: `poll_status(..).until(what, check)`, with
//! `wait_healthy` for the common case of a number of healthy backends.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::lb::LbProcess;
use super::Reply;

/// `GET /_lb/status` as JSON, whatever its status code (503 when none is healthy).
/// Panics when no answer comes back or the body is not JSON.
pub async fn status(client: &reqwest::Client, lb: &LbProcess) -> Value {
    let reply = super::get(client, &lb.url_for("/_lb/status")).await;
    serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("/_lb/status is not JSON ({e}): {reply:?}"))
}

/// The entry of `status.backends` whose `url` is `url`.
pub fn entry<'a>(status: &'a Value, url: &str) -> &'a Value {
    status["backends"]
        .as_array()
        .and_then(|backends| backends.iter().find(|b| b["url"] == url))
        .unwrap_or_else(|| panic!("no backend {url} in /_lb/status: {status:#}"))
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

/// `(url, in_flight)` of every backend in a status answer; panics when the
/// answer has no backends or one has no numeric `in_flight`.
pub fn in_flight(status: &Value) -> Vec<(String, u64)> {
    status["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no backends array: {status}"))
        .iter()
        .map(|backend| {
            let count = backend["in_flight"]
                .as_u64()
                .unwrap_or_else(|| panic!("backend without a numeric in_flight: {backend}"));
            (backend["url"].as_str().unwrap_or("?").to_string(), count)
        })
        .collect()
}

/// Wait (50 ms apart, up to 10 s) until `/_lb/status` shows `count` healthy
/// backends; panics with the last answer and the balancer's output when it
/// never does. `poll_status` for anything else.
pub async fn wait_healthy(client: &reqwest::Client, lb: &LbProcess, count: u64) {
    poll_status(client, lb).until_healthy(count).await;
}

/// Wait (50 ms apart, up to 5 s) until every backend's `in_flight` is 0;
/// panics with the last answer and the balancer's output when that never
/// happens.
pub async fn wait_in_flight_zero(client: &reqwest::Client, lb: &LbProcess) {
    poll_status(client, lb)
        .within(Duration::from_secs(5))
        .strict()
        .until("every backend's in_flight back to 0", |status| {
            in_flight(status).iter().all(|(_, n)| *n == 0)
        })
        .await;
}

/// How often a status poll asks, unless told otherwise.
pub const POLL_EVERY: Duration = Duration::from_millis(50);
/// How long a status poll goes on, unless told otherwise.
pub const POLL_WITHIN: Duration = Duration::from_secs(10);

/// Poll `/_lb/status` until a condition holds: configure with the methods of
/// [`StatusPoll`], then `until` (panics when the condition never held) or
/// `try_until`. Every poll is bounded by a try count and a deadline.
pub fn poll_status<'a>(client: &'a reqwest::Client, lb: &'a LbProcess) -> StatusPoll<'a> {
    StatusPoll {
        client,
        lb,
        headers: Vec::new(),
        every: POLL_EVERY,
        within: POLL_WITHIN,
        since: None,
        strict: false,
    }
}

/// A poll of `/_lb/status` being set up; see `poll_status`.
#[must_use = "a StatusPoll does nothing until `until` or `try_until`"]
pub struct StatusPoll<'a> {
    client: &'a reqwest::Client,
    lb: &'a LbProcess,
    headers: Vec<(String, String)>,
    every: Duration,
    within: Duration,
    since: Option<Instant>,
    strict: bool,
}

/// The answer a status poll stopped at.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The whole answer: status code, headers, body.
    pub reply: Reply,
    /// The body as JSON.
    pub status: Value,
    /// Time from the poll's start (`since`) to this answer.
    pub after: Duration,
}

impl<'a> StatusPoll<'a> {
    /// Send `Authorization: Bearer <token>` with every poll (the status token).
    pub fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Send a header with every poll.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Ask every `interval` (default `POLL_EVERY`).
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = interval;
        self
    }

    /// Give up `deadline` after the start (default `POLL_WITHIN`).
    pub fn within(mut self, deadline: Duration) -> Self {
        self.within = deadline;
        self
    }

    /// Count the deadline and `Seen::after` from `start` (default: when the poll begins).
    pub fn since(mut self, start: Instant) -> Self {
        self.since = Some(start);
        self
    }

    /// Fail at the first answer that is missing or not JSON, instead of
    /// counting it as "not yet" (the default).
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// Poll until `check` holds for the status; panics, naming `what`, with
    /// the last answer and the balancer's output when it never does.
    pub async fn until(self, what: &str, check: impl Fn(&Value) -> bool) -> Seen {
        let (lb, every, within) = (self.lb, self.every, self.within);
        self.try_until(check).await.unwrap_or_else(|last| {
            panic!(
                "/_lb/status never showed {what} (polled every {every:?} for {within:?}); \
                 last: {last}\nbalancer output:\n{}",
                lb.output()
            )
        })
    }

    /// `until` for `count` healthy backends.
    pub async fn until_healthy(self, count: u64) -> Seen {
        self.until(&format!("{count} healthy backends"), |status| {
            status["backends_healthy"].as_u64() == Some(count)
        })
        .await
    }

    /// `until` for the backend at `url` showing `healthy: healthy` (panics at
    /// once when the status does not list it).
    pub async fn until_backend(self, url: &str, healthy: bool) -> Seen {
        self.until(&format!("{url} with healthy={healthy}"), |status| {
            entry(status, url)["healthy"] == healthy
        })
        .await
    }

    /// Poll until `check` holds for the status; Err describes the last answer
    /// (or why there was none) when the deadline passed first, or the first
    /// bad answer of a strict poll.
    pub async fn try_until(self, check: impl Fn(&Value) -> bool) -> Result<Seen, String> {
        let since = self.since.unwrap_or_else(Instant::now);
        let deadline = since + self.within;
        let tries = self.within.as_millis() / self.every.as_millis().max(1) + 1;
        let mut last = "no answer yet".to_string();
        for _ in 0..tries {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let answer = match tokio::time::timeout(left, self.ask()).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer before the deadline ({left:?} left)")),
            };
            match answer {
                Ok((reply, status)) => {
                    if check(&status) {
                        let after = since.elapsed();
                        return Ok(Seen {
                            reply,
                            status,
                            after,
                        });
                    }
                    last = format!("{} {status}", reply.status);
                }
                Err(e) if self.strict => return Err(e),
                Err(e) => last = e,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(self.every.min(left)).await;
        }
        Err(last)
    }

    /// One GET of the status, with the poll's headers, read as JSON.
    async fn ask(&self) -> Result<(Reply, Value), String> {
        let mut request = self.client.get(self.lb.url_for("/_lb/status"));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let reply = super::send(request)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        match serde_json::from_str(&reply.body) {
            Ok(status) => Ok((reply, status)),
            Err(e) => Err(format!("not JSON ({e}): {reply:?}")),
        }
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
