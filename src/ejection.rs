//! Passive ejection: taking a backend out of rotation because of failures
//! seen on live traffic, between active checks, and the cap on how many it
//! may take out at once.
//!
//! Input: what the proxy saw of one try (a refused or dropped connection, a
//! read timeout, a 5xx answer). Output: a target's ejected flag
//! (`backend.rs`), which selection reads and `rise` passing active checks
//! clear (`health.rs`).
//!
//! Every app of a pipeline runs the same code, so one endpoint that fails on
//! every app (a shared bug) would eject them all and turn a partial failure
//! into a total one. As in Envoy's outlier detection, passive ejection holds
//! out at most `max_ejection_percent` of the backends (at least one, as Envoy
//! does; 0 turns passive ejection off). A backend over the cap stays in and
//! is logged once per run of failures. Only failures the upstream caused
//! count: the proxy never reports its own refusals or a client that left.

use crate::backend::AppTarget;
use crate::events::{self, EventKind};
use log::warn;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use std::sync::{Arc, Mutex};

/// Ejections shared by several balancer dynos (`store/`, which implements
/// this): one dyno's ejection is every dyno's, each within its own cap.
pub trait SharedEjections: Send + Sync {
    /// This dyno ejected the app at `url` for `reason`: tell the others.
    fn ejected(&self, url: &str, reason: &str);
}

/// Passive ejection over the members of one load balancer.
pub struct PassiveEjection {
    /// Where this dyno's ejections are published, when dynos share a store.
    shared: Option<Arc<dyn SharedEjections>>,
    lb: Arc<LoadBalancer<RoundRobin>>,
    /// Failures in a row (5xx answers, read timeouts) that eject (0: never).
    failure_threshold: u32,
    max_percent: u32,
    /// Held while counting and ejecting, so two requests failing at once on
    /// two backends cannot both pass the cap.
    decision: Mutex<()>,
}

impl PassiveEjection {
    /// Ejection after `failure_threshold` failures in a row (default 5) or
    /// one failed connection, holding out at most `max_percent` (default 50)
    /// of the backends of `lb`.
    pub fn new(
        lb: Arc<LoadBalancer<RoundRobin>>,
        failure_threshold: u32,
        max_percent: u32,
    ) -> Self {
        PassiveEjection {
            shared: None,
            lb,
            failure_threshold,
            max_percent,
            decision: Mutex::new(()),
        }
    }

    /// Publish this dyno's ejections through `shared`.
    pub fn with_shared(mut self, shared: Arc<dyn SharedEjections>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Another dyno ejected `target`: honour it, within this dyno's cap.
    pub fn eject_shared(&self, target: &AppTarget, reason: &str) {
        self.eject_within_cap(target, reason);
    }

    /// A connection to `target` failed before it answered anything.
    pub fn connection_failed(&self, target: &AppTarget, what: &str) {
        self.eject(target, what);
    }

    /// A new connection to `target` was closed or reset before it answered:
    /// one failure toward the threshold, like a 5xx (a request that crashes
    /// the app would otherwise eject every app it is retried on).
    pub fn failed_before_answer(&self, target: &AppTarget, what: &str) {
        if let Some(run) = target.record_failure(self.failure_threshold) {
            self.eject(target, &format!("{run} failures in a row, last {what}"));
        }
    }

    /// `target` answered with `status`.
    pub fn answered(&self, target: &AppTarget, status: u16) {
        if let Some(run) = target.record_response(status, self.failure_threshold) {
            self.eject(
                target,
                &format!("{run} failures in a row, last a {status} answer"),
            );
        }
    }

    /// `target` did not answer within the read timeout.
    pub fn timed_out(&self, target: &AppTarget) {
        if let Some(run) = target.record_failure(self.failure_threshold) {
            self.eject(target, &format!("{run} failures in a row, last a timeout"));
        }
    }

    /// Eject `target` unless it is out already or the cap forbids it, and
    /// tell the other dynos.
    fn eject(&self, target: &AppTarget, reason: &str) {
        if self.eject_within_cap(target, reason) {
            if let Some(shared) = &self.shared {
                shared.ejected(target.url_text(), reason);
            }
        }
    }

    /// Eject `target` unless it is out already or the cap forbids it;
    /// whether this call ejected it.
    fn eject_within_cap(&self, target: &AppTarget, reason: &str) -> bool {
        if self.max_percent == 0 || target.is_ejected() {
            return false;
        }
        let _decision = self.decision.lock().unwrap_or_else(|p| p.into_inner());
        let members = self.lb.backends().get_backend();
        let ejected = members
            .iter()
            .filter_map(AppTarget::of)
            .filter(|member| member.is_ejected())
            .count();
        let allowed = allowed(members.len(), self.max_percent);
        if ejected >= allowed {
            if target.first_capped() {
                warn!(
                    "backend app={} url={} stays in reason=\"{reason}\" \
                     why=\"{ejected} of {} backends are ejected already; \
                     max_ejection_percent={} allows {allowed}\"",
                    target.name(),
                    target.url(),
                    members.len(),
                    self.max_percent
                );
                events::record(
                    EventKind::EjectionCapped,
                    Some(target.name()),
                    format!(
                        "stays in ({reason}): {ejected} of {} backends are ejected already, \
                         max_ejection_percent={} allows {allowed}",
                        members.len(),
                        self.max_percent
                    ),
                );
            }
            return false;
        }
        target.eject(reason)
    }
}

/// `max_percent` of `total`, rounded down, but at least one (Envoy's rule);
/// none when the percentage is 0.
fn allowed(total: usize, max_percent: u32) -> usize {
    if max_percent == 0 || total == 0 {
        return 0;
    }
    (total * max_percent as usize / 100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_rounds_down_but_allows_one_unless_off() {
        assert_eq!(allowed(3, 50), 1);
        assert_eq!(allowed(4, 50), 2);
        assert_eq!(allowed(2, 10), 1);
        assert_eq!(allowed(10, 100), 10);
        assert_eq!(allowed(10, 0), 0);
        assert_eq!(allowed(0, 50), 0);
    }
}
