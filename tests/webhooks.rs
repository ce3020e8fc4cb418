//! Push discovery from Heroku app webhooks. With `LB_WEBHOOK_SECRET` the
//! balancer receives deliveries at `/_lb/hooks/heroku`, verifies each
//! signature over the raw body, answers at once and looks at the app the
//! event names (one or two API calls): a scale is seen within 2 s, not at
//! the next poll. Bad signatures, oversized bodies and repeats change
//! nothing. With `LB_WEBHOOK_URL` every app is subscribed once (listed
//! first) and an app that leaves is unsubscribed; a key that may not manage
//! webhooks is one warning, and polling goes on. A release without preboot
//! drains its app until its checks pass, then slow-starts it.

mod common;

use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::heroku_api::{
    post_delivery, webhook_signature, AppFixture, AppId, FakeHerokuApi, PipelineId,
};
use common::lb::{LbBuilder, LbProcess};
use common::status::{poll_status, status};
use serde_json::{json, Value};

const KEY: &str = "hrku-test-key-webhooks-3f9a-do-not-log";
const SECRET: &str = "whsec-test-secret-of-the-subscriptions";
/// Every kind of event the balancer acts on.
const INCLUDE: [&str; 4] = ["api:formation", "api:release", "api:app", "dyno"];

/// `count` apps `{prefix}-N` and a balancer over them that polls only every
/// minute (so what changes within seconds came by webhook), subscribed.
async fn setup(
    prefix: &str,
    count: usize,
    extra: impl FnOnce(LbBuilder) -> LbBuilder,
) -> (
    FakeHerokuApi,
    PipelineId,
    Vec<TestBackend>,
    LbProcess,
    reqwest::Client,
) {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline(prefix);
    let mut apps = Vec::new();
    for i in 1..=count {
        apps.push(TestBackend::start_app(&api, &pipeline, &format!("{prefix}-{i}")).await);
    }
    let lb = extra(
        LbBuilder::pipeline(&api, pipeline.as_str())
            .env("DISCOVERY_INTERVAL", "60")
            .env("HEALTH_CHECK_INTERVAL", "1")
            .env("HEALTH_CHECK_PATH", "/health")
            .env("LB_WEBHOOK_SECRET", SECRET),
    )
    .start()
    .await;
    let client = common::http_client();
    poll_status(&client, &lb).until_healthy(count as u64).await;
    (api, pipeline, apps, lb, client)
}

fn hook_url(lb: &LbProcess) -> String {
    lb.url_for("/_lb/hooks/heroku")
}

fn subscribe_all(api: &FakeHerokuApi, lb: &LbProcess, names: &[&str]) -> Vec<AppId> {
    names
        .iter()
        .map(|name| {
            let id = api.app_id(name).expect("the app exists");
            api.subscribe(&id, &hook_url(lb), SECRET, &INCLUDE);
            id
        })
        .collect()
}

fn weight(status: &Value, name: &str) -> Option<u64> {
    status["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)?["weight"]
        .as_u64()
}

/// An app scaled from 1 to 3 dynos weighs 3 within 2 s of its api:formation event, for one or two API calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formation_event_reweights_the_app_within_2_s() {
    let (api, _pipeline, _apps, lb, client) = setup("scale", 2, |b| b).await;
    let ids = subscribe_all(&api, &lb, &["scale-1", "scale-2"]);
    let mark = api.mark();
    let sent = Instant::now();
    api.set_web_quantity(&ids[1], Some(3));
    let seen = poll_status(&client, &lb)
        .since(sent)
        .within(Duration::from_secs(2))
        .until("scale-2 at weight 3", |s| weight(s, "scale-2") == Some(3))
        .await;
    let calls: Vec<String> = api
        .requests_since(mark)
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    println!(
        "weight 3 {:?} after the event, with API calls {calls:?}",
        seen.after
    );
    assert!(!calls.is_empty() && calls.len() <= 2, "{calls:?}");
    assert!(
        calls.iter().all(|call| call.contains(ids[1].as_str())),
        "{calls:?}"
    );
}

/// An app first seen without a web dyno serves within 2 s of the event that gives it one, plus its first check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_scaled_from_0_to_1_serves_within_2_s_plus_its_first_check() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("first-dyno");
    let _serving = TestBackend::start_app(&api, &pipeline, "first-dyno-1").await;
    let empty = TestBackend::start("first-dyno-2").await;
    let id = api.add_app(
        AppFixture::new("first-dyno-2", &pipeline, &empty.web_url()).web_quantity(Some(0)),
    );
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("DISCOVERY_INTERVAL", "60")
        .env("HEALTH_CHECK_INTERVAL", "1")
        .env("HEALTH_CHECK_PATH", "/health")
        .env("LB_WEBHOOK_SECRET", SECRET)
        .start()
        .await;
    let client = common::http_client();
    poll_status(&client, &lb).until_healthy(1).await;
    api.subscribe(&id, &hook_url(&lb), SECRET, &INCLUDE);
    let sent = Instant::now();
    api.set_web_quantity(&id, Some(1));
    let seen = poll_status(&client, &lb)
        .since(sent)
        .within(Duration::from_secs(4))
        .until("the app with its first dyno healthy", |s| {
            s["backends_healthy"] == 2
        })
        .await;
    println!("first dyno: serving {:?} after the event", seen.after);
    assert!(seen.after < Duration::from_secs(3), "{:?}", seen.after);
}

/// A delivery with a bad signature, or none, gets 401; one over 1 MiB gets 413; a repeat is dropped; none changes anything, and each is counted by outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_oversized_bodies_and_repeats_change_nothing() {
    let (api, _pipeline, _apps, lb, client) = setup("hostile", 2, |b| b).await;
    let ids = subscribe_all(&api, &lb, &["hostile-1", "hostile-2"]);
    let mark = api.mark();
    // Heroku's shape, a real app, a scale to 5: but signed with another secret.
    api.set_web_quantity_quietly(&ids[0], Some(5));
    let body = json!({
        "resource": "formation",
        "action": "update",
        "data": api.event_data(&ids[0], json!({"quantity": 5, "type": "web"})),
        "webhook_metadata": {"delivery": {"id": "forged-1"}},
    })
    .to_string();
    let forged = webhook_signature("not-the-secret", body.as_bytes());
    assert_eq!(
        post_delivery(&hook_url(&lb), body.as_bytes(), Some(&forged)),
        401
    );
    assert_eq!(post_delivery(&hook_url(&lb), body.as_bytes(), None), 401);
    // Four times the limit: more than loopback's socket buffers hold, so the balancer must read
    // the rest (a lingering close) for the sender to see the 413 instead of a reset.
    let huge = vec![b' '; 4 * 1024 * 1024];
    let huge_signature = webhook_signature(SECRET, &huge);
    assert_eq!(
        post_delivery(&hook_url(&lb), &huge, Some(&huge_signature)),
        413
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        weight(&status(&client, &lb).await, "hostile-1"),
        Some(1),
        "a forged event changed the weight"
    );
    assert!(
        api.requests_since(mark).is_empty(),
        "a refused delivery cost API calls"
    );
    // The same event twice: one look.
    let statuses = api.deliver_twice(
        &ids[1],
        "app",
        "update",
        api.event_data(&ids[1], json!({}))["app"].clone(),
    );
    assert_eq!(statuses, vec![202, 202]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let looks = api.requests_since(mark).len();
    assert_eq!(
        looks,
        1,
        "{:?}",
        api.requests_since(mark)
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
    let metrics = common::get(&client, &lb.url_for("/_lb/metrics")).await.body;
    for (outcome, count) in [
        ("bad_signature", 2),
        ("too_large", 1),
        ("duplicate", 1),
        ("accepted", 1),
    ] {
        let line = format!("heroku_lb_webhook_deliveries_total{{outcome=\"{outcome}\"}} {count}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    let refusals = lb.lines_with("webhook delivery refused");
    assert_eq!(
        refusals.len(),
        1,
        "refusals are logged once a minute: {refusals:?}"
    );
    assert!(!lb.output().contains(SECRET), "the secret was logged");
    let snapshot = status(&client, &lb).await;
    println!("status webhooks: {}", snapshot["webhooks"]);
    assert_eq!(snapshot["webhooks"]["last_app"], "hostile-2");
    assert!(snapshot["webhooks"]["last_delivery_age_seconds"]
        .as_u64()
        .is_some());
}

/// With LB_WEBHOOK_URL every app is subscribed exactly once (one made elsewhere is kept), and an app that leaves the stage loses the subscription the balancer made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_app_is_subscribed_once_and_an_app_that_leaves_is_unsubscribed() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("subscribe");
    let mut apps = Vec::new();
    for i in 1..=3 {
        apps.push(TestBackend::start_app(&api, &pipeline, &format!("subscribe-{i}")).await);
    }
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let hook = format!("{public}/_lb/hooks/heroku");
    // Another balancer dyno subscribed the first app already.
    let first = api.app_id("subscribe-1").expect("exists");
    api.subscribe(&first, &hook, SECRET, &INCLUDE);
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("PORT", port.to_string())
        .env("HEALTH_CHECK_PATH", "/health")
        .env("LB_WEBHOOK_SECRET", SECRET)
        .env("LB_WEBHOOK_URL", &public)
        .start()
        .await;
    let client = common::http_client();
    poll_status(&client, &lb).until_healthy(3).await;
    let ids: Vec<AppId> = (1..=3)
        .map(|i| api.app_id(&format!("subscribe-{i}")).expect("exists"))
        .collect();
    common::wait_until(
        "a subscription on every app",
        100,
        Duration::from_millis(100),
        || async { ids.iter().all(|id| api.subscriptions(id).len() == 1) },
    )
    .await;
    for id in &ids {
        assert_eq!(api.subscriptions(id), vec![hook.clone()], "{id}");
    }
    let created = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/webhooks"))
        .count();
    assert_eq!(
        created, 2,
        "the first app's own subscription was duplicated"
    );
    // The subscription works: a scale is seen within 2 s.
    let sent = Instant::now();
    api.set_web_quantity(&ids[2], Some(2));
    poll_status(&client, &lb)
        .since(sent)
        .within(Duration::from_secs(2))
        .until("subscribe-3 at weight 2", |s| {
            weight(s, "subscribe-3") == Some(2)
        })
        .await;
    api.decouple_app(&ids[1]);
    common::wait_until(
        "the leaving app's subscription removed",
        100,
        Duration::from_millis(100),
        || async { api.subscriptions(&ids[1]).is_empty() },
    )
    .await;
}

/// A key that may not manage webhooks: one clear warning, and discovery goes on by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_may_not_manage_webhooks_is_one_warning_and_polling_goes_on() {
    let api = FakeHerokuApi::start(KEY);
    api.refuse_webhooks(true);
    let pipeline = api.add_pipeline("refused");
    let _first = TestBackend::start_app(&api, &pipeline, "refused-1").await;
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("HEALTH_CHECK_PATH", "/health")
        .env("LB_WEBHOOK_SECRET", SECRET)
        .env("LB_WEBHOOK_URL", "http://127.0.0.1:9")
        .start()
        .await;
    let client = common::http_client();
    poll_status(&client, &lb).until_healthy(1).await;
    let _second = TestBackend::start_app(&api, &pipeline, "refused-2").await;
    poll_status(&client, &lb).until_healthy(2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let warnings = lb.lines_with("webhook subscriptions off");
    println!("{warnings:?}");
    assert_eq!(warnings.len(), 1, "{}", lb.output());
}

/// A release without preboot drains the app (no new request) until its checks pass, then it slow-starts; with preboot it only slow-starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_without_preboot_drains_the_app_until_its_checks_pass() {
    let (api, _pipeline, apps, lb, client) = setup("release", 2, |b| {
        b.env("LB_HEALTH_CHECK_RISE", "2")
            .env("LB_SLOW_START_SECONDS", "30")
    })
    .await;
    let ids = subscribe_all(&api, &lb, &["release-1", "release-2"]);
    apps[0].set_answer_for("/health", common::backend::Answer::Unavailable);
    assert_eq!(api.release(&ids[0]), vec![202]);
    let drained = poll_status(&client, &lb)
        .within(Duration::from_secs(2))
        .until("release-1 draining", |s| {
            s["backends"].as_array().is_some_and(|b| {
                b.iter()
                    .any(|b| b["name"] == "release-1" && b["state"] == "draining")
            })
        })
        .await;
    println!("draining {:?} after the release", drained.after);
    let before = apps[0].count_to("/work");
    for n in 0..20 {
        let reply = common::get(&client, &lb.url_for(&format!("/work/{n}"))).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        apps[0].count_to("/work"),
        before,
        "a draining app got new requests"
    );
    // Its new dynos are up: checks pass, then it slow-starts.
    apps[0].set_answer_for("/health", common::backend::Answer::Normal);
    let back = poll_status(&client, &lb)
        .within(Duration::from_secs(10))
        .until("release-1 back, slow-starting", |s| {
            s["backends"].as_array().is_some_and(|b| {
                b.iter().any(|b| {
                    b["name"] == "release-1"
                        && b["state"] == "healthy"
                        && b["share_percent"].as_u64().unwrap_or(100) < 100
                })
            })
        })
        .await;
    println!("back {:?} later: {}", back.after, back.status["backends"]);
    // With preboot: no drain, a slow start at once.
    api.set_preboot(&ids[1], true);
    assert_eq!(api.release(&ids[1]), vec![202]);
    poll_status(&client, &lb)
        .within(Duration::from_secs(2))
        .until("release-2 slow-starting", |s| {
            s["backends"].as_array().is_some_and(|b| {
                b.iter().any(|b| {
                    b["name"] == "release-2"
                        && b["state"] == "healthy"
                        && b["share_percent"].as_u64().unwrap_or(100) < 100
                })
            })
        })
        .await;
}
