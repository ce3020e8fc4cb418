//! Shared fixtures for the integration tests: the balancer as a child process
//! (`lb`), plain HTTP backends (`backend`), hand-written HTTP/1.1 backends
//! (`raw_backend`) and clients (`raw_client`), backends that answer after a
//! chosen delay (`slow_backend`), a TLS router shared by several apps
//! (`router`), the fake Platform API (`heroku_api`), listeners that keep their
//! port while down (`held_port`), readers of `/_lb/status` and `/_lb/metrics`
//! (`status`) and of the shipped Dockerfile (`dockerfile`), headless Chromium
//! (`browser`), a real redis-server (`redis`), the deploy-day scenario
//! (`deploy_day`), plus the small helpers below.
//! Everything listens on 127.0.0.1 with ports chosen by the kernel, and every
//! wait is bounded by a try count and a deadline, so tests can run in parallel
//! and a broken balancer fails a test instead of hanging it.
//! Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod backend;
pub mod browser;
pub mod deploy_day;
pub mod dockerfile;
pub mod held_port;
pub mod heroku_api;
pub mod lb;
pub mod raw_backend;
pub mod raw_client;
pub mod redis;
pub mod router;
pub mod slow_backend;
pub mod status;

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long one client request may take before the test gives up on it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Directory of the test CA and the router's leaf certificate (see its README).
pub fn certs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/certs")
}

/// The test CA, to pass to the balancer as `SSL_CERT_FILE`.
pub fn ca_pem() -> PathBuf {
    certs_dir().join("ca.pem")
}

/// A CA that did not sign the router's certificate.
pub fn other_ca_pem() -> PathBuf {
    certs_dir().join("other-ca.pem")
}

/// The router's leaf certificate (SANs listed in `router::CERT_HOSTNAMES`).
pub fn router_cert_pem() -> PathBuf {
    certs_dir().join("router.pem")
}

/// The router's private key.
pub fn router_key_pem() -> PathBuf {
    certs_dir().join("router.key")
}

/// A loopback port that was free a moment ago: bind port 0, read it, let it go.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// An outside program a test needs: the path the environment variable `var`
/// names, if set (it must be a file), else the first of `names` found on
/// PATH. Panics naming `what` and how to get it (`install`) when there is
/// none: a missing tool fails its test, never lets it pass unrun.
pub fn required_tool(var: &str, names: &[&str], what: &str, install: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var}={} is not a file: this test needs {what}",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "this test needs {what} and found none of {names:?} on PATH: install it \
         ({install}) or set {var} to its path"
    );
}

/// An HTTP client that ignores proxy variables and gives up after `CLIENT_TIMEOUT`.
pub fn http_client() -> reqwest::Client {
    http_client_with_timeout(CLIENT_TIMEOUT)
}

/// Like `http_client`, with another per-request timeout.
pub fn http_client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("a reqwest client without proxy or TLS options always builds")
}

/// Like `http_client`, but redirects come back to the test instead of being followed.
pub fn http_client_without_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client without proxy or TLS options always builds")
}

/// What a test needs from a response, read to the end.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

/// Send a request and read the whole answer; a transport error is returned as text.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Reply, String> {
    let response = request.send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.map_err(|e| format!("{e:?}"))?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// GET `url`, panicking with the URL and the cause when no answer comes back.
pub async fn get(client: &reqwest::Client, url: &str) -> Reply {
    send(client.get(url))
        .await
        .unwrap_or_else(|e| panic!("GET {url} got no answer: {e}"))
}

/// Call `check` up to `tries` times, `interval` apart, until it returns true.
/// Returns false when the tries or the deadline (`tries × interval`, plus one
/// interval) run out first; a slow `check` is cut off at the deadline.
pub async fn poll_until<F, Fut>(tries: u32, interval: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + interval * (tries + 1);
    for _ in 0..tries {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Ok(true) = tokio::time::timeout(left, check()).await {
            return true;
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    false
}

/// `poll_until`, panicking with `what` when the condition never held.
pub async fn wait_until<F, Fut>(what: &str, tries: u32, interval: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    if !poll_until(tries, interval, check).await {
        panic!(
            "timed out waiting for {what} ({tries} tries, {interval:?} apart, gave up after {:?})",
            started.elapsed()
        );
    }
}
