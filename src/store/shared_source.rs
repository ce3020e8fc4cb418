//! The discovery source of a dyno that shares a store: it wraps the real
//! source (the pipeline, a static list) and decides, round by round, who
//! asks it. The lease holder runs the real source and publishes what it
//! found, with the releases it learned of; a follower takes the lease
//! holder's app set from the store instead of the Platform API (so N dynos
//! spend one dyno's API budget); a dyno without the store (unreachable, or
//! not yet connected after a second) runs the real source itself.
//!
//! Input: the real `AppSource`, the [`SharedStore`]. Output: `Round`s for
//! `AppDiscovery`, which keeps doing what it does with them (large removals
//! held, targets made, names resolved).

use super::messages::{AppEntry, AppSet, Message};
use super::{SharedStore, StoreState};
use crate::backend::BackendUrl;
use crate::discovery::{AppHint, AppSource, AppSpec, Round, SourceError};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the first round waits for the store to connect before running
/// the real source: a new dyno serves the known set within a second of boot.
const FIRST_CONNECT: Duration = Duration::from_millis(1500);
/// A follower reads the store's set again at least this often.
const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// A source shared through the store.
pub struct SharedSource {
    inner: Box<dyn AppSource>,
    store: Arc<SharedStore>,
    /// The version of the last set a round took (hints are applied once).
    taken: AtomicU64,
    /// The last round followed the store: when that stops, run at once.
    followed: AtomicBool,
}

impl SharedSource {
    pub fn new(inner: Box<dyn AppSource>, store: Arc<SharedStore>) -> Self {
        SharedSource {
            inner,
            store,
            taken: AtomicU64::new(0),
            followed: AtomicBool::new(false),
        }
    }

    /// The lease holder's set as a round.
    fn follow(&self) -> Result<Round, SourceError> {
        self.store.apps_arrived.store(false, Ordering::Relaxed);
        let Some(set) = self.store.app_set() else {
            return Err(SourceError {
                message: "waiting for the lease holder's first app set in the store".to_string(),
                retry_in: Duration::from_secs(1),
            });
        };
        let fresh = self.taken.swap(set.version, Ordering::Relaxed) < set.version;
        let apps = set
            .apps
            .iter()
            .filter_map(|app| {
                Some(AppSpec {
                    url: BackendUrl::parse(&app.url).ok()?,
                    name: app.name.clone(),
                    weight: app.weight,
                })
            })
            .collect();
        let mut hints = Vec::new();
        if fresh {
            let hint = |urls: &[String], hint: AppHint| {
                urls.iter()
                    .filter_map(|url| BackendUrl::parse(url).ok())
                    .map(move |url| (url, hint))
                    .collect::<Vec<_>>()
            };
            hints.extend(hint(&set.restarting, AppHint::Released { preboot: false }));
            hints.extend(hint(&set.ramping, AppHint::Released { preboot: true }));
        }
        Ok(Round {
            apps,
            next_round_in: Some(FOLLOW_EVERY),
            incomplete: None,
            hints,
        })
    }

    /// As the lease holder: publish `round`'s apps and releases when they
    /// differ from the set in the store.
    fn publish(&self, round: &Round) {
        let apps: Vec<AppEntry> = round
            .apps
            .iter()
            .map(|app| AppEntry {
                url: app.url.to_string(),
                name: app.name.clone(),
                weight: app.weight,
            })
            .collect();
        let released = |preboot: bool| -> Vec<String> {
            round
                .hints
                .iter()
                .filter(|(_, hint)| *hint == AppHint::Released { preboot })
                .map(|(url, _)| url.to_string())
                .collect()
        };
        let (restarting, ramping) = (released(false), released(true));
        let current = self.store.app_set();
        let same = current.as_ref().is_some_and(|set| set.apps == apps)
            && restarting.is_empty()
            && ramping.is_empty();
        if same {
            return;
        }
        let set = AppSet {
            version: current.map_or(0, |set| set.version) + 1,
            from: self.store.instance.clone(),
            apps,
            restarting,
            ramping,
        };
        self.taken.store(set.version, Ordering::Relaxed);
        self.store.apps.store(Some(Arc::new(set.clone())));
        self.store.publish(Message::Apps(set));
    }
}

#[async_trait]
impl AppSource for SharedSource {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn wants_round(&self) -> bool {
        let following = self.store.is_follower();
        let stopped_following = self.followed.load(Ordering::Relaxed) && !following;
        self.inner.wants_round()
            || stopped_following
            || (following && self.store.apps_arrived.load(Ordering::Relaxed))
    }

    async fn round(&self) -> Result<Round, SourceError> {
        if self.store.state() == StoreState::Connecting {
            let connected = async {
                while self.store.state() == StoreState::Connecting {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let _ = tokio::time::timeout(FIRST_CONNECT, connected).await;
        }
        if self.store.is_follower() {
            self.followed.store(true, Ordering::Relaxed);
            return self.follow();
        }
        self.followed.store(false, Ordering::Relaxed);
        let round = self.inner.round().await?;
        if self.store.is_leader() {
            self.publish(&round);
        }
        Ok(round)
    }
}
