//! Which backend gets a request: the balancing policy (round robin or least
//! connections) over the backends the `LoadBalancer` holds, and the in-flight
//! count each request keeps while it is at a backend.
//!
//! Input: membership and Pingora's health from the `LoadBalancer`, each
//! target's own readiness (`backend.rs`), the backends this request already
//! tried, and a sticky preference (`sticky.rs`). Output: one `AppTarget`, and
//! an [`InFlight`] guard the proxy keeps in its request context.
//!
//! Round robin is Pingora's own `RoundRobin` selection. Least connections is
//! built beside it, not as a Pingora `BackendSelection`: a selection is built
//! once per membership change and its iterator sees only the static set, while
//! least connections must read live in-flight counts on every pick. So it
//! walks the load balancer's current members (with their health) itself. The
//! count is one atomic per backend, raised by [`InFlight::enter`] and lowered
//! by the guard's `Drop`: exactly once however the request ends (answer,
//! error, retry elsewhere, timeout, client gone), because the context that
//! owns the guard is dropped exactly once.

use crate::backend::AppTarget;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many selection steps one round-robin pick may take before giving up.
const MAX_SELECT_STEPS: usize = 1024;

/// The balancing policy (`LB_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastConnections,
}

impl Policy {
    /// Accepted spellings, for config errors.
    pub const NAMES: &'static [&'static str] = &["round_robin", "least_connections"];

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "round_robin" => Ok(Policy::RoundRobin),
            "least_connections" => Ok(Policy::LeastConnections),
            _ => Err(format!(
                "'{raw}' is not a policy; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::LeastConnections => "least_connections",
        }
    }
}

/// Picks backends for requests.
pub struct Selector {
    lb: Arc<LoadBalancer<RoundRobin>>,
    policy: Policy,
    /// Where least connections starts looking, advanced every pick, so ties
    /// (an idle balancer: all zero) are broken in turn.
    next_start: AtomicUsize,
}

impl Selector {
    pub fn new(lb: Arc<LoadBalancer<RoundRobin>>, policy: Policy) -> Self {
        Selector {
            lb,
            policy,
            next_start: AtomicUsize::new(0),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The backend for the next try: `preferred` (a sticky token) when it
    /// names a ready backend not yet tried, else the policy's pick.
    pub fn pick(
        &self,
        tried: &[u64],
        preferred: Option<&dyn Fn(&AppTarget) -> bool>,
    ) -> Option<Arc<AppTarget>> {
        let usable = |target: &AppTarget, healthy: bool| {
            healthy && target.routable() && !tried.contains(&target.id())
        };
        if let Some(preferred) = preferred {
            let members = self.lb.backends().get_backend();
            let sticky = members.iter().find_map(|backend| {
                let target = AppTarget::of(backend)?;
                (preferred(target) && usable(target, self.lb.backends().ready(backend)))
                    .then(|| Arc::clone(target))
            });
            if sticky.is_some() {
                return sticky;
            }
        }
        match self.policy {
            Policy::RoundRobin => {
                let backend = self
                    .lb
                    .select_with(b"", MAX_SELECT_STEPS, |backend, healthy| {
                        AppTarget::of(backend).is_some_and(|target| usable(target, healthy))
                    })?;
                AppTarget::of(&backend).cloned()
            }
            Policy::LeastConnections => {
                let members = self.lb.backends().get_backend();
                let count = members.len();
                if count == 0 {
                    return None;
                }
                let start = self.next_start.fetch_add(1, Ordering::Relaxed) % count;
                let mut best: Option<(&Arc<AppTarget>, usize, usize)> = None;
                for backend in members.iter().cycle().skip(start).take(count) {
                    let Some(target) = AppTarget::of(backend) else {
                        continue;
                    };
                    if !usable(target, self.lb.backends().ready(backend)) {
                        continue;
                    }
                    let load = (target.in_flight(), backend.weight.max(1));
                    // in_flight / weight, compared without division; the first
                    // of equals (from the rotating start) wins.
                    let better = best
                        .is_none_or(|(_, in_flight, weight)| load.0 * weight < in_flight * load.1);
                    if better {
                        best = Some((target, load.0, load.1));
                    }
                }
                best.map(|(target, _, _)| Arc::clone(target))
            }
        }
    }
}

/// A request's presence at one backend: counted while it lives.
#[derive(Debug)]
pub struct InFlight(Arc<AppTarget>);

impl InFlight {
    /// Count a request entering `target`.
    pub fn enter(target: Arc<AppTarget>) -> Self {
        target.in_flight_counter().fetch_add(1, Ordering::Relaxed);
        InFlight(target)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight_counter().fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendUrl;

    #[test]
    fn policies_parse_and_bad_ones_list_the_choices() {
        assert_eq!(
            Policy::parse("least_connections"),
            Ok(Policy::LeastConnections)
        );
        assert_eq!(Policy::parse("Round-Robin"), Ok(Policy::RoundRobin));
        let error = Policy::parse("random").expect_err("unknown policy");
        assert!(error.contains("round_robin") && error.contains("least_connections"));
    }

    #[test]
    fn the_in_flight_count_falls_exactly_once_per_guard() {
        let target = Arc::new(AppTarget::new(
            1,
            BackendUrl::parse("http://a.test").expect("url"),
            "a".into(),
        ));
        let first = InFlight::enter(Arc::clone(&target));
        let second = InFlight::enter(Arc::clone(&target));
        assert_eq!(target.in_flight(), 2);
        drop(first);
        assert_eq!(target.in_flight(), 1);
        drop(second);
        assert_eq!(target.in_flight(), 0);
    }
}
