//! Several balancer dynos, one view, through Heroku Key-Value Store (Redis,
//! `REDIS_URL` or `LB_STORE_URL`). Without a store every dyno polls the
//! Platform API, checks every app and ejects on its own; with one:
//!
//! - **one poller**: a lease (`SET NX PX`, renewed well inside its expiry)
//!   picks the dyno that runs discovery rounds and active health checks.
//!   It publishes the app set (with a version) and every change of a check's
//!   outcome; the others take both from the store instead of the API and
//!   their own probes, and read the current state at start;
//! - **shared ejection**: a dyno that ejects an app publishes it, and every
//!   dyno honours it at once, within its own `max_ejection_percent`;
//! - **webhooks** landing on any dyno are verified there and published; the
//!   lease holder does the API work.
//!
//! The store is a help, never a dependency. Nothing on the request path
//! waits on it: the request path reads local copies, and what it publishes
//! goes through a bounded queue the service drains. Every store call has a
//! timeout; when the store is unreachable, slow or answering garbage, each
//! dyno falls back to polling and checking on its own (logged once each way,
//! `"store": "fallback"` in status) and rejoins when it answers again.
//!
//! Files: this one is the handle the other modules hold (the local view,
//! the role, the outbox); `service.rs` the background service that talks to
//! Redis; `messages.rs` the keys and messages; `shared_source.rs` the
//! discovery source that follows the lease holder.

mod messages;
mod service;
mod shared_source;

pub use service::StoreService;
pub use shared_source::SharedSource;

use crate::config::StoreSettings;
use crate::discovery::lookups::Look;
use crate::ejection::SharedEjections;
use crate::health::{SharedChecks, SharedOutcome};
use arc_swap::ArcSwapOption;
use messages::{AppSet, Checked, Keys, Message};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};

/// Most messages waiting to be published; more are dropped (the store is
/// a help: a dyno that cannot publish still serves).
const OUTBOX: usize = 1024;

/// Where this dyno stands with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// Not connected yet since start.
    Connecting = 0,
    Connected = 1,
    /// Unreachable, slow or garbled: this dyno acts on its own.
    Fallback = 2,
}

impl StoreState {
    pub fn label(self) -> &'static str {
        match self {
            StoreState::Connecting => "connecting",
            StoreState::Connected => "connected",
            StoreState::Fallback => "fallback",
        }
    }
}

/// The handle every part of the balancer holds.
pub struct SharedStore {
    keys: Keys,
    namespace: String,
    /// This process, as the lease and messages name it: `DYNO` (or the
    /// host) and a random suffix, since a restarted dyno is another process.
    instance: String,
    state: AtomicU8,
    /// This dyno holds the lease.
    leader: AtomicBool,
    /// The last app set from the store (or published by us).
    apps: ArcSwapOption<AppSet>,
    /// Wakes discovery when a new set arrives from the lease holder.
    apps_arrived: AtomicBool,
    /// The lease holder's last check of each app, by URL.
    health: Mutex<HashMap<String, Checked>>,
    outbox: mpsc::Sender<Message>,
    outbox_rx: Mutex<Option<mpsc::Receiver<Message>>>,
    /// The lease holder's lease, and how often it is renewed.
    lease_ttl: Duration,
    /// Pokes the service after a role change or a connect.
    changed: Notify,
    pub(crate) settings: StoreSettings,
}

impl SharedStore {
    /// A handle for the store `settings` name; the lease lasts
    /// `lease_ttl` (twice the discovery interval, at least 2 s).
    pub fn new(settings: &StoreSettings, instance: &str, lease_ttl: Duration) -> Arc<Self> {
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        Arc::new(SharedStore {
            keys: Keys::new(&settings.namespace),
            namespace: settings.namespace.clone(),
            instance: instance.to_string(),
            state: AtomicU8::new(StoreState::Connecting as u8),
            leader: AtomicBool::new(false),
            apps: ArcSwapOption::empty(),
            apps_arrived: AtomicBool::new(false),
            health: Mutex::new(HashMap::new()),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            lease_ttl: lease_ttl.max(Duration::from_secs(2)),
            changed: Notify::new(),
            settings: settings.clone(),
        })
    }

    pub fn state(&self) -> StoreState {
        match self.state.load(Ordering::Relaxed) {
            1 => StoreState::Connected,
            2 => StoreState::Fallback,
            _ => StoreState::Connecting,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether this dyno polls and checks for everyone.
    pub fn is_leader(&self) -> bool {
        self.state() == StoreState::Connected && self.leader.load(Ordering::Relaxed)
    }

    /// Whether this dyno follows the lease holder: connected, not holding it.
    pub fn is_follower(&self) -> bool {
        self.state() == StoreState::Connected && !self.leader.load(Ordering::Relaxed)
    }

    fn set_state(&self, state: StoreState) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Queue `message` for the store, never waiting: dropped when the
    /// outbox is full or the store is not connected.
    fn publish(&self, message: Message) {
        if self.state() == StoreState::Connected {
            let _ = self.outbox.try_send(message);
        }
    }

    /// The lease holder's app set, if one has arrived.
    pub(crate) fn app_set(&self) -> Option<Arc<AppSet>> {
        self.apps.load_full()
    }

    /// A webhook asked to look at an app: when another dyno holds the
    /// lease, publish the look for it and return `true`; else the caller
    /// looks itself.
    pub fn forward_look(&self, app_id: &str, look: Look) -> bool {
        if !self.is_follower() {
            return false;
        }
        self.publish(Message::Look {
            from: self.instance.clone(),
            app_id: app_id.to_string(),
            look,
        });
        true
    }

    /// The lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }
}

impl SharedChecks for SharedStore {
    fn outcome(&self, url: &str) -> SharedOutcome {
        if !self.is_follower() {
            return SharedOutcome::ProbeYourself;
        }
        match self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
        {
            Some(checked) => SharedOutcome::Checked {
                ok: checked.ok,
                detail: checked.detail.clone(),
            },
            None => SharedOutcome::NotYet,
        }
    }

    fn checked(&self, url: &str, ok: bool, detail: &str) {
        if !self.is_leader() {
            return;
        }
        let checked = Checked {
            ok,
            detail: detail.to_string(),
            at_ms: unix_ms(),
        };
        // Only changes are published (and the first outcome of each app):
        // a steady state costs the store nothing.
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let same = health
            .get(url)
            .is_some_and(|last| last.ok == ok && last.detail == detail);
        health.insert(url.to_string(), checked.clone());
        drop(health);
        if !same {
            self.publish(Message::Health {
                url: url.to_string(),
                checked,
            });
        }
    }
}

impl SharedEjections for SharedStore {
    fn ejected(&self, url: &str, reason: &str) {
        self.publish(Message::Ejected {
            from: self.instance.clone(),
            url: url.to_string(),
            reason: reason.to_string(),
        });
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
