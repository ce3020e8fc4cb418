//! HTTPS backends behind one router address are told apart by SNI and Host,
//! and their certificates are checked.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::lb::{LbBuilder, LbProcess};
use common::router::TestRouter;

/// Two apps sharing one router IP:port each get about half the traffic, with their own SNI and Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_behind_one_router_address_each_get_their_own_sni_and_host() {
    let router = TestRouter::start(&["app-one.test", "app-two.test"]).await;
    let lb = LbBuilder::new()
        .backends(&[
            router.url_for("app-one.test"),
            router.url_for("app-two.test"),
        ])
        .resolve(&[("app-one.test", "127.0.0.1"), ("app-two.test", "127.0.0.1")])
        .ca_file(common::ca_pem())
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    let mut bodies = BTreeMap::new();
    for i in 0..40 {
        let reply = common::get(&client, &lb.url_for(&format!("/sni/{i}"))).await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        *bodies.entry(reply.body).or_insert(0) += 1;
    }

    let port = router.port();
    for hostname in ["app-one.test", "app-two.test"] {
        let app = router.app(hostname);
        let count = app.count_to("/sni/");
        assert!(
            (18..=22).contains(&count),
            "{hostname} got {count} of 40 requests (answers by body: {bodies:?})"
        );
        assert_eq!(bodies.get(hostname), Some(&count), "bodies: {bodies:?}");
        // Every request to the app, health checks included, carried its own SNI.
        assert_eq!(app.seen_snis(), vec![Some(hostname.to_string())]);
        for request in app.requests() {
            assert_eq!(
                common::router::hostname_of(&request.host),
                hostname,
                "{request:?}"
            );
        }
        for request in app.requests_to("/sni/") {
            assert_eq!(request.host, format!("{hostname}:{port}"), "{request:?}");
        }
    }
    assert!(
        router.misdirected().is_empty(),
        "{:?}",
        router.misdirected()
    );
    assert!(
        router.unknown_host().is_empty(),
        "{:?}",
        router.unknown_host()
    );
}

/// Upstream certificates are verified: a hostname the router's certificate does not cover is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_hostname_missing_from_the_certificate_is_never_answered_successfully() {
    // The router would answer wrong.example with 200 if the handshake were accepted.
    let router = TestRouter::start(&["wrong.example"]).await;
    let lb = LbBuilder::new()
        .backends(&[router.url_for("wrong.example")])
        .resolve(&[("wrong.example", "127.0.0.1")])
        .ca_file(common::ca_pem())
        .start()
        .await;
    assert_every_request_is_refused(&lb, &router, "wrong.example").await;
}

/// Upstream certificates are verified against SSL_CERT_FILE: a router certificate from another CA is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_certificate_from_an_untrusted_ca_is_never_answered_successfully() {
    let router = TestRouter::start(&["app-one.test"]).await;
    let lb = LbBuilder::new()
        .backends(&[router.url_for("app-one.test")])
        .resolve(&[("app-one.test", "127.0.0.1")])
        .ca_file(common::other_ca_pem())
        .start()
        .await;
    assert_every_request_is_refused(&lb, &router, "app-one.test").await;
}

/// Every request through `lb` fails with 502/503, the balancer did reach the
/// router but gave up during the TLS handshake, and the app saw nothing.
async fn assert_every_request_is_refused(lb: &LbProcess, router: &TestRouter, hostname: &str) {
    let client = common::http_client();
    for i in 0..10 {
        let reply = common::get(&client, &lb.url_for(&format!("/verify/{i}"))).await;
        assert!(
            reply.status == 502 || reply.status == 503,
            "request {i} to {hostname} answered {reply:?}; stderr:\n{}",
            lb.stderr()
        );
    }
    common::wait_until(
        "the router to record a handshake the balancer broke off",
        100,
        Duration::from_millis(20),
        || async { router.failed_handshakes() > 0 },
    )
    .await;
    assert_eq!(router.app(hostname).request_count(), 0);
}
