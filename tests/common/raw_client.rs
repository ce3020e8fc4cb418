//! The client side written by hand: requests an HTTP client library would refuse or tidy up
//! (smuggling, oversized heads, hop-by-hop headers, pipelining) go out as raw bytes on a
//! `TcpStream`, and the answers are read back by a small HTTP/1.1 response parser, bounded in
//! size (`MAX_HEAD`, `MAX_BODY`) and in time (each read of an answer gives up after the
//! connection's timeout). Bytes that arrive past one answer stay for the next, so pipelined
//! answers read one after another.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::lb::LbProcess;

/// How long one read of an answer (or a connect) may take unless the connection says otherwise.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response head (status line and header lines) read before giving up.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest response body read before giving up.
pub const MAX_BODY: usize = 1024 * 1024;
/// Most trailer lines read after a chunked body.
const MAX_TRAILER_LINES: usize = 100;

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The head as it came, status line to blank line, for failure messages.
    pub head: String,
    /// `(name, value)` of each header line, in order, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Empty when only the head was read (`RawConnection::read_head`).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection written and read by hand.
pub struct RawConnection {
    stream: TcpStream,
    /// Bytes read but not yet part of an answer.
    pending: Vec<u8>,
    timeout: Duration,
}

impl RawConnection {
    /// Connect to 127.0.0.1:`port` within `RAW_TIMEOUT`.
    pub async fn connect(port: u16) -> Result<RawConnection, String> {
        let connect = TcpStream::connect(("127.0.0.1", port));
        match tokio::time::timeout(RAW_TIMEOUT, connect).await {
            Ok(Ok(stream)) => Ok(RawConnection::new(stream)),
            Ok(Err(e)) => Err(format!("connect to 127.0.0.1:{port}: {e}")),
            Err(_) => Err(format!(
                "connect to 127.0.0.1:{port}: none within {RAW_TIMEOUT:?}"
            )),
        }
    }

    /// A connection to the balancer; panics (with its output) when there is none.
    pub async fn to(lb: &LbProcess) -> RawConnection {
        RawConnection::connect(lb.port())
            .await
            .unwrap_or_else(|e| panic!("{e}\nbalancer output:\n{}", lb.output()))
    }

    /// Read and write on an open stream.
    pub fn new(stream: TcpStream) -> RawConnection {
        RawConnection {
            stream,
            pending: Vec::new(),
            timeout: RAW_TIMEOUT,
        }
    }

    /// Give each read of an answer `timeout` instead of `RAW_TIMEOUT`.
    pub fn with_timeout(mut self, timeout: Duration) -> RawConnection {
        self.timeout = timeout;
        self
    }

    /// Write `bytes`, within the connection's timeout.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err(format!("write: not done within {:?}", self.timeout)),
        }
    }

    /// Read one whole answer: the head, then a body framed by chunked encoding, by
    /// `Content-Length`, or (with neither) by the end of the connection; none for 1xx, 204
    /// and 304. Err says what went wrong (closed, malformed, too large, too slow).
    pub async fn read_response(&mut self) -> Result<RawResponse, String> {
        let timeout = self.timeout;
        let read = async {
            let mut response = self.head().await?;
            response.body = self.body(&response).await?;
            Ok(response)
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| Err(format!("no whole answer within {timeout:?}")))
    }

    /// Read the head of one answer and leave its body unread (for an answer to HEAD, or when
    /// only the status and headers matter).
    pub async fn read_head(&mut self) -> Result<RawResponse, String> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.head())
            .await
            .unwrap_or_else(|_| Err(format!("no answer head within {timeout:?}")))
    }

    /// Whether the peer closes the connection (end of stream or reset) within the timeout;
    /// what it sends first (up to `MAX_BODY` bytes) is read and dropped.
    pub async fn closed_by_peer(&mut self) -> bool {
        let drain = async {
            let mut buf = [0u8; 8192];
            let mut drained = 0;
            while drained <= MAX_BODY {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => drained += n,
                }
            }
            false
        };
        tokio::time::timeout(self.timeout, drain)
            .await
            .unwrap_or(false)
    }

    /// The stream itself, for reads and writes of one's own.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Read more bytes into `pending`; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, String> {
        let mut buf = [0u8; 8192];
        let n = self
            .stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        self.pending.extend_from_slice(&buf[..n]);
        Ok(n > 0)
    }

    /// Take the first `n` pending bytes, reading more as needed.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.pending.len() < n {
            if !self.fill().await? {
                return Err(format!(
                    "the connection ended {} bytes short of {n}",
                    n - self.pending.len()
                ));
            }
        }
        Ok(self.pending.drain(..n).collect())
    }

    /// Take one line, CRLF included (at most `MAX_HEAD` bytes).
    async fn line(&mut self) -> Result<String, String> {
        loop {
            let window = &self.pending[..self.pending.len().min(MAX_HEAD)];
            if let Some(at) = window.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(at + 2).await?;
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.pending.len() >= MAX_HEAD {
                return Err(format!("a line longer than {MAX_HEAD} bytes"));
            }
            if !self.fill().await? {
                return Err("the connection ended inside a line".to_string());
            }
        }
    }

    /// Take one head and parse its status line and header lines.
    async fn head(&mut self) -> Result<RawResponse, String> {
        let end = loop {
            let window = &self.pending[..self.pending.len().min(MAX_HEAD)];
            if let Some(at) = window.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.pending.len() >= MAX_HEAD {
                return Err(format!("a head longer than {MAX_HEAD} bytes"));
            }
            if !self.fill().await? {
                return Err(if self.pending.is_empty() {
                    "the connection ended before an answer".to_string()
                } else {
                    format!(
                        "the connection ended inside a head: {:?}",
                        String::from_utf8_lossy(&self.pending)
                    )
                });
            }
        };
        let head = String::from_utf8_lossy(&self.take(end).await?).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let mut headers = Vec::new();
        for line in lines.filter(|line| !line.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("not a header line: {line:?}"))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(RawResponse {
            status,
            head,
            headers,
            body: Vec::new(),
        })
    }

    /// Take the body of `response` by its framing.
    async fn body(&mut self, response: &RawResponse) -> Result<Vec<u8>, String> {
        if response.status / 100 == 1 || matches!(response.status, 204 | 304) {
            return Ok(Vec::new());
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"));
        if chunked {
            return self.chunked_body().await;
        }
        if let Some(length) = response.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|e| format!("content-length {length:?}: {e}"))?;
            if length > MAX_BODY {
                return Err(format!("content-length {length} is over {MAX_BODY}"));
            }
            return self.take(length).await;
        }
        // Neither: the body runs to the end of the connection.
        while self.fill().await? {
            if self.pending.len() > MAX_BODY {
                return Err(format!("a body longer than {MAX_BODY} bytes"));
            }
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Take a chunked body (its trailer fields are read and dropped).
    async fn chunked_body(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.trim_end().split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("not a chunk size: {line:?}"))?;
            if size == 0 {
                for _ in 0..MAX_TRAILER_LINES {
                    if self.line().await? == "\r\n" {
                        return Ok(body);
                    }
                }
                return Err(format!("more than {MAX_TRAILER_LINES} trailer lines"));
            }
            if body.len() + size > MAX_BODY {
                return Err(format!("a chunked body longer than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&self.take(size).await?);
            if self.take(2).await? != b"\r\n" {
                return Err(format!("chunk of {size} bytes not followed by CRLF"));
            }
        }
    }
}

/// Send `request` on a fresh connection to the balancer; return the first answer (or why there
/// is none) and whether the balancer then closed the connection (within `RAW_TIMEOUT`).
pub async fn raw_exchange(lb: &LbProcess, request: &[u8]) -> (Result<RawResponse, String>, bool) {
    let mut connection = RawConnection::to(lb).await;
    // A refused request may be answered, and the connection closed, before all of it is
    // written; the answer is what counts.
    let _ = connection.send(request).await;
    let response = connection.read_response().await;
    let closed = connection.closed_by_peer().await;
    (response, closed)
}

/// Send `request` on a fresh connection to the balancer and read the head of the first answer
/// (or say why there is none).
pub async fn raw_head(lb: &LbProcess, request: &[u8]) -> Result<RawResponse, String> {
    let mut connection = RawConnection::connect(lb.port()).await?;
    connection.send(request).await?;
    connection.read_head().await
}
