//! What the balancer sees, for operators: the `/_lb/` endpoints, answered by
//! the proxy's `request_filter` and never forwarded upstream.
//!
//! Routes (under the configurable prefix, `/_lb/` by default):
//! - `GET status`: [`StatusSnapshot`] as JSON, or as an HTML page for a
//!   browser (`html.rs`). 200 while at least one backend is healthy, 503 when
//!   none is, so an uptime monitor can watch it. With `LB_STATUS_TOKEN` set,
//!   only the token's holder gets the detail: `Authorization: Bearer <token>`,
//!   or `Basic` with any user name and the token as the password (what a
//!   browser sends for `https://user:TOKEN@…` or after its login prompt).
//!   Others get the [`Summary`] (no hostnames): a JSON caller with 200/503 as
//!   above, because uptime monitors poll it without credentials; a browser
//!   (`Accept: text/html`) with 401 and `WWW-Authenticate: Basic
//!   realm="heroku-lb"`, as HAProxy's `stats auth` does, so it asks.
//! - `GET metrics`: Prometheus text (`metrics.rs`), with state gauges set from
//!   a fresh snapshot; behind the token too, when one is set (it names apps):
//!   401 with the same `Basic` challenge without it.
//!
//! The detail names every app's URL and address, which lets a client go
//! around the balancer, so without a token only loopback callers (an operator
//! on the machine) see it and the metrics; everyone else gets the summary or
//! 401. On a dyno every caller's TCP peer is Heroku's router, so there no
//! caller counts as local and the detail needs the token (`access.rs`).
//!
//! Input: the `LoadBalancer` (membership and Pingora's health), each
//! `AppTarget` (address, checks, counters, its last ten minutes of traffic in
//! `traffic.rs`), discovery's status, the Platform API figures and the recent
//! events (`events.rs`). Nothing here changes state.

mod access;
mod html;

pub use access::Access;
use access::{may_see_detail, presented_token};

use crate::backend::AppTarget;
use crate::discovery::heroku::api::ApiStats;
use crate::discovery::DiscoveryStatus;
use crate::events::events;
use crate::metrics::{self, metrics};
use crate::selection::{Policy, Selector};
use crate::store::SharedStore;
use crate::time;
use crate::webhooks::{WebhookReceiver, WebhookView};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::proxy::Session;
use pingora::Result;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// The whole picture, as `/_lb/status` serves it to an authorized caller.
#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    /// `ok` (all backends healthy), `degraded` (some), `down` (none).
    pub status: &'static str,
    /// The dyno (`DYNO`), when on Heroku.
    pub instance: Option<String>,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub policy: &'static str,
    pub backends_total: usize,
    pub backends_healthy: usize,
    /// Panic routing: no backend is fit, so requests go to every backend
    /// with an address (`selection.rs`).
    pub panic: bool,
    pub discovery: DiscoveryView,
    /// Heroku webhooks, when they are on (`LB_WEBHOOK_SECRET`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhookView>,
    /// The admission queue, when backends are capped (`max_in_flight_per_dyno`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueView>,
    /// The shared store, when dynos share one (`REDIS_URL`): `connected`,
    /// `fallback` (acting alone until it answers) or `connecting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<&'static str>,
    /// Whether this dyno holds the store's lease (polls and checks for all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_leader: Option<bool>,
    pub backends: Vec<BackendView>,
    /// The last events (`events.rs`), newest first.
    pub events: Vec<EventView>,
}

/// One recent event.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub at: String,
    /// `up`, `down`, `admitted`, `ejected`, `panic_on`, `app_added`, …
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub text: String,
}

/// The admission queue, for status.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub depth: usize,
    pub max: usize,
    pub timeout_seconds: f64,
    /// Wait of the last requests that queued (got a slot or not).
    pub wait_p50_ms: Option<f64>,
    pub wait_p99_ms: Option<f64>,
    pub rejected_full: u64,
    pub rejected_timeout: u64,
}

/// What a caller without the token sees.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub status: &'static str,
    pub backends_total: usize,
    pub backends_healthy: usize,
    pub panic: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryView {
    pub source: String,
    pub rounds: u64,
    pub failed_rounds: u64,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub apps_known: usize,
    /// A round's removal of many apps, held until the next round confirms it.
    pub shrink_pending: Option<ShrinkView>,
    /// Platform API figures (pipeline discovery only).
    pub api_requests: Option<u64>,
    pub api_rate_limit_remaining: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShrinkView {
    /// Names of the apps the held round would remove.
    pub removing: Vec<String>,
    /// Apps known now.
    pub known: usize,
    pub since: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    /// The app name (static mode: the host).
    pub name: String,
    pub url: String,
    /// Takes traffic now.
    pub healthy: bool,
    /// Why not, when not: `unresolved`, `not admitted` (no check has passed
    /// yet), `ejected`, `draining` (restarting after a release without
    /// preboot), `failing checks`.
    pub state: &'static str,
    /// Its share of its weight now, in percent: below 100 while it slow-starts.
    pub share_percent: u32,
    /// `peak_ewma`: its latency estimate, and its cost (estimate × (in
    /// flight + 1) ÷ (weight × share), in ms); null under other policies.
    pub latency_ewma_ms: Option<f64>,
    pub cost: Option<f64>,
    pub weight: usize,
    pub address: Option<String>,
    pub last_check: Option<String>,
    pub last_check_ok: Option<bool>,
    pub last_check_at: Option<String>,
    pub consecutive_failures: u32,
    pub requests: u64,
    pub responses_5xx: u64,
    pub connect_failures: u64,
    /// Requests at this backend now.
    pub in_flight: usize,
    /// Requests per second over the last minute.
    pub rps_1m: f64,
    /// Upstream latency percentiles over the last minute (null: no answer).
    pub p50_ms_1m: Option<f64>,
    pub p99_ms_1m: Option<f64>,
    /// 5xx answers in the last minute.
    pub errors_5xx_per_min: u64,
    /// Requests per second in each of the last ten minutes, oldest first.
    pub rate_10m: [f64; crate::traffic::MINUTES],
}

/// The `/_lb/` endpoints.
pub struct StatusPage {
    lb: Arc<LoadBalancer<RoundRobin>>,
    policy: Policy,
    discovery: Arc<DiscoveryStatus>,
    api: Option<Arc<ApiStats>>,
    started: Instant,
    /// The dyno, when on Heroku: then every caller comes through the router.
    instance: Option<String>,
    token: Option<String>,
    prefix: String,
    webhooks: Option<Arc<WebhookReceiver>>,
    /// The proxy's selector, for shares, costs and the queue.
    selector: Option<Arc<Selector>>,
    store: Option<Arc<SharedStore>>,
}

impl StatusPage {
    pub fn new(
        lb: Arc<LoadBalancer<RoundRobin>>,
        policy: Policy,
        discovery: Arc<DiscoveryStatus>,
        api: Option<Arc<ApiStats>>,
        instance: Option<String>,
        token: Option<String>,
        prefix: String,
    ) -> Self {
        StatusPage {
            lb,
            policy,
            discovery,
            api,
            started: Instant::now(),
            instance,
            token,
            prefix,
            webhooks: None,
            selector: None,
            store: None,
        }
    }

    /// Show the last Heroku webhook `receiver` took.
    pub fn with_webhooks(mut self, receiver: Option<Arc<WebhookReceiver>>) -> Self {
        self.webhooks = receiver;
        self
    }

    /// Show where this dyno stands with the shared `store`.
    pub fn with_store(mut self, store: Option<Arc<SharedStore>>) -> Self {
        self.store = store;
        self
    }

    /// Show what `selector` weighs: each backend's share within a slow
    /// start, its `peak_ewma` cost, and the admission queue.
    pub fn with_selector(mut self, selector: Arc<Selector>) -> Self {
        self.selector = Some(selector);
        self
    }

    /// Whether `path` belongs to the balancer rather than the apps.
    pub fn owns(&self, path: &str) -> bool {
        path.starts_with(&self.prefix) || path == self.prefix.trim_end_matches('/')
    }

    /// Build the snapshot now.
    pub fn snapshot(&self) -> StatusSnapshot {
        let backends: Vec<BackendView> = self
            .lb
            .backends()
            .get_backend()
            .iter()
            .filter_map(|backend| {
                let target = AppTarget::of(backend)?;
                Some(backend_view(
                    target,
                    backend.weight,
                    self.lb.backends().ready(backend),
                    self.selector.as_deref(),
                ))
            })
            .collect();
        let healthy = backends.iter().filter(|backend| backend.healthy).count();
        let status = overall(healthy, backends.len());
        // The rule selection follows: nothing fit, something to send to.
        let panic = healthy == 0 && backends.iter().any(|backend| backend.address.is_some());
        let discovery = self.discovery.snapshot();
        StatusSnapshot {
            status,
            instance: self.instance.clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            policy: self.policy.name(),
            backends_total: backends.len(),
            backends_healthy: healthy,
            panic,
            discovery: DiscoveryView {
                source: discovery.source,
                rounds: discovery.rounds,
                failed_rounds: discovery.failed_rounds,
                last_success: discovery.last_success.map(time::rfc3339),
                last_error_at: discovery
                    .last_error
                    .as_ref()
                    .map(|(_, at)| time::rfc3339(*at)),
                last_error: discovery.last_error.map(|(message, _)| message),
                apps_known: discovery.apps_known,
                shrink_pending: discovery.shrink_pending.map(|held| ShrinkView {
                    removing: held.removing,
                    known: held.known,
                    since: time::rfc3339(held.since),
                }),
                api_requests: self.api.as_ref().map(|api| api.requests()),
                api_rate_limit_remaining: self
                    .api
                    .as_ref()
                    .and_then(|api| api.rate_limit_remaining()),
            },
            webhooks: self.webhooks.as_ref().map(|receiver| receiver.view()),
            store: self.store.as_ref().map(|store| store.state().label()),
            store_leader: self.store.as_ref().map(|store| store.is_leader()),
            queue: self
                .selector
                .as_ref()
                .and_then(|selector| selector.queue())
                .map(|queue| {
                    let figures = queue.figures();
                    let ms = |d: std::time::Duration| round2(d.as_secs_f64() * 1000.0);
                    QueueView {
                        depth: figures.depth,
                        max: figures.max,
                        timeout_seconds: figures.timeout.as_secs_f64(),
                        wait_p50_ms: figures.wait_p50.map(ms),
                        wait_p99_ms: figures.wait_p99.map(ms),
                        rejected_full: figures.rejected_full,
                        rejected_timeout: figures.rejected_timeout,
                    }
                }),
            backends,
            events: events()
                .recent()
                .into_iter()
                .map(|event| EventView {
                    at: time::rfc3339(event.at),
                    kind: event.kind.label(),
                    app: event.app,
                    text: event.text,
                })
                .collect(),
        }
    }

    /// The four figures everyone may see, counted without building the
    /// snapshot (no traffic window, event ring or per-app lock): a caller
    /// without the token costs next to nothing.
    pub fn summary(&self) -> Summary {
        let members = self.lb.backends().get_backend();
        let mut total = 0;
        let mut healthy = 0;
        let mut addressed = false;
        for backend in members.iter() {
            let Some(target) = AppTarget::of(backend) else {
                continue;
            };
            total += 1;
            addressed |= target.addr().is_some();
            if target.routable() && self.lb.backends().ready(backend) {
                healthy += 1;
            }
        }
        Summary {
            status: overall(healthy, total),
            backends_total: total,
            backends_healthy: healthy,
            panic: healthy == 0 && addressed,
        }
    }

    /// Answer a request under the prefix, from `caller` (the client as a
    /// trusted hop names it, else the TCP peer). Always handles it (returns
    /// `true`). Who may see what is decided first; the snapshot is built
    /// only for a caller who sees it.
    pub async fn serve(&self, session: &mut Session, caller: Option<IpAddr>) -> Result<bool> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        if method != http::Method::GET && method != http::Method::HEAD {
            respond(
                session,
                405,
                "text/plain; charset=utf-8",
                b"method not allowed\n".to_vec(),
                false,
            )
            .await?;
            return Ok(true);
        }
        let route = path.strip_prefix(&self.prefix).unwrap_or("");
        let access = self.access(session, caller);
        match route {
            "status" => {
                let html = wants_html(session);
                let (code, content_type, body) = if access == Access::Detail {
                    let snapshot = self.snapshot();
                    let code = if snapshot.backends_healthy > 0 {
                        200
                    } else {
                        503
                    };
                    if html {
                        let page = html::render(&snapshot);
                        (code, "text/html; charset=utf-8", page.into_bytes())
                    } else {
                        (code, "application/json", to_json(&snapshot))
                    }
                } else {
                    let summary = self.summary();
                    let code = if summary.backends_healthy > 0 {
                        200
                    } else {
                        503
                    };
                    match (html, access) {
                        // A browser is asked for the token; see the module doc.
                        (true, Access::TokenRequired) => (
                            401,
                            "text/html; charset=utf-8",
                            html::render_summary(&summary, access).into_bytes(),
                        ),
                        (true, _) => (
                            code,
                            "text/html; charset=utf-8",
                            html::render_summary(&summary, access).into_bytes(),
                        ),
                        (false, _) => (code, "application/json", to_json(&summary)),
                    }
                };
                let challenge = code == 401;
                respond(session, code, content_type, body, challenge).await?;
            }
            // Metrics name every app: behind the token like the status detail
            // (Prometheus sends it with `authorization: {credentials: …}` or
            // `basic_auth`).
            "metrics" if access != Access::Detail => {
                let why: &[u8] = match access {
                    Access::TokenRequired => {
                        b"the status token is required: Basic auth with any user name and the \
                          token as the password, or a bearer token\n"
                    }
                    _ => {
                        b"set LB_STATUS_TOKEN and send it (Basic password or bearer token) \
                           to read the metrics\n"
                    }
                };
                respond(
                    session,
                    401,
                    "text/plain; charset=utf-8",
                    why.to_vec(),
                    access == Access::TokenRequired,
                )
                .await?;
            }
            "metrics" => {
                self.update_gauges(&self.snapshot());
                match metrics::render() {
                    Ok(body) => {
                        respond(
                            session,
                            200,
                            "text/plain; version=0.0.4; charset=utf-8",
                            body,
                            false,
                        )
                        .await?
                    }
                    Err(e) => {
                        respond(
                            session,
                            500,
                            "text/plain; charset=utf-8",
                            format!("{e}\n").into_bytes(),
                            false,
                        )
                        .await?
                    }
                }
            }
            _ => {
                let body = format!("not found; try {0}status or {0}metrics\n", self.prefix);
                respond(
                    session,
                    404,
                    "text/plain; charset=utf-8",
                    body.into_bytes(),
                    false,
                )
                .await?;
            }
        }
        Ok(true)
    }

    /// What `caller` may see (`access.rs`), and if not, why not.
    fn access(&self, session: &Session, caller: Option<IpAddr>) -> Access {
        let presented = presented_token(
            session
                .req_header()
                .headers
                .get("authorization")
                .and_then(|value| value.to_str().ok()),
        );
        let behind_heroku_router = self.instance.is_some();
        if may_see_detail(
            self.token.as_deref(),
            &presented,
            caller,
            behind_heroku_router,
        ) {
            Access::Detail
        } else if self.token.is_some() {
            Access::TokenRequired
        } else if behind_heroku_router {
            Access::NoTokenOnDyno
        } else {
            Access::LoopbackOnly
        }
    }

    fn update_gauges(&self, snapshot: &StatusSnapshot) {
        let m = metrics();
        m.backend_healthy.reset();
        m.backend_in_flight.reset();
        for backend in &snapshot.backends {
            let label = [backend.name.as_str()];
            m.backend_healthy
                .with_label_values(&label)
                .set(i64::from(backend.healthy));
            m.backend_in_flight
                .with_label_values(&label)
                .set(backend.in_flight as i64);
        }
        m.backends.set(snapshot.backends_total as i64);
        m.queue_depth.set(
            snapshot
                .queue
                .as_ref()
                .map_or(0, |queue| queue.depth as i64),
        );
        metrics::advance_to(&m.log_lines_dropped, crate::logging::dropped_total());
        m.panic_routing.set(i64::from(snapshot.panic));
        metrics::advance_to(&m.discovery_rounds, snapshot.discovery.rounds);
        metrics::advance_to(&m.discovery_errors, snapshot.discovery.failed_rounds);
        metrics::advance_to(
            &m.api_requests,
            snapshot.discovery.api_requests.unwrap_or(0),
        );
        m.api_rate_limit_remaining.set(
            snapshot
                .discovery
                .api_rate_limit_remaining
                .map_or(-1, |remaining| remaining as i64),
        );
    }
}

fn backend_view(
    target: &AppTarget,
    weight: usize,
    pingora_healthy: bool,
    selector: Option<&Selector>,
) -> BackendView {
    let (last, consecutive_failures) = target.health_view();
    let recent = target.metrics.recent.figures();
    let state = if target.addr().is_none() {
        "unresolved"
    } else if !target.is_admitted() {
        "not admitted"
    } else if target.is_ejected() {
        "ejected"
    } else if target.is_draining() {
        "draining"
    } else if !pingora_healthy {
        "failing checks"
    } else {
        "healthy"
    };
    BackendView {
        name: target.name().to_string(),
        url: target.url_text().to_string(),
        healthy: state == "healthy",
        state,
        share_percent: selector.map_or(100, |selector| {
            target.share(selector.slow_start()) * 100 / crate::backend::FULL_SHARE
        }),
        latency_ewma_ms: target
            .latency
            .estimate()
            .map(|estimate| round2(estimate.as_secs_f64() * 1000.0)),
        cost: selector
            .and_then(|selector| selector.cost(target, weight))
            .map(|cost| round2(cost * 1000.0)),
        weight,
        address: target.addr().map(|addr| addr.to_string()),
        last_check_ok: last.as_ref().map(|outcome| outcome.ok),
        last_check_at: last.as_ref().map(|outcome| time::rfc3339(outcome.at)),
        last_check: last.map(|outcome| outcome.detail),
        consecutive_failures,
        requests: target.counters.requests.load(Ordering::Relaxed),
        responses_5xx: target.counters.responses_5xx.load(Ordering::Relaxed),
        connect_failures: target.counters.connect_failures.load(Ordering::Relaxed),
        in_flight: target.in_flight(),
        rps_1m: recent.rps_1m,
        p50_ms_1m: recent.p50_ms_1m,
        p99_ms_1m: recent.p99_ms_1m,
        errors_5xx_per_min: recent.errors_5xx_per_min,
        rate_10m: recent.rate_10m,
    }
}

/// Two decimals are plenty for milliseconds in status.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// `ok` (all backends healthy), `degraded` (some), `down` (none).
fn overall(healthy: usize, total: usize) -> &'static str {
    if healthy == 0 {
        "down"
    } else if healthy < total {
        "degraded"
    } else {
        "ok"
    }
}

#[cfg(test)]
fn summary(snapshot: &StatusSnapshot) -> Summary {
    Summary {
        status: snapshot.status,
        backends_total: snapshot.backends_total,
        backends_healthy: snapshot.backends_healthy,
        panic: snapshot.panic,
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    body
}

fn wants_html(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get("accept")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

async fn respond(
    session: &mut Session,
    code: u16,
    content_type: &str,
    body: Vec<u8>,
    challenge: bool,
) -> Result<()> {
    let mut response = ResponseHeader::build(code, Some(5))?;
    if challenge {
        response.insert_header("WWW-Authenticate", "Basic realm=\"heroku-lb\"")?;
    }
    response.insert_header("Content-Type", content_type)?;
    response.insert_header("Content-Length", body.len().to_string())?;
    response.insert_header("Cache-Control", "no-store")?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(response), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample() -> StatusSnapshot {
        StatusSnapshot {
            status: "degraded",
            instance: Some("web.1".into()),
            version: "0.1.0",
            uptime_seconds: 42,
            policy: "round_robin",
            backends_total: 2,
            backends_healthy: 1,
            panic: false,
            discovery: DiscoveryView {
                source: "static".into(),
                rounds: 1,
                failed_rounds: 0,
                last_success: Some("2026-11-23T09:00:00Z".into()),
                last_error: None,
                last_error_at: None,
                apps_known: 2,
                shrink_pending: None,
                api_requests: None,
                api_rate_limit_remaining: None,
            },
            webhooks: None,
            queue: None,
            store: None,
            store_leader: None,
            backends: vec![
                BackendView {
                    name: "shop-1".into(),
                    url: "https://shop-1.herokuapp.com".into(),
                    healthy: true,
                    state: "healthy",
                    share_percent: 100,
                    latency_ewma_ms: None,
                    cost: None,
                    weight: 1,
                    address: Some("127.0.0.1:443".into()),
                    last_check: Some("ok".into()),
                    last_check_ok: Some(true),
                    last_check_at: Some("2026-11-23T09:00:01Z".into()),
                    consecutive_failures: 0,
                    requests: 10,
                    responses_5xx: 0,
                    connect_failures: 0,
                    in_flight: 0,
                    rps_1m: 1.5,
                    p50_ms_1m: Some(11.31),
                    p99_ms_1m: Some(45.25),
                    errors_5xx_per_min: 0,
                    rate_10m: [0.0, 0.5, 1.0, 2.0, 4.0, 2.0, 1.0, 1.5, 1.5, 1.5],
                },
                BackendView {
                    name: "shop-<2>".into(),
                    url: "https://shop-2.herokuapp.com".into(),
                    healthy: false,
                    state: "failing checks",
                    share_percent: 100,
                    latency_ewma_ms: None,
                    cost: None,
                    weight: 1,
                    address: Some("127.0.0.1:443".into()),
                    last_check: Some("status 503".into()),
                    last_check_ok: Some(false),
                    last_check_at: Some("2026-11-23T09:00:01Z".into()),
                    consecutive_failures: 3,
                    requests: 4,
                    responses_5xx: 4,
                    connect_failures: 0,
                    in_flight: 0,
                    rps_1m: 0.07,
                    p50_ms_1m: None,
                    p99_ms_1m: None,
                    errors_5xx_per_min: 4,
                    rate_10m: [0.0; 10],
                },
            ],
            events: vec![
                EventView {
                    at: "2026-11-23T09:00:02Z".into(),
                    kind: "down",
                    app: Some("shop-<2>".into()),
                    text: "2 health checks failed, last: <b>status 503</b> & \"'".into(),
                },
                EventView {
                    at: "2026-11-23T09:00:00Z".into(),
                    kind: "panic_off",
                    app: None,
                    text: "panic routing off".into(),
                },
            ],
        }
    }

    /// The summary an anonymous caller gets, counted without a snapshot,
    /// says what the snapshot would.
    #[tokio::test]
    async fn the_cheap_summary_agrees_with_the_snapshot() {
        use crate::backend::{BackendUrl, CheckOutcome};
        let targets: Vec<Arc<AppTarget>> = (0..4)
            .map(|i| {
                let url = format!("http://127.0.0.1:{}", 9100 + i);
                let url = BackendUrl::parse(&url).expect("url");
                Arc::new(AppTarget::new(i + 1, url, format!("app-{i}")))
            })
            .collect();
        let page = |targets: &[Arc<AppTarget>]| {
            let backends: std::collections::BTreeSet<_> =
                targets.iter().map(|target| target.backend(1)).collect();
            let discovery = pingora::lb::discovery::Static::new(backends);
            let lb =
                LoadBalancer::<RoundRobin>::from_backends(pingora::lb::Backends::new(discovery));
            (lb, Arc::new(DiscoveryStatus::default()))
        };
        let (lb, discovery) = page(&targets);
        lb.update().await.expect("a static list updates");
        let status = StatusPage::new(
            Arc::new(lb),
            Policy::RoundRobin,
            discovery,
            None,
            None,
            None,
            "/_lb/".into(),
        );
        let agree = |what: &str| {
            let (cheap, full) = (status.summary(), summary(&status.snapshot()));
            assert_eq!(
                serde_json::to_value(&cheap).expect("json"),
                serde_json::to_value(&full).expect("json"),
                "{what}"
            );
            cheap
        };
        assert_eq!(agree("none admitted").status, "down");
        let pass = CheckOutcome {
            ok: true,
            detail: "ok".into(),
            at: std::time::SystemTime::now(),
        };
        for target in &targets[..2] {
            target.record_check(pass.clone(), 1, 1);
        }
        assert_eq!(agree("two of four").backends_healthy, 2);
        for target in &targets[2..] {
            target.record_check(pass.clone(), 1, 1);
        }
        assert_eq!(agree("all").status, "ok");
    }

    #[test]
    fn the_summary_carries_no_hostnames() {
        let json = String::from_utf8(to_json(&summary(&sample()))).expect("utf-8");
        assert!(json.contains("\"degraded\""));
        assert!(!json.contains("herokuapp"));
        assert!(!json.contains("shop-1"));
    }

    #[test]
    fn the_detail_has_every_backend_field() {
        let value: serde_json::Value = serde_json::from_slice(&to_json(&sample())).expect("json");
        let backend = &value["backends"][1];
        for field in [
            "name",
            "url",
            "healthy",
            "weight",
            "address",
            "last_check",
            "last_check_at",
            "consecutive_failures",
            "requests",
            "responses_5xx",
        ] {
            assert!(backend.get(field).is_some(), "missing {field}");
        }
        assert_eq!(value["instance"], "web.1");
    }

    #[test]
    fn the_detail_carries_the_recent_figures_and_events() {
        let value: serde_json::Value = serde_json::from_slice(&to_json(&sample())).expect("json");
        let backend = &value["backends"][0];
        assert_eq!(backend["rps_1m"], 1.5);
        assert_eq!(backend["p99_ms_1m"], 45.25);
        assert_eq!(backend["errors_5xx_per_min"], 0);
        assert_eq!(backend["rate_10m"].as_array().map(Vec::len), Some(10));
        assert!(value["backends"][1]["p50_ms_1m"].is_null());
        let event = &value["events"][0];
        assert_eq!(event["kind"], "down");
        assert_eq!(event["app"], "shop-<2>");
        assert!(value["events"][1].get("app").is_none());
    }
}
