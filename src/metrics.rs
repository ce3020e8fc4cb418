//! Every Prometheus metric heroku-lb exports, registered in one place and
//! rendered as text on `/_lb/metrics` (see `status/`).
//!
//! The proxy, health check and discovery count into these; values that are
//! state rather than events (health, rate limit, discovery figures) are set
//! from a fresh status snapshot at scrape time, so a scrape always agrees with
//! `/_lb/status`. Per-backend handles are looked up once per backend and kept
//! in its `AppTarget`, so the request path does no label hashing. Names follow
//! Prometheus conventions: one `heroku_lb_` prefix, `_total` counters,
//! `_seconds` durations.

use crate::traffic::TrafficWindow;
use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Encoder, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};
use std::sync::OnceLock;

/// The metric families.
pub struct Metrics {
    pub requests: IntCounterVec,
    pub upstream_latency: HistogramVec,
    pub backend_healthy: IntGaugeVec,
    pub backend_in_flight: IntGaugeVec,
    pub health_check_failures: IntCounterVec,
    pub passive_ejections: IntCounterVec,
    pub discovery_rounds: IntCounter,
    pub discovery_errors: IntCounter,
    pub api_rate_limit_remaining: IntGauge,
    pub api_requests: IntCounter,
    pub backends: IntGauge,
    pub panic_routing: IntGauge,
    pub retries: IntCounterVec,
    pub own_responses: IntCounterVec,
    pub request_duration: Histogram,
    pub log_lines_dropped: IntCounter,
    pub webhook_deliveries: IntCounterVec,
    pub queue_depth: IntGauge,
    pub queue_wait: Histogram,
    pub queue_rejections: IntCounterVec,
}

/// Why a request was sent to another backend (`retries`' `reason` label).
pub const RETRY_REASONS: [&str; 5] = [
    "connect_failed",
    "failed_before_answer",
    "stale_connection",
    "5xx_answer",
    "budget_exhausted",
];

/// Reasons a health check fails (`health.rs`), the `reason` label.
pub const CHECK_FAILURE_REASONS: [&str; 10] = [
    "unresolved",
    "refused",
    "connect",
    "timeout",
    "tls",
    "reset",
    "protocol",
    "status",
    "request",
    "other",
];

/// Status classes used as the `class` label of requests.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn registered() -> Result<Metrics, prometheus::Error> {
    Ok(Metrics {
        requests: register_int_counter_vec!(
            "heroku_lb_requests_total",
            "Proxied requests by backend app and response status class (1xx: upgraded, error: no response).",
            &["backend", "class"]
        )?,
        upstream_latency: register_histogram_vec!(
            "heroku_lb_upstream_latency_seconds",
            "Time from choosing a backend to its response header.",
            &["backend"],
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
        )?,
        backend_healthy: register_int_gauge_vec!(
            "heroku_lb_backend_healthy",
            "1 when the backend takes traffic, else 0.",
            &["backend"]
        )?,
        backend_in_flight: register_int_gauge_vec!(
            "heroku_lb_backend_in_flight",
            "Proxied requests at the backend now.",
            &["backend"]
        )?,
        health_check_failures: register_int_counter_vec!(
            "heroku_lb_health_check_failures_total",
            "Failed active health checks by backend and reason.",
            &["backend", "reason"]
        )?,
        passive_ejections: register_int_counter_vec!(
            "heroku_lb_passive_ejections_total",
            "Backends taken out of rotation by failures seen on live traffic.",
            &["backend"]
        )?,
        discovery_rounds: register_int_counter!(
            "heroku_lb_discovery_rounds_total",
            "Discovery rounds run."
        )?,
        discovery_errors: register_int_counter!(
            "heroku_lb_discovery_errors_total",
            "Discovery rounds that failed."
        )?,
        api_rate_limit_remaining: register_int_gauge!(
            "heroku_lb_platform_api_ratelimit_remaining",
            "Last RateLimit-Remaining answered by the Heroku Platform API (-1: not yet known)."
        )?,
        api_requests: register_int_counter!(
            "heroku_lb_platform_api_requests_total",
            "Requests sent to the Heroku Platform API."
        )?,
        backends: register_int_gauge!("heroku_lb_backends", "Backends known to the balancer.")?,
        panic_routing: register_int_gauge!(
            "heroku_lb_panic_routing",
            "1 while no backend is fit and requests go to every backend with an address."
        )?,
        retries: register_int_counter_vec!(
            "heroku_lb_retries_total",
            "Requests sent again to another backend, by reason.",
            &["reason"]
        )?,
        own_responses: register_int_counter_vec!(
            "heroku_lb_own_responses_total",
            "Requests the balancer answered itself rather than a backend (503 no backend, \
             431/414/400 refused heads, 502/504 upstream failures), by status code.",
            &["code"]
        )?,
        webhook_deliveries: register_int_counter_vec!(
            "heroku_lb_webhook_deliveries_total",
            "Heroku webhook deliveries received, by outcome (accepted, duplicate, ignored, \
             bad_signature, too_large, malformed, wrong_method).",
            &["outcome"]
        )?,
        queue_depth: register_int_gauge!(
            "heroku_lb_queue_depth",
            "Requests waiting in the admission queue for a slot (max_in_flight_per_dyno)."
        )?,
        queue_wait: register_histogram!(
            "heroku_lb_queue_wait_seconds",
            "Time requests spent in the admission queue, whether they got a slot or not.",
            vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
        )?,
        queue_rejections: register_int_counter_vec!(
            "heroku_lb_queue_rejections_total",
            "Requests the admission queue turned away with 503 and Retry-After, by reason \
             (full, timeout).",
            &["reason"]
        )?,
        log_lines_dropped: register_int_counter!(
            "heroku_lb_log_lines_dropped_total",
            "Log lines dropped because stdout did not keep up (the request path never waits for it)."
        )?,
        request_duration: register_histogram!(
            "heroku_lb_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, as the client sees it.",
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
        )?,
    })
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    // Registration only fails on a duplicate name or a malformed definition,
    // both fixed at compile time here.
    METRICS.get_or_init(|| {
        let metrics = registered().expect("metric definitions are valid and registered once");
        for reason in RETRY_REASONS {
            metrics.retries.with_label_values(&[reason]);
        }
        for reason in ["full", "timeout"] {
            metrics.queue_rejections.with_label_values(&[reason]);
        }
        register_build_info();
        metrics
    })
}

/// `heroku_lb_build_info{version, commit} 1`, the usual way to export what runs.
fn register_build_info() {
    let info = prometheus::Opts::new(
        "heroku_lb_build_info",
        "Always 1; the labels say which heroku-lb runs.",
    )
    .const_label("version", env!("CARGO_PKG_VERSION"))
    .const_label("commit", env!("HEROKU_LB_COMMIT"));
    if let Ok(gauge) = IntGauge::with_opts(info) {
        gauge.set(1);
        // Fails only if registered twice, which `metrics()` rules out.
        let _ = prometheus::register(Box::new(gauge));
    }
}

/// Per-backend handles, resolved once when the backend appears.
#[derive(Debug)]
pub struct TargetMetrics {
    by_class: [IntCounter; 5],
    no_response: IntCounter,
    /// Prometheus' upstream latency; write through [`TargetMetrics::observe_latency`]
    /// so the status page's window sees it too.
    pub latency: Histogram,
    /// The last ten minutes, for the status page (`traffic.rs`).
    pub recent: TrafficWindow,
}

impl TargetMetrics {
    pub fn new(backend: &str) -> Self {
        let m = metrics();
        // Series that start at zero exist from the start, so a dashboard sees
        // 0 rather than "no data" and `increase()` counts the first event.
        m.passive_ejections.with_label_values(&[backend]);
        for reason in CHECK_FAILURE_REASONS {
            m.health_check_failures
                .with_label_values(&[backend, reason]);
        }
        TargetMetrics {
            by_class: CLASSES.map(|class| m.requests.with_label_values(&[backend, class])),
            no_response: m.requests.with_label_values(&[backend, "error"]),
            latency: m.upstream_latency.with_label_values(&[backend]),
            recent: TrafficWindow::new(),
        }
    }

    /// Count a response with `status`, or a request that got none (`None`).
    pub fn count(&self, status: Option<u16>) {
        match status {
            Some(code @ 100..=599) => self.by_class[(code / 100 - 1) as usize].inc(),
            _ => self.no_response.inc(),
        }
        self.recent.count(status);
    }

    /// Record the time from choosing this backend to its response header.
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
        self.recent.observe_latency(seconds);
    }
}

/// Remove every series labelled with `backend` (an app that left), so
/// review-app churn does not grow the exposition without bound.
pub fn forget_backend(backend: &str) {
    let m = metrics();
    for class in CLASSES.iter().chain(["error"].iter()) {
        let _ = m.requests.remove_label_values(&[backend, class]);
    }
    let _ = m.upstream_latency.remove_label_values(&[backend]);
    let _ = m.passive_ejections.remove_label_values(&[backend]);
    let _ = m.backend_healthy.remove_label_values(&[backend]);
    let _ = m.backend_in_flight.remove_label_values(&[backend]);
    for reason in CHECK_FAILURE_REASONS {
        let _ = m
            .health_check_failures
            .remove_label_values(&[backend, reason]);
    }
}

/// Raise `counter` to `value` (state kept elsewhere, mirrored at scrape time).
pub fn advance_to(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

/// The default registry in Prometheus text format.
pub fn render() -> Result<Vec<u8>, prometheus::Error> {
    let mut out = Vec::with_capacity(8 * 1024);
    TextEncoder::new().encode(&prometheus::gather(), &mut out)?;
    Ok(out)
}
