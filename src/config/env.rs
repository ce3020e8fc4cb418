//! The environment variables heroku-lb reads, each named once, and the lookup
//! trait through which they are read.
//!
//! Heroku configures apps through config vars, so every setting that matters in
//! production has a variable here; `mod.rs` applies them over the file. Reading
//! through [`Env`] lets unit tests pass a map instead of touching the process
//! environment. An empty variable counts as unset: Heroku's dashboard and
//! `app.json` leave optional vars empty rather than absent. [`Env::raw`] is
//! for the rare check that must tell a blank value from an absent one.

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

/// Every variable heroku-lb reads; `app.json` declares all but [`SET_BY_HEROKU`].
pub const ALL: &[&str] = &[
    PORT,
    LB_LISTEN_HOST,
    LB_BACKENDS,
    LB_RESOLVE,
    HEALTH_CHECK_INTERVAL,
    HEALTH_CHECK_PATH,
    LB_STATUS_TOKEN,
    LB_TRUSTED_PROXIES,
    LB_REWRITE_REDIRECTS,
    SSL_CERT_FILE,
    HEROKU_API_KEY,
    PIPELINE_IDENTIFIER,
    PIPELINE_STAGE,
    HEROKU_API_URL,
    DISCOVERY_INTERVAL,
    DYNO,
    LB_POLICY,
    LB_STICKY_COOKIE,
    LB_STICKY_TTL,
    LB_STICKY_SECRET,
    LB_MAX_EJECTION_PERCENT,
    RUST_LOG,
];

/// Every variable with a line on what it does, for `--help` (same order as [`ALL`]).
pub const DESCRIBED: &[(&str, &str)] = &[
    (PORT, "port to listen on (Heroku sets it; default 8080)"),
    (LB_LISTEN_HOST, "address to listen on (default 0.0.0.0)"),
    (LB_BACKENDS, "static mode: comma-separated backend URLs"),
    (
        LB_RESOLVE,
        "hostname=IP pins instead of DNS, comma-separated",
    ),
    (
        HEALTH_CHECK_INTERVAL,
        "seconds between active health checks (default 5)",
    ),
    (
        HEALTH_CHECK_PATH,
        "path the health check requests (default /)",
    ),
    (
        LB_STATUS_TOKEN,
        "token that unlocks the status detail and metrics",
    ),
    (
        LB_TRUSTED_PROXIES,
        "IPs/CIDRs whose X-Forwarded-* headers are believed",
    ),
    (
        LB_REWRITE_REDIRECTS,
        "rewrite Location/Set-Cookie naming an app's host (default true)",
    ),
    (
        SSL_CERT_FILE,
        "PEM bundle of CAs for upstream TLS (default: system roots)",
    ),
    (
        HEROKU_API_KEY,
        "Platform API key (secret); with PIPELINE_IDENTIFIER: pipeline mode",
    ),
    (PIPELINE_IDENTIFIER, "pipeline UUID or name"),
    (
        PIPELINE_STAGE,
        "pipeline stage to balance (default production)",
    ),
    (
        HEROKU_API_URL,
        "Platform API base URL (default https://api.heroku.com)",
    ),
    (
        DISCOVERY_INTERVAL,
        "seconds between discovery rounds (default 30)",
    ),
    (DYNO, "set by Heroku: refuses the demo, names the instance"),
    (LB_POLICY, "round_robin (default) or least_connections"),
    (LB_STICKY_COOKIE, "sticky-session cookie name (unset: none)"),
    (LB_STICKY_TTL, "Max-Age of the sticky cookie in seconds"),
    (LB_STICKY_SECRET, "key of the sticky tokens (secret)"),
    (
        LB_MAX_EJECTION_PERCENT,
        "most backends passive ejection holds out, % (default 50)",
    ),
    (RUST_LOG, "log level (default info)"),
];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_described_once_in_order() {
        let described: Vec<&str> = DESCRIBED.iter().map(|(name, _)| *name).collect();
        assert_eq!(described, ALL);
    }
}
