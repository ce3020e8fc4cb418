//! Active health checks: a backend whose app answers 503 or whose port is
//! closed is evicted after `health_check_fall` failing checks and re-admitted
//! after `health_check_rise` passing ones; a backend takes traffic only once
//! its first check passed; each transition is logged once.
//!
//! Checks run every 0.3 s here, on `/health`, so that client traffic (on
//! `/work/...`) and checks can be told apart in the backends' counts.

mod common;

use std::time::{Duration, Instant};

use common::backend::{Answer, TestBackend};
use common::lb::{balancer, LbProcess};
use common::status::{entry, poll_status, status};
use serde_json::Value;

/// `HEALTH_CHECK_INTERVAL` used by every test here.
const INTERVAL: Duration = Duration::from_millis(300);
/// The defaults of `health_check_fall` and `health_check_rise`.
const FALL: u32 = 2;
const RISE: u32 = 2;
/// How often the tests read `/_lb/status` while waiting for a change.
const POLL: Duration = Duration::from_millis(25);
/// Longest wait for any state change before a test gives up.
const STATE_DEADLINE: Duration = Duration::from_secs(8);

/// Poll `/_lb/status` (every `POLL`, up to `STATE_DEADLINE`) until the
/// backend at `url` shows `healthy: want`. Returns how long that took and its
/// entry at that moment.
async fn wait_healthy(
    client: &reqwest::Client,
    lb: &LbProcess,
    url: &str,
    want: bool,
) -> (Duration, Value) {
    let seen = poll_status(client, lb)
        .every(POLL)
        .within(STATE_DEADLINE)
        .strict()
        .until_backend(url, want)
        .await;
    (seen.after, entry(&seen.status, url).clone())
}

/// Send `count` GETs to `/work/{tag}/{i}`; every one must be answered 200.
/// Returns the body (the answering backend's name) of each.
async fn work(client: &reqwest::Client, lb: &LbProcess, tag: &str, count: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(count);
    for i in 0..count {
        let reply = common::get(client, &lb.url_for(&format!("/work/{tag}/{i}"))).await;
        assert_eq!(
            reply.status,
            200,
            "GET /work/{tag}/{i}: {reply:?}; stderr:\n{}",
            lb.stderr()
        );
        bodies.push(reply.body);
    }
    bodies
}

/// An app that starts answering 503 is evicted after `fall` failing checks
/// and re-admitted after `rise` passing ones (counted as checks the app
/// answered, so a busy machine's slower clock cannot fail it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_503_is_evicted_by_active_checks_and_readmitted_when_it_recovers() {
    let backends = TestBackend::start_many("app", 2).await;
    let (sick, well) = (&backends[0], &backends[1]);
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    let lb = balancer(&urls).passive_5xx_threshold(0).start().await;
    let client = common::http_client();
    for backend in &backends {
        wait_healthy(&client, &lb, &backend.url(), true).await;
    }

    // No client traffic until eviction: only active checks can see the 503s.
    let checks_before = sick.count_to("/health");
    sick.set_answer(Answer::Unavailable);
    let (took, evicted) = wait_healthy(&client, &lb, &sick.url(), false).await;
    let checks = sick.count_to("/health") - checks_before;
    println!("evicted {took:?} after the switch to 503, after {checks} checks");
    // `fall` failing checks, plus one that may have been in flight at the
    // switch and one that may land while status is read.
    assert!(
        (FALL as usize..=FALL as usize + 2).contains(&checks),
        "evicted after {checks} checks, expected {FALL} (+2 at most): {evicted:#}"
    );
    assert_eq!(evicted["state"], "failing checks", "{evicted:#}");
    assert_eq!(evicted["last_check"], "status 503", "{evicted:#}");
    assert_eq!(evicted["last_check_ok"], false, "{evicted:#}");
    assert!(
        evicted["consecutive_failures"].as_u64() >= Some(u64::from(FALL)),
        "{evicted:#}"
    );
    assert_eq!(sick.count_to("/work"), 0);

    let bodies = work(&client, &lb, "evicted", 20).await;
    assert!(
        bodies.iter().all(|body| body == well.name()),
        "an evicted backend got traffic: {bodies:?}"
    );
    assert_eq!(sick.count_to("/work"), 0);

    let checks_before = sick.count_to("/health");
    sick.set_answer(Answer::Normal);
    let (took, readmitted) = wait_healthy(&client, &lb, &sick.url(), true).await;
    let checks = sick.count_to("/health") - checks_before;
    println!("re-admitted {took:?} after the switch back to 200, after {checks} checks");
    assert!(
        (RISE as usize..=RISE as usize + 2).contains(&checks),
        "re-admitted after {checks} checks, expected {RISE} (+2 at most): {readmitted:#}"
    );
    assert_eq!(readmitted["state"], "healthy", "{readmitted:#}");
    assert_eq!(readmitted["last_check"], "ok", "{readmitted:#}");
    assert_eq!(readmitted["last_check_ok"], true, "{readmitted:#}");
    assert_eq!(readmitted["consecutive_failures"], 0, "{readmitted:#}");

    let bodies = work(&client, &lb, "readmitted", 20).await;
    let to_sick = bodies.iter().filter(|body| *body == sick.name()).count();
    assert!(
        to_sick >= 5,
        "a re-admitted backend got {to_sick} of 20 requests: {bodies:?}"
    );
}

/// A backend whose port closes while requests keep coming is evicted without a single failed client request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_listening_is_evicted_without_failing_client_requests() {
    let backends = TestBackend::start_many("app", 2).await;
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    let lb = balancer(&urls).passive_5xx_threshold(0).start().await;
    let client = common::http_client();
    for backend in &backends {
        wait_healthy(&client, &lb, &backend.url(), true).await;
    }

    // Sequential requests for 3 s; the backend goes away after 1 s.
    let traffic = {
        let client = client.clone();
        let base = lb.url();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0usize;
            let mut failures = Vec::new();
            while started.elapsed() < Duration::from_secs(3) {
                let url = format!("{base}/work/{sent}");
                match common::send(client.get(&url)).await {
                    Ok(reply) if reply.status == 200 => {}
                    Ok(reply) => failures.push(format!("{url}: {} {:?}", reply.status, reply.body)),
                    Err(e) => failures.push(format!("{url}: {e}")),
                }
                sent += 1;
            }
            (sent, failures)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dying = &backends[0];
    dying.stop_listening().await;
    let served_before_stop = dying.count_to("/work");
    let (sent, failures) = traffic.await.expect("the traffic task does not panic");

    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:#?}; stderr:\n{}",
        failures.len(),
        lb.stderr()
    );
    assert!(sent >= 30, "only {sent} requests in 3 s");
    assert!(
        served_before_stop > 0,
        "the backend got no traffic before it stopped"
    );
    let total: usize = backends.iter().map(|b| b.count_to("/work")).sum();
    assert_eq!(total, sent, "every request was served exactly once");

    let (_, evicted) = wait_healthy(&client, &lb, &dying.url(), false).await;
    assert!(
        evicted["state"] == "ejected" || evicted["state"] == "failing checks",
        "{evicted:#}"
    );
    // Active checks see the closed port too.
    poll_status(&client, &lb)
        .every(POLL * 4)
        .within(POLL * 4 * 40)
        .strict()
        .until("a failing active check on the closed port", |snapshot| {
            let backend = entry(snapshot, &dying.url());
            backend["last_check"] == "connection refused"
                && backend["consecutive_failures"].as_u64() >= Some(u64::from(FALL))
        })
        .await;
}

/// A backend that is down when the balancer starts gets no client traffic, and is admitted once it comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_at_start_gets_no_traffic_until_its_first_check_passes() {
    let up = TestBackend::start("up").await;
    let refusing = TestBackend::start("refusing").await;
    let crashed = TestBackend::start("crashed").await;
    refusing.stop_listening().await;
    crashed.set_answer(Answer::Unavailable);
    let lb = balancer(&[up.url(), refusing.url(), crashed.url()])
        .passive_5xx_threshold(0)
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    let bodies = work(&client, &lb, "at-start", 30).await;
    assert!(
        bodies.iter().all(|body| body == up.name()),
        "a backend that never passed a check got traffic: {bodies:?}"
    );
    assert_eq!(crashed.count_to("/work"), 0);
    assert!(
        crashed.count_to("/health") >= 1,
        "the crashed app was never checked"
    );
    let snapshot = status(&client, &lb).await;
    for (backend, last_check) in [(&refusing, "connection refused"), (&crashed, "status 503")] {
        let view = entry(&snapshot, &backend.url());
        assert_eq!(view["healthy"], false, "{view:#}");
        assert_eq!(view["state"], "not admitted", "{view:#}");
        assert_eq!(view["last_check"], last_check, "{view:#}");
        // Not even tried: the first check gates selection.
        assert_eq!(view["requests"], 0, "{view:#}");
        assert_eq!(view["connect_failures"], 0, "{view:#}");
    }
    let output = lb.output();
    assert!(
        !output.contains(&format!("url={} healthy -> ejected", refusing.url())),
        "a backend that was never admitted was ejected by traffic:\n{output}"
    );

    // Down long enough for Pingora's own flag to fall as well (it starts
    // healthy), so coming back takes `rise` passing checks, not only the first.
    common::wait_until(
        "both down backends logged as unhealthy",
        40,
        POLL * 4,
        || async {
            let output = lb.output();
            [&refusing, &crashed]
                .iter()
                .all(|backend| output.contains(&format!("url={} becomes unhealthy", backend.url())))
        },
    )
    .await;

    refusing.listen_again().await;
    let checks_before: Vec<usize> = [&refusing, &crashed]
        .iter()
        .map(|backend| backend.count_to("/health"))
        .collect();
    crashed.set_answer(Answer::Normal);
    let switched = Instant::now();
    for (backend, before) in [&refusing, &crashed].into_iter().zip(checks_before) {
        let (_, view) = wait_healthy(&client, &lb, &backend.url(), true).await;
        let took = switched.elapsed();
        let checks = backend.count_to("/health") - before;
        println!(
            "{} admitted within {took:?}, after {checks} passing checks",
            backend.name()
        );
        // `rise` passing checks; the other backend's wait may let two more land.
        assert!(
            (RISE as usize..=RISE as usize + 3).contains(&checks),
            "{} admitted after {checks} checks, expected {RISE}: {view:#}",
            backend.name()
        );
    }
    let output = lb.output();
    for backend in [&refusing, &crashed] {
        let admitted = format!("url={} admitted: first health check passed", backend.url());
        assert_eq!(
            output.matches(&admitted).count(),
            1,
            "expected one '{admitted}' line:\n{output}"
        );
    }

    let bodies = work(&client, &lb, "after", 30).await;
    for backend in [&up, &refusing, &crashed] {
        let served = bodies.iter().filter(|body| *body == backend.name()).count();
        assert!(
            served >= 5,
            "{} served {served} of 30 requests once all were up: {bodies:?}",
            backend.name()
        );
    }
}

/// Two flaps of one backend log exactly two `becomes unhealthy` and two `becomes healthy` lines for it, in order, and none for its neighbour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_health_transition_is_logged_exactly_once() {
    let backends = TestBackend::start_many("app", 2).await;
    let (flapping, steady) = (&backends[0], &backends[1]);
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    let lb = balancer(&urls).passive_5xx_threshold(0).start().await;
    let client = common::http_client();
    for backend in &backends {
        wait_healthy(&client, &lb, &backend.url(), true).await;
    }

    // Each state is held for four more checks, so a line logged per check
    // instead of per transition would show up several times.
    let hold = INTERVAL * 4;
    for _ in 0..2 {
        flapping.set_answer(Answer::Unavailable);
        wait_healthy(&client, &lb, &flapping.url(), false).await;
        tokio::time::sleep(hold).await;
        flapping.set_answer(Answer::Normal);
        wait_healthy(&client, &lb, &flapping.url(), true).await;
        tokio::time::sleep(hold).await;
    }

    let output = lb.output();
    let unhealthy = format!("url={} becomes unhealthy", flapping.url());
    let healthy = format!("url={} becomes healthy", flapping.url());
    let transitions: Vec<&str> = output
        .lines()
        .filter_map(|line| {
            if line.contains(&unhealthy) {
                Some("unhealthy")
            } else if line.contains(&healthy) {
                Some("healthy")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        transitions,
        ["unhealthy", "healthy", "unhealthy", "healthy"],
        "transition lines for {}:\n{output}",
        flapping.url()
    );
    assert!(
        output
            .lines()
            .filter(|line| line.contains(&unhealthy))
            .all(|line| line.contains("status 503")),
        "the unhealthy lines give the reason:\n{output}"
    );
    assert_eq!(
        output
            .matches(&format!("url={} admitted", flapping.url()))
            .count(),
        1,
        "admission is logged once, not on every recovery:\n{output}"
    );
    assert!(
        !output.contains(&format!("url={} becomes", steady.url())),
        "the steady backend had a transition logged:\n{output}"
    );
}

/// Checks reuse their connection: eight checks of an idle backend arrive on
/// at most three connections (discovery's first check and Pingora's first
/// round may overlap), where one connection per check (and a TCP connect
/// beside it) was the rule before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_reuse_their_connection() {
    let backend = TestBackend::start("kept-alive").await;
    let _lb = balancer(&[backend.url()])
        .passive_5xx_threshold(0)
        .start()
        .await;
    common::wait_until(
        "eight health checks to reach the backend",
        200,
        Duration::from_millis(25),
        || async { backend.count_to("/health") >= 8 },
    )
    .await;
    let (checks, connections) = (backend.count_to("/health"), backend.connection_count());
    println!("{checks} checks on {connections} connections");
    assert!(
        connections <= 3,
        "{checks} checks took {connections} connections"
    );
}
