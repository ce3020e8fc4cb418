//! A fixed list of backend URLs (`LB_BACKENDS`, the demo): the simplest
//! [`AppSource`]. It answers once; discovery keeps re-resolving the names.

use super::{AppSource, AppSpec, Round, SourceError};
use crate::backend::BackendUrl;
use async_trait::async_trait;

/// Backends named in the configuration; each weighs 1 and is named by its host.
pub struct StaticSource {
    label: &'static str,
    apps: Vec<AppSpec>,
}

impl StaticSource {
    /// A source for `urls`, described as `label` ("static", "demo") in status.
    pub fn new(label: &'static str, urls: &[BackendUrl]) -> Self {
        let apps = urls
            .iter()
            .map(|url| AppSpec {
                name: url.host_header(),
                url: url.clone(),
                weight: 1,
            })
            .collect();
        StaticSource { label, apps }
    }

    /// The same, with names of our choosing (the demo backends).
    pub fn named(label: &'static str, apps: Vec<AppSpec>) -> Self {
        StaticSource { label, apps }
    }
}

#[async_trait]
impl AppSource for StaticSource {
    fn describe(&self) -> String {
        self.label.to_string()
    }

    async fn round(&self) -> Result<Round, SourceError> {
        Ok(Round {
            apps: self.apps.clone(),
            next_round_in: None,
            incomplete: None,
            hints: Vec::new(),
        })
    }
}
