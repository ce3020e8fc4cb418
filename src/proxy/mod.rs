//! The request's path through heroku-lb: Pingora's `ProxyHttp` implementation.
//!
//! Input: each client request, and the `LoadBalancer` that discovery and
//! health checks keep current. Output: the request, sent to one backend app
//! with that app's own `Host` and SNI (Heroku's router picks the app by
//! them), plus the hop headers Heroku's router itself adds, believing a
//! client's own `X-Forwarded-*` only from a trusted hop (`forwarded.rs`); and
//! the app's answer, with its own URLs turned into the client's
//! (`redirects.rs`).
//!
//! Paths under the admin prefix (`/_lb/`) are answered by `status/` and never
//! forwarded. Selection (`selection.rs`) skips backends that are unhealthy,
//! not yet admitted, ejected, unresolved, or already tried by this request,
//! and falls back to panic routing when none is fit. Failures the upstream
//! caused (a refused or dropped connection, a timeout, 5xx) are reported to
//! passive ejection (`ejection.rs`); our own refusals and clients that leave
//! never are. A failure before the app answered is retried on another backend
//! a bounded number of times; a request the app answered (a 101 included) is
//! never retried. Pipelined requests (RFC 9112 §9.3.2) are answered one after
//! another, in order, on the same connection. With nothing to select, the
//! client gets a quick 503. Pingora sets no upstream timeouts by default;
//! ours follow Heroku's router (connect 5 s, 30 s per read, 55 s keep-alive idle).

mod access_log;
mod failures;
mod forwarded;
mod hop_headers;
mod redirects;
mod request_limits;
mod retry_budget;

pub use access_log::TARGET as ACCESS_LOG_TARGET;
pub use forwarded::{IpCidr, TrustedHops};

use crate::backend::{AppTarget, UpgradedConnection};
use crate::config::{Settings, UpstreamSettings};
use crate::ejection::PassiveEjection;
use crate::metrics::metrics;
use crate::selection::{InFlight, Rejection, Selector};
use crate::status::StatusPage;
use crate::sticky::StickyCookie;
use crate::webhooks::WebhookReceiver;
use access_log::{AccessRecord, LineCode};
use async_trait::async_trait;
use failures::{describe, error_status, line_code};
use forwarded::{ClientView, ConnectionPeer};
use hop_headers::{edit_headers, valid_request_id, RequestIds, X_REQUEST_ID};
use log::{debug, log_enabled, warn, Level};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use retry_budget::RetryBudget;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Heroku's router gives a client 30 s to the first byte of its answer
/// (H12): no retry starts that could not end before.
const CLIENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The access line's word for the answer a retry went around.
fn quick_refusal_label(status: u16) -> &'static str {
    match status {
        502 => "a quick 502 from the app",
        503 => "a quick 503 from the app",
        _ => "a quick 504 from the app",
    }
}

/// Set in a peer's `group_key` to force a new connection (see `fresh_retry`);
/// target ids never reach this bit.
const FRESH_CONNECTION_GROUP: u64 = 1 << 63;

/// The header that makes a non-idempotent request safe to retry.
const IDEMPOTENCY_KEY: http::header::HeaderName =
    http::header::HeaderName::from_static("idempotency-key");

/// heroku-lb's proxy.
pub struct AppProxy {
    selector: Arc<Selector>,
    sticky: Option<StickyCookie>,
    status: StatusPage,
    upstream: UpstreamSettings,
    ejection: Arc<PassiveEjection>,
    /// Our own listening port, for `X-Forwarded-Port` when no trusted hop sent one.
    listen_port: http::HeaderValue,
    request_ids: RequestIds,
    /// Whose `X-Forwarded-*` headers are kept.
    trusted_hops: TrustedHops,
    rewrite_redirects: bool,
    /// The balancer's own dyno (`DYNO`), for the access line.
    dyno: Option<String>,
    /// Numbers the pool keys of tries that must use a new connection.
    fresh_connections: std::sync::atomic::AtomicU64,
    /// Bounds the retries of answered requests (`retry_budget.rs`).
    retry_budget: RetryBudget,
    /// Heroku webhook deliveries, when `LB_WEBHOOK_SECRET` is set.
    webhooks: Option<Arc<WebhookReceiver>>,
}

/// Per-request state.
pub struct RequestCtx {
    /// When the request arrived (for `service_ms`).
    started: Instant,
    /// Time to connect (or reuse a connection) on the last try.
    connect_ms: Option<u128>,
    /// Ids of the targets this request was sent to, in order.
    tried: Vec<u64>,
    /// The target of the current (last) try.
    target: Option<Arc<AppTarget>>,
    /// Counts this request at `target` until the try ends (dropped with the ctx).
    in_flight: Option<InFlight>,
    /// The sticky token the client sent, if well formed.
    client_token: Option<String>,
    /// The request id sent upstream, fixed on the first try.
    request_id: Option<http::HeaderValue>,
    /// When the current try's backend was chosen.
    try_started: Option<Instant>,
    /// The status the backend answered, if it answered (101 included: an
    /// upgraded request has its answer).
    upstream_status: Option<u16>,
    /// We refused the backend's answer (a head over our limits): the client
    /// gets 502, the backend is not blamed, the request is not retried.
    refused_answer: bool,
    /// The last try failed to connect (and was logged in `fail_to_connect`).
    connect_failed: bool,
    /// The next try goes to the same target on a new connection: a pooled
    /// one turned out closed before it carried the request (the app or its
    /// router closed it while idle, which says nothing about the app).
    fresh_retry: bool,
    /// A stale pooled connection was retried once already.
    stale_retried: bool,
    /// The upstream read timed out while the client had not sent its whole
    /// body: the client stalled, not the app (answered 408, blames no one).
    client_stalled: bool,
    /// The app's quick 502/503/504 is retried on another app (decided in
    /// `upstream_response_filter`, carried out by `error_while_proxy`).
    retry_5xx: bool,
    /// A duplicate of the upstream socket of a request asking for an
    /// upgrade, kept until the answer says whether it was upgraded.
    upstream_socket: Option<std::os::fd::OwnedFd>,
    /// The upgraded connection, registered on its target so that a drain
    /// can close it (`backend/drain.rs`); dropped with the context.
    upgraded: Option<UpgradedConnection>,
    /// The admission queue turned the request away (503 + Retry-After).
    queue_rejected: Option<Rejection>,
    /// What the last failed try ran into, for the access line.
    last_failure: Option<&'static str>,
    /// We refused the request itself (Heroku's limits, framing).
    refused_request: bool,
    /// An `/_lb/` request, answered by the status page: not proxied, not
    /// counted in the request metrics.
    admin: bool,
    /// The backend was chosen by panic routing.
    panic_routed: bool,
    /// The TCP peer, carried across keep-alive requests on one connection.
    peer: Option<ConnectionPeer>,
    /// The client as this request describes it (set on first use).
    client_view: Option<ClientView>,
}

impl RequestCtx {
    /// The request id for log lines ("-" before it is fixed).
    fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or("-")
    }
}

/// What one request leaves for the next on the same keep-alive connection.
struct ConnectionMemo {
    peer: ConnectionPeer,
}

impl AppProxy {
    /// Upstream timeouts, the listening port, the trusted hops (every peer on
    /// a dyno) and redirect rewriting come from `settings`.
    pub fn new(
        selector: Arc<Selector>,
        sticky: Option<StickyCookie>,
        status: StatusPage,
        ejection: Arc<PassiveEjection>,
        settings: &Settings,
    ) -> Self {
        AppProxy {
            selector,
            sticky,
            status,
            upstream: settings.upstream.clone(),
            ejection,
            listen_port: http::HeaderValue::from(settings.listen_port),
            request_ids: RequestIds::default(),
            trusted_hops: TrustedHops::new(
                settings.trusted_proxies.clone(),
                settings.dyno.is_some(),
            ),
            rewrite_redirects: settings.rewrite_redirects,
            dyno: settings.dyno.clone(),
            fresh_connections: std::sync::atomic::AtomicU64::new(0),
            retry_budget: RetryBudget::default(),
            webhooks: None,
        }
    }

    /// Receive Heroku webhook deliveries with `receiver`.
    pub fn with_webhooks(mut self, receiver: Arc<WebhookReceiver>) -> Self {
        self.webhooks = Some(receiver);
        self
    }

    /// The client as this request describes it, worked out once per request
    /// (the peer once per connection).
    fn client_view<'c>(&self, session: &Session, ctx: &'c mut RequestCtx) -> &'c ClientView {
        if ctx.peer.is_none() {
            ctx.peer = session
                .client_addr()
                .and_then(|addr| addr.as_inet())
                .map(|addr| ConnectionPeer::new(addr.ip(), &self.trusted_hops));
        }
        let peer = ctx.peer.as_ref();
        ctx.client_view
            .get_or_insert_with(|| ClientView::of(session.req_header(), peer, &self.trusted_hops))
    }

    /// Whether an answered 502/503/504 goes to another app: an idempotent
    /// request (GET, HEAD, OPTIONS, or one with an `Idempotency-Key`) whose
    /// answer came within `retry_5xx_within` of sending it (Heroku's router
    /// refuses at once while an app restarts; its H12 after 30 s never
    /// qualifies), that another fit app has not seen, with time left before
    /// the client's 30 s, and within the retry budget.
    fn retries_quick_refusal(&self, session: &Session, ctx: &RequestCtx) -> bool {
        let within = self.upstream.retry_5xx_within;
        let quick = ctx
            .try_started
            .is_some_and(|started| started.elapsed() <= within);
        if within.is_zero() || !quick {
            return false;
        }
        let request = session.req_header();
        let idempotent = request.method.is_safe() || request.headers.contains_key(IDEMPOTENCY_KEY);
        if !idempotent
            || session.as_ref().retry_buffer_truncated()
            || ctx.tried.len() > self.upstream.connect_retries
            || ctx.started.elapsed() + within >= CLIENT_DEADLINE
            || !self.selector.has_fit_untried(&ctx.tried)
        {
            return false;
        }
        let reason = if self.retry_budget.try_retry() {
            "5xx_answer"
        } else {
            "budget_exhausted"
        };
        metrics().retries.with_label_values(&[reason]).inc();
        reason == "5xx_answer"
    }

    /// The next backend for this request and its place there: its sticky
    /// backend when usable, else the policy's pick among those not tried
    /// yet, within each backend's cap.
    fn select(&self, ctx: &RequestCtx) -> Option<(Arc<AppTarget>, InFlight)> {
        match (&self.sticky, &ctx.client_token) {
            (Some(sticky), Some(token)) => {
                let preferred = |target: &AppTarget| sticky.token(target) == token.as_str();
                self.selector.pick_and_enter(&ctx.tried, Some(&preferred))
            }
            _ => self.selector.pick_and_enter(&ctx.tried, None),
        }
    }

    /// [`AppProxy::select`], waiting in the admission queue when backends
    /// are capped: a first try that finds every fit backend at its cap, or
    /// none routable, waits its turn behind those already waiting (a retry
    /// never waits: it has somewhere else to be answered). An error is the
    /// quick 503 the client gets.
    async fn select_entered(&self, ctx: &mut RequestCtx) -> Result<(Arc<AppTarget>, InFlight)> {
        let queue = self.selector.queue().filter(|_| ctx.tried.is_empty());
        let Some(queue) = queue else {
            return self.select(ctx).ok_or_else(|| {
                let why = if ctx.tried.is_empty() {
                    "no backend available"
                } else {
                    "no other backend to retry on"
                };
                Error::explain(ErrorType::HTTPStatus(503), why)
            });
        };
        if queue.is_empty() {
            if let Some(chosen) = self.select(ctx) {
                return Ok(chosen);
            }
        }
        let waited = Instant::now();
        let outcome = queue.wait(|| self.select(ctx)).await;
        metrics().queue_wait.observe(waited.elapsed().as_secs_f64());
        outcome.map_err(|rejection| {
            ctx.queue_rejected = Some(rejection);
            let why = match rejection {
                Rejection::Full => "the admission queue is full",
                Rejection::TimedOut => "waited in the admission queue for its whole timeout",
            };
            metrics()
                .queue_rejections
                .with_label_values(&[match rejection {
                    Rejection::Full => "full",
                    Rejection::TimedOut => "timeout",
                }])
                .inc();
            Error::explain(ErrorType::HTTPStatus(503), why)
        })
    }
}

#[async_trait]
impl ProxyHttp for AppProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            connect_ms: None,
            tried: Vec::new(),
            target: None,
            in_flight: None,
            client_token: None,
            request_id: None,
            try_started: None,
            upstream_status: None,
            refused_answer: false,
            connect_failed: false,
            fresh_retry: false,
            stale_retried: false,
            client_stalled: false,
            retry_5xx: false,
            upstream_socket: None,
            upgraded: None,
            queue_rejected: None,
            last_failure: None,
            refused_request: false,
            admin: false,
            panic_routed: false,
            peer: None,
            client_view: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Answer requests a client pipelined, in order, instead of closing
        // the connection on them (Pingora's default). The setting carries
        // over to the next request on the connection.
        if !session.as_ref().pipelining_enabled() {
            session.as_mut().set_pipelining_enabled(true);
        }
        // Fixed once per request, so retries and the access line share it.
        let incoming = session
            .req_header()
            .headers
            .get(X_REQUEST_ID)
            .filter(|id| id.to_str().is_ok_and(valid_request_id));
        ctx.request_id = Some(match incoming {
            Some(id) => id.clone(),
            None => self.request_ids.next(),
        });
        if let Some(sticky) = &self.sticky {
            ctx.client_token = sticky.find(
                session
                    .req_header()
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter(),
            );
        }
        let raw_head = || session.as_ref().to_h1_raw();
        if let Some((code, why)) = request_limits::refusal(session.req_header(), raw_head) {
            warn!(
                "refused request_id={} status={code} reason=\"{why}\"",
                ctx.request_id()
            );
            ctx.refused_request = true;
            // The framing may not be trusted: answer, then close.
            session.set_keepalive(None);
            session.respond_error(code).await?;
            return Ok(true);
        }
        if request_limits::stray_upgrade(session.req_header()) {
            session
                .req_header_mut()
                .remove_header(&http::header::UPGRADE);
        }
        if let Some(webhooks) = &self.webhooks {
            if webhooks.owns(session.req_header().uri.path()) {
                ctx.admin = true;
                return webhooks.receive(session).await;
            }
        }
        if self.status.owns(session.req_header().uri.path()) {
            ctx.admin = true;
            // The caller as a trusted hop names it, not the hop itself: a
            // same-host proxy forwarding for a stranger is not loopback.
            let caller = self.client_view(session, ctx).client_ip();
            return self.status.serve(session, caller).await;
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let fresh_retry = std::mem::take(&mut ctx.fresh_retry);
        let (target, in_flight) = match (&ctx.target, fresh_retry) {
            // The same app on a new connection: its slot is kept.
            (Some(target), true) => (Arc::clone(target), None),
            _ => {
                // A retry gives up the slot of the try before it.
                ctx.in_flight = None;
                let (target, in_flight) = self.select_entered(ctx).await?;
                (target, Some(in_flight))
            }
        };
        let Some(mut peer) = target.peer(&self.upstream) else {
            // Lost its address between selection and here: treat like a refusal.
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "backend address vanished",
            ));
        };
        if ctx.tried.is_empty() && !fresh_retry {
            self.retry_budget.request();
        }
        if fresh_retry {
            // A pool key of its own that no other try uses: Pingora's pool
            // cannot hand back a pooled connection, so this try gets a new
            // one; closed after the request (no idle time) rather than left
            // in the pool under a key nobody asks for.
            peer.group_key =
                FRESH_CONNECTION_GROUP | self.fresh_connections.fetch_add(1, Ordering::Relaxed);
            peer.options.idle_timeout = Some(std::time::Duration::ZERO);
        } else {
            ctx.tried.push(target.id());
        }
        debug!(
            "request_id={} try={} app={} url={} addr={}",
            ctx.request_id(),
            ctx.tried.len(),
            target.name(),
            target.url(),
            peer.address()
        );
        target.count_request();
        if in_flight.is_some() {
            ctx.in_flight = in_flight;
        }
        ctx.target = Some(target);
        ctx.try_started = Some(Instant::now());
        ctx.connect_failed = false;
        ctx.panic_routed = self.selector.in_panic();
        ctx.upstream_status = None;
        ctx.refused_answer = false;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(target) = ctx.target.as_ref() else {
            return Err(Error::explain(ErrorType::InternalError, "no target chosen"));
        };
        let host = target.host_value().clone();
        self.client_view(session, ctx);
        let Some(client) = &ctx.client_view else {
            return Err(Error::explain(ErrorType::InternalError, "no client view"));
        };
        edit_headers(upstream_request, |headers| {
            headers.insert(http::header::HOST, host);
            if let Some(sticky) = &self.sticky {
                strip_sticky_cookie(sticky, headers);
            }
            client.set_headers(&session.req_header().headers, headers, &self.listen_port)?;
            if let Some(id) = &ctx.request_id {
                headers.insert(X_REQUEST_ID, id.clone());
            }
            Ok(())
        })
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // 1xx answers precede the real one, except 101: the upgraded
        // connection is the answer.
        let status = upstream_response.status.as_u16();
        if upstream_response.status.is_informational() && status != 101 {
            return Ok(());
        }
        if let Some(why) = request_limits::response_refusal(upstream_response) {
            ctx.refused_answer = true;
            let mut e = Error::explain(ErrorType::InvalidHTTPHeader, why);
            e.esource = ErrorSource::Upstream;
            return Err(e);
        }
        if let Some(target) = &ctx.target {
            if let Some(started) = ctx.try_started {
                let latency = started.elapsed();
                target.metrics.observe_latency(latency.as_secs_f64());
                self.selector.observe(target, latency, status >= 500);
            }
            self.ejection.answered(target, status);
        }
        if matches!(status, 502..=504) && self.retries_quick_refusal(session, ctx) {
            ctx.retry_5xx = true;
            ctx.last_failure = Some(quick_refusal_label(status));
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                "the app's router refused at once; retried on another app",
            );
            e.esource = ErrorSource::Upstream;
            return Err(e);
        }
        ctx.upstream_status = Some(status);
        if status == 101 {
            if let (Some(socket), Some(target)) = (ctx.upstream_socket.take(), &ctx.target) {
                ctx.upgraded = Some(target.register_upgraded(socket));
            }
        } else {
            ctx.upstream_socket = None;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.target.is_none() || (self.sticky.is_none() && !self.rewrite_redirects) {
            return Ok(());
        }
        self.client_view(session, ctx);
        let (Some(target), Some(client)) = (&ctx.target, &ctx.client_view) else {
            return Ok(());
        };
        if self.rewrite_redirects {
            redirects::Rewrite::new(target.url(), client.scheme, client.host())
                .response(response)?;
        }
        let Some(sticky) = &self.sticky else {
            return Ok(());
        };
        let token = sticky.token(target);
        if ctx.client_token.as_deref() != Some(token) {
            // Only a trusted hop (Heroku's router) tells us the client's scheme.
            let secure = client.scheme == "https";
            // Appended: the app's own Set-Cookie headers stay beside ours.
            response.append_header("Set-Cookie", sticky.set_cookie(token, secure))?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = ctx.tried.len() <= self.upstream.connect_retries;
        if let Some(target) = &ctx.target {
            if let Some(started) = ctx.try_started {
                self.selector.observe(target, started.elapsed(), true);
            }
            target
                .counters
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            self.ejection
                .connection_failed(target, &format!("connect failed: {}", e.etype().as_str()));
            warn!(
                "connect failed app={} url={} addr={} error=\"{}\" retry={retry}",
                target.name(),
                target.url(),
                peer.address(),
                e.etype().as_str()
            );
        }
        ctx.connect_failed = true;
        ctx.last_failure = Some(e.etype().as_str());
        // Nothing was sent yet, so any request may go to another backend.
        if retry {
            metrics()
                .retries
                .with_label_values(&["connect_failed"])
                .inc();
        }
        e.set_retry(retry);
        e
    }

    /// An error after connecting, before the app answered. Pingora retries
    /// only errors on reused connections; we decide ourselves:
    /// - the client stalled (the upstream read timed out while the request
    ///   body was incomplete): the client's fault, as Envoy sees it (its
    ///   upstream timeout starts once the request is complete). Answered
    ///   408, counted against no app, never retried;
    /// - a pooled connection that turned out closed (the app or its router
    ///   closed it while idle) says nothing about the app: an idempotent
    ///   request goes once more to the same app on a new connection, so a
    ///   single-app balancer or a sticky user is not moved;
    /// - a new connection the app closed or reset without answering is one
    ///   failure toward `passive_5xx_threshold` (a crashing request would
    ///   otherwise eject every app it is retried on), and an idempotent
    ///   request is retried on another app;
    /// - a read timeout is not retried: the app may still be working on it,
    ///   and a second try would double the wait.
    ///
    /// A request the app answered is never retried: after a 101 the retry
    /// buffer holds the client's first WebSocket frames, and after any
    /// answer a second one cannot be sent.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Heroku's router refused at once (decided in upstream_response_filter).
        if std::mem::take(&mut ctx.retry_5xx) {
            e.set_retry(true);
            return e;
        }
        // The client went away: nothing to retry, and not the app's fault.
        if e.esource() == &ErrorSource::Downstream {
            e.set_retry(false);
            return e;
        }
        // Answered (or its answer refused by us): the app is not to blame
        // for our refusal, and nothing may be sent twice.
        if ctx.upstream_status.is_some() || ctx.refused_answer {
            e.set_retry(false);
            return e;
        }
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        if timed_out && !session.as_mut().is_body_done() {
            ctx.client_stalled = true;
            e.set_retry(false);
            return e;
        }
        // Only failures the upstream caused count against it (not, say,
        // Pingora's own refusal of an answer it cannot pass on).
        let upstream_fault = e.esource() == &ErrorSource::Upstream;
        if let (true, Some(target)) = (upstream_fault, &ctx.target) {
            if let Some(started) = ctx.try_started {
                self.selector.observe(target, started.elapsed(), true);
            }
            if timed_out {
                self.ejection.timed_out(target);
            } else if !client_reused {
                self.ejection.failed_before_answer(
                    target,
                    &format!("closed before answering: {}", e.etype().as_str()),
                );
            }
        }
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if !replayable || timed_out {
            e.set_retry(false);
        } else if client_reused && !ctx.stale_retried {
            metrics()
                .retries
                .with_label_values(&["stale_connection"])
                .inc();
            ctx.stale_retried = true;
            ctx.fresh_retry = true;
            e.set_retry(true);
        } else if ctx.tried.len() <= self.upstream.connect_retries {
            metrics()
                .retries
                .with_label_values(&["failed_before_answer"])
                .inc();
            ctx.last_failure = Some(e.etype().as_str());
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        let peer = ctx.peer.clone()?;
        Some(Box::new(ConnectionMemo { peer }))
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        previous: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(memo) = previous.downcast::<ConnectionMemo>() {
            ctx.peer = Some(memo.peer);
        }
    }

    /// A client that hangs up or stalls is not an error of ours: its access
    /// line says so already, and Pingora's own error line would shout about it.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        ctx.client_stalled
            || error.esource() == &ErrorSource::Downstream
                && matches!(
                    error.etype(),
                    ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
                )
    }

    /// The request as Pingora's own error lines name it: method, path and
    /// Host, never the query string (it may carry tokens).
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let request = session.req_header();
        let host = header_str(request, http::header::HOST).unwrap_or("-");
        format!("{} {}, Host: {host}", request.method, request.uri.path())
    }

    /// Connect failures are logged above, once, with the app, and a stale
    /// pooled connection retried on a new one is routine: Pingora's own
    /// retry warning would say the same again, or shout about nothing.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
            && (ctx.connect_failed || ctx.fresh_retry)
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.connect_ms = ctx.try_started.map(|started| started.elapsed().as_millis());
        #[cfg(unix)]
        if session.is_upgrade_req() {
            // SAFETY: Pingora passes the descriptor of the upstream socket
            // it holds open for the whole of this call; we only duplicate
            // it (dup(2)) into a descriptor of our own, closed when we drop it.
            let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            ctx.upstream_socket = socket.try_clone_to_owned().ok();
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(target) = &ctx.target {
            target.metrics.count(ctx.upstream_status);
        }
        let code = match e {
            Some(_) if ctx.client_stalled => Some(LineCode::ClientTimeout),
            Some(_) if ctx.queue_rejected == Some(Rejection::Full) => Some(LineCode::QueueFull),
            Some(_) if ctx.queue_rejected == Some(Rejection::TimedOut) => {
                Some(LineCode::QueueTimeout)
            }
            Some(e) => Some(line_code(e, ctx.refused_answer, ctx.last_failure.is_some())),
            None if ctx.refused_request => Some(LineCode::RequestRefused),
            None if ctx.panic_routed => Some(LineCode::PanicRouting),
            None => None,
        };
        let status = match (session.response_written(), code) {
            (Some(response), _) => response.status.as_u16(),
            // nginx's 499: the client left before any answer.
            (None, Some(LineCode::ClientClosed)) => 499,
            (None, _) => 0,
        };
        let elapsed = ctx.started.elapsed();
        if !ctx.admin {
            let m = metrics();
            m.request_duration.observe(elapsed.as_secs_f64());
            // Answered by us rather than by an app: a refused request, or a
            // failure before the app's answer.
            let ours = ctx.refused_request || (e.is_some() && ctx.upstream_status.is_none());
            if ours && (400..600).contains(&status) {
                m.own_responses
                    .with_label_values(&[status_label(status)])
                    .inc();
            }
        }
        let level = match code {
            Some(code) if code.is_error() => Level::Error,
            _ => Level::Info,
        };
        if !log_enabled!(target: access_log::TARGET, level) {
            return;
        }
        // The client as a trusted hop saw it, else the peer (`forwarded.rs`).
        let view = self.client_view(session, ctx);
        let fwd = view.client.clone();
        let protocol = view.scheme;
        let fwd = fwd.as_deref().unwrap_or("");
        let request = session.req_header();
        let host = header_str(request, http::header::HOST).unwrap_or("");
        let detail = e.map(|e| describe(e, ctx.last_failure));
        let record = AccessRecord {
            code,
            detail: detail.as_deref(),
            method: request.method.as_str(),
            path: request.uri.path(),
            host,
            request_id: ctx.request_id.as_ref().and_then(|id| id.to_str().ok()),
            fwd,
            dyno: self.dyno.as_deref(),
            connect_ms: ctx.connect_ms,
            service_ms: elapsed.as_millis(),
            status,
            bytes: session.body_bytes_sent(),
            protocol,
            backend: ctx.target.as_ref().map(|target| target.url_text()),
            app: ctx.target.as_ref().map(|target| target.name()),
        };
        crate::logging::request_line(access_log::TARGET, level, &|line| record.write(line));
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // The client stopped sending its body: 408, as nginx's
        // client_body_timeout and HAProxy's timeout http-request answer.
        let code = if ctx.client_stalled {
            408
        } else {
            error_status(e)
        };
        if ctx.queue_rejected.is_some() {
            // Tell the client when to come back, as a queue that is full or
            // too slow should (RFC 9110 §10.2.3).
            if let Err(write_error) = respond_retry_later(session).await {
                warn!("could not send the 503 response: {write_error}");
            }
            return FailToProxy {
                error_code: 503,
                can_reuse_downstream: false,
            };
        }
        if code > 0 {
            if let Err(write_error) = session.respond_error(code).await {
                warn!("could not send the {code} error response: {write_error}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

/// Remove our sticky cookie from the request's `Cookie` headers, on bytes:
/// headers without it are left exactly as they came, and the app's cookies
/// in a header with it keep their bytes and order.
fn strip_sticky_cookie(sticky: &StickyCookie, headers: &mut http::HeaderMap) {
    let cookies = headers.get_all(http::header::COOKIE);
    let mut rewritten = None;
    for (index, value) in cookies.iter().enumerate() {
        if let Some(rest) = sticky.strip(value.as_bytes()) {
            rewritten.get_or_insert_with(Vec::new).push((index, rest));
        }
    }
    let Some(rewritten) = rewritten else {
        return;
    };
    let mut kept = Vec::new();
    for (index, value) in cookies.iter().enumerate() {
        match rewritten.iter().find(|(at, _)| *at == index) {
            None => kept.push(value.clone()),
            Some((_, rest)) if rest.is_empty() => {}
            // Bytes of a valid value joined by "; ": valid too; keep the
            // original rather than lose the app's cookies if not.
            Some((_, rest)) => {
                kept.push(http::HeaderValue::from_bytes(rest).unwrap_or_else(|_| value.clone()))
            }
        }
    }
    headers.remove(http::header::COOKIE);
    for value in kept {
        headers.append(http::header::COOKIE, value);
    }
}

/// 503 with `Retry-After: 1`, for a request the admission queue turned away.
async fn respond_retry_later(session: &mut Session) -> Result<()> {
    let mut response = ResponseHeader::build(503, Some(3))?;
    response.insert_header("Retry-After", "1")?;
    response.insert_header("Content-Length", "0")?;
    response.insert_header("Cache-Control", "private, no-store")?;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(response), true)
        .await
}

/// A status code as a metric label, without formatting on the request path.
fn status_label(status: u16) -> &'static str {
    match status {
        400 => "400",
        404 => "404",
        408 => "408",
        405 => "405",
        414 => "414",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

/// A request header's value as text, if it is present and visible ASCII.
fn header_str(request: &RequestHeader, name: http::header::HeaderName) -> Option<&str> {
    request
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
}
