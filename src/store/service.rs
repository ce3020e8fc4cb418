//! The background service that talks to the store: connects (TLS for
//! `rediss://`, accepting Heroku's self-signed certificate as Heroku's docs
//! tell clients to), reads the current app set and checks at connect, takes
//! or renews the lease, publishes what the outbox holds, and applies what
//! the other dynos publish. Any call that fails or outlasts [`CALL_TIMEOUT`]
//! ends the connection: the dyno falls back to acting on its own at once,
//! logs it once, and tries again every [`RECONNECT`].

use super::messages::{AppSet, Checked, Message};
use super::{SharedStore, StoreState};
use crate::backend::AppTarget;
use crate::discovery::lookups::AppLookups;
use crate::ejection::PassiveEjection;
use async_trait::async_trait;
use futures_util::StreamExt;
use log::{info, warn};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The longest one store call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long after a failure the service connects again.
pub const RECONNECT: Duration = Duration::from_secs(1);

/// Renew the lease only if we hold it (compare and set, atomically).
const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Let go of the lease only if we hold it.
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                       return redis.call('del', KEYS[1]) else return 0 end";

/// Runs the store connection for one [`SharedStore`].
pub struct StoreService {
    store: Arc<SharedStore>,
    lb: Arc<LoadBalancer<RoundRobin>>,
    ejection: Arc<PassiveEjection>,
    lookups: Option<Arc<AppLookups>>,
}

/// Why a connection ended.
type Failure = String;

impl StoreService {
    pub fn new(
        store: Arc<SharedStore>,
        lb: Arc<LoadBalancer<RoundRobin>>,
        ejection: Arc<PassiveEjection>,
        lookups: Option<Arc<AppLookups>>,
    ) -> Self {
        StoreService {
            store,
            lb,
            ejection,
            lookups,
        }
    }

    /// The URL redis-rs is given: Heroku's `rediss://` URLs point at a
    /// self-signed certificate, which Heroku's docs tell clients not to
    /// verify (`#insecure`): the connection is encrypted, the server is not
    /// authenticated (its password is).
    fn client(&self) -> Result<redis::Client, Failure> {
        let url = self.store.settings.url.expose();
        let url = if url.starts_with("rediss://") && !url.contains('#') {
            format!("{url}#insecure")
        } else {
            url.to_string()
        };
        // redis-rs's URL errors name the part at fault, never the password.
        redis::Client::open(url).map_err(|e| format!("the store URL is unusable: {e}"))
    }

    /// One connection's life: connect, catch up, then serve until a
    /// failure (returned) or the shutdown (`Ok`).
    async fn connected(&self, shutdown: &mut ShutdownWatch) -> Result<(), Failure> {
        let client = self.client()?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let mut conn = bounded(
            "connect",
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        let mut pubsub = bounded("subscribe", client.get_async_pubsub()).await?;
        bounded("subscribe", pubsub.subscribe(&self.store.keys.channel)).await?;
        self.catch_up(&mut conn).await?;
        self.store.set_state(StoreState::Connected);
        info!(
            "store connected namespace={} instance={}: sharing discovery, checks and ejections \
             with the other balancer dynos",
            self.store.namespace, self.store.instance
        );
        let mut messages = pubsub.into_on_message();
        let mut outbox = self
            .store
            .outbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| "the outbox is taken".to_string())?;
        let result = async {
            let mut tick = tokio::time::interval(self.store.lease_ttl / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            self.release(&mut conn).await;
                            return Ok(());
                        }
                    }
                    _ = tick.tick() => self.lease(&mut conn).await?,
                    message = messages.next() => {
                        let Some(message) = message else {
                            return Err("the store closed the subscription".to_string());
                        };
                        self.received(message.get_payload_bytes());
                    }
                    Some(message) = outbox.recv() => self.send(&mut conn, message).await?,
                }
            }
        }
        .await;
        // The outbox outlives this connection.
        *self
            .store
            .outbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(outbox);
        result
    }

    /// Read the app set and the checks the others published before us.
    async fn catch_up(&self, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
        let keys = &self.store.keys;
        let apps: Option<String> = bounded(
            "read the app set",
            redis::cmd("GET").arg(&keys.apps).query_async(conn),
        )
        .await?;
        if let Some(set) = apps.and_then(|json| serde_json::from_str::<AppSet>(&json).ok()) {
            self.take_apps(set);
        }
        let checks: HashMap<String, String> = bounded(
            "read the checks",
            redis::cmd("HGETALL").arg(&keys.health).query_async(conn),
        )
        .await?;
        let mut health = self.store.health.lock().unwrap_or_else(|p| p.into_inner());
        for (url, json) in checks {
            if let Ok(checked) = serde_json::from_str::<Checked>(&json) {
                health.insert(url, checked);
            }
        }
        Ok(())
    }

    /// Take the lease if it is free, or renew ours.
    async fn lease(&self, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
        let store = &self.store;
        let ttl_ms = store.lease_ttl.as_millis() as u64;
        let was_leader = store.leader.load(Ordering::Relaxed);
        let leader = if was_leader {
            let renewed: i64 = bounded(
                "renew the lease",
                redis::Script::new(RENEW)
                    .key(&store.keys.lease)
                    .arg(&store.instance)
                    .arg(ttl_ms)
                    .invoke_async(conn),
            )
            .await?;
            renewed == 1
        } else {
            let taken: Option<String> = bounded(
                "take the lease",
                redis::cmd("SET")
                    .arg(&store.keys.lease)
                    .arg(&store.instance)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(conn),
            )
            .await?;
            taken.is_some()
        };
        if leader != was_leader {
            store.leader.store(leader, Ordering::Relaxed);
            if leader {
                info!(
                    "store lease taken instance={}: this dyno polls the Platform API and checks \
                     the apps for every balancer dyno",
                    store.instance
                );
                // Poll now rather than at the next tick.
                let lb = Arc::clone(&self.lb);
                tokio::spawn(async move {
                    let _ = lb.update().await;
                });
            } else {
                warn!(
                    "store lease lost instance={}: another dyno polls and checks now",
                    store.instance
                );
            }
            store.changed.notify_waiters();
        }
        Ok(())
    }

    /// Let go of the lease at shutdown, so another dyno takes it at once.
    async fn release(&self, conn: &mut MultiplexedConnection) {
        let store = &self.store;
        if !store.leader.swap(false, Ordering::Relaxed) {
            return;
        }
        let released: Result<i64, Failure> = bounded(
            "release the lease",
            redis::Script::new(RELEASE)
                .key(&store.keys.lease)
                .arg(&store.instance)
                .invoke_async(conn),
        )
        .await;
        if released.is_ok() {
            info!(
                "store lease released at shutdown instance={}",
                store.instance
            );
        }
    }

    /// Publish one message (and store what a dyno that starts must read).
    async fn send(
        &self,
        conn: &mut MultiplexedConnection,
        message: Message,
    ) -> Result<(), Failure> {
        let keys = &self.store.keys;
        let json = serde_json::to_string(&message).map_err(|e| e.to_string())?;
        let mut pipe = redis::pipe();
        match &message {
            Message::Apps(set) => {
                let set = serde_json::to_string(set).map_err(|e| e.to_string())?;
                pipe.cmd("SET").arg(&keys.apps).arg(set).ignore();
            }
            Message::Health { url, checked } => {
                let checked = serde_json::to_string(checked).map_err(|e| e.to_string())?;
                pipe.cmd("HSET")
                    .arg(&keys.health)
                    .arg(url)
                    .arg(checked)
                    .ignore();
            }
            Message::Ejected { .. } | Message::Look { .. } => {}
        }
        pipe.cmd("PUBLISH").arg(&keys.channel).arg(json).ignore();
        bounded("publish", pipe.query_async::<()>(conn)).await
    }

    /// Apply a message another dyno published.
    fn received(&self, payload: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Message>(payload) else {
            return;
        };
        let store = &self.store;
        match message {
            Message::Apps(set) => {
                if set.from != store.instance {
                    self.take_apps(set);
                    let lb = Arc::clone(&self.lb);
                    tokio::spawn(async move {
                        let _ = lb.update().await;
                    });
                }
            }
            Message::Health { url, checked } => {
                store
                    .health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(url, checked);
            }
            Message::Ejected { from, url, reason } => {
                if from == store.instance {
                    return;
                }
                let members = self.lb.backends().get_backend();
                let target = members
                    .iter()
                    .filter_map(AppTarget::of)
                    .find(|target| target.url_text() == url);
                if let Some(target) = target {
                    self.ejection
                        .eject_shared(target, &format!("{reason} (seen by {from})"));
                }
            }
            Message::Look { app_id, look, .. } => {
                if let (true, Some(lookups)) = (store.is_leader(), &self.lookups) {
                    lookups.request(&app_id, look);
                    let lb = Arc::clone(&self.lb);
                    tokio::spawn(async move {
                        let _ = lb.update().await;
                    });
                }
            }
        }
    }

    /// Keep `set` if it is newer than the one we have.
    fn take_apps(&self, set: AppSet) {
        let newer = self
            .store
            .apps
            .load()
            .as_ref()
            .is_none_or(|current| set.version > current.version);
        if newer {
            self.store.apps.store(Some(Arc::new(set)));
            self.store.apps_arrived.store(true, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl BackgroundService for StoreService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            match self.connected(&mut shutdown).await {
                Ok(()) => return,
                Err(why) => {
                    let was = self.store.state();
                    self.store.leader.store(false, Ordering::Relaxed);
                    self.store.set_state(StoreState::Fallback);
                    // Once each way: the next line about the store is its return.
                    if was != StoreState::Fallback {
                        warn!(
                            "store unreachable namespace={} error=\"{why}\": falling back to \
                             polling and checking on our own until it answers again",
                            self.store.namespace
                        );
                    }
                    // Poll now: the lease holder may have been someone else.
                    let lb = Arc::clone(&self.lb);
                    tokio::spawn(async move {
                        let _ = lb.update().await;
                    });
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONNECT) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// Run `call` within [`CALL_TIMEOUT`]; its error or the timeout is the
/// failure, named by `what`.
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {CALL_TIMEOUT:?}")),
    }
}
