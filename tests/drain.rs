//! Drain: an app that leaves (uncoupled, in maintenance, scaled to zero)
//! takes no new request from the moment the balancer knows, requests in
//! flight to it finish, and its sticky users move with one new cookie.
//! (Upgraded connections and their drain timeout: `websocket.rs`; a release
//! without preboot: `webhooks.rs`.)

mod common;

use std::time::Duration;

use common::backend::BACKEND_HEADER;
use common::heroku_api::{AppFixture, FakeHerokuApi};
use common::lb::LbBuilder;
use common::slow_backend::SlowBackend;
use common::status::poll_status;

const KEY: &str = "hrku-test-key-drain-8e21-do-not-log";

/// Two apps answering `/slow/` after 2 s; the first leaves the stage while
/// a slow request is at it: that request is answered 200, and no request
/// after the balancer knows goes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_leaves_takes_no_new_request_and_finishes_those_in_flight() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("drain");
    let slow = |path: &str| path.starts_with("/slow/").then_some(Duration::from_secs(2));
    let apps = [
        SlowBackend::start("drain-1", slow).await,
        SlowBackend::start("drain-2", slow).await,
    ];
    let ids: Vec<_> = apps
        .iter()
        .map(|app| {
            api.add_app(AppFixture::new(
                app.name(),
                &pipeline,
                &format!("{}/", app.url()),
            ))
        })
        .collect();
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .health_check_path("/health")
        .start()
        .await;
    let client = common::http_client();
    poll_status(&client, &lb).until_healthy(2).await;
    // Round robin: one slow request at each app.
    let mut slow_requests = tokio::task::JoinSet::new();
    for n in 0..2 {
        let (client, url) = (client.clone(), lb.url_for(&format!("/slow/{n}")));
        slow_requests.spawn(async move { common::send(client.get(url)).await });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        apps[0].count_to("/slow/"),
        1,
        "no slow request at the first app"
    );
    api.decouple_app(&ids[0]);
    poll_status(&client, &lb)
        .until("the first app gone", |s| s["backends_total"] == 1)
        .await;
    for n in 0..20 {
        let reply = common::get(&client, &lb.url_for(&format!("/after/{n}"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply
                .headers
                .get(BACKEND_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("drain-2")
        );
    }
    assert_eq!(apps[0].count_to("/after/"), 0);
    while let Some(reply) = slow_requests.join_next().await {
        let reply = reply.expect("a request task").expect("answered");
        assert_eq!(
            reply.status, 200,
            "a request in flight to the leaving app: {reply:?}"
        );
    }
}

/// A sticky user of an app that goes into maintenance moves to another app with one new cookie, and stays there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_of_an_app_that_leaves_move_with_one_new_cookie() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("sticky-drain");
    let apps = [
        SlowBackend::start("sticky-drain-1", |_| None).await,
        SlowBackend::start("sticky-drain-2", |_| None).await,
    ];
    let ids: Vec<_> = apps
        .iter()
        .map(|app| {
            api.add_app(AppFixture::new(
                app.name(),
                &pipeline,
                &format!("{}/", app.url()),
            ))
        })
        .collect();
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .health_check_path("/health")
        .env("LB_STICKY_COOKIE", "lb")
        // Maintenance is in an app's details: looked at every second here
        // (a webhook would say it at once).
        .env("LB_APP_REFRESH_INTERVAL_SECONDS", "1")
        .start()
        .await;
    let client = common::http_client();
    poll_status(&client, &lb).until_healthy(2).await;
    let mut cookie = None;
    for n in 0..10 {
        let reply = common::get(&client, &lb.url_for(&format!("/pick/{n}"))).await;
        if reply
            .headers
            .get(BACKEND_HEADER)
            .is_some_and(|v| v == "sticky-drain-1")
        {
            cookie = reply
                .headers
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or_default().to_string());
            break;
        }
    }
    let cookie = cookie.expect("a cookie for the first app");
    api.set_maintenance(&ids[0], true);
    poll_status(&client, &lb)
        .until("the app in maintenance gone", |s| s["backends_total"] == 1)
        .await;
    let moved = common::send(client.get(lb.url_for("/moved")).header("Cookie", &cookie))
        .await
        .expect("answered");
    assert_eq!(
        moved
            .headers
            .get(BACKEND_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("sticky-drain-2")
    );
    let new_cookies: Vec<_> = moved.headers.get_all("set-cookie").iter().collect();
    assert_eq!(new_cookies.len(), 1, "{new_cookies:?}");
    let new_cookie = new_cookies[0]
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    for n in 0..5 {
        let reply = common::send(
            client
                .get(lb.url_for(&format!("/stays/{n}")))
                .header("Cookie", &new_cookie),
        )
        .await
        .expect("answered");
        assert_eq!(
            reply
                .headers
                .get(BACKEND_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("sticky-drain-2")
        );
        assert!(
            reply.headers.get("set-cookie").is_none(),
            "another new cookie"
        );
    }
}
