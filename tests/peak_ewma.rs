//! `LB_POLICY=peak_ewma`: power of two choices over each app's peak-EWMA
//! latency × (requests in flight + 1). An app that slows down loses its
//! traffic within seconds (the estimate jumps at its first slow answer),
//! and gets it back once it answers fast again (the estimate decays over
//! about 10 s). Status shows each app's estimate and cost.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::BACKEND_HEADER;
use common::lb::{LbBuilder, LbProcess};
use common::slow_backend::SlowBackend;
use common::status::status;

/// Every app's own latency when nothing is wrong: a real app takes a few ms.
const BASE: Duration = Duration::from_millis(20);
/// The slow-down of the test.
const SLOW: Duration = Duration::from_millis(500);
/// Clients sending one request after another, together.
const CLIENTS: usize = 12;

/// Three apps whose latency the test sets (`delays[i]`, in ms), checks answered at once.
async fn apps(delays: &[Arc<AtomicU64>]) -> Vec<SlowBackend> {
    let mut apps = Vec::new();
    for (i, delay) in delays.iter().enumerate() {
        let delay = Arc::clone(delay);
        apps.push(
            SlowBackend::start(&format!("ewma-{}", i + 1), move |path| {
                (!path.starts_with("/health"))
                    .then(|| Duration::from_millis(delay.load(Ordering::Relaxed)))
            })
            .await,
        );
    }
    apps
}

/// Load from `CLIENTS` clients until `stop`; every answer's app is pushed
/// with its time into `seen`.
fn load(
    lb: &LbProcess,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|c| {
            let (url, seen, stop) = (lb.url(), Arc::clone(&seen), Arc::clone(&stop));
            tokio::spawn(async move {
                let client = common::http_client();
                let mut n = 0u64;
                while stop.load(Ordering::Relaxed) == 0 {
                    n += 1;
                    if let Ok(reply) = common::send(client.get(format!("{url}/work/{c}/{n}"))).await
                    {
                        let app = reply
                            .headers
                            .get(BACKEND_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("?")
                            .to_string();
                        seen.lock().unwrap().push((Instant::now(), app));
                    }
                }
            })
        })
        .collect()
}

/// The share `app` had of the answers in [from, to).
fn share(seen: &[(Instant, String)], app: &str, from: Instant, to: Instant) -> f64 {
    let window: Vec<&String> = seen
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, app)| app)
        .collect();
    let hits = window.iter().filter(|name| name.as_str() == app).count();
    hits as f64 / window.len().max(1) as f64
}

/// An app that becomes 500 ms slower falls below a 10 % share within 10 s, and its share comes back once it is fast again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_away_from_an_app_that_slows_down_and_comes_back() {
    let delays: Vec<Arc<AtomicU64>> = (0..3)
        .map(|_| Arc::new(AtomicU64::new(BASE.as_millis() as u64)))
        .collect();
    let backends = apps(&delays).await;
    let urls: Vec<String> = backends.iter().map(SlowBackend::url).collect();
    let lb = LbBuilder::new()
        .backends(&urls)
        .env("LB_POLICY", "peak_ewma")
        .env("HEALTH_CHECK_PATH", "/health")
        .env("HEALTH_CHECK_INTERVAL", "1")
        .server_config("threads", "2")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicU64::new(0));
    let clients = load(&lb, Arc::clone(&seen), Arc::clone(&stop));

    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let slow_app = backends[1].name().to_string();
    let before = share(&seen.lock().unwrap(), &slow_app, started, Instant::now());
    println!("share of {slow_app} before: {:.1}%", before * 100.0);
    assert!(before > 0.2, "an even start: {before}");

    let slowed = Instant::now();
    delays[1].store(SLOW.as_millis() as u64, Ordering::Relaxed);
    let mut fell_after = None;
    for second in 1..=10u64 {
        tokio::time::sleep_until((slowed + Duration::from_secs(second)).into()).await;
        let at = Instant::now();
        let last = share(
            &seen.lock().unwrap(),
            &slow_app,
            at - Duration::from_secs(1),
            at,
        );
        println!(
            "{second} s after the slow-down: {:.1}% in the last second",
            last * 100.0
        );
        if last < 0.10 && fell_after.is_none() {
            fell_after = Some(second);
        }
    }
    let fell_after = fell_after.expect("the slow app kept 10 % or more for 10 s");
    let status = status(&client, &lb).await;
    let entry = status["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["url"] == backends[1].url().as_str()))
        .cloned()
        .unwrap_or_default();
    println!(
        "status of the slow app: ewma {} ms, cost {}",
        entry["latency_ewma_ms"], entry["cost"]
    );
    assert!(
        entry["latency_ewma_ms"].as_f64().unwrap_or(0.0) > 100.0,
        "{entry:#}"
    );
    assert!(entry["cost"].as_f64().is_some(), "{entry:#}");

    delays[1].store(BASE.as_millis() as u64, Ordering::Relaxed);
    let healed = Instant::now();
    let mut back_after = None;
    for second in 1..=60u64 {
        tokio::time::sleep_until((healed + Duration::from_secs(second)).into()).await;
        let at = Instant::now();
        let last = share(
            &seen.lock().unwrap(),
            &slow_app,
            at - Duration::from_secs(3),
            at,
        );
        if second % 5 == 0 {
            println!(
                "{second} s after it is fast again: {:.1}% over the last 3 s",
                last * 100.0
            );
        }
        if last > 0.2 {
            back_after = Some(second);
            break;
        }
    }
    stop.store(1, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    println!("below 10 % after {fell_after} s; back above 20 % after {back_after:?} s");
    assert!(back_after.is_some(), "the app never got its share back");
    let counts: HashMap<String, usize> =
        seen.lock()
            .unwrap()
            .iter()
            .fold(HashMap::new(), |mut m, (_, app)| {
                *m.entry(app.clone()).or_default() += 1;
                m
            });
    println!("answers by app: {counts:?}");
}
