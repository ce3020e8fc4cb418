//! Discovery: which backend apps exist, where they are, and what went wrong
//! finding them. [`AppDiscovery`] is the one `ServiceDiscovery` Pingora's
//! `LoadBalancer` runs.
//!
//! Input: an [`AppSource`] (a static list, the demo, or the Heroku pipeline in
//! `heroku/`) and the [`NameResolver`]. Output: the `Backend` set (each
//! carrying its [`AppTarget`], see `backend.rs`) for selection and health
//! checks, and a [`DiscoveryStatus`] for the status page.
//!
//! Pingora's background loop calls `discover()` on a short tick and swallows
//! its errors; we keep our own schedule instead: the source runs when its
//! round is due (its interval, or a back-off after a failure), names are
//! resolved again every `resolve_interval`, and in between the last set is
//! answered from memory. A failing source never takes backends away: the last
//! good set stays, the error is logged once per change and recorded for status.
//!
//! Nor does a source that answers but is wrong: a wrong pipeline id, a
//! revoked key that still lists nothing, a stage renamed by mistake. A round
//! that would remove every known app, or more than half of them, is held
//! until the next round says the same (logged, and shown in status); removing
//! fewer is applied at once. Apps that leave take their metric series along.

pub mod heroku;
pub mod lookups;
pub mod resolve;
pub mod static_list;

use crate::backend::{AppTarget, BackendUrl};
use crate::events::{self, EventKind};
use crate::health::AppHealthCheck;
use async_trait::async_trait;
use log::{debug, info, warn};
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use resolve::NameResolver;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Longest one source round may take. Heroku restarts a dyno that does not
/// listen within 60 s of boot, and traffic starts after the first round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(40);

/// One app as a source reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    pub url: BackendUrl,
    /// Heroku app name, or the URL's host.
    pub name: String,
    /// Relative share of traffic (Heroku: web dyno count).
    pub weight: usize,
}

/// The result of one successful source round.
#[derive(Debug, Clone)]
pub struct Round {
    pub apps: Vec<AppSpec>,
    /// When to run again; `None` for a source that never changes.
    pub next_round_in: Option<Duration>,
    /// Some apps could not be looked up (the others are in `apps`): what
    /// went wrong, for the log and status. They are tried again next round.
    pub incomplete: Option<String>,
    /// What the source learned about apps beyond their place in the set.
    pub hints: Vec<(BackendUrl, AppHint)>,
}

/// What a source learned about one app, for its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppHint {
    /// A release succeeded: the app's dynos restart. With preboot the new
    /// dynos take traffic once booted (cold: slow start); without, the old
    /// ones stop first (drain until the checks pass, then slow start).
    Released { preboot: bool },
    /// A dyno changed state: check the app now.
    CheckNow,
}

/// A failed source round: what happened (with the URL or app involved, never
/// a secret) and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceError {
    pub message: String,
    pub retry_in: Duration,
}

/// Where the set of apps comes from.
#[async_trait]
pub trait AppSource: Send + Sync {
    /// Shown in status and logs, e.g. `static` or `heroku pipeline shop (production)`.
    fn describe(&self) -> String;
    /// Run one round. Dropped mid-flight on shutdown.
    async fn round(&self) -> Result<Round, SourceError>;
    /// Whether a round should run now, before its time (a webhook asked
    /// to look at an app).
    fn wants_round(&self) -> bool {
        false
    }
}

/// What the status page shows about discovery.
#[derive(Debug, Clone, Default)]
pub struct DiscoverySnapshot {
    pub source: String,
    pub rounds: u64,
    pub failed_rounds: u64,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<(String, SystemTime)>,
    pub apps_known: usize,
    /// A large removal waiting for the next round to confirm it.
    pub shrink_pending: Option<PendingShrink>,
}

/// A round's removal of many apps, held until the next round agrees.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingShrink {
    /// Names of the apps the round would remove.
    pub removing: Vec<String>,
    /// How many apps are known now.
    pub known: usize,
    pub since: SystemTime,
}

/// Shared, cheap-to-read discovery state for status. A std mutex: held for a
/// copy, never across an await.
#[derive(Debug, Default)]
pub struct DiscoveryStatus(Mutex<DiscoverySnapshot>);

impl DiscoveryStatus {
    pub fn snapshot(&self) -> DiscoverySnapshot {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiscoverySnapshot> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// State carried between `discover()` calls (which Pingora never overlaps).
struct DiscoveryState {
    next_round: Option<Instant>,
    /// The last good list; `None` until a round has succeeded.
    apps: Option<Vec<AppSpec>>,
    /// The URLs of a held large removal's list, to confirm against.
    shrink_held: Option<BTreeSet<BackendUrl>>,
    targets: HashMap<BackendUrl, Arc<AppTarget>>,
    /// The set answered to Pingora, rebuilt only when a round brings a list.
    backends: BTreeSet<Backend>,
    next_id: u64,
    next_resolve: Instant,
    /// The last source error, to log each distinct error once.
    last_error: Option<String>,
    /// The last resolution error per target, likewise.
    resolve_errors: HashMap<u64, String>,
    /// A round's list has made targets before.
    synced_once: bool,
    /// The last round's hints, applied to the targets after the sync.
    hints: Vec<(BackendUrl, AppHint)>,
}

/// The `ServiceDiscovery` behind heroku-lb's `LoadBalancer`.
pub struct AppDiscovery {
    source: Box<dyn AppSource>,
    resolver: NameResolver,
    resolve_interval: Duration,
    /// Checks new backends at once, so they take traffic only after a pass.
    first_check: Option<AppHealthCheck>,
    /// How long upgraded connections to an app that leaves stay open.
    drain_timeout: Duration,
    state: tokio::sync::Mutex<DiscoveryState>,
    status: Arc<DiscoveryStatus>,
}

impl AppDiscovery {
    /// Discovery over `source`, re-resolving names every `resolve_interval`.
    pub fn new(
        source: Box<dyn AppSource>,
        resolver: NameResolver,
        resolve_interval: Duration,
        first_check: Option<AppHealthCheck>,
    ) -> Self {
        let now = Instant::now();
        let status = DiscoveryStatus::default();
        status.lock().source = source.describe();
        AppDiscovery {
            source,
            resolver,
            resolve_interval,
            first_check,
            drain_timeout: Duration::from_secs(30),
            state: tokio::sync::Mutex::new(DiscoveryState {
                next_round: Some(now),
                apps: None,
                shrink_held: None,
                targets: HashMap::new(),
                backends: BTreeSet::new(),
                next_id: 1,
                next_resolve: now + resolve_interval,
                last_error: None,
                resolve_errors: HashMap::new(),
                synced_once: false,
                hints: Vec::new(),
            }),
            status: Arc::new(status),
        }
    }

    /// Upgraded connections to an app that leaves get `timeout` (default 30 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The status handle, for the status page.
    pub fn status(&self) -> Arc<DiscoveryStatus> {
        Arc::clone(&self.status)
    }

    /// Run one source round; true when it brought a (possibly unchanged) list.
    async fn run_round(&self, state: &mut DiscoveryState, now: Instant) -> bool {
        let result = match tokio::time::timeout(ROUND_TIMEOUT, self.source.round()).await {
            Ok(result) => result,
            Err(_) => Err(SourceError {
                message: format!("round took longer than {ROUND_TIMEOUT:?}"),
                retry_in: Duration::from_secs(1),
            }),
        };
        let mut status = self.status.lock();
        status.rounds += 1;
        match result {
            Ok(round) => {
                debug!(
                    "discovery round source=\"{}\" apps={} took_ms={}",
                    status.source,
                    round.apps.len(),
                    now.elapsed().as_millis()
                );
                status.last_success = Some(SystemTime::now());
                if let Some(problem) = &round.incomplete {
                    status.last_error = Some((problem.clone(), SystemTime::now()));
                }
                drop(status);
                match &round.incomplete {
                    Some(problem) if state.last_error.as_deref() != Some(problem.as_str()) => {
                        warn!(
                            "discovery incomplete source=\"{}\" apps={} error=\"{problem}\"",
                            self.source.describe(),
                            round.apps.len()
                        );
                        events::record(
                            EventKind::DiscoveryError,
                            None,
                            format!(
                                "discovery incomplete, serving the {} apps found: {problem}",
                                round.apps.len()
                            ),
                        );
                        state.last_error = Some(problem.clone());
                    }
                    Some(_) => {}
                    None => {
                        if state.last_error.take().is_some() {
                            info!("discovery recovered source=\"{}\"", self.source.describe());
                            events::record(
                                EventKind::DiscoveryRecovered,
                                None,
                                format!("discovery recovered ({})", self.source.describe()),
                            );
                        }
                    }
                }
                state.next_round = round.next_round_in.map(|delay| now + delay);
                let known = state.apps.as_deref().unwrap_or_default();
                let removing = large_removal(known, &round.apps);
                let listed: BTreeSet<BackendUrl> =
                    round.apps.iter().map(|app| app.url.clone()).collect();
                match removing {
                    Some(removing) if state.shrink_held.as_ref() != Some(&listed) => {
                        warn!(
                            "discovery holds a removal source=\"{}\" removing={} of known={} \
                             apps=\"{}\" reason=\"more than half of the apps at once; applied \
                             only if the next round says the same\"",
                            self.source.describe(),
                            removing.len(),
                            known.len(),
                            removing.join(",")
                        );
                        events::record(
                            EventKind::RemovalHeld,
                            None,
                            format!(
                                "holding the removal of {} of {} apps ({}) until the next \
                                 round agrees",
                                removing.len(),
                                known.len(),
                                removing.join(", ")
                            ),
                        );
                        self.status.lock().shrink_pending = Some(PendingShrink {
                            removing,
                            known: known.len(),
                            since: SystemTime::now(),
                        });
                        state.shrink_held = Some(listed);
                        return false;
                    }
                    Some(removing) => info!(
                        "discovery confirmed a removal source=\"{}\" removing={}",
                        self.source.describe(),
                        removing.len()
                    ),
                    None if state.shrink_held.is_some() => info!(
                        "discovery dropped a held removal source=\"{}\": the next round \
                         did not confirm it",
                        self.source.describe()
                    ),
                    None => {}
                }
                state.shrink_held = None;
                {
                    let mut status = self.status.lock();
                    status.shrink_pending = None;
                    status.apps_known = round.apps.len();
                }
                log_changes(known, &round.apps);
                state.apps = Some(round.apps);
                state.hints = round.hints;
                true
            }
            Err(error) => {
                status.failed_rounds += 1;
                status.last_error = Some((error.message.clone(), SystemTime::now()));
                drop(status);
                if state.last_error.as_deref() != Some(error.message.as_str()) {
                    let kept = state.apps.as_ref().map_or(0, Vec::len);
                    warn!(
                        "discovery failed source=\"{}\" error=\"{}\" kept_apps={kept} retry_in={:?}",
                        self.source.describe(),
                        error.message,
                        error.retry_in
                    );
                    events::record(
                        EventKind::DiscoveryError,
                        None,
                        format!(
                            "discovery failed, kept {kept} apps: {} (retry in {:?})",
                            error.message, error.retry_in
                        ),
                    );
                    state.last_error = Some(error.message);
                }
                state.next_round = Some(now + error.retry_in);
                false
            }
        }
    }

    /// Make the targets match the last good app list: new URLs get a target
    /// (and a number), gone URLs lose theirs, and the backend set answered to
    /// Pingora is rebuilt. Returns the new targets. Runs only after a round
    /// brought a list; ticks in between answer the stored set.
    fn sync_targets(&self, state: &mut DiscoveryState) -> Vec<Arc<AppTarget>> {
        let Some(apps) = state.apps.take() else {
            return Vec::new();
        };
        let listed: HashSet<&BackendUrl> = apps.iter().map(|app| &app.url).collect();
        let names: HashSet<&str> = apps.iter().map(|app| app.name.as_str()).collect();
        let drain_timeout = self.drain_timeout;
        state.targets.retain(|url, target| {
            let stays = listed.contains(url);
            if !stays {
                // No new request from now on; requests in flight finish,
                // upgraded connections get the drain timeout.
                target.drain(drain_timeout);
                // Review apps come and go: their series must go with them.
                if !names.contains(target.name()) {
                    crate::metrics::forget_backend(target.name());
                }
            }
            stays
        });
        // The first round's apps are all cold alike: no slow start for them.
        let ramp_on_admission = state.synced_once;
        state.synced_once = true;
        let mut fresh = Vec::new();
        let mut backends = BTreeSet::new();
        for app in &apps {
            let target = match state.targets.get(&app.url) {
                Some(target) => Arc::clone(target),
                None => {
                    let target = Arc::new(AppTarget::new(
                        state.next_id,
                        app.url.clone(),
                        app.name.clone(),
                    ));
                    target.set_ramp_on_admission(ramp_on_admission);
                    state.next_id += 1;
                    state.targets.insert(app.url.clone(), Arc::clone(&target));
                    fresh.push(Arc::clone(&target));
                    target
                }
            };
            // Unresolved targets stay in the set (their health and counters
            // are kept); selection skips a target without an address.
            backends.insert(target.backend(app.weight));
        }
        let live: HashSet<u64> = state.targets.values().map(|t| t.id()).collect();
        state.resolve_errors.retain(|id, _| live.contains(id));
        state.backends = backends;
        state.apps = Some(apps);
        fresh
    }

    /// Resolve `targets` concurrently and record the results.
    async fn resolve(&self, state: &mut DiscoveryState, targets: Vec<Arc<AppTarget>>) {
        let mut lookups = tokio::task::JoinSet::new();
        for target in targets {
            let resolver = self.resolver.clone();
            lookups.spawn(async move {
                let result = resolver.resolve(target.url()).await;
                (target, result)
            });
        }
        while let Some(joined) = lookups.join_next().await {
            let Ok((target, result)) = joined else {
                continue;
            };
            match result {
                Ok(addr) => {
                    let previous = target.set_addr(addr);
                    if previous != Some(addr) {
                        info!(
                            "backend app={} url={} resolved addr={addr}",
                            target.name(),
                            target.url()
                        );
                    }
                    if state.resolve_errors.remove(&target.id()).is_some() {
                        info!(
                            "backend app={} url={} resolves again",
                            target.name(),
                            target.url()
                        );
                    }
                }
                Err(error) => {
                    if state.resolve_errors.get(&target.id()) != Some(&error) {
                        match target.addr() {
                            Some(kept) => warn!(
                                "backend app={} url={} resolution failed, keeping addr={kept} error=\"{error}\"",
                                target.name(),
                                target.url()
                            ),
                            None => warn!(
                                "backend app={} url={} unavailable: name does not resolve error=\"{error}\"",
                                target.name(),
                                target.url()
                            ),
                        }
                        state.resolve_errors.insert(target.id(), error);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl ServiceDiscovery for AppDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let due = state.next_round.is_some_and(|due| due <= now) || self.source.wants_round();
        let updated = due && self.run_round(&mut state, now).await;
        let fresh = if updated {
            self.sync_targets(&mut state)
        } else {
            Vec::new()
        };
        let to_resolve: Vec<Arc<AppTarget>> = if now >= state.next_resolve {
            state.next_resolve = now + self.resolve_interval;
            state.targets.values().cloned().collect()
        } else {
            fresh.clone()
        };
        let to_resolve: Vec<_> = to_resolve
            .into_iter()
            .filter(|t| t.url().ip().is_none())
            .collect();
        if !to_resolve.is_empty() {
            self.resolve(&mut state, to_resolve).await;
        }
        let mut to_check = fresh;
        for (url, hint) in std::mem::take(&mut state.hints) {
            let Some(target) = state.targets.get(&url) else {
                continue;
            };
            match hint {
                AppHint::Released { preboot: false } => target.start_restart(
                    "a release succeeded without preboot: Heroku restarts its dynos",
                ),
                AppHint::Released { preboot: true } => {
                    info!(
                        "backend app={} url={} slow start: a release succeeded (preboot: the \
                         new dynos are cold)",
                        target.name(),
                        target.url()
                    );
                    target.start_ramp();
                }
                AppHint::CheckNow => to_check.push(Arc::clone(target)),
            }
        }
        if let Some(check) = &self.first_check {
            let mut checks = tokio::task::JoinSet::new();
            for target in to_check {
                let check = check.clone();
                checks.spawn(async move { check.check_target(&target).await });
            }
            // Results are recorded on the targets; a failure only delays admission.
            while checks.join_next().await.is_some() {}
        }
        Ok((state.backends.clone(), HashMap::new()))
    }
}

/// The names of the apps `new` would remove from `old`, when that is all of
/// them or more than half; `None` for smaller changes, applied at once.
fn large_removal(old: &[AppSpec], new: &[AppSpec]) -> Option<Vec<String>> {
    let removed: Vec<String> = old
        .iter()
        .filter(|known| !new.iter().any(|app| app.url == known.url))
        .map(|known| known.name.clone())
        .collect();
    let everything = !removed.is_empty() && removed.len() == old.len();
    (everything || removed.len() * 2 > old.len()).then_some(removed)
}

/// One info line per app added, removed or re-weighted.
fn log_changes(old: &[AppSpec], new: &[AppSpec]) {
    for app in new {
        match old.iter().find(|known| known.url == app.url) {
            None => {
                info!(
                    "discovery added app={} url={} weight={}",
                    app.name, app.url, app.weight
                );
                events::record(
                    EventKind::AppAdded,
                    Some(&app.name),
                    format!("added {} weight={}", app.url, app.weight),
                );
            }
            Some(known) if known.weight != app.weight => {
                info!(
                    "discovery reweighted app={} url={} weight={}->{}",
                    app.name, app.url, known.weight, app.weight
                );
                events::record(
                    EventKind::AppReweighted,
                    Some(&app.name),
                    format!("weight {}->{}", known.weight, app.weight),
                );
            }
            Some(_) => {}
        }
    }
    for app in old {
        if !new.iter().any(|current| current.url == app.url) {
            info!("discovery removed app={} url={}", app.name, app.url);
            events::record(
                EventKind::AppRemoved,
                Some(&app.name),
                format!("removed {}", app.url),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source that fails on the rounds listed, else answers its apps.
    struct ScriptedSource {
        apps: Mutex<Vec<AppSpec>>,
        fail: Mutex<bool>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl AppSource for ScriptedSource {
        fn describe(&self) -> String {
            "scripted".into()
        }
        async fn round(&self) -> Result<Round, SourceError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if *self.fail.lock().expect("lock") {
                return Err(SourceError {
                    message: "boom".into(),
                    retry_in: Duration::ZERO,
                });
            }
            Ok(Round {
                apps: self.apps.lock().expect("lock").clone(),
                next_round_in: Some(Duration::ZERO),
                incomplete: None,
                hints: Vec::new(),
            })
        }
    }

    fn app(url: &str) -> AppSpec {
        AppSpec {
            url: BackendUrl::parse(url).expect("url"),
            name: url.into(),
            weight: 1,
        }
    }

    fn discovery(apps: Vec<AppSpec>) -> (AppDiscovery, Arc<ScriptedSource>) {
        let source = Arc::new(ScriptedSource {
            apps: Mutex::new(apps),
            fail: Mutex::new(false),
            calls: AtomicUsize::new(0),
        });
        struct Shared(Arc<ScriptedSource>);
        #[async_trait]
        impl AppSource for Shared {
            fn describe(&self) -> String {
                self.0.describe()
            }
            async fn round(&self) -> Result<Round, SourceError> {
                self.0.round().await
            }
        }
        let mut pins = HashMap::new();
        pins.insert("one.test".to_string(), "127.0.0.1".parse().expect("ip"));
        pins.insert("two.test".to_string(), "127.0.0.1".parse().expect("ip"));
        let discovery = AppDiscovery::new(
            Box::new(Shared(Arc::clone(&source))),
            NameResolver::offline(pins),
            Duration::from_secs(60),
            None,
        );
        (discovery, source)
    }

    #[tokio::test]
    async fn two_apps_on_one_address_are_two_backends_with_addresses() {
        let (discovery, _) = discovery(vec![app("https://one.test"), app("https://two.test")]);
        let (backends, _) = discovery.discover().await.expect("discovers");
        assert_eq!(backends.len(), 2);
        for backend in &backends {
            let target = AppTarget::of(backend).expect("target rides in ext");
            assert_eq!(target.addr(), Some("127.0.0.1:443".parse().expect("addr")));
        }
    }

    #[tokio::test]
    async fn a_failing_round_keeps_the_last_set_and_is_recorded() {
        let (discovery, source) = discovery(vec![app("https://one.test")]);
        let (first, _) = discovery.discover().await.expect("first round");
        *source.fail.lock().expect("lock") = true;
        let (second, _) = discovery.discover().await.expect("kept set");
        assert_eq!(first, second);
        let status = discovery.status().snapshot();
        assert_eq!(status.failed_rounds, 1);
        assert_eq!(
            status.last_error.map(|(message, _)| message),
            Some("boom".into())
        );
        assert!(status.last_success.is_some());
    }

    #[tokio::test]
    async fn targets_keep_their_identity_across_rounds() {
        let (discovery, source) = discovery(vec![app("https://one.test")]);
        let (first, _) = discovery.discover().await.expect("round");
        source
            .apps
            .lock()
            .expect("lock")
            .push(app("https://two.test"));
        let (second, _) = discovery.discover().await.expect("round");
        assert_eq!(second.len(), 2);
        assert!(first.iter().all(|backend| second.contains(backend)));
        source.apps.lock().expect("lock").remove(0);
        let (third, _) = discovery.discover().await.expect("round");
        assert_eq!(third.len(), 1);
        assert!(!first.iter().any(|backend| third.contains(backend)));
    }

    #[tokio::test]
    async fn an_unresolvable_name_stays_in_the_set_without_an_address() {
        let (discovery, _) = discovery(vec![app("http://no-such-host.invalid")]);
        let (backends, _) = discovery.discover().await.expect("no panic");
        let target = AppTarget::of(backends.iter().next().expect("one backend")).expect("target");
        assert_eq!(target.addr(), None);
    }

    #[tokio::test]
    async fn removing_most_apps_waits_for_the_next_round_to_agree() {
        let (discovery, source) = discovery(vec![app("https://one.test"), app("https://two.test")]);
        let (first, _) = discovery.discover().await.expect("round");
        assert_eq!(first.len(), 2);
        source.apps.lock().expect("lock").clear();
        let (held, _) = discovery.discover().await.expect("round");
        assert_eq!(held, first, "an empty list is not applied at once");
        let pending = discovery.status().snapshot().shrink_pending.expect("shown");
        assert_eq!(pending.removing.len(), 2);
        assert_eq!(pending.known, 2);
        let (applied, _) = discovery.discover().await.expect("round");
        assert!(applied.is_empty(), "the second round said the same");
        assert_eq!(discovery.status().snapshot().shrink_pending, None);
    }

    #[tokio::test]
    async fn a_held_removal_the_next_round_contradicts_is_dropped() {
        let apps = vec![
            app("https://one.test"),
            app("https://two.test"),
            app("https://a.test"),
        ];
        let (discovery, source) = discovery(apps.clone());
        let (first, _) = discovery.discover().await.expect("round");
        source.apps.lock().expect("lock").truncate(1);
        let (held, _) = discovery.discover().await.expect("round");
        assert_eq!(held, first);
        *source.apps.lock().expect("lock") = apps;
        let (kept, _) = discovery.discover().await.expect("round");
        assert_eq!(kept, first);
        assert_eq!(discovery.status().snapshot().shrink_pending, None);
    }

    #[tokio::test]
    async fn removing_one_app_of_two_is_immediate() {
        let (discovery, source) = discovery(vec![app("https://one.test"), app("https://two.test")]);
        discovery.discover().await.expect("round");
        source.apps.lock().expect("lock").remove(0);
        let (second, _) = discovery.discover().await.expect("round");
        assert_eq!(second.len(), 1);
        assert_eq!(discovery.status().snapshot().shrink_pending, None);
    }
}
