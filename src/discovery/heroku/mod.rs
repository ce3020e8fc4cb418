//! The apps of one stage of a Heroku pipeline, read through the Platform API:
//! the [`AppSource`] behind `HEROKU_API_KEY` + `PIPELINE_IDENTIFIER`.
//!
//! Input: [`PipelineSettings`]; output: one [`AppSpec`] per app that can take
//! traffic (hostname from `web_url`, weight from its web dyno count), for
//! `AppDiscovery` in `discovery/mod.rs`, which keeps the last good set when a
//! round fails.
//!
//! The API budget (~4,500 tokens, refilled ~75 a minute) is shared with the
//! user's CLI and CI, so a round costs little: the couplings list is one
//! request (a 304 when unchanged), new apps are looked up at once, and the
//! details of known apps are refreshed on a slower cadence with at most one
//! extra request per round: one `POST /filters/apps` for every app's
//! `web_url`/maintenance, or one app's web formation. Below the
//! `RateLimit-Remaining` reserve rounds slow down; on 429 they back off.
//!
//! One app must never hold up the others. Only the pipeline and its
//! couplings are needed for a round to count; every per-app lookup fails on
//! its own: a coupled app the API does not return, or refuses to show (403,
//! 404), is logged once by id and left out until the next full refresh; an
//! app whose lookup failed otherwise (a 503, a timeout, a 429) is left out
//! and looked up again next round, while every app whose lookups succeeded
//! is served at once. A 429 stops the round's remaining lookups (they wait
//! for the back-off), and a round that runs long ([`ROUND_BUDGET`]) returns
//! what it has learned instead of throwing it away.
//!
//! The one spare request of a steady round goes to whatever is the most
//! overdue, so that no kind of refresh starves another: an app left out for
//! lack of web dynos is due every round (it may have been scaled up), a
//! stale formation and the details of every app after
//! `app_refresh_interval`.

pub mod api;
pub mod subscriptions;

use super::lookups::{AppLookups, Look};
use super::{AppHint, AppSource, AppSpec, Round, SourceError};
use crate::backend::BackendUrl;
use crate::config::PipelineSettings;
use api::{ApiError, ApiStats, App, Conditional, Coupling, PlatformApi};
use async_trait::async_trait;
use log::{info, warn};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subscriptions::Subscriptions;

/// Rounds run this much slower while the rate-limit reserve is reached.
const SLOWDOWN_FACTOR: u32 = 4;
/// Longest back-off after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Shortest wait after a 429.
const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(60);
/// Formation lookups in flight at once when many new apps appear together
/// (a first round over a large pipeline must end well inside Heroku's 60 s boot limit).
const LOOKUP_CONCURRENCY: usize = 8;
/// How early a scheduled poll may run: the discovery loop's tick and this
/// source's clock drift by a few microseconds a round.
const SCHEDULE_TOLERANCE: Duration = Duration::from_millis(50);
/// Longest a round spends on per-app lookups before it returns what it has
/// (inside `discovery/mod.rs`'s 40 s limit, which would discard it all).
pub const ROUND_BUDGET: Duration = Duration::from_secs(30);

/// What we know of one app of the stage.
struct KnownApp {
    app: App,
    /// Web dyno count; 0 when the app has no web formation.
    web_quantity: u32,
    formation_checked: Instant,
    /// Why the app is left out, if it is; logged when it changes.
    excluded: Option<String>,
    /// Whether preboot is on, and when that was looked up (on a release).
    preboot: Option<(bool, Instant)>,
}

/// State between rounds (rounds never overlap; a tokio mutex since it is held across awaits).
struct PipelineState {
    pipeline_id: Option<String>,
    couplings: Vec<Coupling>,
    couplings_etag: Option<String>,
    apps: HashMap<String, KnownApp>,
    /// Coupled apps the API did not return or refused to show, by id, with
    /// why; left out until the next full refresh looks them up again.
    unavailable: HashMap<String, String>,
    apps_checked: Instant,
    /// `POST /filters/apps` is marked "development" in Heroku's schema; if it
    /// is refused we fall back to one `GET /apps/{id}` per app.
    filters_supported: bool,
    failures: u32,
    slowed_down: bool,
    /// When the couplings are due again: rounds in between only look at
    /// the apps a webhook named.
    next_couplings: Option<Instant>,
    /// Webhook subscriptions, with `LB_WEBHOOK_URL`.
    subscriptions: Option<Subscriptions>,
    /// Looks that failed, asked again with the next poll of the couplings.
    retry_looks: HashMap<String, Look>,
}

/// The Heroku pipeline source.
pub struct PipelineSource {
    settings: PipelineSettings,
    api: Arc<PlatformApi>,
    state: tokio::sync::Mutex<PipelineState>,
    /// Apps a webhook asked to look at now.
    lookups: Arc<AppLookups>,
}

impl PipelineSource {
    pub fn new(settings: &PipelineSettings) -> Result<Self, String> {
        let api = Arc::new(PlatformApi::new(settings)?);
        let now = Instant::now();
        Ok(PipelineSource {
            settings: settings.clone(),
            api,
            state: tokio::sync::Mutex::new(PipelineState {
                pipeline_id: None,
                couplings: Vec::new(),
                couplings_etag: None,
                apps: HashMap::new(),
                unavailable: HashMap::new(),
                apps_checked: now,
                filters_supported: true,
                failures: 0,
                slowed_down: false,
                next_couplings: None,
                retry_looks: HashMap::new(),
                subscriptions: settings.webhooks.as_ref().and_then(|webhooks| {
                    let url = webhooks.public_url.as_deref()?;
                    Some(Subscriptions::new(
                        url,
                        &settings.admin_prefix,
                        &webhooks.secret,
                    ))
                }),
            }),
            lookups: Arc::new(AppLookups::default()),
        })
    }

    /// The queue the webhook receiver fills (`webhooks.rs`).
    pub fn lookups(&self) -> Arc<AppLookups> {
        Arc::clone(&self.lookups)
    }

    /// Request count and `RateLimit-Remaining`, for status and metrics.
    pub fn api_stats(&self) -> Arc<ApiStats> {
        self.api.stats()
    }

    /// One round: the couplings (a failure here fails the round), then the
    /// per-app lookups, each failing on its own. Returns the apps that can
    /// take traffic and what went wrong with the others.
    async fn run(&self, state: &mut PipelineState) -> Result<RoundResult, ApiError> {
        let deadline = tokio::time::Instant::now() + ROUND_BUDGET;
        let mut result = RoundResult::default();
        // The discovery loop calls on its own tick, which need not land
        // after this clock: a poll due within the tolerance is due.
        let couplings_due = state
            .next_couplings
            .is_none_or(|due| due <= Instant::now() + SCHEDULE_TOLERANCE);
        result.polled = couplings_due;
        if couplings_due {
            self.poll_couplings(state).await?;
        }
        let ids: Vec<String> = state
            .couplings
            .iter()
            .filter(|coupling| coupling.stage == self.settings.stage)
            .map(|coupling| coupling.app.id.clone())
            .collect();
        state.apps.retain(|id, _| ids.contains(id));
        state.unavailable.retain(|id, _| ids.contains(id));

        let mut looks = self.lookups.take();
        if couplings_due {
            for (id, look) in std::mem::take(&mut state.retry_looks) {
                looks.entry(id).or_default().merge(look);
            }
        }
        if !looks.is_empty() {
            self.look_at(state, looks, &mut result).await;
        }
        if couplings_due {
            // New apps (and those whose lookup failed before) are looked up
            // at once, whatever it costs.
            let new: Vec<String> = ids
                .iter()
                .filter(|id| !state.apps.contains_key(*id) && !state.unavailable.contains_key(*id))
                .cloned()
                .collect();
            if !new.is_empty() {
                self.look_up_new(state, &new, deadline, &mut result).await;
            } else {
                // Known apps: the one spare request goes to the most overdue refresh.
                self.refresh_most_overdue(state, &mut result).await;
            }
            self.sync_subscriptions(state).await;
        }

        for id in &ids {
            let Some(known) = state.apps.get_mut(id) else {
                // Not looked up yet, left out, or deleted meanwhile.
                continue;
            };
            match self.spec_for(known) {
                Ok(spec) => {
                    if known.excluded.take().is_some() {
                        info!("app={} back in rotation", known.app.name);
                    }
                    result.apps.push(spec);
                }
                Err(reason) => {
                    if known.excluded.as_deref() != Some(reason.as_str()) {
                        if reason.starts_with("web_url") {
                            warn!("app={} skipped: {reason}", known.app.name);
                        } else {
                            info!("app={} left out: {reason}", known.app.name);
                        }
                        known.excluded = Some(reason);
                    }
                }
            }
        }
        Ok(result)
    }

    /// The pipeline's id (looked up once by name) and its couplings (a 304
    /// when unchanged). A failure here fails the round.
    async fn poll_couplings(&self, state: &mut PipelineState) -> Result<(), ApiError> {
        let pipeline_id = match &state.pipeline_id {
            Some(id) => id.clone(),
            None => {
                let id = if looks_like_uuid(&self.settings.pipeline) {
                    self.settings.pipeline.to_ascii_lowercase()
                } else {
                    let pipeline = self.api.pipeline(&self.settings.pipeline).await?;
                    info!(
                        "pipeline name={} resolved id={}",
                        pipeline.name, pipeline.id
                    );
                    pipeline.id
                };
                state.pipeline_id = Some(id.clone());
                id
            }
        };

        match self
            .api
            .couplings(&pipeline_id, state.couplings_etag.as_deref())
            .await?
        {
            Conditional::NotModified => {}
            Conditional::Fresh { value, etag } => {
                state.couplings = value;
                state.couplings_etag = etag;
            }
        }
        Ok(())
    }

    /// The looks a webhook asked for, one or two API calls each, for the
    /// apps of the stage that are known (an app not yet known is looked up
    /// as new when the couplings list it). What failed is asked again.
    async fn look_at(
        &self,
        state: &mut PipelineState,
        looks: HashMap<String, Look>,
        result: &mut RoundResult,
    ) {
        let now = Instant::now();
        for (id, look) in looks {
            let Some(known) = state.apps.get(&id) else {
                continue;
            };
            let app = known.app.clone();
            let mut again = Look::default();
            if look.details {
                match self.api.app(&id).await {
                    Ok(fresh) => {
                        if let Some(entry) = state.apps.get_mut(&id) {
                            entry.app = fresh;
                        }
                    }
                    Err(error) => {
                        again.details = !matches!(error.status(), Some(403 | 404));
                        result.failed(error, 1);
                    }
                }
            }
            if look.formation {
                match self.fetch_quantity(&app).await {
                    Ok(quantity) => {
                        if let Some(entry) = state.apps.get_mut(&id) {
                            entry.web_quantity = quantity;
                            entry.formation_checked = now;
                        }
                    }
                    Err(error) => {
                        again.formation = true;
                        result.failed(error, 1);
                    }
                }
            }
            let url = app
                .web_url
                .as_deref()
                .and_then(|web_url| BackendUrl::parse(web_url).ok());
            if look.released {
                let cached = state
                    .apps
                    .get(&id)
                    .and_then(|known| known.preboot)
                    .filter(|(_, at)| at.elapsed() < self.settings.app_refresh_interval);
                let preboot = match cached {
                    Some((preboot, _)) => Some(preboot),
                    None => match self.api.preboot(&id).await {
                        Ok(preboot) => {
                            if let Some(entry) = state.apps.get_mut(&id) {
                                entry.preboot = Some((preboot, now));
                            }
                            Some(preboot)
                        }
                        Err(error) => {
                            again.released = true;
                            result.failed(error, 1);
                            None
                        }
                    },
                };
                if let (Some(preboot), Some(url)) = (preboot, &url) {
                    result
                        .hints
                        .push((url.clone(), AppHint::Released { preboot }));
                }
            }
            if look.check {
                if let Some(url) = url {
                    result.hints.push((url, AppHint::CheckNow));
                }
            }
            if again != Look::default() {
                // Asked again with the next poll, not at once: a failing API
                // must not be hammered every tick.
                state.retry_looks.entry(id).or_default().merge(again);
            }
        }
    }

    /// Subscribe the stage's apps to their webhooks, with `LB_WEBHOOK_URL`,
    /// while the rate limit allows.
    async fn sync_subscriptions(&self, state: &mut PipelineState) {
        let Some(subscriptions) = state.subscriptions.as_mut() else {
            return;
        };
        let low = self
            .api
            .stats()
            .rate_limit_remaining()
            .is_some_and(|remaining| remaining < self.settings.rate_limit_reserve);
        if low {
            return;
        }
        let known: Vec<String> = state.apps.keys().cloned().collect();
        if let Some(error) = subscriptions.sync(&self.api, &known).await {
            warn!("webhook subscriptions: {error}; tried again next round");
        }
    }

    /// Look up apps seen for the first time: their records in one request,
    /// then their formations a few at a time. Each app that answers is
    /// known at once (kept in `state` as its lookup ends, so a round cut
    /// short keeps it); one that fails is looked up again next round.
    async fn look_up_new(
        &self,
        state: &mut PipelineState,
        new: &[String],
        deadline: tokio::time::Instant,
        result: &mut RoundResult,
    ) {
        let (apps, refused, failed) = self.fetch_apps(state, new).await;
        if let Some(error) = failed {
            result.failed(error, new.len());
            return;
        }
        for id in new {
            let reason = match refused.get(id) {
                Some(reason) => reason.clone(),
                None if apps.iter().any(|app| &app.id == id) => continue,
                None => "the API did not return it".to_string(),
            };
            warn!(
                "app id={id} is coupled to the pipeline but {reason}: left out, looked up \
                 again in {:?}",
                self.settings.app_refresh_interval
            );
            state.unavailable.insert(id.clone(), reason);
        }
        let mut pending = apps.into_iter();
        let mut lookups = tokio::task::JoinSet::new();
        let mut stopped = false;
        loop {
            while !stopped && lookups.len() < LOOKUP_CONCURRENCY {
                let Some(app) = pending.next() else { break };
                let api = Arc::clone(&self.api);
                lookups.spawn(async move {
                    let quantity = web_quantity(&api, &app).await;
                    (app, quantity)
                });
            }
            let joined = match tokio::time::timeout_at(deadline, lookups.join_next()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_) => {
                    let left = lookups.len() + pending.len();
                    result.failed(
                        ApiError::Transport {
                            what: "formation lookups".to_string(),
                            reason: format!("round budget of {ROUND_BUDGET:?} spent"),
                        },
                        left,
                    );
                    break;
                }
            };
            // A lookup task only panics if reqwest does: that app waits for
            // the next round.
            let Ok((app, quantity)) = joined else {
                continue;
            };
            match quantity {
                Ok(web_quantity) => {
                    state.apps.insert(
                        app.id.clone(),
                        KnownApp {
                            app,
                            web_quantity,
                            formation_checked: Instant::now(),
                            excluded: None,
                            preboot: None,
                        },
                    );
                }
                Err(error) => {
                    // After a 429 the rest waits for the back-off.
                    if error.status() == Some(429) && !stopped {
                        stopped = true;
                        result.failed(error, 1 + pending.len());
                    } else {
                        result.failed(error, 1);
                    }
                }
            }
        }
    }

    /// Spend the round's one spare request on the most overdue refresh: the
    /// details of every app (`POST /filters/apps`), one stale formation, or
    /// the formation of an app out for lack of web dynos (due every round:
    /// it may have been scaled up). Earliest due first, so none starves.
    async fn refresh_most_overdue(&self, state: &mut PipelineState, result: &mut RoundResult) {
        let now = Instant::now();
        let refresh = self.settings.app_refresh_interval;
        // With webhooks flowing, a scale-up comes as an event: polling is
        // the safety net, and apps out for lack of dynos wait like the rest.
        let zero_dyno_wait = if self.lookups.flowing(refresh) {
            refresh
        } else {
            self.settings.interval
        };
        let details_due = (!state.apps.is_empty()).then_some(state.apps_checked + refresh);
        let formation_due = state
            .apps
            .values()
            .map(|known| {
                let wait = if known.web_quantity == 0 && known.app.web_url.is_some() {
                    zero_dyno_wait
                } else {
                    refresh
                };
                (known.formation_checked + wait, known.app.id.clone())
            })
            .min();
        let formation_first = match (details_due, &formation_due) {
            (Some(details), Some((formation, _))) => *formation < details,
            (None, Some(_)) => true,
            _ => false,
        };
        if formation_first {
            let Some((due, id)) = formation_due else {
                return;
            };
            let Some(app) = state.apps.get(&id).map(|known| known.app.clone()) else {
                return;
            };
            if due > now {
                return;
            }
            match self.fetch_quantity(&app).await {
                Ok(quantity) => {
                    if let Some(entry) = state.apps.get_mut(&app.id) {
                        entry.web_quantity = quantity;
                        entry.formation_checked = now;
                    }
                }
                Err(error) => result.failed(error, 1),
            }
        } else if details_due.is_some_and(|due| due <= now) {
            let known: Vec<String> = state.apps.keys().cloned().collect();
            let (apps, _, failed) = self.fetch_apps(state, &known).await;
            if let Some(error) = failed {
                result.failed(error, known.len());
                return;
            }
            for app in apps {
                if let Some(entry) = state.apps.get_mut(&app.id) {
                    entry.app = app;
                }
            }
            state.apps_checked = now;
            // Apps left out as unavailable count as new again next round.
            state.unavailable.clear();
        }
    }

    /// The app records for `ids`, in one request when the API allows it;
    /// why the API refused some of them (per-app 403 or 404, when asked one
    /// by one); and the error that stopped the lookup, if one did. An app
    /// missing from the answer is in neither list.
    async fn fetch_apps(
        &self,
        state: &mut PipelineState,
        ids: &[String],
    ) -> (Vec<App>, HashMap<String, String>, Option<ApiError>) {
        let mut refused = HashMap::new();
        if state.filters_supported {
            match self.api.apps_by_ids(ids).await {
                Ok(apps) => return (apps, refused, None),
                Err(error) if matches!(error.status(), Some(400 | 404 | 405 | 406 | 415 | 422)) => {
                    warn!("{error}; falling back to one GET /apps/{{id}} per app");
                    state.filters_supported = false;
                }
                Err(error) => return (Vec::new(), refused, Some(error)),
            }
        }
        let mut apps = Vec::with_capacity(ids.len());
        for id in ids {
            match self.api.app(id).await {
                Ok(app) => apps.push(app),
                // Deleted since it was coupled, or not ours to see: that
                // app is left out, the others go on.
                Err(error) if matches!(error.status(), Some(403 | 404)) => {
                    refused.insert(id.clone(), format!("its lookup failed ({error})"));
                }
                // What was found so far is kept; the rest waits.
                Err(error) => return (apps, refused, Some(error)),
            }
        }
        (apps, refused, None)
    }

    /// The web dyno count of `app` (0 without a web formation). Skipped for
    /// apps that will be left out anyway.
    async fn fetch_quantity(&self, app: &App) -> Result<u32, ApiError> {
        web_quantity(&self.api, app).await
    }

    fn spec_for(&self, known: &KnownApp) -> Result<AppSpec, String> {
        let app = &known.app;
        let Some(web_url) = &app.web_url else {
            return Err("web_url is null (the app has no web address)".to_string());
        };
        let url =
            BackendUrl::parse(web_url).map_err(|e| format!("web_url '{web_url}' unusable: {e}"))?;
        if app.maintenance {
            return Err("maintenance mode is on (Heroku answers 503 H80)".to_string());
        }
        if known.web_quantity == 0 {
            return Err("no web dynos (Heroku answers 503 H14)".to_string());
        }
        let weight = if self.settings.weight_by_dynos {
            known.web_quantity as usize
        } else {
            1
        };
        Ok(AppSpec {
            url,
            name: app.name.clone(),
            weight,
        })
    }

    /// When to try again after `error`, the `failures`-th in a row.
    fn backoff(&self, error: &ApiError, failures: u32) -> Duration {
        let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        match error.status() {
            Some(429) => {
                (RATE_LIMIT_BACKOFF.max(self.settings.interval) * doubling).min(MAX_BACKOFF)
            }
            // A bad key or a missing pipeline will not fix itself quickly.
            Some(401 | 403 | 404) => self.settings.interval.max(Duration::from_secs(30)),
            // Anything else: retry soon (1 s, 2 s, 4 s …) up to the interval,
            // so a first round that fails is retried quickly.
            _ => (Duration::from_secs(1) * doubling)
                .min(self.settings.interval.max(Duration::from_secs(1))),
        }
    }

    fn next_round_in(&self, state: &mut PipelineState) -> Duration {
        let remaining = self.api.stats().rate_limit_remaining();
        let low = remaining.is_some_and(|remaining| remaining < self.settings.rate_limit_reserve);
        if low != state.slowed_down {
            state.slowed_down = low;
            if low {
                warn!(
                    "Platform API RateLimit-Remaining={} below reserve={}: discovery slows down {SLOWDOWN_FACTOR}x",
                    remaining.unwrap_or(0),
                    self.settings.rate_limit_reserve
                );
            } else {
                info!("Platform API RateLimit-Remaining back above reserve: discovery at its normal interval");
            }
        }
        if low {
            self.settings.interval * SLOWDOWN_FACTOR
        } else {
            self.settings.interval
        }
    }
}

#[async_trait]
impl AppSource for PipelineSource {
    fn describe(&self) -> String {
        format!(
            "heroku pipeline {} ({})",
            self.settings.pipeline, self.settings.stage
        )
    }

    fn wants_round(&self) -> bool {
        self.lookups.waiting()
    }

    async fn round(&self) -> Result<Round, SourceError> {
        let mut state = self.state.lock().await;
        // Polls are scheduled from the start of a round, as the discovery
        // loop schedules rounds: the two clocks agree.
        let started = Instant::now();
        match self.run(&mut state).await {
            Ok(result) => {
                // A 429 on a per-app lookup backs the next round off as a
                // failed round would; other per-app failures retry at the
                // normal interval.
                let now = started;
                let next_round_in = match (&result.rate_limited, result.polled) {
                    (Some(error), _) => {
                        state.failures += 1;
                        self.backoff(error, state.failures)
                    }
                    (None, true) => {
                        state.failures = 0;
                        self.next_round_in(&mut state)
                    }
                    // Only looks: the next poll keeps its time.
                    (None, false) => state.next_couplings.map_or(Duration::ZERO, |due| {
                        due.saturating_duration_since(Instant::now())
                    }),
                };
                if result.polled || result.rate_limited.is_some() {
                    state.next_couplings = Some(now + next_round_in);
                }
                Ok(Round {
                    apps: result.apps,
                    next_round_in: Some(next_round_in),
                    incomplete: result.problem.map(|(error, apps)| {
                        format!("{apps} app lookup(s) left for the next round, first: {error}")
                    }),
                    hints: result.hints,
                })
            }
            Err(error) => {
                state.failures += 1;
                // Failed at the couplings: the next try is the next poll.
                state.next_couplings = None;
                Err(SourceError {
                    retry_in: self.backoff(&error, state.failures),
                    message: error.to_string(),
                })
            }
        }
    }
}

/// What one round of `PipelineSource::run` found.
#[derive(Default)]
struct RoundResult {
    /// The couplings were polled (a regular round, not only looks).
    polled: bool,
    apps: Vec<AppSpec>,
    /// What webhooks said beyond the set: releases, dynos to check now.
    hints: Vec<(BackendUrl, AppHint)>,
    /// The first per-app failure and how many apps failed in all.
    problem: Option<(ApiError, usize)>,
    /// A 429 answered one of the lookups.
    rate_limited: Option<ApiError>,
}

impl RoundResult {
    /// `apps` apps were not looked up because of `error`.
    fn failed(&mut self, error: ApiError, apps: usize) {
        if error.status() == Some(429) && self.rate_limited.is_none() {
            self.rate_limited = Some(error.clone());
        }
        match &mut self.problem {
            Some((_, count)) => *count += apps,
            None => self.problem = Some((error, apps)),
        }
    }
}

async fn web_quantity(api: &PlatformApi, app: &App) -> Result<u32, ApiError> {
    if app.web_url.is_none() {
        return Ok(0);
    }
    Ok(api
        .web_formation(&app.id)
        .await?
        .map_or(0, |formation| formation.quantity))
}

/// Heroku ids are UUIDs: 8-4-4-4-12 hex digits.
fn looks_like_uuid(raw: &str) -> bool {
    let groups: Vec<&str> = raw.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKey;

    fn settings() -> PipelineSettings {
        PipelineSettings {
            api_key: ApiKey::new("k".to_string()),
            pipeline: "shop".into(),
            stage: "production".into(),
            api_url: "http://127.0.0.1:9".into(),
            interval: Duration::from_secs(30),
            app_refresh_interval: Duration::from_secs(600),
            api_timeout: Duration::from_secs(1),
            rate_limit_reserve: 500,
            weight_by_dynos: true,
            webhooks: None,
            admin_prefix: "/_lb/".into(),
        }
    }

    #[test]
    fn uuids_are_told_from_names() {
        assert!(looks_like_uuid("01234567-89ab-cdef-0123-456789ABCDEF"));
        assert!(!looks_like_uuid("my-pipeline"));
        assert!(!looks_like_uuid("01234567-89ab-cdef-0123-456789abcde"));
    }

    #[test]
    fn backoff_is_quick_for_transient_errors_and_long_for_429() {
        let source = PipelineSource::new(&settings()).expect("client builds");
        let transient = ApiError::Transport {
            what: "GET x".into(),
            reason: "refused".into(),
        };
        assert_eq!(source.backoff(&transient, 1), Duration::from_secs(1));
        assert_eq!(source.backoff(&transient, 3), Duration::from_secs(4));
        assert_eq!(source.backoff(&transient, 10), Duration::from_secs(30));
        let limited = ApiError::Status {
            what: "GET x".into(),
            status: 429,
            id: Some("rate_limit".into()),
            message: None,
        };
        assert_eq!(source.backoff(&limited, 1), Duration::from_secs(60));
        assert_eq!(source.backoff(&limited, 3), Duration::from_secs(240));
        assert_eq!(source.backoff(&limited, 30), MAX_BACKOFF);
    }

    #[test]
    fn apps_that_would_answer_503_are_left_out_and_weights_follow_dynos() {
        let source = PipelineSource::new(&settings()).expect("client builds");
        let known = |web_url: Option<&str>, maintenance, web_quantity| KnownApp {
            app: App {
                id: "id".into(),
                name: "shop-1".into(),
                web_url: web_url.map(str::to_string),
                maintenance,
            },
            web_quantity,
            formation_checked: Instant::now(),
            excluded: None,
            preboot: None,
        };
        let spec = source
            .spec_for(&known(
                Some("https://shop-1-0123456789ab.herokuapp.com/"),
                false,
                4,
            ))
            .expect("a serving app");
        assert_eq!(spec.weight, 4);
        assert_eq!(spec.url.host(), "shop-1-0123456789ab.herokuapp.com");
        assert!(source.spec_for(&known(None, false, 1)).is_err());
        assert!(source
            .spec_for(&known(Some("https://a.herokuapp.com/"), true, 1))
            .is_err());
        assert!(source
            .spec_for(&known(Some("https://a.herokuapp.com/"), false, 0))
            .is_err());
    }
}
