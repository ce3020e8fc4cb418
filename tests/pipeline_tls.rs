//! End to end as on Heroku: the fake Platform API lists three apps whose
//! `web_url`s are `https://app-{one,two,three}.test:PORT/`, all served by ONE
//! TLS router port that picks the app by Host and refuses a request whose SNI
//! differs. The balancer pins the names to 127.0.0.1 (`LB_RESOLVE`) and
//! trusts the test CA (`SSL_CERT_FILE`).

mod common;

use std::time::Duration;

use common::heroku_api::{AppFixture, FakeHerokuApi};
use common::lb::LbBuilder;
use common::router::{hostname_of, TestRouter};

const KEY: &str = "hrku-test-key-tls-2c81d0";
const APPS: [&str; 3] = ["app-one.test", "app-two.test", "app-three.test"];

/// Three pipeline apps on one router port share traffic evenly, each with its own SNI and Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_apps_behind_one_router_port_each_get_their_own_sni_and_host() {
    let router = TestRouter::start(&APPS).await;
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    for hostname in APPS {
        let name = hostname.trim_end_matches(".test");
        let url = format!("{}/", router.url_for(hostname));
        api.add_app(AppFixture::new(name, &pipeline, &url));
    }

    let lb = LbBuilder::pipeline(&api, "shop")
        .resolve(&APPS.map(|host| (host, "127.0.0.1")))
        .ca_file(common::ca_pem())
        .start()
        .await;
    let client = common::http_client();

    let reached = common::poll_until(100, Duration::from_millis(50), || async {
        for i in 0..6 {
            let _ = common::send(client.get(lb.url_for(&format!("/warmup/{i}")))).await;
        }
        APPS.iter()
            .all(|host| router.app(host).count_to("/warmup/") > 0)
    })
    .await;
    assert!(
        reached,
        "not every app was reached; router: misdirected {:?}, unknown host {:?}, failed \
         handshakes {}\nbalancer output:\n{}",
        router.misdirected(),
        router.unknown_host(),
        router.failed_handshakes(),
        lb.output()
    );

    for i in 0..300 {
        let url = lb.url_for(&format!("/tls/{i}"));
        let reply = common::get(&client, &url).await;
        assert_eq!(
            reply.status,
            200,
            "GET {url}: {reply:?}\nbalancer output:\n{}",
            lb.output()
        );
        assert!(
            APPS.contains(&reply.body.as_str()),
            "the router answers with the app's hostname: {reply:?}"
        );
    }

    let counts: Vec<(&str, usize)> = APPS
        .iter()
        .map(|host| (*host, router.app(host).count_to("/tls/")))
        .collect();
    assert_eq!(
        counts.iter().map(|(_, n)| n).sum::<usize>(),
        300,
        "{counts:?}"
    );
    for (host, count) in &counts {
        assert!(
            (95..=105).contains(count),
            "{host} got {count} of 300, expected 100 ± 5: {counts:?}"
        );
        let app = router.app(host);
        for request in app.requests() {
            assert_eq!(
                request.sni.as_deref(),
                Some(*host),
                "{host}: SNI of {}",
                request.path
            );
            assert_eq!(
                hostname_of(&request.host),
                *host,
                "{host}: Host of {}",
                request.path
            );
        }
    }
    assert!(
        router.misdirected().is_empty(),
        "SNI/Host mismatches: {:?}",
        router.misdirected()
    );
    assert!(
        router.unknown_host().is_empty(),
        "unknown hosts: {:?}",
        router.unknown_host()
    );
    // Not asserted: `router.failed_handshakes()`. The health check opens a
    // plain TCP connection first and closes it without a ClientHello, which the
    // router counts as a failed handshake. Every completed one had an app's SNI:
    for sni in router.handshakes() {
        assert!(
            sni.as_deref().is_some_and(|s| APPS.contains(&s)),
            "a handshake with SNI {sni:?}"
        );
    }
}
