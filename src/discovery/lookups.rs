//! "Look at this app now": requests from outside discovery's schedule. A
//! verified Heroku webhook (`webhooks.rs`) says an app was scaled, changed,
//! released or that a dyno came up; the pipeline source turns each request
//! into one or two API calls for that app on its next round, which the
//! discovery loop runs at once when requests wait.
//!
//! Deliveries repeat and arrive out of order, so a request carries no data
//! from the event: it only says what to look at, and the API says what is
//! true now. Requests for one app merge until the round takes them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to look at for one app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Look {
    /// Its web formation (dyno count): `api:formation`.
    pub formation: bool,
    /// Its record (maintenance, `web_url`): `api:app`.
    pub details: bool,
    /// A release succeeded: its dynos restart (with preboot, new dynos take
    /// over warm-up; without, the old ones stop first).
    pub released: bool,
    /// A dyno changed state: check its health now rather than at the next
    /// interval.
    pub check: bool,
}

impl Look {
    /// Add what `other` asks to look at.
    pub fn merge(&mut self, other: Look) {
        self.formation |= other.formation;
        self.details |= other.details;
        self.released |= other.released;
        self.check |= other.check;
    }
}

/// The queue between the webhook receiver and the pipeline source.
#[derive(Debug, Default)]
pub struct AppLookups {
    pending: Mutex<HashMap<String, Look>>,
    /// When the last verified delivery arrived.
    last_delivery: Mutex<Option<Instant>>,
}

impl AppLookups {
    /// Ask for a look at the app with Heroku id `app_id`.
    pub fn request(&self, app_id: &str, look: Look) {
        self.lock_pending()
            .entry(app_id.to_string())
            .or_default()
            .merge(look);
    }

    /// Whether looks wait for a round.
    pub fn waiting(&self) -> bool {
        !self.lock_pending().is_empty()
    }

    /// Every look asked for since the last call.
    pub fn take(&self) -> HashMap<String, Look> {
        std::mem::take(&mut *self.lock_pending())
    }

    /// A verified delivery arrived now.
    pub fn delivery_seen(&self) {
        *self.last_delivery.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether a verified delivery arrived within `within`: webhooks flow,
    /// and polling can slow down to a safety net.
    pub fn flowing(&self, within: Duration) -> bool {
        self.last_delivery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() <= within)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Look>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_at_one_app_merge_until_taken() {
        let lookups = AppLookups::default();
        assert!(!lookups.waiting());
        lookups.request(
            "a",
            Look {
                formation: true,
                ..Look::default()
            },
        );
        lookups.request(
            "a",
            Look {
                check: true,
                ..Look::default()
            },
        );
        assert!(lookups.waiting());
        let taken = lookups.take();
        assert_eq!(
            taken.get("a"),
            Some(&Look {
                formation: true,
                check: true,
                ..Look::default()
            })
        );
        assert!(!lookups.waiting());
        assert!(!lookups.flowing(Duration::from_secs(60)));
        lookups.delivery_seen();
        assert!(lookups.flowing(Duration::from_secs(60)));
    }
}
