//! Runs the real `heroku-lb` binary as a child process, the way Heroku runs it:
//! a Pingora YAML file written to a per-test tempdir, plus environment
//! variables. The child starts from an empty environment (only PATH, RUST_LOG
//! and what the test sets), listens on 127.0.0.1 on a port picked for it, and
//! writes stdout/stderr to files in the tempdir that assertions can read.
//! `LbBuilder::start` waits until the port accepts connections; `run_to_exit`
//! is for config tests, where the exit code and stderr are the result.
//! Dropping an `LbProcess` kills the child.
//! `balancer(backends)` is the static-mode setup most tests share (their
//! backends in `LB_BACKENDS`, health checks on `/health` every 0.3 s), an
//! `LbBuilder` to change further with its setters.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::backend::TestBackend;
use super::heroku_api::FakeHerokuApi;
use super::raw_backend::RawServer;
use super::slow_backend::SlowBackend;

/// Readiness: this many TCP connect attempts, `READY_INTERVAL` apart.
pub const READY_TRIES: u32 = 200;
pub const READY_INTERVAL: Duration = Duration::from_millis(50);

/// How many times `start` picks another port when the one it picked was
/// taken meanwhile (free ports are found by binding port 0 and letting go, so
/// a test running in parallel can grab the same port first).
pub const START_ATTEMPTS: u32 = 4;

/// How long config tests wait for the binary to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The path `balancer` health-checks; every test backend answers it.
pub const HEALTH_PATH: &str = "/health";
/// The health-check interval `balancer` sets, in seconds (`HEALTH_CHECK_INTERVAL`):
/// short, so that a backend going down or up shows within a second.
pub const HEALTH_INTERVAL: &str = "0.3";

/// Something a static-mode balancer can be pointed at: a URL, or a test
/// server (its `url()`).
pub trait Upstream {
    /// The URL that goes into `LB_BACKENDS`.
    fn upstream_url(&self) -> String;
}

impl Upstream for str {
    fn upstream_url(&self) -> String {
        self.to_string()
    }
}

impl Upstream for String {
    fn upstream_url(&self) -> String {
        self.clone()
    }
}

/// `Upstream` for test servers: their `url()`.
macro_rules! upstream_by_url {
    ($($server:ty),*) => {
        $(impl Upstream for $server {
            fn upstream_url(&self) -> String {
                self.url()
            }
        })*
    };
}

upstream_by_url!(TestBackend, SlowBackend, RawServer);

impl<T: Upstream + ?Sized> Upstream for &T {
    fn upstream_url(&self) -> String {
        (**self).upstream_url()
    }
}

/// A static-mode balancer over `backends`, as most tests want it: their URLs
/// in `LB_BACKENDS`, health checks on `HEALTH_PATH` every `HEALTH_INTERVAL`
/// seconds, and `LbBuilder::new`'s defaults. Change what a test needs with
/// the setters (`health_check_interval`, `default_health_check_interval`,
/// `passive_5xx_threshold`, `policy`, `status_token`, `env`, `config`, …),
/// then `start` or `start_healthy`. (The interval is `HEALTH_CHECK_INTERVAL`,
/// which wins over the file's `health_check_interval_seconds`: change it with
/// `health_check_interval`.)
pub fn balancer<U: Upstream>(backends: &[U]) -> LbBuilder {
    let urls: Vec<String> = backends.iter().map(Upstream::upstream_url).collect();
    LbBuilder::new()
        .backends(&urls)
        .health_check_path(HEALTH_PATH)
        .health_check_interval(HEALTH_INTERVAL)
}

/// What a test wants from one run of the balancer. Defaults:
/// `LB_LISTEN_HOST=127.0.0.1`, `PORT` = a free loopback port,
/// `RUST_LOG=info`, a config file with `threads: 1`, short grace periods and
/// `connect_timeout_seconds: 1`, and slow start and retries of quick 5xx
/// answers off (`slow_start_seconds: 0`, `retry_5xx_within_ms: 0`: they
/// change how traffic is spread, and most tests count exact splits or want
/// an app's 503 to reach them; the tests about them set their variables,
/// which win over the file); no backends (so demo mode unless the test sets
/// some).
#[derive(Clone)]
pub struct LbBuilder {
    env: BTreeMap<String, String>,
    /// Top-level Pingora keys, as `key -> YAML value`.
    server_keys: BTreeMap<String, String>,
    /// Keys of our `heroku_lb:` section, as `key -> YAML value`.
    section_keys: BTreeMap<String, String>,
    args: Vec<String>,
    config_file: bool,
}

impl Default for LbBuilder {
    fn default() -> Self {
        LbBuilder::new()
    }
}

impl LbBuilder {
    pub fn new() -> LbBuilder {
        LbBuilder {
            env: BTreeMap::new(),
            server_keys: BTreeMap::new(),
            section_keys: BTreeMap::new(),
            args: Vec::new(),
            config_file: true,
        }
        .env("LB_LISTEN_HOST", "127.0.0.1")
        .env("RUST_LOG", "info")
        .server_config("threads", "1")
        .server_config("grace_period_seconds", "1")
        .server_config("graceful_shutdown_timeout_seconds", "1")
        .config("connect_timeout_seconds", "1")
        .config("slow_start_seconds", "0")
        .config("retry_5xx_within_ms", "0")
    }

    /// Pipeline mode against the fake Platform API `api` (its key and URL),
    /// discovering `identifier` every 0.3 s.
    pub fn pipeline(api: &FakeHerokuApi, identifier: &str) -> LbBuilder {
        LbBuilder::new()
            .env("HEROKU_API_KEY", api.api_key())
            .env("PIPELINE_IDENTIFIER", identifier)
            .env("HEROKU_API_URL", api.url())
            .env("DISCOVERY_INTERVAL", "0.3")
    }

    /// Set an environment variable for the child (replaces an earlier value).
    pub fn env(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.env
            .insert(name.to_string(), value.as_ref().to_string());
        self
    }

    /// Leave a default variable unset (e.g. `LB_LISTEN_HOST`).
    pub fn unset_env(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }

    /// `LB_BACKENDS`: the backend URLs, comma-separated.
    pub fn backends<S: AsRef<str>>(self, urls: &[S]) -> Self {
        let joined = urls
            .iter()
            .map(|u| u.as_ref())
            .collect::<Vec<_>>()
            .join(",");
        self.env("LB_BACKENDS", joined)
    }

    /// `HEALTH_CHECK_PATH`: the path health checks request.
    pub fn health_check_path(self, path: &str) -> Self {
        self.env("HEALTH_CHECK_PATH", path)
    }

    /// `HEALTH_CHECK_INTERVAL`, in seconds (`"0.3"`, `"60"`); replaces an
    /// interval set before, in the environment or the file.
    pub fn health_check_interval(self, seconds: &str) -> Self {
        self.remove_config("health_check_interval_seconds")
            .env("HEALTH_CHECK_INTERVAL", seconds)
    }

    /// Leave the health-check interval at the balancer's default (5 s): no
    /// `HEALTH_CHECK_INTERVAL`, no `health_check_interval_seconds`.
    pub fn default_health_check_interval(self) -> Self {
        self.remove_config("health_check_interval_seconds")
            .unset_env("HEALTH_CHECK_INTERVAL")
    }

    /// `heroku_lb.passive_5xx_threshold`: 5xx answers in a row that eject a
    /// backend (0: passive ejection off).
    pub fn passive_5xx_threshold(self, answers: u32) -> Self {
        self.config("passive_5xx_threshold", &answers.to_string())
    }

    /// `LB_POLICY`: `round_robin` or `least_connections`.
    pub fn policy(self, policy: &str) -> Self {
        self.env("LB_POLICY", policy)
    }

    /// `LB_STATUS_TOKEN`; `start_healthy` then polls the status with it.
    pub fn status_token(self, token: &str) -> Self {
        self.env("LB_STATUS_TOKEN", token)
    }

    /// `LB_RESOLVE`: pin each hostname to an IP, like curl's --resolve.
    pub fn resolve(self, pins: &[(&str, &str)]) -> Self {
        let joined = pins
            .iter()
            .map(|(host, ip)| format!("{host}={ip}"))
            .collect::<Vec<_>>()
            .join(",");
        self.env("LB_RESOLVE", joined)
    }

    /// `SSL_CERT_FILE`: the CA bundle upstream certificates are checked against.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().display().to_string();
        self.env("SSL_CERT_FILE", path)
    }

    /// A key of our `heroku_lb:` section; `value` is YAML (`"1"`, `"[a, b]"`).
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.section_keys.insert(key.to_string(), value.to_string());
        self
    }

    /// Drop a key of the `heroku_lb:` section, defaults included.
    pub fn remove_config(mut self, key: &str) -> Self {
        self.section_keys.remove(key);
        self
    }

    /// A top-level Pingora key (`threads`, `grace_period_seconds`, …).
    pub fn server_config(mut self, key: &str, value: &str) -> Self {
        self.server_keys.insert(key.to_string(), value.to_string());
        self
    }

    /// An extra command-line argument after `-c <file>` (e.g. `-t`).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Run without `-c`: configuration from the environment only.
    pub fn without_config_file(mut self) -> Self {
        self.config_file = false;
        self
    }

    /// Start the child without waiting for it to listen.
    pub fn spawn(mut self) -> LbProcess {
        let dir = tempfile::Builder::new()
            .prefix("heroku-lb-test-")
            .tempdir()
            .expect("create a tempdir for the balancer");
        if !self.env.contains_key("PORT") {
            self.env
                .insert("PORT".to_string(), super::free_port().to_string());
        }
        let port = self.env["PORT"].parse().unwrap_or(0);

        let mut command = Command::new(env!("CARGO_BIN_EXE_heroku-lb"));
        if self.config_file {
            let config_path = dir.path().join("heroku-lb.yaml");
            std::fs::write(&config_path, self.render_config(dir.path()))
                .expect("write the balancer's config file");
            command.arg("-c").arg(&config_path);
        }
        command.args(&self.args);

        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.envs(&self.env);

        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create stdout.log"))
            .stderr(File::create(&stderr_path).expect("create stderr.log"));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", env!("CARGO_BIN_EXE_heroku-lb")));
        LbProcess {
            child,
            port,
            stdout_path,
            stderr_path,
            dir,
        }
    }

    /// Start the child and wait until it answers on its port; panics with the
    /// child's stderr if it exits or never listens. When the test did not fix
    /// `PORT`, the answer must come from the balancer itself (its status
    /// endpoint), else another server took the port and a new one is tried.
    pub async fn start(self) -> LbProcess {
        let port_fixed = self.env.contains_key("PORT");
        let mut attempt = 1;
        loop {
            let mut lb = self.clone().spawn();
            lb.wait_listening().await;
            if port_fixed
                || attempt == START_ATTEMPTS
                || lb.answers_as_balancer(&self.status_path()).await
            {
                return lb;
            }
            drop(lb);
            attempt += 1;
        }
    }

    /// `start`, then wait until `/_lb/status` shows `count` healthy backends
    /// (sending the status token if one is set); returns the balancer and a
    /// client (`common::http_client`). For the default admin prefix only.
    pub async fn start_healthy(self, count: u64) -> (LbProcess, reqwest::Client) {
        let token = self.env.get("LB_STATUS_TOKEN").cloned();
        let lb = self.start().await;
        let client = super::http_client();
        let mut poll = super::status::poll_status(&client, &lb);
        if let Some(token) = &token {
            poll = poll.token(token);
        }
        poll.until_healthy(count).await;
        (lb, client)
    }

    /// The status path under the configured (or default) admin prefix.
    fn status_path(&self) -> String {
        let prefix = self
            .section_keys
            .get("admin_path_prefix")
            .map(|value| value.trim_matches(|c| c == '"' || c == '\'').to_string())
            .unwrap_or_else(|| "/_lb/".to_string());
        format!("{prefix}status")
    }

    /// Run the child until it exits on its own (config tests). Panics, with
    /// its stderr, if it is still running after `timeout`; it is then killed.
    pub fn run_to_exit(self, timeout: Duration) -> LbExit {
        let started = Instant::now();
        let mut lb = self.spawn();
        let status = lb.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "heroku-lb still running after {timeout:?}; stderr:\n{}",
                lb.stderr()
            )
        });
        LbExit {
            status,
            elapsed: started.elapsed(),
            stdout: lb.stdout(),
            stderr: lb.stderr(),
        }
    }

    fn render_config(&self, dir: &Path) -> String {
        let mut yaml = String::from("---\nversion: 1\n");
        yaml.push_str(&format!(
            "pid_file: {}\n",
            dir.join("heroku-lb.pid").display()
        ));
        yaml.push_str(&format!(
            "upgrade_sock: {}\n",
            dir.join("heroku-lb.sock").display()
        ));
        for (key, value) in &self.server_keys {
            yaml.push_str(&format!("{key}: {value}\n"));
        }
        if !self.section_keys.is_empty() {
            yaml.push_str("heroku_lb:\n");
            for (key, value) in &self.section_keys {
                yaml.push_str(&format!("  {key}: {value}\n"));
            }
        }
        yaml
    }
}

/// How a run that was expected to end, ended.
#[derive(Debug)]
pub struct LbExit {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

/// A running balancer. Killed on drop.
pub struct LbProcess {
    child: Child,
    port: u16,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    // Last, so the files outlive the child on drop.
    dir: TempDir,
}

impl LbProcess {
    /// The port it was told to listen on (`PORT`; 0 if that was not a number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which starts with `/`).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tempdir holding the config file, pid file and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// stdout then stderr, for searching log lines wherever they went.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// The lines of stdout and stderr that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.output()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on our own child")
    }

    /// Wait up to `timeout` for the child to exit. None: still running (it is
    /// left running; drop kills it). Blocks the calling thread.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send SIGTERM (as Heroku does on restart), through the `kill` command.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Whether the server on our port is this balancer: alive, and its status
    /// endpoint answers with the balancer's JSON.
    async fn answers_as_balancer(&mut self, status_path: &str) -> bool {
        let client = super::http_client_with_timeout(Duration::from_secs(5));
        let reply = super::send(client.get(self.url_for(status_path))).await;
        self.try_status().is_none()
            && matches!(reply, Ok(reply) if reply.body.contains("\"backends_total\""))
    }

    /// Poll a TCP connect to the port, bounded by `READY_TRIES`.
    pub async fn wait_listening(&mut self) {
        let addr = ("127.0.0.1", self.port);
        for _ in 0..READY_TRIES {
            if let Some(status) = self.try_status() {
                panic!(
                    "heroku-lb exited ({status}) before listening on {}; stderr:\n{}",
                    self.port,
                    self.stderr()
                );
            }
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(READY_INTERVAL * 4, connect).await {
                return;
            }
            tokio::time::sleep(READY_INTERVAL).await;
        }
        panic!(
            "heroku-lb never listened on 127.0.0.1:{} ({READY_TRIES} tries, {READY_INTERVAL:?} apart); stderr:\n{}",
            self.port,
            self.stderr()
        );
    }

    /// Wait until a GET of `/warmup` is answered 200, i.e. requests are being
    /// proxied to some backend. Panics with stderr if that never happens.
    pub async fn wait_proxying(&self, client: &reqwest::Client) {
        let url = self.url_for("/warmup");
        let ok = super::poll_until(READY_TRIES, READY_INTERVAL, || async {
            matches!(super::send(client.get(&url)).await, Ok(reply) if reply.status == 200)
        })
        .await;
        if !ok {
            panic!(
                "heroku-lb never answered 200 on {url}; stderr:\n{}",
                self.stderr()
            );
        }
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Run to exit and check it failed with `culprit` in stderr.
pub fn assert_fails_naming(builder: LbBuilder, culprit: &str) -> LbExit {
    let exit = builder.run_to_exit(EXIT_TIMEOUT);
    assert!(
        !exit.status.success(),
        "expected a non-zero exit naming {culprit}, got {}; stderr:\n{}",
        exit.status,
        exit.stderr
    );
    assert!(
        exit.stderr.contains(culprit),
        "stderr does not name {culprit}:\n{}",
        exit.stderr
    );
    exit
}
