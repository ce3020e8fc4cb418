//! Fake Heroku Platform API: a real HTTP/1.1 server on 127.0.0.1 that the pipeline discovery
//! talks to in integration tests instead of `https://api.heroku.com`.
//! Tests build a pipeline and its apps, change them while the balancer runs, read back every
//! request it made (to count what a discovery round costs), and flip failure switches.
//! It keeps Heroku's real paths, headers and JSON shapes (from the `@heroku-cli/schema` types):
//! `Accept` version check (406), Bearer key (401), `RateLimit-Remaining` and `Request-Id` on every
//! answer, `Range`/`Next-Range` paging with 206, and `ETag`/`If-None-Match` with 304.
//! The server runs on its own thread and Tokio runtime, so every method is synchronous and works
//! from plain and `#[tokio::test]` tests alike; dropping the handle stops it.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// `RateLimit-Remaining` a fresh fake starts from: Heroku's bucket holds about 4,500 tokens.
pub const DEFAULT_RATE_LIMIT: u32 = 4500;
/// Items in a list page when the request names no `max` (Heroku's default).
pub const DEFAULT_PAGE_SIZE: usize = 200;
/// Largest `max` a `Range` header may ask for (Heroku's limit); larger values are clamped.
pub const MAX_PAGE_SIZE: usize = 1000;
/// The pipeline-coupling stages Heroku accepts.
pub const STAGES: [&str; 5] = ["test", "review", "development", "staging", "production"];
/// Size of the whitespace padding `Failure::Huge` puts in front of a JSON body.
pub const HUGE_PADDING: usize = 10 * 1024 * 1024;

const MEDIA_TYPE: &str = "application/vnd.heroku+json";
const OWNER_EMAIL: &str = "owner@example.com";
// Fixed identities of the shared resources every app points at.
const US_REGION_ID: &str = "59accabd-516d-4f0e-83e6-6e3757701145";
const STACK_ID: &str = "74cfe988-7527-4ca4-9667-77bfa2e4bd88";
const STACK_NAME: &str = "heroku-24";
const GENERATION_ID: &str = "c2c8ec44-2a4c-4b3f-8f9a-6b1b7c5e1f3d";
const ZERO_UUID: &str = "00000000-0000-0000-0000-000000000000";

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

/// What the fake does instead of answering normally. Set with [`FakeHerokuApi::set_failure`]
/// (every request), [`FakeHerokuApi::set_failure_on`] (paths with a prefix) or
/// [`FakeHerokuApi::fail_next`] (the next n requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Answer normally.
    None,
    /// Through `set_failure`: close the listening socket (and open connections), so connects
    /// are refused; setting any other failure binds the same port again. Through
    /// `set_failure_on`/`fail_next`: close the connection without answering.
    Refuse,
    /// Send the status line, headers (with the full `Content-Length`) and half of the body,
    /// then drop the connection.
    ResetMidBody,
    /// Wait this long, then answer normally.
    Stall(Duration),
    /// Answer this status with a Heroku error body (`internal_server_error` for 500, ...).
    Status(u16),
    /// 429 `rate_limit` with `RateLimit-Remaining: 0`.
    RateLimited,
    /// 401 `unauthorized`, whatever the key.
    Unauthorized,
    /// 200 with the first half of the normal JSON body.
    TruncatedJson,
    /// 200 with valid JSON of the wrong shape: `{"unexpected": true}` where a list is expected,
    /// `[{"unexpected": true}]` where an object is.
    WrongShape,
    /// The normal answer with its JSON body preceded by [`HUGE_PADDING`] bytes of whitespace
    /// (still valid JSON of the right shape, about 10 MB).
    Huge,
    /// Lists answer the first page with 206 and the same `Next-Range`, whatever `Range` asks.
    LoopingNextRange,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The URI path, e.g. `/pipelines/<id>/pipeline-couplings`.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Header names lowercased; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The request body as text (lossy UTF-8).
    pub body: String,
}

impl RecordedRequest {
    /// Value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Handle on a running fake Platform API; dropping it stops the server.
pub struct FakeHerokuApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHerokuApi {
    /// Starts the fake on 127.0.0.1 (port 0), accepting `Authorization: Bearer <api_key>`.
    /// Defaults: no pipelines or apps, `RateLimit-Remaining` [`DEFAULT_RATE_LIMIT`], no page-size
    /// cap, no failure, and a 304 costs a token like any request.
    pub fn start(api_key: &str) -> Self {
        let remaining = DEFAULT_RATE_LIMIT;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("binding 127.0.0.1:0 for the fake Heroku API");
        listener
            .set_nonblocking(true)
            .expect("a fresh listener can be made non-blocking");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared {
            api_key: api_key.to_string(),
            state: Mutex::new(State::new(remaining)),
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fake-heroku-api".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("building the fake Heroku API runtime");
                runtime.block_on(serve(server_shared, listener, addr, control_rx));
                runtime.shutdown_background();
            })
            .expect("spawning the fake Heroku API thread");
        FakeHerokuApi {
            addr,
            shared,
            control,
            thread: Some(thread),
        }
    }

    /// Base URL to give the client: `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API key the fake accepts.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    // ---- pipelines and apps ----

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
        let mut state = self.state();
        let record = state.app_mut(app);
        record.maintenance = on;
        record.updated_at = now_iso8601();
    }

    /// Sets the `web` quantity; `None` removes the web formation.
    pub fn set_web_quantity(&self, app: &AppId, quantity: Option<u32>) {
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

    // ---- rate limit and paging ----

    /// Sets the `RateLimit-Remaining` the next answer counts down from. At 0 every request
    /// answers 429 `rate_limit`, as Heroku does when the bucket is empty.
    pub fn set_rate_limit_remaining(&self, remaining: u32) {
        self.state().rate_limit_remaining = remaining;
    }

    /// The current `RateLimit-Remaining`.
    pub fn rate_limit_remaining(&self) -> u32 {
        self.state().rate_limit_remaining
    }

    /// Forces list pages to at most `cap` items, whatever `Range` asks for.
    pub fn set_page_size_cap(&self, cap: usize) {
        assert!(cap > 0, "a page size cap must be at least 1");
        self.state().page_size_cap = Some(cap);
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

    /// Removes the page size cap.
    pub fn clear_page_size_cap(&self) {
        self.state().page_size_cap = None;
    }

    // ---- failures ----

    /// Applies `failure` to every request from now on, replacing all other failure settings.
    /// `Failure::Refuse` closes the listener and open connections (connects are refused) and
    /// returns once that is done; any other value re-opens the same port first if it was closed.
    pub fn set_failure(&self, failure: Failure) {
        let refuse = failure == Failure::Refuse;
        {
            let mut state = self.state();
            state.rules.clear();
            if !refuse && failure != Failure::None {
                state.rules.push(FailureRule {
                    path_prefix: None,
                    failure,
                    remaining: None,
                });
            }
        }
        if refuse {
            self.refuse_connections();
        } else {
            self.resume_connections();
        }
    }

    /// Applies `failure` to requests whose path starts with `path_prefix` (replacing an earlier
    /// setting for the same prefix); `Failure::None` removes the setting. Settings for prefixes
    /// are checked before the one for every path.
    pub fn set_failure_on(&self, path_prefix: &str, failure: Failure) {
        let mut state = self.state();
        state
            .rules
            .retain(|r| r.path_prefix.as_deref() != Some(path_prefix));
        if failure != Failure::None {
            state.rules.insert(
                0,
                FailureRule {
                    path_prefix: Some(path_prefix.to_string()),
                    failure,
                    remaining: None,
                },
            );
        }
    }

    /// Applies `failure` to the next `count` requests (any path), then answers as before.
    pub fn fail_next(&self, count: u32, failure: Failure) {
        self.state().rules.insert(
            0,
            FailureRule {
                path_prefix: None,
                failure,
                remaining: Some(count),
            },
        );
    }

    /// Back to normal answers on every path; re-opens the listener if it was closed.
    pub fn clear_failures(&self) {
        self.set_failure(Failure::None);
    }

    // ---- recording ----

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.state().requests.len()
    }

    /// A position in the request log, for [`FakeHerokuApi::requests_since`].
    pub fn mark(&self) -> usize {
        self.request_count()
    }

    /// Requests received after `mark` was taken.
    pub fn requests_since(&self, mark: usize) -> Vec<RecordedRequest> {
        let state = self.state();
        state.requests.get(mark..).unwrap_or_default().to_vec()
    }

    // ---- internals ----

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    fn refuse_connections(&self) {
        let (done, done_rx) = std_mpsc::channel();
        self.send_control(Control::Refuse(done));
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the fake Heroku API thread closes its listener within 5 s");
    }

    fn resume_connections(&self) {
        let (done, done_rx) = std_mpsc::channel();
        self.send_control(Control::Resume(done));
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the fake Heroku API thread answers a resume within 5 s")
            .unwrap_or_else(|e| panic!("re-binding {} for the fake Heroku API: {e}", self.addr));
    }

    fn send_control(&self, message: Control) {
        self.control
            .send(message)
            .expect("the fake Heroku API thread runs as long as its handle");
    }
}

impl Drop for FakeHerokuApi {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State

/// What tests and the server thread share. A std mutex: it is never held across an await, and
/// the test side is synchronous.
struct Shared {
    api_key: String,
    state: Mutex<State>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the state from the next assertion.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

struct State {
    pipelines: BTreeMap<String, PipelineRecord>,
    apps: BTreeMap<String, AppRecord>,
    /// Keyed by coupling id.
    couplings: BTreeMap<String, CouplingRecord>,
    owner_id: String,
    rate_limit_remaining: u32,
    page_size_cap: Option<usize>,
    /// Apps still coupled that the key no longer sees: left out of
    /// `POST /filters/apps`, 404 on `GET /apps/{id}`.
    hidden: BTreeSet<String>,
    /// First match wins.
    rules: Vec<FailureRule>,
    requests: Vec<RecordedRequest>,
    ids: IdSource,
}

struct PipelineRecord {
    id: String,
    name: String,
    created_at: String,
    updated_at: String,
}

struct AppRecord {
    id: String,
    name: String,
    web_url: Option<String>,
    maintenance: bool,
    created_at: String,
    updated_at: String,
    released_at: String,
    web: Option<FormationRecord>,
}

struct FormationRecord {
    id: String,
    quantity: u32,
    created_at: String,
    updated_at: String,
}

struct CouplingRecord {
    id: String,
    app_id: String,
    pipeline_id: String,
    stage: String,
    created_at: String,
    updated_at: String,
}

struct FailureRule {
    path_prefix: Option<String>,
    failure: Failure,
    /// `Some(n)`: applies to n more requests.
    remaining: Option<u32>,
}

impl State {
    fn new(rate_limit_remaining: u32) -> Self {
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
        }
    }

    fn app_mut(&mut self, app: &AppId) -> &mut AppRecord {
        self.apps
            .get_mut(app.as_str())
            .unwrap_or_else(|| panic!("no app {app} in the fake"))
    }

    fn couple(&mut self, app: &AppId, pipeline: &PipelineId, stage: &str) {
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

    /// The failure for this path, counting down a `fail_next` rule.
    fn take_failure(&mut self, path: &str) -> Failure {
        let rule = self.rules.iter_mut().find(|r| {
            r.remaining != Some(0)
                && r.path_prefix
                    .as_deref()
                    .is_none_or(|prefix| path.starts_with(prefix))
        });
        match rule {
            Some(rule) => {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                rule.failure.clone()
            }
            None => Failure::None,
        }
    }

    fn find_pipeline(&self, id_or_name: &str) -> Option<&PipelineRecord> {
        self.pipelines
            .get(id_or_name)
            .or_else(|| self.pipelines.values().find(|p| p.name == id_or_name))
    }

    fn find_app(&self, id_or_name: &str) -> Option<&AppRecord> {
        self.apps
            .get(id_or_name)
            .or_else(|| self.apps.values().find(|a| a.name == id_or_name))
            .filter(|app| !self.hidden.contains(&app.id))
    }

    fn pipeline_json(&self, pipeline: &PipelineRecord) -> Value {
        json!({
            "created_at": pipeline.created_at,
            "generation": {"id": GENERATION_ID, "name": "cedar"},
            "id": pipeline.id,
            "name": pipeline.name,
            "owner": {"id": self.owner_id, "type": "user"},
            "updated_at": pipeline.updated_at,
        })
    }

    fn app_json(&self, app: &AppRecord) -> Value {
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

    fn formation_json(app: &AppRecord, web: &FormationRecord) -> Value {
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

    fn coupling_json(coupling: &CouplingRecord) -> Value {
        json!({
            "app": {"id": coupling.app_id},
            "created_at": coupling.created_at,
            "id": coupling.id,
            "pipeline": {"id": coupling.pipeline_id},
            "stage": coupling.stage,
            "updated_at": coupling.updated_at,
        })
    }

    fn dynos_json(app: &AppRecord, web: &FormationRecord) -> Vec<(String, Value)> {
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
struct IdSource {
    keys: RandomState,
    next: u64,
}

impl IdSource {
    fn new() -> Self {
        IdSource {
            keys: RandomState::new(),
            next: 0,
        }
    }

    fn uuid(&mut self) -> String {
        self.next += 1;
        let high = self.keys.hash_one((self.next, 0u8));
        let low = self.keys.hash_one((self.next, 1u8));
        format_uuid(high, low)
    }
}

/// A stable UUID derived from `seed` (for ids the fake does not store, like dyno ids).
fn derived_uuid<T: Hash + ?Sized>(seed: &T) -> String {
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
fn now_iso8601() -> String {
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

// ---------------------------------------------------------------------------------------------
// Server

enum Control {
    Refuse(std_mpsc::Sender<()>),
    Resume(std_mpsc::Sender<io::Result<()>>),
    Shutdown,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut listener =
        Some(TcpListener::from_std(listener).expect("registering the listener with Tokio"));
    // Bumped to drop every open connection when the fake starts refusing.
    let (kill, _) = watch::channel(0u64);
    loop {
        tokio::select! {
            command = control.recv() => match command {
                None | Some(Control::Shutdown) => return,
                Some(Control::Refuse(done)) => {
                    listener = None;
                    kill.send_modify(|generation| *generation += 1);
                    let _ = done.send(());
                }
                Some(Control::Resume(done)) => {
                    let result = match listener {
                        Some(_) => Ok(()),
                        None => rebind(addr).await.map(|l| listener = Some(l)),
                    };
                    let _ = done.send(result);
                }
            },
            accepted = accept(listener.as_ref()) => {
                if let Ok((stream, _)) = accepted {
                    let shared = Arc::clone(&shared);
                    let mut killed = kill.subscribe();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            handle(Arc::clone(&shared), request)
                        });
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            _ = connection => {}
                            _ = killed.changed() => {}
                        }
                    });
                }
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Binds the old port again; a few tries, in case the kernel is slow to release it.
async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut last_error = None;
    for _ in 0..20 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last_error.expect("the loop ran at least once"))
}

/// An answer before the failure switches and common headers are applied.
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Answer {
    fn json(status: StatusCode, value: &Value) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Bytes::from(value.to_string()),
        }
    }

    fn error(status: StatusCode, id: &str, message: &str) -> Self {
        Self::json(status, &json!({"id": id, "message": message, "url": null}))
    }

    fn not_found(resource: &str) -> Self {
        Self::json(
            StatusCode::NOT_FOUND,
            &json!({
                "id": "not_found",
                "message": format!("Couldn't find that {resource}."),
                "resource": resource,
                "url": null,
            }),
        )
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

fn status_error(code: u16) -> Answer {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (id, message) = match status.as_u16() {
        400 => (
            "bad_request",
            "Request invalid, validate usage and try again.",
        ),
        401 => ("unauthorized", "Invalid credentials provided."),
        403 => (
            "forbidden",
            "You do not have access to the app or pipeline.",
        ),
        404 => ("not_found", "Couldn't find that resource."),
        422 => ("invalid_params", "Request failed, validate parameters."),
        429 => ("rate_limit", RATE_LIMIT_MESSAGE),
        503 => (
            "unavailable",
            "API is temporarily unavailable. Please try again later.",
        ),
        _ => (
            "internal_server_error",
            "Internal server error. Please try again later.",
        ),
    };
    Answer::error(status, id, message)
}

const RATE_LIMIT_MESSAGE: &str =
    "Your account reached the API rate limit\nPlease wait a few minutes before making new requests";

fn rate_limited() -> Answer {
    Answer::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({
            "id": "rate_limit",
            "message": RATE_LIMIT_MESSAGE,
            "url": "https://devcenter.heroku.com/articles/platform-api-reference#rate-limits",
        }),
    )
}

fn unauthorized(message: &str) -> Answer {
    Answer::error(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, BoxError> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let recorded = record(&parts, &body);
    let path = recorded.path.clone();

    let failure = {
        let mut state = lock(&shared);
        state.requests.push(recorded.clone());
        state.take_failure(&path)
    };
    match failure {
        Failure::Refuse => return Err("fake Heroku API: closing the connection unanswered".into()),
        Failure::Stall(pause) => tokio::time::sleep(pause).await,
        _ => {}
    }

    let (answer, remaining) = {
        let mut state = lock(&shared);
        // GET /account/rate-limits costs nothing, per the schema.
        let free = path == "/account/rate-limits";
        let answer = match &failure {
            Failure::RateLimited => rate_limited(),
            _ if state.rate_limit_remaining == 0 && !free => rate_limited(),
            Failure::Status(code) => status_error(*code),
            Failure::Unauthorized => unauthorized("Invalid credentials provided."),
            Failure::WrongShape => {
                let shape = if expects_list(&recorded) {
                    json!({"unexpected": true})
                } else {
                    json!([{"unexpected": true}])
                };
                Answer::json(StatusCode::OK, &shape)
            }
            _ => {
                // Switches that mangle the answer must see a body, so they skip 304.
                let conditional = matches!(failure, Failure::None | Failure::Stall(_));
                let looping = failure == Failure::LoopingNextRange;
                route(&shared.api_key, &state, &recorded, conditional, looping)
            }
        };
        // A 401 names no account to charge; a 429 is the bucket already empty.
        let costs = !free
            && answer.status != StatusCode::UNAUTHORIZED
            && answer.status != StatusCode::TOO_MANY_REQUESTS;
        if costs {
            state.rate_limit_remaining = state.rate_limit_remaining.saturating_sub(1);
        }
        let remaining = if failure == Failure::RateLimited {
            0
        } else {
            state.rate_limit_remaining
        };
        (answer, remaining)
    };

    let (answer, reset) = match failure {
        Failure::TruncatedJson => {
            let body = if answer.body.len() > 1 {
                answer.body.slice(..answer.body.len() / 2)
            } else {
                Bytes::from_static(b"[{\"id\":\"")
            };
            let answer = Answer {
                status: StatusCode::OK,
                body,
                ..answer
            };
            (answer, false)
        }
        Failure::Huge => {
            let mut padded = vec![b' '; HUGE_PADDING];
            padded.extend_from_slice(&answer.body);
            let answer = Answer {
                body: Bytes::from(padded),
                ..answer
            };
            (answer, false)
        }
        Failure::ResetMidBody => (answer, true),
        _ => (answer, false),
    };
    Ok(respond(answer, remaining, reset))
}

fn record(parts: &Parts, body: &Bytes) -> RecordedRequest {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

fn respond(answer: Answer, remaining: u32, reset: bool) -> Response<ReplyBody> {
    let mut response = Response::new(ReplyBody::new(answer.body.clone(), reset));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    let mut insert = |name: &'static str, value: &str| {
        let value = HeaderValue::from_str(value).expect("the fake writes valid header values");
        headers.insert(name, value);
    };
    insert("ratelimit-remaining", &remaining.to_string());
    // Heroku's Request-Id is a UUID per request.
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    insert("request-id", &derived_uuid(&(SystemTime::now(), serial)));
    if !answer.body.is_empty() {
        insert("content-type", "application/json");
    }
    if reset {
        // Announce the whole body; only half of it will come.
        insert("content-length", &answer.body.len().to_string());
    }
    for (name, value) in &answer.headers {
        insert(name, value);
    }
    response
}

fn expects_list(request: &RecordedRequest) -> bool {
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segments.as_slice(),
        ["pipelines", _, "pipeline-couplings"]
            | ["apps", _, "formation"]
            | ["apps", _, "dynos"]
            | ["filters", "apps"]
    )
}

// ---------------------------------------------------------------------------------------------
// Routing

/// The normal answer: `Accept` and key checks, then the endpoint.
fn route(
    api_key: &str,
    state: &State,
    request: &RecordedRequest,
    conditional: bool,
    looping: bool,
) -> Answer {
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    let is_filter = request.method == "POST" && segments == ["filters", "apps"];
    if !accepts_v3(request.header("accept"), is_filter) {
        return Answer::json(
            StatusCode::NOT_ACCEPTABLE,
            &json!({
                "id": "not_acceptable",
                "message": "Please specify a version along with Heroku's API MIME type. \
                            For example, `Accept: application/vnd.heroku+json; version=3`.",
                "url": "https://devcenter.heroku.com/articles/platform-api-reference#clients",
            }),
        );
    }
    match request.header("authorization") {
        None => {
            return unauthorized(
                "There were no credentials in your `Authorization` header. \
                 Try `Authorization: Bearer <OAuth access token>`.",
            )
        }
        Some(value) if !bearer_matches(value, api_key) => {
            return unauthorized("Invalid credentials provided.")
        }
        Some(_) => {}
    }

    let get = request.method == "GET";
    let answer = match segments.as_slice() {
        ["pipelines", id_or_name] if get => match state.find_pipeline(id_or_name) {
            Some(pipeline) => Answer::json(StatusCode::OK, &state.pipeline_json(pipeline)),
            None => Answer::not_found("pipeline"),
        },
        ["pipelines", id, "pipeline-couplings"] if get => match state.pipelines.get(*id) {
            Some(pipeline) => {
                let items = state
                    .couplings
                    .values()
                    .filter(|c| c.pipeline_id == pipeline.id)
                    .map(|c| (c.id.clone(), State::coupling_json(c)))
                    .collect();
                list(state, request, items, looping)
            }
            None => Answer::not_found("pipeline"),
        },
        ["apps", id_or_name] if get => match state.find_app(id_or_name) {
            Some(app) => Answer::json(StatusCode::OK, &state.app_json(app)),
            None => Answer::not_found("app"),
        },
        ["apps", id_or_name, "formation"] if get => match state.find_app(id_or_name) {
            Some(app) => {
                let items = app
                    .web
                    .iter()
                    .map(|web| (web.id.clone(), State::formation_json(app, web)))
                    .collect();
                list(state, request, items, looping)
            }
            None => Answer::not_found("app"),
        },
        ["apps", id_or_name, "formation", id_or_type] if get => match state.find_app(id_or_name) {
            Some(app) => match &app.web {
                Some(web) if *id_or_type == "web" || *id_or_type == web.id => {
                    Answer::json(StatusCode::OK, &State::formation_json(app, web))
                }
                _ => Answer::not_found("formation"),
            },
            None => Answer::not_found("app"),
        },
        ["apps", id_or_name, "dynos"] if get => match state.find_app(id_or_name) {
            Some(app) => {
                let items = app
                    .web
                    .iter()
                    .flat_map(|web| State::dynos_json(app, web))
                    .collect();
                list(state, request, items, looping)
            }
            None => Answer::not_found("app"),
        },
        ["filters", "apps"] if is_filter => filter_apps(state, request, looping),
        ["account", "rate-limits"] if get => Answer::json(
            StatusCode::OK,
            &json!({"remaining": state.rate_limit_remaining}),
        ),
        _ => Answer::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The requested API endpoint was not found. Are you using the right HTTP verb \
             (i.e. `GET` vs. `POST`), and did you specify your API version in the `Accept` header?",
        ),
    };
    if get && conditional {
        with_etag(answer, request.header("if-none-match"))
    } else {
        answer
    }
}

/// `application/vnd.heroku+json; version=3` (or `version=3.filters` where `filters` is set),
/// among possibly several comma-separated media ranges.
fn accepts_v3(accept: Option<&str>, filters: bool) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        let media_type = params.next().unwrap_or_default();
        if !media_type.eq_ignore_ascii_case(MEDIA_TYPE) {
            return false;
        }
        params.any(|param| match param.split_once('=') {
            Some((key, value)) if key.trim().eq_ignore_ascii_case("version") => {
                let value = value.trim().trim_matches('"');
                value == "3" || (filters && value == "3.filters")
            }
            _ => false,
        })
    })
}

fn bearer_matches(authorization: &str, api_key: &str) -> bool {
    match authorization.trim().split_once(' ') {
        Some((scheme, token)) => scheme.eq_ignore_ascii_case("bearer") && token.trim() == api_key,
        None => false,
    }
}

/// `POST /filters/apps`: the apps among the ids asked for, paged like every list.
fn filter_apps(state: &State, request: &RecordedRequest, looping: bool) -> Answer {
    let Ok(value) = serde_json::from_str::<Value>(&request.body) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Request body must be valid JSON.",
        );
    };
    let Some(ids) = value
        .pointer("/in/id")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect::<Vec<_>>())
    else {
        return Answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            "Expected a body of the form {\"in\": {\"id\": [...]}}.",
        );
    };
    let apps: Vec<(String, Value)> = state
        .apps
        .values()
        .filter(|app| ids.contains(&app.id.as_str()) && !state.hidden.contains(&app.id))
        .map(|app| (app.id.clone(), state.app_json(app)))
        .collect();
    list(state, request, apps, looping)
}

/// Adds `ETag` (a hash of the body and paging headers); answers 304 when `If-None-Match` names
/// it. A 304 keeps `ETag`, `Next-Range` and `Content-Range`, as Rack's conditional GET does.
fn with_etag(answer: Answer, if_none_match: Option<&str>) -> Answer {
    if !answer.status.is_success() {
        return answer;
    }
    let etag = format!(
        "\"{}\"",
        &derived_uuid(&(&answer.body[..], &answer.headers)).replace('-', "")
    );
    let matches = if_none_match.is_some_and(|value| {
        value
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
    });
    let answer = answer.header("etag", etag);
    if matches {
        Answer {
            status: StatusCode::NOT_MODIFIED,
            body: Bytes::new(),
            ..answer
        }
    } else {
        answer
    }
}

/// A parsed `Range: id [\]]<start>..[<end>]; max=N; order=asc|desc` (the end bound is ignored).
struct RangeSpec {
    start: Option<String>,
    exclusive: bool,
    max: usize,
    descending: bool,
}

fn parse_range(value: &str) -> Option<RangeSpec> {
    let mut parts = value.split(';').map(str::trim).filter(|p| !p.is_empty());
    let bounds = parts.next()?;
    let (attribute, bounds) = bounds.split_once(' ').unwrap_or((bounds, ".."));
    if attribute != "id" {
        return None;
    }
    let (start, _end) = bounds.trim().split_once("..")?;
    let (exclusive, start) = match start.strip_prefix(']') {
        Some(start) => (true, start),
        None => (false, start),
    };
    let mut spec = RangeSpec {
        start: (!start.is_empty()).then(|| start.to_string()),
        exclusive,
        max: DEFAULT_PAGE_SIZE,
        descending: false,
    };
    for param in parts {
        match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("max", n)) => spec.max = n.parse().ok().filter(|n| *n > 0)?,
            Some(("order", "desc")) => spec.descending = true,
            Some(("order", "asc")) => spec.descending = false,
            _ => return None,
        }
    }
    spec.max = spec.max.min(MAX_PAGE_SIZE);
    Some(spec)
}

/// One page of `items` (id, JSON) by id order, as `Range` asks and the page cap allows:
/// 206 with `Next-Range` when cut, else 200.
fn list(
    state: &State,
    request: &RecordedRequest,
    mut items: Vec<(String, Value)>,
    looping: bool,
) -> Answer {
    let spec = match request.header("range") {
        None => RangeSpec {
            start: None,
            exclusive: false,
            max: DEFAULT_PAGE_SIZE,
            descending: false,
        },
        Some(value) => match parse_range(value) {
            Some(spec) => spec,
            None => {
                return Answer::error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "requested_range_not_satisfiable",
                    "Invalid Range header. Expected e.g. `id ..; max=200`.",
                )
            }
        },
    };
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if spec.descending {
        items.reverse();
    }
    let start = if looping { None } else { spec.start.as_deref() };
    let first = match start {
        None => 0,
        Some(start) => items
            .iter()
            .position(|(id, _)| {
                let after = if spec.descending {
                    id.as_str() < start
                } else {
                    id.as_str() > start
                };
                after || (!spec.exclusive && id == start)
            })
            .unwrap_or(items.len()),
    };
    let size = state
        .page_size_cap
        .map_or(spec.max, |cap| cap.min(spec.max));
    let rest = &items[first..];
    let page = &rest[..size.min(rest.len())];
    let cut = page.len() < rest.len();
    let order = if spec.descending { "; order=desc" } else { "" };
    let max = spec.max;
    let body = Value::Array(page.iter().map(|(_, v)| v.clone()).collect());
    let mut answer = Answer::json(StatusCode::OK, &body).header("accept-ranges", "id".into());
    if let (Some((first_id, _)), Some((last_id, _))) = (page.first(), page.last()) {
        answer = answer.header(
            "content-range",
            format!("id {first_id}..{last_id}; max={max}{order}"),
        );
    }
    if cut || looping {
        let last = page.last().map_or(ZERO_UUID, |(id, _)| id.as_str());
        answer.status = StatusCode::PARTIAL_CONTENT;
        answer = answer.header("next-range", format!("id ]{last}..; max={max}{order}"));
    }
    answer
}

// ---------------------------------------------------------------------------------------------
// Response body

/// A whole body, or (for `ResetMidBody`) half of it followed by an error that makes hyper drop
/// the connection. The pause before the error lets hyper flush what was sent.
struct ReplyBody {
    data: Option<Bytes>,
    reset: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ReplyBody {
    fn new(body: Bytes, reset: bool) -> Self {
        if reset {
            ReplyBody {
                data: Some(body.slice(..body.len() / 2)),
                reset: Some(Box::pin(tokio::time::sleep(Duration::from_millis(50)))),
            }
        } else {
            ReplyBody {
                data: Some(body),
                reset: None,
            }
        }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take().filter(|d| !d.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match this.reset.as_mut() {
            None => Poll::Ready(None),
            Some(pause) => {
                std::task::ready!(pause.as_mut().poll(cx));
                this.reset = None;
                Poll::Ready(Some(Err(
                    "fake Heroku API: connection reset mid-body".into()
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reset.is_none() && self.data.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.reset, &self.data) {
            // Unknown, so hyper takes the announced Content-Length instead.
            (Some(_), _) => SizeHint::default(),
            (None, Some(data)) => SizeHint::with_exact(data.len() as u64),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}
