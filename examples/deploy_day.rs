//! The deploy-day scenario of the tests (`tests/common/deploy_day.rs`), run
//! on its own for `bench/run.py`'s `deploy` scenario: three apps on
//! 127.0.0.1, each "deploying" in turn (its router answers 503 at once for
//! 5 s, then its new dynos serve 200 ms slower for 10 s) while 50 GETs a
//! second run for 60 s, open loop, through the proxy under test.
//!
//! Protocol, one line each way:
//!
//! 1. it starts the apps and prints one JSON line: `ports` (the three apps'
//!    ports, in deploy order), `apps` (their names) and the timeline;
//! 2. it waits for one line `go http://127.0.0.1:PORT` on stdin: the proxy
//!    under test, which `bench/deploy.py` started over those ports;
//! 3. it drives the load through that URL (the timeline starts with it),
//!    waits for the last answer (or its 10 s client timeout) and prints one
//!    JSON line: requests sent, answered 200, failed (by kind), latency
//!    quantiles in ms, 200s by app, and what the apps counted: requests
//!    served while cold and refused with 503, per app. Then it exits.
//!
//! `cargo run --release --example deploy_day`, then type `go URL`.

// tests/common's files, whole. `deploy_day.rs` reaches `raw_backend.rs` as
// `super::raw_backend`, so both live in this `common` module as they do in
// tests/common/mod.rs; the module's `path` is that directory, the files'
// paths are relative to it. They carry helpers and fields this program does
// not use (readers of request heads, `RawRequest::header_values`, ...),
// hence `dead_code` is allowed for the whole module.
#[allow(dead_code)]
#[path = "../tests/common"]
mod common {
    /// `raw_backend.rs` takes the name of the header naming the app
    /// (`x-test-backend`) from `super::backend`. The real `backend.rs` is the
    /// tests' hyper backend and brings the whole fake Platform API
    /// (`heroku_api.rs`) with it; this program needs only that one name, and
    /// it must be the one `deploy_day::drive` reads the answering app from.
    pub mod backend {
        pub use super::deploy_day::APP_HEADER as BACKEND_HEADER;
    }
    #[path = "deploy_day.rs"]
    pub mod deploy_day;
    #[path = "raw_backend.rs"]
    pub mod raw_backend;
}

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;

use common::deploy_day::{self, Scenario, Timeline};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let scenario = Scenario::start().await;
    let ports: Vec<u16> = scenario.apps.iter().map(|app| app.port()).collect();
    let names: Vec<&str> = scenario.apps.iter().map(|app| app.name.as_str()).collect();
    let deploys: Vec<f64> = (0..deploy_day::APPS)
        .map(|index| Timeline::deploy_at(index).as_secs_f64())
        .collect();
    println!(
        "{}",
        json!({
            "ports": ports,
            "apps": names,
            "rate": deploy_day::RATE,
            "run_s": deploy_day::RUN.as_secs_f64(),
            "deploy_at_s": deploys,
            "refusing_s": deploy_day::REFUSING.as_secs_f64(),
            "cold_s": deploy_day::COLD.as_secs_f64(),
            "cold_delay_ms": deploy_day::COLD_DELAY.as_secs_f64() * 1000.0,
            "client_timeout_s": deploy_day::CLIENT_TIMEOUT.as_secs_f64(),
            "health_path": deploy_day::HEALTH_PATH,
        })
    );
    std::io::stdout().flush().expect("flush stdout");

    // The apps answer (health checks, the proxy's first requests) while
    // this waits: read stdin off the runtime's only thread.
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await
    .expect("the stdin reader does not panic")
    .expect("read stdin");
    let base = match line.trim().strip_prefix("go ") {
        Some(url) if url.starts_with("http://") => url.trim().trim_end_matches('/').to_string(),
        _ => {
            eprintln!("deploy_day: expected `go http://127.0.0.1:PORT`, got {line:?}");
            std::process::exit(2);
        }
    };

    let report = deploy_day::drive(&base, &scenario.timeline, |_| {}).await;

    let mut served_by_app = BTreeMap::new();
    let mut cold_by_app = BTreeMap::new();
    let mut refused_by_app = BTreeMap::new();
    for app in &scenario.apps {
        let served = &app.served;
        served_by_app.insert(app.name.clone(), served.total.load(Ordering::Relaxed));
        cold_by_app.insert(app.name.clone(), served.cold.load(Ordering::Relaxed));
        refused_by_app.insert(app.name.clone(), served.refused.load(Ordering::Relaxed));
    }
    let failures: BTreeMap<_, _> = report.failures.iter().collect();
    let ok_by_app: BTreeMap<_, _> = report.by_app.iter().collect();
    println!(
        "{}",
        json!({
            "sent": report.sent,
            "ok": report.ok,
            "failed": report.failed(),
            "failures": failures,
            "p50_ms": report.quantile_ms(0.50),
            "p99_ms": report.quantile_ms(0.99),
            "p999_ms": report.quantile_ms(0.999),
            "max_ms": report.quantile_ms(1.0),
            "ok_by_app": ok_by_app,
            "served_by_app": served_by_app,
            "served_cold": scenario.served_cold(),
            "served_cold_by_app": cold_by_app,
            "refused_by_app": refused_by_app,
        })
    );
    std::io::stdout().flush().expect("flush stdout");
}
