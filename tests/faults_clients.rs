//! Hostile and careless clients: a slowloris sending its request head a byte a
//! second, request heads over Heroku's limits, a body framed two ways at once
//! (request smuggling), a thousand idle keep-alive connections, and a client
//! that hangs up in the middle of a long response. None of them may slow down
//! or reach the other clients' requests, and an abandoned response must free
//! its upstream connection.
//! Hostile requests are written as raw bytes over a `TcpStream`, since an HTTP
//! client library would refuse to send them.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::lb::{balancer, LbProcess};
use common::raw_client::{raw_exchange, RawConnection, RAW_TIMEOUT};
use common::status::{poll_status, status};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Two backends behind a balancer checking `/health` every 0.5 s, both healthy.
async fn two_healthy_apps() -> (Vec<TestBackend>, LbProcess, reqwest::Client) {
    let backends = TestBackend::start_many("app", 2).await;
    let (lb, client) = balancer(&backends)
        .health_check_interval("0.5")
        .start_healthy(2)
        .await;
    (backends, lb, client)
}

/// The soft limit on open files of this process, from /proc/self/limits.
fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Clients sending their request heads a byte a second do not delay anyone
/// else: over 10 s, ordinary requests keep answering 200 within 500 ms.
/// (Pingora 0.9 has only a 60 s per-read timeout and no total header timeout,
/// so the balancer does not cut them; whether it did is printed, not asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_clients_do_not_delay_other_clients() {
    let (backends, lb, client) = two_healthy_apps().await;

    const SLOW_CLIENTS: usize = 50;
    const DRIP_FOR: Duration = Duration::from_secs(10);
    let head = b"GET /slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: drip-drip-drip-drip-drip\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let cut = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for _ in 0..SLOW_CLIENTS {
        let cut = Arc::clone(&cut);
        let port = lb.port();
        slow.push(tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let started = Instant::now();
            // Never the whole head: it is longer than DRIP_FOR seconds of bytes.
            for byte in head.iter() {
                if started.elapsed() >= DRIP_FOR {
                    break;
                }
                if stream.write_all(&[*byte]).await.is_err() {
                    cut.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                // Also notice a close between two bytes.
                let mut buf = [0u8; 1];
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        cut.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    _ => {}
                }
            }
        }));
    }

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut sent = 0;
    let mut problems = Vec::new();
    while started.elapsed() < DRIP_FOR && sent < 1000 {
        let url = lb.url_for(&format!("/normal/{sent}"));
        let t = Instant::now();
        let reply = common::send(client.get(&url)).await;
        let took = t.elapsed();
        slowest = slowest.max(took);
        match reply {
            // A worker held by a slowloris would delay it by seconds.
            Ok(reply) if reply.status == 200 && took < Duration::from_millis(1500) => {}
            other => problems.push(format!("{url}: {other:?} after {took:?}")),
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for task in slow {
        task.await.expect("a slowloris task panicked");
    }
    println!(
        "{sent} ordinary requests over {:?}, slowest {slowest:?}; {} of {SLOW_CLIENTS} slowloris connections were cut by the balancer within {DRIP_FOR:?}",
        started.elapsed(),
        cut.load(Ordering::SeqCst)
    );
    assert!(
        problems.is_empty(),
        "{problems:#?}\noutput:\n{}",
        lb.output()
    );
    assert!(sent >= 50, "only {sent} ordinary requests in {DRIP_FOR:?}");
    let reached: usize = backends.iter().map(|b| b.count_to("/slowloris")).sum();
    assert_eq!(reached, 0, "an unfinished request head reached a backend");
}

/// Heroku's router limits: a request line over 8 KiB answers 414, a header
/// line over 8 KiB 431, a head over 64 KiB in all 431, and more than 256
/// header lines (Pingora's parser limit, under Heroku's 1,000) 400; each
/// refused request closes its connection, reaches no backend, and heads just
/// under the limits are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_herokus_limits_are_refused_before_any_backend() {
    let (backends, lb, client) = two_healthy_apps().await;

    let long_path = format!("/limits/long-line/{}", "a".repeat(9 * 1024));
    let long_line = format!("GET {long_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let long_header = format!(
        "GET /limits/long-header HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9 * 1024)
    );
    let mut many_headers = String::from("GET /limits/many-headers HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..1001 {
        many_headers.push_str(&format!("X-H{i}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let mut heavy_head = String::from("GET /limits/heavy-head HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..200 {
        heavy_head.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(1000)));
    }
    heavy_head.push_str("\r\n");
    let mut some_headers = String::from("GET /limits/300-headers HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..300 {
        some_headers.push_str(&format!("X-H{i}: v\r\n"));
    }
    some_headers.push_str("\r\n");
    let cases: [(&str, &str, &[u16]); 5] = [
        ("request line of 9 KiB", &long_line, &[414]),
        ("header line of 9 KiB", &long_header, &[431]),
        ("200 headers of 1 KB (200 kB of head)", &heavy_head, &[431]),
        ("300 headers", &some_headers, &[400]),
        ("1,001 headers", &many_headers, &[400]),
    ];
    for (what, request, expected) in cases {
        let (response, closed) = raw_exchange(&lb, request.as_bytes()).await;
        let status = response.as_ref().map(|r| r.status).ok();
        println!("{what}: {status:?}, connection closed: {closed}");
        assert!(
            status.is_some_and(|s| expected.contains(&s)),
            "{what}: expected one of {expected:?}, got {response:?}\noutput:\n{}",
            lb.output()
        );
        assert!(closed, "{what}: the connection was left open");
    }

    // Just under the limits: served.
    let path = format!("/limits/ok/{}", "a".repeat(8000));
    let reply = common::get(&client, &lb.url_for(&path)).await;
    assert_eq!(reply.status, 200, "a 8,0xx-byte request line");
    let reply = common::send(
        client
            .get(lb.url_for("/limits/ok-header"))
            .header("x-big", "b".repeat(8000)),
    )
    .await
    .expect("an answer");
    assert_eq!(reply.status, 200, "a 8,0xx-byte header line");

    for backend in &backends {
        let refused: Vec<String> = backend
            .requests_to("/limits/")
            .into_iter()
            .map(|r| r.path.chars().take(40).collect())
            .filter(|p: &String| !p.starts_with("/limits/ok"))
            .collect();
        assert!(
            refused.is_empty(),
            "{} received refused requests: {refused:?}",
            backend.name()
        );
    }
}

/// A body framed by both `Content-Length` and `Transfer-Encoding` (in any
/// order or case) answers 400 and closes the connection; neither the request
/// nor the one smuggled inside its body reaches a backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_framed_two_ways_is_refused_and_nothing_is_smuggled_through() {
    let (backends, lb, client) = two_healthy_apps().await;

    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let chunked_body = format!("0\r\n\r\n{smuggled}");
    let cases = [
        format!(
            "POST /smuggle/cl-te HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}",
            chunked_body.len()
        ),
        format!(
            "POST /smuggle/te-cl HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunked_body}"
        ),
        format!(
            "POST /smuggle/lower HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n{chunked_body}"
        ),
        format!(
            "POST /smuggle/te-list HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{chunked_body}"
        ),
        format!(
            "GET /smuggle/get HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}",
            chunked_body.len()
        ),
    ];
    for request in &cases {
        let what = request.lines().next().unwrap_or_default();
        let (response, closed) = raw_exchange(&lb, request.as_bytes()).await;
        let status = response.as_ref().map(|r| r.status).ok();
        println!("{what}: {status:?}, connection closed: {closed}");
        assert_eq!(
            status,
            Some(400),
            "{what}: {response:?}\noutput:\n{}",
            lb.output()
        );
        assert!(closed, "{what}: the connection was left open after a 400");
    }
    // Each refused connection is closed already; a request answered after
    // them shows the balancer is done with them (an event, not a sleep):
    // a smuggled request would have reached a backend before it.
    let reply = common::get(&client, &lb.url_for("/after-smuggling")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    for backend in &backends {
        let seen: Vec<String> = backend
            .requests()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .filter(|line| line.contains("/smuggle"))
            .collect();
        assert!(seen.is_empty(), "{} received {seen:?}", backend.name());
    }
}

/// A thousand idle keep-alive connections (fewer if this process may not open
/// that many files) do not stop new requests being served quickly, and the
/// idle connections still work afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_idle_keep_alive_connections_do_not_slow_new_requests() {
    let (_backends, lb, client) = two_healthy_apps().await;

    // Each idle connection costs this process one descriptor; keep 256 spare
    // for the backends (which live in this process) and everything else.
    let soft = open_files_soft_limit().unwrap_or(1024);
    let wanted: u64 = 1000;
    let count = wanted.min(soft.saturating_sub(256)) as usize;
    if (count as u64) < wanted {
        println!(
            "note: the open-files soft limit is {soft}; using {count} idle connections instead of {wanted}"
        );
    }

    let started = Instant::now();
    let idle: Arc<Mutex<Vec<RawConnection>>> = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut openers = Vec::new();
    for _ in 0..32 {
        let (idle, failures, next) = (Arc::clone(&idle), Arc::clone(&failures), Arc::clone(&next));
        let port = lb.port();
        openers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return;
                }
                let result = async {
                    let mut connection = RawConnection::connect(port).await?;
                    let request = format!("GET /idle/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
                    connection.send(request.as_bytes()).await?;
                    match connection.read_response().await {
                        Ok(response)
                            if response.status == 200 && response.body.starts_with(b"app-") =>
                        {
                            Ok(connection)
                        }
                        other => Err(format!("response: {other:?}")),
                    }
                }
                .await;
                match result {
                    Ok(stream) => idle.lock().unwrap().push(stream),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("connection {i}: {e}")),
                }
            }
        }));
    }
    for task in openers {
        task.await.expect("an opener task panicked");
    }
    let opened_in = started.elapsed();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {count} keep-alive connections failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut idle = std::mem::take(&mut *idle.lock().unwrap());
    assert_eq!(idle.len(), count);

    // All of them idle now; new requests must not notice.
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        let reply = common::get(&client, &lb.url_for(&format!("/fresh/{i}"))).await;
        let took = t.elapsed();
        slowest = slowest.max(took);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(
            took < Duration::from_millis(1500),
            "request {i} took {took:?} with {count} idle connections open"
        );
    }

    // The idle connections were kept alive: a second request on some of them works.
    let mut reused = 0;
    for (n, connection) in idle.iter_mut().step_by(count.max(10) / 10).enumerate() {
        let request = format!("GET /idle/again/{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        connection
            .send(request.as_bytes())
            .await
            .expect("write on an idle keep-alive connection");
        let response = connection.read_response().await;
        assert_eq!(
            response.as_ref().map(|r| r.status).ok(),
            Some(200),
            "idle connection {n}: {response:?}"
        );
        reused += 1;
    }
    println!(
        "{count} keep-alive connections opened in {opened_in:?}; 50 new requests, slowest {slowest:?}; {reused} idle connections reused"
    );
    drop(idle);
}

/// A backend that streams a long body slowly, recording when its connection
/// is closed under it.
struct StreamingBackend {
    addr: SocketAddr,
    /// Streaming responses started.
    started: Arc<AtomicUsize>,
    /// When a streaming connection was found closed (a write failed).
    closed_at: Arc<Mutex<Option<Instant>>>,
    task: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl StreamingBackend {
    async fn start() -> StreamingBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a streaming backend on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr of a listener");
        let started = Arc::new(AtomicUsize::new(0));
        let closed_at = Arc::new(Mutex::new(None));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (s, c, conns) = (
            Arc::clone(&started),
            Arc::clone(&closed_at),
            Arc::clone(&connections),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (s, c) = (Arc::clone(&s), Arc::clone(&c));
                let conn = tokio::spawn(stream_answer(stream, s, c));
                conns.lock().unwrap().push(conn);
            }
        });
        StreamingBackend {
            addr,
            started,
            closed_at,
            task,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StreamingBackend {
    fn drop(&mut self) {
        self.task.abort();
        for conn in self.connections.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

/// `/health`: 200 and close. Anything else: a 1 GB body announced, sent in
/// 16 KB pieces every 10 ms until a write fails (at most 60 s).
async fn stream_answer(
    mut stream: TcpStream,
    started: Arc<AtomicUsize>,
    closed_at: Arc<Mutex<Option<Instant>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(RAW_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && head.len() < 65536 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    if head.starts_with(b"GET /health") {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
        return;
    }
    started.fetch_add(1, Ordering::SeqCst);
    let piece = vec![b's'; 16 * 1024];
    let mut result = stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while result.is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        result = stream.write_all(&piece).await;
    }
    if result.is_err() {
        *closed_at.lock().unwrap() = Some(Instant::now());
    }
}

/// A client that reads 256 KB of a long, slow response and hangs up: the
/// balancer closes the upstream connection within 5 s, and the backend's
/// `in_flight` on `/_lb/status` goes from 1 back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_response_frees_the_upstream_connection() {
    let streaming = StreamingBackend::start().await;
    let (lb, client) = balancer(&[streaming.url()])
        .health_check_interval("0.5")
        .start_healthy(1)
        .await;
    let in_flight = |status: &Value| status["backends"][0]["in_flight"].as_u64();

    let mut stream = TcpStream::connect(("127.0.0.1", lb.port()))
        .await
        .expect("connect to the balancer");
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send the request");
    let mut received = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let read = async {
        while received < 256 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("256 KB of the streaming response within 10 s");
    assert!(
        received >= 256 * 1024,
        "the response ended after {received} bytes"
    );
    assert_eq!(streaming.started.load(Ordering::SeqCst), 1);
    let during = status(&client, &lb).await;
    assert_eq!(
        in_flight(&during),
        Some(1),
        "while streaming: {}",
        during["backends"]
    );

    let hung_up = Instant::now();
    drop(stream);
    common::wait_until(
        "the backend to see its connection closed",
        100,
        Duration::from_millis(50),
        || async { streaming.closed_at.lock().unwrap().is_some() },
    )
    .await;
    let closed_after = streaming
        .closed_at
        .lock()
        .unwrap()
        .map(|at| at.saturating_duration_since(hung_up));
    poll_status(&client, &lb)
        .within(Duration::from_secs(5))
        .strict()
        .until("in_flight to return to 0", |status| {
            in_flight(status) == Some(0)
        })
        .await;
    println!(
        "upstream closed {closed_after:?} after the client hung up; in_flight back to 0 after {:?}",
        hung_up.elapsed()
    );
}
