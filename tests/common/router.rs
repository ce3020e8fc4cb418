//! A TLS test router that stands in for Heroku's: ONE listener on 127.0.0.1:0
//! in front of several apps, picking the app from the `Host` header (port
//! stripped) and recording the SNI of each connection.
//! Like Heroku's router it refuses to route a request whose SNI is not the
//! Host it asks for (421) or whose Host is no app it knows (404), so the app
//! never sees such a request; tests read those refusals from the router.
//! Its certificate (tests/certs/router.pem, signed by tests/certs/ca.pem)
//! covers `CERT_HOSTNAMES`; an app may be registered under a hostname outside
//! it, to prove that the balancer checks the certificate.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::BufReader;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Hostnames in the router certificate's subjectAltName.
pub const CERT_HOSTNAMES: &[&str] = &[
    "app-one.test",
    "app-two.test",
    "app-three.test",
    "*.apps.test",
];

/// Status for a request whose SNI differs from its Host.
pub const MISDIRECTED: u16 = 421;
/// Status for a Host the router has no app for, as Heroku's "no such app".
pub const NO_SUCH_APP: u16 = 404;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the router saw it.
#[derive(Debug, Clone)]
pub struct RoutedRequest {
    /// SNI of the connection it came on (None: the client sent none).
    pub sni: Option<String>,
    /// The Host header as sent, port included.
    pub host: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
}

/// One app behind the router: what reached it, and how it answers.
pub struct RoutedApp {
    hostname: String,
    unavailable: AtomicBool,
    requests: Mutex<Vec<RoutedRequest>>,
}

impl RoutedApp {
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Answer 503 (like a crashed app, H10) instead of 200.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Every request routed to this app (health checks included).
    pub fn requests(&self) -> Vec<RoutedRequest> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<RoutedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    pub fn count_to(&self, prefix: &str) -> usize {
        self.requests_to(prefix).len()
    }

    /// The distinct SNI values seen on requests to this app.
    pub fn seen_snis(&self) -> Vec<Option<String>> {
        let mut snis: Vec<_> = self.requests().into_iter().map(|r| r.sni).collect();
        snis.sort();
        snis.dedup();
        snis
    }

    /// The distinct Host headers seen on requests to this app.
    pub fn seen_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<_> = self.requests().into_iter().map(|r| r.host).collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

struct Shared {
    /// Apps by lowercase hostname.
    apps: HashMap<String, Arc<RoutedApp>>,
    /// SNI of every completed handshake, in order.
    handshakes: Mutex<Vec<Option<String>>>,
    failed_handshakes: AtomicUsize,
    /// Requests refused with 421: SNI and Host disagree.
    misdirected: Mutex<Vec<RoutedRequest>>,
    /// Requests refused with 404: no app has that Host.
    unknown_host: Mutex<Vec<RoutedRequest>>,
}

/// Handle to a running router; dropping it stops the listener.
pub struct TestRouter {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl TestRouter {
    /// Start a router for the apps named by `hostnames`, all answering 200
    /// with their hostname as the body.
    pub async fn start(hostnames: &[&str]) -> TestRouter {
        let acceptor = TlsAcceptor::from(Arc::new(server_config()));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the test router on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        let apps = hostnames
            .iter()
            .map(|h| {
                let hostname = h.to_ascii_lowercase();
                let app = Arc::new(RoutedApp {
                    hostname: hostname.clone(),
                    unavailable: AtomicBool::new(false),
                    requests: Mutex::new(Vec::new()),
                });
                (hostname, app)
            })
            .collect();
        let shared = Arc::new(Shared {
            apps,
            handshakes: Mutex::new(Vec::new()),
            failed_handshakes: AtomicUsize::new(0),
            misdirected: Mutex::new(Vec::new()),
            unknown_host: Mutex::new(Vec::new()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        TestRouter {
            addr,
            shared,
            accept_task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://HOSTNAME:PORT` for an app behind this router, the form
    /// `LB_BACKENDS` takes (pin HOSTNAME to 127.0.0.1 with `LB_RESOLVE`).
    pub fn url_for(&self, hostname: &str) -> String {
        format!("https://{hostname}:{}", self.port())
    }

    /// The app registered under `hostname`; panics if there is none.
    pub fn app(&self, hostname: &str) -> Arc<RoutedApp> {
        self.shared
            .apps
            .get(&hostname.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("the test router has no app {hostname}"))
            .clone()
    }

    /// SNI of every completed TLS handshake.
    pub fn handshakes(&self) -> Vec<Option<String>> {
        self.shared.handshakes.lock().unwrap().clone()
    }

    /// TLS handshakes that failed (e.g. the client rejected the certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.shared.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Requests refused because SNI and Host disagreed.
    pub fn misdirected(&self) -> Vec<RoutedRequest> {
        self.shared.misdirected.lock().unwrap().clone()
    }

    /// Requests refused because no app has their Host.
    pub fn unknown_host(&self) -> Vec<RoutedRequest> {
        self.shared.unknown_host.lock().unwrap().clone()
    }

    /// Requests that reached any app.
    pub fn routed_count(&self) -> usize {
        self.shared.apps.values().map(|a| a.request_count()).sum()
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn server_config() -> rustls::ServerConfig {
    let cert_path = super::router_cert_pem();
    let key_path = super::router_key_pem();
    let mut cert_file = BufReader::new(
        std::fs::File::open(&cert_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", cert_path.display())),
    );
    let certs = rustls_pemfile::certs(&mut cert_file)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("read {}: {e}", cert_path.display()));
    let mut key_file = BufReader::new(
        std::fs::File::open(&key_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", key_path.display())),
    );
    let key = rustls_pemfile::private_key(&mut key_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", key_path.display()))
        .unwrap_or_else(|| panic!("no private key in {}", key_path.display()));
    // One certificate whatever the SNI, as a router with a wildcard/SAN cert.
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("tests/certs/router.pem and router.key form a valid pair");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Reap finished connection tasks; the set aborts the rest when this
        // loop is aborted (router dropped).
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                _ => {
                    shared.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            let sni = tls
                .get_ref()
                .1
                .server_name()
                .map(|s| s.to_ascii_lowercase());
            shared.handshakes.lock().unwrap().push(sni.clone());
            let service = service_fn(move |req| route(shared.clone(), sni.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn route(
    shared: Arc<Shared>,
    sni: Option<String>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get(HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default();
    let seen = RoutedRequest {
        sni: sni.clone(),
        host: host.clone(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string()),
        headers: req.headers().clone(),
    };
    let hostname = hostname_of(&host);
    let Some(app) = shared.apps.get(&hostname) else {
        shared.unknown_host.lock().unwrap().push(seen);
        return Ok(text(NO_SUCH_APP, format!("no such app: {host}\n")));
    };
    if sni.as_deref() != Some(hostname.as_str()) {
        shared.misdirected.lock().unwrap().push(seen);
        return Ok(text(
            MISDIRECTED,
            format!("misdirected: SNI {sni:?} does not match Host {host}\n"),
        ));
    }
    app.requests.lock().unwrap().push(seen);
    if app.unavailable.load(Ordering::SeqCst) {
        return Ok(text(503, "Application Error\n".to_string()));
    }
    Ok(text(200, app.hostname.clone()))
}

/// The hostname part of a Host header, lowercase, without the port.
pub fn hostname_of(host: &str) -> String {
    let host = host.trim();
    let without_port = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    without_port.to_ascii_lowercase()
}

fn text(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).expect("statuses used here are valid");
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
