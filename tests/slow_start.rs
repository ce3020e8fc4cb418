//! Slow start after every admission, HAProxy's `slowstart` and Envoy's
//! `slow_start_config`: an app back in rotation (here after failing its
//! checks) gets a share that grows linearly from 5 % of its full share to
//! all of it over `slow_start_seconds`, under both policies, while a sticky
//! user of it is not moved.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::backend::{Answer, TestBackend, BACKEND_HEADER};
use common::lb::{LbBuilder, LbProcess};
use common::status::{status, wait_healthy};

/// The slow-start window of these tests.
const WINDOW: Duration = Duration::from_secs(10);

/// Three apps behind a balancer with `policy`, a 10 s slow start and quick checks.
async fn three_apps(
    policy: &str,
    extra: impl FnOnce(LbBuilder) -> LbBuilder,
) -> (Vec<TestBackend>, LbProcess, reqwest::Client) {
    let backends = TestBackend::start_many(&format!("ramp-{policy}"), 3).await;
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let lb = extra(
        LbBuilder::new()
            .backends(&urls)
            .env("LB_POLICY", policy)
            .env("LB_SLOW_START_SECONDS", WINDOW.as_secs().to_string())
            .env("HEALTH_CHECK_INTERVAL", "0.25")
            .env("HEALTH_CHECK_PATH", "/health")
            .env("LB_HEALTH_CHECK_RISE", "1")
            .env("LB_HEALTH_CHECK_FALL", "1"),
    )
    .start()
    .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    (backends, lb, client)
}

/// Send requests one after another for `WINDOW` + 1 s from `since`, and
/// return, per second, the share of them the app `name` answered.
async fn shares_per_second(
    client: &reqwest::Client,
    lb: &LbProcess,
    name: &str,
    since: Instant,
) -> Vec<f64> {
    let seconds = WINDOW.as_secs() as usize + 1;
    let mut counts: Vec<HashMap<String, usize>> = vec![HashMap::new(); seconds];
    let mut n = 0u64;
    while since.elapsed() < WINDOW + Duration::from_secs(1) {
        let reply = common::get(client, &lb.url_for(&format!("/load/{n}"))).await;
        n += 1;
        assert_eq!(reply.status, 200, "{reply:?}");
        let app = reply
            .headers
            .get(BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        let second = (since.elapsed().as_secs() as usize).min(seconds - 1);
        *counts[second].entry(app).or_default() += 1;
    }
    counts
        .iter()
        .map(|second| {
            let total: usize = second.values().sum();
            second.get(name).copied().unwrap_or(0) as f64 / total.max(1) as f64
        })
        .collect()
}

/// Take app `index` out by failing its checks, bring it back, and return when it is back.
async fn readmit(
    backends: &[TestBackend],
    index: usize,
    client: &reqwest::Client,
    lb: &LbProcess,
) -> Instant {
    backends[index].set_answer_for("/health", Answer::Unavailable);
    wait_healthy(client, lb, 2).await;
    backends[index].set_answer_for("/health", Answer::Normal);
    wait_healthy(client, lb, 3).await;
    Instant::now()
}

async fn assert_ramps(policy: &str) {
    let (backends, lb, client) = three_apps(policy, |builder| builder).await;
    let since = readmit(&backends, 1, &client, &lb).await;
    let shares = shares_per_second(&client, &lb, backends[1].name(), since).await;
    let text: Vec<String> = shares
        .iter()
        .map(|s| format!("{:.1}%", s * 100.0))
        .collect();
    println!(
        "{policy}: share of the re-admitted app, second by second: {}",
        text.join(" ")
    );
    let full = 1.0 / 3.0;
    assert!(
        shares[0] <= full / 3.0,
        "{policy}: first tenth of the window {:.1}% > a third of a full share",
        shares[0] * 100.0
    );
    for pair in shares.windows(2).take(WINDOW.as_secs() as usize) {
        assert!(
            pair[1] + 0.03 >= pair[0],
            "{policy}: the share fell from {:.1}% to {:.1}%: {text:?}",
            pair[0] * 100.0,
            pair[1] * 100.0
        );
    }
    let last = shares[shares.len() - 1];
    assert!(
        last >= full - 0.04,
        "{policy}: not at its full share after the window: {:.1}% ({text:?})",
        last * 100.0
    );
    let status = status(&client, &lb).await;
    assert!(status["backends"]
        .as_array()
        .is_some_and(|b| b.iter().all(|b| b["share_percent"] == 100)));
}

/// Round robin: a re-admitted app gets at most a third of its share in the first tenth of the window, and its share grows to full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_ramps_a_readmitted_app_up_to_its_full_share() {
    assert_ramps("round_robin").await;
}

/// Least connections: the same ramp, through the app's weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_ramps_a_readmitted_app_up_to_its_full_share() {
    assert_ramps("least_connections").await;
}

/// A sticky user of a slow-starting app stays on it, and status shows the app's share below 100 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_user_is_not_moved_by_a_slow_start() {
    let (backends, lb, client) = three_apps("round_robin", |builder| {
        builder.env("LB_STICKY_COOKIE", "lb")
    })
    .await;
    // A cookie for the app that will be re-admitted.
    let mut cookie = None;
    for n in 0..30 {
        let reply = common::get(&client, &lb.url_for(&format!("/pick/{n}"))).await;
        if reply
            .headers
            .get(BACKEND_HEADER)
            .is_some_and(|v| v == backends[1].name())
        {
            cookie = reply
                .headers
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::to_string);
            break;
        }
    }
    let cookie = cookie.expect("a sticky cookie for the second app");
    readmit(&backends, 1, &client, &lb).await;
    let status = status(&client, &lb).await;
    let share = status["backends"]
        .as_array()
        .and_then(|b| {
            b.iter()
                .find(|b| b["name"] == backends[1].url().trim_start_matches("http://"))
        })
        .map(|b| b["share_percent"].as_u64().unwrap_or(100));
    println!("share of the re-admitted app in status: {share:?}%");
    assert!(share.is_some_and(|share| share < 100), "{status:#}");
    for n in 0..20 {
        let reply = common::send(
            client
                .get(lb.url_for(&format!("/sticky/{n}")))
                .header("Cookie", &cookie),
        )
        .await
        .expect("answered");
        assert_eq!(
            reply
                .headers
                .get(BACKEND_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some(backends[1].name()),
            "request {n} with the sticky cookie moved"
        );
        assert!(
            reply.headers.get("set-cookie").is_none(),
            "a new cookie for a sticky user"
        );
    }
}
