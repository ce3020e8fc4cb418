//! Passive ejection: failures seen on live traffic take a backend out of
//! rotation at once, without waiting for an active check. A refused
//! connection ejects on the first try (and the request is retried elsewhere);
//! `passive_5xx_threshold` 5xx answers in a row eject too. An ejected backend
//! comes back after `health_check_rise` passing active checks.
//!
//! Client requests go to `/work/...` and checks to `/health`, so the
//! backends' counts tell them apart.

mod common;

use std::time::{Duration, Instant};

use common::backend::{Answer, TestBackend, BACKEND_HEADER};
use common::lb::{balancer, LbProcess};
use common::status::{entry, metric, poll_status, status};

/// The `backend` label static mode gives a backend: its `host:port`.
fn label(backend: &TestBackend) -> String {
    backend.addr().to_string()
}

/// `heroku_lb_passive_ejections_total` of `backend`, if the sample is there.
async fn ejections(client: &reqwest::Client, lb: &LbProcess, backend: &TestBackend) -> Option<f64> {
    metric(
        client,
        lb,
        "heroku_lb_passive_ejections_total",
        &label(backend),
    )
    .await
}

/// Panics unless `line` stands exactly once in `output`.
fn assert_one_line(output: &str, line: &str) {
    assert_eq!(
        output.matches(line).count(),
        1,
        "expected one '{line}' line:\n{output}"
    );
}

/// Three 503s in a row from one app eject it long before the next active check would have run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_503s_in_a_row_eject_a_backend_before_the_next_active_check() {
    let backends = TestBackend::start_many("app", 2).await;
    let (sick, well) = (&backends[0], &backends[1]);
    // After the checks at start-up, the next one is 30 s away.
    let lb = balancer(&backends)
        .health_check_interval("30")
        .passive_5xx_threshold(3)
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    let checks_before = sick.count_to("/health");

    sick.set_answer(Answer::Unavailable);
    let started = Instant::now();
    let mut answers = Vec::new();
    for i in 0..20 {
        let reply = common::get(&client, &lb.url_for(&format!("/work/{i}"))).await;
        let from = reply
            .headers
            .get(BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        answers.push((reply.status, from));
    }
    let snapshot = status(&client, &lb).await;
    let ejections = ejections(&client, &lb, sick).await;
    let took = started.elapsed();
    println!("20 requests, status and metrics in {took:?}");

    // Exactly the threshold: fewer would be an ejection before it was reached.
    assert_eq!(sick.count_to("/work"), 3, "answers: {answers:?}");
    let from_sick: Vec<_> = answers
        .iter()
        .filter(|(_, from)| from == sick.name())
        .collect();
    assert!(
        from_sick.iter().all(|(code, _)| *code == 503),
        "answers: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(code, from)| from == sick.name() || (*code == 200 && from == well.name())),
        "answers: {answers:?}"
    );
    assert_eq!(
        sick.count_to("/health"),
        checks_before,
        "an active check ran during the test, so it proves nothing about passive ejection"
    );

    let view = entry(&snapshot, &sick.url());
    assert_eq!(view["state"], "ejected", "{view:#}");
    assert_eq!(view["healthy"], false, "{view:#}");
    assert_eq!(view["responses_5xx"], 3, "{view:#}");
    // The last active check ran before the 503s and passed.
    assert_eq!(view["last_check_ok"], true, "{view:#}");
    assert_eq!(snapshot["status"], "degraded", "{snapshot:#}");
    assert!(
        ejections >= Some(1.0),
        "heroku_lb_passive_ejections_total{{backend=\"{}\"}} = {ejections:?}",
        label(sick)
    );
    assert_one_line(
        &lb.output(),
        &format!(
            "url={} healthy -> ejected reason=\"3 failures in a row, last a 503 answer",
            sick.url()
        ),
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A refused connection ejects that backend on the first try, and the client still gets a 200 from another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_ejects_the_backend_at_once_and_the_request_is_retried() {
    let backends = TestBackend::start_many("app", 3).await;
    let lb = balancer(&backends)
        .health_check_interval("30")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    let gone = &backends[1];
    let checks_before = gone.count_to("/health");
    gone.stop_listening().await;

    let started = Instant::now();
    for i in 0..30 {
        let reply = common::get(&client, &lb.url_for(&format!("/work/{i}"))).await;
        assert_eq!(
            reply.status,
            200,
            "request {i}: {reply:?}; stderr:\n{}",
            lb.stderr()
        );
    }
    let took = started.elapsed();
    println!("30 requests with one backend refusing in {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let served: usize = backends.iter().map(|b| b.count_to("/work")).sum();
    assert_eq!(served, 30);
    assert_eq!(gone.count_to("/health"), checks_before);
    let snapshot = status(&client, &lb).await;
    let view = entry(&snapshot, &gone.url());
    assert_eq!(view["state"], "ejected", "{view:#}");
    assert_eq!(view["healthy"], false, "{view:#}");
    // One refused try, then never selected again.
    assert_eq!(view["connect_failures"], 1, "{view:#}");
    let ejections = ejections(&client, &lb, gone).await;
    assert_eq!(ejections, Some(1.0));
    assert_one_line(
        &lb.output(),
        &format!(
            "url={} healthy -> ejected reason=\"connect failed: ",
            gone.url()
        ),
    );
}

/// An ejected backend is back in rotation after rise passing active checks, and says so once in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_backend_returns_after_rise_passing_active_checks() {
    let interval = Duration::from_millis(300);
    let rise = 2;
    let backends = TestBackend::start_many("app", 2).await;
    let sick = &backends[0];
    let lb = balancer(&backends).passive_5xx_threshold(3).start().await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    // A burst of 503s, shorter than one check interval.
    sick.set_answer(Answer::Unavailable);
    for i in 0..8 {
        common::get(&client, &lb.url_for(&format!("/work/burst/{i}"))).await;
    }
    sick.set_answer(Answer::Normal);
    let recovered = Instant::now();
    let view = entry(&status(&client, &lb).await, &sick.url()).clone();
    assert_eq!(view["state"], "ejected", "{view:#}");

    let back_after = poll_status(&client, &lb)
        .since(recovered)
        .within(Duration::from_secs(8))
        .every(Duration::from_millis(25))
        .strict()
        .until_backend(&sick.url(), true)
        .await
        .after;
    // rise checks after the recovery, the first up to one interval away;
    // plus 100 ms for observing it.
    let bound = interval * (rise + 1) + Duration::from_millis(100);
    println!("back {back_after:?} after recovering (bound {bound:?})");
    assert!(
        back_after <= bound,
        "back after {back_after:?}, expected at most {bound:?}"
    );

    assert_one_line(
        &lb.output(),
        &format!("url={} ejected -> healthy", sick.url()),
    );
    let before = sick.count_to("/work/after");
    for i in 0..10 {
        let reply = common::get(&client, &lb.url_for(&format!("/work/after/{i}"))).await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
    }
    assert!(
        sick.count_to("/work/after") - before >= 3,
        "the returned backend got {} of 10 requests",
        sick.count_to("/work/after") - before
    );
}
