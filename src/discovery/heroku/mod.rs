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
//! One app must never hold up the others: a coupled app the API does not
//! return, or refuses to show (403, 404), is logged once by id, left out,
//! and looked up again only with the next full refresh of app details.

pub mod api;

use super::{AppSource, AppSpec, Round, SourceError};
use crate::backend::BackendUrl;
use crate::config::PipelineSettings;
use api::{ApiError, ApiStats, App, Conditional, Coupling, PlatformApi};
use async_trait::async_trait;
use log::{info, warn};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds run this much slower while the rate-limit reserve is reached.
const SLOWDOWN_FACTOR: u32 = 4;
/// Longest back-off after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Shortest wait after a 429.
const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(60);
/// Formation lookups in flight at once when many new apps appear together
/// (a first round over a large pipeline must end well inside Heroku's 60 s boot limit).
const LOOKUP_CONCURRENCY: usize = 8;

/// What we know of one app of the stage.
struct KnownApp {
    app: App,
    /// Web dyno count; 0 when the app has no web formation.
    web_quantity: u32,
    formation_checked: Instant,
    /// Why the app is left out, if it is; logged when it changes.
    excluded: Option<String>,
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
}

/// The Heroku pipeline source.
pub struct PipelineSource {
    settings: PipelineSettings,
    api: Arc<PlatformApi>,
    state: tokio::sync::Mutex<PipelineState>,
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
            }),
        })
    }

    /// Request count and `RateLimit-Remaining`, for status and metrics.
    pub fn api_stats(&self) -> Arc<ApiStats> {
        self.api.stats()
    }

    async fn run(&self, state: &mut PipelineState) -> Result<Vec<AppSpec>, ApiError> {
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

        let mut spent_extra = false;
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
        let ids: Vec<String> = state
            .couplings
            .iter()
            .filter(|coupling| coupling.stage == self.settings.stage)
            .map(|coupling| coupling.app.id.clone())
            .collect();
        state.apps.retain(|id, _| ids.contains(id));
        state.unavailable.retain(|id, _| ids.contains(id));

        // New apps are looked up at once, whatever it costs.
        let new: Vec<String> = ids
            .iter()
            .filter(|id| !state.apps.contains_key(*id) && !state.unavailable.contains_key(*id))
            .cloned()
            .collect();
        if !new.is_empty() {
            spent_extra = true;
            let now = Instant::now();
            let (apps, refused) = self.fetch_apps(state, &new).await?;
            for id in &new {
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
            for (app, web_quantity) in self.fetch_quantities(apps).await? {
                state.apps.insert(
                    app.id.clone(),
                    KnownApp {
                        app,
                        web_quantity,
                        formation_checked: now,
                        excluded: None,
                    },
                );
            }
        }

        // Known apps: at most one refresh request per round.
        let now = Instant::now();
        let refresh = self.settings.app_refresh_interval;
        if !spent_extra
            && !state.apps.is_empty()
            && now.duration_since(state.apps_checked) >= refresh
        {
            let known: Vec<String> = state.apps.keys().cloned().collect();
            let (apps, _) = self.fetch_apps(state, &known).await?;
            for app in apps {
                if let Some(entry) = state.apps.get_mut(&app.id) {
                    entry.app = app;
                }
            }
            state.apps_checked = now;
            // Apps left out as unavailable count as new again next round.
            state.unavailable.clear();
        } else if !spent_extra {
            let stalest = state
                .apps
                .values()
                .filter(|known| now.duration_since(known.formation_checked) >= refresh)
                .min_by_key(|known| known.formation_checked)
                .map(|known| known.app.clone());
            if let Some(app) = stalest {
                let quantity = self.fetch_quantity(&app).await?;
                if let Some(entry) = state.apps.get_mut(&app.id) {
                    entry.web_quantity = quantity;
                    entry.formation_checked = now;
                }
            }
        }

        let mut specs = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(known) = state.apps.get_mut(id) else {
                // A coupled app the API did not return (deleted meanwhile).
                continue;
            };
            match self.spec_for(known) {
                Ok(spec) => {
                    if known.excluded.take().is_some() {
                        info!("app={} back in rotation", known.app.name);
                    }
                    specs.push(spec);
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
        Ok(specs)
    }

    /// The app records for `ids`, in one request when the API allows it,
    /// and why the API refused some of them (per-app 403 or 404, when asked
    /// one by one). An app missing from the answer is in neither.
    async fn fetch_apps(
        &self,
        state: &mut PipelineState,
        ids: &[String],
    ) -> Result<(Vec<App>, HashMap<String, String>), ApiError> {
        let mut refused = HashMap::new();
        if state.filters_supported {
            match self.api.apps_by_ids(ids).await {
                Ok(apps) => return Ok((apps, refused)),
                Err(error) if matches!(error.status(), Some(400 | 404 | 405 | 406 | 415 | 422)) => {
                    warn!("{error}; falling back to one GET /apps/{{id}} per app");
                    state.filters_supported = false;
                }
                Err(error) => return Err(error),
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
                Err(error) => return Err(error),
            }
        }
        Ok((apps, refused))
    }

    /// The web dyno count of `app` (0 without a web formation). Skipped for
    /// apps that will be left out anyway.
    async fn fetch_quantity(&self, app: &App) -> Result<u32, ApiError> {
        web_quantity(&self.api, app).await
    }

    /// Web dyno counts of many apps, a few lookups at a time.
    async fn fetch_quantities(&self, apps: Vec<App>) -> Result<Vec<(App, u32)>, ApiError> {
        let mut results = Vec::with_capacity(apps.len());
        let mut pending = apps.into_iter();
        let mut lookups = tokio::task::JoinSet::new();
        loop {
            while lookups.len() < LOOKUP_CONCURRENCY {
                let Some(app) = pending.next() else { break };
                let api = Arc::clone(&self.api);
                lookups.spawn(async move {
                    let quantity = web_quantity(&api, &app).await;
                    (app, quantity)
                });
            }
            let Some(joined) = lookups.join_next().await else {
                break;
            };
            // A lookup task only panics if reqwest does; count it as a failed round.
            let (app, quantity) = joined.map_err(|e| ApiError::Transport {
                what: "formation lookup".to_string(),
                reason: e.to_string(),
            })?;
            results.push((app, quantity?));
        }
        Ok(results)
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

    async fn round(&self) -> Result<Round, SourceError> {
        let mut state = self.state.lock().await;
        match self.run(&mut state).await {
            Ok(apps) => {
                state.failures = 0;
                Ok(Round {
                    apps,
                    next_round_in: Some(self.next_round_in(&mut state)),
                })
            }
            Err(error) => {
                state.failures += 1;
                Err(SourceError {
                    retry_in: self.backoff(&error, state.failures),
                    message: error.to_string(),
                })
            }
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
