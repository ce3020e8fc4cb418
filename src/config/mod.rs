//! Settings: the typed model every other module is built from, and `load()`,
//! which makes it from `pingora.yaml` and the environment.
//!
//! Input: the file named by Pingora's `-c` flag (Pingora's server keys plus our
//! `heroku_lb:` section, see `file.rs`) and the variables in `env.rs`.
//! Output: [`Settings`] for our modules and the Pingora [`ServerConf`] for the
//! `Server`. Precedence is environment over file over default, Heroku style,
//! for every setting in `table.rs`, Pingora's `threads` and shutdown keys
//! included.
//! Every error names the variable, key or file at fault and never echoes a
//! secret (Pingora's own YAML error would print the whole file, so we parse
//! the file ourselves). A bad CA file would make Pingora panic at start-up, so
//! it is checked here.

mod build;
pub mod env;
pub mod file;
mod parse;
mod source;
pub mod table;

use crate::values::BackendUrl;
use crate::values::IpCidr;
use crate::values::Policy;
use build::build_settings;
use env::Env;
use file::FileSettings;
use parse::{check_ca_file, parse_at_least_one, parse_count};
use pingora::server::configuration::ServerConf;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// A configuration problem: which variable, key or file, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The culprit as the user would search for it: `PORT`, `heroku_lb.port in conf/pingora.yaml`.
    pub culprit: String,
    pub reason: String,
}

impl ConfigError {
    fn new(culprit: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            culprit: culprit.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.culprit, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The Heroku Platform API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Self {
        ApiKey(key)
    }

    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where the backend set comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendSource {
    /// A fixed list of URLs (`LB_BACKENDS` / `backends`).
    Static(Vec<BackendUrl>),
    /// The apps of one stage of a Heroku pipeline (boxed: far larger than
    /// the other variants).
    Pipeline(Box<PipelineSettings>),
    /// Nothing configured: three stand-in backends served by this process.
    Demo,
}

/// The pipeline stages Heroku knows (`PipelineCoupling.stage`).
pub const STAGES: &[&str] = &["test", "review", "development", "staging", "production"];

/// Settings of the Heroku pipeline discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSettings {
    pub api_key: ApiKey,
    /// Pipeline UUID or name.
    pub pipeline: String,
    /// One of [`STAGES`].
    pub stage: String,
    /// Base URL of the Platform API, without a trailing slash.
    pub api_url: String,
    /// Time between discovery rounds.
    pub interval: Duration,
    /// Longest time before a known app's details are looked up again.
    pub app_refresh_interval: Duration,
    /// Timeout of each API request.
    pub api_timeout: Duration,
    /// Below this `RateLimit-Remaining`, rounds slow down.
    pub rate_limit_reserve: u64,
    /// Weight each app by its web dyno count (else every app weighs 1).
    pub weight_by_dynos: bool,
    /// App webhooks, when `LB_WEBHOOK_SECRET` is set.
    pub webhooks: Option<WebhookSettings>,
    /// Where webhook deliveries arrive (`{admin prefix}hooks/heroku`), for
    /// the subscriptions.
    pub admin_prefix: String,
}

/// Heroku app webhooks (`webhooks.rs`, `discovery/heroku/subscriptions.rs`).
#[derive(Clone, PartialEq)]
pub struct WebhookSettings {
    /// Signs every delivery (`Heroku-Webhook-Hmac-SHA256`).
    pub secret: Vec<u8>,
    /// The balancer's public URL, without a trailing slash: when set, every
    /// discovered app is subscribed to `{url}{admin prefix}hooks/heroku`.
    pub public_url: Option<String>,
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("secret", &"<redacted>")
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// How upstream connections are made and timed.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// TCP (and TLS) connect limit; Heroku's router gives a dyno 5 s.
    pub connect_timeout: Duration,
    /// Limit for each read from upstream, the first byte included; Heroku's router allows 30 s.
    pub first_byte_timeout: Duration,
    /// How long a pooled keep-alive connection may sit idle; Heroku's router window is 55 s.
    pub idle_timeout: Duration,
    /// How many other backends a request tries after a connect failure.
    pub connect_retries: usize,
    /// A 502/503/504 answered within this long of sending an idempotent
    /// request is retried on another app (zero: never), within the retry
    /// budget. Heroku's router refuses at once while an app restarts.
    pub retry_5xx_within: Duration,
}

/// Active health checking (`health.rs`) and passive ejection (`proxy.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub interval: Duration,
    pub path: String,
    /// Limit of one whole check.
    pub timeout: Duration,
    /// Passing checks in a row that re-admit a backend.
    pub rise: u32,
    /// Failing checks in a row that evict it.
    pub fall: u32,
    /// Inclusive ranges of passing statuses.
    pub statuses: Vec<(u16, u16)>,
    /// 5xx answers in a row on live traffic that eject a backend (0: off).
    pub passive_5xx_threshold: u32,
    /// Most backends passive ejection may hold out at once, in percent of
    /// all of them (Envoy's `max_ejection_percent`); 0 turns ejection off.
    pub max_ejection_percent: u32,
}

impl HealthSettings {
    /// Whether a check answered with `status` passes.
    pub fn passes(&self, status: u16) -> bool {
        self.statuses
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&status))
    }
}

/// Per-app concurrency caps and the admission queue (`selection/queue.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// Requests in flight per web dyno of an app.
    pub max_in_flight_per_dyno: usize,
    /// Longest a request waits for a slot.
    pub timeout: Duration,
    /// Most requests waiting.
    pub max: usize,
}

/// Several balancer dynos sharing one view (`store/`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// The Redis URL (it carries the password: `ApiKey` keeps it out of logs).
    pub url: ApiKey,
    /// Keys and channels live under this: `heroku-lb:{pipeline}:{stage}`.
    pub namespace: String,
}

/// Sticky sessions (`sticky.rs`).
#[derive(Clone, PartialEq)]
pub struct StickySettings {
    pub cookie: String,
    pub ttl: Option<Duration>,
    /// Key of the tokens: `LB_STICKY_SECRET`, else derived from the API key.
    pub secret: Vec<u8>,
    /// No secret was configured: tokens use a public default key.
    pub default_secret: bool,
}

impl fmt::Debug for StickySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickySettings")
            .field("cookie", &self.cookie)
            .field("ttl", &self.ttl)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Everything heroku-lb needs beyond Pingora's `ServerConf`. No serde: the
/// external shape lives in `file.rs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `host:port` the proxy listens on.
    pub listen: String,
    pub listen_port: u16,
    pub source: BackendSource,
    /// Hostnames pinned to addresses instead of DNS.
    pub resolve_pins: HashMap<String, IpAddr>,
    /// How often names are resolved again (Heroku's router IPs change).
    pub resolve_interval: Duration,
    pub health: HealthSettings,
    /// Never blank: an empty token would match an empty bearer.
    pub status_token: Option<String>,
    /// Peers whose `X-Forwarded-*` headers are kept (on a dyno: every peer,
    /// Heroku's router).
    pub trusted_proxies: Vec<IpCidr>,
    /// Turn the backend's own URLs in redirects and cookie domains into the
    /// client's (`proxy/redirects.rs`).
    pub rewrite_redirects: bool,
    /// Longest a request line waits in the log buffer (`logging.rs`).
    pub log_flush_interval: Duration,
    /// An admitted backend's share ramps up to full over this long (zero: off).
    pub slow_start: Duration,
    /// Upgraded connections to a backend that leaves get this long.
    pub drain_timeout: Duration,
    pub upstream: UpstreamSettings,
    /// The dyno name when running on Heroku.
    pub dyno: Option<String>,
    /// Paths under this prefix are answered by the balancer, never proxied.
    pub admin_prefix: String,
    pub policy: Policy,
    /// Per-app concurrency caps and the admission queue (off: `None`).
    pub queueing: Option<QueueSettings>,
    /// The shared store, when `REDIS_URL` or `LB_STORE_URL` is set.
    pub store: Option<StoreSettings>,
    pub sticky: Option<StickySettings>,
    /// Settings that were given but are ignored, for `main` to log at start.
    pub warnings: Vec<String>,
}

impl Settings {
    /// How often the load balancer's background loop asks discovery for the
    /// set. Discovery keeps its own schedule (API rounds, name resolution,
    /// back-off) and answers from memory in between, so a short tick costs
    /// nothing and lets back-off and resolution run on their own clocks.
    pub fn discovery_tick(&self) -> Duration {
        let mut tick = Duration::from_secs(1).min(self.resolve_interval);
        if let BackendSource::Pipeline(pipeline) = &self.source {
            tick = tick.min(pipeline.interval);
        }
        tick.max(Duration::from_millis(50))
    }
}

/// Load the settings from `conf_path` (when given) and `env`.
pub fn load(conf_path: Option<&str>, env: &dyn Env) -> Result<(Settings, ServerConf), ConfigError> {
    let (file, mut server_conf, origin, file_keys) = match conf_path {
        Some(path) => {
            let (file, conf, keys) = read_conf_file(path)?;
            (file, conf, format!("in {path}"), keys)
        }
        None => (
            FileSettings::default(),
            ServerConf::new().ok_or_else(|| {
                ConfigError::new(
                    "Pingora defaults",
                    "could not build the default server settings",
                )
            })?,
            "(no -c file)".to_string(),
            SizingKeys::default(),
        ),
    };
    let key = |name: &str| format!("{}.{name} {origin}", file::SECTION);
    let settings = build_settings(file, env, &key)?;

    // SSL_CERT_FILE wins over Pingora's own `ca_file` key; both are checked
    // here because Pingora panics on a CA file it cannot load.
    if let Some(path) = env.var(env::SSL_CERT_FILE) {
        check_ca_file(&path).map_err(|reason| ConfigError::new(env::SSL_CERT_FILE, reason))?;
        server_conf.ca_file = Some(path);
    } else if let Some(path) = server_conf.ca_file.clone() {
        check_ca_file(&path)
            .map_err(|reason| ConfigError::new(format!("ca_file {origin}"), reason))?;
    }
    server_overrides(&mut server_conf, env, &origin, file_keys.threads)?;
    if !file_keys.upstream_keepalive_pool_size {
        server_conf.upstream_keepalive_pool_size = keepalive_pool_size(&settings.source);
    }
    Ok((settings, server_conf))
}

/// Which of Pingora's sizing keys the file sets; the others get our defaults.
#[derive(Debug, Default, Clone, Copy)]
struct SizingKeys {
    threads: bool,
    upstream_keepalive_pool_size: bool,
}

/// `threads` when neither `LB_THREADS` nor the file sets it: the CPUs this
/// process may use (its CPU affinity and cgroup quota count), as nginx's
/// `worker_processes auto` does. bench/README.md's `cores` scenario measures
/// what a second thread gives.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Idle upstream connections kept when the file does not say: room for
/// [`POOL_PER_APP`] per app, and never below Pingora's own default (128).
/// A pool smaller than the apps times their concurrency closes connections
/// round robin is about to need, and every new one to Heroku's router costs
/// a TLS handshake; a larger one costs nothing until connections are idle in
/// it. The pipeline's size is not known before discovery runs, so pipeline
/// mode assumes [`PIPELINE_APPS_SIZED_FOR`] apps.
pub fn keepalive_pool_size(source: &BackendSource) -> usize {
    let apps = match source {
        BackendSource::Static(urls) => urls.len(),
        BackendSource::Pipeline(_) => PIPELINE_APPS_SIZED_FOR,
        BackendSource::Demo => 3,
    };
    (apps * POOL_PER_APP).max(128)
}

/// Idle connections kept per app by the default pool size.
pub const POOL_PER_APP: usize = 4;

/// The number of apps the default pool of pipeline mode is sized for.
pub const PIPELINE_APPS_SIZED_FOR: usize = 1_000;

/// Pingora's own keys that have a variable: environment over file over
/// default, applied to the `ServerConf` before it goes to Pingora; then the
/// shutdown budget is checked on the result. Pingora's shutdown defaults
/// (300 s + 5 s) outlast Heroku's 30 s, so ours are the shipped file's 10 + 5.
fn server_overrides(
    conf: &mut ServerConf,
    env: &dyn Env,
    origin: &str,
    threads_in_file: bool,
) -> Result<(), ConfigError> {
    if let Some(raw) = env.var(env::LB_THREADS) {
        let threads = parse_at_least_one(&raw).map_err(|r| ConfigError::new(env::LB_THREADS, r))?;
        conf.threads = threads as usize;
    } else if !threads_in_file {
        conf.threads = default_threads();
    } else if conf.threads == 0 {
        return Err(ConfigError::new(
            format!("threads {origin}"),
            "must be at least 1",
        ));
    }
    let seconds_key = |var: &str, key: &str, value: &mut Option<u64>, default: u64| {
        if let Some(raw) = env.var(var) {
            *value = Some(parse_count(&raw).map_err(|r| ConfigError::new(var, r))?);
            Ok(var.to_string())
        } else if value.is_some() {
            Ok(format!("{key} {origin}"))
        } else {
            *value = Some(default);
            Ok(format!("{key} (default {default})"))
        }
    };
    let grace_from = seconds_key(
        env::LB_GRACE_PERIOD_SECONDS,
        "grace_period_seconds",
        &mut conf.grace_period_seconds,
        10,
    )?;
    let timeout_from = seconds_key(
        env::LB_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS,
        "graceful_shutdown_timeout_seconds",
        &mut conf.graceful_shutdown_timeout_seconds,
        5,
    )?;
    check_shutdown_budget(conf, &format!("{grace_from} + {timeout_from}"))
}

/// Split the file into our section and Pingora's keys and parse both.
fn read_conf_file(path: &str) -> Result<(FileSettings, ServerConf, SizingKeys), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, format!("cannot read the configuration file: {e}")))?;
    // serde_yaml's messages give line and column, never the file's contents.
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| ConfigError::new(path, format!("not valid YAML: {e}")))?;
    let mapping = match &mut doc {
        serde_yaml::Value::Mapping(mapping) => mapping,
        serde_yaml::Value::Null => {
            return Err(ConfigError::new(
                path,
                "the file is empty; it needs at least `version: 1`",
            ))
        }
        _ => {
            return Err(ConfigError::new(
                path,
                "expected a mapping of keys at the top level",
            ))
        }
    };
    let keys = SizingKeys {
        threads: mapping.contains_key("threads"),
        upstream_keepalive_pool_size: mapping.contains_key("upstream_keepalive_pool_size"),
    };
    let section = mapping
        .remove(file::SECTION)
        .unwrap_or(serde_yaml::Value::Null);
    let ours: FileSettings = match section {
        serde_yaml::Value::Null => FileSettings::default(),
        value => serde_yaml::from_value(value)
            .map_err(|e| ConfigError::new(format!("{} in {path}", file::SECTION), e.to_string()))?,
    };
    let server_conf: ServerConf = serde_yaml::from_value(doc)
        .map_err(|e| ConfigError::new(format!("Pingora server keys in {path}"), e.to_string()))?;
    let server_conf = server_conf
        .validate()
        .map_err(|e| ConfigError::new(format!("Pingora server keys in {path}"), e.to_string()))?;
    Ok((ours, server_conf, keys))
}

/// Heroku sends SIGKILL 30 s after SIGTERM: Pingora's grace period plus its
/// shutdown timeout must fit well inside that.
/// `culprit` names where the two values came from.
fn check_shutdown_budget(conf: &ServerConf, culprit: &str) -> Result<(), ConfigError> {
    // Pingora's defaults when the keys are absent: 300 s and 5 s.
    let grace = conf.grace_period_seconds.unwrap_or(300);
    let timeout = conf.graceful_shutdown_timeout_seconds.unwrap_or(5);
    if grace.saturating_add(timeout) > 25 {
        return Err(ConfigError::new(
            culprit,
            format!(
                "{grace} s + {timeout} s exceeds 25 s; Heroku kills a dyno 30 s after SIGTERM \
                 (e.g. 10 and 5)"
            ),
        ));
    }
    Ok(())
}
#[cfg(test)]
mod precedence_tests;
#[cfg(test)]
mod tests;
