//! The last few things that happened to the backends, for the status page:
//! health transitions, admissions, passive ejections (and ejections the cap
//! refused), panic routing on and off, discovery's changes, held removals and
//! failed rounds. [`EventLog`] keeps the newest [`CAPACITY`].
//!
//! Input: the places that log those lines (`backend.rs`, `ejection.rs`,
//! `selection.rs`, `discovery/`) call [`record`] next to their `info!` or
//! `warn!`. Output: [`events`]`().recent()`, newest first, for `status/`.
//!
//! One process-wide log, like `metrics()`: these events are rare (never one
//! per request), so a std `Mutex` around a small ring is cheap, and it is
//! never held across an await. Texts are built from what the log lines
//! already say, which never carries the API key or a token.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// How many events the log keeps.
pub const CAPACITY: usize = 20;

/// What happened, as a short label (`kind` in the status JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Active checks brought a backend back (`rise` passes in a row).
    Up,
    /// Active checks took a backend out (`fall` failures in a row).
    Down,
    /// A new backend's first check passed.
    Admitted,
    /// Failures on live traffic took a backend out.
    Ejected,
    /// A passively ejected backend passed `rise` checks.
    EjectionEnded,
    /// The ejection cap kept a failing backend in.
    EjectionCapped,
    PanicOn,
    PanicOff,
    AppAdded,
    AppRemoved,
    AppReweighted,
    /// A round would remove most apps; held until the next agrees.
    RemovalHeld,
    DiscoveryError,
    DiscoveryRecovered,
    /// A release restarts the app's dynos without preboot: no new requests.
    Draining,
    /// A draining app passed `rise` checks after its restart.
    Restarted,
    /// A verified Heroku webhook arrived (the last one is kept in status).
    Webhook,
}

impl EventKind {
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Up => "up",
            EventKind::Down => "down",
            EventKind::Admitted => "admitted",
            EventKind::Ejected => "ejected",
            EventKind::EjectionEnded => "ejection_ended",
            EventKind::EjectionCapped => "ejection_capped",
            EventKind::PanicOn => "panic_on",
            EventKind::PanicOff => "panic_off",
            EventKind::AppAdded => "app_added",
            EventKind::AppRemoved => "app_removed",
            EventKind::AppReweighted => "app_reweighted",
            EventKind::RemovalHeld => "removal_held",
            EventKind::DiscoveryError => "discovery_error",
            EventKind::DiscoveryRecovered => "discovery_recovered",
            EventKind::Draining => "draining",
            EventKind::Restarted => "restarted",
            EventKind::Webhook => "webhook",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: SystemTime,
    pub kind: EventKind,
    /// The app it concerns, when it concerns one.
    pub app: Option<String>,
    pub text: String,
}

/// A bounded ring of the newest events.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: Mutex<VecDeque<Event>>,
}

impl EventLog {
    /// An empty log keeping the newest [`CAPACITY`] events.
    pub fn new() -> Self {
        EventLog::default()
    }

    pub fn record(&self, kind: EventKind, app: Option<&str>, text: impl Into<String>) {
        let event = Event {
            at: SystemTime::now(),
            kind,
            app: app.map(str::to_string),
            text: text.into(),
        };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The kept events, newest first.
    pub fn recent(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

/// The process-wide log.
pub fn events() -> &'static EventLog {
    static EVENTS: OnceLock<EventLog> = OnceLock::new();
    EVENTS.get_or_init(EventLog::new)
}

/// Record in the process-wide log.
pub fn record(kind: EventKind, app: Option<&str>, text: impl Into<String>) {
    events().record(kind, app, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_events_newest_first() {
        let log = EventLog::new();
        for i in 0..CAPACITY + 5 {
            log.record(EventKind::AppAdded, Some("shop"), format!("event {i}"));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent[0].text, format!("event {}", CAPACITY + 4));
        assert_eq!(recent[CAPACITY - 1].text, "event 5");
        assert_eq!(recent[0].kind.label(), "app_added");
    }
}
