//! Balancing that sees load, for `bench/run.py`'s `mixed` scenario: three
//! CPU-bound "apps" of unequal size behind the proxy under test, and an
//! open-loop load of heavy-tailed requests.
//!
//! **The apps** listen on 127.0.0.1 (`app-1`, `app-2`, `app-3`). Each has a
//! fixed number of workers (`--workers 8,8,4`: the third app is half the
//! size of the others, like an app on fewer dynos): a request waits for a
//! free worker, first come first served (tokio's semaphore is fair), holds it
//! for the request's cost (a sleep standing in for CPU work), then gets
//! `200` with `x-test-backend: app-N`. `/health` is answered at once, not
//! through the workers. A request whose client (the proxy) goes away gives
//! up its place in the line, or its worker (counted as `abandoned`).
//!
//! **The cost** of request `n` comes from the load generator, in the path
//! (`/work/{n}?cost_ms=C`): 90 % cost `--short-ms 10`, 10 % cost
//! `--long-ms 200` (`--long-percent 10`), drawn from a SplitMix64 generator
//! seeded with `--seed 1`, so every proxy sees the same sequence. Mean cost
//! 0.9 × 10 + 0.1 × 200 = 29 ms; capacity = workers ÷ mean cost
//! = 20 ÷ 29 ms ≈ 690 requests a second.
//!
//! Protocol: it prints one JSON line (`ports`, `apps`, `workers`,
//! `mean_cost_ms`, `capacity_rps`, the cost model), then for each line
//! `go URL RATE SECONDS` on stdin sends `RATE × SECONDS` GETs to `URL`, one
//! every 1/RATE s on schedule whatever the answers (open loop; client
//! timeout 30 s), waits for the last answer and prints one JSON line:
//! latency quantiles (ms, from each request's scheduled time: a request
//! the generator sent late counts its lateness), errors (non-200 by status,
//! timeouts, no answer), 503s that carried `Retry-After`, 200s by app, and
//! what each app counted. It exits at the end of stdin.
//!
//! `cargo run --release --example mixed_load`, then `go http://127.0.0.1:8080 480 15`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The header naming the app that answered.
const APP_HEADER: &str = "x-test-backend";
/// How long the generator waits for an answer before counting a timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a request costs: `short_ms` most of the time, `long_ms` for
/// `long_percent` % of requests.
#[derive(Debug, Clone, Copy)]
struct CostModel {
    short_ms: u64,
    long_ms: u64,
    long_percent: u64,
    seed: u64,
}

impl CostModel {
    fn mean_ms(&self) -> f64 {
        let long = self.long_percent as f64 / 100.0;
        (1.0 - long) * self.short_ms as f64 + long * self.long_ms as f64
    }
}

/// SplitMix64: a tiny seeded generator, so the sequence of costs is the same
/// for every proxy and every run (no `rand` in this crate's dependencies).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What one app counted (since it started).
#[derive(Default)]
struct AppStats {
    served: AtomicU64,
    /// Requests waiting for a worker now, and the most at once.
    waiting: AtomicUsize,
    max_waiting: AtomicUsize,
    /// Sum of the time served requests waited for a worker, in µs.
    wait_us: AtomicU64,
    /// Sum of the time served requests held a worker, in µs.
    service_us: AtomicU64,
    /// Requests whose client left before they were served.
    abandoned: AtomicU64,
}

struct App {
    name: String,
    workers: usize,
    pool: Semaphore,
    stats: AppStats,
}

/// Counts a request as waiting for a worker until dropped (served or
/// abandoned alike).
struct Waiting<'a>(&'a AppStats);

impl<'a> Waiting<'a> {
    fn new(stats: &'a AppStats) -> Self {
        let now = stats.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        stats.max_waiting.fetch_max(now, Ordering::Relaxed);
        Waiting(stats)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request as abandoned unless it completes.
struct Served<'a>(&'a AppStats, bool);

impl Drop for Served<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn answer(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        Ok(Response::builder()
            .status(status)
            .header(APP_HEADER, app.name.as_str())
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .expect("a response from valid parts"))
    };
    if request.uri().path().starts_with("/health") {
        return reply(StatusCode::OK, "ok\n".to_string());
    }
    let cost_ms = request
        .uri()
        .query()
        .and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("cost_ms="))
        })
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(10)
        .min(60_000);
    let mut served = Served(&app.stats, false);
    let queued = Instant::now();
    let permit = {
        let _waiting = Waiting::new(&app.stats);
        app.pool
            .acquire()
            .await
            .expect("the worker pool is never closed")
    };
    let waited = queued.elapsed();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(cost_ms)).await;
    let held = start.elapsed();
    drop(permit);
    served.1 = true;
    let stats = &app.stats;
    stats.served.fetch_add(1, Ordering::Relaxed);
    stats
        .wait_us
        .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    stats
        .service_us
        .fetch_add(held.as_micros() as u64, Ordering::Relaxed);
    reply(
        StatusCode::OK,
        format!(
            "{} {cost_ms} ms after {} ms\n",
            app.name,
            waited.as_millis()
        ),
    )
}

/// Serve `app` on 127.0.0.1:0, HTTP/1.1 with keep-alive; returns its port.
async fn serve(app: Arc<App>) -> u16 {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bind an app on 127.0.0.1:0");
    let port = listener.local_addr().expect("a bound address").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors or similar: back off, do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(Arc::clone(&app), request));
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// What the clients of one run saw.
#[derive(Default)]
struct Outcomes {
    /// Latency of every request (failures included), from its scheduled time, ms.
    all_ms: Vec<f64>,
    /// Latency of the requests answered 200, ms.
    ok_ms: Vec<f64>,
    ok_by_app: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    retry_after_503: u64,
}

/// The `q` quantile of `values` (sorted in place), nearest rank.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let at = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[at.min(values.len() - 1)]
}

fn quantiles(values: &mut [f64]) -> serde_json::Value {
    json!({
        "p50": quantile(values, 0.50),
        "p90": quantile(values, 0.90),
        "p99": quantile(values, 0.99),
        "p999": quantile(values, 0.999),
        "max": quantile(values, 1.0),
    })
}

fn snapshot(apps: &[Arc<App>]) -> Vec<[u64; 4]> {
    apps.iter()
        .map(|app| {
            let s = &app.stats;
            [
                s.served.load(Ordering::Relaxed),
                s.wait_us.load(Ordering::Relaxed),
                s.service_us.load(Ordering::Relaxed),
                s.abandoned.load(Ordering::Relaxed),
            ]
        })
        .collect()
}

/// One run: `rate` GETs a second for `seconds` to `base`, open loop.
async fn drive(
    base: &str,
    rate: f64,
    seconds: f64,
    model: CostModel,
    apps: &[Arc<App>],
) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()
        .expect("a plain reqwest client builds");
    let total = (rate * seconds).round() as u64;
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let mut rng = SplitMix64(model.seed);
    let mut long = 0u64;
    let mut cost_sum_ms = 0u64;
    let mut lag_max = Duration::ZERO;
    let before = snapshot(apps);
    for app in apps {
        app.stats.max_waiting.store(0, Ordering::Relaxed);
    }
    let mut requests = tokio::task::JoinSet::new();
    let started = Instant::now() + Duration::from_millis(20);
    for n in 0..total {
        let cost_ms = if rng.next() % 100 < model.long_percent {
            long += 1;
            model.long_ms
        } else {
            model.short_ms
        };
        cost_sum_ms += cost_ms;
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due).await;
        lag_max = lag_max.max(due.elapsed());
        let (client, outcomes) = (client.clone(), Arc::clone(&outcomes));
        let url = format!("{base}/work/{n}?cost_ms={cost_ms}");
        requests.spawn(async move {
            let result = async {
                let response = client.get(&url).send().await?;
                let status = response.status().as_u16();
                let app = response
                    .headers()
                    .get(APP_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let retry_after = response.headers().contains_key("retry-after");
                response.bytes().await?;
                Ok::<_, reqwest::Error>((status, app, retry_after))
            }
            .await;
            let latency_ms = due.elapsed().as_secs_f64() * 1000.0;
            let mut o = outcomes.lock().expect("no panics while holding the lock");
            o.all_ms.push(latency_ms);
            match result {
                Ok((200, app, _)) => {
                    o.ok_ms.push(latency_ms);
                    *o.ok_by_app
                        .entry(app.unwrap_or_else(|| "?".into()))
                        .or_default() += 1;
                }
                Ok((status, _, retry_after)) => {
                    *o.errors.entry(format!("status {status}")).or_default() += 1;
                    if status == 503 && retry_after {
                        o.retry_after_503 += 1;
                    }
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect error"
                    } else {
                        "no answer"
                    };
                    *o.errors.entry(kind.to_string()).or_default() += 1;
                }
            }
        });
    }
    let sending_s = started.elapsed().as_secs_f64();
    while requests.join_next().await.is_some() {}
    let wall_s = started.elapsed().as_secs_f64();
    let after = snapshot(apps);
    let mut o = outcomes.lock().expect("no panics while holding the lock");
    let o = &mut *o;
    let app_reports: Vec<_> = apps
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(app, (b, a))| {
            let served = a[0] - b[0];
            let per = |us: u64| {
                if served == 0 {
                    0.0
                } else {
                    us as f64 / served as f64 / 1000.0
                }
            };
            json!({
                "name": app.name,
                "workers": app.workers,
                "served": served,
                "mean_wait_ms": per(a[1] - b[1]),
                "mean_service_ms": per(a[2] - b[2]),
                "abandoned": a[3] - b[3],
                "max_waiting": app.stats.max_waiting.load(Ordering::Relaxed),
                "in_app_at_end": app.workers - app.pool.available_permits()
                    + app.stats.waiting.load(Ordering::Relaxed),
            })
        })
        .collect();
    let errors_total: u64 = o.errors.values().sum();
    json!({
        "rate": rate,
        "seconds": seconds,
        "sent": total,
        "ok": o.ok_ms.len(),
        "errors_total": errors_total,
        "errors": o.errors,
        "retry_after_503": o.retry_after_503,
        "latency_ms": quantiles(&mut o.all_ms),
        "ok_latency_ms": quantiles(&mut o.ok_ms),
        "ok_by_app": o.ok_by_app,
        "apps": app_reports,
        "long_requests": long,
        "offered_mean_cost_ms": if total == 0 { 0.0 } else { cost_sum_ms as f64 / total as f64 },
        "generator_lag_max_ms": lag_max.as_secs_f64() * 1000.0,
        "sending_s": sending_s,
        "last_answer_s": wall_s,
    })
}

fn usage(message: &str) -> ! {
    eprintln!(
        "mixed_load: {message}\nusage: mixed_load [--workers 8,8,4] [--seed 1] [--short-ms 10] \
         [--long-ms 200] [--long-percent 10]; then `go URL RATE SECONDS` lines on stdin"
    );
    std::process::exit(2)
}

fn read_line() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut workers = vec![8usize, 8, 4];
    let mut model = CostModel {
        short_ms: 10,
        long_ms: 200,
        long_percent: 10,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{arg}: a number")))
        };
        match arg.as_str() {
            "--workers" => {
                workers = value
                    .split(',')
                    .map(|w| w.trim().parse().ok().filter(|w| *w > 0))
                    .collect::<Option<Vec<usize>>>()
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| usage("--workers N,N,... (each 1 or more)"))
            }
            "--seed" => model.seed = number(),
            "--short-ms" => model.short_ms = number(),
            "--long-ms" => model.long_ms = number(),
            "--long-percent" => model.long_percent = number().min(100),
            _ => usage(&format!("unknown argument {arg}")),
        }
    }

    let mut apps = Vec::new();
    let mut ports = Vec::new();
    for (index, &w) in workers.iter().enumerate() {
        let app = Arc::new(App {
            name: format!("app-{}", index + 1),
            workers: w,
            pool: Semaphore::new(w),
            stats: AppStats::default(),
        });
        ports.push(serve(Arc::clone(&app)).await);
        apps.push(app);
    }
    let total_workers: usize = workers.iter().sum();
    let mean = model.mean_ms();
    println!(
        "{}",
        json!({
            "ports": ports,
            "apps": apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            "workers": workers,
            "short_ms": model.short_ms,
            "long_ms": model.long_ms,
            "long_percent": model.long_percent,
            "seed": model.seed,
            "mean_cost_ms": mean,
            "capacity_rps": total_workers as f64 * 1000.0 / mean,
            "client_timeout_s": CLIENT_TIMEOUT.as_secs_f64(),
        })
    );
    std::io::stdout().flush().expect("flush stdout");

    // The apps serve while this waits: read stdin off the runtime's thread.
    while let Some(line) = tokio::task::spawn_blocking(read_line)
        .await
        .expect("the stdin reader does not panic")
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (url, rate, seconds) = match fields.as_slice() {
            ["go", url, rate, seconds] => (
                url.trim_end_matches('/'),
                rate.parse::<f64>().ok().filter(|r| *r > 0.0),
                seconds.parse::<f64>().ok().filter(|s| *s > 0.0),
            ),
            [] => continue,
            _ => usage(&format!("expected `go URL RATE SECONDS`, got {line:?}")),
        };
        let (Some(rate), Some(seconds)) = (rate, seconds) else {
            usage(&format!("bad RATE or SECONDS in {line:?}"));
        };
        let report = drive(url, rate, seconds, model, &apps).await;
        println!("{report}");
        std::io::stdout().flush().expect("flush stdout");
    }
}
