//! Which backend gets a request: the balancing policy (round robin or least
//! connections) over the backends the `LoadBalancer` holds, panic routing when
//! none of them is fit, and the in-flight count each request keeps while it is
//! at a backend.
//!
//! Input: membership and Pingora's health from the `LoadBalancer`, each
//! target's own readiness (`backend.rs`), the backends this request already
//! tried, and a sticky preference (`sticky.rs`). Output: one `AppTarget`, and
//! an [`InFlight`] guard the proxy keeps in its request context.
//!
//! Round robin is Pingora's own `RoundRobin` selection. Least connections is
//! built beside it, not as a Pingora `BackendSelection`: a selection is built
//! once per membership change and its iterator sees only the static set, while
//! least connections must read live in-flight counts on every pick. It picks
//! the lowest `in_flight / weight`; backends that tie (an idle balancer: all
//! zero) share requests by weight, through a stride scheduler, so sequential
//! traffic over weights 3:1 splits 3:1 instead of 1:1 (ties broken in turn)
//! or 1:0 (ties broken by weight alone).
//!
//! Panic routing (Envoy's healthy panic threshold): when no backend is fit
//! (every one failing its checks, not yet admitted or ejected), refusing
//! everything would turn a shared bug or a flapping check into a total
//! outage, so requests are balanced over every backend that has an address
//! (by the least-connections scan, whatever the policy). The switch into and
//! out of it is logged once each; 503 is left for "no backend at all". The in-flight count is one atomic per backend, raised by
//! [`InFlight::enter`] and lowered by the guard's `Drop`, exactly once however
//! the request ends, because the context that owns the guard is dropped once.

pub use crate::values::Policy;

use crate::backend::AppTarget;
use crate::events::{self, EventKind};
use log::{info, warn};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How many selection steps one round-robin pick may take before giving up.
const MAX_SELECT_STEPS: usize = 1024;

/// One full turn of the least-connections stride scheduler: a backend of
/// weight `w` advances `STRIDE / w` per pick.
const STRIDE: u64 = 1 << 20;

/// Which backends a pick may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// Healthy, admitted, not ejected, resolved.
    Fit,
    /// Panic routing: anything with an address.
    Panic,
}

/// Picks backends for requests.
pub struct Selector {
    lb: Arc<LoadBalancer<RoundRobin>>,
    policy: Policy,
    /// Where least connections starts looking, advanced every pick, so that
    /// exact ties in the stride scheduler are broken in turn.
    next_start: AtomicUsize,
    /// The stride scheduler's clock: the pass of the last backend picked. A
    /// backend that sat out (busy, ejected, new) rejoins here rather than
    /// with a burst of catching up.
    pass_clock: AtomicU64,
    /// Whether the last pick had to fall back to panic routing.
    panic: AtomicBool,
}

impl Selector {
    pub fn new(lb: Arc<LoadBalancer<RoundRobin>>, policy: Policy) -> Self {
        Selector {
            lb,
            policy,
            next_start: AtomicUsize::new(0),
            pass_clock: AtomicU64::new(0),
            panic: AtomicBool::new(false),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The load balancer whose members this selector picks from.
    pub fn load_balancer(&self) -> &Arc<LoadBalancer<RoundRobin>> {
        &self.lb
    }

    /// The backend for the next try: `preferred` (a sticky token) when it
    /// names a fit backend not yet tried, else the policy's pick among the
    /// fit ones; when no backend at all is fit, the policy's pick among all
    /// that have an address (panic routing).
    pub fn pick(
        &self,
        tried: &[u64],
        preferred: Option<&dyn Fn(&AppTarget) -> bool>,
    ) -> Option<Arc<AppTarget>> {
        if let Some(target) = self.pick_among(Routing::Fit, tried, preferred) {
            if self.panic.load(Ordering::Relaxed) && self.panic.swap(false, Ordering::Relaxed) {
                info!(
                    "panic routing off: backend app={} is fit again",
                    target.name()
                );
                events::record(
                    EventKind::PanicOff,
                    Some(target.name()),
                    "panic routing off: a backend is fit again",
                );
            }
            return Some(target);
        }
        // Fit backends exist but this request tried them all: no panic.
        if self.any_fit() {
            return None;
        }
        let target = self.pick_among(Routing::Panic, tried, None)?;
        if !self.panic.swap(true, Ordering::Relaxed) {
            let members = self.lb.backends().get_backend();
            warn!(
                "panic routing on: none of {} backends passes its checks or is out of \
                 ejection; balancing over every backend with an address until one is fit",
                members.len()
            );
            events::record(
                EventKind::PanicOn,
                None,
                format!(
                    "panic routing on: none of {} backends is fit; balancing over every \
                     backend with an address",
                    members.len()
                ),
            );
        }
        Some(target)
    }

    /// Whether picks fall back to panic routing now (the last pick did).
    pub fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Whether any backend is fit to take traffic.
    fn any_fit(&self) -> bool {
        let backends = self.lb.backends();
        backends.get_backend().iter().any(|backend| {
            AppTarget::of(backend)
                .is_some_and(|target| target.routable() && backends.ready(backend))
        })
    }

    fn pick_among(
        &self,
        routing: Routing,
        tried: &[u64],
        preferred: Option<&dyn Fn(&AppTarget) -> bool>,
    ) -> Option<Arc<AppTarget>> {
        let usable = |target: &AppTarget, healthy: bool| {
            !tried.contains(&target.id())
                && match routing {
                    Routing::Fit => healthy && target.routable(),
                    Routing::Panic => target.addr().is_some(),
                }
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
        match (self.policy, routing) {
            (Policy::RoundRobin, Routing::Fit) => {
                let backend = self
                    .lb
                    .select_with(b"", MAX_SELECT_STEPS, |backend, healthy| {
                        AppTarget::of(backend).is_some_and(|target| usable(target, healthy))
                    })?;
                AppTarget::of(&backend).cloned()
            }
            // Panic picks use the least-connections scan whatever the
            // policy: Pingora's round-robin cursor was just moved by the
            // failed pass above, by as many steps as there are backends, so
            // it would land on the same backend every time.
            (Policy::LeastConnections, _) | (Policy::RoundRobin, Routing::Panic) => {
                let members = self.lb.backends().get_backend();
                self.least_loaded(&members, |backend, target| {
                    usable(target, self.lb.backends().ready(backend))
                })
            }
        }
    }

    /// Least connections over the `usable` members: the lowest
    /// `in_flight / weight`, ties to the lowest stride pass.
    fn least_loaded(
        &self,
        members: &BTreeSet<Backend>,
        usable: impl Fn(&Backend, &AppTarget) -> bool,
    ) -> Option<Arc<AppTarget>> {
        let count = members.len();
        if count == 0 {
            return None;
        }
        let clock = self.pass_clock.load(Ordering::Relaxed);
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % count;
        // (target, in_flight, weight, pass)
        let mut best: Option<(&Arc<AppTarget>, usize, usize, u64)> = None;
        for backend in members.iter().cycle().skip(start).take(count) {
            let Some(target) = AppTarget::of(backend) else {
                continue;
            };
            if !usable(backend, target) {
                continue;
            }
            let (in_flight, weight) = (target.in_flight(), backend.weight.max(1));
            let pass = target.stride_pass().load(Ordering::Relaxed).max(clock);
            let better = best.is_none_or(|(_, best_in_flight, best_weight, best_pass)| {
                // in_flight / weight, compared without division.
                let (load, best_load) = (in_flight * best_weight, best_in_flight * weight);
                load < best_load || (load == best_load && pass < best_pass)
            });
            if better {
                best = Some((target, in_flight, weight, pass));
            }
        }
        let (target, _, weight, pass) = best?;
        self.pass_clock.fetch_max(pass, Ordering::Relaxed);
        target
            .stride_pass()
            .store(pass + STRIDE / weight as u64, Ordering::Relaxed);
        Some(Arc::clone(target))
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

    /// Targets on 127.0.0.1 (resolved: IP literals), weighted as given,
    /// admitted when `admitted`, in a load balancer that has run its update.
    async fn selector_over(
        policy: Policy,
        weights: &[usize],
        admitted: bool,
    ) -> (Selector, Vec<Arc<AppTarget>>) {
        let targets: Vec<Arc<AppTarget>> = (0..weights.len())
            .map(|i| {
                let url = format!("http://127.0.0.1:{}", 9000 + i);
                let target =
                    AppTarget::new(i as u64 + 1, BackendUrl::parse(&url).expect("url"), url);
                Arc::new(target)
            })
            .collect();
        for target in targets.iter().filter(|_| admitted) {
            let ok = crate::backend::CheckOutcome {
                ok: true,
                detail: "ok".into(),
                at: std::time::SystemTime::now(),
            };
            target.record_check(ok, 1, 1);
        }
        let backends: BTreeSet<Backend> = targets
            .iter()
            .zip(weights)
            .map(|(target, weight)| target.backend(*weight))
            .collect();
        let discovery = pingora::lb::discovery::Static::new(backends);
        let lb = LoadBalancer::<RoundRobin>::from_backends(pingora::lb::Backends::new(discovery));
        lb.update().await.expect("a static list updates");
        (Selector::new(Arc::new(lb), policy), targets)
    }

    /// How many of `picks` sequential picks each target got.
    fn split(selector: &Selector, targets: &[Arc<AppTarget>], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; targets.len()];
        for _ in 0..picks {
            let target = selector.pick(&[], None).expect("a pick");
            let _request = InFlight::enter(Arc::clone(&target));
            counts[(target.id() - 1) as usize] += 1;
        }
        counts
    }

    #[tokio::test]
    async fn least_connections_splits_sequential_requests_by_weight() {
        let (selector, targets) = selector_over(Policy::LeastConnections, &[3, 1], true).await;
        assert_eq!(split(&selector, &targets, 400), vec![300, 100]);
        let (selector, targets) = selector_over(Policy::LeastConnections, &[1, 1, 1], true).await;
        assert_eq!(split(&selector, &targets, 300), vec![100, 100, 100]);
    }

    #[tokio::test]
    async fn least_connections_prefers_the_least_loaded_per_weight() {
        let (selector, targets) = selector_over(Policy::LeastConnections, &[3, 1], true).await;
        // Three at the heavy one (1 per weight), none at the light one.
        let _busy: Vec<InFlight> = (0..3)
            .map(|_| InFlight::enter(Arc::clone(&targets[0])))
            .collect();
        let picked = selector.pick(&[], None).expect("a pick");
        assert_eq!(picked.id(), 2);
    }

    #[tokio::test]
    async fn with_nothing_fit_requests_go_to_every_backend_with_an_address() {
        for policy in [Policy::RoundRobin, Policy::LeastConnections] {
            let (selector, targets) = selector_over(policy, &[1, 1, 1], false).await;
            assert_eq!(
                split(&selector, &targets, 30),
                vec![10, 10, 10],
                "{policy:?}"
            );
            assert!(selector.panic.load(Ordering::Relaxed));
            // A retry goes to one not tried yet, and none is left after all.
            let second = selector.pick(&[1], None).expect("a pick");
            assert_ne!(second.id(), 1);
            assert!(selector.pick(&[1, 2, 3], None).is_none());
        }
    }

    #[tokio::test]
    async fn a_fit_backend_ends_panic_routing_and_tried_fit_ones_are_not_panic() {
        let (selector, targets) = selector_over(Policy::RoundRobin, &[1, 1], false).await;
        assert!(selector.pick(&[], None).is_some());
        assert!(selector.panic.load(Ordering::Relaxed));
        let ok = crate::backend::CheckOutcome {
            ok: true,
            detail: "ok".into(),
            at: std::time::SystemTime::now(),
        };
        targets[0].record_check(ok, 1, 1);
        assert_eq!(selector.pick(&[], None).map(|t| t.id()), Some(1));
        assert!(!selector.panic.load(Ordering::Relaxed));
        // The one fit backend was tried: no other, and no panic either.
        assert!(selector.pick(&[1], None).is_none());
        assert!(!selector.panic.load(Ordering::Relaxed));
    }
}
