//! From the raw file section and the environment to typed [`Settings`]:
//! every setting's precedence (environment over file over default) is
//! applied here, one function per group, and each error names its variable
//! or key. Single values are parsed by `values.rs`; where the backends come
//! from is decided in `source.rs`, Pingora's own keys in `mod.rs`.

use super::env::{self, Env};
use super::file::FileSettings;
use super::parse::*;
use super::source::backend_source;
use super::{
    BackendSource, ConfigError, HealthSettings, QueueSettings, Settings, StickySettings,
    StoreSettings, UpstreamSettings,
};
use crate::values::valid_cookie_name;
use crate::values::IpCidr;
use crate::values::Policy;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

pub(super) fn build_settings(
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
        Some(env::LB_RESOLVE_INTERVAL_SECONDS),
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
            Some(env::LB_HEALTH_CHECK_TIMEOUT_SECONDS),
            file.health_check_timeout_seconds,
            Duration::from_secs(2),
            env,
            key("health_check_timeout_seconds"),
        )?,
        rise: layered(
            env,
            env::LB_HEALTH_CHECK_RISE,
            file.health_check_rise,
            key("health_check_rise"),
            2,
            parse_at_least_one,
            |value| at_least_one(Some(value), 2),
        )?,
        fall: layered(
            env,
            env::LB_HEALTH_CHECK_FALL,
            file.health_check_fall,
            key("health_check_fall"),
            2,
            parse_at_least_one,
            |value| at_least_one(Some(value), 2),
        )?,
        statuses: layered(
            env,
            env::LB_HEALTH_CHECK_STATUSES,
            file.health_check_statuses.as_deref(),
            key("health_check_statuses"),
            vec![(200, 299), (300, 399)],
            parse_status_list,
            parse_statuses,
        )?,
        passive_5xx_threshold: layered(
            env,
            env::LB_PASSIVE_5XX_THRESHOLD,
            file.passive_5xx_threshold,
            key("passive_5xx_threshold"),
            5,
            parse_count,
            Ok,
        )?,
        // Environment over file over default (50).
        max_ejection_percent: match env.var(env::LB_MAX_EJECTION_PERCENT) {
            Some(raw) => parse_percent(&raw)
                .map_err(|r| ConfigError::new(env::LB_MAX_EJECTION_PERCENT, r))?,
            None => match file.max_ejection_percent {
                Some(value) => parse_percent(&value.to_string())
                    .map_err(|r| ConfigError::new(key("max_ejection_percent"), r))?,
                None => 50,
            },
        },
    };
    let admin_prefix = layered(
        env,
        env::LB_ADMIN_PATH_PREFIX,
        file.admin_path_prefix.as_deref(),
        key("admin_path_prefix"),
        "/_lb/".to_string(),
        check_prefix,
        check_prefix,
    )?;

    let upstream = UpstreamSettings {
        connect_timeout: seconds(
            Some(env::LB_CONNECT_TIMEOUT_SECONDS),
            file.connect_timeout_seconds,
            Duration::from_secs(5),
            env,
            key("connect_timeout_seconds"),
        )?,
        first_byte_timeout: seconds(
            Some(env::LB_FIRST_BYTE_TIMEOUT_SECONDS),
            file.first_byte_timeout_seconds,
            Duration::from_secs(30),
            env,
            key("first_byte_timeout_seconds"),
        )?,
        idle_timeout: seconds(
            Some(env::LB_IDLE_TIMEOUT_SECONDS),
            file.idle_timeout_seconds,
            Duration::from_secs(55),
            env,
            key("idle_timeout_seconds"),
        )?,
        connect_retries: layered(
            env,
            env::LB_CONNECT_RETRIES,
            file.connect_retries,
            key("connect_retries"),
            2,
            parse_count,
            Ok,
        )?,
        retry_5xx_within: Duration::from_millis(layered(
            env,
            env::LB_RETRY_5XX_WITHIN_MS,
            file.retry_5xx_within_ms,
            key("retry_5xx_within_ms"),
            1000,
            parse_count,
            Ok,
        )?),
    };

    let policy = match env.var(env::LB_POLICY) {
        Some(raw) => Policy::parse(&raw).map_err(|r| ConfigError::new(env::LB_POLICY, r))?,
        None => match &file.policy {
            Some(raw) => Policy::parse(raw).map_err(|r| ConfigError::new(key("policy"), r))?,
            None => Policy::RoundRobin,
        },
    };
    let sticky = sticky_settings(&file, env, key)?;
    let queueing = queue_settings(&file, env, key)?;

    let (source, warnings) = backend_source(&file, env, key, &admin_prefix)?;
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

    let (store, store_warning) = store_settings(&source, env)?;
    let mut warnings = warnings;
    warnings.extend(store_warning);
    Ok(Settings {
        store,
        listen,
        listen_port,
        source,
        resolve_pins,
        resolve_interval,
        health,
        status_token: status_token(&file, env, key)?,
        trusted_proxies: trusted_proxies(&file, env, key)?,
        // Environment over file over default (on).
        rewrite_redirects: match env.var(env::LB_REWRITE_REDIRECTS) {
            Some(raw) => {
                parse_bool(&raw).map_err(|r| ConfigError::new(env::LB_REWRITE_REDIRECTS, r))?
            }
            None => file.rewrite_redirects.unwrap_or(true),
        },
        slow_start: seconds_or_off(
            env::LB_SLOW_START_SECONDS,
            file.slow_start_seconds,
            Duration::from_secs(30),
            env,
            key("slow_start_seconds"),
        )?,
        drain_timeout: seconds_or_off(
            env::LB_DRAIN_TIMEOUT_SECONDS,
            file.drain_timeout_seconds,
            Duration::from_secs(30),
            env,
            key("drain_timeout_seconds"),
        )?,
        log_flush_interval: seconds(
            Some(env::LB_LOG_FLUSH_INTERVAL_SECONDS),
            file.log_flush_interval_seconds,
            Duration::from_millis(100),
            env,
            key("log_flush_interval_seconds"),
        )?,
        upstream,
        dyno,
        admin_prefix,
        policy,
        queueing,
        sticky,
        warnings,
    })
}

/// `LB_STORE_URL`, else `REDIS_URL` (environment only: they carry the
/// password), namespaced by what the dynos balance: the pipeline and stage,
/// or a digest of the static list. The demo shares nothing (a warning).
fn store_settings(
    source: &BackendSource,
    env: &dyn Env,
) -> Result<(Option<StoreSettings>, Option<String>), ConfigError> {
    let (var, url) = match (env.var(env::LB_STORE_URL), env.var(env::REDIS_URL)) {
        (Some(url), _) => (env::LB_STORE_URL, url),
        (None, Some(url)) => (env::REDIS_URL, url),
        (None, None) => return Ok((None, None)),
    };
    // The URL is never echoed: it holds the store's password.
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| ConfigError::new(var, format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none() {
        return Err(ConfigError::new(
            var,
            format!(
                "a {} URL; expected redis://HOST:PORT or rediss://HOST:PORT",
                parsed.scheme()
            ),
        ));
    }
    let namespace = match source {
        BackendSource::Pipeline(pipeline) => {
            format!("heroku-lb:{}:{}", pipeline.pipeline, pipeline.stage)
        }
        BackendSource::Static(urls) => {
            let mut list: Vec<String> = urls.iter().map(|url| url.to_string()).collect();
            list.sort();
            format!("heroku-lb:static:{:016x}", fnv1a(list.join(",").as_bytes()))
        }
        BackendSource::Demo => {
            return Ok((
                None,
                Some(format!(
                    "{var} is set but the demo shares nothing: ignored (set HEROKU_API_KEY and \
                     PIPELINE_IDENTIFIER, or LB_BACKENDS)"
                )),
            ))
        }
    };
    Ok((
        Some(StoreSettings {
            url: super::ApiKey::new(url),
            namespace,
        }),
        None,
    ))
}

/// FNV-1a, 64 bits: a stable name for a static list (the same list on
/// every dyno, whatever its build).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Environment over file; the cap has no default (off), the queue's limits
/// are read only with a cap (they are meaningless without one).
fn queue_settings(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<QueueSettings>, ConfigError> {
    let per_dyno = match env.var(env::LB_MAX_IN_FLIGHT_PER_DYNO) {
        Some(raw) => Some(
            parse_at_least_one(&raw)
                .map_err(|r| ConfigError::new(env::LB_MAX_IN_FLIGHT_PER_DYNO, r))?,
        ),
        None => match file.max_in_flight_per_dyno {
            Some(value) => Some(
                at_least_one(Some(value), 1)
                    .map_err(|r| ConfigError::new(key("max_in_flight_per_dyno"), r))?,
            ),
            None => None,
        },
    };
    let timeout = seconds_or_off(
        env::LB_QUEUE_TIMEOUT_SECONDS,
        file.queue_timeout_seconds,
        Duration::from_secs(10),
        env,
        key("queue_timeout_seconds"),
    )?;
    let max = layered(
        env,
        env::LB_QUEUE_MAX,
        file.queue_max,
        key("queue_max"),
        1000,
        parse_count,
        Ok,
    )?;
    Ok(per_dyno.map(|per_dyno| QueueSettings {
        max_in_flight_per_dyno: per_dyno as usize,
        timeout,
        max,
    }))
}

/// Environment over file; no default. An empty variable is unset, as for
/// every variable (Heroku leaves optional ones empty); one of only spaces is
/// a mistake. In the file a blank token is a mistake too.
fn status_token(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<String>, ConfigError> {
    if let Some(raw) = env.raw(env::LB_STATUS_TOKEN).filter(|raw| !raw.is_empty()) {
        return check_token(&raw)
            .map(Some)
            .map_err(|r| ConfigError::new(env::LB_STATUS_TOKEN, r));
    }
    file.status_token
        .as_deref()
        .map(check_token)
        .transpose()
        .map_err(|r| ConfigError::new(key("status_token"), r))
}

/// Environment over file over default (none: only Heroku's router, on a dyno).
fn trusted_proxies(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<IpCidr>, ConfigError> {
    match env.var(env::LB_TRUSTED_PROXIES) {
        Some(raw) => {
            parse_ranges(raw.split(',')).map_err(|r| ConfigError::new(env::LB_TRUSTED_PROXIES, r))
        }
        None => parse_ranges(file.trusted_proxies.iter().flatten().map(String::as_str))
            .map_err(|r| ConfigError::new(key("trusted_proxies"), r)),
    }
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
