//! The embedded demo: three stand-in backends served by this process on
//! loopback, used when nothing else is configured, so that
//! `cargo run --release -- -c conf/pingora.yaml` shows round robin at once.
//!
//! `main.rs` binds the listeners before the server starts (so their ports are
//! known to discovery, through a static source) and runs them as a Pingora
//! `BackgroundService` that stops on shutdown. Each answers every request with
//! a line naming itself. The demo is refused on a dyno (`config`), so a
//! misconfigured production balancer fails loudly instead of serving this.

use crate::backend::BackendUrl;
use crate::discovery::AppSpec;
use async_trait::async_trait;
use log::{debug, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head a demo backend reads.
const MAX_HEAD: usize = 16 * 1024;

/// The demo backends: bound listeners, served once the server runs.
pub struct DemoBackends {
    /// Taken by `start`; a std mutex because it is touched once, at start.
    listeners: Mutex<Vec<std::net::TcpListener>>,
    apps: Vec<AppSpec>,
}

impl DemoBackends {
    /// Bind `count` demo backends on 127.0.0.1 at ports the OS picks.
    pub fn bind(count: usize) -> std::io::Result<Self> {
        let mut listeners = Vec::with_capacity(count);
        let mut apps = Vec::with_capacity(count);
        for n in 1..=count {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let port = listener.local_addr()?.port();
            let url = BackendUrl::parse(&format!("http://127.0.0.1:{port}"))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            apps.push(AppSpec {
                url,
                name: format!("demo-{n}"),
                weight: 1,
            });
            listeners.push(listener);
        }
        Ok(DemoBackends {
            listeners: Mutex::new(listeners),
            apps,
        })
    }

    /// The demo backends as discovery sees them.
    pub fn apps(&self) -> Vec<AppSpec> {
        self.apps.clone()
    }
}

#[async_trait]
impl BackgroundService for DemoBackends {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listeners =
            std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|p| p.into_inner()));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(e) => {
                    warn!("demo backend {} could not start: {e}", index + 1);
                    continue;
                }
            };
            tasks.spawn(serve(listener, index + 1));
        }
        // Stop serving when the server shuts down; dropping the set aborts the tasks.
        let _ = shutdown.changed().await;
        tasks.abort_all();
    }
}

async fn serve(listener: TcpListener, number: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, number));
            }
            Err(e) => {
                warn!("demo backend {number} accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answer requests on one connection until the client closes it or asks to.
async fn answer(mut stream: TcpStream, number: usize) {
    let body = format!("hello from heroku-lb demo backend {number}\n");
    let mut buffer = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(end) = find_head_end(&buffer) {
                break end;
            }
            if buffer.len() > MAX_HEAD {
                return;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        // The demo reads no bodies: a request with one gets its answer and the
        // connection closes, which keeps the framing honest.
        let has_body = head.lines().any(|line| {
            line.starts_with("transfer-encoding:")
                || (line.starts_with("content-length:") && line.trim_end() != "content-length: 0")
        });
        let close = has_body
            || head
                .lines()
                .any(|line| line.starts_with("connection:") && line.contains("close"));
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-demo-backend: {number}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
        debug!("demo backend {number} answered");
        buffer.drain(..head_end);
    }
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}
