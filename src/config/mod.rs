//! Settings: the typed model every other module is built from, and `load()`,
//! which makes it from `pingora.yaml` and the environment.
//!
//! Input: the file named by Pingora's `-c` flag (Pingora's server keys plus our
//! `heroku_lb:` section, see `file.rs`) and the variables in `env.rs`.
//! Output: [`Settings`] for our modules and the Pingora [`ServerConf`] for the
//! `Server`. Precedence is environment over file over default, Heroku style.
//! Every error names the variable, key or file at fault and never echoes a
//! secret (Pingora's own YAML error would print the whole file, so we parse
//! the file ourselves). A bad CA file would make Pingora panic at start-up, so
//! it is checked here.

pub mod env;
pub mod file;

use crate::backend::BackendUrl;
use crate::selection::Policy;
use crate::sticky::valid_cookie_name;
use env::Env;
use file::FileSettings;
use pingora::server::configuration::ServerConf;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
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
    /// The apps of one stage of a Heroku pipeline.
    Pipeline(PipelineSettings),
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
}

impl HealthSettings {
    /// Whether a check answered with `status` passes.
    pub fn passes(&self, status: u16) -> bool {
        self.statuses
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&status))
    }
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
    pub status_token: Option<String>,
    pub upstream: UpstreamSettings,
    /// The dyno name when running on Heroku.
    pub dyno: Option<String>,
    /// Paths under this prefix are answered by the balancer, never proxied.
    pub admin_prefix: String,
    pub policy: Policy,
    pub sticky: Option<StickySettings>,
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
    let (file, mut server_conf, origin) = match conf_path {
        Some(path) => {
            let (file, conf) = read_conf_file(path)?;
            (file, conf, format!("in {path}"))
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
    check_shutdown_budget(&server_conf, &origin)?;
    Ok((settings, server_conf))
}

/// Split the file into our section and Pingora's keys and parse both.
fn read_conf_file(path: &str) -> Result<(FileSettings, ServerConf), ConfigError> {
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
    Ok((ours, server_conf))
}

/// Heroku sends SIGKILL 30 s after SIGTERM: Pingora's grace period plus its
/// shutdown timeout must fit well inside that.
fn check_shutdown_budget(conf: &ServerConf, origin: &str) -> Result<(), ConfigError> {
    // Pingora's defaults when the keys are absent: 300 s and 5 s.
    let grace = conf.grace_period_seconds.unwrap_or(300);
    let timeout = conf.graceful_shutdown_timeout_seconds.unwrap_or(5);
    if grace + timeout > 25 {
        return Err(ConfigError::new(
            format!("grace_period_seconds + graceful_shutdown_timeout_seconds {origin}"),
            format!(
                "{grace} s + {timeout} s exceeds 25 s; Heroku kills a dyno 30 s after SIGTERM \
                 (set both keys, e.g. 10 and 5)"
            ),
        ));
    }
    Ok(())
}

fn build_settings(
    file: FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
) -> Result<Settings, ConfigError> {
    let listen_port = match env.var(env::PORT) {
        Some(raw) => parse_port(&raw).map_err(|reason| ConfigError::new(env::PORT, reason))?,
        None => file.port.unwrap_or(8080),
    };
    if listen_port == 0 {
        return Err(ConfigError::new(
            key("port"),
            "port 0 is not a port to listen on",
        ));
    }
    let listen_host = match env.var(env::LB_LISTEN_HOST) {
        Some(raw) => {
            parse_ip(&raw).map_err(|reason| ConfigError::new(env::LB_LISTEN_HOST, reason))?
        }
        None => match &file.listen_host {
            Some(raw) => {
                parse_ip(raw).map_err(|reason| ConfigError::new(key("listen_host"), reason))?
            }
            None => IpAddr::from([0, 0, 0, 0]),
        },
    };
    let listen = std::net::SocketAddr::new(listen_host, listen_port).to_string();

    let resolve_pins = match env.var(env::LB_RESOLVE) {
        Some(raw) => {
            parse_pins_list(&raw).map_err(|reason| ConfigError::new(env::LB_RESOLVE, reason))?
        }
        None => {
            let mut pins = HashMap::new();
            for (host, ip) in file.resolve.iter().flatten() {
                let ip = parse_ip(ip)
                    .map_err(|reason| ConfigError::new(key(&format!("resolve.{host}")), reason))?;
                pins.insert(host.to_ascii_lowercase(), ip);
            }
            pins
        }
    };
    let resolve_interval = seconds(
        None,
        file.resolve_interval_seconds,
        Duration::from_secs(30),
        env,
        key("resolve_interval_seconds"),
    )?;

    let health = HealthSettings {
        interval: seconds(
            Some(env::HEALTH_CHECK_INTERVAL),
            file.health_check_interval_seconds,
            Duration::from_secs(5),
            env,
            key("health_check_interval_seconds"),
        )?,
        path: match env.var(env::HEALTH_CHECK_PATH) {
            Some(path) => {
                check_path(&path).map_err(|r| ConfigError::new(env::HEALTH_CHECK_PATH, r))?
            }
            None => match &file.health_check_path {
                Some(path) => {
                    check_path(path).map_err(|r| ConfigError::new(key("health_check_path"), r))?
                }
                None => "/".to_string(),
            },
        },
        timeout: seconds(
            None,
            file.health_check_timeout_seconds,
            Duration::from_secs(2),
            env,
            key("health_check_timeout_seconds"),
        )?,
        rise: at_least_one(file.health_check_rise, 2)
            .map_err(|r| ConfigError::new(key("health_check_rise"), r))?,
        fall: at_least_one(file.health_check_fall, 2)
            .map_err(|r| ConfigError::new(key("health_check_fall"), r))?,
        statuses: match &file.health_check_statuses {
            Some(list) => parse_statuses(list)
                .map_err(|r| ConfigError::new(key("health_check_statuses"), r))?,
            None => vec![(200, 399)],
        },
        passive_5xx_threshold: file.passive_5xx_threshold.unwrap_or(5),
    };
    let admin_prefix = match &file.admin_path_prefix {
        Some(prefix) => {
            check_prefix(prefix).map_err(|r| ConfigError::new(key("admin_path_prefix"), r))?
        }
        None => "/_lb/".to_string(),
    };

    let upstream = UpstreamSettings {
        connect_timeout: seconds(
            None,
            file.connect_timeout_seconds,
            Duration::from_secs(5),
            env,
            key("connect_timeout_seconds"),
        )?,
        first_byte_timeout: seconds(
            None,
            file.first_byte_timeout_seconds,
            Duration::from_secs(30),
            env,
            key("first_byte_timeout_seconds"),
        )?,
        idle_timeout: seconds(
            None,
            file.idle_timeout_seconds,
            Duration::from_secs(55),
            env,
            key("idle_timeout_seconds"),
        )?,
        connect_retries: file.connect_retries.unwrap_or(2),
    };

    let policy = match env.var(env::LB_POLICY) {
        Some(raw) => Policy::parse(&raw).map_err(|r| ConfigError::new(env::LB_POLICY, r))?,
        None => match &file.policy {
            Some(raw) => Policy::parse(raw).map_err(|r| ConfigError::new(key("policy"), r))?,
            None => Policy::RoundRobin,
        },
    };
    let sticky = sticky_settings(&file, env, key)?;

    let source = backend_source(&file, env, key)?;
    let dyno = env.var(env::DYNO);
    if source == BackendSource::Demo {
        if let Some(dyno) = &dyno {
            return Err(ConfigError::new(
                env::DYNO,
                format!(
                    "running on Heroku (DYNO={dyno}) with no backends configured; the demo \
                     backends are refused there. Set HEROKU_API_KEY and PIPELINE_IDENTIFIER \
                     (pipeline discovery) or LB_BACKENDS (static URLs)"
                ),
            ));
        }
    }

    Ok(Settings {
        listen,
        listen_port,
        source,
        resolve_pins,
        resolve_interval,
        health,
        status_token: env.var(env::LB_STATUS_TOKEN).or(file.status_token.clone()),
        upstream,
        dyno,
        admin_prefix,
        policy,
        sticky,
    })
}

fn sticky_settings(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<StickySettings>, ConfigError> {
    let cookie = match env.var(env::LB_STICKY_COOKIE) {
        Some(name) => Some((name, env::LB_STICKY_COOKIE.to_string())),
        None => file
            .sticky_cookie
            .clone()
            .map(|name| (name, key("sticky_cookie"))),
    };
    let Some((cookie, culprit)) = cookie else {
        return Ok(None);
    };
    if !valid_cookie_name(&cookie) {
        return Err(ConfigError::new(
            culprit,
            format!("'{cookie}' is not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"),
        ));
    }
    let ttl = match env.var(env::LB_STICKY_TTL) {
        Some(raw) => match raw.parse::<u64>() {
            Ok(seconds) if seconds > 0 => Some(Duration::from_secs(seconds)),
            _ => {
                return Err(ConfigError::new(
                    env::LB_STICKY_TTL,
                    format!("'{raw}' is not a whole number of seconds above 0"),
                ))
            }
        },
        None => match file.sticky_ttl_seconds {
            Some(0) => {
                return Err(ConfigError::new(
                    key("sticky_ttl_seconds"),
                    "must be above 0",
                ))
            }
            other => other.map(Duration::from_secs),
        },
    };
    // The same configuration must give the same key on every dyno.
    let (secret, default_secret) =
        match (env.var(env::LB_STICKY_SECRET), env.var(env::HEROKU_API_KEY)) {
            (Some(secret), _) => (secret.into_bytes(), false),
            (None, Some(api_key)) => (
                format!("heroku-lb sticky cookie key:{api_key}").into_bytes(),
                false,
            ),
            (None, None) => (b"heroku-lb default sticky cookie key".to_vec(), true),
        };
    Ok(Some(StickySettings {
        cookie,
        ttl,
        secret,
        default_secret,
    }))
}

fn backend_source(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
) -> Result<BackendSource, ConfigError> {
    let api_key = env.var(env::HEROKU_API_KEY);
    let pipeline = env
        .var(env::PIPELINE_IDENTIFIER)
        .or_else(|| file.pipeline.clone());
    let static_list = match env.var(env::LB_BACKENDS) {
        Some(raw) => Some(
            parse_backend_list(raw.split(','))
                .map_err(|reason| ConfigError::new(env::LB_BACKENDS, reason))?,
        ),
        None => match &file.backends {
            Some(list) => Some(
                parse_backend_list(list.iter().map(String::as_str))
                    .map_err(|reason| ConfigError::new(key("backends"), reason))?,
            ),
            None => None,
        },
    };

    match (api_key, pipeline, static_list) {
        (Some(_), Some(_), Some(_)) => Err(ConfigError::new(
            env::LB_BACKENDS,
            "static backends and pipeline discovery (HEROKU_API_KEY + PIPELINE_IDENTIFIER) are \
             both configured; choose one",
        )),
        (Some(api_key), Some(pipeline), None) => Ok(BackendSource::Pipeline(pipeline_settings(
            file,
            env,
            key,
            ApiKey(api_key),
            pipeline,
        )?)),
        (Some(_), None, _) => Err(ConfigError::new(
            env::PIPELINE_IDENTIFIER,
            "HEROKU_API_KEY is set but no pipeline is named; set PIPELINE_IDENTIFIER to the \
             pipeline's UUID or name",
        )),
        (None, Some(_), None) => Err(ConfigError::new(
            env::HEROKU_API_KEY,
            "a pipeline is named but HEROKU_API_KEY is not set; discovery needs an API key",
        )),
        (None, _, Some(list)) => Ok(BackendSource::Static(list)),
        (None, None, None) => Ok(BackendSource::Demo),
    }
}

fn pipeline_settings(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
    api_key: ApiKey,
    pipeline: String,
) -> Result<PipelineSettings, ConfigError> {
    let stage = match env.var(env::PIPELINE_STAGE) {
        Some(stage) => check_stage(&stage).map_err(|r| ConfigError::new(env::PIPELINE_STAGE, r))?,
        None => match &file.pipeline_stage {
            Some(stage) => {
                check_stage(stage).map_err(|r| ConfigError::new(key("pipeline_stage"), r))?
            }
            None => "production".to_string(),
        },
    };
    let api_url = match env.var(env::HEROKU_API_URL) {
        Some(url) => check_api_url(&url).map_err(|r| ConfigError::new(env::HEROKU_API_URL, r))?,
        None => match &file.heroku_api_url {
            Some(url) => {
                check_api_url(url).map_err(|r| ConfigError::new(key("heroku_api_url"), r))?
            }
            None => "https://api.heroku.com".to_string(),
        },
    };
    Ok(PipelineSettings {
        api_key,
        pipeline,
        stage,
        api_url,
        interval: seconds(
            Some(env::DISCOVERY_INTERVAL),
            file.discovery_interval_seconds,
            Duration::from_secs(30),
            env,
            key("discovery_interval_seconds"),
        )?,
        app_refresh_interval: seconds(
            None,
            file.app_refresh_interval_seconds,
            Duration::from_secs(600),
            env,
            key("app_refresh_interval_seconds"),
        )?,
        api_timeout: seconds(
            None,
            file.api_timeout_seconds,
            Duration::from_secs(10),
            env,
            key("api_timeout_seconds"),
        )?,
        rate_limit_reserve: file.rate_limit_reserve.unwrap_or(500),
        weight_by_dynos: file.weight_by_dynos.unwrap_or(true),
    })
}

/// A duration from `var` (when given and set), else the file key, else the default.
fn seconds(
    var: Option<&str>,
    file_value: Option<f64>,
    default: Duration,
    env: &dyn Env,
    file_key: String,
) -> Result<Duration, ConfigError> {
    if let Some(var) = var {
        if let Some(raw) = env.var(var) {
            let value: f64 = raw.parse().map_err(|_| {
                ConfigError::new(var, format!("'{raw}' is not a number of seconds"))
            })?;
            return to_duration(value).map_err(|reason| ConfigError::new(var, reason));
        }
    }
    match file_value {
        Some(value) => to_duration(value).map_err(|reason| ConfigError::new(file_key, reason)),
        None => Ok(default),
    }
}

fn to_duration(seconds: f64) -> Result<Duration, String> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!(
            "{seconds} is not a number of seconds between 0 and 86400"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("'{raw}' is not a port number (1-65535)")),
    }
}

fn parse_ip(raw: &str) -> Result<IpAddr, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("'{raw}' is not an IP address"))
}

fn parse_backend_list<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<BackendUrl>, String> {
    let mut urls: Vec<BackendUrl> = Vec::new();
    for item in items.map(str::trim).filter(|item| !item.is_empty()) {
        let url = BackendUrl::parse(item).map_err(|reason| format!("'{item}': {reason}"))?;
        if urls.contains(&url) {
            return Err(format!("'{item}' is listed twice"));
        }
        urls.push(url);
    }
    if urls.is_empty() {
        return Err("no backend URL given".to_string());
    }
    Ok(urls)
}

fn parse_pins_list(raw: &str) -> Result<HashMap<String, IpAddr>, String> {
    let mut pins = HashMap::new();
    for item in raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (host, ip) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not of the form hostname=IP"))?;
        let host = host.trim().to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("'{item}' has no hostname"));
        }
        pins.insert(host, parse_ip(ip)?);
    }
    Ok(pins)
}

fn check_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "'{path}' is not an absolute request path such as /health"
        ));
    }
    Ok(path.to_string())
}

fn at_least_one(value: Option<u32>, default: u32) -> Result<u32, String> {
    match value {
        Some(0) => Err("must be at least 1".to_string()),
        Some(value) => Ok(value),
        None => Ok(default),
    }
}

/// `["2xx", 304]` → `[(200, 299), (304, 304)]`.
fn parse_statuses(list: &[serde_yaml::Value]) -> Result<Vec<(u16, u16)>, String> {
    let mut ranges = Vec::with_capacity(list.len());
    for item in list {
        let text = match item {
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::String(s) => s.trim().to_ascii_lowercase(),
            _ => return Err("expected status codes like 200 or classes like \"2xx\"".to_string()),
        };
        let range = match text.strip_suffix("xx") {
            Some(class) => match class.parse::<u16>() {
                Ok(class @ 1..=5) => (class * 100, class * 100 + 99),
                _ => return Err(format!("'{text}' is not a status class (1xx to 5xx)")),
            },
            None => match text.parse::<u16>() {
                Ok(code @ 100..=599) => (code, code),
                _ => return Err(format!("'{text}' is not an HTTP status code")),
            },
        };
        ranges.push(range);
    }
    if ranges.is_empty() {
        return Err("the list is empty: no check could pass".to_string());
    }
    Ok(ranges)
}

fn check_prefix(prefix: &str) -> Result<String, String> {
    if prefix.len() < 3
        || !prefix.starts_with('/')
        || !prefix.ends_with('/')
        || prefix.contains(char::is_whitespace)
    {
        return Err(format!("'{prefix}' is not a path prefix such as /_lb/"));
    }
    Ok(prefix.to_string())
}

fn check_stage(stage: &str) -> Result<String, String> {
    let stage = stage.to_ascii_lowercase();
    if STAGES.contains(&stage.as_str()) {
        Ok(stage)
    } else {
        Err(format!(
            "'{stage}' is not a pipeline stage; expected one of {}",
            STAGES.join(", ")
        ))
    }
}

fn check_api_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("'{url}' is not an http(s) URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL must not carry credentials; use HEROKU_API_KEY".to_string());
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A CA file must be readable and hold at least one PEM certificate that
/// rustls accepts.
fn check_ca_file(path: &str) -> Result<(), String> {
    if !Path::new(path).is_file() {
        return Err(format!("CA file {path} does not exist or is not a file"));
    }
    std::fs::File::open(path).map_err(|e| format!("cannot read CA file {path}: {e}"))?;
    let mut store = pingora::tls::RootCertStore::empty();
    pingora::tls::load_ca_file_into_store(path, &mut store)
        .map_err(|e| format!("CA file {path} is not a PEM bundle of certificates: {e}"))?;
    if store.is_empty() {
        return Err(format!("CA file {path} holds no certificate"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
