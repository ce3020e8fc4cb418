//! Least connections (`LB_POLICY=least_connections`): each request goes to the
//! healthy backend with the fewest requests in flight relative to its weight,
//! so a slow app stops collecting a full share of the traffic; the in-flight
//! counts that `/_lb/status` and `/_lb/metrics` show fall back to 0 however
//! requests end; and a policy the balancer does not know stops it at start.
//! The slow apps are `common::slow_backend`, answering health checks at once.

mod common;

use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::heroku_api::{AppFixture, FakeHerokuApi};
use common::lb::{balancer, LbBuilder, LbExit, LbProcess, EXIT_TIMEOUT};
use common::slow_backend::SlowBackend;
use common::status::{in_flight, poll_status, status, wait_healthy, wait_in_flight_zero};
use serde_json::Value;
use tokio::task::JoinSet;

/// Path of the health checks; the slow backends answer it at once.
const HEALTH_PATH: &str = "/health";
/// How long the slow backend of the load tests takes to answer.
const SLOW: Duration = Duration::from_secs(1);
/// Concurrent clients of the load tests.
const CLIENTS: usize = 20;
/// How long the load tests keep starting requests.
const RUN: Duration = Duration::from_secs(4);
/// Each load client's pause between an answer and its next request. Without
/// it 20 clients saturate the balancer itself (a debug build on one thread),
/// requests queue inside it for milliseconds, the fast backends look as busy
/// as the slow one, and least connections rightly evens out their counts;
/// with it the backends, not the balancer, are the bottleneck, as in production.
const PAUSE: Duration = Duration::from_millis(20);
/// The Platform API key of the pipeline test.
const KEY: &str = "hrku-least-connections-test-key";

/// The `backends` array of a status answer.
fn backends(status: &Value) -> &Vec<Value> {
    status["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no backends array: {status}"))
}

/// The status entry whose `url` names `addr_url` (`http://127.0.0.1:PORT`).
fn backend_entry<'a>(status: &'a Value, addr_url: &str) -> &'a Value {
    backends(status)
        .iter()
        .find(|backend| {
            backend["url"]
                .as_str()
                .is_some_and(|url| url.trim_end_matches('/') == addr_url)
        })
        .unwrap_or_else(|| panic!("no backend {addr_url} in status: {status}"))
}

/// `(backend label, value)` of every `heroku_lb_backend_in_flight` sample.
fn in_flight_gauges(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("heroku_lb_backend_in_flight{"))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once('}')?;
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// What a closed-loop load run got back.
struct Load {
    ok: usize,
    failures: Vec<String>,
}

/// `clients` concurrent clients, each sending GETs to `{prefix}{client}-{n}`
/// one after another, `pause` apart, starting new ones for `run`; returns
/// when the last answer is in (each request is bounded by the client timeout).
async fn closed_loop_load(
    lb: &LbProcess,
    clients: usize,
    run: Duration,
    pause: Duration,
    prefix: &str,
) -> Load {
    let client = common::http_client();
    let deadline = Instant::now() + run;
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let client = client.clone();
        let base = lb.url_for(&format!("{prefix}{c}-"));
        tasks.spawn(async move {
            let mut ok = 0;
            let mut failures = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                match common::send(client.get(format!("{base}{n}"))).await {
                    Ok(reply) if reply.status == 200 => ok += 1,
                    Ok(reply) => {
                        failures.push(format!("{base}{n}: {} {}", reply.status, reply.body))
                    }
                    Err(e) => failures.push(format!("{base}{n}: {e}")),
                }
                n += 1;
                tokio::time::sleep(pause).await;
            }
            (ok, failures)
        });
    }
    let mut load = Load {
        ok: 0,
        failures: Vec::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        let (ok, failures) = joined.expect("a load client panicked");
        load.ok += ok;
        load.failures.extend(failures);
    }
    load
}

/// With 20 clients for 4 s, least connections sends a backend that takes 1 s at most a third of what round robin sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_a_slow_backend_at_most_a_third_of_its_round_robin_share() {
    let slow = SlowBackend::all_but_checks("slow", SLOW, HEALTH_PATH).await;
    let fast = TestBackend::start_many("fast", 2).await;
    let urls = vec![slow.url(), fast[0].url(), fast[1].url()];
    let client = common::http_client();

    let mut splits = Vec::new();
    for policy in ["round_robin", "least_connections"] {
        let lb = balancer(&urls)
            .policy(policy)
            .health_check_interval("0.5")
            .start()
            .await;
        wait_healthy(&client, &lb, 3).await;
        let prefix = format!("/{policy}/");
        let started = Instant::now();
        let load = closed_loop_load(&lb, CLIENTS, RUN, PAUSE, &prefix).await;
        let split = [
            slow.count_to(&prefix),
            fast[0].count_to(&prefix),
            fast[1].count_to(&prefix),
        ];
        let total: usize = split.iter().sum();
        println!(
            "{policy}: {CLIENTS} clients for {RUN:?}, {PAUSE:?} between requests (done after {:?}): {} answered 200; received by {} {}, {} {}, {} {} (slow share {:.3})",
            started.elapsed(),
            load.ok,
            slow.name(),
            split[0],
            fast[0].name(),
            split[1],
            fast[1].name(),
            split[2],
            split[0] as f64 / total.max(1) as f64
        );
        assert!(
            load.failures.is_empty(),
            "{policy}: {} requests failed, first ones: {:?}\nbalancer output:\n{}",
            load.failures.len(),
            &load.failures[..load.failures.len().min(5)],
            lb.output()
        );
        splits.push(split);
    }

    let (rr, lc) = (splits[0], splits[1]);
    let rr_total: usize = rr.iter().sum();
    assert!(
        rr[0] * 4 >= rr_total,
        "round robin should send the slow backend about a third of the requests, got {rr:?} \
         (slow, fast-1, fast-2): the setup does not create the effect under test"
    );
    assert!(
        lc[0] * 3 <= rr[0],
        "least connections sent the slow backend {} requests, round robin {}: expected at most a \
         third ({}); splits (slow, fast-1, fast-2): round_robin {rr:?}, least_connections {lc:?}",
        lc[0],
        rr[0],
        rr[0] / 3
    );
}

/// After load, clients that leave mid-request and a backend that refuses, every in_flight in status and metrics is back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_counts_return_to_zero_however_requests_end() {
    let slow = SlowBackend::all_but_checks("slow", SLOW, HEALTH_PATH).await;
    let fast = TestBackend::start_many("fast", 2).await;
    let urls = vec![slow.url(), fast[0].url(), fast[1].url()];
    let client = common::http_client();
    let lb = balancer(&urls)
        .policy("least_connections")
        .health_check_interval("0.5")
        .start()
        .await;
    wait_healthy(&client, &lb, 3).await;
    assert_eq!(
        status(&client, &lb).await["policy"],
        "least_connections",
        "status should name the policy in force"
    );

    // 1. Load, while sampling the counts: they rise, and never exceed the
    // number of requests that can be outstanding at once.
    let run = Duration::from_secs(2);
    let sampler = async {
        let mut max_slow = 0;
        let mut max_total = 0;
        let deadline = Instant::now() + run;
        while Instant::now() < deadline {
            let sample = status(&client, &lb).await;
            let counts = in_flight(&sample);
            max_total = max_total.max(counts.iter().map(|(_, n)| n).sum::<u64>());
            max_slow = max_slow.max(
                backend_entry(&sample, &slow.url())["in_flight"]
                    .as_u64()
                    .unwrap_or(0),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (max_slow, max_total)
    };
    let (load, (max_slow, max_total)) = tokio::join!(
        closed_loop_load(&lb, CLIENTS, run, PAUSE, "/load/"),
        sampler
    );
    println!(
        "load: {} answered 200, {} failed; largest in_flight seen: slow {max_slow}, all backends {max_total}",
        load.ok,
        load.failures.len()
    );
    assert!(
        max_slow >= 1,
        "the slow backend's in_flight never rose above 0 during load: the count is not kept"
    );
    assert!(
        max_total <= CLIENTS as u64,
        "{max_total} requests in flight at once with only {CLIENTS} clients: counts leak"
    );

    // 2. Clients that give up after 100 ms, while the slow backend holds their requests.
    let impatient = common::http_client_with_timeout(Duration::from_millis(100));
    let mut gone = JoinSet::new();
    for i in 0..9 {
        let request = impatient.get(lb.url_for(&format!("/gone/{i}")));
        gone.spawn(common::send(request));
    }
    let mut timed_out = 0;
    while let Some(joined) = gone.join_next().await {
        if joined.expect("an impatient client panicked").is_err() {
            timed_out += 1;
        }
    }
    let held = backend_entry(&status(&client, &lb).await, &slow.url())["in_flight"].clone();
    println!(
        "disconnects: {timed_out} of 9 clients gave up; the slow backend got {} of them; its in_flight right after: {held}",
        slow.count_to("/gone/")
    );
    assert!(
        timed_out >= 1 && slow.count_to("/gone/") >= 1,
        "no client left mid-request at the slow backend ({timed_out} timed out, slow got {}): \
         the disconnect case was not exercised",
        slow.count_to("/gone/")
    );

    // 3. A backend that refuses connections. The requests go at once, before
    // the health checks (0.5 s apart, 2 to fail) take the backend out.
    fast[1].stop_listening().await;
    let mut refusals = JoinSet::new();
    for i in 0..12 {
        let request = client.get(lb.url_for(&format!("/refused/{i}")));
        refusals.spawn(common::send(request));
    }
    let mut statuses = Vec::new();
    while let Some(joined) = refusals.join_next().await {
        let reply = joined.expect("a client panicked");
        statuses.push(reply.map(|r| r.status.to_string()).unwrap_or_else(|e| e));
    }
    println!(
        "requests after {} stopped listening: {statuses:?}",
        fast[1].name()
    );
    let refused = backend_entry(&status(&client, &lb).await, &fast[1].url()).clone();
    assert!(
        refused["connect_failures"].as_u64().unwrap_or(0) >= 1,
        "the balancer never tried the refusing backend, so the refusal case was not exercised: \
         {refused}\nbalancer lines naming it:\n{}",
        lb.output()
            .lines()
            .filter(|line| line.contains("/refused/")
                || (line.contains(&fast[1].port().to_string()) && !line.contains("path=/load/")))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // 4. Everything settles back to 0.
    wait_in_flight_zero(&client, &lb).await;
    let metrics = common::get(&client, &lb.url_for("/_lb/metrics")).await;
    let gauges = in_flight_gauges(&metrics.body);
    assert_eq!(
        gauges.len(),
        3,
        "expected one heroku_lb_backend_in_flight sample per backend, got {gauges:?}\nmetrics:\n{}",
        metrics.body
    );
    assert!(
        gauges.iter().all(|(_, value)| *value == 0.0),
        "the in-flight gauge is not 0 for every backend: {gauges:?}"
    );
}

/// A client that gives up while a slow backend works on its request is neither re-sent to another backend nor a reason to eject that backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_is_not_resent_elsewhere_and_does_not_eject_its_backend() {
    let slow = SlowBackend::all_but_checks("slow", SLOW, HEALTH_PATH).await;
    let fast = TestBackend::start("fast").await;
    let client = common::http_client();
    let lb = balancer(&[slow.url(), fast.url()])
        .policy("least_connections")
        .health_check_interval("0.5")
        .start()
        .await;
    wait_healthy(&client, &lb, 2).await;

    // No request was proxied yet, so each one opens a fresh upstream connection.
    let impatient = common::http_client_with_timeout(Duration::from_millis(100));
    let sent = 4;
    let mut gone = JoinSet::new();
    for i in 0..sent {
        gone.spawn(common::send(
            impatient.get(lb.url_for(&format!("/gone/{i}"))),
        ));
    }
    while gone.join_next().await.is_some() {}
    // Let the slow backend finish (1 s) and the balancer settle.
    wait_in_flight_zero(&client, &lb).await;

    let (at_slow, at_fast) = (slow.count_to("/gone/"), fast.count_to("/gone/"));
    let slow_entry = backend_entry(&status(&client, &lb).await, &slow.url()).clone();
    let log: Vec<String> = lb
        .output()
        .lines()
        .filter(|line| line.contains("/gone/") || line.contains("ejected"))
        .map(|line| line.chars().take(300).collect())
        .collect();
    println!(
        "{sent} requests whose client left after 100 ms: the slow backend got {at_slow}, the fast \
         one {at_fast}; slow state {}\n{}",
        slow_entry["state"],
        log.join("\n")
    );
    assert!(
        at_slow >= 1,
        "no request reached the slow backend, so the case was not exercised"
    );
    let mut problems = Vec::new();
    if at_slow + at_fast != sent {
        problems.push(format!(
            "the backends got {} requests for {sent} sent (slow {at_slow}, fast {at_fast}): \
             requests whose client had left were sent again",
            at_slow + at_fast
        ));
    }
    if log
        .iter()
        .any(|line| line.contains("ejected") && line.contains(&slow.url()))
    {
        problems.push(format!(
            "the slow backend was ejected because a client left (status: state {}, healthy {})",
            slow_entry["state"], slow_entry["healthy"]
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\nbalancer lines:\n{}",
        problems.join("\n"),
        log.join("\n")
    );
}

/// Apps with 3 and 1 web dynos and the same speed share traffic about 3:1 under least connections, one request at a time as under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_divides_in_flight_requests_by_dyno_weight() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let heavy =
        SlowBackend::all_but_checks("three-dynos", Duration::from_millis(50), HEALTH_PATH).await;
    let light =
        SlowBackend::all_but_checks("one-dyno", Duration::from_millis(50), HEALTH_PATH).await;
    api.add_app(
        AppFixture::new("three-dynos", &pipeline, &format!("{}/", heavy.url()))
            .web_quantity(Some(3)),
    );
    api.add_app(
        AppFixture::new("one-dyno", &pipeline, &format!("{}/", light.url())).web_quantity(Some(1)),
    );
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("DISCOVERY_INTERVAL", "0.5")
        .policy("least_connections")
        .health_check_interval("0.5")
        .health_check_path(HEALTH_PATH)
        .start()
        .await;
    let client = common::http_client();

    poll_status(&client, &lb)
        .strict()
        .until("both apps healthy with weights 3 and 1", |status| {
            let weights: Vec<(String, u64, bool)> = backends(status)
                .iter()
                .map(|b| {
                    (
                        b["name"].as_str().unwrap_or("").to_string(),
                        b["weight"].as_u64().unwrap_or(0),
                        b["healthy"].as_bool().unwrap_or(false),
                    )
                })
                .collect();
            weights.len() == 2
                && weights.contains(&("three-dynos".to_string(), 3, true))
                && weights.contains(&("one-dyno".to_string(), 1, true))
        })
        .await;

    // One request at a time: every backend has 0 in flight at each pick,
    // and the weights alone must divide them.
    for i in 0..40 {
        let reply = common::get(&client, &lb.url_for(&format!("/sequential/{i}"))).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let (h, l) = (
        heavy.count_to("/sequential/"),
        light.count_to("/sequential/"),
    );
    assert!(
        (28..=32).contains(&h) && h + l == 40,
        "40 sequential requests over weights 3:1 split {h}:{l}, expected about 30:10"
    );

    let clients = 8;
    let load = closed_loop_load(
        &lb,
        clients,
        Duration::from_secs(3),
        Duration::ZERO,
        "/weighted/",
    )
    .await;
    let (h, l) = (heavy.count_to("/weighted/"), light.count_to("/weighted/"));
    let share = h as f64 / (h + l).max(1) as f64;
    println!(
        "weights 3:1, {clients} clients, 50 ms answers: {} {h}, {} {l} (heavy share {share:.3})",
        heavy.name(),
        light.name()
    );
    assert!(
        load.failures.is_empty(),
        "{} requests failed, first ones: {:?}",
        load.failures.len(),
        &load.failures[..load.failures.len().min(5)]
    );
    assert!(
        (0.65..=0.85).contains(&share) && h + l >= 100,
        "expected the 3-dyno app to get 65–85 % of at least 100 requests, got {h}/{l} ({share:.3})\nbalancer output:\n{}",
        lb.output()
    );
}

/// Run to exit and check the failure names `culprit` and lists the policies.
fn assert_policy_error(builder: LbBuilder, culprit: &str) -> LbExit {
    let exit = builder.run_to_exit(EXIT_TIMEOUT);
    assert!(
        !exit.status.success(),
        "expected a non-zero exit for an unknown policy, got {}; stderr:\n{}",
        exit.status,
        exit.stderr
    );
    for needle in [culprit, "round_robin", "least_connections"] {
        assert!(
            exit.stderr.contains(needle),
            "stderr does not mention {needle}:\n{}",
            exit.stderr
        );
    }
    exit
}

/// An unknown policy, in LB_POLICY or in the file's heroku_lb.policy, stops the balancer naming it and listing the choices.
#[test]
fn an_unknown_policy_stops_the_balancer_naming_the_setting_and_the_choices() {
    let backend = format!("http://127.0.0.1:{}", common::free_port());
    assert_policy_error(
        LbBuilder::new()
            .backends(&[&backend])
            .env("LB_POLICY", "fastest"),
        "LB_POLICY",
    );
    assert_policy_error(
        LbBuilder::new()
            .backends(&[&backend])
            .config("policy", "fastest"),
        "heroku_lb.policy",
    );
}
