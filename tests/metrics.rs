//! `/_lb/metrics`: valid Prometheus text exposition with every heroku-lb
//! family, and request counts that match the traffic sent, per backend and
//! status class.
//!
//! The parser below is deliberately strict: every sample line is
//! `name{labels} value` or `name value` (an optional integer timestamp after),
//! and every sample belongs to a family announced by `# HELP` and `# TYPE`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::backend::{Answer, TestBackend, BACKEND_HEADER};
use common::lb::balancer;
use common::status::poll_status;

/// Every family `/_lb/metrics` must carry.
const FAMILIES: [&str; 10] = [
    "heroku_lb_requests_total",
    "heroku_lb_upstream_latency_seconds",
    "heroku_lb_backend_healthy",
    "heroku_lb_health_check_failures_total",
    "heroku_lb_passive_ejections_total",
    "heroku_lb_discovery_rounds_total",
    "heroku_lb_discovery_errors_total",
    "heroku_lb_platform_api_ratelimit_remaining",
    "heroku_lb_platform_api_requests_total",
    "heroku_lb_backends",
];

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: families with their HELP and TYPE, and the samples.
#[derive(Debug, Default)]
struct Exposition {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parse Prometheus text format 0.0.4, failing on the first malformed line.
    fn parse(text: &str) -> Result<Exposition, String> {
        let mut exposition = Exposition::default();
        for (number, line) in text.lines().enumerate() {
            let at = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(name), help) => {
                        check_name(name).map_err(|e| at(&e))?;
                        let previous = exposition
                            .help
                            .insert(name.to_string(), help.unwrap_or("").to_string());
                        if previous.is_some() {
                            return Err(at("a second HELP for this family"));
                        }
                    }
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        check_name(name).map_err(|e| at(&e))?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(at("unknown TYPE"));
                        }
                        let of_family = |sample: &Sample| {
                            sample.name == name
                                || ["_bucket", "_sum", "_count"]
                                    .iter()
                                    .any(|suffix| sample.name.strip_suffix(suffix) == Some(name))
                        };
                        if exposition.samples.iter().any(of_family) {
                            return Err(at("TYPE after samples of its family"));
                        }
                        let previous = exposition.types.insert(name.to_string(), kind.to_string());
                        if previous.is_some() {
                            return Err(at("a second TYPE for this family"));
                        }
                    }
                    (Some("TYPE"), _, _) => return Err(at("TYPE without a type")),
                    // Any other comment is allowed by the format.
                    _ => {}
                }
                continue;
            }
            exposition
                .samples
                .push(parse_sample(line).map_err(|e| at(&e))?);
        }
        Ok(exposition)
    }

    /// The family a sample name belongs to: itself, or a histogram/summary
    /// it is the `_bucket`, `_sum` or `_count` of.
    fn family_of(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.to_string());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            match self.types.get(base).map(String::as_str) {
                Some("histogram") | Some("summary") => Some(base.to_string()),
                _ => None,
            }
        })
    }

    /// Families with at least one sample.
    fn families_with_samples(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter_map(|s| self.family_of(&s.name))
            .collect()
    }

    /// The samples named `name` whose labels include all of `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample named `name` with `labels`; panics if there is not exactly one.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels).as_slice() {
            [one] => one.value,
            other => panic!("expected one sample {name}{labels:?}, found {other:?}"),
        }
    }
}

/// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("'{name}' is not a valid name"))
    }
}

/// `name{l="v",...} value [timestamp]` or `name value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = after_brace;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let label = rest[..eq].trim();
            check_name(label)?;
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("bad escape in a label value".to_string()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".to_string()),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} repeated"));
            }
            rest = &rest[end + 1..];
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("expected ',' or '}' after a label".to_string());
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split_whitespace();
    let raw = fields.next().ok_or("no value")?;
    let value = match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => raw
            .parse::<f64>()
            .map_err(|e| format!("value '{raw}': {e}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|e| format!("timestamp '{timestamp}': {e}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the value and timestamp".to_string());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Count `reply` in `sent` under (answering backend, status class); return its status.
fn tally(sent: &mut BTreeMap<(String, String), u64>, reply: common::Reply) -> u16 {
    let from = reply
        .headers
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {BACKEND_HEADER} on {reply:?}"))
        .to_string();
    let class = format!("{}xx", reply.status / 100);
    *sent.entry((from, class)).or_default() += 1;
    reply.status
}

/// The parser itself accepts the format's corner cases and refuses broken lines.
#[test]
fn the_exposition_parser_accepts_valid_text_and_refuses_malformed_lines() {
    let valid = "# HELP a_total Things.\n# TYPE a_total counter\n\
                 a_total{x=\"q\\\"uo\\\\te\",y=\"\"} 3\na_total{x=\"b\",} 1e3 1700000000000\n\
                 # TYPE h histogram\n# HELP h Hist.\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let parsed = Exposition::parse(valid).expect("valid text parses");
    assert_eq!(parsed.value("a_total", &[("x", "q\"uo\\te")]), 3.0);
    assert_eq!(parsed.value("a_total", &[("x", "b")]), 1000.0);
    assert_eq!(parsed.family_of("h_bucket").as_deref(), Some("h"));
    assert_eq!(parsed.families_with_samples().len(), 2);
    for broken in [
        "a_total three",
        "a_total{x=\"1\" 3",
        "a_total{x=1} 3",
        "a-total 3",
        "a_total{x=\"1\"}3",
        "a_total 3 4 5",
        "# TYPE a_total",
    ] {
        assert!(
            Exposition::parse(broken).is_err(),
            "{broken:?} should not parse"
        );
    }
}

/// After 200s, a 503 and a failing health check, /_lb/metrics is valid Prometheus text with every family, and requests_total matches the traffic per backend and class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_are_valid_prometheus_text_and_count_the_traffic_sent() {
    let backends = TestBackend::start_many("app", 2).await;
    let (sick, well) = (&backends[0], &backends[1]);
    let lb = balancer(&backends).start().await;
    let client = common::http_client();
    // Wait on the status page rather than with proxied requests, so that every
    // proxied request is one this test counts.
    poll_status(&client, &lb)
        .every(Duration::from_millis(25))
        .within(Duration::from_secs(5))
        .strict()
        .until_healthy(2)
        .await;

    // (backend name, class) -> requests, as the client saw them.
    let mut sent: BTreeMap<(String, String), u64> = BTreeMap::new();
    for i in 0..10 {
        let reply = common::get(&client, &lb.url_for(&format!("/work/ok/{i}"))).await;
        assert_eq!(tally(&mut sent, reply), 200);
    }
    // The sick app answers 503 until the client has seen one from it.
    sick.set_answer(Answer::Unavailable);
    let mut saw_503 = false;
    for i in 0..10 {
        let reply = common::get(&client, &lb.url_for(&format!("/work/sick/{i}"))).await;
        if tally(&mut sent, reply) == 503 {
            saw_503 = true;
            break;
        }
    }
    assert!(saw_503, "no 503 came back: {sent:?}");
    // ...and until an active check has failed on it and evicted it.
    poll_status(&client, &lb)
        .every(Duration::from_millis(25))
        .within(Duration::from_secs(5))
        .strict()
        .until_backend(&sick.url(), false)
        .await;
    for i in 0..4 {
        let reply = common::get(&client, &lb.url_for(&format!("/work/after/{i}"))).await;
        assert_eq!(tally(&mut sent, reply), 200);
    }

    let reply = common::get(&client, &lb.url_for("/_lb/metrics")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let content_type = reply.headers["content-type"].to_str().unwrap_or("");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let metrics = Exposition::parse(&reply.body)
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{}", reply.body));
    for sample in &metrics.samples {
        let family = metrics.family_of(&sample.name).unwrap_or_else(|| {
            panic!(
                "sample {} has no # TYPE for its family:\n{}",
                sample.name, reply.body
            )
        });
        assert!(
            metrics.help.contains_key(&family),
            "family {family} has no # HELP:\n{}",
            reply.body
        );
    }
    for (family, kind) in [
        ("heroku_lb_requests_total", "counter"),
        ("heroku_lb_upstream_latency_seconds", "histogram"),
        ("heroku_lb_health_check_failures_total", "counter"),
        ("heroku_lb_passive_ejections_total", "counter"),
        ("heroku_lb_backend_healthy", "gauge"),
        ("heroku_lb_backends", "gauge"),
    ] {
        if let Some(declared) = metrics.types.get(family) {
            assert_eq!(declared, kind, "TYPE of {family}");
        }
    }

    // requests_total: exactly the traffic sent, per backend and class.
    for backend in &backends {
        let label = backend.addr().to_string();
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let expected = sent
                .get(&(backend.name().to_string(), class.to_string()))
                .copied()
                .unwrap_or(0);
            let counted = metrics
                .find(
                    "heroku_lb_requests_total",
                    &[("backend", &label), ("class", class)],
                )
                .iter()
                .map(|s| s.value)
                .sum::<f64>();
            assert_eq!(
                counted,
                expected as f64,
                "heroku_lb_requests_total{{backend=\"{label}\",class=\"{class}\"}}; sent {sent:?}\n{}",
                reply.body
            );
        }
        let errors: f64 = metrics
            .find(
                "heroku_lb_requests_total",
                &[("backend", &label), ("class", "error")],
            )
            .iter()
            .map(|s| s.value)
            .sum();
        assert_eq!(errors, 0.0, "no request went without a response");

        // The latency histogram saw one observation per response.
        let answered: u64 = sent
            .iter()
            .filter(|((from, _), _)| from == backend.name())
            .map(|(_, n)| n)
            .sum();
        let count = metrics.value(
            "heroku_lb_upstream_latency_seconds_count",
            &[("backend", &label)],
        );
        assert_eq!(count, answered as f64, "latency _count for {label}");
        let sum = metrics.value(
            "heroku_lb_upstream_latency_seconds_sum",
            &[("backend", &label)],
        );
        assert!(
            sum > 0.0 && sum.is_finite(),
            "latency _sum for {label}: {sum}"
        );
        let mut buckets: Vec<(f64, f64)> = metrics
            .find(
                "heroku_lb_upstream_latency_seconds_bucket",
                &[("backend", &label)],
            )
            .iter()
            .map(|s| {
                let le = match s.labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().unwrap_or_else(|e| panic!("le=\"{le}\" ({e})")),
                    None => panic!("a bucket without le: {s:?}"),
                };
                (le, s.value)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() >= 2, "buckets for {label}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "buckets are cumulative: {buckets:?}"
        );
        assert_eq!(
            buckets.last().copied(),
            Some((f64::INFINITY, count)),
            "the +Inf bucket equals _count"
        );
    }
    assert!(
        sent.contains_key(&(sick.name().to_string(), "5xx".to_string())),
        "{sent:?}"
    );

    let sick_label = sick.addr().to_string();
    let well_label = well.addr().to_string();
    let status_failures: f64 = metrics
        .find(
            "heroku_lb_health_check_failures_total",
            &[("backend", &sick_label), ("reason", "status")],
        )
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(
        status_failures >= 2.0,
        "checks answered 503 at least fall (2) times:\n{}",
        reply.body
    );
    assert!(
        metrics
            .find(
                "heroku_lb_health_check_failures_total",
                &[("backend", &well_label)]
            )
            .iter()
            .all(|s| s.value == 0.0),
        "the healthy app had failed checks:\n{}",
        reply.body
    );
    assert_eq!(
        metrics.value("heroku_lb_backend_healthy", &[("backend", &sick_label)]),
        0.0
    );
    assert_eq!(
        metrics.value("heroku_lb_backend_healthy", &[("backend", &well_label)]),
        1.0
    );
    assert_eq!(metrics.value("heroku_lb_backends", &[]), 2.0);
    assert!(metrics.value("heroku_lb_discovery_rounds_total", &[]) >= 1.0);
    assert_eq!(metrics.value("heroku_lb_discovery_errors_total", &[]), 0.0);
    // Static mode: no Platform API.
    assert_eq!(
        metrics.value("heroku_lb_platform_api_requests_total", &[]),
        0.0
    );

    // Last, so that a missing family does not hide the checks above.
    let present = metrics.families_with_samples();
    let missing: Vec<&str> = FAMILIES
        .iter()
        .copied()
        .filter(|family| !present.contains(*family))
        .collect();
    assert!(
        missing.is_empty(),
        "families missing from /_lb/metrics: {missing:?}\n{}",
        reply.body
    );
}

/// Families named `_total` are counters and counters are named `_total`, the Prometheus convention `promtool check metrics` enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_only_counters_are_named_total() {
    let backend = TestBackend::start("app").await;
    let lb = balancer(&[&backend])
        .default_health_check_interval()
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    let reply = common::get(&client, &lb.url_for("/_lb/metrics")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let metrics = Exposition::parse(&reply.body)
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{}", reply.body));
    let misnamed: Vec<String> = metrics
        .types
        .iter()
        .filter(|(name, _)| name.starts_with("heroku_lb_"))
        .filter(|(name, kind)| name.ends_with("_total") != (kind.as_str() == "counter"))
        .map(|(name, kind)| format!("{name} ({kind})"))
        .collect();
    assert!(
        misnamed.is_empty(),
        "named against their type: {misnamed:?}\n{}",
        reply.body
    );
}

/// The series operators expect beside ours: process figures, build info
/// naming version and commit, retries by reason, the balancer's own answers
/// by code, and a client-side request duration histogram, each counting the
/// traffic sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_build_retry_own_answer_and_duration_series_count_the_traffic() {
    let good = TestBackend::start("good").await;
    let doomed = TestBackend::start("doomed").await;
    let lb = balancer(&[&good, &doomed])
        .health_check_interval("30")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    common::status::wait_healthy(&client, &lb, 2).await;
    let duration_count = |body: &str| {
        Exposition::parse(body)
            .map(|m| m.value("heroku_lb_request_duration_seconds_count", &[]))
            .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"))
    };
    let before = duration_count(&common::get(&client, &lb.url_for("/_lb/metrics")).await.body);
    // Refused connections: retried on the other backend.
    doomed.stop_listening().await;
    let mut sent = 0;
    for i in 0..6 {
        let reply = common::get(&client, &lb.url_for(&format!("/retry/{i}"))).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        sent += 1;
    }
    // Two heads over our limits: answered 431 by the balancer itself.
    for i in 0..2 {
        let reply = common::send(
            client
                .get(lb.url_for(&format!("/big/{i}")))
                .header("x-big", "b".repeat(9 * 1024)),
        )
        .await
        .expect("answered");
        assert_eq!(reply.status, 431);
        sent += 1;
    }

    let reply = common::get(&client, &lb.url_for("/_lb/metrics")).await;
    let metrics = Exposition::parse(&reply.body)
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{}", reply.body));
    assert!(metrics.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(!metrics.find("process_open_fds", &[]).is_empty());
    let info = metrics.find(
        "heroku_lb_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    assert_eq!(info.len(), 1, "{}", reply.body);
    assert_eq!(info[0].value, 1.0);
    assert!(info[0].labels.get("commit").is_some_and(|c| !c.is_empty()));
    assert!(
        metrics.value("heroku_lb_retries_total", &[("reason", "connect_failed")]) >= 1.0,
        "{}",
        reply.body
    );
    assert_eq!(
        metrics.value("heroku_lb_own_responses_total", &[("code", "431")]),
        2.0
    );
    // Every proxied request is observed, admin requests (status, metrics) are not.
    assert_eq!(
        duration_count(&reply.body) - before,
        sent as f64,
        "{}",
        reply.body
    );
}
