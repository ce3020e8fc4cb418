//! Fake Heroku Platform API: a real HTTP/1.1 server on 127.0.0.1 that the pipeline discovery
//! talks to in integration tests instead of `https://api.heroku.com`.
//! Tests build a pipeline and its apps, change them while the balancer runs, read back every
//! request it made (to count what a discovery round costs), and flip failure switches.
//! It keeps Heroku's real paths, headers and JSON shapes (from the `@heroku-cli/schema` types):
//! `Accept` version check (406), Bearer key (401), `RateLimit-Remaining` and `Request-Id` on every
//! answer, `Range`/`Next-Range` paging with 206, and `ETag`/`If-None-Match` with 304.
//! The server runs on its own thread and Tokio runtime, so every method is synchronous and works
//! from plain and `#[tokio::test]` tests alike; dropping the handle stops it.
//!
//! This file owns the handle [`FakeHerokuApi`] (its start, recording and rate-limit methods),
//! the server thread and the path of one request through it. The rest, by concern:
//! `model` (pipelines, apps, couplings, formations and their JSON), `routing` (paths to
//! endpoints, `Accept` and key checks), `paging` (`Range`/`Next-Range`, `ETag`/304) and
//! `failures` (the [`Failure`] switches and what they do to an answer), `webhooks` (app
//! webhook subscriptions, the preboot feature, signed deliveries).

mod failures;
mod model;
mod paging;
mod routing;
mod webhooks;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::held_port::{self, DownListener};

// The public names, all at `heroku_api::` as before the split; a test binary uses some of them.
#[allow(unused_imports)]
pub use failures::{Failure, HUGE_PADDING};
#[allow(unused_imports)]
pub use model::{AppFixture, AppId, PipelineId, STAGES};
#[allow(unused_imports)]
pub use paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
#[allow(unused_imports)]
pub use routing::RecordedRequest;
#[allow(unused_imports)]
pub use webhooks::{post as post_delivery, signature as webhook_signature};

use failures::ReplyBody;
use model::{derived_uuid, State};
use routing::{rate_limited, record, route, Answer};

/// `RateLimit-Remaining` a fresh fake starts from: Heroku's bucket holds about 4,500 tokens.
pub const DEFAULT_RATE_LIMIT: u32 = 4500;

/// Handle on a running fake Platform API; dropping it stops the server.
pub struct FakeHerokuApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHerokuApi {
    /// Starts the fake on 127.0.0.1 (a port the kernel picks, held until the fake is dropped),
    /// accepting `Authorization: Bearer <api_key>`.
    /// Defaults: no pipelines or apps, `RateLimit-Remaining` [`DEFAULT_RATE_LIMIT`], no page-size
    /// cap, no failure, and a 304 costs a token like any request.
    pub fn start(api_key: &str) -> Self {
        let remaining = DEFAULT_RATE_LIMIT;
        let listener = held_port::bind_loopback();
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared {
            api_key: api_key.to_string(),
            state: Mutex::new(State::new(remaining)),
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fake-heroku-api".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("building the fake Heroku API runtime");
                runtime.block_on(serve(server_shared, listener, control_rx));
                runtime.shutdown_background();
            })
            .expect("spawning the fake Heroku API thread");
        FakeHerokuApi {
            addr,
            shared,
            control,
            thread: Some(thread),
        }
    }

    /// Base URL to give the client: `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API key the fake accepts.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    // ---- rate limit ----

    /// Sets the `RateLimit-Remaining` the next answer counts down from. At 0 every request
    /// answers 429 `rate_limit`, as Heroku does when the bucket is empty.
    pub fn set_rate_limit_remaining(&self, remaining: u32) {
        self.state().rate_limit_remaining = remaining;
    }

    /// The current `RateLimit-Remaining`.
    pub fn rate_limit_remaining(&self) -> u32 {
        self.state().rate_limit_remaining
    }

    // ---- recording ----

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.state().requests.len()
    }

    /// A position in the request log, for [`FakeHerokuApi::requests_since`].
    pub fn mark(&self) -> usize {
        self.request_count()
    }

    /// Requests received after `mark` was taken.
    pub fn requests_since(&self, mark: usize) -> Vec<RecordedRequest> {
        let state = self.state();
        state.requests.get(mark..).unwrap_or_default().to_vec()
    }

    // ---- internals ----

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Stop listening (the port stays held; open connections are closed) or listen again,
    /// and return once the server thread has.
    fn set_listening(&self, listen: bool) {
        let doing = if listen {
            "listen again"
        } else {
            "stop listening"
        };
        let (done, done_rx) = std_mpsc::channel();
        self.send_control(Control::Listen(listen, done));
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("the fake Heroku API thread did not {doing} within 5 s"))
            .unwrap_or_else(|e| panic!("{doing} on {} for the fake Heroku API: {e}", self.addr));
    }

    fn send_control(&self, message: Control) {
        self.control
            .send(message)
            .expect("the fake Heroku API thread runs as long as its handle");
    }
}

impl Drop for FakeHerokuApi {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What tests and the server thread share. A std mutex: it is never held across an await, and
/// the test side is synchronous.
struct Shared {
    api_key: String,
    state: Mutex<State>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the state from the next assertion.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Server

enum Control {
    /// Listen (true) or stop listening (false); the result goes back on the sender.
    Listen(bool, std_mpsc::Sender<io::Result<()>>),
    Shutdown,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    // One of the two at a time: listening, or down with the port still held.
    let mut up =
        Some(TcpListener::from_std(listener).expect("registering the listener with Tokio"));
    let mut down: Option<DownListener> = None;
    // Bumped to drop every open connection when the fake starts refusing.
    let (kill, _) = watch::channel(0u64);
    loop {
        tokio::select! {
            command = control.recv() => match command {
                None | Some(Control::Shutdown) => return,
                Some(Control::Listen(false, done)) => {
                    let result = match up.take() {
                        Some(listener) => held_port::take_down(listener).map(|d| down = Some(d)),
                        None => Ok(()),
                    };
                    kill.send_modify(|generation| *generation += 1);
                    let _ = done.send(result);
                }
                Some(Control::Listen(true, done)) => {
                    let result = match down.take() {
                        Some(held) => held.listen().map(|l| up = Some(l)),
                        None => Ok(()),
                    };
                    let _ = done.send(result);
                }
            },
            accepted = accept(up.as_ref()) => {
                if let Ok((stream, _)) = accepted {
                    let shared = Arc::clone(&shared);
                    let mut killed = kill.subscribe();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            handle(Arc::clone(&shared), request)
                        });
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            _ = connection => {}
                            _ = killed.changed() => {}
                        }
                    });
                }
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, BoxError> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let recorded = record(&parts, &body);
    let path = recorded.path.clone();

    let failure = {
        let mut state = lock(&shared);
        state.requests.push(recorded.clone());
        state.take_failure(&path)
    };
    match failure {
        Failure::Refuse => return Err("fake Heroku API: closing the connection unanswered".into()),
        Failure::Stall(pause) => tokio::time::sleep(pause).await,
        _ => {}
    }

    let (answer, remaining) = {
        let mut state = lock(&shared);
        // GET /account/rate-limits costs nothing, per the schema.
        let free = path == "/account/rate-limits";
        let answer = match &failure {
            Failure::RateLimited => rate_limited(),
            _ if state.rate_limit_remaining == 0 && !free => rate_limited(),
            _ => failure.replacement(&recorded).unwrap_or_else(|| {
                route(
                    &shared.api_key,
                    &mut state,
                    &recorded,
                    failure.allows_not_modified(),
                    failure == Failure::LoopingNextRange,
                )
            }),
        };
        // A 401 names no account to charge; a 429 is the bucket already empty.
        let costs = !free
            && answer.status != StatusCode::UNAUTHORIZED
            && answer.status != StatusCode::TOO_MANY_REQUESTS;
        if costs {
            state.rate_limit_remaining = state.rate_limit_remaining.saturating_sub(1);
        }
        let remaining = if failure == Failure::RateLimited {
            0
        } else {
            state.rate_limit_remaining
        };
        (answer, remaining)
    };

    let (answer, reset) = failure.mangle(answer);
    Ok(respond(answer, remaining, reset))
}

fn respond(answer: Answer, remaining: u32, reset: bool) -> Response<ReplyBody> {
    let mut response = Response::new(ReplyBody::new(answer.body.clone(), reset));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    let mut insert = |name: &'static str, value: &str| {
        let value = HeaderValue::from_str(value).expect("the fake writes valid header values");
        headers.insert(name, value);
    };
    insert("ratelimit-remaining", &remaining.to_string());
    // Heroku's Request-Id is a UUID per request.
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    insert("request-id", &derived_uuid(&(SystemTime::now(), serial)));
    if !answer.body.is_empty() {
        insert("content-type", "application/json");
    }
    if reset {
        // Announce the whole body; only half of it will come.
        insert("content-length", &answer.body.len().to_string());
    }
    for (name, value) in &answer.headers {
        insert(name, value);
    }
    response
}
