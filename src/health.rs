//! Active health of each backend app: [`AppHealthCheck`], the `HealthCheck`
//! Pingora's `HealthCheckService` runs every `HEALTH_CHECK_INTERVAL` over all
//! backends in parallel, on its own schedule (a stalled discovery round never
//! delays it), and that discovery runs at once on new ones. Its
//! `HealthRegistry` keys health by app (`backend::health_key`), not by
//! Pingora's (address, weight), so scaling an app keeps its health.
//!
//! Input: the `Backend`s discovery publishes (each carrying its `AppTarget`).
//! Output: Pingora's health flag (rise/fall thresholds), the target's last
//! result for status, failure metrics by reason, and the end of a passive
//! ejection (`backend.rs`; the ejection itself happens in `proxy.rs`).
//!
//! Behind Heroku's router a TCP connect only proves the router is up: it
//! answers 503 for crashed apps, apps without web dynos and maintenance. So a
//! check is a `GET` of the check path with the app's own Host and SNI, verifying certificates with the
//! server's CA settings like real traffic. Pingora's built-in checks use one
//! Host and SNI for every backend, hence this one. The check's connection is
//! kept alive for the next check (Pingora's `reuse_connection`): behind
//! Heroku's router every request still reaches the app, so a kept connection
//! hides nothing, and a new TLS handshake per app every 5 s (200 a second at
//! 1,000 apps) would cost the balancer and the router for nothing. Each check wakes an eco
//! dyno and spends its hours: raise the interval for eco apps.

use crate::backend::{AppTarget, CheckOutcome};
use crate::config::{HealthSettings, UpstreamSettings};
use crate::metrics::metrics;
use async_trait::async_trait;
use pingora::connectors::http::Connector as HttpConnector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend;
use pingora::protocols::http::client::HttpSession;
use pingora::server::configuration::ServerConf;
use pingora::{Error, ErrorType};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

const USER_AGENT: &str = concat!("heroku-lb-health-check/", env!("CARGO_PKG_VERSION"));

/// Why a check failed: a short label (bounded set, used in metrics) and a detail.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckFailure {
    pub reason: &'static str,
    pub detail: String,
}

impl CheckFailure {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        CheckFailure {
            reason,
            detail: detail.into(),
        }
    }
}

/// What the dynos sharing a store (`store/`) say about one app's check.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedOutcome {
    /// No store, or this dyno holds the lease: probe.
    ProbeYourself,
    /// Another dyno checks: its last outcome.
    Checked { ok: bool, detail: String },
    /// Another dyno checks, and has not checked this app yet.
    NotYet,
}

/// Health checks shared by several balancer dynos: only the lease holder
/// probes; the others take its outcomes (`store/`, which implements this).
pub trait SharedChecks: Send + Sync {
    /// Whether to probe the app at `url`, or what the lease holder found.
    fn outcome(&self, url: &str) -> SharedOutcome;
    /// This dyno probed the app at `url`: tell the others.
    fn checked(&self, url: &str, ok: bool, detail: &str);
}

/// heroku-lb's per-app health check. Cheap to clone: Pingora's load balancer
/// owns one (boxed) and discovery another, to check new backends at once.
#[derive(Clone)]
pub struct AppHealthCheck(Arc<CheckConfig>);

struct CheckConfig {
    /// When several dynos share a store: whose probe counts (set once, at
    /// start, before any check runs).
    shared: OnceLock<Arc<dyn SharedChecks>>,
    settings: HealthSettings,
    /// Peer settings for checks: the proxy's, with the check timeout.
    upstream: UpstreamSettings,
    /// Built from the server conf, so `ca_file` / `SSL_CERT_FILE` apply.
    connector: HttpConnector,
}

impl AppHealthCheck {
    /// A check with `settings` (defaults: `GET /`, 2 s timeout, 2xx/3xx pass,
    /// rise 2, fall 2), connecting like the proxy does under `server_conf`.
    pub fn new(
        settings: &HealthSettings,
        upstream: &UpstreamSettings,
        server_conf: &ServerConf,
    ) -> Self {
        let mut upstream = upstream.clone();
        upstream.connect_timeout = settings.timeout.min(upstream.connect_timeout);
        upstream.first_byte_timeout = settings.timeout;
        AppHealthCheck(Arc::new(CheckConfig {
            shared: OnceLock::new(),
            settings: settings.clone(),
            upstream,
            connector: HttpConnector::new(Some(ConnectorOptions::from_server_conf(server_conf))),
        }))
    }

    /// Share checks through `shared` (every clone of this check does):
    /// probe only while it says so, else take the lease holder's outcomes.
    /// A second call changes nothing.
    pub fn share_with(&self, shared: Arc<dyn SharedChecks>) {
        let _ = self.0.shared.set(shared);
    }

    /// Check `target` once (or take the lease holder's check of it), record
    /// the result on it, count a failure.
    pub async fn check_target(&self, target: &AppTarget) -> Result<(), CheckFailure> {
        let shared = self.0.shared.get();
        match shared.map_or(SharedOutcome::ProbeYourself, |shared| {
            shared.outcome(target.url_text())
        }) {
            SharedOutcome::ProbeYourself => {}
            SharedOutcome::NotYet => {
                return Err(CheckFailure::new(
                    "shared",
                    "not checked by the lease holder yet",
                ))
            }
            SharedOutcome::Checked { ok, detail } => {
                let outcome = CheckOutcome {
                    ok,
                    detail: detail.clone(),
                    at: SystemTime::now(),
                };
                target.record_check(outcome, self.0.settings.rise, self.0.settings.fall);
                return if ok {
                    Ok(())
                } else {
                    Err(CheckFailure::new("shared", detail))
                };
            }
        }
        let result = match tokio::time::timeout(self.0.settings.timeout, self.probe(target)).await {
            Ok(result) => result,
            Err(_) => Err(CheckFailure::new(
                "timeout",
                format!("timeout after {:?}", self.0.settings.timeout),
            )),
        };
        if let Some(shared) = shared {
            let detail = match &result {
                Ok(()) => "ok",
                Err(failure) => failure.detail.as_str(),
            };
            shared.checked(target.url_text(), result.is_ok(), detail);
        }
        let outcome = CheckOutcome {
            ok: result.is_ok(),
            detail: match &result {
                Ok(()) => "ok".to_string(),
                Err(failure) => failure.detail.clone(),
            },
            at: SystemTime::now(),
        };
        target.record_check(outcome, self.0.settings.rise, self.0.settings.fall);
        if let Err(failure) = &result {
            metrics()
                .health_check_failures
                .with_label_values(&[target.name(), failure.reason])
                .inc();
        }
        result
    }

    /// One check: `GET` the check path with the app's own Host and SNI over a
    /// kept-alive connection, or a new one. A kept connection that fails
    /// before an answer (the router closed it while idle) is not the app's
    /// fault: the check is made once more on a new connection.
    async fn probe(&self, target: &AppTarget) -> Result<(), CheckFailure> {
        let peer = target
            .peer(&self.0.upstream)
            .ok_or_else(|| CheckFailure::new("unresolved", "hostname does not resolve"))?;
        let connector = &self.0.connector;
        let (session, reused) = connector
            .get_http_session(&peer)
            .await
            .map_err(|e| classify(&e))?;
        let (status, session) = match self.exchange(session, target).await {
            Ok(answered) => answered,
            Err(_) if reused => {
                let (session, _) = connector
                    .get_http_session(&peer)
                    .await
                    .map_err(|e| classify(&e))?;
                self.exchange(session, target).await?
            }
            Err(failure) => return Err(failure),
        };
        if let Some(session) = session {
            connector
                .release_http_session(session, &peer, Some(self.0.upstream.idle_timeout))
                .await;
        }
        if self.0.settings.passes(status) {
            Ok(())
        } else {
            Err(CheckFailure::new("status", format!("status {status}")))
        }
    }

    /// Send the check request on `session` and read the answer: its status,
    /// and the session when it may be kept (the whole body read, at most
    /// [`MAX_KEPT_BODY`] bytes).
    async fn exchange(
        &self,
        mut session: HttpSession,
        target: &AppTarget,
    ) -> Result<(u16, Option<HttpSession>), CheckFailure> {
        session.set_write_timeout(Some(self.0.settings.timeout));
        session.set_read_timeout(Some(self.0.settings.timeout));
        let mut request = RequestHeader::build("GET", self.0.settings.path.as_bytes(), None)
            .map_err(|e| CheckFailure::new("request", e.to_string()))?;
        for (name, value) in [("Host", target.host_header()), ("User-Agent", USER_AGENT)] {
            request
                .insert_header(name, value)
                .map_err(|e| CheckFailure::new("request", e.to_string()))?;
        }
        session
            .write_request_header(Box::new(request))
            .await
            .map_err(|e| classify(&e))?;
        session
            .finish_request_body()
            .await
            .map_err(|e| classify(&e))?;
        session
            .read_response_header()
            .await
            .map_err(|e| classify(&e))?;
        let status = session
            .response_header()
            .map(|response| response.status.as_u16())
            .ok_or_else(|| CheckFailure::new("protocol", "no response header"))?;
        // The body is read (not judged) so that the connection can carry the next check.
        let mut read = 0;
        while read <= MAX_KEPT_BODY {
            match session.read_response_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => break,
                // Answered: the status stands; only the connection is lost.
                Err(_) => return Ok((status, None)),
            }
        }
        // Pingora's release keeps it only if both sides allow keep-alive.
        let keep = read <= MAX_KEPT_BODY && session.response_done();
        Ok((status, keep.then_some(session)))
    }
}

/// Check answers with a longer body are not read to the end: their
/// connection is closed instead of kept for the next check.
const MAX_KEPT_BODY: usize = 64 * 1024;

/// Sort a connector error into a reason label.
fn classify(e: &Error) -> CheckFailure {
    let reason = match e.etype() {
        ErrorType::ConnectRefused => "refused",
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => "timeout",
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::TLSWantX509Lookup => {
            "tls"
        }
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => "reset",
        ErrorType::InvalidHTTPHeader => "protocol",
        _ => "other",
    };
    let detail = match reason {
        "refused" => "connection refused".to_string(),
        "timeout" => format!("timeout ({})", e.etype().as_str()),
        "tls" => format!("TLS error: {}", e.root_cause()),
        _ => e.to_string(),
    };
    CheckFailure::new(reason, detail)
}

#[async_trait]
impl HealthCheck for AppHealthCheck {
    async fn check(&self, backend: &Backend) -> pingora::Result<()> {
        let Some(target) = AppTarget::of(backend) else {
            return Error::e_explain(ErrorType::InternalError, "backend without an AppTarget");
        };
        self.check_target(target).await.map_err(|failure| {
            Error::explain(ErrorType::Custom("health check failed"), failure.detail)
        })
    }

    /// Pingora logs each transition once with this summary and our error.
    fn backend_summary(&self, backend: &Backend) -> String {
        match AppTarget::of(backend) {
            Some(target) => format!("backend app={} url={}", target.name(), target.url()),
            None => format!("backend {backend:?}"),
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        let threshold = if success {
            self.0.settings.rise
        } else {
            self.0.settings.fall
        };
        threshold.max(1) as usize
    }
}
