//! The environment variables heroku-lb reads, each named once, and the lookup
//! trait through which they are read.
//!
//! Heroku configures apps through config vars, so every setting has a
//! variable here; `table.rs` gives each its key, default and meaning, and
//! [`ALL`] is derived from that table. `build.rs` and `mod.rs` apply them over
//! the file. Reading through [`Env`] lets unit tests pass a map instead of
//! touching the process environment. An empty variable counts as unset:
//! Heroku's dashboard and `app.json` leave optional vars empty rather than
//! absent. [`Env::raw`] is for the rare check that must tell a blank value
//! from an absent one.

use std::collections::HashMap;

/// Port to listen on; Heroku sets it for every web dyno.
pub const PORT: &str = "PORT";
/// Address to listen on (default `0.0.0.0`, as Heroku requires).
pub const LB_LISTEN_HOST: &str = "LB_LISTEN_HOST";
/// Comma-separated backend URLs: static mode.
pub const LB_BACKENDS: &str = "LB_BACKENDS";
/// Comma-separated `hostname=IP` pins, like curl's `--resolve`.
pub const LB_RESOLVE: &str = "LB_RESOLVE";
/// Seconds between active health checks.
pub const HEALTH_CHECK_INTERVAL: &str = "HEALTH_CHECK_INTERVAL";
/// Path the active health check requests.
pub const HEALTH_CHECK_PATH: &str = "HEALTH_CHECK_PATH";
/// Bearer token that unlocks the status detail.
pub const LB_STATUS_TOKEN: &str = "LB_STATUS_TOKEN";
/// Comma-separated IPs or CIDR ranges whose `X-Forwarded-*` headers are kept.
pub const LB_TRUSTED_PROXIES: &str = "LB_TRUSTED_PROXIES";
/// `false` keeps the backend's own URLs in redirects and cookie domains.
pub const LB_REWRITE_REDIRECTS: &str = "LB_REWRITE_REDIRECTS";
/// PEM bundle of CAs trusted for upstream TLS instead of the system roots.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";
/// Heroku Platform API key (secret: never logged or echoed).
pub const HEROKU_API_KEY: &str = "HEROKU_API_KEY";
/// Pipeline UUID or name whose apps are balanced.
pub const PIPELINE_IDENTIFIER: &str = "PIPELINE_IDENTIFIER";
/// Pipeline stage whose apps are balanced.
pub const PIPELINE_STAGE: &str = "PIPELINE_STAGE";
/// Base URL of the Platform API.
pub const HEROKU_API_URL: &str = "HEROKU_API_URL";
/// Seconds between discovery rounds.
pub const DISCOVERY_INTERVAL: &str = "DISCOVERY_INTERVAL";
/// Set by Heroku on every dyno (`web.1`); never set elsewhere.
pub const DYNO: &str = "DYNO";
/// Balancing policy: `round_robin` or `least_connections`.
pub const LB_POLICY: &str = "LB_POLICY";
/// Name of the sticky-session cookie; unset: no sticky sessions.
pub const LB_STICKY_COOKIE: &str = "LB_STICKY_COOKIE";
/// `Max-Age` of the sticky cookie, in seconds; unset: a session cookie.
pub const LB_STICKY_TTL: &str = "LB_STICKY_TTL";
/// Key of the sticky tokens (secret: never logged or echoed).
pub const LB_STICKY_SECRET: &str = "LB_STICKY_SECRET";
/// Most backends passive ejection may take out at once, in percent of all.
pub const LB_MAX_EJECTION_PERCENT: &str = "LB_MAX_EJECTION_PERCENT";
/// Log level, read by env_logger in `main.rs`.
pub const RUST_LOG: &str = "RUST_LOG";

/// Seconds between resolutions of the backends' hostnames.
pub const LB_RESOLVE_INTERVAL_SECONDS: &str = "LB_RESOLVE_INTERVAL_SECONDS";
/// Limit of one health check, in seconds.
pub const LB_HEALTH_CHECK_TIMEOUT_SECONDS: &str = "LB_HEALTH_CHECK_TIMEOUT_SECONDS";
/// Passing checks in a row that re-admit a backend.
pub const LB_HEALTH_CHECK_RISE: &str = "LB_HEALTH_CHECK_RISE";
/// Failing checks in a row that evict a backend.
pub const LB_HEALTH_CHECK_FALL: &str = "LB_HEALTH_CHECK_FALL";
/// Comma-separated passing statuses: classes (`2xx`) or codes (`204`).
pub const LB_HEALTH_CHECK_STATUSES: &str = "LB_HEALTH_CHECK_STATUSES";
/// Failures in a row on live traffic that eject a backend (0: off).
pub const LB_PASSIVE_5XX_THRESHOLD: &str = "LB_PASSIVE_5XX_THRESHOLD";
/// Paths under this prefix are answered by the balancer.
pub const LB_ADMIN_PATH_PREFIX: &str = "LB_ADMIN_PATH_PREFIX";
/// Seconds before a known app's details are looked up again.
pub const LB_APP_REFRESH_INTERVAL_SECONDS: &str = "LB_APP_REFRESH_INTERVAL_SECONDS";
/// Timeout of each Platform API request, in seconds.
pub const LB_API_TIMEOUT_SECONDS: &str = "LB_API_TIMEOUT_SECONDS";
/// Below this `RateLimit-Remaining`, discovery slows down.
pub const LB_RATE_LIMIT_RESERVE: &str = "LB_RATE_LIMIT_RESERVE";
/// Weight each app by its web dyno count.
pub const LB_WEIGHT_BY_DYNOS: &str = "LB_WEIGHT_BY_DYNOS";
/// Upstream connect (and TLS) limit, in seconds.
pub const LB_CONNECT_TIMEOUT_SECONDS: &str = "LB_CONNECT_TIMEOUT_SECONDS";
/// Limit of each upstream read, in seconds.
pub const LB_FIRST_BYTE_TIMEOUT_SECONDS: &str = "LB_FIRST_BYTE_TIMEOUT_SECONDS";
/// Seconds a pooled upstream connection may sit idle.
pub const LB_IDLE_TIMEOUT_SECONDS: &str = "LB_IDLE_TIMEOUT_SECONDS";
/// Other backends a request tries after a connect failure.
pub const LB_CONNECT_RETRIES: &str = "LB_CONNECT_RETRIES";
/// Key of Heroku app webhook signatures (secret: never logged or echoed);
/// turns on the webhook receiver.
pub const LB_WEBHOOK_SECRET: &str = "LB_WEBHOOK_SECRET";
/// The balancer's public URL, to subscribe every app to its webhooks.
pub const LB_WEBHOOK_URL: &str = "LB_WEBHOOK_URL";
/// Seconds over which an admitted backend's share ramps up to full.
pub const LB_SLOW_START_SECONDS: &str = "LB_SLOW_START_SECONDS";
/// Seconds upgraded connections to a leaving backend get before they are closed.
pub const LB_DRAIN_TIMEOUT_SECONDS: &str = "LB_DRAIN_TIMEOUT_SECONDS";
/// Milliseconds after sending within which a 502/503/504 is retried elsewhere.
pub const LB_RETRY_5XX_WITHIN_MS: &str = "LB_RETRY_5XX_WITHIN_MS";
/// Requests in flight allowed per web dyno of an app (unset: no cap).
pub const LB_MAX_IN_FLIGHT_PER_DYNO: &str = "LB_MAX_IN_FLIGHT_PER_DYNO";
/// Seconds a request waits in the admission queue for a slot.
pub const LB_QUEUE_TIMEOUT_SECONDS: &str = "LB_QUEUE_TIMEOUT_SECONDS";
/// Requests the admission queue holds at most.
pub const LB_QUEUE_MAX: &str = "LB_QUEUE_MAX";
/// Set by the Heroku Key-Value Store add-on: the store's URL (secret).
pub const REDIS_URL: &str = "REDIS_URL";
/// A Redis URL to share the view through instead of `REDIS_URL` (secret).
pub const LB_STORE_URL: &str = "LB_STORE_URL";
/// Longest a request line waits in the log buffer, in seconds.
pub const LB_LOG_FLUSH_INTERVAL_SECONDS: &str = "LB_LOG_FLUSH_INTERVAL_SECONDS";
/// Pingora's `threads`.
pub const LB_THREADS: &str = "LB_THREADS";
/// Pingora's `grace_period_seconds`.
pub const LB_GRACE_PERIOD_SECONDS: &str = "LB_GRACE_PERIOD_SECONDS";
/// Pingora's `graceful_shutdown_timeout_seconds`.
pub const LB_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: &str = "LB_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS";

const COUNT: usize = super::table::SETTINGS.len();
const NAMES: [&str; COUNT] = super::table::names::<COUNT>();

/// Every variable heroku-lb reads, in the order of `table::SETTINGS`, where
/// each has its key, default and meaning.
pub const ALL: &[&str] = &NAMES;

/// Variables Heroku sets itself; `app.json` cannot declare them.
pub const SET_BY_HEROKU: &[&str] = &[PORT, DYNO];

/// Where variables come from.
pub trait Env {
    /// The value of `name`, trimmed, or `None` when it is unset or empty.
    fn var(&self, name: &str) -> Option<String>;

    /// The value of `name` exactly as set (blank included), or `None` when absent.
    fn raw(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        let value = std::env::var_os(name)?;
        let value = value.to_string_lossy().trim().to_string();
        (!value.is_empty()).then_some(value)
    }

    fn raw(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
    }

    fn raw(&self, name: &str) -> Option<String> {
        self.get(name).map(|value| value.to_string())
    }
}
