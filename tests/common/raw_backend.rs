//! Hand-written HTTP/1.1 backends, for answers a real server library would
//! not give (slow, malformed, cut off, with headers of the test's choosing).
//! `RawServer` listens on 127.0.0.1:0 and hands every accepted connection to
//! the test's handler; dropping it stops the listener and cuts every
//! connection. The readers below take one request head off a connection.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::backend::BACKEND_HEADER;

/// Longest request head `read_head` reads before giving up on a connection.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long `read_head` waits for a whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Most header lines `read_request` reads before calling a request malformed.
pub const MAX_HEADER_LINES: usize = 100;

/// A listener on 127.0.0.1:0 serving each connection with the test's handler.
pub struct RawServer {
    addr: SocketAddr,
    /// Owns the connection tasks too: aborting it drops them.
    accept_task: JoinHandle<()>,
}

impl RawServer {
    /// Listen on a fresh loopback port and run `handler` for every connection.
    pub async fn start<F, Fut>(handler: F) -> RawServer
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a raw backend on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        let accept_task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                match listener.accept().await {
                    Ok((stream, _peer)) => {
                        connections.spawn(handler(stream));
                    }
                    // Out of file descriptors or similar: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        RawServer { addr, accept_task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Read one request head (up to the blank line) within `HEAD_TIMEOUT`;
/// returns its request line, or None if the peer left, the head grew past
/// `MAX_HEAD` or the time ran out. A body is left unread.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 || head.len() > MAX_HEAD {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(HEAD_TIMEOUT, read).await.ok()??;
    let text = String::from_utf8_lossy(&head);
    text.lines().next().map(str::to_string)
}

/// One request as `read_request` read it off a keep-alive connection.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Path and query, as in the request line.
    pub path: String,
    /// Every header line, in order, value trimmed.
    pub headers: Vec<(String, String)>,
    /// The client asked to close the connection after this answer.
    pub close: bool,
}

impl RawRequest {
    /// The values of every `name` line, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Read one request and discard its body (by `Content-Length`), for serving
/// requests one after another on a keep-alive connection. None at end of
/// stream or for anything malformed.
pub async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<RawRequest> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    let mut close = false;
    for _ in 0..MAX_HEADER_LINES {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            if content_length > 0 {
                let mut body = vec![0; content_length];
                stream.read_exact(&mut body).await.ok()?;
            }
            return Some(RawRequest {
                path,
                headers,
                close,
            });
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
        headers.push((name.to_string(), value.to_string()));
    }
    None
}

/// Serve requests one after another on a keep-alive connection: `answer`
/// turns each request into the whole response. Stops when the peer closes,
/// a write fails, or the request asked to close the connection.
pub async fn serve_keep_alive<F, Fut>(stream: TcpStream, mut answer: F)
where
    F: FnMut(RawRequest) -> Fut,
    Fut: Future<Output = String>,
{
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_request(&mut stream).await {
        let close = request.close;
        let response = answer(request).await;
        if stream
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

/// A 200 response with `name` as its plain-text body and in `x-test-backend`,
/// plus `extra_headers` (each line ending in `\r\n`).
pub fn named_ok(name: &str, extra_headers: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{BACKEND_HEADER}: {name}\r\n{extra_headers}\r\n{name}",
        name.len()
    )
}
