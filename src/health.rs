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
//! check is a TCP connect (cheap; catches a dead host) and then a `GET` of the
//! check path with the app's own Host and SNI, verifying certificates with the
//! server's CA settings like real traffic. Pingora's built-in checks use one
//! Host and SNI for every backend, hence this one. Each check wakes an eco
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
use pingora::server::configuration::ServerConf;
use pingora::{Error, ErrorType};
use std::sync::Arc;
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

/// heroku-lb's per-app health check. Cheap to clone: Pingora's load balancer
/// owns one (boxed) and discovery another, to check new backends at once.
#[derive(Clone)]
pub struct AppHealthCheck(Arc<CheckConfig>);

struct CheckConfig {
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
            settings: settings.clone(),
            upstream,
            connector: HttpConnector::new(Some(ConnectorOptions::from_server_conf(server_conf))),
        }))
    }

    /// Check `target` once, record the result on it, count a failure.
    pub async fn check_target(&self, target: &AppTarget) -> Result<(), CheckFailure> {
        let result = match tokio::time::timeout(self.0.settings.timeout, self.probe(target)).await {
            Ok(result) => result,
            Err(_) => Err(CheckFailure::new(
                "timeout",
                format!("timeout after {:?}", self.0.settings.timeout),
            )),
        };
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

    async fn probe(&self, target: &AppTarget) -> Result<(), CheckFailure> {
        let Some(addr) = target.addr() else {
            return Err(CheckFailure::new("unresolved", "hostname does not resolve"));
        };
        // 1. TCP: is anything listening at all?
        tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    CheckFailure::new("refused", "connection refused")
                }
                _ => CheckFailure::new("connect", format!("connect failed: {e}")),
            })?;
        // 2. HTTP with the app's own Host and SNI: is the app itself up?
        let peer = target
            .peer(&self.0.upstream)
            .ok_or_else(|| CheckFailure::new("unresolved", "hostname does not resolve"))?;
        let (mut session, _) = self
            .0
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| classify(&e))?;
        session.set_write_timeout(Some(self.0.settings.timeout));
        session.set_read_timeout(Some(self.0.settings.timeout));
        let mut request = RequestHeader::build("GET", self.0.settings.path.as_bytes(), None)
            .map_err(|e| CheckFailure::new("request", e.to_string()))?;
        for (name, value) in [
            ("Host", target.host_header()),
            ("User-Agent", USER_AGENT),
            ("Connection", "close"),
        ] {
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
        if self.0.settings.passes(status) {
            Ok(())
        } else {
            Err(CheckFailure::new("status", format!("status {status}")))
        }
    }
}

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
