//! Control-plane faults, in one table-driven test: the fake Platform API
//! fails in each of its ten ways while two apps are known and clients keep
//! sending requests. For every mode: every request still answers 200 from
//! both apps; each distinct failure is logged once (not once per round),
//! naming the API URL (and the status, when there is one) and never the key; `/_lb/status` shows it
//! (`discovery.last_error` naming the URL, `failed_rounds` above 0); retries
//! back off (one try after a 429, a few after a 500); and memory stays
//! bounded while the API sends a 10 MB body or a `Next-Range` that never ends
//! (the client caps bodies at 4 MB). Modes run in parallel, one balancer (and
//! one fake API) each.

mod common;

use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::heroku_api::{Failure, FakeHerokuApi, RecordedRequest};
use common::lb::{LbBuilder, HEALTH_PATH};
use common::status::poll_status;
use serde_json::Value;

const KEY: &str = "hrku-faults-cp-key-51c0e7-do-not-log";
/// How long each failure mode runs while requests flow.
const FAILING_FOR: Duration = Duration::from_secs(3);
/// Largest VmRSS growth accepted across a failure mode.
const RSS_GROWTH_LIMIT_KB: u64 = 50 * 1024;

/// Every failure switch of the fake Platform API.
fn all_modes() -> Vec<Failure> {
    vec![
        Failure::Refuse,
        Failure::ResetMidBody,
        Failure::Stall(Duration::from_secs(5)),
        Failure::Status(500),
        Failure::RateLimited,
        Failure::Unauthorized,
        Failure::TruncatedJson,
        Failure::WrongShape,
        Failure::Huge,
        Failure::LoopingNextRange,
    ]
}

/// VmRSS of a process in kB, from /proc/<pid>/status.
fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What one failure mode did to the balancer.
#[derive(Debug)]
struct ModeOutcome {
    mode: Failure,
    /// Requests sent while the API was failing.
    sent: usize,
    /// Requests that did not answer 200, with the reason.
    failed: Vec<String>,
    /// The `discovery` object of the last status answer.
    discovery: Value,
    rss_before_kb: u64,
    /// Largest VmRSS sampled while the API was failing (and just after).
    rss_peak_kb: u64,
    rss_after_kb: u64,
    /// Problems other than failed requests (status never showed the error, ...).
    problems: Vec<String>,
    api_url: String,
    output: String,
    /// Couplings requests the balancer sent while the API was failing.
    couplings_tries: usize,
}

impl ModeOutcome {
    fn growth_kb(&self) -> u64 {
        self.rss_peak_kb
            .max(self.rss_after_kb)
            .saturating_sub(self.rss_before_kb)
    }

    fn summary(&self) -> String {
        format!(
            "{:?}: {} requests, {} failed; failed_rounds={} last_error={}; VmRSS {} kB -> peak {} kB -> {} kB (+{} kB)",
            self.mode,
            self.sent,
            self.failed.len(),
            self.discovery["failed_rounds"],
            self.discovery["last_error"],
            self.rss_before_kb,
            self.rss_peak_kb,
            self.rss_after_kb,
            self.growth_kb()
        )
    }
}

/// Two apps serve; the API starts failing with `mode`; requests flow for
/// `FAILING_FOR` while VmRSS is sampled; then the status page is read.
async fn run_mode(mode: Failure) -> ModeOutcome {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("faults");
    let one = TestBackend::start_app(&api, &pipeline, "cp-one").await;
    let two = TestBackend::start_app(&api, &pipeline, "cp-two").await;
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .health_check_path(HEALTH_PATH)
        .config("api_timeout_seconds", "0.5")
        .start()
        .await;
    let client = common::http_client_with_timeout(Duration::from_secs(5));
    let mut outcome = ModeOutcome {
        mode: mode.clone(),
        sent: 0,
        failed: Vec::new(),
        discovery: Value::Null,
        rss_before_kb: 0,
        rss_peak_kb: 0,
        rss_after_kb: 0,
        problems: Vec::new(),
        api_url: api.url(),
        output: String::new(),
        couplings_tries: 0,
    };

    let both = common::poll_until(100, Duration::from_millis(50), || async {
        for i in 0..4 {
            let _ = common::send(client.get(lb.url_for(&format!("/warmup/{i}")))).await;
        }
        one.count_to("/warmup/") > 0 && two.count_to("/warmup/") > 0
    })
    .await;
    if !both {
        outcome.problems.push("never served both apps".to_string());
        outcome.output = lb.output();
        return outcome;
    }
    // Warm up the allocator and connection pools before the baseline.
    for i in 0..50 {
        let _ = common::send(client.get(lb.url_for(&format!("/warmup/more/{i}")))).await;
    }
    outcome.rss_before_kb = vm_rss_kb(lb.pid()).unwrap_or(0);
    outcome.rss_peak_kb = outcome.rss_before_kb;

    let mark = api.mark();
    api.set_failure(mode.clone());
    let started = Instant::now();
    while started.elapsed() < FAILING_FOR {
        let url = lb.url_for(&format!("/during/{}", outcome.sent));
        match common::send(client.get(&url)).await {
            Ok(reply) if reply.status == 200 => {}
            Ok(reply) => outcome
                .failed
                .push(format!("{url}: status {} {}", reply.status, reply.body)),
            Err(e) => outcome.failed.push(format!("{url}: {e}")),
        }
        outcome.sent += 1;
        if let Some(rss) = vm_rss_kb(lb.pid()) {
            outcome.rss_peak_kb = outcome.rss_peak_kb.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for app in [&one, &two] {
        if app.count_to("/during/") == 0 {
            outcome
                .problems
                .push(format!("{} got no traffic during the failure", app.name()));
        }
    }

    // The failed round is normally recorded long before; allow a few seconds.
    let api_url = api.url();
    let shown = poll_status(&client, &lb)
        .every(Duration::from_millis(100))
        .within(Duration::from_secs(4))
        .strict()
        .try_until(|status| {
            let discovery = &status["discovery"];
            discovery["failed_rounds"].as_u64().unwrap_or(0) > 0
                && discovery["last_error"]
                    .as_str()
                    .is_some_and(|error| error.contains(&api_url))
        })
        .await;
    match shown {
        Ok(seen) => outcome.discovery = seen.status["discovery"].clone(),
        Err(last) => outcome.problems.push(format!(
            "/_lb/status never showed failed_rounds > 0 with a last_error naming {api_url}; last: {last}"
        )),
    }
    if let Some(rss) = vm_rss_kb(lb.pid()) {
        outcome.rss_after_kb = rss;
        outcome.rss_peak_kb = outcome.rss_peak_kb.max(rss);
    }
    let body = outcome.discovery.to_string();
    if body.contains(KEY) {
        outcome
            .problems
            .push("the API key appears in /_lb/status".to_string());
    }
    outcome.output = lb.output();
    check_log_and_backoff(&mut outcome, &api.requests_since(mark));
    outcome
}

fn is_couplings(request: &RecordedRequest) -> bool {
    request.method == "GET" && request.path.ends_with("/pipeline-couplings")
}

/// The failure is logged exactly once, with the API URL and the status it
/// answered, never the key; failed rounds back off.
fn check_log_and_backoff(outcome: &mut ModeOutcome, api_requests: &[RecordedRequest]) {
    let logged: Vec<String> = outcome
        .output
        .lines()
        .filter(|l| l.contains("discovery failed"))
        .map(str::to_string)
        .collect();
    // Logged once per distinct error, not once per round: a refusal may
    // first show as a reset pooled connection, then as a refused connect.
    let errors: Vec<&str> = logged
        .iter()
        .map(|line| line.split(" error=").nth(1).unwrap_or(line.as_str()))
        .collect();
    let distinct: std::collections::BTreeSet<&&str> = errors.iter().collect();
    if logged.is_empty() || logged.len() > 2 || distinct.len() != errors.len() {
        outcome.problems.push(format!(
            "expected each distinct failure logged once (1 or 2 lines), got {} lines: {logged:#?}",
            logged.len()
        ));
    }
    let status = match outcome.mode {
        Failure::Status(code) => Some(code),
        Failure::RateLimited => Some(429),
        Failure::Unauthorized => Some(401),
        _ => None,
    };
    for line in &logged {
        if !line.contains(&outcome.api_url) {
            outcome.problems.push(format!(
                "the error line does not name {}: {line}",
                outcome.api_url
            ));
        }
        if let Some(code) = status {
            if !line.contains(&format!("status {code}")) {
                outcome
                    .problems
                    .push(format!("the error line does not say status {code}: {line}"));
            }
        }
    }
    if outcome.output.contains(KEY) {
        outcome
            .problems
            .push("the API key appears in the output".to_string());
    }
    if outcome.mode != Failure::Refuse && api_requests.is_empty() {
        outcome
            .problems
            .push("no discovery round reached the failing API".to_string());
    }
    outcome.couplings_tries = api_requests.iter().filter(|r| is_couplings(r)).count();
    let tries = outcome.couplings_tries;
    match outcome.mode {
        // A 429 waits at least 60 s: one try in the window (at most two, if
        // a round was already on its way when the failure started).
        Failure::RateLimited if tries > 2 => outcome
            .problems
            .push(format!("after a 429, {tries} tries within {FAILING_FOR:?}")),
        // Retries back off from 1 s, doubling; the interval (0.3 s) alone
        // would give about ten tries in the window.
        Failure::Status(_) if tries > 5 => outcome.problems.push(format!(
            "retries after a 500 did not back off: {tries} tries"
        )),
        _ => {}
    }
}

/// Run `modes` in parallel, one balancer each.
async fn run_modes(modes: Vec<Failure>) -> Vec<ModeOutcome> {
    let tasks: Vec<_> = modes
        .into_iter()
        .map(|mode| tokio::spawn(run_mode(mode)))
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("a failure-mode task panicked"));
    }
    outcomes
}

/// Each of the ten API failure modes keeps every request answered 200 by
/// both apps, is logged once with the URL and never the key, shows in
/// `/_lb/status`, backs off, and leaves VmRSS within 50 MB of its value
/// before (the 10 MB body and the endless `Next-Range` included).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_api_failure_is_survived_logged_once_shown_and_bounded_in_memory() {
    let started = Instant::now();
    let outcomes = run_modes(all_modes()).await;
    let mut broken = Vec::new();
    for outcome in &outcomes {
        println!(
            "{} couplings tries={}",
            outcome.summary(),
            outcome.couplings_tries
        );
        let mut why = outcome.problems.clone();
        if !outcome.failed.is_empty() {
            why.push(format!(
                "{} of {} requests failed, first: {:?}",
                outcome.failed.len(),
                outcome.sent,
                &outcome.failed[..outcome.failed.len().min(3)]
            ));
        }
        if outcome.rss_before_kb == 0 {
            why.push("could not read VmRSS".to_string());
        } else if outcome.growth_kb() >= RSS_GROWTH_LIMIT_KB {
            why.push(format!(
                "VmRSS grew by {} kB (limit {RSS_GROWTH_LIMIT_KB} kB)",
                outcome.growth_kb()
            ));
        }
        if !why.is_empty() {
            broken.push(format!(
                "{:?} (API {}): {why:#?}\nbalancer output:\n{}",
                outcome.mode, outcome.api_url, outcome.output
            ));
        }
    }
    println!("ten modes in {:?}", started.elapsed());
    assert!(broken.is_empty(), "{}", broken.join("\n\n"));
}
