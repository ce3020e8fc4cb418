//! When a target may take traffic, and how much: its first passing check
//! (admission), Pingora's rise/fall thresholds mirrored for events, passive
//! ejection's flag and failure runs, slow start after every admission, and
//! a restart after a release without preboot (no new requests until `rise`
//! checks pass).
//!
//! Input: active check results (`health.rs`), answers and failures on live
//! traffic (`ejection.rs`), release events (`discovery/`). Output: the
//! flags `routable()` reads on the request path, the slow-start ramp
//! selection weighs by, and the events status lists. Slow start is
//! HAProxy's `slowstart` and Envoy's `slow_start_config`: a cold Heroku dyno
//! (after a deploy, the daily restart, a crash) answers slowly for its first
//! seconds, so its share grows linearly from [`RAMP_FLOOR`] to full.

use super::AppTarget;
use crate::events::{self, EventKind};
use crate::metrics::metrics;
use crate::time::monotonic_ms;
use log::{info, warn};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// The share a slow-starting target gets at first, in 1/65,536ths of its
/// full share (5 %): HAProxy starts near zero, Envoy at 10 %; a cold dyno
/// that answers at all can take a twentieth of its share.
pub const RAMP_FLOOR: u32 = 65_536 / 20;

/// A full share, in the same fixed point as [`RAMP_FLOOR`].
pub const FULL_SHARE: u32 = 65_536;

/// The outcome of the last active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub ok: bool,
    /// `ok`, or the reason it failed: `refused`, `timeout`, `status 503` …
    pub detail: String,
    pub at: SystemTime,
}

/// Health as heroku-lb tracks it beside Pingora's own health flag.
#[derive(Debug, Default)]
pub(super) struct HealthRecord {
    last: Option<CheckOutcome>,
    consecutive_failures: u32,
    consecutive_successes: u32,
    /// Active checks have failed `fall` times in a row and not yet passed
    /// `rise` times: the same rule Pingora's health flag follows (it starts
    /// healthy too), tracked here so the transition can be recorded as an event.
    checks_failing: bool,
    /// Draining for a restart (a release without preboot) until `rise`
    /// checks in a row pass.
    pub(super) restarting: bool,
}

impl AppTarget {
    /// Record an active check. `rise` passing checks in a row end an ejection
    /// and a run of failures; `fall` failing ones start such a run. Pingora
    /// logs its own health transitions; the events for status are recorded
    /// here, and returned (the caller has no use for them but tests do).
    pub fn record_check(&self, outcome: CheckOutcome, rise: u32, fall: u32) -> Vec<EventKind> {
        let mut recorded = Vec::new();
        let mut record = |kind: EventKind, text: String| {
            events::record(kind, Some(&self.name), text);
            recorded.push(kind);
        };
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if outcome.ok {
            health.consecutive_failures = 0;
            health.consecutive_successes = health.consecutive_successes.saturating_add(1);
            // Every way back into rotation starts a slow start (a cold
            // dyno), but the very first round's admissions (all cold alike).
            let mut ramp = false;
            if !self.admitted.swap(true, Ordering::Relaxed) {
                info!(
                    "backend app={} url={} admitted: first health check passed",
                    self.name, self.url
                );
                record(EventKind::Admitted, "first health check passed".into());
                ramp |= self.ramp_on_admission.load(Ordering::Relaxed);
            }
            if health.checks_failing && health.consecutive_successes >= rise.max(1) {
                health.checks_failing = false;
                record(EventKind::Up, format!("{rise} health checks passed"));
                ramp = true;
            }
            if health.consecutive_successes >= rise && self.ejected.swap(false, Ordering::Relaxed) {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
                info!(
                    "backend app={} url={} ejected -> healthy reason=\"{rise} health checks passed\"",
                    self.name, self.url
                );
                record(
                    EventKind::EjectionEnded,
                    format!("ejected -> healthy: {rise} health checks passed"),
                );
                ramp = true;
            }
            if health.restarting && health.consecutive_successes >= rise.max(1) {
                health.restarting = false;
                self.draining.store(false, Ordering::Relaxed);
                info!(
                    "backend app={} url={} restarted: {rise} health checks passed",
                    self.name, self.url
                );
                record(
                    EventKind::Restarted,
                    format!("restarted: {rise} health checks passed"),
                );
                ramp = true;
            }
            if ramp {
                self.start_ramp();
            }
        } else {
            health.consecutive_successes = 0;
            health.consecutive_failures = health.consecutive_failures.saturating_add(1);
            if !health.checks_failing && health.consecutive_failures >= fall.max(1) {
                health.checks_failing = true;
                record(
                    EventKind::Down,
                    format!(
                        "{} health checks failed, last: {}",
                        health.consecutive_failures, outcome.detail
                    ),
                );
            }
        }
        health.last = Some(outcome);
        recorded
    }

    /// The last check and the failures in a row, for status.
    pub fn health_view(&self) -> (Option<CheckOutcome>, u32) {
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        (health.last.clone(), health.consecutive_failures)
    }

    /// Take the target out of rotation now, because of live traffic.
    /// Returns whether this call ejected it. Only `ejection.rs` calls this,
    /// after checking the ejection cap.
    pub(crate) fn eject(&self, reason: &str) -> bool {
        if self.ejected.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .consecutive_successes = 0;
        self.cap_logged.store(false, Ordering::Relaxed);
        metrics()
            .passive_ejections
            .with_label_values(&[self.name.as_str()])
            .inc();
        warn!(
            "backend app={} url={} healthy -> ejected reason=\"{reason}\"",
            self.name, self.url
        );
        events::record(
            EventKind::Ejected,
            Some(&self.name),
            format!("healthy -> ejected: {reason}"),
        );
        true
    }

    /// Whether the ejection cap keeping this target in still has to be
    /// logged: true once per run of failures.
    pub(crate) fn first_capped(&self) -> bool {
        !self.cap_logged.swap(true, Ordering::Relaxed)
    }

    /// Record a live response. Returns the failures in a row when a 5xx
    /// brought them to `threshold` or more (0: never), i.e. when the target
    /// should be ejected.
    pub fn record_response(&self, status: u16, threshold: u32) -> Option<u32> {
        if status >= 500 {
            self.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
            self.record_failure(threshold)
        } else {
            if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
            }
            if self.cap_logged.load(Ordering::Relaxed) {
                self.cap_logged.store(false, Ordering::Relaxed);
            }
            None
        }
    }

    /// Record a failure on live traffic that is not a 5xx answer (a read
    /// timeout); it extends the same run as 5xx answers do.
    pub fn record_failure(&self, threshold: u32) -> Option<u32> {
        let run = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        (threshold > 0 && run >= threshold).then_some(run)
    }

    /// Whether the first discovery round made this target: then its
    /// admission starts no slow start.
    pub(crate) fn set_ramp_on_admission(&self, ramp: bool) {
        self.ramp_on_admission.store(ramp, Ordering::Relaxed);
    }

    /// Begin a slow start now: the share ramps from [`RAMP_FLOOR`] to full
    /// over the selector's window.
    pub fn start_ramp(&self) {
        self.ramp_since_ms
            .store(monotonic_ms().max(1), Ordering::Relaxed);
        self.ramp_credit.store(0, Ordering::Relaxed);
    }

    /// This target's share now, in 1/65,536ths of its full share, over a
    /// slow-start `window` (zero: off); the ramp ends itself when full.
    pub fn share(&self, window: Duration) -> u32 {
        let since = self.ramp_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return FULL_SHARE;
        }
        let window_ms = window.as_millis() as u64;
        let elapsed = monotonic_ms().saturating_sub(since);
        if window_ms == 0 || elapsed >= window_ms {
            self.ramp_since_ms.store(0, Ordering::Relaxed);
            return FULL_SHARE;
        }
        let span = u64::from(FULL_SHARE - RAMP_FLOOR);
        RAMP_FLOOR + (span * elapsed / window_ms) as u32
    }

    /// Whether round robin, landing on this slow-starting target, sends it
    /// the request: each landing earns `share`, a whole share is spent on a
    /// request, so its requests follow its share exactly.
    pub(crate) fn take_ramp_turn(&self, share: u32) -> bool {
        let credit = self.ramp_credit.fetch_add(share, Ordering::Relaxed) + share;
        if credit >= FULL_SHARE {
            self.ramp_credit.fetch_sub(FULL_SHARE, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Heroku restarts the app's dynos (a release without preboot): no new
    /// requests until `rise` checks in a row pass, then a slow start.
    pub fn start_restart(&self, why: &str) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health.consecutive_successes = 0;
        if !self.draining.swap(true, Ordering::Relaxed) {
            health.restarting = true;
            info!(
                "backend app={} url={} draining reason=\"{why}\": no new requests until its \
                 checks pass",
                self.name, self.url
            );
            events::record(
                EventKind::Draining,
                Some(&self.name),
                format!("draining: {why}"),
            );
        }
    }

    /// The target left the pipeline's serving set: no new request, ever.
    pub(crate) fn start_leaving(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restarting = false;
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendUrl;

    #[test]
    fn checks_record_admission_down_after_fall_and_up_after_rise_as_events() {
        let target = AppTarget::new(
            8,
            BackendUrl::parse("http://events.test").expect("url"),
            "events-test-app".into(),
        );
        let check = |ok: bool| CheckOutcome {
            ok,
            detail: if ok { "ok" } else { "status 503" }.into(),
            at: SystemTime::now(),
        };
        let (rise, fall) = (2, 3);
        let mut seen = Vec::new();
        for ok in [true, false, false, false, false, true, true, true] {
            seen.extend(target.record_check(check(ok), rise, fall));
        }
        assert_eq!(
            seen,
            [EventKind::Admitted, EventKind::Down, EventKind::Up],
            "admitted on the first pass, down on the third failure, up on the second pass"
        );
        // A new backend failing from the start goes down once, then one pass
        // with rise 1 both admits it and brings it up.
        let fresh = AppTarget::new(
            9,
            BackendUrl::parse("http://events2.test").expect("url"),
            "events-test-app-2".into(),
        );
        assert_eq!(fresh.record_check(check(false), 1, 1), [EventKind::Down]);
        assert!(fresh.record_check(check(false), 1, 1).is_empty());
        assert_eq!(
            fresh.record_check(check(true), 1, 1),
            [EventKind::Admitted, EventKind::Up]
        );
    }

    #[test]
    fn a_slow_start_ramps_from_the_floor_to_full_and_ends_itself() {
        let target = AppTarget::new(
            11,
            BackendUrl::parse("http://ramp.test").expect("url"),
            "ramp".into(),
        );
        assert_eq!(target.share(Duration::from_secs(30)), FULL_SHARE);
        target.start_ramp();
        let first = target.share(Duration::from_secs(30));
        assert!((RAMP_FLOOR..RAMP_FLOOR + 100).contains(&first), "{first}");
        // Off: full at once.
        assert_eq!(target.share(Duration::ZERO), FULL_SHARE);
        assert_eq!(target.share(Duration::from_secs(30)), FULL_SHARE);
    }

    #[test]
    fn round_robin_turns_follow_the_share_exactly() {
        let target = AppTarget::new(
            12,
            BackendUrl::parse("http://turns.test").expect("url"),
            "turns".into(),
        );
        let taken = (0..1000)
            .filter(|_| target.take_ramp_turn(FULL_SHARE / 4))
            .count();
        assert_eq!(taken, 250);
    }

    #[test]
    fn a_restart_drains_until_rise_checks_pass_then_slow_starts() {
        let target = AppTarget::new(
            13,
            BackendUrl::parse("http://restart.test").expect("url"),
            "restart".into(),
        );
        target.set_addr("127.0.0.1:80".parse().expect("addr"));
        let pass = || CheckOutcome {
            ok: true,
            detail: "ok".into(),
            at: SystemTime::now(),
        };
        target.record_check(pass(), 2, 2);
        assert!(target.routable());
        target.start_restart("release v7 succeeded without preboot");
        assert!(!target.routable());
        target.record_check(pass(), 2, 2);
        assert!(!target.routable(), "one pass of two");
        let events = target.record_check(pass(), 2, 2);
        assert!(target.routable());
        assert_eq!(events, [EventKind::Restarted]);
        assert!(target.share(Duration::from_secs(30)) < FULL_SHARE);
    }
}
