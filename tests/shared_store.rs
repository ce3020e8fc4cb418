//! Several balancer dynos, one view, through a real `redis-server` with TLS
//! and a certificate nobody can verify (as Heroku Key-Value Store's): one
//! lease holder polls the Platform API and checks the apps for all, so three
//! or ten balancers spend one balancer's API budget and check each app once
//! per interval; an ejection seen by one is honoured by the others within
//! 2 s; a killed lease holder is replaced within three discovery intervals
//! and a store that dies, answers garbage or nothing is survived: every
//! balancer falls back to acting alone and rejoins, with no failed request.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{Answer, TestBackend};
use common::heroku_api::{FakeHerokuApi, PipelineId};
use common::lb::{LbBuilder, LbProcess};
use common::redis::RedisServer;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const KEY: &str = "hrku-test-key-shared-store-5d1e-do-not-log";
/// The discovery interval of these tests: the lease lasts 2 s.
const INTERVAL: &str = "1";
/// How long the cost of a configuration is measured.
const WINDOW: Duration = Duration::from_secs(8);

/// A balancer in pipeline mode over `pipeline`, checking every second,
/// sharing `store` when given.
async fn balancer(
    api: &FakeHerokuApi,
    pipeline: &PipelineId,
    store: Option<&RedisServer>,
) -> LbProcess {
    let mut builder = LbBuilder::pipeline(api, pipeline.as_str())
        .env("DISCOVERY_INTERVAL", INTERVAL)
        .env("HEALTH_CHECK_INTERVAL", "1")
        .env("HEALTH_CHECK_PATH", "/health")
        .env("LB_STICKY_COOKIE", "lb")
        .env("LB_STICKY_SECRET", "shared-sticky-secret");
    if let Some(store) = store {
        builder = builder.env("REDIS_URL", store.url());
    }
    builder.start().await
}

/// `/_lb/status` as JSON, or null when there is no answer (a balancer
/// that was killed) or it is not JSON.
async fn status_of(client: &reqwest::Client, lb: &LbProcess) -> Value {
    match common::send(client.get(lb.url_for("/_lb/status"))).await {
        Ok(reply) => serde_json::from_str(&reply.body).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Wait until every balancer's status satisfies `check`.
async fn wait_all(
    client: &reqwest::Client,
    lbs: &[LbProcess],
    what: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    let started = Instant::now();
    let tries = (within.as_millis() / 50) as u32;
    let ok = common::poll_until(tries, Duration::from_millis(50), || async {
        for lb in lbs {
            if !check(&status_of(client, lb).await) {
                return false;
            }
        }
        true
    })
    .await;
    if !ok {
        let mut statuses = String::new();
        for lb in lbs {
            statuses.push_str(&format!(
                "{}\n{}\n",
                status_of(client, lb).await,
                lb.output()
            ));
        }
        panic!("{what}: not within {within:?}:\n{statuses}");
    }
    started.elapsed()
}

/// API requests and health checks per app over `WINDOW` with `count`
/// balancers (sharing a store when `store`), all three apps served.
async fn cost(count: usize, store: Option<&RedisServer>) -> (usize, f64) {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("cost");
    let mut apps = Vec::new();
    for i in 1..=3 {
        apps.push(TestBackend::start_app(&api, &pipeline, &format!("cost-{count}-{i}")).await);
    }
    let mut lbs = Vec::new();
    for _ in 0..count {
        lbs.push(balancer(&api, &pipeline, store).await);
    }
    let client = common::http_client();
    wait_all(
        &client,
        &lbs,
        "three healthy apps everywhere",
        Duration::from_secs(20),
        |s| s["backends_healthy"] == 3,
    )
    .await;
    let api_mark = api.mark();
    let checks_before: usize = apps.iter().map(|app| app.count_to("/health")).sum();
    tokio::time::sleep(WINDOW).await;
    let api_requests = api.requests_since(api_mark).len();
    let checks: usize = apps
        .iter()
        .map(|app| app.count_to("/health"))
        .sum::<usize>()
        - checks_before;
    let per_app_per_interval = checks as f64 / 3.0 / WINDOW.as_secs_f64();
    (api_requests, per_app_per_interval)
}

/// Three or ten balancers sharing the store spend about one balancer's API budget, and each app is checked about once per interval, not once per balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_balancers_spend_one_balancers_api_budget_and_check_each_app_once() {
    let store = RedisServer::start_tls();
    let (alone_api, alone_checks) = cost(1, None).await;
    let (islands_api, islands_checks) = cost(3, None).await;
    let (three_api, three_checks) = cost(3, Some(&store)).await;
    let (ten_api, ten_checks) = cost(10, Some(&store)).await;
    let per_hour = |requests: usize| requests as f64 * 3600.0 / WINDOW.as_secs_f64();
    println!(
        "over {WINDOW:?} with rounds every {INTERVAL} s and checks every second:\n\
         1 balancer: {alone_api} API requests ({:.0}/h), {alone_checks:.2} checks per app per interval\n\
         3 balancers without a store: {islands_api} API requests ({:.0}/h), {islands_checks:.2} checks per app per interval\n\
         3 balancers sharing: {three_api} API requests ({:.0}/h), {three_checks:.2} checks per app per interval\n\
         10 balancers sharing: {ten_api} API requests ({:.0}/h), {ten_checks:.2} checks per app per interval",
        per_hour(alone_api),
        per_hour(islands_api),
        per_hour(three_api),
        per_hour(ten_api)
    );
    // A round is a request or two; allow one round of difference.
    let budget = |alone: usize| (alone as f64 * 1.1).ceil() as usize + 2;
    assert!(
        three_api <= budget(alone_api),
        "3 balancers: {three_api} vs {alone_api}"
    );
    assert!(
        ten_api <= budget(alone_api),
        "10 balancers: {ten_api} vs {alone_api}"
    );
    assert!(
        three_checks < 1.5,
        "3 balancers check each app {three_checks:.2} times an interval"
    );
    assert!(
        ten_checks < 1.5,
        "10 balancers check each app {ten_checks:.2} times an interval"
    );
}

/// Three static-mode balancers sharing the store over three apps.
async fn three_static(store: &RedisServer, backends: &[TestBackend]) -> Vec<LbProcess> {
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let mut lbs = Vec::new();
    for _ in 0..3 {
        lbs.push(
            LbBuilder::new()
                .backends(&urls)
                .env("REDIS_URL", store.url())
                .env("HEALTH_CHECK_INTERVAL", "1")
                .env("HEALTH_CHECK_PATH", "/health")
                .env("LB_PASSIVE_5XX_THRESHOLD", "3")
                .env("LB_RETRY_5XX_WITHIN_MS", "0")
                .start()
                .await,
        );
    }
    lbs
}

/// An app one balancer ejects on its live traffic is ejected on the other two within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_by_one_balancer_is_honoured_by_the_others_within_2_s() {
    let store = RedisServer::start_tls();
    let backends = TestBackend::start_many("shared-eject", 3).await;
    let lbs = three_static(&store, &backends).await;
    let client = common::http_client();
    wait_all(
        &client,
        &lbs,
        "three healthy apps and the store",
        Duration::from_secs(20),
        |s| s["backends_healthy"] == 3 && s["store"] == "connected",
    )
    .await;
    backends[0].set_answer_for("/work", Answer::Unavailable);
    let mut ejected_at = None;
    for n in 0..60 {
        let _ = common::send(client.get(lbs[0].url_for(&format!("/work/{n}")))).await;
        let status = status_of(&client, &lbs[0]).await;
        let ejected = status["backends"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["state"] == "ejected"));
        if ejected {
            ejected_at = Some(Instant::now());
            break;
        }
    }
    let ejected_at = ejected_at.expect("the first balancer never ejected the failing app");
    let took = wait_all(
        &client,
        &lbs[1..],
        "the ejection on the other two",
        Duration::from_secs(2),
        |s| {
            s["backends"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["state"] == "ejected"))
        },
    )
    .await;
    println!(
        "the other balancers ejected it {:?} after the first",
        ejected_at.elapsed().min(took)
    );
}

/// Requests one after another from `clients` clients to `urls` in turn until
/// `stop`; counts answers and failures (no answer, or a 5xx).
fn steady_load(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let client = common::http_client();
        let mut failures = Vec::new();
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let url = format!("{}/steady/{n}", urls[n % urls.len()]);
            n += 1;
            match common::send(client.get(&url)).await {
                Ok(reply) if reply.status < 500 => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures.push(format!("{url}: {:?}", other.map(|r| r.status)));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failures
    })
}

/// SIGKILL the lease holder under load: another balancer takes the lease within three discovery intervals, discovery goes on, and no request to the others fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_replaced_within_three_intervals_with_no_failed_request() {
    let store = RedisServer::start_tls();
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("takeover");
    let _apps: Vec<TestBackend> = {
        let mut apps = Vec::new();
        for i in 1..=2 {
            apps.push(TestBackend::start_app(&api, &pipeline, &format!("takeover-{i}")).await);
        }
        apps
    };
    let mut lbs = Vec::new();
    for _ in 0..3 {
        lbs.push(balancer(&api, &pipeline, Some(&store)).await);
    }
    let client = common::http_client();
    wait_all(
        &client,
        &lbs,
        "two healthy apps everywhere",
        Duration::from_secs(20),
        |s| s["backends_healthy"] == 2 && s["store"] == "connected",
    )
    .await;
    let mut leader = None;
    for (i, lb) in lbs.iter().enumerate() {
        if status_of(&client, lb).await["store_leader"] == true {
            leader = Some(i);
        }
    }
    let leader = leader.expect("one balancer holds the lease");
    let mut others: Vec<LbProcess> = Vec::new();
    let mut killed = None;
    for (i, lb) in lbs.into_iter().enumerate() {
        if i == leader {
            killed = Some(lb);
        } else {
            others.push(lb);
        }
    }
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load = steady_load(
        others.iter().map(LbProcess::url).collect(),
        Arc::clone(&stop),
        Arc::clone(&ok),
        Arc::clone(&failed),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut killed = killed.expect("the leader");
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(killed.pid().to_string())
        .status();
    let _ = killed.wait_exit(Duration::from_secs(5));
    let died = Instant::now();
    let took = common::poll_until(100, Duration::from_millis(50), || async {
        let mut leaders = 0;
        for lb in &others {
            if status_of(&client, lb).await["store_leader"] == true {
                leaders += 1;
            }
        }
        leaders == 1
    })
    .await;
    let takeover = died.elapsed();
    assert!(took, "nobody took the lease within 5 s");
    println!(
        "the lease was taken {takeover:?} after the holder died (lease 2 s, interval {INTERVAL} s)"
    );
    assert!(
        takeover <= Duration::from_secs(3),
        "takeover after {takeover:?}"
    );
    // Discovery goes on under the new holder: a new app joins everywhere.
    let _late = TestBackend::start_app(&api, &pipeline, "takeover-late").await;
    wait_all(
        &client,
        &others,
        "the app added after the takeover",
        Duration::from_secs(10),
        |s| s["backends_healthy"] == 3,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let failures = load.await.expect("the load task");
    println!(
        "{} requests answered, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
}

/// Kill the store under load: no request fails, every balancer falls back within one interval, and each rejoins when the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_dies_is_survived_and_rejoined() {
    let mut store = RedisServer::start_tls();
    let backends = TestBackend::start_many("store-dies", 3).await;
    let lbs = three_static(&store, &backends).await;
    let client = common::http_client();
    wait_all(
        &client,
        &lbs,
        "connected to the store",
        Duration::from_secs(20),
        |s| s["backends_healthy"] == 3 && s["store"] == "connected",
    )
    .await;
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load = steady_load(
        lbs.iter().map(LbProcess::url).collect(),
        Arc::clone(&stop),
        Arc::clone(&ok),
        Arc::clone(&failed),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.kill();
    let fell_back = wait_all(
        &client,
        &lbs,
        "every balancer in fallback",
        Duration::from_secs(2),
        |s| s["store"] == "fallback",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    store.restart();
    let rejoined = wait_all(
        &client,
        &lbs,
        "every balancer connected again",
        Duration::from_secs(10),
        |s| s["store"] == "connected",
    )
    .await;
    let mut leaders = 0;
    for lb in &lbs {
        if status_of(&client, lb).await["store_leader"] == true {
            leaders += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let failures = load.await.expect("the load task");
    println!(
        "fell back {fell_back:?} after the store died, rejoined {rejoined:?} after it came back; \
         {} requests answered, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(leaders <= 1, "{leaders} lease holders");
    for lb in &lbs {
        assert_eq!(
            lb.lines_with("store unreachable").len(),
            1,
            "{}",
            lb.output()
        );
    }
}

/// A "store" that answers garbage, or accepts and never answers: the balancer falls back and serves every request as fast as without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_answering_garbage_or_nothing_changes_nothing_on_the_request_path() {
    for garbage in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                if garbage {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\n\r\n\x00\xff%nonsense\r\n")
                        .await;
                }
                held.push(stream);
            }
        });
        let backend = TestBackend::start(if garbage {
            "garbage-store"
        } else {
            "silent-store"
        })
        .await;
        let lb = LbBuilder::new()
            .backends(&[backend.url()])
            .env("LB_STORE_URL", format!("redis://127.0.0.1:{port}"))
            .start()
            .await;
        let client = common::http_client();
        lb.wait_proxying(&client).await;
        let mut latencies = Vec::new();
        for n in 0..50 {
            let sent = Instant::now();
            let reply = common::get(&client, &lb.url_for(&format!("/work/{n}"))).await;
            latencies.push(sent.elapsed());
            assert_eq!(reply.status, 200);
        }
        latencies.sort();
        let status = status_of(&client, &lb).await;
        println!(
            "store answering {}: status store={}, median request {:?}, slowest {:?}",
            if garbage { "garbage" } else { "nothing" },
            status["store"],
            latencies[25],
            latencies[49]
        );
        assert_eq!(status["store"], "fallback");
        assert!(latencies[25] < Duration::from_millis(250), "{latencies:?}");
        server.abort();
    }
}

/// A webhook delivered to a balancer that does not hold the lease changes routing on all three within 2 s: it goes through the store to the lease holder, which does the API work once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_any_balancer_changes_routing_on_all_within_2_s() {
    let store = RedisServer::start_tls();
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shared-hook");
    let mut apps = Vec::new();
    for i in 1..=2 {
        apps.push(TestBackend::start_app(&api, &pipeline, &format!("shared-hook-{i}")).await);
    }
    let mut lbs = Vec::new();
    for _ in 0..3 {
        lbs.push(
            LbBuilder::pipeline(&api, pipeline.as_str())
                .env("DISCOVERY_INTERVAL", "60")
                .env("HEALTH_CHECK_INTERVAL", "1")
                .env("HEALTH_CHECK_PATH", "/health")
                .env("LB_WEBHOOK_SECRET", "whsec-shared")
                .env("REDIS_URL", store.url())
                .start()
                .await,
        );
    }
    let client = common::http_client();
    wait_all(
        &client,
        &lbs,
        "two apps everywhere",
        Duration::from_secs(20),
        |s| s["backends_healthy"] == 2 && s["store"] == "connected",
    )
    .await;
    let mut follower = None;
    for lb in &lbs {
        if status_of(&client, lb).await["store_leader"] == false {
            follower = Some(lb);
            break;
        }
    }
    let follower = follower.expect("a balancer without the lease");
    let id = api.app_id("shared-hook-2").expect("exists");
    api.subscribe(
        &id,
        &follower.url_for("/_lb/hooks/heroku"),
        "whsec-shared",
        &["api:formation"],
    );
    let mark = api.mark();
    let sent = Instant::now();
    api.set_web_quantity(&id, Some(4));
    let took = wait_all(
        &client,
        &lbs,
        "weight 4 everywhere",
        Duration::from_secs(2),
        |s| {
            s["backends"].as_array().is_some_and(|b| {
                b.iter()
                    .any(|b| b["name"] == "shared-hook-2" && b["weight"] == 4)
            })
        },
    )
    .await;
    let calls = api.requests_since(mark);
    println!(
        "weight 4 on all three balancers {:?} after the event to a follower; API calls: {:?}",
        sent.elapsed().min(took + Duration::from_millis(1)),
        calls
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(calls.len(), 1, "the API work was not done once");
}

/// A sticky cookie one balancer gave is honoured by the others (the same LB_STICKY_SECRET makes the same tokens everywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookies_from_one_balancer_are_honoured_by_the_others() {
    let store = RedisServer::start_tls();
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shared-sticky");
    let mut apps = Vec::new();
    for i in 1..=3 {
        apps.push(TestBackend::start_app(&api, &pipeline, &format!("shared-sticky-{i}")).await);
    }
    let mut lbs = Vec::new();
    for _ in 0..3 {
        lbs.push(balancer(&api, &pipeline, Some(&store)).await);
    }
    let client = common::http_client();
    wait_all(
        &client,
        &lbs,
        "three apps everywhere",
        Duration::from_secs(20),
        |s| s["backends_healthy"] == 3,
    )
    .await;
    for n in 0..3 {
        let first = common::get(&client, &lbs[0].url_for(&format!("/first/{n}"))).await;
        let app = first.headers.get(common::backend::BACKEND_HEADER).cloned();
        let cookie = first
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a sticky cookie")
            .to_string();
        for lb in &lbs[1..] {
            let reply = common::send(client.get(lb.url_for("/again")).header("Cookie", &cookie))
                .await
                .expect("answered");
            assert_eq!(
                reply.headers.get(common::backend::BACKEND_HEADER).cloned(),
                app
            );
            assert!(reply.headers.get("set-cookie").is_none(), "a new cookie");
        }
    }
}
