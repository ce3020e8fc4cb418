//! A keep-alive HTTP/1.1 backend whose answers take the time a test chooses:
//! a rule maps each request path to a delay (`None`: answer at once, as for
//! health checks and warm-up). Every answer is a 200 with the backend's name
//! as the body and in `x-test-backend`. Paths are recorded as they arrive,
//! answered or not. Dropping it stops the server and cuts its connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::raw_backend::{named_ok, serve_keep_alive, RawServer};

/// How long a request to `path` waits before its answer (`None`: none).
type DelayRule = Arc<dyn Fn(&str) -> Option<Duration> + Send + Sync>;

pub struct SlowBackend {
    name: String,
    paths: Arc<Mutex<Vec<String>>>,
    server: RawServer,
}

impl SlowBackend {
    /// Start a backend called `name` on 127.0.0.1:0 delaying as `rule` says.
    pub async fn start(
        name: &str,
        rule: impl Fn(&str) -> Option<Duration> + Send + Sync + 'static,
    ) -> SlowBackend {
        let paths = Arc::new(Mutex::new(Vec::new()));
        let rule: DelayRule = Arc::new(rule);
        let server = RawServer::start({
            let name = name.to_string();
            let paths = Arc::clone(&paths);
            move |stream| {
                let (name, paths, rule) = (name.clone(), Arc::clone(&paths), Arc::clone(&rule));
                serve_keep_alive(stream, move |head| {
                    let (name, paths, rule) = (name.clone(), Arc::clone(&paths), Arc::clone(&rule));
                    async move {
                        paths.lock().unwrap().push(head.path.clone());
                        if let Some(delay) = rule(&head.path) {
                            tokio::time::sleep(delay).await;
                        }
                        named_ok(&name, "")
                    }
                })
            }
        })
        .await;
        SlowBackend {
            name: name.to_string(),
            paths,
            server,
        }
    }

    /// A backend that delays every request by `delay` except paths starting
    /// with `health_path`.
    pub async fn all_but_checks(name: &str, delay: Duration, health_path: &'static str) -> Self {
        Self::start(name, move |path| {
            (!path.starts_with(health_path)).then_some(delay)
        })
        .await
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Requests whose path starts with `prefix`, counted when they arrived.
    pub fn count_to(&self, prefix: &str) -> usize {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|path| path.starts_with(prefix))
            .count()
    }
}
