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
//! Pingora's `LoadBalancer` owns membership, health and their schedule; the
//! pick is ours, over a table of the members made once per membership change
//! ([`MemberTable`]) and read without a lock. Pingora's `select_with` clones
//! every candidate `Backend` (its `Extensions` map included) and hashes it on
//! every step; at 1,000 apps that cost grew with the count.
//!
//! Round robin walks the table with one atomic cursor, each backend repeated
//! by its weight and the repeats spread out as nginx's smooth weighted round
//! robin spreads them. Least connections reads live in-flight counts on every
//! pick (a Pingora `BackendSelection` is built once per membership change and
//! sees only the static set). It picks
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
//! out of it is logged once each; 503 is left for "no backend at all".
//!
//! The in-flight count is one atomic per backend, raised by
//! [`InFlight::enter`] and lowered by the guard's `Drop`, exactly once however
//! the request ends, because the context that owns the guard is dropped once.

mod peak_ewma;
pub mod queue;

pub use crate::values::Policy;
pub use queue::{AdmissionQueue, QueueFigures, Rejection};

use crate::backend::{AppTarget, FULL_SHARE};
use crate::events::{self, EventKind};
use arc_swap::ArcSwap;
use log::{info, warn};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How many slots one round-robin pick walks before it scans the members
/// instead (each once): a weighted walk over sparse fit members among many
/// heavy ones could otherwise take as many steps as there are dynos.
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

/// One member as selection sees it.
struct Member {
    /// Kept for Pingora's health flag (`Backends::ready`).
    backend: Backend,
    target: Arc<AppTarget>,
    weight: usize,
}

/// The members, made once per membership change (a new member-set `Arc` from
/// the load balancer) and read without a lock on every pick.
///
/// Why not Pingora's `select_with`: it clones every candidate `Backend`, its
/// `Extensions` map (an allocation) included, and hashes it, on every step of
/// every pick; our targets already ride in the table, one `Arc` each.
struct MemberTable {
    /// The member set this table was made from.
    members: Arc<BTreeSet<Backend>>,
    entries: Vec<Member>,
    /// Round robin's walk: indices into `entries`, each repeated by its
    /// weight, spread out as nginx's smooth weighted round robin spreads them.
    order: Vec<u32>,
}

/// Above this much work (slots × members) the weighted interleave is
/// skipped and each member's slots follow one another; a table is made on
/// the request path, so making it must stay quick.
const MAX_INTERLEAVE_WORK: usize = 4_000_000;

impl MemberTable {
    fn new(members: Arc<BTreeSet<Backend>>) -> Self {
        let entries: Vec<Member> = members
            .iter()
            .filter_map(|backend| {
                let target = Arc::clone(AppTarget::of(backend)?);
                // Its cap reads it on the request path without the table.
                target.set_weight(backend.weight.max(1));
                Some(Member {
                    target,
                    weight: backend.weight.max(1),
                    backend: backend.clone(),
                })
            })
            .collect();
        let weights: Vec<usize> = entries.iter().map(|member| member.weight).collect();
        MemberTable {
            members,
            entries,
            order: weighted_order(&weights),
        }
    }
}

/// Slots for `weights`, each index `weights[i]` times, spread out the way
/// nginx's smooth weighted round robin spreads them (3:1 is a a b a, not a a a b).
fn weighted_order(weights: &[usize]) -> Vec<u32> {
    let total: usize = weights.iter().sum();
    if total.saturating_mul(weights.len()) > MAX_INTERLEAVE_WORK {
        return (0..weights.len())
            .flat_map(|i| std::iter::repeat_n(i as u32, weights[i]))
            .collect();
    }
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total);
    for _ in 0..total {
        let mut best = 0;
        for (i, weight) in weights.iter().enumerate() {
            current[i] += *weight as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        order.push(best as u32);
    }
    order
}

/// Picks backends for requests.
pub struct Selector {
    lb: Arc<LoadBalancer<RoundRobin>>,
    policy: Policy,
    /// The members, remade when the load balancer's set changes.
    table: ArcSwap<MemberTable>,
    /// Round robin's position in `MemberTable::order`.
    cursor: AtomicUsize,
    /// Where least connections starts looking, advanced every pick, so that
    /// exact ties in the stride scheduler are broken in turn.
    next_start: AtomicUsize,
    /// The stride scheduler's clock: the pass of the last backend picked. A
    /// backend that sat out (busy, ejected, new) rejoins here rather than
    /// with a burst of catching up.
    pass_clock: AtomicU64,
    /// Whether the last pick had to fall back to panic routing.
    panic: AtomicBool,
    /// Slow start: an admitted backend's share ramps up over this (zero: off).
    slow_start: Duration,
    /// Requests in flight allowed per unit of weight (web dyno), when capped.
    max_in_flight_per_weight: Option<usize>,
    /// Where requests wait when every fit backend is at its cap.
    queue: Option<Arc<AdmissionQueue>>,
}

impl Selector {
    /// A selector over `lb`'s members with `policy` and a slow start over
    /// `slow_start` (zero: none).
    pub fn new(lb: Arc<LoadBalancer<RoundRobin>>, policy: Policy, slow_start: Duration) -> Self {
        let members = lb.backends().get_backend();
        Selector {
            slow_start,
            table: ArcSwap::from_pointee(MemberTable::new(members)),
            cursor: AtomicUsize::new(0),
            lb,
            policy,
            next_start: AtomicUsize::new(0),
            pass_clock: AtomicU64::new(0),
            panic: AtomicBool::new(false),
            max_in_flight_per_weight: None,
            queue: None,
        }
    }

    /// Cap each backend at `per_dyno` × its weight requests in flight; the
    /// requests over it wait in `queue`.
    pub fn with_caps(mut self, per_dyno: usize, queue: Arc<AdmissionQueue>) -> Self {
        self.max_in_flight_per_weight = Some(per_dyno.max(1));
        self.queue = Some(queue);
        self
    }

    /// The queue of requests waiting for a slot, when backends are capped.
    pub fn queue(&self) -> Option<&Arc<AdmissionQueue>> {
        self.queue.as_ref()
    }

    /// The most requests `member` may have in flight.
    fn cap(&self, weight: usize) -> usize {
        self.max_in_flight_per_weight
            .map_or(usize::MAX, |per| per.saturating_mul(weight.max(1)))
    }

    /// The next backend and this request's place at it: a pick (see
    /// [`Selector::pick`]) whose cap still has room, taken atomically, so
    /// that two requests racing for a backend's last slot cannot both have
    /// it. `None` when nothing fit is left (or every pick lost its race).
    pub fn pick_and_enter(
        &self,
        tried: &[u64],
        preferred: Option<&dyn Fn(&AppTarget) -> bool>,
    ) -> Option<(Arc<AppTarget>, InFlight)> {
        let Some(per_weight) = self.max_in_flight_per_weight else {
            let target = self.pick(tried, preferred)?;
            return Some((Arc::clone(&target), InFlight::enter(target)));
        };
        for _ in 0..4 {
            let target = self.pick(tried, preferred)?;
            let cap = per_weight.saturating_mul(target.weight());
            if let Some(in_flight) = InFlight::try_enter(&target, cap, self.queue.clone()) {
                return Some((target, in_flight));
            }
        }
        None
    }

    /// Record a try's latency to its first response byte (or to its
    /// failure) for the `peak_ewma` policy; other policies keep none.
    pub fn observe(&self, target: &AppTarget, latency: Duration, failed: bool) {
        if self.policy == Policy::PeakEwma {
            target.latency.record(latency, failed);
        }
    }

    /// A backend's cost as `peak_ewma` weighs it (`None`: another policy).
    pub fn cost(&self, target: &AppTarget, weight: usize) -> Option<f64> {
        (self.policy == Policy::PeakEwma).then(|| {
            peak_ewma::cost(
                target.latency.estimate(),
                self.pessimistic_rtt(&self.table()),
                target.in_flight(),
                weight,
                target.share(self.slow_start),
            )
        })
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The slow-start window (zero: none).
    pub fn slow_start(&self) -> Duration {
        self.slow_start
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
        let table = self.table();
        if let Some(target) = self.pick_among(&table, Routing::Fit, tried, preferred) {
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
        if table.entries.iter().any(|member| self.fit(member)) {
            return None;
        }
        let target = self.pick_among(&table, Routing::Panic, tried, None)?;
        if !self.panic.swap(true, Ordering::Relaxed) {
            let count = table.entries.len();
            warn!(
                "panic routing on: none of {count} backends passes its checks or is out of \
                 ejection; balancing over every backend with an address until one is fit"
            );
            events::record(
                EventKind::PanicOn,
                None,
                format!(
                    "panic routing on: none of {count} backends is fit; balancing over every \
                     backend with an address"
                ),
            );
        }
        Some(target)
    }

    /// Whether a fit backend exists that a request which `tried` these has
    /// not been sent to (a retry would have somewhere to go).
    pub fn has_fit_untried(&self, tried: &[u64]) -> bool {
        self.table()
            .entries
            .iter()
            .any(|member| self.fit(member) && !tried.contains(&member.target.id()))
    }

    /// Whether picks fall back to panic routing now (the last pick did).
    pub fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// The table for the current members, remade if they changed.
    fn table(&self) -> Arc<MemberTable> {
        let table = self.table.load_full();
        let members = self.lb.backends().get_backend();
        if Arc::ptr_eq(&table.members, &members) {
            return table;
        }
        let table = Arc::new(MemberTable::new(members));
        self.table.store(Arc::clone(&table));
        table
    }

    /// Fit to take traffic: Pingora's health flag, and our own readiness.
    fn fit(&self, member: &Member) -> bool {
        member.target.routable() && self.lb.backends().ready(&member.backend)
    }

    fn pick_among(
        &self,
        table: &MemberTable,
        routing: Routing,
        tried: &[u64],
        preferred: Option<&dyn Fn(&AppTarget) -> bool>,
    ) -> Option<Arc<AppTarget>> {
        let usable = |member: &Member| {
            !tried.contains(&member.target.id())
                && member.target.in_flight() < self.cap(member.weight)
                && match routing {
                    Routing::Fit => self.fit(member),
                    Routing::Panic => member.target.addr().is_some(),
                }
        };
        if let Some(preferred) = preferred {
            let sticky = table
                .entries
                .iter()
                .find(|member| preferred(&member.target) && usable(member));
            if let Some(member) = sticky {
                return Some(Arc::clone(&member.target));
            }
        }
        match (self.policy, routing) {
            (Policy::RoundRobin, Routing::Fit) => {
                let slots = table.order.len();
                if slots == 0 {
                    return None;
                }
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                // A slow-starting member takes the turns its share earns
                // and passes the others on.
                let pick_ramped = |member: &Member| {
                    if !usable(member) {
                        return None;
                    }
                    let share = member.target.share(self.slow_start);
                    (share >= FULL_SHARE || member.target.take_ramp_turn(share))
                        .then(|| Arc::clone(&member.target))
                };
                let pick = |member: &Member| usable(member).then(|| Arc::clone(&member.target));
                (0..slots.min(MAX_SELECT_STEPS))
                    .find_map(|step| {
                        pick_ramped(&table.entries[table.order[(start + step) % slots] as usize])
                    })
                    .or_else(|| {
                        // Fit members are sparse, or each passed its turn
                        // on: find one whenever one exists.
                        let count = table.entries.len();
                        (0..count).find_map(|step| pick(&table.entries[(start + step) % count]))
                    })
            }
            (Policy::PeakEwma, Routing::Fit) => self.power_of_two(table, usable),
            // Panic picks use the least-connections scan whatever the
            // policy: every member is tried in turn from where the cursor
            // points, with the fewest requests in flight first.
            (Policy::LeastConnections, _)
            | (Policy::RoundRobin | Policy::PeakEwma, Routing::Panic) => {
                self.least_loaded(&table.entries, usable)
            }
        }
    }

    /// Peak-EWMA with the power of two choices (`peak_ewma.rs`): two
    /// distinct usable members drawn at random, each as likely as its
    /// weight (a random slot of the weighted order, then the next usable
    /// one), and the cheaper of the two.
    fn power_of_two(
        &self,
        table: &MemberTable,
        usable: impl Fn(&Member) -> bool,
    ) -> Option<Arc<AppTarget>> {
        let slots = table.order.len();
        if slots == 0 {
            return None;
        }
        let draw = |not: Option<u64>| {
            let start = random_below(slots);
            (0..slots.min(MAX_SELECT_STEPS))
                .map(|step| &table.entries[table.order[(start + step) % slots] as usize])
                .find(|member| usable(member) && Some(member.target.id()) != not)
                .or_else(|| {
                    table
                        .entries
                        .iter()
                        .find(|member| usable(member) && Some(member.target.id()) != not)
                })
        };
        let first = draw(None)?;
        let Some(second) = draw(Some(first.target.id())) else {
            return Some(Arc::clone(&first.target));
        };
        let pessimistic = self.pessimistic_rtt(table);
        let cost = |member: &Member| {
            peak_ewma::cost(
                member.target.latency.estimate(),
                pessimistic,
                member.target.in_flight(),
                member.weight,
                member.target.share(self.slow_start),
            )
        };
        let cheaper = if cost(second) < cost(first) {
            second
        } else {
            first
        };
        Some(Arc::clone(&cheaper.target))
    }

    /// What a backend without a latency estimate counts as: the slowest
    /// estimate among the members, else `peak_ewma::DEFAULT_RTT`.
    fn pessimistic_rtt(&self, table: &MemberTable) -> Duration {
        table
            .entries
            .iter()
            .filter_map(|member| member.target.latency.estimate())
            .max()
            .unwrap_or(peak_ewma::DEFAULT_RTT)
    }

    /// Least connections over the `usable` members: the lowest
    /// `in_flight / weight`, ties to the lowest stride pass.
    fn least_loaded(
        &self,
        members: &[Member],
        usable: impl Fn(&Member) -> bool,
    ) -> Option<Arc<AppTarget>> {
        let count = members.len();
        if count == 0 {
            return None;
        }
        let clock = self.pass_clock.load(Ordering::Relaxed);
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % count;
        // (target, in_flight, weight × share, pass): a slow-starting
        // member weighs its share of its weight.
        let mut best: Option<(&Arc<AppTarget>, u64, u64, u64)> = None;
        for member in members[start..].iter().chain(&members[..start]) {
            if !usable(member) {
                continue;
            }
            let target = &member.target;
            let in_flight = target.in_flight() as u64;
            let weight = member.weight as u64 * u64::from(target.share(self.slow_start));
            let pass = target.stride_pass().load(Ordering::Relaxed).max(clock);
            let better = best.is_none_or(|(_, best_in_flight, best_weight, best_pass)| {
                // in_flight / weight, compared without division.
                let (load, best_load) = (
                    u128::from(in_flight) * u128::from(best_weight),
                    u128::from(best_in_flight) * u128::from(weight),
                );
                load < best_load || (load == best_load && pass < best_pass)
            });
            if better {
                best = Some((target, in_flight, weight, pass));
            }
        }
        let (target, _, weight, pass) = best?;
        self.pass_clock.fetch_max(pass, Ordering::Relaxed);
        let stride = STRIDE * u64::from(FULL_SHARE) / weight.max(1);
        target.stride_pass().store(pass + stride, Ordering::Relaxed);
        Some(Arc::clone(target))
    }
}

/// A request's presence at one backend: counted while it lives; its end
/// frees a slot for the head of the admission queue.
#[derive(Debug)]
pub struct InFlight {
    target: Arc<AppTarget>,
    queue: Option<Arc<AdmissionQueue>>,
}

impl InFlight {
    /// Count a request entering `target`.
    pub fn enter(target: Arc<AppTarget>) -> Self {
        target.in_flight_counter().fetch_add(1, Ordering::Relaxed);
        InFlight {
            target,
            queue: None,
        }
    }

    /// Count a request entering `target` if fewer than `cap` are there; its
    /// end wakes `queue`.
    pub fn try_enter(
        target: &Arc<AppTarget>,
        cap: usize,
        queue: Option<Arc<AdmissionQueue>>,
    ) -> Option<Self> {
        target
            .in_flight_counter()
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |now| {
                (now < cap).then_some(now + 1)
            })
            .ok()?;
        Some(InFlight {
            target: Arc::clone(target),
            queue,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.target
            .in_flight_counter()
            .fetch_sub(1, Ordering::AcqRel);
        if let Some(queue) = &self.queue {
            queue.notify();
        }
    }
}

/// A random number below `bound` (> 0): xorshift64* per thread, seeded from
/// the standard library's random hasher keys. Not cryptographic; enough for
/// the power of two choices.
fn random_below(bound: usize) -> usize {
    use std::cell::Cell;
    use std::hash::BuildHasher;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().hash_one(0u64) | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound as u64) as usize
    })
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
        (Selector::new(Arc::new(lb), policy, Duration::ZERO), targets)
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

    #[test]
    fn weighted_slots_are_spread_like_nginxs_smooth_round_robin() {
        assert_eq!(weighted_order(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(weighted_order(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(weighted_order(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert!(weighted_order(&[]).is_empty());
    }

    #[tokio::test]
    async fn round_robin_finds_a_fit_backend_however_sparse_among_many_slots() {
        // 2,000 slots (1,000 members of weight 2), one member fit.
        let (selector, targets) = selector_over(Policy::RoundRobin, &[2; 1000], false).await;
        let ok = crate::backend::CheckOutcome {
            ok: true,
            detail: "ok".into(),
            at: std::time::SystemTime::now(),
        };
        targets[700].record_check(ok, 1, 1);
        for _ in 0..50 {
            assert_eq!(selector.pick(&[], None).map(|t| t.id()), Some(701));
        }
        assert!(!selector.in_panic());
    }

    #[tokio::test]
    async fn round_robin_splits_by_weight_and_skips_what_is_not_fit() {
        let (selector, targets) = selector_over(Policy::RoundRobin, &[3, 1], true).await;
        assert_eq!(split(&selector, &targets, 400), vec![300, 100]);
        // The heavy one tried already: the light one, every time.
        for _ in 0..4 {
            assert_eq!(selector.pick(&[1], None).map(|t| t.id()), Some(2));
        }
    }
}
