//! A plain HTTP/1.1 backend app on 127.0.0.1:0, a real hyper server with keep-alive.
//! Tests hand its `url()` to the balancer, then read what arrived (count, path,
//! headers) and flip how it answers: normally (200, body = its name), 503,
//! stall (accept the request and never answer), or stop listening altogether
//! so connections are refused, and listen again on the same port later (the
//! port stays the backend's meanwhile: see `held_port`). One
//! path prefix can be given an answer of its own (a broken endpoint, a
//! failing health check) while the rest answer as set.
//! It answers every path the same way, health-check paths included; tests tell
//! their own requests apart by path prefix. Every answer echoes the request's
//! path and query in `x-test-path`, so a client can match answers to requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::held_port::{self, DownListener};

use super::heroku_api::{AppFixture, FakeHerokuApi, PipelineId};

/// Response header naming the backend that answered, so clients can count too.
pub const BACKEND_HEADER: &str = "x-test-backend";

/// Response header echoing the request's path and query, so a client that
/// sent several requests on one connection can tell which answer is which.
pub const PATH_HEADER: &str = "x-test-path";

/// How long a stalled backend holds a request before giving up on it; far
/// longer than any test, so to the balancer it never answers.
const STALL: Duration = Duration::from_secs(600);

/// How the backend answers the requests that reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the backend's name as the body.
    Normal = 0,
    /// 503, like an app whose dynos crashed.
    Unavailable = 1,
    /// Read the request and never answer.
    Stall = 2,
}

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query, as in the request line.
    pub path: String,
    pub headers: HeaderMap,
}

impl SeenRequest {
    /// The one value of `name`; panics if the header is repeated (a proxy
    /// appending must produce a single line).
    pub fn header(&self, name: &str) -> Option<String> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        assert!(
            values.next().is_none(),
            "header {name} arrived more than once: {:?}",
            self.headers.get_all(name).iter().collect::<Vec<_>>()
        );
        Some(String::from_utf8_lossy(first.as_bytes()).into_owned())
    }
}

struct Shared {
    name: String,
    answer: AtomicU8,
    /// Answers for path prefixes, checked before `answer`.
    answers_by_path: Mutex<Vec<(String, Answer)>>,
    requests: Mutex<Vec<SeenRequest>>,
    connections: AtomicUsize,
    /// Tasks serving accepted connections, aborted when the backend stops so
    /// that pooled keep-alive connections are cut as well.
    connection_tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The backend's listening socket, up or down; it holds the port either way.
enum Socket {
    Up {
        listener: Arc<TcpListener>,
        accept_task: JoinHandle<()>,
    },
    Down(DownListener),
}

/// Handle to a running test backend; dropping it stops the server.
pub struct TestBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// None only while `stop_listening` or `listen_again` switches it.
    socket: tokio::sync::Mutex<Option<Socket>>,
}

impl TestBackend {
    /// Start a backend called `name` on a fresh loopback port, answering normally.
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::from_std(held_port::bind_loopback())
            .expect("register a test backend's listener with Tokio");
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            answer: AtomicU8::new(Answer::Normal as u8),
            answers_by_path: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            connection_tasks: Mutex::new(Vec::new()),
        });
        let listener = Arc::new(listener);
        let accept_task = tokio::spawn(accept_loop(listener.clone(), shared.clone()));
        TestBackend {
            addr,
            shared,
            socket: tokio::sync::Mutex::new(Some(Socket::Up {
                listener,
                accept_task,
            })),
        }
    }

    /// Start a backend called `name` and add it to the fake Platform API as
    /// the app `name` of `pipeline`, at its `web_url()`.
    pub async fn start_app(api: &FakeHerokuApi, pipeline: &PipelineId, name: &str) -> TestBackend {
        let backend = TestBackend::start(name).await;
        api.add_app(AppFixture::new(name, pipeline, &backend.web_url()));
        backend
    }

    /// Start `count` backends named `{prefix}-1`, `{prefix}-2`, …
    pub async fn start_many(prefix: &str, count: usize) -> Vec<TestBackend> {
        let mut backends = Vec::with_capacity(count);
        for i in 1..=count {
            backends.push(TestBackend::start(&format!("{prefix}-{i}")).await);
        }
        backends
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, the form `LB_BACKENDS` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `url()` in the form the Platform API gives an app's `web_url` (trailing `/`).
    pub fn web_url(&self) -> String {
        format!("{}/", self.url())
    }

    /// Switch how later requests are answered.
    pub fn set_answer(&self, answer: Answer) {
        self.shared.answer.store(answer as u8, Ordering::SeqCst);
    }

    /// Answer requests whose path starts with `prefix` with `answer`,
    /// whatever `set_answer` says (replaces an earlier answer for `prefix`).
    pub fn set_answer_for(&self, prefix: &str, answer: Answer) {
        let mut answers = self.shared.answers_by_path.lock().unwrap();
        answers.retain(|(p, _)| p != prefix);
        answers.push((prefix.to_string(), answer));
    }

    /// Every request that arrived, in order (health checks included).
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<SeenRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// The latest request whose path starts with `prefix`.
    pub fn last_request_to(&self, prefix: &str) -> Option<SeenRequest> {
        self.requests_to(prefix).pop()
    }

    /// Number of requests that arrived, whatever their path.
    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Number of requests whose path starts with `prefix`.
    pub fn count_to(&self, prefix: &str) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    /// Number of TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stop listening and cut open connections: once this returns, new
    /// connections are refused (the socket no longer listens) while the port
    /// stays the backend's, so that `listen_again` cannot find it taken.
    pub async fn stop_listening(&self) {
        let mut socket = self.socket.lock().await;
        let down = match socket.take() {
            Some(Socket::Up {
                listener,
                accept_task,
            }) => {
                // An aborted task's future (and its handle on the listener) is
                // dropped by the time its JoinHandle resolves. The accept loop
                // goes first so that no connection is added after the others
                // were cut.
                accept_task.abort();
                let _ = accept_task.await;
                let listener = Arc::into_inner(listener)
                    .expect("the aborted accept loop let go of the listener");
                held_port::take_down(listener)
                    .unwrap_or_else(|e| panic!("stop listening on {}: {e}", self.addr))
            }
            Some(Socket::Down(down)) => down,
            None => unreachable!("the socket is only taken under this lock"),
        };
        *socket = Some(Socket::Down(down));
        drop(socket);
        let connection_tasks: Vec<_> = self
            .shared
            .connection_tasks
            .lock()
            .unwrap()
            .drain(..)
            .collect();
        for task in connection_tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listen again on the same port after `stop_listening` (open connections
    /// are cut first, as by `stop_listening`). The port was held meanwhile, so
    /// nothing else can have taken it.
    pub async fn listen_again(&self) {
        self.stop_listening().await;
        let mut socket = self.socket.lock().await;
        let Some(Socket::Down(down)) = socket.take() else {
            unreachable!("stop_listening leaves the socket down");
        };
        let listener = Arc::new(
            down.listen()
                .unwrap_or_else(|e| panic!("listen again on {}: {e}", self.addr)),
        );
        let accept_task = tokio::spawn(accept_loop(listener.clone(), self.shared.clone()));
        *socket = Some(Socket::Up {
            listener,
            accept_task,
        });
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(Socket::Up { accept_task, .. }) = self.socket.get_mut() {
            accept_task.abort();
        }
        for task in self.shared.connection_tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn accept_loop(listener: Arc<TcpListener>, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let conn_shared = shared.clone();
        let service = service_fn(move |req| answer(conn_shared.clone(), req));
        let task = tokio::spawn(async move {
            // keep-alive is hyper's default; errors are the peer going away.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut tasks = shared.connection_tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let path_value = HeaderValue::from_str(&path).ok();
    shared.requests.lock().unwrap().push(SeenRequest {
        method: req.method().to_string(),
        path: path.clone(),
        headers: req.headers().clone(),
    });
    let by_path = shared
        .answers_by_path
        .lock()
        .unwrap()
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, answer)| *answer as u8);
    let (status, body) = match by_path.unwrap_or_else(|| shared.answer.load(Ordering::SeqCst)) {
        a if a == Answer::Unavailable as u8 => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} is unavailable\n", shared.name),
        ),
        a if a == Answer::Stall as u8 => {
            tokio::time::sleep(STALL).await;
            (StatusCode::GATEWAY_TIMEOUT, "stalled\n".to_string())
        }
        _ => (StatusCode::OK, shared.name.clone()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Ok(name) = HeaderValue::from_str(&shared.name) {
        response.headers_mut().insert(BACKEND_HEADER, name);
    }
    if let Some(path) = path_value {
        response.headers_mut().insert(PATH_HEADER, path);
    }
    Ok(response)
}
