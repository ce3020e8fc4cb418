//! A real `redis-server` (Debian's package) on 127.0.0.1, the store several
//! balancers share in `tests/shared_store.rs`: with TLS and a certificate
//! nobody can verify, as Heroku Key-Value Store's `rediss://` URLs (the
//! router's test certificate, whose names are not 127.0.0.1), or plain.
//! It can be killed (SIGKILL) and started again on the same port, and read
//! with `redis-cli`. A missing `redis-server` fails the test with the
//! package to install. Dropping it kills the server.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for the server to accept connections.
const READY: Duration = Duration::from_secs(10);

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A TLS server (`rediss://`) with a certificate the client cannot verify.
    pub fn start_tls() -> RedisServer {
        Self::start(true)
    }

    /// A plain server (`redis://`).
    pub fn start_plain() -> RedisServer {
        Self::start(false)
    }

    fn start(tls: bool) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("heroku-lb-redis-")
            .tempdir()
            .expect("a tempdir for redis-server");
        let mut server = RedisServer {
            child: None,
            port: super::free_port(),
            tls,
            dir,
        };
        server.spawn();
        server
    }

    fn binary() -> &'static str {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            found,
            "redis-server is not installed: the shared-store tests run a real one \
             (sudo apt-get install -y redis-server)"
        );
        "redis-server"
    }

    fn spawn(&mut self) {
        let certs = super::certs_dir();
        let mut command = Command::new(Self::binary());
        command
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path());
        if self.tls {
            command
                .arg("--port")
                .arg("0")
                .arg("--tls-port")
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(certs.join("router.pem"))
                .arg("--tls-key-file")
                .arg(certs.join("router.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.join("ca.pem"))
                .arg("--tls-auth-clients")
                .arg("no");
        } else {
            command.arg("--port").arg(self.port.to_string());
        }
        let log = std::fs::File::create(self.log_path()).expect("create redis.log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < READY {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server never listened on 127.0.0.1:{}; its log:\n{}",
            self.port,
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// `rediss://127.0.0.1:PORT` (TLS) or `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, as a store that goes away without a word.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port (empty: it saved nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `redis-cli` with `args` against this server; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.arg("-p").arg(self.port.to_string());
        if self.tls {
            command.arg("--tls").arg("--insecure");
        }
        let output = command.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
