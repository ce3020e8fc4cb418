//! Outage containment: a partial failure stays partial. Every app of a
//! pipeline runs the same code, so a bug in one endpoint fails on all of them
//! at once; passive ejection may hold out at most `max_ejection_percent` of
//! the backends, and when no backend is fit at all the balancer routes to all
//! of them (panic routing) rather than answer 503 itself.
//!
//! Client requests go to `/` and `/broken/...`, checks to `/health`, so the
//! backends' counts tell them apart.

mod common;

use std::time::Duration;

use common::backend::{Answer, TestBackend};
use common::lb::{balancer, LbProcess};
use common::status::{poll_status, status, wait_healthy};
use serde_json::Value;

/// States of every backend in a status answer.
fn states(snapshot: &Value) -> Vec<String> {
    snapshot["backends"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|b| b["state"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The unlabelled sample `name` in `/_lb/metrics`.
async fn gauge(client: &reqwest::Client, lb: &LbProcess, name: &str) -> Option<f64> {
    let reply = common::get(client, &lb.url_for("/_lb/metrics")).await;
    let prefix = format!("{name} ");
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

/// Lines of the balancer's output that contain every one of `words`.
fn lines_with_all(lb: &LbProcess, words: &[&str]) -> Vec<String> {
    let (first, rest) = words.split_first().expect("at least one word");
    lb.lines_with(first)
        .into_iter()
        .filter(|line| rest.iter().all(|word| line.contains(word)))
        .collect()
}

/// One endpoint answering 503 on all three apps ejects at most one of them
/// (max_ejection_percent 50), and not one request to the healthy `/` fails,
/// during or after the storm on `/broken`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_endpoint_on_every_app_never_fails_the_healthy_path() {
    let backends = TestBackend::start_many("app", 3).await;
    for backend in &backends {
        backend.set_answer_for("/broken", Answer::Unavailable);
    }
    // Checks 30 s apart: an ejected app stays out for the whole test.
    let lb = balancer(&backends)
        .health_check_interval("30")
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 3).await;

    let mut failed = Vec::new();
    let mut root = |reply: common::Reply, phase: &str, i: usize| {
        if reply.status != 200 {
            failed.push(format!(
                "{phase} GET /#{i}: {} {}",
                reply.status, reply.body
            ));
        }
    };
    // The storm alone, then the storm interleaved with ordinary traffic,
    // then ordinary traffic after it.
    for i in 0..30 {
        let reply = common::get(&client, &lb.url_for(&format!("/broken/{i}"))).await;
        assert_eq!(reply.status, 503, "the apps' own answer passes through");
    }
    for i in 0..30 {
        common::get(&client, &lb.url_for(&format!("/broken/more-{i}"))).await;
        root(common::get(&client, &lb.url_for("/")).await, "during", i);
    }
    for i in 0..40 {
        root(common::get(&client, &lb.url_for("/")).await, "after", i);
    }
    let snapshot = status(&client, &lb).await;
    let output = lb.output();
    assert!(
        failed.is_empty(),
        "{} requests to / failed: {failed:#?}\nstatus: {snapshot:#}\noutput:\n{output}",
        failed.len()
    );
    let states = states(&snapshot);
    let ejected = states.iter().filter(|s| *s == "ejected").count();
    assert_eq!(ejected, 1, "states {states:?}\noutput:\n{output}");
    assert_eq!(snapshot["backends_healthy"], 2);
    assert_eq!(snapshot["panic"], false);
    // Each of the two kept in is logged once, naming the cap.
    for backend in &backends {
        let kept = lines_with_all(&lb, &[&backend.url(), "stays in"]);
        assert!(kept.len() <= 1, "logged more than once: {kept:#?}");
    }
    let kept = lines_with_all(&lb, &["stays in", "max_ejection_percent=50"]);
    assert_eq!(kept.len(), 2, "{output}");
}

/// With `LB_MAX_EJECTION_PERCENT=0` passive ejection is off: a run of 503s
/// takes no app out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_ejection_cap_turns_passive_ejection_off() {
    let backends = TestBackend::start_many("app", 2).await;
    backends[0].set_answer(Answer::Unavailable);
    backends[0].set_answer_for("/health", Answer::Normal);
    let lb = balancer(&backends)
        .health_check_interval("30")
        .env("LB_MAX_EJECTION_PERCENT", "0")
        .passive_5xx_threshold(2)
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 2).await;
    for i in 0..20 {
        common::get(&client, &lb.url_for(&format!("/work/{i}"))).await;
    }
    assert_eq!(backends[0].count_to("/work/"), 10, "round robin went on");
    let snapshot = status(&client, &lb).await;
    assert_eq!(
        states(&snapshot),
        vec!["healthy", "healthy"],
        "{}",
        lb.output()
    );
}

/// When every backend fails its checks, requests still reach them (panic
/// routing): no 503 of our own, the switch is logged once each way, and
/// status and metrics show it while it lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_failing_its_checks_requests_still_reach_them() {
    let backends = TestBackend::start_many("app", 2).await;
    for backend in &backends {
        backend.set_answer_for("/health", Answer::Unavailable);
    }
    let lb = balancer(&backends).start().await;
    let client = common::http_client();

    // No check ever passed: nothing is fit, both have an address.
    poll_status(&client, &lb)
        .every(Duration::from_millis(100))
        .until("panic routing", |s| s["panic"] == true)
        .await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(
            common::get(&client, &lb.url_for(&format!("/panic/{i}")))
                .await
                .status,
        );
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\noutput:\n{}",
        lb.output()
    );
    for backend in &backends {
        assert_eq!(
            backend.count_to("/panic/"),
            10,
            "{} got its share",
            backend.name()
        );
    }
    assert_eq!(
        gauge(&client, &lb, "heroku_lb_panic_routing").await,
        Some(1.0)
    );
    assert_eq!(status(&client, &lb).await["status"], "down");

    // One app's checks pass again: traffic goes there only, panic ends.
    backends[0].set_answer_for("/health", Answer::Normal);
    wait_healthy(&client, &lb, 1).await;
    for i in 0..10 {
        let reply = common::get(&client, &lb.url_for(&format!("/after/{i}"))).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(backends[0].count_to("/after/"), 10);
    assert_eq!(status(&client, &lb).await["panic"], false);
    assert_eq!(
        gauge(&client, &lb, "heroku_lb_panic_routing").await,
        Some(0.0)
    );
    let output = lb.output();
    assert_eq!(lb.lines_with("panic routing on").len(), 1, "{output}");
    assert_eq!(lb.lines_with("panic routing off").len(), 1, "{output}");
}
