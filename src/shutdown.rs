//! What a graceful shutdown did to the requests in flight, in the log.
//!
//! On SIGTERM (Heroku's restart, deploy or daily cycling) Pingora stops
//! accepting at once, keeps the runtimes alive for `grace_period_seconds`
//! and then drops them: a request still running is cut without a word.
//! [`ShutdownReport`] is a background service that, when the shutdown
//! starts, logs how many requests are in flight, then either that they all
//! finished, or, just before the grace period ends, how many are about to be
//! cut and at which apps. Input: the in-flight counts of the targets in the
//! `LoadBalancer` (`selection::InFlight`); output: log lines only.

use crate::backend::AppTarget;
use async_trait::async_trait;
use log::{info, warn};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the in-flight count is read during the grace period.
const POLL: Duration = Duration::from_millis(50);
/// How long before the end of the grace period the cut is reported, so the
/// line is written before the runtime goes away.
const REPORT_MARGIN: Duration = Duration::from_millis(250);

/// Logs the fate of in-flight requests during a graceful shutdown.
pub struct ShutdownReport {
    lb: Arc<LoadBalancer<RoundRobin>>,
    grace: Duration,
}

impl ShutdownReport {
    /// A report over the members of `lb`, for a grace period of `grace`.
    pub fn new(lb: Arc<LoadBalancer<RoundRobin>>, grace: Duration) -> Self {
        ShutdownReport { lb, grace }
    }

    /// `(total, "app=count ...")` of the requests in flight now.
    fn in_flight(&self) -> (usize, String) {
        let mut total = 0;
        let mut apps = Vec::new();
        for backend in self.lb.backends().get_backend().iter() {
            if let Some(target) = AppTarget::of(backend) {
                let count = target.in_flight();
                if count > 0 {
                    total += count;
                    apps.push(format!("{}={count}", target.name()));
                }
            }
        }
        (total, apps.join(","))
    }
}

#[async_trait]
impl BackgroundService for ShutdownReport {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Wait for the shutdown to begin (a closed channel: the server is gone).
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let started = Instant::now();
        let (count, apps) = self.in_flight();
        if count == 0 {
            info!("shutdown: no request in flight");
            return;
        }
        info!(
            "shutdown: {count} requests in flight apps=\"{apps}\" grace_period={:?}",
            self.grace
        );
        let report_at = self.grace.saturating_sub(REPORT_MARGIN);
        loop {
            tokio::time::sleep(POLL).await;
            let (count, apps) = self.in_flight();
            if count == 0 {
                info!(
                    "shutdown: every in-flight request finished after {:?}",
                    started.elapsed()
                );
                return;
            }
            if started.elapsed() >= report_at {
                warn!(
                    "shutdown: the grace period ends; {count} requests still in flight are cut \
                     apps=\"{apps}\" (raise grace_period_seconds if they are expected)"
                );
                return;
            }
        }
    }
}
