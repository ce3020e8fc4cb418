//! Deploy day: three apps behind the balancer under 50 GETs a second for
//! 60 s, each deploying in turn without preboot: its router answers 503 at
//! once for 5 s, then its new dynos serve cold (+200 ms) for 10 s
//! (`common/deploy_day.rs`). Run side by side, each on its own apps:
//! heroku-lb without slow start (round robin's baseline), heroku-lb as
//! shipped (slow start, retries of quick refusals) with webhooks off and
//! on, and HAProxy at its best (`retry-on 503`, `redispatch`, `slowstart`,
//! `observe layer7`). heroku-lb must fail no request, and with slow start
//! send the cold apps at most a third of what round robin sends them, and
//! no more than HAProxy's slow start does.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::deploy_day::{drive, LoadReport, Scenario, Timeline, HEALTH_PATH, REFUSING};
use common::heroku_api::{AppId, FakeHerokuApi};
use common::lb::{LbBuilder, LbProcess};
use serde_json::json;

const SECRET: &str = "whsec-deploy-day";

/// What one run saw.
struct Outcome {
    name: &'static str,
    report: LoadReport,
    served_cold: usize,
}

impl Outcome {
    fn line(&self) -> String {
        format!(
            "{:<36} failed {:>3} of {:>4}   p99 {:>6.0} ms   served by a cold app {:>4}   {:?}",
            self.name,
            self.report.failed(),
            self.report.sent,
            self.report.quantile_ms(0.99),
            self.served_cold,
            self.report.failures
        )
    }
}

/// heroku-lb in static mode over the scenario's apps, checks every second.
async fn static_heroku_lb(name: &'static str, slow_start: &str) -> Outcome {
    let scenario = Scenario::start().await;
    let urls: Vec<String> = scenario.apps.iter().map(|app| app.url()).collect();
    let lb = LbBuilder::new()
        .backends(&urls)
        .health_check_path(HEALTH_PATH)
        .env("HEALTH_CHECK_INTERVAL", "1")
        .env("LB_SLOW_START_SECONDS", slow_start)
        // Shipped defaults (the test builder turns retries off).
        .env("LB_RETRY_5XX_WITHIN_MS", "1000")
        .start()
        .await;
    lb.wait_proxying(&common::http_client()).await;
    run(name, &scenario, &lb, |_| {}).await
}

/// heroku-lb in pipeline mode with webhooks: each deploy delivers its
/// release (no preboot: drain) and, when the new dynos are up, a dyno event.
async fn heroku_lb_with_webhooks() -> Outcome {
    let scenario = Scenario::start().await;
    let api = FakeHerokuApi::start("hrku-test-key-deploy-day");
    let pipeline = api.add_pipeline("deploy-day");
    let ids: Vec<AppId> = scenario
        .apps
        .iter()
        .map(|app| {
            api.add_app(common::heroku_api::AppFixture::new(
                &app.name,
                &pipeline,
                &format!("{}/", app.url()),
            ))
        })
        .collect();
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .health_check_path(HEALTH_PATH)
        .env("HEALTH_CHECK_INTERVAL", "1")
        .env("DISCOVERY_INTERVAL", "30")
        .env("LB_WEBHOOK_SECRET", SECRET)
        // Shipped defaults (the test builder turns them off).
        .env("LB_SLOW_START_SECONDS", "30")
        .env("LB_RETRY_5XX_WITHIN_MS", "1000")
        .start()
        .await;
    lb.wait_proxying(&common::http_client()).await;
    let hook = lb.url_for("/_lb/hooks/heroku");
    for id in &ids {
        api.subscribe(id, &hook, SECRET, &["api:release", "dyno"]);
    }
    let mut delivered = vec![(false, false); ids.len()];
    let outcome = run("heroku-lb, webhooks", &scenario, &lb, |elapsed| {
        for (index, id) in ids.iter().enumerate() {
            let deploy = Timeline::deploy_at(index);
            if elapsed >= deploy && !delivered[index].0 {
                delivered[index].0 = true;
                api.release(id);
            }
            if elapsed >= deploy + REFUSING && !delivered[index].1 {
                delivered[index].1 = true;
                let data =
                    api.event_data(id, json!({"state": "up", "type": "web", "name": "web.1"}));
                api.deliver(id, "dyno", "update", data);
            }
        }
    })
    .await;
    assert!(
        lb.lines_with("webhook event=\"api:release update (succeeded)\"")
            .len()
            == 3,
        "the three releases did not arrive:\n{}",
        lb.output()
    );
    outcome
}

async fn run(
    name: &'static str,
    scenario: &Scenario,
    lb: &LbProcess,
    on_tick: impl FnMut(Duration),
) -> Outcome {
    let report = drive(&lb.url(), &scenario.timeline, on_tick).await;
    Outcome {
        name,
        report,
        served_cold: scenario.served_cold(),
    }
}

/// HAProxy 2.6, configured as its documentation suggests for this.
struct Haproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy(ports: &[u16]) -> Haproxy {
    let binary: PathBuf = common::required_tool(
        "HAPROXY",
        &["haproxy"],
        "HAProxy",
        "sudo apt-get install -y haproxy",
    );
    let dir = tempfile::tempdir().expect("a tempdir for haproxy");
    let port = common::free_port();
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server app{i} 127.0.0.1:{p} check\n"))
        .collect();
    let config = format!(
        "global\n  maxconn 2000\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  \
         option http-keep-alive\n  retries 2\n  option redispatch 1\n  \
         retry-on 503 conn-failure empty-response response-timeout\n\
         frontend deploy\n  bind 127.0.0.1:{port}\n  default_backend apps\n\
         backend apps\n  balance roundrobin\n  option httpchk GET {HEALTH_PATH}\n  http-reuse always\n  \
         default-server inter 1s fall 2 rise 2 slowstart 10s observe layer7 error-limit 5 on-error mark-down\n\
         {servers}"
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    let child = Command::new(binary)
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    Haproxy {
        child,
        port,
        _dir: dir,
    }
}

async fn haproxy_run() -> Outcome {
    let scenario = Scenario::start().await;
    let ports: Vec<u16> = scenario.apps.iter().map(|app| app.port()).collect();
    let proxy = haproxy(&ports);
    let base = format!("http://127.0.0.1:{}", proxy.port);
    common::wait_until("HAProxy proxying", 100, Duration::from_millis(100), || {
        let url = format!("{base}/warmup");
        async move {
            matches!(common::send(common::http_client().get(url)).await, Ok(r) if r.status == 200)
        }
    })
    .await;
    // Its checks see every server up (rise 2 at 1 s) before the load starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = drive(&base, &scenario.timeline, |_| {}).await;
    Outcome {
        name: "HAProxy (retry-on 503, slowstart 10s)",
        report,
        served_cold: scenario.served_cold(),
    }
}

/// No client request fails through heroku-lb on deploy day, and with slow start the cold apps serve at most a third of what round robin sends them, and no more than under HAProxy's slowstart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_cost_clients_nothing_and_cold_apps_ramp_up() {
    let (baseline, shipped, webhooks, haproxy) = tokio::join!(
        static_heroku_lb("heroku-lb, no slow start", "0"),
        static_heroku_lb("heroku-lb (slow start 30 s)", "30"),
        heroku_lb_with_webhooks(),
        haproxy_run(),
    );
    for outcome in [&baseline, &shipped, &webhooks, &haproxy] {
        println!("{}", outcome.line());
    }
    for outcome in [&baseline, &shipped, &webhooks] {
        assert_eq!(outcome.report.failed(), 0, "{}", outcome.line());
    }
    for outcome in [&shipped, &webhooks] {
        assert!(
            outcome.served_cold * 3 <= baseline.served_cold,
            "{}: {} cold against round robin's {}",
            outcome.name,
            outcome.served_cold,
            baseline.served_cold
        );
        assert!(
            outcome.served_cold <= haproxy.served_cold,
            "{}: {} cold against HAProxy's {}",
            outcome.name,
            outcome.served_cold,
            haproxy.served_cold
        );
    }
}
