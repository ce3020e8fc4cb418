//! Requests are spread over the configured backends in turn.

mod common;

use common::backend::TestBackend;
use common::lb::LbBuilder;

/// With three healthy backends, sequential requests are shared out evenly, a third each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_are_shared_evenly_by_three_backends() {
    let backends = TestBackend::start_many("backend", 3).await;
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    let lb = LbBuilder::new().backends(&urls).start().await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    for i in 0..300 {
        let reply = common::get(&client, &lb.url_for(&format!("/rr/{i}"))).await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
    }

    let counts: Vec<(String, usize)> = backends
        .iter()
        .map(|b| (b.name().to_string(), b.count_to("/rr/")))
        .collect();
    assert_eq!(
        counts.iter().map(|(_, n)| n).sum::<usize>(),
        300,
        "{counts:?}"
    );
    for (name, count) in &counts {
        assert!(
            (99..=101).contains(count),
            "{name} got {count} of 300 requests, expected 100 ± 1: {counts:?}"
        );
    }
}
