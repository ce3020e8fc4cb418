//! The fake Platform API's data: pipelines, apps, their pipeline couplings and `web`
//! formations, the ids it hands out, the state the server thread shares with the test, the
//! test-side methods that build and change that data, and the JSON shapes each record is
//! served as (from the `@heroku-cli/schema` types).

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::failures::FailureRule;
use super::routing::RecordedRequest;
use super::FakeHerokuApi;

/// The pipeline-coupling stages Heroku accepts.
pub const STAGES: [&str; 5] = ["test", "review", "development", "staging", "production"];

const OWNER_EMAIL: &str = "owner@example.com";
// Fixed identities of the shared resources every app points at.
const US_REGION_ID: &str = "59accabd-516d-4f0e-83e6-6e3757701145";
const STACK_ID: &str = "74cfe988-7527-4ca4-9667-77bfa2e4bd88";
const STACK_NAME: &str = "heroku-24";
const GENERATION_ID: &str = "c2c8ec44-2a4c-4b3f-8f9a-6b1b7c5e1f3d";

/// Id of a pipeline in the fake (a UUID, as Heroku's).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId(String);

/// Id of an app in the fake (a UUID, as Heroku's).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

impl PipelineId {
    /// The UUID as the API spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AppId {
    /// The UUID as the API spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An app to add to the fake, coupled to `pipeline` at `stage`.
#[derive(Clone, Debug)]
pub struct AppFixture<'a> {
    /// Unique app name (Heroku's `name`).
    pub name: &'a str,
    /// `web_url`; `None` answers `null`, as the API may.
    pub web_url: Option<String>,
    /// Maintenance mode (the router answers 503 H80 when on).
    pub maintenance: bool,
    /// Quantity of the `web` formation; `None` means the app has no web process type at all.
    pub web_quantity: Option<u32>,
    /// Coupling stage: one of [`STAGES`].
    pub stage: &'a str,
    /// Pipeline the app is coupled to.
    pub pipeline: &'a PipelineId,
}

impl<'a> AppFixture<'a> {
    /// An app serving at `web_url`, with defaults: not in maintenance, `web` quantity 1,
    /// stage `production`.
    pub fn new(name: &'a str, pipeline: &'a PipelineId, web_url: &str) -> Self {
        AppFixture {
            name,
            web_url: Some(web_url.to_string()),
            maintenance: false,
            web_quantity: Some(1),
            stage: "production",
            pipeline,
        }
    }

    /// Sets maintenance mode.
    pub fn maintenance(mut self, on: bool) -> Self {
        self.maintenance = on;
        self
    }

    /// Sets the `web` quantity (`None`: no web formation).
    pub fn web_quantity(mut self, quantity: Option<u32>) -> Self {
        self.web_quantity = quantity;
        self
    }

    /// Sets the coupling stage.
    pub fn stage(mut self, stage: &'a str) -> Self {
        self.stage = stage;
        self
    }

    /// Makes `web_url` null.
    pub fn without_web_url(mut self) -> Self {
        self.web_url = None;
        self
    }
}

impl FakeHerokuApi {
    /// Creates a pipeline named `name` and returns its id.
    pub fn add_pipeline(&self, name: &str) -> PipelineId {
        let mut state = self.state();
        let id = state.ids.uuid();
        let now = now_iso8601();
        state.pipelines.insert(
            id.clone(),
            PipelineRecord {
                id: id.clone(),
                name: name.to_string(),
                created_at: now.clone(),
                updated_at: now,
            },
        );
        PipelineId(id)
    }

    /// Creates an app (with its `web` formation when `web_quantity` is set) coupled to the
    /// fixture's pipeline and stage; returns its id.
    pub fn add_app(&self, fixture: AppFixture<'_>) -> AppId {
        check_stage(fixture.stage);
        let mut state = self.state();
        assert!(
            state.pipelines.contains_key(fixture.pipeline.as_str()),
            "no pipeline {} in the fake",
            fixture.pipeline
        );
        assert!(
            state.apps.values().all(|a| a.name != fixture.name),
            "an app named {} already exists in the fake",
            fixture.name
        );
        let id = state.ids.uuid();
        let now = now_iso8601();
        let web = fixture.web_quantity.map(|quantity| FormationRecord {
            id: state.ids.uuid(),
            quantity,
            created_at: now.clone(),
            updated_at: now.clone(),
        });
        state.apps.insert(
            id.clone(),
            AppRecord {
                id: id.clone(),
                name: fixture.name.to_string(),
                web_url: fixture.web_url,
                maintenance: fixture.maintenance,
                created_at: now.clone(),
                updated_at: now.clone(),
                released_at: now,
                web,
            },
        );
        let app = AppId(id);
        state.couple(&app, fixture.pipeline, fixture.stage);
        app
    }

    /// Deletes an app and its coupling.
    pub fn remove_app(&self, app: &AppId) {
        let mut state = self.state();
        assert!(
            state.apps.remove(app.as_str()).is_some(),
            "no app {app} in the fake"
        );
        state.couplings.retain(|_, c| c.app_id != app.0);
    }

    /// Removes the app's coupling; the app itself still answers `GET /apps/{id}`.
    pub fn decouple_app(&self, app: &AppId) {
        let mut state = self.state();
        state.app_mut(app);
        state.couplings.retain(|_, c| c.app_id != app.0);
    }

    /// Turns maintenance mode on or off.
    pub fn set_maintenance(&self, app: &AppId, on: bool) {
        {
            let mut state = self.state();
            let record = state.app_mut(app);
            record.maintenance = on;
            record.updated_at = now_iso8601();
        }
        // Subscribers hear of it, as from Heroku.
        let data = self.event_data(app, serde_json::json!({"maintenance": on}));
        let data = data["app"].clone();
        self.deliver(app, "app", "update", data);
    }

    /// Sets the `web` quantity; `None` removes the web formation.
    pub fn set_web_quantity(&self, app: &AppId, quantity: Option<u32>) {
        self.set_web_quantity_quietly(app, quantity);
        // Subscribers hear of it, as from Heroku.
        let data = self.event_data(
            app,
            serde_json::json!({"type": "web", "quantity": quantity.unwrap_or(0)}),
        );
        self.deliver(app, "formation", "update", data);
    }

    /// `set_web_quantity` without the event (a change no webhook reports).
    pub fn set_web_quantity_quietly(&self, app: &AppId, quantity: Option<u32>) {
        let mut state = self.state();
        let formation_id = state.ids.uuid();
        let record = state.app_mut(app);
        let now = now_iso8601();
        record.web = match (record.web.take(), quantity) {
            (_, None) => None,
            (Some(mut web), Some(quantity)) => {
                web.quantity = quantity;
                web.updated_at = now;
                Some(web)
            }
            (None, Some(quantity)) => Some(FormationRecord {
                id: formation_id,
                quantity,
                created_at: now.clone(),
                updated_at: now,
            }),
        };
    }

    /// Sets `web_url` (`None` answers `null`).
    pub fn set_web_url(&self, app: &AppId, web_url: Option<String>) {
        let mut state = self.state();
        let record = state.app_mut(app);
        record.web_url = web_url;
        record.updated_at = now_iso8601();
    }

    /// Moves the app's coupling to `stage` (one of [`STAGES`]).
    pub fn set_stage(&self, app: &AppId, stage: &str) {
        check_stage(stage);
        let mut state = self.state();
        let coupling = state
            .couplings
            .values_mut()
            .find(|c| c.app_id == app.0)
            .unwrap_or_else(|| panic!("app {app} has no coupling in the fake"));
        coupling.stage = stage.to_string();
        coupling.updated_at = now_iso8601();
    }

    /// Id of the app named `name`, if it exists.
    pub fn app_id(&self, name: &str) -> Option<AppId> {
        let state = self.state();
        state
            .apps
            .values()
            .find(|a| a.name == name)
            .map(|a| AppId(a.id.clone()))
    }

    /// Hides `app` from the key while it stays coupled (`hidden`), as when
    /// access to it was revoked: `POST /filters/apps` leaves it out and
    /// `GET /apps/{id}` answers 404; or shows it again.
    pub fn set_hidden(&self, app: &AppId, hidden: bool) {
        let mut state = self.state();
        if hidden {
            state.hidden.insert(app.as_str().to_string());
        } else {
            state.hidden.remove(app.as_str());
        }
    }
}

/// What the server answers from, behind the mutex the handle and the server thread share.
pub(super) struct State {
    pub(super) pipelines: BTreeMap<String, PipelineRecord>,
    pub(super) apps: BTreeMap<String, AppRecord>,
    /// Keyed by coupling id.
    pub(super) couplings: BTreeMap<String, CouplingRecord>,
    pub(super) owner_id: String,
    pub(super) rate_limit_remaining: u32,
    pub(super) page_size_cap: Option<usize>,
    /// Apps still coupled that the key no longer sees: left out of
    /// `POST /filters/apps`, 404 on `GET /apps/{id}`.
    pub(super) hidden: BTreeSet<String>,
    /// First match wins.
    pub(super) rules: Vec<FailureRule>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) ids: IdSource,
    /// App webhook subscriptions, by app id.
    pub(super) webhooks: BTreeMap<String, Vec<super::webhooks::WebhookRecord>>,
    /// Apps with the preboot feature on.
    pub(super) preboot: BTreeSet<String>,
    /// Answer 403 to new subscriptions (a key without the right).
    pub(super) webhooks_refused: bool,
}

pub(super) struct PipelineRecord {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) created_at: String,
    pub(super) updated_at: String,
}

pub(super) struct AppRecord {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) web_url: Option<String>,
    pub(super) maintenance: bool,
    pub(super) created_at: String,
    pub(super) updated_at: String,
    pub(super) released_at: String,
    pub(super) web: Option<FormationRecord>,
}

pub(super) struct FormationRecord {
    pub(super) id: String,
    pub(super) quantity: u32,
    pub(super) created_at: String,
    pub(super) updated_at: String,
}

pub(super) struct CouplingRecord {
    pub(super) id: String,
    pub(super) app_id: String,
    pub(super) pipeline_id: String,
    pub(super) stage: String,
    pub(super) created_at: String,
    pub(super) updated_at: String,
}

impl State {
    pub(super) fn new(rate_limit_remaining: u32) -> Self {
        let mut ids = IdSource::new();
        State {
            pipelines: BTreeMap::new(),
            apps: BTreeMap::new(),
            couplings: BTreeMap::new(),
            owner_id: ids.uuid(),
            rate_limit_remaining,
            page_size_cap: None,
            hidden: BTreeSet::new(),
            rules: Vec::new(),
            requests: Vec::new(),
            ids,
            webhooks: BTreeMap::new(),
            preboot: BTreeSet::new(),
            webhooks_refused: false,
        }
    }

    pub(super) fn app_mut(&mut self, app: &AppId) -> &mut AppRecord {
        self.apps
            .get_mut(app.as_str())
            .unwrap_or_else(|| panic!("no app {app} in the fake"))
    }

    pub(super) fn couple(&mut self, app: &AppId, pipeline: &PipelineId, stage: &str) {
        let id = self.ids.uuid();
        let now = now_iso8601();
        self.couplings.insert(
            id.clone(),
            CouplingRecord {
                id,
                app_id: app.0.clone(),
                pipeline_id: pipeline.0.clone(),
                stage: stage.to_string(),
                created_at: now.clone(),
                updated_at: now,
            },
        );
    }

    pub(super) fn find_pipeline(&self, id_or_name: &str) -> Option<&PipelineRecord> {
        self.pipelines
            .get(id_or_name)
            .or_else(|| self.pipelines.values().find(|p| p.name == id_or_name))
    }

    pub(super) fn find_app(&self, id_or_name: &str) -> Option<&AppRecord> {
        self.apps
            .get(id_or_name)
            .or_else(|| self.apps.values().find(|a| a.name == id_or_name))
            .filter(|app| !self.hidden.contains(&app.id))
    }

    pub(super) fn pipeline_json(&self, pipeline: &PipelineRecord) -> Value {
        json!({
            "created_at": pipeline.created_at,
            "generation": {"id": GENERATION_ID, "name": "cedar"},
            "id": pipeline.id,
            "name": pipeline.name,
            "owner": {"id": self.owner_id, "type": "user"},
            "updated_at": pipeline.updated_at,
        })
    }

    pub(super) fn app_json(&self, app: &AppRecord) -> Value {
        let stack = json!({"id": STACK_ID, "name": STACK_NAME});
        json!({
            "acm": false,
            "archived_at": null,
            "build_stack": stack,
            "buildpack_provided_description": "Node.js",
            "created_at": app.created_at,
            "generation": {"id": GENERATION_ID, "name": "cedar"},
            "git_url": format!("https://git.heroku.com/{}.git", app.name),
            "id": app.id,
            "internal_routing": null,
            "maintenance": app.maintenance,
            "name": app.name,
            "organization": null,
            "owner": {"email": OWNER_EMAIL, "id": self.owner_id},
            "region": {"id": US_REGION_ID, "name": "us"},
            "released_at": app.released_at,
            "repo_size": null,
            "slug_size": 48_234_496,
            "space": null,
            "stack": stack,
            "team": null,
            "updated_at": app.updated_at,
            "web_url": app.web_url,
        })
    }

    pub(super) fn formation_json(app: &AppRecord, web: &FormationRecord) -> Value {
        json!({
            "app": {"id": app.id, "name": app.name},
            "command": "npm start",
            "created_at": web.created_at,
            "id": web.id,
            "quantity": web.quantity,
            "size": "Basic",
            "type": "web",
            "updated_at": web.updated_at,
        })
    }

    pub(super) fn coupling_json(coupling: &CouplingRecord) -> Value {
        json!({
            "app": {"id": coupling.app_id},
            "created_at": coupling.created_at,
            "id": coupling.id,
            "pipeline": {"id": coupling.pipeline_id},
            "stage": coupling.stage,
            "updated_at": coupling.updated_at,
        })
    }

    pub(super) fn dynos_json(app: &AppRecord, web: &FormationRecord) -> Vec<(String, Value)> {
        (1..=web.quantity)
            .map(|n| {
                let id = derived_uuid(&(app.id.as_str(), n));
                let dyno = json!({
                    "app": {"id": app.id, "name": app.name},
                    "attach_url": null,
                    "command": "npm start",
                    "created_at": web.updated_at,
                    "id": id,
                    "name": format!("web.{n}"),
                    "release": {"id": derived_uuid(&app.released_at), "version": 1},
                    "size": "Basic",
                    "state": "up",
                    "type": "web",
                    "updated_at": web.updated_at,
                });
                (id, dyno)
            })
            .collect()
    }
}

fn check_stage(stage: &str) {
    assert!(
        STAGES.contains(&stage),
        "stage {stage:?} is not one of Heroku's pipeline stages {STAGES:?}"
    );
}

/// Random-looking v4 UUIDs and hex, unique within the process.
pub(super) struct IdSource {
    keys: RandomState,
    next: u64,
}

impl IdSource {
    pub(super) fn new() -> Self {
        IdSource {
            keys: RandomState::new(),
            next: 0,
        }
    }

    pub(super) fn uuid(&mut self) -> String {
        self.next += 1;
        let high = self.keys.hash_one((self.next, 0u8));
        let low = self.keys.hash_one((self.next, 1u8));
        format_uuid(high, low)
    }
}

/// A stable UUID derived from `seed` (for ids the fake does not store, like dyno ids).
pub(super) fn derived_uuid<T: Hash + ?Sized>(seed: &T) -> String {
    let mut high = DefaultHasher::new();
    (0u8, seed).hash(&mut high);
    let mut low = DefaultHasher::new();
    (1u8, seed).hash(&mut low);
    format_uuid(high.finish(), low.finish())
}

fn format_uuid(high: u64, low: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Now as ISO 8601 UTC with second precision, the form the API uses: `2024-05-01T12:34:56Z`.
pub(super) fn now_iso8601() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
