//! The floor heroku-lb adds to: a bare Pingora round-robin proxy with none of
//! our features, for `bench/run.py`. Backends come from `BARE_BACKENDS`
//! (`127.0.0.1:9001,127.0.0.1:9002`), it listens on `127.0.0.1:$PORT`, runs
//! one worker thread, and leaves the `Host` header as the client sent it.
//! `BARE_POOL_SIZE` sets the idle upstream connections kept (default 256).

use async_trait::async_trait;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use std::sync::Arc;

struct Bare(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::explain(HTTPStatus(503), "no backend to select"))?;
        Ok(Box::new(HttpPeer::new(backend, false, String::new())))
    }
}

fn main() {
    let backends = std::env::var("BARE_BACKENDS").expect("set BARE_BACKENDS=host:port,...");
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let lb = LoadBalancer::<RoundRobin>::try_from_iter(backends.split(','))
        .expect("BARE_BACKENDS holds host:port addresses");

    let mut conf = ServerConf::new().expect("Pingora's default server settings");
    conf.threads = 1;
    // Idle upstream connections kept: 256, as bench/configs.py gives heroku-lb.
    conf.upstream_keepalive_pool_size = std::env::var("BARE_POOL_SIZE").map_or(256, |size| {
        size.parse().expect("BARE_POOL_SIZE is a number")
    });
    conf.grace_period_seconds = Some(1);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare(Arc::new(lb)));
    proxy.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(proxy);
    server.run_forever();
}
