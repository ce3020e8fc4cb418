//! Retries of the router's quick refusals. While an app restarts, Heroku's
//! router answers its requests at once with 503 (the app never saw them):
//! an idempotent request (GET, HEAD, OPTIONS, or one with an
//! `Idempotency-Key`) answered 502/503/504 within `retry_5xx_within_ms` goes
//! to another app, never twice to one app, within a budget of 20 % of the
//! requests of the last 10 s plus 3 a second. Other requests, slow answers
//! (the router's H12 comes after 30 s) and retries past the budget get the
//! app's answer, and those are counted.

mod common;

use std::time::Duration;

use common::backend::{Answer, TestBackend, BACKEND_HEADER};
use common::lb::{LbBuilder, LbProcess};
use common::raw_backend::{serve_keep_alive, RawRequest, RawServer};

/// A counter from `/_lb/metrics`, the sum of the series whose line starts with `series`.
async fn counter(client: &reqwest::Client, lb: &LbProcess, series: &str) -> f64 {
    let metrics = common::get(client, &lb.url_for("/_lb/metrics")).await;
    metrics
        .body
        .lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `backends` behind a balancer whose checks are slow enough not to take
/// a refusing app out during a test, and without passive ejection.
async fn balancer(
    urls: &[String],
    extra: impl FnOnce(LbBuilder) -> LbBuilder,
) -> (LbProcess, reqwest::Client) {
    let lb = extra(
        LbBuilder::new()
            .backends(urls)
            .env("HEALTH_CHECK_INTERVAL", "30")
            .env("HEALTH_CHECK_PATH", "/health")
            .env("LB_PASSIVE_5XX_THRESHOLD", "0")
            // The shipped default (the test builder turns it off).
            .env("LB_RETRY_5XX_WITHIN_MS", "1000"),
    )
    .start()
    .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    (lb, client)
}

/// A quick 503 on a GET is retried on another app: every client request gets 200, and no app sees one request twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_503_on_a_get_is_retried_on_another_app() {
    let backends = TestBackend::start_many("quick", 3).await;
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let (lb, client) = balancer(&urls, |builder| builder).await;
    backends[0].set_answer_for("/page", Answer::Unavailable);
    for n in 0..30 {
        let reply = common::get(&client, &lb.url_for(&format!("/page/{n}"))).await;
        assert_eq!(reply.status, 200, "request {n}: {reply:?}");
        assert_ne!(
            reply
                .headers
                .get(BACKEND_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some(backends[0].name())
        );
    }
    let refused = backends[0].count_to("/page/");
    println!("the refusing app saw {refused} of 30 requests; all were answered 200 elsewhere");
    assert!(
        refused > 0,
        "round robin never sent a request to the refusing app"
    );
    for backend in &backends {
        let mut paths: Vec<String> = backend
            .requests_to("/page/")
            .into_iter()
            .map(|r| r.path)
            .collect();
        let before = paths.len();
        paths.dedup();
        paths.sort();
        paths.dedup();
        assert_eq!(
            paths.len(),
            before,
            "{} saw a request twice",
            backend.name()
        );
    }
    assert!(
        counter(
            &client,
            &lb,
            "heroku_lb_retries_total{reason=\"5xx_answer\"}"
        )
        .await
            >= refused as f64
    );
}

/// A POST gets the app's 503, but a POST carrying an Idempotency-Key is retried; with every app refusing, a GET ends with one try per app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_are_retried_and_each_app_once() {
    let backends = TestBackend::start_many("idem", 2).await;
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let (lb, client) = balancer(&urls, |builder| builder).await;
    backends[0].set_answer_for("/form", Answer::Unavailable);
    let mut plain_503 = 0;
    for n in 0..10 {
        let reply = common::send(client.post(lb.url_for(&format!("/form/{n}"))).body("a=1"))
            .await
            .expect("answered");
        if reply.status == 503 {
            plain_503 += 1;
        }
    }
    assert!(plain_503 > 0, "no POST reached the refusing app");
    for n in 0..10 {
        let reply = common::send(
            client
                .post(lb.url_for(&format!("/form/key/{n}")))
                .header("Idempotency-Key", format!("key-{n}"))
                .body("a=1"),
        )
        .await
        .expect("answered");
        assert_eq!(
            reply.status, 200,
            "a POST with an Idempotency-Key: {reply:?}"
        );
    }
    // Both apps refuse: two tries, then the app's 503.
    backends[1].set_answer_for("/form", Answer::Unavailable);
    let reply = common::get(&client, &lb.url_for("/form/both")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(backends[0].count_to("/form/both"), 1);
    assert_eq!(backends[1].count_to("/form/both"), 1);
}

/// A 503 that took longer than retry_5xx_within_ms (the router's H12 comes after 30 s) is never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_503_is_not_retried() {
    let slow = RawServer::start(|stream| {
        serve_keep_alive(stream, |request: RawRequest| async move {
            if request.path.starts_with("/slow") {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nslow".to_string()
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string()
            }
        })
    })
    .await;
    let other = TestBackend::start("other").await;
    let (lb, client) = balancer(&[slow.url(), other.url()], |builder| {
        builder
            .env("LB_RETRY_5XX_WITHIN_MS", "300")
            .env("LB_POLICY", "round_robin")
    })
    .await;
    let mut slow_503 = 0;
    for n in 0..6 {
        let reply = common::get(&client, &lb.url_for(&format!("/slow/{n}"))).await;
        if reply.status == 503 {
            slow_503 += 1;
        }
    }
    println!("slow 503s passed to the client: {slow_503} of 6");
    assert!(slow_503 >= 2, "a slow 503 was retried");
    assert_eq!(other.count_to("/slow/"), 6 - slow_503);
}

/// With every app refusing, retries stop at the budget (20 % of the requests of 10 s plus 3 a second): the rest get the 503 and are counted as budget_exhausted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_budget_and_the_rest_are_counted() {
    let backends = TestBackend::start_many("budget", 3).await;
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let (lb, client) = balancer(&urls, |builder| builder).await;
    for backend in &backends {
        backend.set_answer_for("/down", Answer::Unavailable);
    }
    for n in 0..60 {
        let reply = common::get(&client, &lb.url_for(&format!("/down/{n}"))).await;
        assert_eq!(reply.status, 503);
    }
    let tries: usize = backends.iter().map(|b| b.count_to("/down/")).sum();
    let retried = counter(
        &client,
        &lb,
        "heroku_lb_retries_total{reason=\"5xx_answer\"}",
    )
    .await;
    let exhausted = counter(
        &client,
        &lb,
        "heroku_lb_retries_total{reason=\"budget_exhausted\"}",
    )
    .await;
    println!("60 requests, every app refusing: {tries} tries, {retried} retries, {exhausted} refused by the budget");
    // 60 requests (plus the warm-up) allow 12 + 30 retries in 10 s.
    assert!(retried <= 43.0, "retries past the budget: {retried}");
    assert!(
        retried >= 30.0,
        "the floor of 3 a second was not given: {retried}"
    );
    assert!(exhausted > 0.0);
    assert_eq!(tries as f64, 60.0 + retried);
}
