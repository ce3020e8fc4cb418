//! Discovery while the balancer runs, against the fake Platform API changing
//! under it: every list answer paged (450 apps, pages of 200), apps the API
//! will not show left out without holding up the others, large removals
//! confirmed before they apply, health kept across a change of dyno count,
//! dyno counts, maintenance, couplings and the rate limit followed at run
//! time, and health checks that keep their pace while the API stalls.
//! Apps are plain HTTP test backends whose `web_url` is `http://127.0.0.1:PORT/`.

mod common;

use std::time::{Duration, Instant};

use common::backend::{Answer, TestBackend};
use common::heroku_api::{AppFixture, Failure, FakeHerokuApi};
use common::lb::{LbBuilder, LbProcess, HEALTH_PATH};
use common::status::{poll_status, status, StatusPoll};
use serde_json::Value;

const KEY: &str = "hrku-test-key-runtime-0b1c-do-not-log";

/// The status entry of the app called `name`, if the balancer knows it.
fn app_entry(snapshot: &Value, name: &str) -> Option<Value> {
    snapshot["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
}

/// A poll of `/_lb/status` as the tests here wait: every 100 ms, up to `within`.
fn poll<'a>(client: &'a reqwest::Client, lb: &'a LbProcess, within: Duration) -> StatusPoll<'a> {
    poll_status(client, lb)
        .every(Duration::from_millis(100))
        .within(within)
}

/// 450 apps and pages of 200 on every list (couplings and `POST
/// /filters/apps`): every page is followed and every app discovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_fifty_apps_are_found_through_every_paged_list() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("big");
    api.set_page_size_cap(200);
    let mut pins = Vec::new();
    for i in 0..450 {
        let name = format!("bulk-{i:03}");
        let host = format!("{name}.bulk.test");
        api.add_app(AppFixture::new(
            &name,
            &pipeline,
            &format!("http://{host}/"),
        ));
        pins.push(host);
    }
    let pins: Vec<(&str, &str)> = pins.iter().map(|h| (h.as_str(), "127.0.0.1")).collect();
    let started = Instant::now();
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("DISCOVERY_INTERVAL", "2")
        .health_check_interval("60")
        .resolve(&pins)
        .start()
        .await;
    let client = common::http_client();
    let took = poll(&client, &lb, Duration::from_secs(30))
        .until("450 apps known", |s| s["backends_total"] == 450)
        .await
        .after;
    let requests = api.requests();
    let pages = |method: &str, suffix: &str| {
        requests
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .count()
    };
    let (couplings, filters) = (
        pages("GET", "/pipeline-couplings"),
        pages("POST", "/filters/apps"),
    );
    println!(
        "450 apps discovered {:?} after start ({took:?} after listening) with {} API requests: \
         {couplings} couplings pages, {filters} filters/apps pages",
        started.elapsed(),
        requests.len()
    );
    assert!(couplings >= 3, "couplings pages: {couplings}");
    assert_eq!(filters, 3, "filters/apps pages (450 apps, 200 a page)");
    let snapshot = status(&client, &lb).await;
    assert_eq!(snapshot["discovery"]["failed_rounds"], 0, "{}", lb.output());
}

/// 1,001 apps against the fake's own page size (the 1,000 the balancer
/// asks for): the second page of couplings and of `POST /filters/apps` is
/// followed, and every app discovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_past_one_page_of_a_thousand_couplings_is_found_whole() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("huge");
    let mut hosts = Vec::new();
    for i in 0..1001 {
        let name = format!("app-{i:04}");
        let host = format!("{name}.page.test");
        api.add_app(AppFixture::new(
            &name,
            &pipeline,
            &format!("http://{host}/"),
        ));
        hosts.push(host);
    }
    let pins: Vec<(&str, &str)> = hosts.iter().map(|h| (h.as_str(), "127.0.0.1")).collect();
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("DISCOVERY_INTERVAL", "2")
        .health_check_interval("60")
        .resolve(&pins)
        .start()
        .await;
    let client = common::http_client();
    let took = poll(&client, &lb, Duration::from_secs(40))
        .until("1,001 apps known", |s| s["backends_total"] == 1001)
        .await
        .after;
    let requests = api.requests();
    let couplings: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/pipeline-couplings"))
        .collect();
    println!(
        "1,001 apps known {took:?} after listening, {} API requests",
        requests.len()
    );
    assert!(couplings.len() >= 2, "one page of couplings only");
    assert!(
        couplings[1]
            .header("range")
            .is_some_and(|range| range.starts_with("id ]")),
        "the second page asks from the first page's last id: {:?}",
        couplings[1].header("range")
    );
}

/// A coupled app the API leaves out of `POST /filters/apps` is logged once by
/// id and left out; the others are served, and their details still refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupled_app_the_api_does_not_return_is_left_out_and_the_rest_keep_flowing() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let one = TestBackend::start_app(&api, &pipeline, "one").await;
    let _two = TestBackend::start_app(&api, &pipeline, "two").await;
    let ghost = TestBackend::start_app(&api, &pipeline, "ghost").await;
    let ghost_id = api.app_id("ghost").expect("ghost exists");
    api.set_hidden(&ghost_id, true);
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .config("app_refresh_interval_seconds", "1")
        .start()
        .await;
    let client = common::http_client();
    poll(&client, &lb, Duration::from_secs(10))
        .until("two apps healthy", |s| s["backends_healthy"] == 2)
        .await;

    // Known apps are still refreshed: maintenance on `one` is noticed.
    let one_id = api.app_id("one").expect("one exists");
    api.set_maintenance(&one_id, true);
    poll(&client, &lb, Duration::from_secs(10))
        .until("`one` left out for maintenance", |s| {
            s["backends_total"] == 1 && app_entry(s, "two").is_some()
        })
        .await;
    for i in 0..10 {
        assert_eq!(
            common::get(&client, &lb.url_for(&format!("/flow/{i}")))
                .await
                .status,
            200
        );
    }
    assert_eq!(ghost.count_to("/flow/"), 0);
    assert_eq!(one.count_to("/flow/"), 0);
    let left_out = lb.lines_with(&format!("app id={ghost_id} is coupled"));
    assert_eq!(left_out.len(), 1, "{}", lb.output());
    assert_eq!(status(&client, &lb).await["discovery"]["failed_rounds"], 0);
}

/// With app lookups one by one, a 403 on one app and a 404 on another leave
/// those two out; the third is served and no round fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_or_404_on_one_apps_lookup_leaves_only_that_app_out() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let served = TestBackend::start_app(&api, &pipeline, "served").await;
    let _forbidden = TestBackend::start_app(&api, &pipeline, "forbidden").await;
    let _gone = TestBackend::start_app(&api, &pipeline, "gone").await;
    let forbidden = api.app_id("forbidden").expect("app");
    let gone = api.app_id("gone").expect("app");
    // No bulk lookup: the balancer falls back to GET /apps/{id}.
    api.set_failure_on("/filters/apps", Failure::Status(404));
    api.set_failure_on(&format!("/apps/{forbidden}"), Failure::Status(403));
    api.set_hidden(&gone, true);
    let lb = LbBuilder::pipeline(&api, pipeline.as_str()).start().await;
    let client = common::http_client();
    poll(&client, &lb, Duration::from_secs(10))
        .until("the served app alone", |s| {
            s["backends_healthy"] == 1 && app_entry(s, "served").is_some()
        })
        .await;
    for i in 0..5 {
        assert_eq!(
            common::get(&client, &lb.url_for(&format!("/only/{i}")))
                .await
                .status,
            200
        );
    }
    assert_eq!(served.count_to("/only/"), 5);
    // A few more rounds: each left-out app is logged once and no round fails.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snapshot = status(&client, &lb).await;
    assert_eq!(snapshot["discovery"]["failed_rounds"], 0, "{}", lb.output());
    for id in [&forbidden, &gone] {
        assert_eq!(
            lb.lines_with(&format!("app id={id} is coupled")).len(),
            1,
            "{}",
            lb.output()
        );
    }
}

/// A round that would remove every app (a stage renamed by mistake) is held
/// and shown in status while traffic flows; the next round that says the
/// same applies it. Removing one app of three is immediate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_that_would_empty_the_balancer_waits_for_the_next_one_to_agree() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let names = ["keep-1", "keep-2", "keep-3"];
    let mut backends = Vec::new();
    for name in names {
        backends.push(TestBackend::start_app(&api, &pipeline, name).await);
    }
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("DISCOVERY_INTERVAL", "1.5")
        .start()
        .await;
    let client = common::http_client();
    poll(&client, &lb, Duration::from_secs(10))
        .until("three healthy", |s| s["backends_healthy"] == 3)
        .await;

    // One of three leaves: applied at the next round, no hold.
    let first = api.app_id("keep-1").expect("app");
    api.decouple_app(&first);
    poll(&client, &lb, Duration::from_secs(10))
        .until("keep-1 removed", |s| s["backends_total"] == 2)
        .await;
    assert!(lb.lines_with("discovery holds a removal").is_empty());

    // Every remaining app moves to another stage at once.
    for name in &names[1..] {
        api.set_stage(&api.app_id(name).expect("app"), "staging");
    }
    poll(&client, &lb, Duration::from_secs(10))
        .until("the removal held", |s| {
            s["discovery"]["shrink_pending"]["removing"]
                .as_array()
                .is_some_and(|r| r.len() == 2)
        })
        .await;
    let snapshot = status(&client, &lb).await;
    assert_eq!(snapshot["backends_total"], 2, "held, not applied");
    for i in 0..6 {
        assert_eq!(
            common::get(&client, &lb.url_for(&format!("/held/{i}")))
                .await
                .status,
            200
        );
    }
    poll(&client, &lb, Duration::from_secs(10))
        .until("the removal confirmed", |s| {
            s["backends_total"] == 0 && s["discovery"]["shrink_pending"].is_null()
        })
        .await;
    let held = lb.lines_with("discovery holds a removal");
    assert_eq!(held.len(), 1, "{}", lb.output());
    println!("{}", held[0]);
    assert!(held[0].contains("removing=2 of known=2"), "{}", held[0]);
    assert_eq!(lb.lines_with("discovery confirmed a removal").len(), 1);
}

/// An app failing its checks stays out when it is scaled from 1 to 3 dynos:
/// its health belongs to the app, not to Pingora's (address, weight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_failing_its_checks_stays_out_when_it_is_scaled() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let sick = TestBackend::start_app(&api, &pipeline, "sick").await;
    let well = TestBackend::start_app(&api, &pipeline, "well").await;
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .health_check_interval("0.3")
        .health_check_path(HEALTH_PATH)
        .config("app_refresh_interval_seconds", "0.5")
        .start()
        .await;
    let client = common::http_client();
    poll(&client, &lb, Duration::from_secs(10))
        .until("both healthy", |s| s["backends_healthy"] == 2)
        .await;
    sick.set_answer_for("/health", Answer::Unavailable);
    poll(&client, &lb, Duration::from_secs(10))
        .until("sick failing its checks", |s| {
            app_entry(s, "sick").is_some_and(|b| b["state"] == "failing checks")
        })
        .await;

    api.set_web_quantity(&api.app_id("sick").expect("app"), Some(3));
    poll(&client, &lb, Duration::from_secs(10))
        .until("sick reweighted to 3", |s| {
            app_entry(s, "sick").is_some_and(|b| b["weight"] == 3)
        })
        .await;
    let snapshot = status(&client, &lb).await;
    let entry = app_entry(&snapshot, "sick").expect("sick known");
    assert_eq!(
        entry["state"],
        "failing checks",
        "{entry:#}\n{}",
        lb.output()
    );
    for i in 0..20 {
        assert_eq!(
            common::get(&client, &lb.url_for(&format!("/scaled/{i}")))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        sick.count_to("/scaled/"),
        0,
        "a failing app got traffic after scaling"
    );
    assert_eq!(well.count_to("/scaled/"), 20);
}

/// Changes made through the Platform API reach a running balancer: weight
/// follows a dyno count within the refresh bound, maintenance takes an app
/// out, a newly coupled app joins and an uncoupled one leaves (its metric
/// series with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dyno_counts_maintenance_and_couplings_changed_at_run_time_are_followed() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let _a = TestBackend::start_app(&api, &pipeline, "alpha").await;
    let _b = TestBackend::start_app(&api, &pipeline, "beta").await;
    // Refresh bound (README): the stalest formation once a round when older
    // than app_refresh_interval, so each of N apps within about
    // max(app_refresh_interval, N × DISCOVERY_INTERVAL) plus one round.
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .config("app_refresh_interval_seconds", "1")
        .start()
        .await;
    let client = common::http_client();
    poll(&client, &lb, Duration::from_secs(10))
        .until("two healthy", |s| s["backends_healthy"] == 2)
        .await;

    let alpha = api.app_id("alpha").expect("app");
    api.set_web_quantity(&alpha, Some(4));
    let took = poll(&client, &lb, Duration::from_secs(5))
        .until("alpha weighs 4", |s| {
            app_entry(s, "alpha").is_some_and(|b| b["weight"] == 4)
        })
        .await
        .after;
    println!("dyno count 1 -> 4 seen as weight 4 after {took:?}");

    let beta = api.app_id("beta").expect("app");
    api.set_maintenance(&beta, true);
    poll(&client, &lb, Duration::from_secs(5))
        .until("beta out for maintenance", |s| {
            app_entry(s, "beta").is_none()
        })
        .await;
    api.set_maintenance(&beta, false);

    let _g = TestBackend::start_app(&api, &pipeline, "gamma").await;
    poll(&client, &lb, Duration::from_secs(5))
        .until("gamma joined", |s| {
            app_entry(s, "gamma").is_some_and(|b| b["healthy"] == true)
        })
        .await;
    for i in 0..12 {
        common::get(&client, &lb.url_for(&format!("/series/{i}"))).await;
    }
    let metrics = common::get(&client, &lb.url_for("/_lb/metrics")).await.body;
    assert!(metrics.contains("backend=\"gamma\""), "gamma has series");

    api.decouple_app(&api.app_id("gamma").expect("app"));
    poll(&client, &lb, Duration::from_secs(5))
        .until("gamma left", |s| app_entry(s, "gamma").is_none())
        .await;
    let metrics = common::get(&client, &lb.url_for("/_lb/metrics")).await.body;
    let left: Vec<&str> = metrics
        .lines()
        .filter(|line| line.contains("backend=\"gamma\""))
        .collect();
    assert!(left.is_empty(), "series of an app that left: {left:#?}");
}

/// Below the rate-limit reserve, discovery rounds come 4× less often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_rate_limit_slows_the_rounds_down_four_times() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let _a = TestBackend::start_app(&api, &pipeline, "alpha").await;
    let lb = LbBuilder::pipeline(&api, pipeline.as_str()).start().await;
    let client = common::http_client();
    poll(&client, &lb, Duration::from_secs(10))
        .until("one healthy", |s| s["backends_healthy"] == 1)
        .await;
    let rounds = |s: &Value| s["discovery"]["rounds"].as_u64().unwrap_or(0);
    let window = Duration::from_secs(3);

    let before = rounds(&status(&client, &lb).await);
    tokio::time::sleep(window).await;
    let normal = rounds(&status(&client, &lb).await) - before;

    api.set_rate_limit_remaining(100);
    // One round at the normal pace reads the low figure.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = rounds(&status(&client, &lb).await);
    tokio::time::sleep(window).await;
    let slowed = rounds(&status(&client, &lb).await) - before;
    println!("rounds in {window:?}: {normal} at 0.3 s, {slowed} below the reserve");
    assert!(normal >= 6, "only {normal} rounds at the normal pace");
    assert!(
        slowed * 3 <= normal,
        "{slowed} rounds slowed against {normal}\n{}",
        lb.output()
    );
    assert_eq!(lb.lines_with("discovery slows down 4x").len(), 1);
}

/// With the Platform API stalled, an app that starts failing its checks is
/// evicted within `fall × interval` plus one interval: checks run on their
/// own schedule, not behind discovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_keep_their_pace_while_the_api_stalls() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let sick = TestBackend::start_app(&api, &pipeline, "sick").await;
    let _well = TestBackend::start_app(&api, &pipeline, "well").await;
    let interval = Duration::from_millis(500);
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .health_check_interval("0.5")
        .health_check_path(HEALTH_PATH)
        .start()
        .await;
    let client = common::http_client();
    poll(&client, &lb, Duration::from_secs(10))
        .until("both healthy", |s| s["backends_healthy"] == 2)
        .await;

    api.set_failure(Failure::Stall(Duration::from_secs(40)));
    // Let a discovery round start and hang on the stalled API.
    tokio::time::sleep(Duration::from_millis(600)).await;
    sick.set_answer_for("/health", Answer::Unavailable);
    let bound = interval * 3; // fall (2) × interval + one interval
    let took = poll(&client, &lb, Duration::from_secs(10))
        .until("sick evicted", |s| {
            app_entry(s, "sick").is_some_and(|b| b["healthy"] == false)
        })
        .await
        .after;
    println!("evicted {took:?} after its checks started failing (bound {bound:?})");
    // Scheduling slack for a busy 2-core machine on top of the bound.
    assert!(
        took <= bound + Duration::from_secs(1),
        "evicted after {took:?}, bound {bound:?}\n{}",
        lb.output()
    );
    api.clear_failures();
}
