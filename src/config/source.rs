//! Where the backends come from: a static list, a Heroku pipeline, or the
//! demo. Reads `LB_BACKENDS` / `backends`, the API key, the pipeline and its
//! discovery settings (environment over file over default, as in
//! `build.rs`, which calls [`backend_source`]). When backends are listed,
//! static mode wins over the pipeline settings, which are ignored with a
//! warning: the Deploy button's form offers both.

use super::env::{self, Env};
use super::file::FileSettings;
use super::parse::*;
use super::{ApiKey, BackendSource, ConfigError, PipelineSettings, WebhookSettings};
use std::time::Duration;

/// Static mode when backends are listed, else pipeline discovery when both
/// the API key and the pipeline are set, else the demo; plus the warnings to
/// log at start.
pub(super) fn backend_source(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
    admin_prefix: &str,
) -> Result<(BackendSource, Vec<String>), ConfigError> {
    let api_key = env.var(env::HEROKU_API_KEY);
    let pipeline = env
        .var(env::PIPELINE_IDENTIFIER)
        .or_else(|| file.pipeline.clone());
    // Environment over file; no default (none: pipeline or demo).
    let static_list = match env.var(env::LB_BACKENDS) {
        Some(raw) => Some((
            parse_backend_list(raw.split(','))
                .map_err(|reason| ConfigError::new(env::LB_BACKENDS, reason))?,
            env::LB_BACKENDS.to_string(),
        )),
        None => match &file.backends {
            Some(list) => Some((
                parse_backend_list(list.iter().map(String::as_str))
                    .map_err(|reason| ConfigError::new(key("backends"), reason))?,
                key("backends"),
            )),
            None => None,
        },
    };

    // A list of URLs is the most explicit choice, so static mode wins: a
    // Deploy-button user who fills in both the pipeline fields and
    // LB_BACKENDS gets what the list says, and is told the rest is ignored.
    if let Some((list, from)) = static_list {
        let webhooks_set =
            env.var(env::LB_WEBHOOK_SECRET).is_some() || env.var(env::LB_WEBHOOK_URL).is_some();
        let ignored: Vec<&str> = [
            (api_key.is_some(), env::HEROKU_API_KEY),
            (pipeline.is_some(), env::PIPELINE_IDENTIFIER),
            // Deliveries name apps by id, which only pipeline discovery knows.
            (webhooks_set, env::LB_WEBHOOK_SECRET),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        let warnings = if ignored.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "static mode: {from} lists the backends, so {} {} ignored and no pipeline is \
                 discovered; leave {from} empty for pipeline discovery",
                ignored.join(" and "),
                if ignored.len() == 1 { "is" } else { "are" },
            )]
        };
        return Ok((BackendSource::Static(list), warnings));
    }
    let source =
        match (api_key, pipeline) {
            (Some(api_key), Some(pipeline)) => BackendSource::Pipeline(Box::new(
                pipeline_settings(file, env, key, ApiKey(api_key), pipeline, admin_prefix)?,
            )),
            (Some(_), None) => return Err(ConfigError::new(
                env::PIPELINE_IDENTIFIER,
                "HEROKU_API_KEY is set but no pipeline is named; set PIPELINE_IDENTIFIER to the \
                 pipeline's UUID or name (or LB_BACKENDS for static mode)",
            )),
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    env::HEROKU_API_KEY,
                    "a pipeline is named but HEROKU_API_KEY is not set; discovery needs an API key",
                ))
            }
            (None, None) => BackendSource::Demo,
        };
    Ok((source, Vec::new()))
}

fn pipeline_settings(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
    api_key: ApiKey,
    pipeline: String,
    admin_prefix: &str,
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
            Some(env::LB_APP_REFRESH_INTERVAL_SECONDS),
            file.app_refresh_interval_seconds,
            Duration::from_secs(600),
            env,
            key("app_refresh_interval_seconds"),
        )?,
        api_timeout: seconds(
            Some(env::LB_API_TIMEOUT_SECONDS),
            file.api_timeout_seconds,
            Duration::from_secs(10),
            env,
            key("api_timeout_seconds"),
        )?,
        rate_limit_reserve: layered(
            env,
            env::LB_RATE_LIMIT_RESERVE,
            file.rate_limit_reserve,
            key("rate_limit_reserve"),
            500,
            parse_count,
            Ok,
        )?,
        weight_by_dynos: layered(
            env,
            env::LB_WEIGHT_BY_DYNOS,
            file.weight_by_dynos,
            key("weight_by_dynos"),
            true,
            parse_bool,
            Ok,
        )?,
        webhooks: webhook_settings(file, env, key)?,
        admin_prefix: admin_prefix.to_string(),
    })
}

/// The webhook secret (environment only) and the public URL (environment
/// over file; no default). A URL without a secret is an error: a
/// subscription's deliveries are signed with it.
fn webhook_settings(
    file: &FileSettings,
    env: &dyn Env,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<WebhookSettings>, ConfigError> {
    let public_url = match env.var(env::LB_WEBHOOK_URL) {
        Some(url) => {
            Some(check_api_url(&url).map_err(|r| ConfigError::new(env::LB_WEBHOOK_URL, r))?)
        }
        None => match &file.webhook_url {
            Some(url) => {
                Some(check_api_url(url).map_err(|r| ConfigError::new(key("webhook_url"), r))?)
            }
            None => None,
        },
    };
    match (env.var(env::LB_WEBHOOK_SECRET), public_url) {
        (Some(secret), public_url) => Ok(Some(WebhookSettings {
            secret: secret.into_bytes(),
            public_url,
        })),
        (None, Some(_)) => Err(ConfigError::new(
            env::LB_WEBHOOK_SECRET,
            "LB_WEBHOOK_URL is set but LB_WEBHOOK_SECRET is not: the apps' webhook \
             subscriptions sign their deliveries with it (heroku config:set \
             LB_WEBHOOK_SECRET=$(openssl rand -hex 32))",
        )),
        (None, None) => Ok(None),
    }
}
