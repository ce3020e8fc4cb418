//! The `heroku_lb:` section of `pingora.yaml`: the external shape of our
//! settings, exactly as a user writes them.
//!
//! Pingora's own `ServerConf` silently ignores keys it does not know, so the
//! typo-catching is ours: this section rejects unknown keys, and `mod.rs` turns
//! it into the typed [`Settings`](super::Settings). Keys are snake_case and
//! carry their unit, like Pingora's `*_seconds` keys. The API key has no key
//! here on purpose: it is a secret and comes only from `HEROKU_API_KEY`.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Name of our section in `pingora.yaml`.
pub const SECTION: &str = "heroku_lb";

/// Our section as written; every field optional, defaults live in `mod.rs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub port: Option<u16>,
    pub listen_host: Option<String>,
    pub backends: Option<Vec<String>>,
    pub resolve: Option<BTreeMap<String, String>>,
    pub resolve_interval_seconds: Option<f64>,
    pub health_check_interval_seconds: Option<f64>,
    pub health_check_path: Option<String>,
    pub health_check_timeout_seconds: Option<f64>,
    pub health_check_rise: Option<u32>,
    pub health_check_fall: Option<u32>,
    /// Passing statuses: classes like `"2xx"` or single codes like `204`.
    pub health_check_statuses: Option<Vec<serde_yaml::Value>>,
    pub passive_5xx_threshold: Option<u32>,
    pub max_ejection_percent: Option<u32>,
    pub admin_path_prefix: Option<String>,
    pub policy: Option<String>,
    pub sticky_cookie: Option<String>,
    pub sticky_ttl_seconds: Option<u64>,
    pub status_token: Option<String>,
    /// IPs or CIDR ranges whose `X-Forwarded-*` headers are kept.
    pub trusted_proxies: Option<Vec<String>>,
    pub rewrite_redirects: Option<bool>,
    pub log_flush_interval_seconds: Option<f64>,
    pub webhook_url: Option<String>,
    pub slow_start_seconds: Option<f64>,
    pub drain_timeout_seconds: Option<f64>,
    pub retry_5xx_within_ms: Option<u64>,
    pub max_in_flight_per_dyno: Option<u32>,
    pub queue_timeout_seconds: Option<f64>,
    pub queue_max: Option<usize>,
    pub pipeline: Option<String>,
    pub pipeline_stage: Option<String>,
    pub heroku_api_url: Option<String>,
    pub discovery_interval_seconds: Option<f64>,
    pub app_refresh_interval_seconds: Option<f64>,
    pub api_timeout_seconds: Option<f64>,
    pub rate_limit_reserve: Option<u64>,
    pub weight_by_dynos: Option<bool>,
    pub connect_timeout_seconds: Option<f64>,
    pub first_byte_timeout_seconds: Option<f64>,
    pub idle_timeout_seconds: Option<f64>,
    pub connect_retries: Option<usize>,
}
