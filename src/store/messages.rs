//! What the dynos tell each other through the store, and where: the keys
//! and the one channel under the namespace (`heroku-lb:{pipeline}:{stage}`),
//! and the JSON of each message. A message that does not parse is dropped
//! (and logged once by the service): a store shared with something else, or
//! a newer balancer, must not take this one down.

use crate::discovery::lookups::Look;
use serde::{Deserialize, Serialize};

/// The keys and channel of one balancer's namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Who polls the API and runs the health checks: the holder's instance id.
    pub lease: String,
    /// The current app set ([`AppSet`]), for a dyno that starts.
    pub apps: String,
    /// The last check outcome of every app ([`Checked`]), by URL.
    pub health: String,
    /// Where every [`Message`] is published.
    pub channel: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Keys {
            lease: format!("{namespace}:lease"),
            apps: format!("{namespace}:apps"),
            health: format!("{namespace}:health"),
            channel: format!("{namespace}:events"),
        }
    }
}

/// One app of the set, as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppEntry {
    pub url: String,
    pub name: String,
    pub weight: usize,
}

/// What the lease holder's discovery found, with a version that grows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSet {
    pub version: u64,
    /// The instance that published it.
    pub from: String,
    pub apps: Vec<AppEntry>,
    /// Releases without preboot the holder learned of (apps to drain until
    /// their checks pass) and with preboot (apps to slow-start), by URL.
    #[serde(default)]
    pub restarting: Vec<String>,
    #[serde(default)]
    pub ramping: Vec<String>,
}

/// One app's last check by the lease holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checked {
    pub ok: bool,
    pub detail: String,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// A message on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// A new app set (also stored under `Keys::apps`).
    Apps(AppSet),
    /// A check outcome changed (also stored under `Keys::health`).
    Health { url: String, checked: Checked },
    /// A dyno ejected an app on its live traffic; every dyno honours it,
    /// within its own `max_ejection_percent`.
    Ejected {
        from: String,
        url: String,
        reason: String,
    },
    /// A verified webhook asked to look at an app: the lease holder does
    /// the API work.
    Look {
        from: String,
        app_id: String,
        look: Look,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let look = Message::Look {
            from: "web.2-ab".into(),
            app_id: "a1".into(),
            look: Look {
                formation: true,
                ..Look::default()
            },
        };
        let json = serde_json::to_string(&look).expect("serializes");
        assert!(json.contains("\"kind\":\"look\""), "{json}");
        assert_eq!(
            serde_json::from_str::<Message>(&json).expect("parses"),
            look
        );
        assert!(serde_json::from_str::<Message>("{\"kind\":\"unknown\"}").is_err());
        assert_eq!(
            Keys::new("heroku-lb:p:production").lease,
            "heroku-lb:p:production:lease"
        );
    }
}
