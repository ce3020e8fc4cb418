//! The one list of settings: for each, its environment variable, its key in
//! the file, its default as text, what it means, and whether the Deploy
//! button's form asks for it.
//!
//! Everything that lists settings is derived from or checked against
//! [`SETTINGS`]: `env::ALL`, the `--help` text (`cli.rs`), README's
//! configuration table (`tests/settings_table.rs`), `app.json`'s form
//! (`tests/deploy_files.rs`). Reading and precedence live in `build.rs` and
//! `mod.rs`; the unit test in `precedence_tests.rs` fails for a row they do not
//! handle. One naming rule: `LB_` plus the key in upper case, except the
//! variables that existed before the rule (`PORT`, `PIPELINE_*`,
//! `HEALTH_CHECK_*`, `DISCOVERY_INTERVAL`, `SSL_CERT_FILE`, ...), which stay
//! the only variable of their key.

use super::env::*;

/// Where a setting lives in `pingora.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A key of our `heroku_lb:` section.
    Section(&'static str),
    /// One of Pingora's own top-level keys (applied to its `ServerConf`).
    Pingora(&'static str),
    /// Environment only: secrets, and what Heroku or the logger reads.
    None,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub var: &'static str,
    pub key: Key,
    /// The value used when neither the variable nor the key is set, written
    /// as the variable would take it; empty: none (the meaning says what then).
    pub default: &'static str,
    pub meaning: &'static str,
    /// Asked on the Deploy button's form (`app.json`): what a user decides.
    pub on_form: bool,
}

const fn row(var: &'static str, key: Key, default: &'static str, meaning: &'static str) -> Setting {
    Setting {
        var,
        key,
        default,
        meaning,
        on_form: false,
    }
}

const fn form(
    var: &'static str,
    key: Key,
    default: &'static str,
    meaning: &'static str,
) -> Setting {
    Setting {
        var,
        key,
        default,
        meaning,
        on_form: true,
    }
}

use Key::{Pingora, Section};

/// Every setting, in README's order. Lists in variables are comma-separated.
pub const SETTINGS: &[Setting] = &[
    // Listening.
    row(PORT, Section("port"), "8080", "Port to listen on (Heroku sets it)."),
    row(LB_LISTEN_HOST, Section("listen_host"), "0.0.0.0", "Address to listen on."),
    // Where the backends come from.
    form(
        LB_BACKENDS,
        Section("backends"),
        "",
        "Static mode: backend URLs (`http[s]://host[:port]`). When set, static mode wins and the pipeline settings are ignored (with a warning).",
    ),
    form(
        HEROKU_API_KEY,
        Key::None,
        "",
        "Platform API key (secret: environment only); with `PIPELINE_IDENTIFIER`, turns on pipeline discovery.",
    ),
    form(PIPELINE_IDENTIFIER, Section("pipeline"), "", "Pipeline UUID or name."),
    form(
        PIPELINE_STAGE,
        Section("pipeline_stage"),
        "production",
        "`test`, `review`, `development`, `staging` or `production`.",
    ),
    row(
        HEROKU_API_URL,
        Section("heroku_api_url"),
        "https://api.heroku.com",
        "Platform API base URL (tests).",
    ),
    row(
        DISCOVERY_INTERVAL,
        Section("discovery_interval_seconds"),
        "30",
        "Seconds between discovery rounds.",
    ),
    row(
        LB_APP_REFRESH_INTERVAL_SECONDS,
        Section("app_refresh_interval_seconds"),
        "600",
        "Seconds before a known app's details are looked up again.",
    ),
    row(
        LB_RATE_LIMIT_RESERVE,
        Section("rate_limit_reserve"),
        "500",
        "Below this `RateLimit-Remaining`, discovery slows down 4×.",
    ),
    row(
        LB_WEIGHT_BY_DYNOS,
        Section("weight_by_dynos"),
        "true",
        "Weight each app by its web dyno count (false: all weigh 1).",
    ),
    row(
        LB_API_TIMEOUT_SECONDS,
        Section("api_timeout_seconds"),
        "10",
        "Timeout of each Platform API request, in seconds.",
    ),
    row(
        LB_RESOLVE,
        Section("resolve"),
        "",
        "`host=IP` pins instead of DNS, like curl's `--resolve` (a map in the file).",
    ),
    row(
        LB_RESOLVE_INTERVAL_SECONDS,
        Section("resolve_interval_seconds"),
        "30",
        "Seconds between resolutions of the backends' hostnames.",
    ),
    // Health.
    form(
        HEALTH_CHECK_INTERVAL,
        Section("health_check_interval_seconds"),
        "5",
        "Seconds between active health checks (checks keep eco dynos awake).",
    ),
    form(HEALTH_CHECK_PATH, Section("health_check_path"), "/", "Path the check requests."),
    row(
        LB_HEALTH_CHECK_TIMEOUT_SECONDS,
        Section("health_check_timeout_seconds"),
        "2",
        "Limit of one check, in seconds.",
    ),
    row(
        LB_HEALTH_CHECK_RISE,
        Section("health_check_rise"),
        "2",
        "Passing checks in a row that re-admit a backend.",
    ),
    row(
        LB_HEALTH_CHECK_FALL,
        Section("health_check_fall"),
        "2",
        "Failing checks in a row that evict a backend.",
    ),
    row(
        LB_HEALTH_CHECK_STATUSES,
        Section("health_check_statuses"),
        "2xx,3xx",
        "Passing statuses: classes or codes (`2xx,3xx,204`; a list in the file).",
    ),
    row(
        LB_PASSIVE_5XX_THRESHOLD,
        Section("passive_5xx_threshold"),
        "5",
        "Failures in a row (5xx answers, read timeouts) that eject a backend between checks (0: off).",
    ),
    form(
        LB_MAX_EJECTION_PERCENT,
        Section("max_ejection_percent"),
        "50",
        "Most backends passive ejection may hold out at once, in percent (at least one; 0: off).",
    ),
    // Deploys and scaling.
    row(
        LB_WEBHOOK_SECRET,
        Key::None,
        "",
        "Secret of the apps' Heroku webhooks (secret: environment only); turns on the receiver at `{admin prefix}hooks/heroku` (pipeline mode).",
    ),
    row(
        LB_WEBHOOK_URL,
        Section("webhook_url"),
        "",
        "The balancer's public URL (`https://my-balancer.herokuapp.com`): every discovered app is subscribed to its webhooks (needs `LB_WEBHOOK_SECRET` and a key that may manage webhooks).",
    ),
    row(
        LB_SLOW_START_SECONDS,
        Section("slow_start_seconds"),
        "30",
        "Seconds over which an admitted app's share ramps from 5 % to full (0: off).",
    ),
    row(
        LB_DRAIN_TIMEOUT_SECONDS,
        Section("drain_timeout_seconds"),
        "30",
        "Seconds upgraded connections (WebSockets) to an app that leaves get before they are closed.",
    ),
    row(
        LB_RETRY_5XX_WITHIN_MS,
        Section("retry_5xx_within_ms"),
        "1000",
        "An idempotent request answered 502/503/504 within this many milliseconds goes to another app, within the retry budget (0: off).",
    ),
    // Upstream connections.
    row(
        LB_CONNECT_TIMEOUT_SECONDS,
        Section("connect_timeout_seconds"),
        "5",
        "Upstream connect (and TLS) limit in seconds, as Heroku's router.",
    ),
    row(
        LB_FIRST_BYTE_TIMEOUT_SECONDS,
        Section("first_byte_timeout_seconds"),
        "30",
        "Limit of each upstream read in seconds, the first byte included.",
    ),
    row(
        LB_IDLE_TIMEOUT_SECONDS,
        Section("idle_timeout_seconds"),
        "55",
        "Seconds a pooled upstream connection may sit idle.",
    ),
    row(
        LB_CONNECT_RETRIES,
        Section("connect_retries"),
        "2",
        "Other backends a request tries after a connect failure.",
    ),
    row(
        SSL_CERT_FILE,
        Pingora("ca_file"),
        "",
        "PEM bundle of CAs for upstream TLS, checked at start (unset: the system roots).",
    ),
    // Balancing.
    form(
        LB_POLICY,
        Section("policy"),
        "round_robin",
        "`round_robin`, `least_connections` or `peak_ewma` (see Choosing a policy).",
    ),
    row(
        LB_MAX_IN_FLIGHT_PER_DYNO,
        Section("max_in_flight_per_dyno"),
        "",
        "Most requests in flight to an app per web dyno; the rest wait in the admission queue (unset: no cap).",
    ),
    row(
        LB_QUEUE_TIMEOUT_SECONDS,
        Section("queue_timeout_seconds"),
        "10",
        "With a cap: longest a request waits for a slot, or for any app to be routable, before a 503 with `Retry-After`.",
    ),
    row(
        LB_QUEUE_MAX,
        Section("queue_max"),
        "1000",
        "With a cap: most requests waiting; one more gets a 503 with `Retry-After` at once.",
    ),
    form(
        LB_STICKY_COOKIE,
        Section("sticky_cookie"),
        "",
        "Cookie name for sticky sessions (unset: none).",
    ),
    row(
        LB_STICKY_TTL,
        Section("sticky_ttl_seconds"),
        "",
        "`Max-Age` of the sticky cookie in seconds (unset: a session cookie).",
    ),
    form(
        LB_STICKY_SECRET,
        Key::None,
        "",
        "Key that makes sticky tokens opaque (secret: environment only; unset: derived from `HEROKU_API_KEY`).",
    ),
    // What the balancer answers itself, and what it believes.
    form(
        LB_STATUS_TOKEN,
        Section("status_token"),
        "",
        "Bearer token for the status detail and metrics (unset: loopback callers only, off Heroku). A blank token is an error.",
    ),
    row(
        LB_ADMIN_PATH_PREFIX,
        Section("admin_path_prefix"),
        "/_lb/",
        "Paths answered by the balancer itself, never proxied.",
    ),
    row(
        LB_TRUSTED_PROXIES,
        Section("trusted_proxies"),
        "",
        "IPs or CIDR ranges of proxies whose `X-Forwarded-*` headers are all kept, `-Host` included (on a dyno: a CDN in front of Heroku's router, as the router names it).",
    ),
    row(
        LB_REWRITE_REDIRECTS,
        Section("rewrite_redirects"),
        "true",
        "Rewrite `Location`, `Content-Location`, `Refresh` and cookie `Domain`s naming an app's own host to the client's.",
    ),
    // Several balancer dynos.
    row(
        REDIS_URL,
        Key::None,
        "",
        "Set by the Heroku Key-Value Store add-on: several balancer dynos share one view through it (secret: environment only; see Running several balancer dynos).",
    ),
    row(
        LB_STORE_URL,
        Key::None,
        "",
        "A `redis://` or `rediss://` URL to share the view through instead of `REDIS_URL` (secret: environment only).",
    ),
    row(
        LB_LOG_FLUSH_INTERVAL_SECONDS,
        Section("log_flush_interval_seconds"),
        "0.1",
        "Longest a request line waits in the log buffer before it is written to stdout.",
    ),
    // Pingora's server.
    row(
        LB_THREADS,
        Pingora("threads"),
        "",
        "Worker threads of the proxy service; unset, the number of CPUs the process may use.",
    ),
    row(
        LB_GRACE_PERIOD_SECONDS,
        Pingora("grace_period_seconds"),
        "10",
        "Seconds in-flight requests get after SIGTERM; plus the next must stay under 25 s (Heroku kills at 30 s).",
    ),
    row(
        LB_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS,
        Pingora("graceful_shutdown_timeout_seconds"),
        "5",
        "Seconds Pingora's runtimes get to stop after the grace period.",
    ),
    // Read by others.
    row(
        DYNO,
        Key::None,
        "",
        "Set by Heroku: refuses the demo, names the instance, trusts the router's `X-Forwarded-For/-Proto/-Port`, hides the status detail without a token.",
    ),
    row(RUST_LOG, Key::None, "info", "Log level (`debug` for per-request detail)."),
];

/// The row of `var`.
pub fn setting(var: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.var == var)
}

/// The variable names of [`SETTINGS`], in order (for `env::ALL`).
pub(super) const fn names<const N: usize>() -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = SETTINGS[i].var;
        i += 1;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_and_key_is_listed_once() {
        for (i, a) in SETTINGS.iter().enumerate() {
            for b in &SETTINGS[i + 1..] {
                assert_ne!(a.var, b.var, "{} is listed twice", a.var);
                if a.key != Key::None {
                    assert_ne!(a.key, b.key, "{} and {} share a key", a.var, b.var);
                }
            }
        }
    }

    /// Every field of the file's section (`file.rs`) is a row, and every
    /// section key of the table a field: a new key cannot miss its variable.
    #[test]
    fn every_key_of_the_section_has_a_row() {
        let fields: std::collections::BTreeSet<&str> = include_str!("file.rs")
            .lines()
            .filter_map(|line| line.trim().strip_prefix("pub "))
            .filter_map(|line| line.split_once(": Option<"))
            .map(|(name, _)| name)
            .collect();
        let keys: std::collections::BTreeSet<&str> = SETTINGS
            .iter()
            .filter_map(|setting| match setting.key {
                Key::Section(key) => Some(key),
                _ => None,
            })
            .collect();
        assert!(fields.len() > 20, "file.rs fields not found: {fields:?}");
        assert_eq!(fields, keys);
    }

    /// New variables follow one rule: `LB_` plus the key in upper case.
    #[test]
    fn variables_are_named_after_their_key() {
        let older = [
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
            PIPELINE_IDENTIFIER,
            PIPELINE_STAGE,
            HEROKU_API_URL,
            DISCOVERY_INTERVAL,
            LB_POLICY,
            LB_STICKY_COOKIE,
            LB_STICKY_TTL,
            LB_MAX_EJECTION_PERCENT,
        ];
        for setting in SETTINGS {
            let key = match setting.key {
                Key::Section(key) | Key::Pingora(key) => key,
                Key::None => continue,
            };
            if !older.contains(&setting.var) {
                assert_eq!(
                    setting.var,
                    format!("LB_{}", key.to_ascii_uppercase()),
                    "{key}"
                );
            }
        }
    }
}
