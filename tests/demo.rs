//! With nothing configured the binary balances over three demo backends of
//! its own, except on a Heroku dyno, where that would hide a missing setting.

mod common;

use common::lb::{LbBuilder, EXIT_TIMEOUT};

/// With no backends configured, three built-in demo backends answer in turn, ten requests each of thirty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_backends_configured_three_demo_backends_share_the_traffic() {
    let lb = LbBuilder::new().start().await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    let mut counts = [0usize; 3];
    for i in 0..30 {
        let reply = common::get(&client, &lb.url_for(&format!("/demo/{i}"))).await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        let matching: Vec<usize> = (1..=3)
            .filter(|n| reply.body.contains(&format!("demo backend {n}")))
            .collect();
        assert_eq!(matching.len(), 1, "request {i} body: {:?}", reply.body);
        counts[matching[0] - 1] += 1;
    }
    assert_eq!(counts, [10, 10, 10], "answers per demo backend");
    // The start-up line, not the request lines (whose paths say /demo/).
    let announced: Vec<String> = lb
        .output()
        .lines()
        .filter(|line| {
            line.contains("no backends configured: running the demo with 3 local backends")
        })
        .map(str::to_string)
        .collect();
    assert_eq!(
        announced.len(),
        1,
        "the demo mode is announced once at start:\n{}",
        lb.output()
    );
}

/// On a dyno (DYNO set) with no backends configured, it refuses to start and says why.
#[test]
fn on_a_dyno_with_no_backends_configured_it_refuses_to_start() {
    let exit = LbBuilder::new()
        .env("DYNO", "web.1")
        .run_to_exit(EXIT_TIMEOUT);
    assert!(
        !exit.status.success(),
        "expected a non-zero exit, got {}; stderr:\n{}",
        exit.status,
        exit.stderr
    );
    assert!(exit.stderr.contains("DYNO"), "stderr:\n{}", exit.stderr);
}
