//! App webhooks in the fake Platform API, as Heroku runs them: the
//! subscription endpoints (`GET`/`POST /apps/{id}/webhooks`, `DELETE
//! /apps/{id}/webhooks/{webhook_id}`, version `3.webhooks`), the `preboot`
//! app feature, and deliveries: a POST of the event's JSON to every
//! subscription of the app whose `include` names the event, signed in
//! `Heroku-Webhook-Hmac-SHA256` (base64 HMAC-SHA256 of the raw body under
//! the subscription's secret). A test delivers events itself (a release, a
//! dyno, any event, or one with a wrong signature); changing an app's
//! formation or maintenance through the handle delivers its event too, as
//! Heroku would. Deliveries go out on the caller's thread with a blocking
//! HTTP/1.1 POST and report the status each answered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::model::{now_iso8601, AppId, AppRecord, State};
use super::routing::{Answer, RecordedRequest};
use super::FakeHerokuApi;

/// One subscription.
#[derive(Clone, Debug)]
pub(super) struct WebhookRecord {
    pub(super) id: String,
    pub(super) url: String,
    pub(super) include: Vec<String>,
    pub(super) level: String,
    pub(super) secret: String,
    pub(super) created_at: String,
}

impl WebhookRecord {
    fn json(&self, app: &AppRecord) -> Value {
        json!({
            "app": {"id": app.id, "name": app.name},
            "created_at": self.created_at,
            "id": self.id,
            "include": self.include,
            "level": self.level,
            "updated_at": self.created_at,
            "url": self.url,
        })
    }
}

/// The webhook and feature endpoints; `None` when the path is not one.
pub(super) fn route(
    state: &mut State,
    request: &RecordedRequest,
    segments: &[&str],
) -> Option<Answer> {
    let method = request.method.as_str();
    let answer = match (method, segments) {
        ("GET", ["apps", app, "features", "preboot"]) => {
            let app = state.find_app(app)?;
            let enabled = state.preboot.contains(&app.id);
            Answer::json(
                StatusCode::OK,
                &json!({
                    "created_at": app.created_at,
                    "description": "Provide seamless web dyno deploys",
                    "doc_url": "https://devcenter.heroku.com/articles/preboot",
                    "enabled": enabled,
                    "id": "preboot",
                    "name": "preboot",
                    "state": "general",
                    "updated_at": app.updated_at,
                }),
            )
        }
        ("GET", ["apps", app, "webhooks"]) => {
            let app = state.find_app(app)?;
            let hooks: Vec<Value> = state
                .webhooks
                .get(&app.id)
                .into_iter()
                .flatten()
                .map(|hook| hook.json(app))
                .collect();
            Answer::json(StatusCode::OK, &Value::Array(hooks))
        }
        ("POST", ["apps", app, "webhooks"]) => {
            if state.webhooks_refused {
                return Some(Answer::error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "You do not have access to the app webhooks.",
                ));
            }
            let app_id = state.find_app(app)?.id.clone();
            let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
                return Some(Answer::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Request body must be valid JSON.",
                ));
            };
            let (Some(url), Some(include), Some(level)) = (
                body["url"].as_str(),
                body["include"].as_array(),
                body["level"].as_str(),
            ) else {
                return Some(Answer::error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_params",
                    "include, level and url are required.",
                ));
            };
            let hook = WebhookRecord {
                id: state.ids.uuid(),
                url: url.to_string(),
                include: include
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                level: level.to_string(),
                secret: body["secret"].as_str().unwrap_or_default().to_string(),
                created_at: now_iso8601(),
            };
            state
                .webhooks
                .entry(app_id.clone())
                .or_default()
                .push(hook.clone());
            let app = state.apps.get(&app_id)?;
            Answer::json(StatusCode::CREATED, &hook.json(app))
        }
        ("DELETE", ["apps", app, "webhooks", webhook]) => {
            let app_id = state.find_app(app)?.id.clone();
            let hooks = state.webhooks.entry(app_id.clone()).or_default();
            let Some(at) = hooks.iter().position(|hook| hook.id == *webhook) else {
                return Some(Answer::not_found("webhook"));
            };
            let hook = hooks.remove(at);
            let app = state.apps.get(&app_id)?;
            Answer::json(StatusCode::OK, &hook.json(app))
        }
        _ => return None,
    };
    Some(answer)
}

/// The event Heroku would deliver for `resource` (`formation`, `release`,
/// `app`, `dyno`) and `action` with `data`.
fn event(
    state: &mut State,
    resource: &str,
    action: &str,
    data: Value,
    hook: &WebhookRecord,
) -> Value {
    let include = if resource == "dyno" {
        "dyno".to_string()
    } else {
        format!("api:{resource}")
    };
    json!({
        "id": state.ids.uuid(),
        "action": action,
        "actor": {"email": "owner@example.com", "id": state.owner_id},
        "created_at": now_iso8601(),
        "data": data,
        "previous_data": {},
        "published_at": now_iso8601(),
        "resource": resource,
        "sequence": null,
        "updated_at": now_iso8601(),
        "version": "application/vnd.heroku+json; version=3",
        "webhook_metadata": {
            "attempt": {"id": state.ids.uuid()},
            "delivery": {"id": state.ids.uuid()},
            "event": {"id": state.ids.uuid(), "include": include},
            "webhook": {"id": hook.id},
        },
    })
}

/// Standard base64 with padding (RFC 4648), for the signature header.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Heroku-Webhook-Hmac-SHA256` for `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    base64(ring::hmac::sign(&key, body).as_ref())
}

/// POST `body` to `url` (`http://127.0.0.1:PORT/path`) with `signature`;
/// the status answered, or 0 when there was none.
pub fn post(url: &str, body: &[u8], signature: Option<&str>) -> u16 {
    let Some(rest) = url.strip_prefix("http://") else {
        return 0;
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let Ok(mut stream) = TcpStream::connect(authority) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nUser-Agent: Heroku Webhooks\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(signature) = signature {
        head.push_str(&format!("Heroku-Webhook-Hmac-SHA256: {signature}\r\n"));
    }
    head.push_str("\r\n");
    if stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .is_err()
    {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

impl FakeHerokuApi {
    /// Deliver an event about `app` to each of its subscriptions that
    /// includes it, signed as Heroku signs; the status each answered.
    pub fn deliver(&self, app: &AppId, resource: &str, action: &str, data: Value) -> Vec<u16> {
        let include = if resource == "dyno" {
            "dyno".to_string()
        } else {
            format!("api:{resource}")
        };
        let deliveries: Vec<(String, Vec<u8>, String)> = {
            let mut state = self.state();
            let hooks: Vec<WebhookRecord> = state
                .webhooks
                .get(app.as_str())
                .into_iter()
                .flatten()
                .filter(|hook| hook.include.contains(&include))
                .cloned()
                .collect();
            hooks
                .iter()
                .map(|hook| {
                    let body = event(&mut state, resource, action, data.clone(), hook).to_string();
                    (hook.url.clone(), body.into_bytes(), hook.secret.clone())
                })
                .collect()
        };
        deliveries
            .iter()
            .map(|(url, body, secret)| post(url, body, Some(&signature(secret, body))))
            .collect()
    }

    /// Deliver the same event twice (Heroku retries): the statuses.
    pub fn deliver_twice(
        &self,
        app: &AppId,
        resource: &str,
        action: &str,
        data: Value,
    ) -> Vec<u16> {
        let include = format!("api:{resource}");
        let deliveries: Vec<(String, Vec<u8>, String)> = {
            let mut state = self.state();
            let hooks: Vec<WebhookRecord> = state
                .webhooks
                .get(app.as_str())
                .into_iter()
                .flatten()
                .filter(|hook| hook.include.contains(&include))
                .cloned()
                .collect();
            hooks
                .iter()
                .map(|hook| {
                    let body = event(&mut state, resource, action, data.clone(), hook).to_string();
                    (hook.url.clone(), body.into_bytes(), hook.secret.clone())
                })
                .collect()
        };
        let mut statuses = Vec::new();
        for (url, body, secret) in &deliveries {
            for _ in 0..2 {
                statuses.push(post(url, body, Some(&signature(secret, body))));
            }
        }
        statuses
    }

    /// The `data` of events about `app`: `{"app": {"id", "name"}}` plus `extra`.
    pub fn event_data(&self, app: &AppId, extra: Value) -> Value {
        let state = self.state();
        let record = state
            .apps
            .get(app.as_str())
            .unwrap_or_else(|| panic!("no app {app}"));
        let mut data = json!({"app": {"id": record.id, "name": record.name}});
        if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
            for (key, value) in extra {
                data.insert(key.clone(), value.clone());
            }
        }
        data
    }

    /// A release of `app` succeeds: Heroku delivers `api:release` updated
    /// with status `succeeded` (and restarts its dynos).
    pub fn release(&self, app: &AppId) -> Vec<u16> {
        let data = self.event_data(
            app,
            json!({"status": "succeeded", "version": 2, "current": true}),
        );
        self.deliver(app, "release", "update", data)
    }

    /// Subscribe `url` to `app`'s events of `include` with `secret`, as
    /// `heroku webhooks:add` does.
    pub fn subscribe(&self, app: &AppId, url: &str, secret: &str, include: &[&str]) {
        let mut state = self.state();
        let hook = WebhookRecord {
            id: state.ids.uuid(),
            url: url.to_string(),
            include: include.iter().map(|s| s.to_string()).collect(),
            level: "sync".to_string(),
            secret: secret.to_string(),
            created_at: now_iso8601(),
        };
        state
            .webhooks
            .entry(app.as_str().to_string())
            .or_default()
            .push(hook);
    }

    /// The URLs `app` is subscribed to, one per subscription.
    pub fn subscriptions(&self, app: &AppId) -> Vec<String> {
        self.state()
            .webhooks
            .get(app.as_str())
            .into_iter()
            .flatten()
            .map(|hook| hook.url.clone())
            .collect()
    }

    /// Answer 403 to every subscription the balancer tries to make.
    pub fn refuse_webhooks(&self, refused: bool) {
        self.state().webhooks_refused = refused;
    }

    /// Turn `app`'s preboot feature on or off.
    pub fn set_preboot(&self, app: &AppId, on: bool) {
        let mut state = self.state();
        if on {
            state.preboot.insert(app.as_str().to_string());
        } else {
            state.preboot.remove(app.as_str());
        }
    }
}
