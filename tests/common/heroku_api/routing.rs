//! Routing in the fake Platform API: a request as the fake records it, the `Accept` version
//! check (406) and the Bearer key check (401), the real endpoint paths mapped to their
//! answers, and the Heroku error bodies (`not_found`, `unauthorized`, `rate_limit`, …) those
//! answers use.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::model::State;
use super::paging::{list, with_etag};

const MEDIA_TYPE: &str = "application/vnd.heroku+json";

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The URI path, e.g. `/pipelines/<id>/pipeline-couplings`.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Header names lowercased; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The request body as text (lossy UTF-8).
    pub body: String,
}

impl RecordedRequest {
    /// Value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// An answer before the failure switches and common headers are applied.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Bytes,
}

impl Answer {
    pub(super) fn json(status: StatusCode, value: &Value) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Bytes::from(value.to_string()),
        }
    }

    pub(super) fn error(status: StatusCode, id: &str, message: &str) -> Self {
        Self::json(status, &json!({"id": id, "message": message, "url": null}))
    }

    pub(super) fn not_found(resource: &str) -> Self {
        Self::json(
            StatusCode::NOT_FOUND,
            &json!({
                "id": "not_found",
                "message": format!("Couldn't find that {resource}."),
                "resource": resource,
                "url": null,
            }),
        )
    }

    pub(super) fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

pub(super) const RATE_LIMIT_MESSAGE: &str =
    "Your account reached the API rate limit\nPlease wait a few minutes before making new requests";

pub(super) fn rate_limited() -> Answer {
    Answer::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({
            "id": "rate_limit",
            "message": RATE_LIMIT_MESSAGE,
            "url": "https://devcenter.heroku.com/articles/platform-api-reference#rate-limits",
        }),
    )
}

pub(super) fn unauthorized(message: &str) -> Answer {
    Answer::error(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The request as [`RecordedRequest`], from its head and its whole body.
pub(super) fn record(parts: &Parts, body: &Bytes) -> RecordedRequest {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

/// The normal answer: `Accept` and key checks, then the endpoint.
pub(super) fn route(
    api_key: &str,
    state: &mut State,
    request: &RecordedRequest,
    conditional: bool,
    looping: bool,
) -> Answer {
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    let is_filter = request.method == "POST" && segments == ["filters", "apps"];
    let variant = if is_filter {
        Some("3.filters")
    } else if segments.get(2) == Some(&"webhooks") {
        Some("3.webhooks")
    } else {
        None
    };
    if !accepts_v3(request.header("accept"), variant) {
        return Answer::json(
            StatusCode::NOT_ACCEPTABLE,
            &json!({
                "id": "not_acceptable",
                "message": "Please specify a version along with Heroku's API MIME type. \
                            For example, `Accept: application/vnd.heroku+json; version=3`.",
                "url": "https://devcenter.heroku.com/articles/platform-api-reference#clients",
            }),
        );
    }
    match request.header("authorization") {
        None => {
            return unauthorized(
                "There were no credentials in your `Authorization` header. \
                 Try `Authorization: Bearer <OAuth access token>`.",
            )
        }
        Some(value) if !bearer_matches(value, api_key) => {
            return unauthorized("Invalid credentials provided.")
        }
        Some(_) => {}
    }
    if let Some(answer) = super::webhooks::route(state, request, &segments) {
        return answer;
    }
    let state: &State = state;

    let get = request.method == "GET";
    let answer = match segments.as_slice() {
        ["pipelines", id_or_name] if get => match state.find_pipeline(id_or_name) {
            Some(pipeline) => Answer::json(StatusCode::OK, &state.pipeline_json(pipeline)),
            None => Answer::not_found("pipeline"),
        },
        ["pipelines", id, "pipeline-couplings"] if get => match state.pipelines.get(*id) {
            Some(pipeline) => {
                let items = state
                    .couplings
                    .values()
                    .filter(|c| c.pipeline_id == pipeline.id)
                    .map(|c| (c.id.clone(), State::coupling_json(c)))
                    .collect();
                list(state, request, items, looping)
            }
            None => Answer::not_found("pipeline"),
        },
        ["apps", id_or_name] if get => match state.find_app(id_or_name) {
            Some(app) => Answer::json(StatusCode::OK, &state.app_json(app)),
            None => Answer::not_found("app"),
        },
        ["apps", id_or_name, "formation"] if get => match state.find_app(id_or_name) {
            Some(app) => {
                let items = app
                    .web
                    .iter()
                    .map(|web| (web.id.clone(), State::formation_json(app, web)))
                    .collect();
                list(state, request, items, looping)
            }
            None => Answer::not_found("app"),
        },
        ["apps", id_or_name, "formation", id_or_type] if get => match state.find_app(id_or_name) {
            Some(app) => match &app.web {
                Some(web) if *id_or_type == "web" || *id_or_type == web.id => {
                    Answer::json(StatusCode::OK, &State::formation_json(app, web))
                }
                _ => Answer::not_found("formation"),
            },
            None => Answer::not_found("app"),
        },
        ["apps", id_or_name, "dynos"] if get => match state.find_app(id_or_name) {
            Some(app) => {
                let items = app
                    .web
                    .iter()
                    .flat_map(|web| State::dynos_json(app, web))
                    .collect();
                list(state, request, items, looping)
            }
            None => Answer::not_found("app"),
        },
        ["filters", "apps"] if is_filter => filter_apps(state, request, looping),
        ["account", "rate-limits"] if get => Answer::json(
            StatusCode::OK,
            &json!({"remaining": state.rate_limit_remaining}),
        ),
        _ => Answer::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The requested API endpoint was not found. Are you using the right HTTP verb \
             (i.e. `GET` vs. `POST`), and did you specify your API version in the `Accept` header?",
        ),
    };
    if get && conditional {
        with_etag(answer, request.header("if-none-match"))
    } else {
        answer
    }
}

/// `application/vnd.heroku+json; version=3` (or the `variant`, such as `version=3.filters`,
/// where the endpoint has one), among possibly several comma-separated media ranges.
fn accepts_v3(accept: Option<&str>, variant: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        let media_type = params.next().unwrap_or_default();
        if !media_type.eq_ignore_ascii_case(MEDIA_TYPE) {
            return false;
        }
        params.any(|param| match param.split_once('=') {
            Some((key, value)) if key.trim().eq_ignore_ascii_case("version") => {
                let value = value.trim().trim_matches('"');
                value == "3" || Some(value) == variant
            }
            _ => false,
        })
    })
}

fn bearer_matches(authorization: &str, api_key: &str) -> bool {
    match authorization.trim().split_once(' ') {
        Some((scheme, token)) => scheme.eq_ignore_ascii_case("bearer") && token.trim() == api_key,
        None => false,
    }
}

/// `POST /filters/apps`: the apps among the ids asked for, paged like every list.
fn filter_apps(state: &State, request: &RecordedRequest, looping: bool) -> Answer {
    let Ok(value) = serde_json::from_str::<Value>(&request.body) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Request body must be valid JSON.",
        );
    };
    let Some(ids) = value
        .pointer("/in/id")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect::<Vec<_>>())
    else {
        return Answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            "Expected a body of the form {\"in\": {\"id\": [...]}}.",
        );
    };
    let apps: Vec<(String, Value)> = state
        .apps
        .values()
        .filter(|app| ids.contains(&app.id.as_str()) && !state.hidden.contains(&app.id))
        .map(|app| (app.id.clone(), state.app_json(app)))
        .collect();
    list(state, request, apps, looping)
}
