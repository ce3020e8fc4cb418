//! The deploy-day scenario: three apps behind a balancer under a steady 50
//! GETs a second for 60 s, each app "deploying" in turn the way a Heroku app
//! without preboot does. For [`REFUSING`] its router answers every request
//! at once with 503 (an H20/H10 error page: the app never sees it), then the
//! new dynos serve cold, [`COLD_DELAY`] slower, for [`COLD`], then normally.
//!
//! `tests/deploy_day.rs` runs it through heroku-lb (webhooks on and off,
//! slow start on and off) and through HAProxy; `examples/deploy_day.rs`
//! includes this file whole for `bench/run.py`'s `deploy` scenario. What it
//! reports: requests that failed (anything but a 200, or no answer), their
//! latency, and how many each app served while cold, counted by the apps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::raw_backend::{named_ok, serve_keep_alive, RawRequest, RawServer};

/// Apps in the scenario.
pub const APPS: usize = 3;
/// Client requests a second, sent on a fixed schedule (open loop).
pub const RATE: u32 = 50;
/// How long the load runs.
pub const RUN: Duration = Duration::from_secs(60);
/// When the first app deploys, after the load starts; the others follow
/// every [`DEPLOY_SPACING`].
pub const FIRST_DEPLOY: Duration = Duration::from_secs(8);
pub const DEPLOY_SPACING: Duration = Duration::from_secs(17);
/// How long an app's router answers 503 at once.
pub const REFUSING: Duration = Duration::from_secs(5);
/// How long its new dynos then serve cold.
pub const COLD: Duration = Duration::from_secs(10);
/// What a cold dyno adds to each request.
pub const COLD_DELAY: Duration = Duration::from_millis(200);
/// The apps' health-check path (requests to it are not counted).
pub const HEALTH_PATH: &str = "/health";
/// The header naming the app that answered.
pub const APP_HEADER: &str = "x-test-backend";
/// How long a client request may take before it counts as failed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an app is in its deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Normal,
    /// Its router answers 503 at once.
    Refusing,
    /// Its new dynos answer [`COLD_DELAY`] slower.
    Cold,
}

/// The clock of one run: every app's phase follows from the time since
/// [`Timeline::start`]; before it, every app is normal.
#[derive(Debug, Default)]
pub struct Timeline {
    started: Mutex<Option<Instant>>,
}

impl Timeline {
    /// The load starts now.
    pub fn start(&self) {
        *self.started.lock().unwrap() = Some(Instant::now());
    }

    /// When app `index` starts deploying, from the start.
    pub fn deploy_at(index: usize) -> Duration {
        FIRST_DEPLOY + DEPLOY_SPACING * index as u32
    }

    /// Where app `index` is now.
    pub fn phase(&self, index: usize) -> Phase {
        let Some(started) = *self.started.lock().unwrap() else {
            return Phase::Normal;
        };
        let elapsed = started.elapsed();
        let deploy = Self::deploy_at(index);
        if elapsed < deploy {
            Phase::Normal
        } else if elapsed < deploy + REFUSING {
            Phase::Refusing
        } else if elapsed < deploy + REFUSING + COLD {
            Phase::Cold
        } else {
            Phase::Normal
        }
    }
}

/// What one app served, counted by the app (health checks left out).
#[derive(Debug, Default)]
pub struct Served {
    pub total: AtomicUsize,
    pub cold: AtomicUsize,
    /// Requests its router refused (503) while it deployed.
    pub refused: AtomicUsize,
}

/// One app of the scenario on 127.0.0.1:0, answering by its phase.
pub struct DeployApp {
    pub name: String,
    pub served: Arc<Served>,
    server: RawServer,
}

impl DeployApp {
    /// App `index` (named `deploy-{index+1}`) following `timeline`.
    pub async fn start(index: usize, timeline: Arc<Timeline>) -> DeployApp {
        let name = format!("deploy-{}", index + 1);
        let served = Arc::new(Served::default());
        let server = RawServer::start({
            let (name, served) = (name.clone(), Arc::clone(&served));
            move |stream| {
                let (name, served, timeline) =
                    (name.clone(), Arc::clone(&served), Arc::clone(&timeline));
                serve_keep_alive(stream, move |request: RawRequest| {
                    let (name, served, timeline) =
                        (name.clone(), Arc::clone(&served), Arc::clone(&timeline));
                    async move { answer(&name, &served, timeline.phase(index), &request).await }
                })
            }
        })
        .await;
        DeployApp {
            name,
            served,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }
}

async fn answer(name: &str, served: &Served, phase: Phase, request: &RawRequest) -> String {
    let check = request.path.starts_with(HEALTH_PATH);
    match phase {
        Phase::Refusing => {
            if !check {
                served.refused.fetch_add(1, Ordering::Relaxed);
            }
            let page = "<html><body>Application error (H20 App boot timeout)</body></html>";
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html\r\n\
                 content-length: {}\r\n\r\n{page}",
                page.len()
            )
        }
        Phase::Cold => {
            tokio::time::sleep(COLD_DELAY).await;
            if !check {
                served.total.fetch_add(1, Ordering::Relaxed);
                served.cold.fetch_add(1, Ordering::Relaxed);
            }
            named_ok(name, "x-served-cold: 1\r\n")
        }
        Phase::Normal => {
            if !check {
                served.total.fetch_add(1, Ordering::Relaxed);
            }
            named_ok(name, "")
        }
    }
}

/// The apps of one run and their clock.
pub struct Scenario {
    pub timeline: Arc<Timeline>,
    pub apps: Vec<DeployApp>,
}

impl Scenario {
    pub async fn start() -> Scenario {
        let timeline = Arc::new(Timeline::default());
        let mut apps = Vec::with_capacity(APPS);
        for index in 0..APPS {
            apps.push(DeployApp::start(index, Arc::clone(&timeline)).await);
        }
        Scenario { timeline, apps }
    }

    /// Requests the apps served while cold, in all.
    pub fn served_cold(&self) -> usize {
        self.apps
            .iter()
            .map(|app| app.served.cold.load(Ordering::Relaxed))
            .sum()
    }
}

/// What the clients saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub sent: usize,
    /// Requests answered 200.
    pub ok: usize,
    /// Every other outcome: `status 503`, `no answer: ...`, counted.
    pub failures: HashMap<String, usize>,
    /// Latency of every request, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// 200 answers by the app that gave them.
    pub by_app: HashMap<String, usize>,
}

impl LoadReport {
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    /// The `q` quantile of the latencies (0.99: p99), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return 0.0;
        }
        let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted[at.min(sorted.len() - 1)]
    }
}

/// Send GETs to `base` (`http://127.0.0.1:PORT`) at [`RATE`] a second for
/// [`RUN`], each on the schedule whatever the others do (open loop), and
/// wait for the last answer. `on_tick(elapsed)` runs every second of the
/// run (the test delivers webhook events from it).
pub async fn drive(
    base: &str,
    timeline: &Timeline,
    mut on_tick: impl FnMut(Duration),
) -> LoadReport {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .pool_max_idle_per_host(64)
        .build()
        .expect("a plain reqwest client builds");
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let mut requests = tokio::task::JoinSet::new();
    let gap = Duration::from_secs(1) / RATE;
    let total = (RUN.as_secs() as u32 * RATE) as usize;
    timeline.start();
    let started = tokio::time::Instant::now();
    let mut next_tick = Duration::ZERO;
    for n in 0..total {
        let due = started + gap * n as u32;
        tokio::time::sleep_until(due).await;
        let elapsed = started.elapsed();
        if elapsed >= next_tick {
            on_tick(elapsed);
            next_tick += Duration::from_secs(1);
        }
        let (client, report) = (client.clone(), Arc::clone(&report));
        let url = format!("{base}/work/{n}");
        requests.spawn(async move {
            let sent = Instant::now();
            let outcome = client.get(&url).send().await;
            let latency = sent.elapsed().as_secs_f64() * 1000.0;
            let mut report = report.lock().unwrap();
            report.sent += 1;
            report.latencies_ms.push(latency);
            match outcome {
                Ok(response) if response.status().as_u16() == 200 => {
                    report.ok += 1;
                    let app = response
                        .headers()
                        .get(APP_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("?")
                        .to_string();
                    *report.by_app.entry(app).or_default() += 1;
                }
                Ok(response) => {
                    *report
                        .failures
                        .entry(format!("status {}", response.status().as_u16()))
                        .or_default() += 1;
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else {
                        "no answer"
                    };
                    *report.failures.entry(kind.to_string()).or_default() += 1;
                }
            }
        });
    }
    while requests.join_next().await.is_some() {}
    let report = report.lock().unwrap().clone();
    report
}
