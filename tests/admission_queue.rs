//! Per-app concurrency caps with a bounded queue (HAProxy's `maxconn`,
//! `maxqueue` and `timeout queue`): with `LB_MAX_IN_FLIGHT_PER_DYNO` an app
//! never has more requests in flight than that × its dynos, even under 200
//! concurrent clients; requests over the caps wait in one FIFO queue; a
//! request that finds the queue full, or waits its whole timeout, gets 503
//! with `Retry-After` (code L17 / L18); and every slot and queue place is
//! given back however a request ends.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lb::{LbBuilder, LbProcess};
use common::raw_backend::{named_ok, serve_keep_alive, RawRequest, RawServer};
use common::status::status;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// An app that answers `/slow/...` after `delay`, `/stall` never, the rest
/// at once, and records how many requests it held at once at most and the
/// order in which `/slow/` requests arrived.
struct CountingApp {
    server: RawServer,
    most: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<String>>>,
}

impl CountingApp {
    async fn start(name: &'static str, delay: Duration) -> CountingApp {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let server = RawServer::start({
            let (now, most, arrivals) =
                (Arc::clone(&now), Arc::clone(&most), Arc::clone(&arrivals));
            move |stream| {
                let (now, most, arrivals) =
                    (Arc::clone(&now), Arc::clone(&most), Arc::clone(&arrivals));
                serve_keep_alive(stream, move |request: RawRequest| {
                    let (now, most, arrivals) =
                        (Arc::clone(&now), Arc::clone(&most), Arc::clone(&arrivals));
                    async move {
                        if request.path.starts_with("/health") {
                            return named_ok(name, "");
                        }
                        let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(held, Ordering::SeqCst);
                        if request.path.starts_with("/slow/") {
                            arrivals.lock().unwrap().push(request.path.clone());
                            tokio::time::sleep(delay).await;
                        } else if request.path.starts_with("/stall") {
                            tokio::time::sleep(Duration::from_secs(600)).await;
                        }
                        now.fetch_sub(1, Ordering::SeqCst);
                        named_ok(name, "")
                    }
                })
            }
        })
        .await;
        CountingApp {
            server,
            most,
            arrivals,
        }
    }
}

/// Queue depth and every backend's requests in flight, from status.
async fn depth_and_in_flight(client: &reqwest::Client, lb: &LbProcess) -> (u64, u64) {
    let status = status(client, lb).await;
    let depth = status["queue"]["depth"].as_u64().unwrap_or(u64::MAX);
    let in_flight = status["backends"]
        .as_array()
        .map(|b| b.iter().map(|b| b["in_flight"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(u64::MAX);
    (depth, in_flight)
}

async fn wait_all_given_back(client: &reqwest::Client, lb: &LbProcess) {
    common::wait_until(
        "every slot and queue place given back",
        200,
        Duration::from_millis(50),
        || async { depth_and_in_flight(client, lb).await == (0, 0) },
    )
    .await;
}

/// 200 concurrent clients against two apps capped at 5 requests in flight each: no app ever holds more than 5, every request is answered, and the counts return to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_is_never_exceeded_under_200_concurrent_clients() {
    let apps = [
        CountingApp::start("capped-1", Duration::from_millis(40)).await,
        CountingApp::start("capped-2", Duration::from_millis(40)).await,
    ];
    let lb = LbBuilder::new()
        .backends(&[apps[0].server.url(), apps[1].server.url()])
        .env("LB_MAX_IN_FLIGHT_PER_DYNO", "5")
        .env("LB_QUEUE_TIMEOUT_SECONDS", "20")
        .env("HEALTH_CHECK_PATH", "/health")
        .server_config("threads", "2")
        .start()
        .await;
    let client = common::http_client_with_timeout(Duration::from_secs(30));
    lb.wait_proxying(&client).await;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..200 {
        let (client, url) = (client.clone(), lb.url());
        clients.spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..3 {
                let reply = common::send(client.get(format!("{url}/slow/{c}/{n}"))).await;
                statuses.push(reply.map(|r| r.status).unwrap_or(0));
            }
            statuses
        });
    }
    let mut ok = 0;
    while let Some(statuses) = clients.join_next().await {
        ok += statuses
            .expect("a client")
            .iter()
            .filter(|s| **s == 200)
            .count();
    }
    let most: Vec<usize> = apps
        .iter()
        .map(|app| app.most.load(Ordering::SeqCst))
        .collect();
    println!("600 requests from 200 clients: {ok} answered 200; most in flight per app: {most:?}");
    assert_eq!(ok, 600);
    assert!(most.iter().all(|m| *m <= 5), "a cap was exceeded: {most:?}");
    assert!(
        most.iter().all(|m| *m == 5),
        "the caps were never reached: {most:?}"
    );
    wait_all_given_back(&client, &lb).await;
    let status = status(&client, &lb).await;
    println!("queue: {}", status["queue"]);
    assert!(status["queue"]["wait_p99_ms"].as_f64().unwrap_or(0.0) > 0.0);
}

/// With one slot, queued requests get it in the order they came; once the queue is full, the next request gets 503 with Retry-After at once, logged L17.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_first_in_first_out_and_refuses_at_once_when_full() {
    let app = CountingApp::start("one-slot", Duration::from_millis(1000)).await;
    let lb = LbBuilder::new()
        .backends(&[app.server.url()])
        .env("LB_MAX_IN_FLIGHT_PER_DYNO", "1")
        .env("LB_QUEUE_MAX", "4")
        .env("LB_QUEUE_TIMEOUT_SECONDS", "10")
        .env("HEALTH_CHECK_PATH", "/health")
        .start()
        .await;
    let client = common::http_client_with_timeout(Duration::from_secs(30));
    lb.wait_proxying(&client).await;
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..5 {
        let (client, url) = (client.clone(), lb.url_for(&format!("/slow/{n}")));
        requests.spawn(async move { common::send(client.get(url)).await.map(|r| r.status) });
        // The first holds the slot; each next one queues behind the last.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let (depth, _) = depth_and_in_flight(&client, &lb).await;
    assert_eq!(depth, 4, "four waiting behind the one in flight");
    let refused_at = Instant::now();
    let refused = common::send(
        client
            .get(lb.url_for("/slow/over"))
            .header("X-Request-Id", "queue-full-1"),
    )
    .await
    .expect("answered");
    let took = refused_at.elapsed();
    println!("a full queue refused in {took:?}: {refused:?}");
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        took < Duration::from_secs(1),
        "not refused at once: {took:?}"
    );
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.expect("a request"), Ok(200));
    }
    let order = app.arrivals.lock().unwrap().clone();
    let expected: Vec<String> = (0..5).map(|n| format!("/slow/{n}")).collect();
    assert_eq!(
        order, expected,
        "the slot did not go to the waiters in order"
    );
    assert_eq!(app.most.load(Ordering::SeqCst), 1);
    common::wait_until("the L17 line", 100, Duration::from_millis(50), || async {
        lb.lines_with("queue-full-1")
            .iter()
            .any(|l| l.contains("code=L17"))
    })
    .await;
}

/// A request that waits the whole queue timeout gets 503 with Retry-After (L18); stalled requests that time out, clients that hang up mid-request and waiters that give up all give their slots and places back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_hang_ups_give_every_slot_and_place_back() {
    let app = CountingApp::start("timeouts", Duration::from_millis(400)).await;
    let lb = LbBuilder::new()
        .backends(&[app.server.url()])
        .env("LB_MAX_IN_FLIGHT_PER_DYNO", "2")
        .env("LB_QUEUE_TIMEOUT_SECONDS", "0.5")
        .env("HEALTH_CHECK_PATH", "/health")
        .config("first_byte_timeout_seconds", "1")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    // Two stalled requests fill both slots until their 1 s read timeout.
    let mut stalled = tokio::task::JoinSet::new();
    for n in 0..2 {
        let (client, url) = (client.clone(), lb.url_for(&format!("/stall/{n}")));
        stalled.spawn(async move { common::send(client.get(url)).await.map(|r| r.status) });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waited = common::send(
        client
            .get(lb.url_for("/slow/waiter"))
            .header("X-Request-Id", "queue-timeout-1"),
    )
    .await
    .expect("answered");
    assert_eq!(waited.status, 503);
    assert!(waited.headers.get("retry-after").is_some());
    while let Some(status) = stalled.join_next().await {
        assert_eq!(status.expect("a request"), Ok(504));
    }
    // Clients that send a request and hang up before its answer.
    for n in 0..6 {
        let mut stream = TcpStream::connect(("127.0.0.1", lb.port()))
            .await
            .expect("connect");
        let head = format!("GET /slow/gone-{n} HTTP/1.1\r\nHost: lb.test\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(stream);
    }
    wait_all_given_back(&client, &lb).await;
    let line = lb.lines_with("queue-timeout-1").pop().unwrap_or_default();
    assert!(line.contains("code=L18"), "{line}");
    // Still serving, within the caps.
    let reply = common::get(&client, &lb.url_for("/after")).await;
    assert_eq!(reply.status, 200);
}
