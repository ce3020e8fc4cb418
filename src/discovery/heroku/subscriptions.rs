//! Subscribing every app of the stage to its Heroku webhooks, when
//! `LB_WEBHOOK_URL` names the balancer's public URL: `POST
//! /apps/{id}/webhooks` for `api:formation`, `api:release`, `api:app` and
//! `dyno`, delivered with retries (`level: sync`) to
//! `{url}{admin prefix}hooks/heroku` and signed with `LB_WEBHOOK_SECRET`.
//!
//! Input: the ids of the apps each round knows (`mod.rs`). Output: one
//! subscription per app, never two: an app's subscriptions are listed
//! first, and one already pointing at our URL (made by another balancer
//! dyno, an earlier run, or `heroku webhooks:add`) is kept. An app that
//! leaves the stage loses the subscription we made.
//!
//! It spends the API budget the discovery rounds share: at most
//! [`OPERATIONS_PER_ROUND`] calls a round (a first round over 1,000 apps
//! subscribes them over a few minutes, not in 2,000 calls at once), and
//! none while `RateLimit-Remaining` is below the reserve. Managing webhooks
//! needs a key with the `write` scope on the apps: a refusal (401, 403) is
//! one clear warning, and the balancer goes on polling, as without webhooks.

use super::api::{ApiError, PlatformApi};
use log::{info, warn};
use std::collections::{HashMap, HashSet};

/// The events that change what the balancer should route.
pub const INCLUDE: [&str; 4] = ["api:formation", "api:release", "api:app", "dyno"];

/// API calls subscriptions may spend in one round.
pub const OPERATIONS_PER_ROUND: usize = 8;

/// What the balancer knows of its subscriptions.
pub struct Subscriptions {
    /// Where deliveries go: the public URL and the receiver's path.
    hook_url: String,
    secret: String,
    /// Our subscription's id, per app id.
    subscribed: HashMap<String, String>,
    /// The key may not manage webhooks: stop trying (warned once).
    refused: bool,
}

impl Subscriptions {
    /// Subscriptions to `{public_url}{admin_prefix}hooks/heroku`, signed with `secret`.
    pub fn new(public_url: &str, admin_prefix: &str, secret: &[u8]) -> Self {
        Subscriptions {
            hook_url: format!("{public_url}{admin_prefix}hooks/heroku"),
            secret: String::from_utf8_lossy(secret).into_owned(),
            subscribed: HashMap::new(),
            refused: false,
        }
    }

    /// Whether every app of `apps` is subscribed.
    pub fn cover(&self, apps: &[String]) -> bool {
        !self.refused && apps.iter().all(|id| self.subscribed.contains_key(id))
    }

    /// How many apps are subscribed.
    pub fn count(&self) -> usize {
        self.subscribed.len()
    }

    /// Whether the API refused to let us manage webhooks.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Bring the subscriptions in line with `apps` (the ids the round
    /// knows), spending at most [`OPERATIONS_PER_ROUND`] calls. Returns
    /// the error that stopped it, if one did (the rest waits for the next
    /// round; a refusal stops it for good).
    pub async fn sync(&mut self, api: &PlatformApi, apps: &[String]) -> Option<ApiError> {
        if self.refused {
            return None;
        }
        let mut budget = OPERATIONS_PER_ROUND;
        let listed: HashSet<&String> = apps.iter().collect();
        let leaving: Vec<(String, String)> = self
            .subscribed
            .iter()
            .filter(|(app, _)| !listed.contains(app))
            .map(|(app, id)| (app.clone(), id.clone()))
            .collect();
        for (app, webhook) in leaving {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            match api.delete_webhook(&app, &webhook).await {
                Ok(()) => {
                    info!("webhook subscription removed app_id={app}: the app left the stage");
                    self.subscribed.remove(&app);
                }
                Err(error) => return self.failed(error),
            }
        }
        for app in apps {
            if self.subscribed.contains_key(app) {
                continue;
            }
            if budget < 2 {
                return None;
            }
            budget -= 1;
            let existing = match api.webhooks(app).await {
                Ok(existing) => existing,
                Err(error) => return self.failed(error),
            };
            if let Some(ours) = existing.iter().find(|hook| hook.url == self.hook_url) {
                self.subscribed.insert(app.clone(), ours.id.clone());
                continue;
            }
            budget -= 1;
            match api
                .create_webhook(app, &self.hook_url, &self.secret, &INCLUDE)
                .await
            {
                Ok(created) => {
                    info!(
                        "webhook subscription made app_id={app} url={} include={}",
                        self.hook_url,
                        INCLUDE.join(",")
                    );
                    self.subscribed.insert(app.clone(), created.id);
                }
                Err(error) => return self.failed(error),
            }
        }
        None
    }

    /// After a failed call: a refusal turns subscriptions off with one
    /// warning; anything else is tried again next round.
    fn failed(&mut self, error: ApiError) -> Option<ApiError> {
        if matches!(error.status(), Some(401 | 403)) {
            self.refused = true;
            warn!(
                "webhook subscriptions off: the Platform API refused to manage webhooks ({error}); \
                 HEROKU_API_KEY needs write access to the apps (the account API key, or heroku \
                 authorizations:create --scope write), or add them by hand (README: Deploys without a blip). \
                 Discovery goes on polling"
            );
            return None;
        }
        Some(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_url_is_the_public_url_and_the_receivers_path() {
        let subscriptions = Subscriptions::new("https://lb.example.com", "/_lb/", b"s");
        assert_eq!(
            subscriptions.hook_url,
            "https://lb.example.com/_lb/hooks/heroku"
        );
        assert!(subscriptions.cover(&[]));
        assert!(!subscriptions.cover(&["a".to_string()]));
    }
}
