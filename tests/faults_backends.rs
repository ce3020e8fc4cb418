//! Backend faults: an app that flaps under load, one that accepts and never
//! answers, one that answers garbage (a malformed status line, a huge response
//! header), and one that resets the connection mid-body. Each time the request
//! that met the fault gets a definite, quick answer (or a cut body), the other
//! requests are untouched, and the balancer keeps running.
//! Misbehaving apps are raw `TcpListener` servers written here; they answer
//! `/health` properly so that they are admitted, and misbehave on other paths.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::{Answer, TestBackend, BACKEND_HEADER};
use common::lb::balancer;
use common::raw_backend::{read_head, RawServer};
use common::status::{status, wait_healthy};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What a raw backend does with requests other than `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misbehaviour {
    /// `HTTP/1.1 abc` and an empty head: no valid status code.
    MalformedStatusLine,
    /// A 200 whose head carries one header of this many bytes.
    HugeHeader(usize),
    /// A 200 announcing 1,000 bytes, 100 bytes of body, then a reset (RST).
    ResetMidBody,
}

/// Announced and sent body sizes of `Misbehaviour::ResetMidBody`.
const ANNOUNCED: usize = 1000;
const SENT_BEFORE_RESET: usize = 100;

struct RawShared {
    misbehaviour: Misbehaviour,
    /// Requests other than `/health` that arrived.
    requests: AtomicUsize,
}

/// A hand-written HTTP/1.1 backend on 127.0.0.1:0. Answers `GET /health` with
/// 200 and closes; every other request gets its `Misbehaviour`. Stops on drop.
struct RawBackend {
    shared: Arc<RawShared>,
    server: RawServer,
}

impl RawBackend {
    async fn start(misbehaviour: Misbehaviour) -> RawBackend {
        let shared = Arc::new(RawShared {
            misbehaviour,
            requests: AtomicUsize::new(0),
        });
        let server = RawServer::start({
            let shared = Arc::clone(&shared);
            move |stream| serve_raw(stream, Arc::clone(&shared))
        })
        .await;
        RawBackend { shared, server }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// Requests other than `/health` that arrived.
    fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

async fn serve_raw(mut stream: TcpStream, shared: Arc<RawShared>) {
    let Some(request_line) = read_head(&mut stream).await else {
        return;
    };
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    if path.starts_with("/health") {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
        let _ = stream.shutdown().await;
        return;
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    match shared.misbehaviour {
        Misbehaviour::MalformedStatusLine => {
            let _ = stream.write_all(b"HTTP/1.1 abc\r\n\r\n").await;
            let _ = stream.shutdown().await;
        }
        Misbehaviour::HugeHeader(size) => {
            let mut answer = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
            answer.extend(std::iter::repeat_n(b'h', size));
            answer.extend_from_slice(
                b"\r\nContent-Length: 4\r\nConnection: close\r\nX-Test-Backend: raw\r\n\r\nhuge",
            );
            let _ = stream.write_all(&answer).await;
            let _ = stream.shutdown().await;
        }
        Misbehaviour::ResetMidBody => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {ANNOUNCED}\r\nContent-Type: text/plain\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&[b'r'; SENT_BEFORE_RESET]).await;
            let _ = stream.flush().await;
            // Let the bytes leave before the reset discards what is unsent.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    }
}

/// A reply in a few words: status, body, and each header cut to 60 bytes
/// (a 100 KB header would drown the failure message).
fn brief(reply: &Result<common::Reply, String>) -> String {
    match reply {
        Err(e) => format!("error: {e}"),
        Ok(reply) => {
            let headers: Vec<String> = reply
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes());
                    if value.len() > 60 {
                        format!("{name}: {}... ({} bytes)", &value[..60], value.len())
                    } else {
                        format!("{name}: {value}")
                    }
                })
                .collect();
            format!(
                "status {} headers {headers:?} body {:?}",
                reply.status, reply.body
            )
        }
    }
}

/// One of three backends going down for 2 s and up for 2 s, for 20 s, under
/// four concurrent clients: not one client request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_flapping_under_load_costs_the_clients_nothing() {
    let backends = TestBackend::start_many("flap", 3).await;
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    let lb = balancer(&urls)
        .health_check_interval("0.5")
        .passive_5xx_threshold(0)
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, stop, sent, failures) = (
            client.clone(),
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failures),
        );
        let base = lb.url();
        clients.push(tokio::spawn(async move {
            // Bounded by the stop flag and by a count, whichever comes first.
            for i in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let url = format!("{base}/load/{c}/{i}");
                let t = started.elapsed();
                match common::send(client.get(&url)).await {
                    Ok(reply) if reply.status == 200 => {}
                    Ok(reply) => failures.lock().unwrap().push(format!(
                        "at {t:?} {url}: {} {}",
                        reply.status,
                        reply.body.trim()
                    )),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("at {t:?} {url}: {e}")),
                }
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    let flapper = &backends[2];
    let mut served_while_up = Vec::new();
    for _cycle in 0..5 {
        let before = flapper.count_to("/load/");
        tokio::time::sleep(Duration::from_secs(2)).await;
        served_while_up.push(flapper.count_to("/load/") - before);
        flapper.stop_listening().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        flapper.listen_again().await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in clients {
        task.await.expect("a client task panicked");
    }

    let failures = failures.lock().unwrap().clone();
    let sent = sent.load(Ordering::SeqCst);
    println!(
        "{sent} requests in {:?}; served by the flapping backend per up phase: {served_while_up:?}; per backend: {:?}",
        started.elapsed(),
        backends
            .iter()
            .map(|b| b.count_to("/load/"))
            .collect::<Vec<_>>()
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}\nbalancer output:\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        lb.output()
    );
    assert!(sent > 1000, "only {sent} requests were sent in 20 s");
    assert!(
        served_while_up[1..].iter().any(|&n| n > 0),
        "the flapping backend never came back into rotation: {served_while_up:?}"
    );
}

/// With `first_byte_timeout_seconds: 3`, a request sent to a backend that
/// never answers gets a 504 after 3 s (not retried elsewhere, so well before
/// 6 s), while the requests sent to the other backend at the same time
/// answer 200 without waiting for it (under 1.5 s, half the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_that_never_answers_gets_a_quick_504_while_the_other_keeps_serving() {
    let quick = TestBackend::start("quick").await;
    let stuck = TestBackend::start("stuck").await;
    let urls = vec![quick.url(), stuck.url()];
    // One health check at start, the next long after this test.
    let lb = balancer(&urls)
        .health_check_interval("60")
        .passive_5xx_threshold(0)
        .config("first_byte_timeout_seconds", "3")
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 2).await;
    stuck.set_answer(Answer::Stall);

    for round in 0..2 {
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let client = client.clone();
                let url = lb.url_for(&format!("/stall/{round}/{i}"));
                tokio::spawn(async move {
                    let started = Instant::now();
                    let reply = common::send(client.get(&url)).await;
                    (url, reply, started.elapsed())
                })
            })
            .collect();
        let mut ok = 0;
        let mut timed_out = 0;
        let mut problems = Vec::new();
        for task in tasks {
            let (url, reply, took) = task.await.expect("a request task panicked");
            match reply {
                Ok(reply) if reply.status == 200 => {
                    ok += 1;
                    if took > Duration::from_millis(1500) {
                        problems.push(format!("{url}: 200 took {took:?}"));
                    }
                    if reply.headers.get(BACKEND_HEADER).map(|v| v.as_bytes()) != Some(b"quick") {
                        problems.push(format!("{url}: 200 not from quick: {reply:?}"));
                    }
                }
                Ok(reply) if reply.status == 504 => {
                    timed_out += 1;
                    if took < Duration::from_millis(2900) || took > Duration::from_secs(6) {
                        problems.push(format!("{url}: 504 after {took:?}, expected 3-6 s"));
                    }
                }
                other => problems.push(format!("{url}: {other:?} after {took:?}")),
            }
        }
        let prefix = format!("/stall/{round}/");
        println!(
            "round {round}: {ok} x 200, {timed_out} x 504; quick saw {}, stuck saw {}",
            quick.count_to(&prefix),
            stuck.count_to(&prefix)
        );
        assert!(
            problems.is_empty(),
            "round {round}: {problems:#?}\noutput:\n{}",
            lb.output()
        );
        assert!(
            ok > 0 && timed_out > 0,
            "round {round}: expected both 200s and 504s, got {ok} and {timed_out}"
        );
        // A timed-out GET is not retried: each 504 is one request at stuck.
        assert_eq!(stuck.count_to(&prefix), timed_out, "round {round}");
        assert_eq!(quick.count_to(&prefix), ok, "round {round}");
    }
}

/// Send `count` POSTs then `count` GETs to a balancer over a misbehaving raw
/// backend and a normal one: each POST that met the raw backend answers 502
/// quickly, every other answers 200; every GET answers 200 (retried on the
/// normal backend); the balancer is still running at the end.
async fn bad_answers_get_502_and_the_rest_is_served(misbehaviour: Misbehaviour) {
    let raw = RawBackend::start(misbehaviour).await;
    let normal = TestBackend::start("normal").await;
    let urls = vec![raw.url(), normal.url()];
    let mut lb = balancer(&urls)
        .health_check_interval("0.5")
        .passive_5xx_threshold(0)
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 2).await;

    let mut bad_gateway = 0;
    let mut problems = Vec::new();
    for i in 0..6 {
        let url = lb.url_for(&format!("/post/{i}"));
        let started = Instant::now();
        let reply = common::send(client.post(&url).body("x=1")).await;
        let took = started.elapsed();
        match reply {
            Ok(reply) if reply.status == 502 && took < Duration::from_secs(2) => bad_gateway += 1,
            Ok(reply) if reply.status == 200 && reply.body == "normal" => {}
            other => problems.push(format!("POST {url}: {} after {took:?}", brief(&other))),
        }
    }
    assert!(
        problems.is_empty(),
        "{misbehaviour:?}: {problems:#?}\noutput:\n{}",
        lb.output()
    );
    assert!(
        bad_gateway > 0,
        "{misbehaviour:?}: no POST met the raw backend"
    );
    assert_eq!(
        bad_gateway,
        raw.requests(),
        "{misbehaviour:?}: one 502 per request the raw backend got"
    );

    for i in 0..6 {
        let url = lb.url_for(&format!("/get/{i}"));
        let reply = common::send(client.get(&url)).await;
        assert!(
            matches!(&reply, Ok(r) if r.status == 200 && r.body == "normal"),
            "{misbehaviour:?}: GET {url}: {}\noutput:\n{}",
            brief(&reply),
            lb.output()
        );
    }
    assert_eq!(normal.count_to("/get/"), 6);
    assert!(
        lb.try_status().is_none(),
        "{misbehaviour:?}: the balancer exited; output:\n{}",
        lb.output()
    );
}

/// A backend answering `HTTP/1.1 abc` gets its request a 502; other requests are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_status_line_answers_502_and_the_balancer_keeps_serving() {
    bad_answers_get_502_and_the_rest_is_served(Misbehaviour::MalformedStatusLine).await;
}

/// A backend answering with a 100 KB response header: that is our refusal,
/// not the app's failure. Each request that met it gets a 502 and is not
/// retried elsewhere (the app answered it), the backend is not ejected, and
/// other requests are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_header_answers_502_without_retry_or_ejection() {
    let raw = RawBackend::start(Misbehaviour::HugeHeader(100 * 1024)).await;
    let normal = TestBackend::start("normal").await;
    let urls = vec![raw.url(), normal.url()];
    let lb = balancer(&urls)
        .health_check_interval("30")
        .passive_5xx_threshold(0)
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 2).await;

    let mut outcomes = Vec::new();
    for i in 0..8 {
        let url = lb.url_for(&format!("/huge/{i}"));
        let reply = common::send(client.get(&url)).await;
        outcomes.push(match reply {
            Ok(reply) if reply.status == 502 => "502".to_string(),
            Ok(reply) if reply.status == 200 && reply.body == "normal" => "normal".to_string(),
            other => format!("GET {url}: {}", brief(&other)),
        });
    }
    let refused = outcomes.iter().filter(|o| *o == "502").count();
    let served = outcomes.iter().filter(|o| *o == "normal").count();
    assert_eq!(
        refused + served,
        8,
        "{outcomes:#?}\noutput:\n{}",
        lb.output()
    );
    // Round robin over two: half met the oversized head; none was re-sent.
    assert_eq!(
        refused,
        raw.requests(),
        "one 502 per oversized answer: {outcomes:#?}\noutput:\n{}",
        lb.output()
    );
    assert!(refused >= 3, "only {refused} requests met the raw backend");
    assert_eq!(
        normal.count_to("/huge/"),
        served,
        "a refused answer was retried"
    );
    let snapshot = status(&client, &lb).await;
    let raw_entry = snapshot["backends"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["url"] == raw.url().as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        raw_entry["state"],
        "healthy",
        "our own refusal ejected the app: {raw_entry}\noutput:\n{}",
        lb.output()
    );
    assert!(
        !lb.output().contains("ejected"),
        "an ejection was logged:\n{}",
        lb.output()
    );
}

/// A backend announcing 1,000 bytes and resetting after 100: that client sees
/// an error or a short body, every other request is served in full, and the
/// balancer keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_resetting_mid_body_cuts_only_that_response() {
    let raw = RawBackend::start(Misbehaviour::ResetMidBody).await;
    let normal = TestBackend::start("normal").await;
    let urls = vec![raw.url(), normal.url()];
    let mut lb = balancer(&urls)
        .health_check_interval("0.5")
        .passive_5xx_threshold(0)
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 2).await;

    let mut cut = 0;
    let mut outcomes = Vec::new();
    let mut problems = Vec::new();
    for i in 0..10 {
        let url = lb.url_for(&format!("/reset/{i}"));
        match common::send(client.get(&url)).await {
            Ok(reply) if reply.status == 200 && reply.body == "normal" => {}
            Ok(reply) if reply.status == 200 && reply.body.len() < ANNOUNCED => {
                cut += 1;
                outcomes.push(format!("short body of {} bytes", reply.body.len()));
            }
            Err(e) => {
                cut += 1;
                outcomes.push(format!("error: {e}"));
            }
            other => problems.push(format!("{url}: {other:?}")),
        }
    }
    println!("cut responses: {outcomes:#?}");
    assert!(
        problems.is_empty(),
        "{problems:#?}\noutput:\n{}",
        lb.output()
    );
    assert!(cut > 0, "no request met the resetting backend");
    assert_eq!(cut, raw.requests(), "one cut response per reset");
    assert_eq!(normal.count_to("/reset/") + cut, 10);

    assert!(
        lb.try_status().is_none(),
        "the balancer exited; output:\n{}",
        lb.output()
    );
    assert_eq!(status(&client, &lb).await["backends_total"], 2);
}
