//! A small client for the Heroku Platform API v3: the few calls pipeline
//! discovery makes, with Heroku's headers, paging, conditional requests and
//! rate-limit accounting.
//!
//! Input: [`PipelineSettings`] (base URL, key, timeout). Output: typed
//! resources for `mod.rs`, or an [`ApiError`] naming the method and URL.
//! Every request sends the version-3 `Accept`, `Authorization: Bearer`, and a
//! `User-Agent`, and is bounded in time and size. `RateLimit-Remaining` is read
//! from every answer into [`ApiStats`]. The key is only ever put in the
//! `Authorization` header: errors carry URLs and Heroku's messages, never it.

use crate::config::{ApiKey, PipelineSettings};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, ETAG, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

const ACCEPT_V3: &str = "application/vnd.heroku+json; version=3";
const ACCEPT_FILTERS: &str = "application/vnd.heroku+json; version=3.filters";
/// App webhooks are served under their own variant, as the Heroku CLI asks.
const ACCEPT_WEBHOOKS: &str = "application/vnd.heroku+json; version=3.webhooks";
/// The largest page Heroku serves; fewer pages, fewer requests.
const FIRST_RANGE: &str = "id ..; max=1000";
/// A list longer than this many pages is treated as an error (a looping `Next-Range`).
const MAX_PAGES: usize = 100;
/// Largest body accepted from the API. A page of 1,000 couplings is ~300 KB.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// `GET /pipelines/{id_or_name}`
#[derive(Debug, Clone, Deserialize)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
}

/// `GET /pipelines/{id}/pipeline-couplings` item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Coupling {
    pub app: ResourceId,
    pub stage: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResourceId {
    pub id: String,
}

/// `GET /apps/{id}` (and `POST /filters/apps` items): the fields discovery uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub web_url: Option<String>,
    pub maintenance: bool,
}

/// `GET /apps/{id}/formation/web`
#[derive(Debug, Clone, Deserialize)]
pub struct Formation {
    pub quantity: u32,
}

/// `GET /apps/{id}/webhooks` item, and `POST /apps/{id}/webhooks`'s answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
}

/// `GET /apps/{id}/features/{name}`
#[derive(Debug, Clone, Deserialize)]
pub struct Feature {
    pub enabled: bool,
}

/// What went wrong with one API call.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// No answer: refused, reset, timed out, DNS.
    Transport { what: String, reason: String },
    /// An error status, with Heroku's error id and message when the body had them.
    Status {
        what: String,
        status: u16,
        id: Option<String>,
        message: Option<String>,
    },
    /// An answer that is not what the API documents.
    Body { what: String, reason: String },
}

impl ApiError {
    /// The HTTP status, for errors that have one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transport { what, reason } => write!(f, "{what}: no answer: {reason}"),
            ApiError::Status {
                what,
                status,
                id,
                message,
            } => {
                write!(f, "{what}: status {status}")?;
                if let Some(id) = id {
                    write!(f, " id={id}")?;
                }
                if let Some(message) = message {
                    write!(f, " message=\"{}\"", message.replace('\n', " "))?;
                }
                Ok(())
            }
            ApiError::Body { what, reason } => write!(f, "{what}: unexpected answer: {reason}"),
        }
    }
}

/// Heroku's error body.
#[derive(Deserialize)]
struct HerokuError {
    id: Option<String>,
    message: Option<String>,
}

/// Figures the status page and metrics show about our use of the API.
#[derive(Debug)]
pub struct ApiStats {
    /// Last `RateLimit-Remaining` seen; -1 before the first answer.
    rate_limit_remaining: AtomicI64,
    requests: AtomicU64,
}

impl Default for ApiStats {
    fn default() -> Self {
        ApiStats {
            rate_limit_remaining: AtomicI64::new(-1),
            requests: AtomicU64::new(0),
        }
    }
}

impl ApiStats {
    pub fn rate_limit_remaining(&self) -> Option<u64> {
        u64::try_from(self.rate_limit_remaining.load(Ordering::Relaxed)).ok()
    }

    /// API requests sent since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// An answer to a conditional GET.
pub enum Conditional<T> {
    Fresh { value: T, etag: Option<String> },
    NotModified,
}

/// The Platform API client.
pub struct PlatformApi {
    http: reqwest::Client,
    base: String,
    key: ApiKey,
    timeout: std::time::Duration,
    stats: Arc<ApiStats>,
}

impl PlatformApi {
    pub fn new(settings: &PipelineSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.api_timeout)
            .connect_timeout(settings.api_timeout)
            .user_agent(concat!("heroku-lb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the Platform API client: {e}"))?;
        Ok(PlatformApi {
            http,
            base: settings.api_url.clone(),
            key: settings.api_key.clone(),
            timeout: settings.api_timeout,
            stats: Arc::new(ApiStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<ApiStats> {
        Arc::clone(&self.stats)
    }

    pub async fn pipeline(&self, id_or_name: &str) -> Result<Pipeline, ApiError> {
        let path = format!("/pipelines/{}", path_segment(id_or_name));
        match self.get(&path, None, None).await? {
            (StatusCode::OK, _, body) => parse(&self.what("GET", &path), &body),
            (status, _, body) => Err(self.status_error("GET", &path, status, &body)),
        }
    }

    /// Every coupling of the pipeline, all pages. With `etag` (from a
    /// previous single-page answer), an unchanged list costs one 304.
    pub async fn couplings(
        &self,
        pipeline_id: &str,
        etag: Option<&str>,
    ) -> Result<Conditional<Vec<Coupling>>, ApiError> {
        let path = format!(
            "/pipelines/{}/pipeline-couplings",
            path_segment(pipeline_id)
        );
        self.list(Method::GET, &path, ACCEPT_V3, None, etag).await
    }

    /// Many apps in one request (`POST /filters/apps`, as the Heroku CLI
    /// does), all pages: like every list, its answer may be cut at a page.
    pub async fn apps_by_ids(&self, ids: &[String]) -> Result<Vec<App>, ApiError> {
        let body = serde_json::json!({ "in": { "id": ids } });
        match self
            .list(
                Method::POST,
                "/filters/apps",
                ACCEPT_FILTERS,
                Some(&body),
                None,
            )
            .await?
        {
            Conditional::Fresh { value, .. } => Ok(value),
            // Only sent with an ETag; none was.
            Conditional::NotModified => Ok(Vec::new()),
        }
    }

    /// Every item of a list, following `206` + `Next-Range` page by page, as
    /// Heroku answers every list (a cut list answers 206, its last page 200).
    /// With `etag`, the first page is asked conditionally.
    async fn list<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        accept: &'static str,
        body: Option<&serde_json::Value>,
        etag: Option<&str>,
    ) -> Result<Conditional<Vec<T>>, ApiError> {
        let verb = method.as_str().to_string();
        let what = self.what(&verb, path);
        let mut range = FIRST_RANGE.to_string();
        let mut seen_ranges = Vec::new();
        let mut all = Vec::new();
        for page in 0..MAX_PAGES {
            let mut request = self
                .request(method.clone(), path, accept)
                .header("Range", range.as_str());
            if let (0, Some(etag)) = (page, etag) {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, headers, body) = self.send(&verb, path, request).await?;
            match status {
                StatusCode::NOT_MODIFIED if page == 0 && etag.is_some() => {
                    return Ok(Conditional::NotModified)
                }
                StatusCode::OK => {
                    all.extend(parse::<Vec<T>>(&what, &body)?);
                    // Only a whole list in one page can be revalidated with its ETag.
                    let etag = (page == 0)
                        .then(|| header_str(&headers, ETAG.as_str()))
                        .flatten();
                    return Ok(Conditional::Fresh { value: all, etag });
                }
                StatusCode::PARTIAL_CONTENT => {
                    all.extend(parse::<Vec<T>>(&what, &body)?);
                    let next =
                        header_str(&headers, "next-range").ok_or_else(|| ApiError::Body {
                            what: what.clone(),
                            reason: "206 without a Next-Range header".to_string(),
                        })?;
                    if seen_ranges.contains(&next) {
                        return Err(ApiError::Body {
                            what,
                            reason: format!(
                                "pagination loops: Next-Range '{next}' came back twice"
                            ),
                        });
                    }
                    seen_ranges.push(next.clone());
                    range = next;
                }
                status => return Err(self.status_error(&verb, path, status, &body)),
            }
        }
        Err(ApiError::Body {
            what,
            reason: format!("more than {MAX_PAGES} pages"),
        })
    }

    pub async fn app(&self, id: &str) -> Result<App, ApiError> {
        let path = format!("/apps/{}", path_segment(id));
        match self.get(&path, None, None).await? {
            (StatusCode::OK, _, body) => parse(&self.what("GET", &path), &body),
            (status, _, body) => Err(self.status_error("GET", &path, status, &body)),
        }
    }

    /// The app's web formation; `None` when it has none (404).
    pub async fn web_formation(&self, app_id: &str) -> Result<Option<Formation>, ApiError> {
        let path = format!("/apps/{}/formation/web", path_segment(app_id));
        match self.get(&path, None, None).await? {
            (StatusCode::OK, _, body) => parse(&self.what("GET", &path), &body).map(Some),
            (StatusCode::NOT_FOUND, _, _) => Ok(None),
            (status, _, body) => Err(self.status_error("GET", &path, status, &body)),
        }
    }

    /// The app's webhook subscriptions, all pages.
    pub async fn webhooks(&self, app_id: &str) -> Result<Vec<Webhook>, ApiError> {
        let path = format!("/apps/{}/webhooks", path_segment(app_id));
        match self
            .list(Method::GET, &path, ACCEPT_WEBHOOKS, None, None)
            .await?
        {
            Conditional::Fresh { value, .. } => Ok(value),
            Conditional::NotModified => Ok(Vec::new()),
        }
    }

    /// Subscribe `url` to the app's events of `include`, signed with
    /// `secret`, delivered with retries (`level: sync`).
    pub async fn create_webhook(
        &self,
        app_id: &str,
        url: &str,
        secret: &str,
        include: &[&str],
    ) -> Result<Webhook, ApiError> {
        let path = format!("/apps/{}/webhooks", path_segment(app_id));
        let body = serde_json::json!({
            "include": include,
            "level": "sync",
            "url": url,
            "secret": secret,
        });
        let request = self
            .request(Method::POST, &path, ACCEPT_WEBHOOKS)
            .json(&body);
        match self.send("POST", &path, request).await? {
            (StatusCode::OK | StatusCode::CREATED, _, body) => {
                parse(&self.what("POST", &path), &body)
            }
            (status, _, body) => Err(self.status_error("POST", &path, status, &body)),
        }
    }

    /// Remove one of the app's webhook subscriptions (gone already: fine).
    pub async fn delete_webhook(&self, app_id: &str, webhook_id: &str) -> Result<(), ApiError> {
        let path = format!(
            "/apps/{}/webhooks/{}",
            path_segment(app_id),
            path_segment(webhook_id)
        );
        let request = self.request(Method::DELETE, &path, ACCEPT_WEBHOOKS);
        match self.send("DELETE", &path, request).await? {
            (status, _, _) if status.is_success() || status == StatusCode::NOT_FOUND => Ok(()),
            (status, _, body) => Err(self.status_error("DELETE", &path, status, &body)),
        }
    }

    /// Whether the app has preboot on (`heroku features:enable preboot`):
    /// then a release starts the new dynos before the old ones stop.
    pub async fn preboot(&self, app_id: &str) -> Result<bool, ApiError> {
        let path = format!("/apps/{}/features/preboot", path_segment(app_id));
        match self.get(&path, None, None).await? {
            (StatusCode::OK, _, body) => {
                parse::<Feature>(&self.what("GET", &path), &body).map(|feature| feature.enabled)
            }
            (StatusCode::NOT_FOUND, _, _) => Ok(false),
            (status, _, body) => Err(self.status_error("GET", &path, status, &body)),
        }
    }

    fn what(&self, method: &str, path: &str) -> String {
        format!("{method} {}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str, accept: &'static str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(ACCEPT, accept)
            .header(AUTHORIZATION, format!("Bearer {}", self.key.expose()))
    }

    async fn get(
        &self,
        path: &str,
        range: Option<&str>,
        etag: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ApiError> {
        let mut request = self.request(Method::GET, path, ACCEPT_V3);
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        self.send("GET", path, request).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ApiError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |e: reqwest::Error| ApiError::Transport {
            what: self.what(method, path),
            reason: transport_reason(e, self.timeout),
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(remaining) =
            header_str(&headers, "ratelimit-remaining").and_then(|v| v.parse::<i64>().ok())
        {
            self.stats
                .rate_limit_remaining
                .store(remaining, Ordering::Relaxed);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ApiError::Body {
                    what: self.what(method, path),
                    reason: format!("body larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }

    fn status_error(&self, method: &str, path: &str, status: StatusCode, body: &[u8]) -> ApiError {
        let heroku: Option<HerokuError> = serde_json::from_slice(body).ok();
        ApiError::Status {
            what: self.what(method, path),
            status: status.as_u16(),
            id: heroku.as_ref().and_then(|e| e.id.clone()),
            message: heroku
                .and_then(|e| e.message)
                .map(|m| m.chars().take(200).collect()),
        }
    }
}

/// What a transport error was, with its causes ("connection refused", "timed
/// out after 10s"): reqwest's own message alone ("error sending request")
/// would make a refusal and a stall look the same. The URL is dropped (it is
/// in the error's `what`); the chain never holds headers.
fn transport_reason(e: reqwest::Error, timeout: std::time::Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {timeout:?}");
    }
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    reason
}

fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Body {
        what: what.to_string(),
        reason: format!("not the JSON expected: {e}"),
    })
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value: &HeaderValue| value.to_str().ok())
        .map(str::to_string)
}

/// Percent-encode what cannot stand in a path segment (pipeline names are
/// user-chosen; ids are UUIDs).
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_url_and_herokus_id() {
        let error = ApiError::Status {
            what: "GET https://api.heroku.com/apps/x".into(),
            status: 429,
            id: Some("rate_limit".into()),
            message: Some("Your account reached the API rate limit\nPlease wait".into()),
        };
        let text = error.to_string();
        assert!(text.contains("GET https://api.heroku.com/apps/x"));
        assert!(text.contains("status 429 id=rate_limit"));
        assert!(!text.contains('\n'));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("my pipeline/x"), "my%20pipeline%2Fx");
        assert_eq!(
            path_segment("01234567-89ab-cdef-0123-456789abcdef"),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
    }

    #[test]
    fn apps_parse_with_a_null_web_url_and_extra_fields() {
        let body = br#"[{"id":"a","name":"shop","web_url":null,"maintenance":false,"region":{"name":"us"}}]"#;
        let apps: Vec<App> = parse("test", body).expect("parses");
        assert_eq!(apps[0].web_url, None);
        let wrong: Result<Vec<App>, _> = parse("test", br#"{"unexpected":true}"#);
        assert!(matches!(wrong, Err(ApiError::Body { .. })));
    }
}
