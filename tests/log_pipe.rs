//! A log pipe that stalls must not stall traffic. With its stdout on a pipe
//! nobody reads, the balancer keeps answering every request (status
//! included): request lines go to a bounded buffer that a writer thread
//! empties, lines that do not fit are dropped and counted
//! (`heroku_lb_log_lines_dropped_total`), and once the reader comes back one
//! line says how many were dropped.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::backend::TestBackend;

/// Requests sent while nobody reads the balancer's stdout.
const REQUESTS: usize = 3_000;

/// A path long enough that the request lines of `REQUESTS` requests (about
/// 6 MB) are far more than the pipe (64 KiB) and the buffer (1 MiB) hold.
fn long_path(i: usize) -> String {
    format!("/stalled-log/{i}/{}", "p".repeat(2_000))
}

/// The balancer with its stdout on a pipe the test holds and does not read.
struct PipedBalancer {
    child: Child,
    port: u16,
}

impl Drop for PipedBalancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_piped(backend_url: &str) -> PipedBalancer {
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_heroku-lb"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("LB_LISTEN_HOST", "127.0.0.1")
        .env("LB_BACKENDS", backend_url)
        .env("HEALTH_CHECK_INTERVAL", "1")
        .env("LB_THREADS", "2")
        .env("LB_GRACE_PERIOD_SECONDS", "1")
        .env("LB_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn heroku-lb");
    PipedBalancer { child, port }
}

/// With nobody reading stdout, 3,000 requests are all answered and the status page answers; when the reader comes back, one line says how many lines were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stdout_never_stalls_requests_and_drops_are_logged_when_it_drains() {
    let backend = TestBackend::start("log-pipe-app").await;
    let mut lb = start_piped(&backend.url());
    let base = format!("http://127.0.0.1:{}", lb.port);
    let client = common::http_client();
    common::wait_until(
        "the balancer proxying",
        200,
        Duration::from_millis(50),
        || {
            let url = format!("{base}/warmup");
            let client = client.clone();
            async move { matches!(common::send(client.get(url)).await, Ok(r) if r.status == 200) }
        },
    )
    .await;

    let started = Instant::now();
    for i in 0..REQUESTS {
        let reply = common::send(client.get(format!("{base}{}", long_path(i))))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "request {i} of {REQUESTS} got no answer after {:?} with stdout unread: {e}",
                    started.elapsed()
                )
            });
        assert_eq!(reply.status, 200, "request {i}");
    }
    println!("{REQUESTS} requests answered in {:?}", started.elapsed());
    let status = common::get(&client, &format!("{base}/_lb/status")).await;
    assert_eq!(status.status, 200, "{}", status.body);
    let metrics = common::get(&client, &format!("{base}/_lb/metrics")).await;
    let dropped: f64 = metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix("heroku_lb_log_lines_dropped_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop counter in the metrics:\n{}", metrics.body));
    println!("lines dropped so far: {dropped}");
    assert!(
        dropped > 0.0,
        "nothing was dropped: the test did not fill the buffer"
    );

    // The reader comes back: the drop count is logged once stdout drains.
    let mut stdout = lb.child.stdout.take().expect("a piped stdout");
    let (found, seen) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&chunk[..n]),
            }
            let so_far = String::from_utf8_lossy(&text);
            if let Some(line) = so_far.lines().find(|line| line.contains("dropped=")) {
                let _ = found.send(line.to_string());
                return;
            }
        }
    });
    let line = tokio::task::spawn_blocking(move || seen.recv_timeout(Duration::from_secs(20)))
        .await
        .expect("the reader thread")
        .expect("no line saying how many log lines were dropped within 20 s");
    println!("{line}");
    assert!(line.contains("level=warn"), "{line}");
    let count: u64 = line
        .split("dropped=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"));
    assert!(count > 0 && count as f64 <= dropped, "{count} vs {dropped}");
}
