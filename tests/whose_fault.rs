//! The client's failures are not the app's, and one bad exchange is not a
//! verdict on an app:
//! - a client that stalls in the middle of its request body gets 408
//!   (`code=L28`) when the upstream read times out, and no app is blamed;
//! - a request that makes every app close the connection without answering
//!   is one failure toward `passive_5xx_threshold` on each app it is retried
//!   on, not an ejection that spreads through the retries;
//! - a pooled connection the app closed while idle is retried on a new
//!   connection to the same app, so a single-app balancer answers 200
//!   instead of 503 and nobody moves.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::lb::{LbBuilder, LbProcess};
use common::raw_backend::{named_ok, read_request, serve_keep_alive, RawRequest, RawServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A counter from `/_lb/metrics`, summed over every series of `name`.
async fn metric_sum(client: &reqwest::Client, lb: &LbProcess, name: &str) -> f64 {
    let metrics = common::get(client, &lb.url_for("/_lb/metrics")).await;
    metrics
        .body
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How many backends `/_lb/status` says are healthy.
async fn healthy(client: &reqwest::Client, lb: &LbProcess) -> u64 {
    let status = common::get(client, &lb.url_for("/_lb/status")).await;
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("status JSON");
    json["backends_healthy"].as_u64().unwrap_or(0)
}

/// An app that reads each request's whole body (by Content-Length) before
/// answering, as an app handling an upload does.
async fn body_reading_app(name: &'static str) -> RawServer {
    RawServer::start(move |stream| {
        serve_keep_alive(stream, move |_request: RawRequest| async move {
            named_ok(name, "")
        })
    })
    .await
}

/// Twelve clients that send a POST head with `Content-Length: 100` and one byte of body, then stall, each get 408 with code L28, and no app is ejected or counted a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stall_mid_body_get_408_and_no_app_is_blamed() {
    let apps = [
        body_reading_app("upload-1").await,
        body_reading_app("upload-2").await,
    ];
    let lb = LbBuilder::new()
        .backends(&[apps[0].url(), apps[1].url()])
        .config("first_byte_timeout_seconds", "2")
        .config("health_check_interval_seconds", "1")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    common::wait_until("both apps healthy", 100, Duration::from_millis(100), || {
        let (client, lb) = (&client, &lb);
        async move { healthy(client, lb).await == 2 }
    })
    .await;

    let mut stalls = tokio::task::JoinSet::new();
    for i in 0..12 {
        let port = lb.port();
        stalls.spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect to the balancer");
            let head = format!(
                "POST /upload/{i} HTTP/1.1\r\nHost: lb.test\r\nContent-Length: 100\r\n\
                 X-Request-Id: stalled-upload-{i}\r\n\r\nA"
            );
            stream
                .write_all(head.as_bytes())
                .await
                .expect("send the head");
            let mut answer = vec![0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut answer));
            match read.await {
                Ok(Ok(n)) => String::from_utf8_lossy(&answer[..n]).into_owned(),
                other => panic!("stalled client {i} got no answer: {other:?}"),
            }
        });
    }
    while let Some(answer) = stalls.join_next().await {
        let answer = answer.expect("a stalled client task");
        let status_line = answer.lines().next().unwrap_or_default().to_string();
        assert!(
            status_line.starts_with("HTTP/1.1 408"),
            "a stalled client got {status_line:?}"
        );
    }
    common::wait_until(
        "the request lines of the stalled clients",
        100,
        Duration::from_millis(50),
        || async { lb.lines_with("stalled-upload-").len() >= 12 },
    )
    .await;
    for line in lb.lines_with("stalled-upload-") {
        assert!(
            line.contains("code=L28") && line.contains("status=408"),
            "{line}"
        );
        assert!(
            line.starts_with("at=info") || line.contains(" at=info"),
            "{line}"
        );
    }
    assert_eq!(
        metric_sum(&client, &lb, "heroku_lb_passive_ejections_total").await,
        0.0,
        "a client's stall ejected an app; log:\n{}",
        lb.output()
    );
    assert_eq!(healthy(&client, &lb).await, 2);
}

/// Three apps that close the connection on `/crash` without answering,
/// answer everything else with `Connection: close` (so every proxied
/// request uses a new connection), and count the crashes.
async fn crashing_apps(crashes: &Arc<AtomicUsize>) -> Vec<RawServer> {
    let mut apps = Vec::new();
    for name in ["crash-1", "crash-2", "crash-3"] {
        let crashes = Arc::clone(crashes);
        apps.push(
            RawServer::start(move |stream| {
                let crashes = Arc::clone(&crashes);
                async move {
                    let mut stream = BufReader::new(stream);
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    if request.path.starts_with("/crash") {
                        crashes.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let answer = named_ok(name, "connection: close\r\n");
                    let _ = stream.get_mut().write_all(answer.as_bytes()).await;
                }
            })
            .await,
        );
    }
    apps
}

/// A request that makes every app close a new connection without answering costs each app it is tried on one failure toward the threshold: no ejection after one or two such requests, one (the cap) at the third with a threshold of 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_without_an_answer_is_one_failure_toward_the_threshold_not_an_ejection() {
    let crashes = Arc::new(AtomicUsize::new(0));
    let apps = crashing_apps(&crashes).await;
    let lb = LbBuilder::new()
        .backends(&apps.iter().map(RawServer::url).collect::<Vec<_>>())
        .config("health_check_interval_seconds", "30")
        .env("LB_PASSIVE_5XX_THRESHOLD", "3")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    common::wait_until(
        "three apps healthy",
        100,
        Duration::from_millis(100),
        || {
            let (client, lb) = (&client, &lb);
            async move { healthy(client, lb).await == 3 }
        },
    )
    .await;

    for round in 1..=2 {
        let reply = common::get(&client, &lb.url_for(&format!("/crash/{round}"))).await;
        assert_eq!(reply.status, 502, "{reply:?}");
        println!(
            "after crash request {round}: {} closes seen by the apps",
            crashes.load(Ordering::SeqCst)
        );
        assert_eq!(
            metric_sum(&client, &lb, "heroku_lb_passive_ejections_total").await,
            0.0,
            "crash request {round} ejected an app; log:\n{}",
            lb.output()
        );
        assert_eq!(healthy(&client, &lb).await, 3);
    }
    // Each request was tried on all three apps (1 + connect_retries).
    assert_eq!(crashes.load(Ordering::SeqCst), 6);
    let reply = common::get(&client, &lb.url_for("/crash/3")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(
        metric_sum(&client, &lb, "heroku_lb_passive_ejections_total").await,
        1.0,
        "the third failure in a row ejects one app, and the cap (50 % of 3) only one"
    );
    assert_eq!(healthy(&client, &lb).await, 2);
}

/// A single app that answers the first request on each connection and
/// closes the connection, unanswered, when a second request arrives on it:
/// what a pooled connection closed by the app while idle looks like.
async fn idle_closing_app(requests: &Arc<AtomicUsize>) -> RawServer {
    let requests = Arc::clone(requests);
    RawServer::start(move |stream| {
        let requests = Arc::clone(&requests);
        async move {
            let mut stream = BufReader::new(stream);
            if read_request(&mut stream).await.is_none() {
                return;
            }
            requests.fetch_add(1, Ordering::SeqCst);
            let answer = named_ok("solo", "");
            if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            // The second request on this connection: read, then close.
            let _ = read_request(&mut stream).await;
        }
    })
    .await
}

/// A pooled connection the app closed is retried once on a new connection to the same app: a single-app balancer answers 200, not 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_connection_is_retried_on_a_new_one_to_the_same_app() {
    let requests = Arc::new(AtomicUsize::new(0));
    let app = idle_closing_app(&requests).await;
    let lb = LbBuilder::new()
        .backends(&[app.url()])
        .config("health_check_interval_seconds", "30")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    for i in 0..5 {
        let reply = common::get(&client, &lb.url_for(&format!("/again/{i}"))).await;
        assert_eq!(
            reply.status,
            200,
            "request {i} over a stale pooled connection: {reply:?}; log:\n{}",
            lb.output()
        );
    }
    let retried = metric_sum(
        &client,
        &lb,
        "heroku_lb_retries_total{reason=\"stale_connection\"}",
    )
    .await;
    println!("retries on a stale connection: {retried}");
    assert!(retried >= 1.0, "no stale-connection retry was needed");
    assert_eq!(
        metric_sum(&client, &lb, "heroku_lb_passive_ejections_total").await,
        0.0
    );
}
