//! Discovery that one app cannot hold up. A round needs the pipeline and its
//! couplings; every per-app lookup fails on its own: the apps whose lookups
//! succeeded are served, the failed ones are looked up again next round,
//! and a 429 stops the round's remaining lookups without discarding what it
//! learned. The one spare request of a steady round goes to whatever is most
//! overdue, so no kind of refresh starves another, and an app out for lack
//! of web dynos is looked at every round.

mod common;

use std::time::Duration;

use common::backend::TestBackend;
use common::heroku_api::{AppFixture, Failure, FakeHerokuApi, PipelineId};
use common::lb::{LbBuilder, LbProcess};
use common::status::{poll_status, status};
use serde_json::Value;

const KEY: &str = "hrku-test-key-per-app-7c2e-do-not-log";

/// Poll `/_lb/status` up to `within` until `check` holds; how long that took.
async fn wait_status(
    client: &reqwest::Client,
    lb: &LbProcess,
    what: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    poll_status(client, lb)
        .every(Duration::from_millis(100))
        .within(within)
        .until(what, check)
        .await
        .after
}

/// The weight `/_lb/status` shows for the app called `name`, if it is known.
fn weight_of(snapshot: &Value, name: &str) -> Option<u64> {
    snapshot["backends"]
        .as_array()?
        .iter()
        .find(|backend| backend["name"] == name)?["weight"]
        .as_u64()
}

/// `count` backends coupled to `pipeline` as apps `{prefix}-1`, `{prefix}-2`, ...
async fn apps(
    api: &FakeHerokuApi,
    pipeline: &PipelineId,
    prefix: &str,
    count: usize,
) -> Vec<TestBackend> {
    let mut backends = Vec::new();
    for i in 1..=count {
        backends.push(TestBackend::start_app(api, pipeline, &format!("{prefix}-{i}")).await);
    }
    backends
}

/// Five apps, one of whose formation lookups answers 503: the other four are served within seconds, and the fifth joins once its lookup answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apps_failing_lookup_never_holds_up_the_others() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("five");
    let _apps = apps(&api, &pipeline, "five", 5).await;
    let broken = api.app_id("five-3").expect("five-3 exists");
    let formation = format!("/apps/{broken}/formation");
    api.set_failure_on(&formation, Failure::Status(503));
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("HEALTH_CHECK_INTERVAL", "1")
        .start()
        .await;
    let client = common::http_client();
    let took = wait_status(
        &client,
        &lb,
        "four apps served",
        Duration::from_secs(15),
        |s| s["backends_total"] == 4 && s["backends_healthy"] == 4,
    )
    .await;
    println!("4 of 5 apps served {took:?} after start while one lookup fails");
    let reply = common::get(&client, &lb.url_for("/served")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let snapshot = status(&client, &lb).await;
    let error = snapshot["discovery"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("formation") && error.contains("503"),
        "the failing lookup is shown: {snapshot:#}"
    );

    api.set_failure_on(&formation, Failure::None);
    wait_status(
        &client,
        &lb,
        "the fifth app joins",
        Duration::from_secs(15),
        |s| s["backends_total"] == 5,
    )
    .await;
}

/// A 429 on the 21st formation lookup of a first round over 60 apps stops the lookups still to start, and every app already looked up is served.
///
/// Only lookups already started when the 429's answer is read may reach the API after it: 8 run
/// at a time, and each that ends before the 429 is read makes room for one more, so at most
/// 2 × 8 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_midway_keeps_every_app_already_looked_up() {
    const LIMITED: usize = 21;
    const AFTER_AT_MOST: usize = 16;
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("sixty");
    let _apps = apps(&api, &pipeline, "sixty", 60).await;
    // Formations are the only `/apps/...` requests of a first round (details come in one `POST
    // /filters/apps`).
    api.fail_nth_on("/apps/", LIMITED as u32, Failure::RateLimited);
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("HEALTH_CHECK_INTERVAL", "60")
        .start()
        .await;
    let client = common::http_client();
    wait_status(
        &client,
        &lb,
        "apps known after a 429",
        Duration::from_secs(15),
        |s| s["backends_total"].as_u64().unwrap_or(0) > 0,
    )
    .await;
    // The next round waits at least a minute after a 429, so this is the first round's work.
    let formations = api
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/apps/"))
        .inspect(|r| assert!(r.path.ends_with("/formation/web"), "{}", r.path))
        .count();
    let snapshot = status(&client, &lb).await;
    let known = snapshot["backends_total"].as_u64().unwrap_or(0) as usize;
    let after = formations.saturating_sub(LIMITED);
    println!(
        "the 429 answered lookup {LIMITED} of 60; {after} lookups reached the API after it; \
         {known} apps served"
    );
    assert!(
        formations >= LIMITED && after <= AFTER_AT_MOST,
        "lookups went on after the 429: {formations} made in all"
    );
    assert_eq!(
        known,
        formations - 1,
        "every app whose lookup answered is served, the limited one is not: {snapshot:#}"
    );
    assert!(
        snapshot["discovery"]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("429")),
        "{snapshot:#}"
    );
}

/// With the details refresh due every round (refreshes every 0.5 s, rounds every second), the formation refresh still runs: an app scaled from 1 to 3 dynos weighs 3 within 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_kind_of_refresh_starves_another() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("refresh");
    let _apps = apps(&api, &pipeline, "refresh", 2).await;
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("DISCOVERY_INTERVAL", "1")
        .env("LB_APP_REFRESH_INTERVAL_SECONDS", "0.5")
        .env("HEALTH_CHECK_INTERVAL", "1")
        .start()
        .await;
    let client = common::http_client();
    wait_status(
        &client,
        &lb,
        "both apps known",
        Duration::from_secs(10),
        |s| s["backends_total"] == 2,
    )
    .await;
    let scaled = api.app_id("refresh-2").expect("refresh-2 exists");
    api.set_web_quantity(&scaled, Some(3));
    let took = wait_status(
        &client,
        &lb,
        "refresh-2 weighs 3",
        Duration::from_secs(15),
        |s| weight_of(s, "refresh-2") == Some(3),
    )
    .await;
    println!("scaled to 3 dynos: weight 3 after {took:?}");
}

/// An app first seen with no web dyno is looked at again on every round's spare request: scaled to one dyno, it serves within seconds, not after the 10-minute refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_out_for_lack_of_dynos_is_looked_at_every_round() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("zero");
    let serving = TestBackend::start_app(&api, &pipeline, "zero-1").await;
    let empty = TestBackend::start("zero-2").await;
    let empty_id =
        api.add_app(AppFixture::new("zero-2", &pipeline, &empty.web_url()).web_quantity(Some(0)));
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("HEALTH_CHECK_INTERVAL", "1")
        .start()
        .await;
    let client = common::http_client();
    wait_status(
        &client,
        &lb,
        "one app served",
        Duration::from_secs(10),
        |s| s["backends_total"] == 1,
    )
    .await;
    api.set_web_quantity(&empty_id, Some(1));
    let took = wait_status(
        &client,
        &lb,
        "zero-2 served",
        Duration::from_secs(10),
        |s| s["backends_total"] == 2 && s["backends_healthy"] == 2,
    )
    .await;
    println!("first dyno of zero-2: serving after {took:?} (app refresh interval: 600 s)");
    assert!(empty.count_to("/") > 0 || serving.count_to("/") > 0);
}
