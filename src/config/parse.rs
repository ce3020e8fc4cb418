//! Parsers and checks for single configuration values (ports, durations,
//! URLs, paths, status lists, CA files). Each returns the reason on failure;
//! the caller names the variable or key.

use super::env::Env;
use super::{ConfigError, STAGES};
use crate::values::BackendUrl;
use crate::values::IpCidr;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// A duration from `var` (when given and set), else the file key, else the default.
pub(super) fn seconds(
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

/// One setting, environment over file over default: `var` when set (parsed by
/// `parse`), else the file's value (checked by `check`), else `default`. Each
/// error names the variable or the key it came from.
pub(super) fn layered<F, T>(
    env: &dyn Env,
    var: &str,
    file_value: Option<F>,
    file_key: String,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
    check: impl Fn(F) -> Result<T, String>,
) -> Result<T, ConfigError> {
    if let Some(raw) = env.var(var) {
        return parse(&raw).map_err(|reason| ConfigError::new(var, reason));
    }
    match file_value {
        Some(value) => check(value).map_err(|reason| ConfigError::new(file_key, reason)),
        None => Ok(default),
    }
}

/// A whole number, 0 or more.
pub(super) fn parse_count<T: std::str::FromStr>(raw: &str) -> Result<T, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("'{raw}' is not a whole number (0 or more)"))
}

/// A whole number, 1 or more.
pub(super) fn parse_at_least_one(raw: &str) -> Result<u32, String> {
    at_least_one(Some(parse_count(raw)?), 1)
}

/// `2xx,3xx,204` from a variable: the same items as the file's list.
pub(super) fn parse_status_list(raw: &str) -> Result<Vec<(u16, u16)>, String> {
    let items: Vec<serde_yaml::Value> = raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| serde_yaml::Value::String(item.to_string()))
        .collect();
    parse_statuses(&items)
}

/// Like [`seconds`], for a setting that 0 turns off.
pub(super) fn seconds_or_off(
    var: &str,
    file_value: Option<f64>,
    default: Duration,
    env: &dyn Env,
    file_key: String,
) -> Result<Duration, ConfigError> {
    let off_or = |value: f64| {
        if value == 0.0 {
            Ok(Duration::ZERO)
        } else {
            to_duration(value)
        }
    };
    if let Some(raw) = env.var(var) {
        let value: f64 = raw
            .parse()
            .map_err(|_| ConfigError::new(var, format!("'{raw}' is not a number of seconds")))?;
        return off_or(value).map_err(|reason| ConfigError::new(var, reason));
    }
    match file_value {
        Some(value) => off_or(value).map_err(|reason| ConfigError::new(file_key, reason)),
        None => Ok(default),
    }
}

pub(super) fn to_duration(seconds: f64) -> Result<Duration, String> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!(
            "{seconds} is not a number of seconds between 0 and 86400"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(super) fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("'{raw}' is not a port number (1-65535)")),
    }
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case.
pub(super) fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("'{raw}' is not true or false")),
    }
}

/// IP addresses or CIDR ranges; blank items are skipped.
pub(super) fn parse_ranges<'a>(
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<IpCidr>, String> {
    items
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(IpCidr::parse)
        .collect()
}

/// A status token: refused when blank, since an empty token would match an
/// empty bearer and show the detail to anyone.
pub(super) fn check_token(token: &str) -> Result<String, String> {
    let token = token.trim();
    if token.is_empty() {
        return Err(
            "the status token is blank, which would let anyone see the detail; set a token \
             or leave it out"
                .to_string(),
        );
    }
    Ok(token.to_string())
}

pub(super) fn parse_ip(raw: &str) -> Result<IpAddr, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("'{raw}' is not an IP address"))
}

pub(super) fn parse_backend_list<'a>(
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<BackendUrl>, String> {
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

pub(super) fn parse_pins_list(raw: &str) -> Result<HashMap<String, IpAddr>, String> {
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

pub(super) fn check_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "'{path}' is not an absolute request path such as /health"
        ));
    }
    Ok(path.to_string())
}

/// A whole percentage, 0 to 100.
pub(super) fn parse_percent(raw: &str) -> Result<u32, String> {
    match raw.trim().trim_end_matches('%').parse::<u32>() {
        Ok(value) if value <= 100 => Ok(value),
        _ => Err(format!(
            "'{raw}' is not a percentage (a whole number from 0 to 100)"
        )),
    }
}

pub(super) fn at_least_one(value: Option<u32>, default: u32) -> Result<u32, String> {
    match value {
        Some(0) => Err("must be at least 1".to_string()),
        Some(value) => Ok(value),
        None => Ok(default),
    }
}

/// `["2xx", 304]` → `[(200, 299), (304, 304)]`.
pub(super) fn parse_statuses(list: &[serde_yaml::Value]) -> Result<Vec<(u16, u16)>, String> {
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

pub(super) fn check_prefix(prefix: &str) -> Result<String, String> {
    if prefix.len() < 3
        || !prefix.starts_with('/')
        || !prefix.ends_with('/')
        || prefix.contains(char::is_whitespace)
    {
        return Err(format!("'{prefix}' is not a path prefix such as /_lb/"));
    }
    Ok(prefix.to_string())
}

pub(super) fn check_stage(stage: &str) -> Result<String, String> {
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

pub(super) fn check_api_url(url: &str) -> Result<String, String> {
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
pub(super) fn check_ca_file(path: &str) -> Result<(), String> {
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
