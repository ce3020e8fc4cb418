//! Shutdown with the shipped `conf/pingora.yaml` (10 s grace, 5 s shutdown
//! timeout), as on a Heroku restart: SIGTERM lets an in-flight request finish
//! and exits 0 within grace + timeout, well before Heroku's SIGKILL 30 s
//! later, while new connections are refused; a request longer than the grace
//! period is cut, and the log says so; SIGINT exits at once. Each balancer
//! gets a copy of the shipped file whose pid file and upgrade socket live in
//! a temp dir of its own, so tests never share them.

mod common;

use std::time::{Duration, Instant};

use common::lb::{LbBuilder, LbProcess};
use common::slow_backend::SlowBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Heroku's SIGKILL comes 30 s after SIGTERM.
const SIGKILL_AFTER: Duration = Duration::from_secs(30);
/// How long the slow backend takes to answer `/slow…`.
const SLOW: Duration = Duration::from_secs(3);
/// How long it takes to answer `/endless…`: longer than any grace period here.
const ENDLESS: Duration = Duration::from_secs(60);
/// The slow backend's name, and so its answers' body.
const SLOW_APP: &str = "slow-app";

fn shipped_conf() -> String {
    format!("{}/conf/pingora.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// The shipped file's value of a top-level key.
fn shipped_key(key: &str) -> u64 {
    let text = std::fs::read_to_string(shipped_conf()).expect("read conf/pingora.yaml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("conf/pingora.yaml is YAML");
    yaml.get(key)
        .and_then(serde_yaml::Value::as_u64)
        .unwrap_or_else(|| panic!("conf/pingora.yaml has no numeric {key}"))
}

/// The balancer with the shipped config file (no test overrides of grace
/// periods), copied into `dir` with its pid file and upgrade socket there.
fn with_shipped_conf(dir: &tempfile::TempDir) -> LbBuilder {
    let text = std::fs::read_to_string(shipped_conf()).expect("read conf/pingora.yaml");
    let own = |key: &str, line: &str| {
        line.starts_with(&format!("{key}:")).then(|| {
            format!(
                "{key}: {}",
                dir.path().join(format!("heroku-lb.{key}")).display()
            )
        })
    };
    let copy: Vec<String> = text
        .lines()
        .map(|line| {
            own("pid_file", line)
                .or_else(|| own("upgrade_sock", line))
                .unwrap_or_else(|| line.to_string())
        })
        .collect();
    assert!(copy
        .iter()
        .any(|l| l.contains(&dir.path().display().to_string())));
    let path = dir.path().join("pingora.yaml");
    std::fs::write(&path, copy.join("\n")).expect("write the conf copy");
    LbBuilder::new()
        .without_config_file()
        .arg("-c")
        .arg(&path.display().to_string())
}

/// Wait up to 5 s for a stdout line containing `needle`.
async fn wait_for_line(lb: &LbProcess, needle: &str) {
    let seen = common::poll_until(250, Duration::from_millis(20), || async {
        lb.stdout().contains(needle)
    })
    .await;
    assert!(seen, "no '{needle}' line; stdout:\n{}", lb.stdout());
}

/// A backend that answers `/slow…` after `SLOW`, `/endless…` after
/// `ENDLESS`, and everything else (health checks, warm-up) at once.
async fn slow_app() -> SlowBackend {
    SlowBackend::start(SLOW_APP, |path| {
        if path.starts_with("/slow") {
            Some(SLOW)
        } else if path.starts_with("/endless") {
            Some(ENDLESS)
        } else {
            None
        }
    })
    .await
}

/// Requests that reached the backend and wait there.
fn waiting(backend: &SlowBackend) -> usize {
    backend.count_to("/slow") + backend.count_to("/endless")
}

/// Wait (up to 2 s) until a request reached the backend and waits there.
async fn wait_for_waiting_request(backend: &SlowBackend) {
    common::wait_until(
        "a request to reach the slow backend",
        100,
        Duration::from_millis(20),
        || async { waiting(backend) > 0 },
    )
    .await;
}

/// Wait up to `timeout` for the balancer to exit, without blocking the runtime.
async fn wait_exit(lb: &mut LbProcess, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = lb.try_status() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a brand-new connection gets: None if refused, else the first bytes of an answer.
async fn try_new_connection(port: u16) -> Option<String> {
    let connect = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    );
    let mut stream = match connect.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            println!("new connection after SIGTERM: {e}");
            return None;
        }
        Err(_) => {
            println!("new connection after SIGTERM: connect timed out");
            return None;
        }
    };
    let request = "GET /after-sigterm HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    println!("new connection after SIGTERM: accepted; read {read:?}, answer {answer:?}");
    Some(answer)
}

/// SIGTERM lets an in-flight slow request finish with 200, refuses new connections, and exits 0 before SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_in_flight_request_and_exits_zero_before_herokus_sigkill() {
    let grace = shipped_key("grace_period_seconds");
    let timeout = shipped_key("graceful_shutdown_timeout_seconds");
    println!(
        "shipped conf: grace_period_seconds {grace}, graceful_shutdown_timeout_seconds {timeout}"
    );
    assert!(
        Duration::from_secs(grace + timeout) < SIGKILL_AFTER,
        "the shipped shutdown budget {grace} s + {timeout} s does not fit in Heroku's 30 s"
    );

    let backend = slow_app().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut lb = with_shipped_conf(&dir)
        .backends(&[backend.url()])
        .start()
        .await;
    let client = common::http_client_with_timeout(SIGKILL_AFTER);
    lb.wait_proxying(&client).await;

    let slow_request = tokio::spawn(common::send(client.get(lb.url_for("/slow-checkout"))));
    wait_for_waiting_request(&backend).await;

    let signalled = Instant::now();
    lb.terminate();
    wait_for_line(&lb, "SIGTERM received").await;
    wait_for_line(&lb, "shutdown: 1 requests in flight").await;
    // The listener is gone once Pingora reports the proxy service's exit
    // (the SIGTERM line comes before the services are told).
    wait_for_line(&lb, "service 'heroku-lb proxy' exited").await;
    let late = try_new_connection(lb.port()).await;
    assert_eq!(
        late, None,
        "a connection opened after SIGTERM must be refused, not accepted"
    );

    let reply = slow_request
        .await
        .expect("the request task did not panic")
        .unwrap_or_else(|e| {
            panic!(
                "the in-flight request failed after SIGTERM: {e}\nstdout:\n{}",
                lb.stdout()
            )
        });
    let answered_after = signalled.elapsed();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, SLOW_APP);
    assert_eq!(
        waiting(&backend),
        1,
        "the slow request was retried or duplicated"
    );

    let status = wait_exit(&mut lb, SIGKILL_AFTER).await;
    let exited_after = signalled.elapsed();
    println!(
        "in-flight request answered {answered_after:?} after SIGTERM; process exited \
         {exited_after:?} after SIGTERM with {status:?}"
    );
    let status = status.unwrap_or_else(|| {
        panic!(
            "heroku-lb still running {SIGKILL_AFTER:?} after SIGTERM (Heroku would SIGKILL it); \
             stdout:\n{}",
            lb.stdout()
        )
    });
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; stdout:\n{}\nstderr:\n{}",
        lb.stdout(),
        lb.stderr()
    );
    let budget = Duration::from_secs(grace + timeout + 1);
    assert!(
        exited_after <= budget,
        "exited {exited_after:?} after SIGTERM, over grace + timeout + 1 s = {budget:?}"
    );
    let stdout = lb.stdout();
    assert!(
        stdout.contains("shutdown: every in-flight request finished"),
        "{stdout}"
    );
    assert!(!stdout.contains("are cut"), "{stdout}");
}

/// A request longer than the grace period is cut when the grace period
/// ends, the client sees its connection end, and the log names the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_grace_period_is_cut_and_the_cut_is_logged() {
    let backend = slow_app().await;
    // The test default: 1 s grace, 1 s shutdown timeout.
    let mut lb = LbBuilder::new().backends(&[backend.url()]).start().await;
    let client = common::http_client_with_timeout(SIGKILL_AFTER);
    lb.wait_proxying(&client).await;
    let endless = tokio::spawn(common::send(client.get(lb.url_for("/endless-export"))));
    wait_for_waiting_request(&backend).await;
    let signalled = Instant::now();
    lb.terminate();
    let status = wait_exit(&mut lb, Duration::from_secs(10)).await;
    let exited_after = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} after {exited_after:?}; stdout:\n{}",
        lb.stdout()
    );
    assert!(exited_after <= Duration::from_secs(3), "{exited_after:?}");
    let outcome = endless.await.expect("the request task did not panic");
    assert!(
        outcome.as_ref().map_or(true, |reply| reply.status != 200),
        "the cut request got a whole answer: {outcome:?}"
    );
    let stdout = lb.stdout();
    let cut: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.contains("shutdown: the grace period ends; 1 requests still in flight are cut")
        })
        .collect();
    assert_eq!(cut.len(), 1, "{stdout}");
    assert!(
        cut[0].contains(&format!(
            "apps=\"{}",
            backend.url().trim_start_matches("http://")
        )),
        "{}",
        cut[0]
    );
}

/// SIGINT is a fast shutdown: the process exits within 3 s, without the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_at_once_without_the_grace_period() {
    let backend = slow_app().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut lb = with_shipped_conf(&dir)
        .backends(&[backend.url()])
        .start()
        .await;
    lb.wait_proxying(&common::http_client()).await;

    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .arg("-INT")
        .arg(lb.pid().to_string())
        .status()
        .expect("run kill -INT");
    assert!(kill.success(), "kill -INT failed");
    let status = wait_exit(&mut lb, Duration::from_secs(3)).await;
    let elapsed = signalled.elapsed();
    println!("SIGINT to exit: {elapsed:?}, status {status:?}");
    let status = status.unwrap_or_else(|| {
        panic!(
            "heroku-lb still running 3 s after SIGINT; stdout:\n{}",
            lb.stdout()
        )
    });
    assert!(
        status.success(),
        "exit status after SIGINT: {status}; stderr:\n{}",
        lb.stderr()
    );
}
