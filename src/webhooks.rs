//! Heroku app webhooks, received at `POST {admin prefix}hooks/heroku` when
//! `LB_WEBHOOK_SECRET` is set: push discovery, so a deploy, a scale or a
//! dyno coming up is seen within a second instead of at the next poll.
//!
//! Input: the deliveries Heroku's webhook service posts (`api:formation`,
//! `api:release`, `api:app`, `dyno`), answered by the proxy's
//! `request_filter` and never forwarded. Output: a "look at this app now"
//! request for discovery (`discovery/lookups.rs`), which makes one or two
//! API calls for that app on a round it runs at once; the last delivery
//! and counts by outcome for status and metrics.
//!
//! Each delivery carries `Heroku-Webhook-Hmac-SHA256`: the base64
//! HMAC-SHA256 of the raw body under the subscription's secret. It is
//! verified over the raw bytes, in constant time (ring's `hmac::verify`),
//! before anything in the body is read. Anything else gets 401, a body over
//! [`MAX_BODY`] 413; refusals are logged at most once a minute, never with
//! the body. Heroku retries deliveries (`level: sync`) and they may come
//! twice or out of order, so an event is never applied as it says: its
//! `webhook_metadata.delivery.id` drops repeats, and it only names an app
//! and what to look at; the Platform API says what is true now.

use crate::discovery::lookups::{AppLookups, Look};
use crate::metrics::metrics;
use crate::store::SharedStore;
use crate::time;
use bytes::Bytes;
use log::{info, warn};
use pingora::http::ResponseHeader;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::proxy::Session;
use pingora::Result;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Largest delivery read; Heroku's events are a few kilobytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// After a 413, the most of the refused body read and dropped before the
/// connection closes, and the longest that may take (see `too_large`).
const LINGER_BYTES: usize = 8 * MAX_BODY;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Delivery ids remembered to drop repeats.
const REMEMBERED_DELIVERIES: usize = 4096;

/// How often refused deliveries are logged at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What happened to one delivery, the `outcome` label of
/// `heroku_lb_webhook_deliveries_total`.
pub const OUTCOMES: [&str; 7] = [
    "accepted",
    "duplicate",
    "ignored",
    "bad_signature",
    "too_large",
    "malformed",
    "wrong_method",
];

/// The receiver.
pub struct WebhookReceiver {
    key: hmac::Key,
    lookups: Arc<AppLookups>,
    path: String,
    state: Mutex<ReceiverState>,
    /// Runs discovery at once after a delivery, rather than at its next tick.
    load_balancer: Option<Arc<LoadBalancer<RoundRobin>>>,
    /// An immediate discovery run is scheduled and has not started yet.
    update_scheduled: Arc<AtomicBool>,
    /// When dynos share a store: a look goes to the lease holder.
    store: Option<Arc<SharedStore>>,
}

#[derive(Default)]
struct ReceiverState {
    /// Recent delivery ids, oldest first, and the same as a set.
    order: VecDeque<String>,
    seen: HashSet<String>,
    last: Option<LastDelivery>,
    /// When a refusal was last logged, and refusals since.
    refusal_logged: Option<Instant>,
    refused_since_log: u64,
}

/// The last delivery accepted, for status.
#[derive(Debug, Clone)]
struct LastDelivery {
    at: SystemTime,
    received: Instant,
    event: String,
    app: Option<String>,
}

/// What status shows of webhooks.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub path: String,
    pub last_delivery_at: Option<String>,
    pub last_delivery_age_seconds: Option<u64>,
    /// `api:formation update`, `api:release update (succeeded)`, ...
    pub last_event: Option<String>,
    pub last_app: Option<String>,
}

/// The fields of a delivery the receiver reads; everything else is ignored.
#[derive(Debug, Deserialize)]
struct Delivery {
    resource: String,
    action: String,
    #[serde(default)]
    data: serde_json::Value,
    webhook_metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    delivery: Id,
}

#[derive(Debug, Deserialize)]
struct Id {
    id: String,
}

impl WebhookReceiver {
    /// A receiver at `{admin_prefix}hooks/heroku` verifying with `secret`
    /// and asking `lookups` to look at the apps events name.
    pub fn new(secret: &[u8], admin_prefix: &str, lookups: Arc<AppLookups>) -> Self {
        // Every outcome's series exists from the start (0, not "no data").
        for outcome in OUTCOMES {
            metrics().webhook_deliveries.with_label_values(&[outcome]);
        }
        WebhookReceiver {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            lookups,
            path: format!("{admin_prefix}hooks/heroku"),
            state: Mutex::new(ReceiverState::default()),
            load_balancer: None,
            update_scheduled: Arc::new(AtomicBool::new(false)),
            store: None,
        }
    }

    /// Publish looks through `store` when another dyno holds its lease
    /// (that dyno does the API work once for every dyno).
    pub fn with_store(mut self, store: Option<Arc<SharedStore>>) -> Self {
        self.store = store;
        self
    }

    /// Run `lb`'s discovery at once after each delivery that asks for a
    /// look (Pingora's `LoadBalancer::update`; discovery's own lock keeps
    /// it from overlapping the background loop's run).
    pub fn with_load_balancer(mut self, lb: Arc<LoadBalancer<RoundRobin>>) -> Self {
        self.load_balancer = Some(lb);
        self
    }

    /// Have discovery take the looks now. Looks asked for while a run is
    /// scheduled but not started join it; one asked for during a run
    /// schedules the next.
    fn update_now(&self) {
        let Some(lb) = &self.load_balancer else {
            return;
        };
        if self.update_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let (lb, scheduled) = (Arc::clone(lb), Arc::clone(&self.update_scheduled));
        tokio::spawn(async move {
            scheduled.store(false, Ordering::Release);
            if let Err(e) = lb.update().await {
                warn!("discovery after a webhook failed: {e}");
            }
        });
    }

    /// Whether a request to `path` is a delivery for this receiver.
    pub fn owns(&self, path: &str) -> bool {
        path == self.path
    }

    /// Answer one delivery. Always handles the request (returns `true`).
    pub async fn receive(&self, session: &mut Session) -> Result<bool> {
        if session.req_header().method != http::Method::POST {
            self.refused("wrong_method", "not a POST");
            respond(session, 405, "only POST is accepted here\n").await?;
            return Ok(true);
        }
        let declared = session
            .req_header()
            .headers
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<usize>().ok());
        if declared.is_some_and(|length| length > MAX_BODY) {
            return self.too_large(session).await;
        }
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > MAX_BODY {
                return self.too_large(session).await;
            }
            body.extend_from_slice(&chunk);
        }
        let signature = session
            .req_header()
            .headers
            .get("heroku-webhook-hmac-sha256")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| crate::base64::decode(value.trim()));
        let verified = signature.is_some_and(|tag| hmac::verify(&self.key, &body, &tag).is_ok());
        if !verified {
            self.refused("bad_signature", "the signature does not match the body");
            respond(session, 401, "bad signature\n").await?;
            return Ok(true);
        }
        let delivery: Delivery = match serde_json::from_slice(&body) {
            Ok(delivery) => delivery,
            Err(e) => {
                self.refused("malformed", &format!("not a webhook event: {e}"));
                respond(session, 400, "not a webhook event\n").await?;
                return Ok(true);
            }
        };
        let outcome = self.accept(&delivery);
        metrics()
            .webhook_deliveries
            .with_label_values(&[outcome])
            .inc();
        respond(session, 202, "accepted\n").await?;
        Ok(true)
    }

    /// Act on a verified delivery; returns its outcome.
    fn accept(&self, delivery: &Delivery) -> &'static str {
        let event = event_name(delivery);
        let (app_id, app_name) = app_of(delivery);
        {
            let mut state = self.lock();
            let id = &delivery.webhook_metadata.delivery.id;
            if state.seen.contains(id) {
                return "duplicate";
            }
            state.seen.insert(id.clone());
            state.order.push_back(id.clone());
            if state.order.len() > REMEMBERED_DELIVERIES {
                if let Some(oldest) = state.order.pop_front() {
                    state.seen.remove(&oldest);
                }
            }
            state.last = Some(LastDelivery {
                at: SystemTime::now(),
                received: Instant::now(),
                event: event.clone(),
                app: app_name.clone(),
            });
        }
        self.lookups.delivery_seen();
        let (Some(app_id), Some(look)) = (app_id, look_for(delivery)) else {
            return "ignored";
        };
        info!(
            "webhook event=\"{event}\" app={} app_id={app_id} delivery={}: looking at the app now",
            app_name.as_deref().unwrap_or("-"),
            delivery.webhook_metadata.delivery.id
        );
        if let Some(store) = &self.store {
            if store.forward_look(&app_id, look) {
                return "accepted";
            }
        }
        self.lookups.request(&app_id, look);
        self.update_now();
        "accepted"
    }

    /// 413, and the connection closes. Closing on a body still arriving
    /// would reset the connection, and the sender could lose the 413 with
    /// it; so, like nginx's lingering close, what it still sends is read and
    /// dropped first, for at most [`LINGER_TIME`] and [`LINGER_BYTES`].
    async fn too_large(&self, session: &mut Session) -> Result<bool> {
        self.refused("too_large", &format!("body over {MAX_BODY} bytes"));
        session.set_keepalive(None);
        respond(session, 413, "body too large\n").await?;
        let linger = async {
            let mut dropped = 0;
            while let Ok(Some(chunk)) = session.read_request_body().await {
                dropped += chunk.len();
                if dropped > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, linger).await;
        Ok(true)
    }

    /// Count a refused delivery; log it at most once a minute, with how
    /// many were refused since, never with the body.
    fn refused(&self, outcome: &'static str, why: &str) {
        metrics()
            .webhook_deliveries
            .with_label_values(&[outcome])
            .inc();
        let mut state = self.lock();
        state.refused_since_log += 1;
        let due = state
            .refusal_logged
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            warn!(
                "webhook delivery refused reason={outcome} detail=\"{why}\" refused_in_last_minute={}",
                state.refused_since_log
            );
            state.refusal_logged = Some(Instant::now());
            state.refused_since_log = 0;
        }
    }

    /// The last delivery, for status.
    pub fn view(&self) -> WebhookView {
        let state = self.lock();
        let last = state.last.clone();
        WebhookView {
            path: self.path.clone(),
            last_delivery_at: last.as_ref().map(|last| time::rfc3339(last.at)),
            last_delivery_age_seconds: last.as_ref().map(|last| last.received.elapsed().as_secs()),
            last_event: last.as_ref().map(|last| last.event.clone()),
            last_app: last.and_then(|last| last.app),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `api:formation update`, `api:release update (succeeded)`, `dyno create`.
fn event_name(delivery: &Delivery) -> String {
    let include = match delivery.resource.as_str() {
        "dyno" => "dyno".to_string(),
        resource => format!("api:{resource}"),
    };
    match delivery
        .data
        .get("status")
        .and_then(|status| status.as_str())
    {
        Some(status) if delivery.resource == "release" => {
            format!("{include} {} ({status})", delivery.action)
        }
        _ => format!("{include} {}", delivery.action),
    }
}

/// The Heroku id and name of the app an event is about: the resource itself
/// for `api:app`, its `app` for the others.
fn app_of(delivery: &Delivery) -> (Option<String>, Option<String>) {
    let app = if delivery.resource == "app" {
        &delivery.data
    } else {
        &delivery.data["app"]
    };
    let text = |field: &str| app.get(field).and_then(|v| v.as_str()).map(str::to_string);
    (text("id"), text("name"))
}

/// What an event asks to look at, if anything.
fn look_for(delivery: &Delivery) -> Option<Look> {
    let look = match delivery.resource.as_str() {
        "formation" => Look {
            formation: true,
            ..Look::default()
        },
        "app" => Look {
            details: true,
            ..Look::default()
        },
        // Only a release that succeeded restarts the dynos; pending (the
        // release phase) and failed ones change nothing that serves.
        "release" => {
            let status = delivery.data.get("status").and_then(|s| s.as_str());
            if status != Some("succeeded") {
                return None;
            }
            Look {
                released: true,
                ..Look::default()
            }
        }
        "dyno" => Look {
            check: true,
            ..Look::default()
        },
        _ => return None,
    };
    Some(look)
}

async fn respond(session: &mut Session, code: u16, body: &'static str) -> Result<()> {
    let mut response = ResponseHeader::build(code, Some(3))?;
    response.insert_header("Content-Type", "text/plain; charset=utf-8")?;
    response.insert_header("Content-Length", body.len().to_string())?;
    response.insert_header("Cache-Control", "no-store")?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(json: serde_json::Value) -> Delivery {
        serde_json::from_value(json).expect("a delivery")
    }

    fn event(resource: &str, action: &str, data: serde_json::Value, id: &str) -> Delivery {
        delivery(serde_json::json!({
            "resource": resource,
            "action": action,
            "data": data,
            "webhook_metadata": {"delivery": {"id": id}},
        }))
    }

    #[test]
    fn each_event_names_its_app_and_what_to_look_at() {
        let formation = event(
            "formation",
            "update",
            serde_json::json!({"app": {"id": "a1", "name": "shop-1"}, "type": "web", "quantity": 3}),
            "d1",
        );
        assert_eq!(
            app_of(&formation),
            (Some("a1".into()), Some("shop-1".into()))
        );
        assert!(look_for(&formation).is_some_and(|look| look.formation));
        assert_eq!(event_name(&formation), "api:formation update");

        let app = event(
            "app",
            "update",
            serde_json::json!({"id": "a2", "name": "shop-2"}),
            "d2",
        );
        assert_eq!(app_of(&app).0.as_deref(), Some("a2"));
        assert!(look_for(&app).is_some_and(|look| look.details));

        let pending = event(
            "release",
            "create",
            serde_json::json!({"app": {"id": "a3"}, "status": "pending"}),
            "d3",
        );
        assert_eq!(look_for(&pending), None);
        let succeeded = event(
            "release",
            "update",
            serde_json::json!({"app": {"id": "a3"}, "status": "succeeded"}),
            "d4",
        );
        assert!(look_for(&succeeded).is_some_and(|look| look.released));
        assert_eq!(event_name(&succeeded), "api:release update (succeeded)");

        let dyno = event(
            "dyno",
            "create",
            serde_json::json!({"app": {"id": "a4"}}),
            "d5",
        );
        assert!(look_for(&dyno).is_some_and(|look| look.check));
        assert_eq!(event_name(&dyno), "dyno create");
    }

    #[test]
    fn a_repeated_delivery_is_dropped_and_a_verified_one_asks_for_a_look() {
        let lookups = Arc::new(AppLookups::default());
        let receiver = WebhookReceiver::new(b"s3cret", "/_lb/", Arc::clone(&lookups));
        assert!(receiver.owns("/_lb/hooks/heroku"));
        let formation = event(
            "formation",
            "update",
            serde_json::json!({"app": {"id": "a1", "name": "shop-1"}}),
            "same",
        );
        assert_eq!(receiver.accept(&formation), "accepted");
        assert_eq!(receiver.accept(&formation), "duplicate");
        let taken = lookups.take();
        assert_eq!(taken.len(), 1);
        assert!(lookups.flowing(Duration::from_secs(1)));
        let view = receiver.view();
        assert_eq!(view.last_event.as_deref(), Some("api:formation update"));
        assert_eq!(view.last_app.as_deref(), Some("shop-1"));
    }
}
