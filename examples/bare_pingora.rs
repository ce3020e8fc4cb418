//! The floor heroku-lb adds to: a bare Pingora round-robin proxy with none of
//! our features, for `bench/run.py`. It listens on `127.0.0.1:$PORT`, runs
//! `BARE_THREADS` worker threads (default 1) and keeps `BARE_POOL_SIZE` idle
//! upstream connections (default 256). Two modes:
//!
//! - plain: backends from `BARE_BACKENDS` (`127.0.0.1:9001,127.0.0.1:9002`),
//!   `LoadBalancer<RoundRobin>`, the `Host` header left as the client sent it;
//! - Heroku (`BARE_APPS=app-1.bench.test,...` and `BARE_ROUTER=127.0.0.1:PORT`):
//!   every app is a TLS peer at the one router address with the app's
//!   hostname as SNI (Pingora keys its connection pool by the peer's hash,
//!   which includes the SNI) and as `Host`, picked round robin with an atomic
//!   cursor; certificates are verified against `BARE_CA_FILE` (Pingora's
//!   `ServerConf::ca_file`).
//!
//! With `BARE_TIMEOUTS=1`, every peer gets heroku-lb's default upstream
//! timeouts (connect 5 s, read 30 s, idle 55 s): a floor for what Pingora
//! charges any proxy that bounds its upstreams (`bench/instructions.py
//! --floor-with-timeouts`).
//!
//! No health checks, nothing else. This file is built twice: as the example
//! `bare_pingora` with glibc's malloc, and included by
//! `examples/bare_pingora_mimalloc.rs`, which only adds mimalloc as the global
//! allocator (heroku-lb's, `src/main.rs`), so the two differ by nothing else.

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where requests go.
enum Upstreams {
    /// Plain HTTP backends, Pingora's own round robin.
    Plain(Arc<LoadBalancer<RoundRobin>>),
    /// TLS apps behind one router: a ready peer and `Host` per app.
    Apps {
        peers: Vec<(HttpPeer, String)>,
        cursor: AtomicUsize,
    },
}

struct Bare(Upstreams);

#[async_trait]
impl ProxyHttp for Bare {
    /// The app picked for this request (Heroku mode).
    type CTX = usize;
    fn new_ctx(&self) -> usize {
        0
    }

    async fn upstream_peer(&self, _: &mut Session, app: &mut usize) -> Result<Box<HttpPeer>> {
        match &self.0 {
            Upstreams::Plain(lb) => {
                let backend = lb
                    .select(b"", 256)
                    .ok_or_else(|| Error::explain(HTTPStatus(503), "no backend to select"))?;
                Ok(Box::new(HttpPeer::new(backend, false, String::new())))
            }
            Upstreams::Apps { peers, cursor } => {
                *app = cursor.fetch_add(1, Ordering::Relaxed) % peers.len();
                Ok(Box::new(peers[*app].0.clone()))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _: &mut Session,
        request: &mut RequestHeader,
        app: &mut usize,
    ) -> Result<()> {
        if let Upstreams::Apps { peers, .. } = &self.0 {
            request.insert_header("Host", peers[*app].1.as_str())?;
        }
        Ok(())
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} is a number"))
    })
}

pub fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let mut conf = ServerConf::new().expect("Pingora's default server settings");
    conf.threads = env_number("BARE_THREADS", 1);
    // Idle upstream connections kept: 256, as bench/configs.py gives heroku-lb.
    conf.upstream_keepalive_pool_size = env_number("BARE_POOL_SIZE", 256);
    conf.grace_period_seconds = Some(1);
    conf.graceful_shutdown_timeout_seconds = Some(1);

    let upstreams = match std::env::var("BARE_APPS") {
        Ok(apps) => {
            let router: std::net::SocketAddr = std::env::var("BARE_ROUTER")
                .expect("set BARE_ROUTER=ip:port with BARE_APPS")
                .parse()
                .expect("BARE_ROUTER is ip:port");
            conf.ca_file = std::env::var("BARE_CA_FILE").ok();
            let peers = apps
                .split(',')
                .map(|host| {
                    let mut peer = HttpPeer::new(router, true, host.to_string());
                    if std::env::var_os("BARE_TIMEOUTS").is_some() {
                        let options = &mut peer.options;
                        options.connection_timeout = Some(Duration::from_secs(5));
                        options.total_connection_timeout = Some(Duration::from_secs(5));
                        options.read_timeout = Some(Duration::from_secs(30));
                        options.idle_timeout = Some(Duration::from_secs(55));
                    }
                    (peer, host.to_string())
                })
                .collect();
            Upstreams::Apps {
                peers,
                cursor: AtomicUsize::new(0),
            }
        }
        Err(_) => {
            let backends = std::env::var("BARE_BACKENDS").expect("set BARE_BACKENDS=host:port,...");
            let lb = LoadBalancer::<RoundRobin>::try_from_iter(backends.split(','))
                .expect("BARE_BACKENDS holds host:port addresses");
            Upstreams::Plain(Arc::new(lb))
        }
    };

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare(upstreams));
    proxy.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(proxy);
    server.run_forever();
}
