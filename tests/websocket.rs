//! WebSocket through the balancer. An upgrade request goes to one backend,
//! its 101 and every frame after it pass through unchanged in both
//! directions, and the upgrade counts as that backend's 1xx answer (in the
//! metrics and the access line), not as a request that got no answer. When
//! the backend resets the connection after its 101, the client's connection
//! ends too: the request is not sent again to another backend (the client's
//! frames went to the first one already, and a second 101 could not reach
//! the client anyway), and the backend is not ejected for it.
//!
//! The backends here speak plain HTTP/1.1 too, since the balancer checks
//! `/health` on them: each reads a request head itself and answers 200, or,
//! for a WebSocket upgrade, writes the 101 and hands the connection (with
//! any bytes read past the head) to tokio-tungstenite.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use common::lb::{balancer, LbProcess, Upstream};
use common::raw_backend::{RawServer, HEAD_TIMEOUT, MAX_HEAD};
use common::status::{entry, status, wait_healthy, wait_in_flight_zero};

/// The path client WebSocket connections use; checks go to `/health`.
const WS_PATH: &str = "/ws";
/// How long a backend's WebSocket waits for the next frame before giving up.
const WS_IDLE: Duration = Duration::from_secs(30);
/// Most plain requests a backend serves on one keep-alive connection.
const MAX_REQUESTS_PER_CONNECTION: usize = 10_000;
/// How long the client waits for the WebSocket handshake through the balancer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a backend does once it has answered an upgrade with 101.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterUpgrade {
    /// Echo every text and binary message back; answer a Close with a Close.
    Echo,
    /// Read this many whole frames, then reset the TCP connection (SO_LINGER 0).
    ResetAfterFrames(usize),
}

/// What reached one backend.
#[derive(Default)]
struct Seen {
    /// Request lines of plain (non-upgrade) requests, health checks included.
    plain: Mutex<Vec<String>>,
    /// One entry per upgrade request: the bytes read on that connection,
    /// from the request head on. An echoing backend records only the head
    /// (tokio-tungstenite reads the rest); a resetting one, all it read.
    upgrades: Mutex<Vec<Vec<u8>>>,
    /// Whole frames `ResetAfterFrames` read before resetting (all connections).
    frames_before_reset: AtomicUsize,
}

/// A backend that answers plain requests 200 and WebSocket upgrades 101.
struct WsBackend {
    server: RawServer,
    seen: Arc<Seen>,
}

impl Upstream for WsBackend {
    fn upstream_url(&self) -> String {
        self.url()
    }
}

impl WsBackend {
    async fn start(after: AfterUpgrade) -> WsBackend {
        let seen = Arc::new(Seen::default());
        let handler_seen = seen.clone();
        let server =
            RawServer::start(move |stream| serve(stream, handler_seen.clone(), after)).await;
        WsBackend { server, seen }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// The `backend` label of its metrics in static mode: `host:port`.
    fn label(&self) -> String {
        self.server.addr().to_string()
    }

    fn upgrade_count(&self) -> usize {
        self.seen.upgrades.lock().unwrap().len()
    }

    fn upgrades(&self) -> Vec<Vec<u8>> {
        self.seen.upgrades.lock().unwrap().clone()
    }

    /// Plain requests whose request line names a path starting with `prefix`.
    fn plain_requests_to(&self, prefix: &str) -> Vec<String> {
        self.seen
            .plain
            .lock()
            .unwrap()
            .iter()
            .filter(|line| {
                line.split_whitespace()
                    .nth(1)
                    .is_some_and(|path| path.starts_with(prefix))
            })
            .cloned()
            .collect()
    }
}

/// Serve one connection: plain requests one after another (keep-alive),
/// until an upgrade request turns it into a WebSocket.
async fn serve(mut stream: TcpStream, seen: Arc<Seen>, after: AfterUpgrade) {
    let mut buf = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let Some(head_len) = read_until_head(&mut stream, &mut buf).await else {
            return;
        };
        let head: Vec<u8> = buf.drain(..head_len).collect();
        let text = String::from_utf8_lossy(&head).into_owned();
        let request_line = text.lines().next().unwrap_or_default().to_string();
        let headers = header_lines(&text);
        let is_upgrade = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket"));
        let key = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
            .map(|(_, v)| v.clone());
        if let (true, Some(key)) = (is_upgrade, key) {
            upgrade(stream, head, buf, &key, &seen, after).await;
            return;
        }
        seen.plain.lock().unwrap().push(request_line);
        let close = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        let body = "ok\n";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Answer an upgrade with 101, then do what `after` says.
async fn upgrade(
    mut stream: TcpStream,
    head: Vec<u8>,
    rest: Vec<u8>,
    key: &str,
    seen: &Seen,
    after: AfterUpgrade,
) {
    let index = {
        let mut upgrades = seen.upgrades.lock().unwrap();
        upgrades.push(head);
        upgrades.len() - 1
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    match after {
        AfterUpgrade::Echo => {
            let mut ws =
                WebSocketStream::from_partially_read(stream, rest, Role::Server, None).await;
            // Reading drives tungstenite's automatic Close reply, too.
            while let Ok(Some(Ok(message))) = tokio::time::timeout(WS_IDLE, ws.next()).await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    return;
                }
            }
        }
        AfterUpgrade::ResetAfterFrames(frames) => {
            let mut received = rest;
            let mut chunk = [0u8; 16 * 1024];
            let read_frames = async {
                while whole_frames(&received) < frames {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => received.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            let _ = tokio::time::timeout(WS_IDLE, read_frames).await;
            seen.frames_before_reset
                .fetch_add(whole_frames(&received), Ordering::SeqCst);
            seen.upgrades.lock().unwrap()[index].extend_from_slice(&received);
            // An abortive close: the peer gets a RST, not a FIN.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    }
}

/// Read into `buf` until it holds a whole request head; returns the head's
/// length (blank line included). None when the peer left, the head grew past
/// `MAX_HEAD`, or `HEAD_TIMEOUT` passed.
async fn read_until_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let find = |buf: &[u8]| {
        buf.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
    };
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(len) = find(buf) {
                return Some(len);
            }
            if buf.len() > MAX_HEAD {
                return None;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, read).await.ok()?
}

/// `(name, value)` of every header line of a request head, values trimmed.
fn header_lines(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

/// How many whole WebSocket frames `buf` holds, from its start.
fn whole_frames(buf: &[u8]) -> usize {
    let mut at = 0;
    let mut count = 0;
    while let Some(len) = frame_len(&buf[at..]) {
        if buf.len() - at < len {
            break;
        }
        at += len;
        count += 1;
    }
    count
}

/// The length of the WebSocket frame at the start of `buf` (header, mask
/// and payload), once enough of its header is there to tell.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let second = *buf.get(1)?;
    let (payload, header) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        short => (short as usize, 2),
    };
    let mask: usize = if second & 0x80 != 0 { 4 } else { 0 };
    Some((header + mask).saturating_add(payload))
}

/// Open a WebSocket to `/ws` through the balancer; panics (with the
/// balancer's output) when the handshake fails or takes too long.
async fn connect(lb: &LbProcess) -> WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let url = format!("ws://127.0.0.1:{}{WS_PATH}", lb.port());
    let (ws, response) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|_| {
                panic!("no WebSocket handshake on {url} within {CONNECT_TIMEOUT:?}")
            })
            .unwrap_or_else(|e| {
                panic!(
                    "WebSocket handshake on {url} failed: {e}\nbalancer output:\n{}",
                    lb.output()
                )
            });
    assert_eq!(response.status().as_u16(), 101, "{response:?}");
    ws
}

/// The `i`-th message of the echo run: its size cycles through the edges of
/// the frame-length encodings (7-bit, 16-bit, 64-bit), with a 1 MiB one
/// every 100 messages; text and binary alternate, shifted by one each cycle
/// so that every size comes as both; the content depends on `i`, so that a
/// swapped or shifted message shows.
fn echo_message(i: usize) -> Message {
    const SIZES: [usize; 8] = [0, 1, 125, 126, 127, 4096, 65535, 65536];
    let size = if i % 100 == 50 {
        1024 * 1024
    } else {
        SIZES[i % SIZES.len()]
    };
    if (i + i / SIZES.len()).is_multiple_of(2) {
        // Printable ASCII, so valid UTF-8 of exactly `size` bytes.
        let text: String = (0..size)
            .map(|j| char::from(b' ' + ((i * 7 + j) % 95) as u8))
            .collect();
        Message::text(text)
    } else {
        let bytes: Vec<u8> = (0..size).map(|j| (i * 31 + j * 17) as u8).collect();
        Message::binary(bytes)
    }
}

/// A short description of a message for failure messages.
fn describe(message: &Message) -> String {
    match message {
        Message::Text(text) => format!("text of {} bytes", text.len()),
        Message::Binary(bytes) => format!("binary of {} bytes", bytes.len()),
        other => format!("{other:?}"),
    }
}

/// The sample `heroku_lb_requests_total{backend="<label>",class="<class>"}`
/// of `/_lb/metrics` (None when it is missing).
async fn requests_total(
    client: &reqwest::Client,
    lb: &LbProcess,
    label: &str,
    class: &str,
) -> Option<f64> {
    let reply = common::get(client, &lb.url_for("/_lb/metrics")).await;
    assert_eq!(reply.status, 200, "/_lb/metrics: {reply:?}");
    let series = format!("heroku_lb_requests_total{{backend=\"{label}\",class=\"{class}\"}} ");
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
}

/// The balancer's access lines for WebSocket requests.
fn ws_access_lines(lb: &LbProcess) -> Vec<String> {
    lb.stdout()
        .lines()
        .filter(|line| line.contains(&format!("path=\"{WS_PATH}\" ")))
        .map(str::to_string)
        .collect()
}

/// A thousand text and binary messages of 0 B to 1 MiB come back byte-for-byte and in order, the close handshake completes, and the upgrade is counted and logged as a 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_a_thousand_messages_in_order_and_closes_cleanly_counted_as_a_101() {
    const MESSAGES: usize = 1000;
    let backend = WsBackend::start(AfterUpgrade::Echo).await;
    let lb = balancer(&[&backend])
        .default_health_check_interval()
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 1).await;

    let ws = connect(&lb).await;
    let (mut sink, mut stream) = ws.split();
    let started = Instant::now();
    // Sent from another task while this one reads, so the messages are in
    // flight together and an out-of-order delivery would show.
    let sender = tokio::spawn(async move {
        for i in 0..MESSAGES {
            sink.send(echo_message(i))
                .await
                .map_err(|e| format!("sending message {i}: {e}"))?;
        }
        Ok::<_, String>(sink)
    });
    let mut bytes = 0usize;
    for i in 0..MESSAGES {
        let expected = echo_message(i);
        let got = tokio::time::timeout(common::CLIENT_TIMEOUT, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no echo of message {i} within {:?}", common::CLIENT_TIMEOUT)
            })
            .unwrap_or_else(|| panic!("the connection ended before the echo of message {i}"))
            .unwrap_or_else(|e| panic!("reading the echo of message {i}: {e}"));
        if got != expected {
            panic!(
                "echo {i} differs: sent {}, got {}",
                describe(&expected),
                describe(&got)
            );
        }
        bytes += expected.len();
    }
    let mut sink = tokio::time::timeout(common::CLIENT_TIMEOUT, sender)
        .await
        .expect("the sender finished")
        .expect("the sender task did not panic")
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{MESSAGES} messages, {} MiB each way, echoed in {:?}",
        bytes / (1024 * 1024),
        started.elapsed()
    );

    // The client starts the close handshake; the backend answers it.
    tokio::time::timeout(common::CLIENT_TIMEOUT, sink.close())
        .await
        .expect("sending Close in time")
        .expect("sending Close");
    let reply = tokio::time::timeout(common::CLIENT_TIMEOUT, stream.next())
        .await
        .expect("an answer to Close in time");
    assert!(
        matches!(reply, Some(Ok(Message::Close(_)))),
        "expected a Close frame back, got {reply:?}"
    );
    let end = tokio::time::timeout(common::CLIENT_TIMEOUT, stream.next())
        .await
        .expect("the connection ends after the close handshake");
    assert!(
        matches!(end, None | Some(Err(_))),
        "expected the end of the connection after Close, got {end:?}"
    );

    // The request is logged and counted once the balancer has finished it.
    let label = backend.label();
    let counted = common::poll_until(100, Duration::from_millis(50), || async {
        let answered = requests_total(&client, &lb, &label, "1xx")
            .await
            .unwrap_or(0.0);
        let unanswered = requests_total(&client, &lb, &label, "error")
            .await
            .unwrap_or(0.0);
        answered + unanswered >= 1.0 && !ws_access_lines(&lb).is_empty()
    })
    .await;
    assert!(
        counted,
        "the WebSocket request was never counted and logged\nbalancer output:\n{}",
        lb.output()
    );
    let answered = requests_total(&client, &lb, &label, "1xx").await;
    let unanswered = requests_total(&client, &lb, &label, "error").await;
    assert_eq!(
        (answered, unanswered),
        (Some(1.0), Some(0.0)),
        "heroku_lb_requests_total{{backend=\"{label}\"}}: (class=\"1xx\", class=\"error\"); the upgrade was answered with a 101\nbalancer output:\n{}",
        lb.output()
    );
    let lines = ws_access_lines(&lb);
    assert_eq!(lines.len(), 1, "one access line for {WS_PATH}: {lines:#?}");
    assert!(
        lines[0].contains(" status=101 "),
        "the access line should say status=101: {}",
        lines[0]
    );
    assert_eq!(backend.upgrade_count(), 1);
    wait_in_flight_zero(&client, &lb).await;
}

/// A backend that resets its WebSocket after the 101 ends the client's connection; the upgrade is not sent again to another backend, nor are the client's frames, and no backend is ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_reset_by_its_backend_after_the_101_is_not_retried_on_another_backend() {
    // The backend reads every frame the client sends before it resets, so
    // the reset reaches the balancer while it waits to read from the
    // backend, not while it writes to it. (A reset met while writing the
    // client's frames ends the request quietly in Pingora 0.9; one met
    // while reading is the error a retry could follow.)
    const FRAMES: usize = 3;
    let first = WsBackend::start(AfterUpgrade::ResetAfterFrames(FRAMES)).await;
    let second = WsBackend::start(AfterUpgrade::ResetAfterFrames(FRAMES)).await;
    let backends = [&first, &second];
    let lb = balancer(&backends)
        .default_health_check_interval()
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 2).await;

    let mut ws = connect(&lb).await;
    for i in 0..FRAMES {
        let message = Message::binary(vec![i as u8; 10 * 1024]);
        tokio::time::timeout(common::CLIENT_TIMEOUT, ws.send(message))
            .await
            .unwrap_or_else(|_| panic!("sending message {i} timed out"))
            .unwrap_or_else(|e| panic!("sending message {i}: {e}"));
    }
    // The connection must end: nothing is read from it but its end.
    let sent = Instant::now();
    let mut read_after_reset = Vec::new();
    let outcome = tokio::time::timeout(common::CLIENT_TIMEOUT, async {
        for _ in 0..100 {
            match ws.next().await {
                None => return "end of stream".to_string(),
                Some(Err(e)) => return format!("error: {e}"),
                Some(Ok(Message::Close(frame))) => return format!("Close {frame:?}"),
                Some(Ok(other)) => read_after_reset.push(describe(&other)),
            }
        }
        "still open after 100 messages".to_string()
    })
    .await
    .unwrap_or_else(|_| "still open after the timeout".to_string());
    println!("client side: {outcome} after {:?}", sent.elapsed());
    drop(ws);

    // Let the balancer finish the request before reading what arrived where.
    wait_in_flight_zero(&client, &lb).await;
    let counts: Vec<usize> = backends.iter().map(|b| b.upgrade_count()).collect();
    let received: Vec<Vec<usize>> = backends
        .iter()
        .map(|b| b.upgrades().iter().map(Vec::len).collect())
        .collect();
    let snapshot = status(&client, &lb).await;
    let states: Vec<Value> = backends
        .iter()
        .map(|b| entry(&snapshot, &b.url())["state"].clone())
        .collect();
    let report = format!(
        "upgrade requests per backend: {counts:?}; bytes read on each upgraded connection: {received:?}; \
         client side: {outcome}; messages read after the reset: {read_after_reset:?}; backend states: {states:?}\n\
         balancer output:\n{}",
        lb.output()
    );
    assert_eq!(
        counts.iter().sum::<usize>(),
        1,
        "exactly one backend should get the upgrade request, once; {report}"
    );
    let (reset, other) = if counts[0] == 1 {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert!(
        other.plain_requests_to(WS_PATH).is_empty(),
        "the other backend got {WS_PATH} as a plain request: {:?}; {report}",
        other.plain_requests_to(WS_PATH)
    );
    assert_eq!(
        reset.seen.frames_before_reset.load(Ordering::SeqCst),
        FRAMES,
        "the backend did not read every frame before resetting; {report}"
    );
    assert!(
        !outcome.starts_with("still open"),
        "the client's connection did not end after the backend's reset; {report}"
    );
    assert!(
        read_after_reset.is_empty(),
        "the client read messages though its backend only reset; {report}"
    );
    // A WebSocket its app dropped is no sign of a broken app.
    assert!(
        states.iter().all(|state| state == "healthy"),
        "every backend should still be healthy; {report}"
    );
}

/// A quiet WebSocket to an app that leaves the pipeline stays open for `LB_DRAIN_TIMEOUT_SECONDS`, then its connection is closed; nothing stays in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_to_an_app_that_leaves_is_closed_after_the_drain_timeout() {
    let api = common::heroku_api::FakeHerokuApi::start("hrku-test-key-ws-drain");
    let pipeline = api.add_pipeline("ws-drain");
    let backend = WsBackend::start(AfterUpgrade::Echo).await;
    let app = api.add_app(common::heroku_api::AppFixture::new(
        "ws-drain-1",
        &pipeline,
        &format!("{}/", backend.url()),
    ));
    let lb = common::lb::LbBuilder::pipeline(&api, pipeline.as_str())
        .health_check_path("/health")
        .env("LB_DRAIN_TIMEOUT_SECONDS", "2")
        .start()
        .await;
    let client = common::http_client();
    wait_healthy(&client, &lb, 1).await;
    let mut ws = connect(&lb).await;
    ws.send(Message::text("before")).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(
        matches!(echoed, Ok(Some(Ok(Message::Text(ref t)))) if t.as_str() == "before"),
        "{echoed:?}"
    );

    api.decouple_app(&app);
    let left = Instant::now();
    common::status::poll_status(&client, &lb)
        .until("the app gone", |s| s["backends_total"] == 0)
        .await;
    // Inside the drain timeout the connection still works.
    ws.send(Message::text("while draining"))
        .await
        .expect("send while draining");
    let echoed = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
    assert!(
        matches!(echoed, Ok(Some(Ok(Message::Text(_))))),
        "{echoed:?}"
    );
    // Then it is closed, though both ends keep quiet.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let after = left.elapsed();
    println!("the upgraded connection closed {after:?} after the app left (drain timeout 2 s)");
    assert!(
        closed.is_ok(),
        "the connection to the app that left stayed open"
    );
    assert!(
        after >= Duration::from_millis(1500),
        "closed before the drain timeout: {after:?}"
    );
    common::wait_until(
        "the drain's log line",
        100,
        Duration::from_millis(50),
        || async { lb.lines_with("drained: closed 1 upgraded connection").len() == 1 },
    )
    .await;
    wait_in_flight_zero(&client, &lb).await;
}
