//! A backend that refuses connections is retried around, and when every
//! backend refuses the client is told so quickly.

mod common;

use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::lb::LbBuilder;

/// A backend whose listener is gone costs clients nothing: its turns go to the other backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_refusing_connections_causes_no_client_errors() {
    let backends = TestBackend::start_many("backend", 3).await;
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    // Health checks rarely, so requests meet the refusing backend instead of
    // a health check taking it out first.
    let lb = LbBuilder::new()
        .backends(&urls)
        .health_check_interval("3600")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    let refusing = &backends[1];
    refusing.stop_listening().await;

    for i in 0..60 {
        let reply = common::get(&client, &lb.url_for(&format!("/retry/{i}"))).await;
        assert_eq!(
            reply.status,
            200,
            "request {i}: {reply:?}; stderr:\n{}",
            lb.stderr()
        );
    }

    assert_eq!(refusing.count_to("/retry/"), 0);
    let served: usize = backends.iter().map(|b| b.count_to("/retry/")).sum();
    assert_eq!(served, 60);
}

/// With every backend refusing connections a request ends in a quick 502 or 503, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_refusing_connections_gives_a_quick_502_or_503() {
    let backends = TestBackend::start_many("backend", 3).await;
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    for backend in &backends {
        backend.stop_listening().await;
    }
    let lb = LbBuilder::new().backends(&urls).start().await;
    let client = common::http_client();

    for i in 0..5 {
        let started = Instant::now();
        let reply = common::get(&client, &lb.url_for(&format!("/down/{i}"))).await;
        let took = started.elapsed();
        assert!(
            reply.status == 502 || reply.status == 503,
            "request {i}: {reply:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "request {i} took {took:?} to fail"
        );
    }
}
