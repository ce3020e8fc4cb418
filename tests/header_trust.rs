//! Trust is per header, not per peer. Heroku's router sets
//! `X-Forwarded-For`, `-Proto` and `-Port` but never `X-Forwarded-Host`, and
//! passes a client's own through: on a dyno that header is the client's word,
//! so the app gets `X-Forwarded-Host` from `Host` (and redirects are rewritten
//! to it), unless the client the router names is a proxy in
//! `LB_TRUSTED_PROXIES` (a CDN in front). And the status page's loopback rule
//! judges the client a trusted hop names, not the hop: a same-host proxy
//! forwarding for a stranger does not unlock the detail.

mod common;

use common::backend::{SeenRequest, TestBackend};
use common::lb::{LbBuilder, LbProcess};
use common::raw_backend::{serve_keep_alive, RawRequest, RawServer};

/// One backend behind a balancer set up by `configure`, already proxying.
async fn one_backend_with(
    configure: impl FnOnce(LbBuilder) -> LbBuilder,
) -> (TestBackend, LbProcess, reqwest::Client) {
    let backend = TestBackend::start("app").await;
    let lb = configure(LbBuilder::new().backends(&[backend.url()]))
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    (backend, lb, client)
}

/// Send `headers` to `path`; return what the backend saw.
async fn seen(
    backend: &TestBackend,
    lb: &LbProcess,
    client: &reqwest::Client,
    path: &str,
    headers: &[(&str, &str)],
) -> SeenRequest {
    let mut request = client.get(lb.url_for(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = common::send(request)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
    backend
        .last_request_to(path)
        .unwrap_or_else(|| panic!("the backend never saw {path}"))
}

/// On a dyno, a client's X-Forwarded-Host (which Heroku's router passes through) never reaches the app: it gets the Host the client asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_dyno_a_clients_forwarded_host_is_replaced_by_its_host() {
    let (backend, lb, client) = one_backend_with(|builder| builder.env("DYNO", "web.1")).await;
    let request = seen(
        &backend,
        &lb,
        &client,
        "/reset-password",
        &[
            ("Host", "www.shop.example"),
            ("X-Forwarded-Host", "evil.example"),
            // What Heroku's router adds for its own hop.
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
        ],
    )
    .await;
    println!("the app saw {:?}", request.headers);
    assert_eq!(
        request.header("x-forwarded-host").as_deref(),
        Some("www.shop.example"),
        "X-Forwarded-Host from a client behind the router was believed"
    );
    // The router's own headers are kept.
    assert_eq!(
        request.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(
        request.header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(request.header("x-forwarded-port").as_deref(), Some("443"));
}

/// On a dyno with a CDN in LB_TRUSTED_PROXIES in front of the router, the CDN's X-Forwarded-Host is kept, and the client is the entry before the CDN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_dyno_a_trusted_proxy_in_front_of_the_router_keeps_its_forwarded_host() {
    let (backend, lb, client) = one_backend_with(|builder| {
        builder
            .env("DYNO", "web.1")
            .env("LB_TRUSTED_PROXIES", "198.51.100.0/24")
    })
    .await;
    let request = seen(
        &backend,
        &lb,
        &client,
        "/through-cdn",
        &[
            ("Host", "lb.herokuapp.com"),
            ("X-Forwarded-Host", "www.shop.example"),
            // client, then the CDN as the router saw it.
            ("X-Forwarded-For", "203.0.113.7, 198.51.100.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-Id", "through-cdn-1"),
        ],
    )
    .await;
    assert_eq!(
        request.header("x-forwarded-host").as_deref(),
        Some("www.shop.example")
    );
    common::wait_until(
        "the request line of through-cdn-1",
        100,
        std::time::Duration::from_millis(50),
        || async { !lb.lines_with("request_id=through-cdn-1").is_empty() },
    )
    .await;
    let line = lb
        .lines_with("request_id=through-cdn-1")
        .pop()
        .unwrap_or_default();
    assert!(
        line.contains("fwd=\"203.0.113.7\""),
        "the client is the entry before the trusted CDN: {line}"
    );

    // The same header from a client the router names directly is not kept.
    let request = seen(
        &backend,
        &lb,
        &client,
        "/direct",
        &[
            ("Host", "lb.herokuapp.com"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-For", "198.51.100.9, 203.0.113.7"),
        ],
    )
    .await;
    assert_eq!(
        request.header("x-forwarded-host").as_deref(),
        Some("lb.herokuapp.com")
    );
}

/// An app's redirect to its own host is rewritten to the host the client asked for, never to a client-chosen X-Forwarded-Host, on a dyno.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_dyno_redirects_are_never_rewritten_to_a_client_chosen_host() {
    let app = RawServer::start(|stream| {
        serve_keep_alive(stream, |request: RawRequest| async move {
            let host = request.header_values("host").pop().unwrap_or_default();
            if request.path == "/login" {
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://{host}/landing\r\ncontent-length: 0\r\n\r\n"
                )
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string()
            }
        })
    })
    .await;
    let lb = LbBuilder::new()
        .backends(&[format!("http://app-trust.test:{}", app.addr().port())])
        .resolve(&[("app-trust.test", "127.0.0.1")])
        .env("DYNO", "web.1")
        .start()
        .await;
    lb.wait_proxying(&common::http_client()).await;
    let reply = common::send(
        common::http_client_without_redirects()
            .get(lb.url_for("/login"))
            .header("Host", "www.shop.example")
            .header("X-Forwarded-Host", "evil.example")
            .header("X-Forwarded-Proto", "https"),
    )
    .await
    .expect("answered");
    let location = reply
        .headers
        .get("location")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    println!("Location: {location}");
    assert_eq!(reply.status, 302);
    assert_eq!(location, "https://www.shop.example/landing");
}

/// Without a token, a request a trusted same-host proxy forwards for a remote client sees only the summary and no metrics; the proxy's own requests still see the detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_host_proxy_forwarding_for_a_stranger_does_not_unlock_the_detail() {
    let (_backend, lb, client) =
        one_backend_with(|builder| builder.env("LB_TRUSTED_PROXIES", "127.0.0.1")).await;
    let forwarded = |path: &str| {
        client
            .get(lb.url_for(path))
            .header("X-Forwarded-For", "203.0.113.9")
    };
    let status = common::send(forwarded("/_lb/status"))
        .await
        .expect("answered");
    println!("forwarded for 203.0.113.9: {}", status.body);
    assert!(
        !status.body.contains("\"backends\""),
        "the detail went to a remote client: {}",
        status.body
    );
    assert!(status.body.contains("\"backends_total\""));
    let metrics = common::send(forwarded("/_lb/metrics"))
        .await
        .expect("answered");
    assert_eq!(metrics.status, 401, "{}", metrics.body);

    // Forwarded for a loopback client, or not forwarded: local.
    let local = common::send(
        client
            .get(lb.url_for("/_lb/status"))
            .header("X-Forwarded-For", "127.0.0.1"),
    )
    .await
    .expect("answered");
    assert!(local.body.contains("\"backends\""), "{}", local.body);
    let direct = common::get(&client, &lb.url_for("/_lb/metrics")).await;
    assert_eq!(direct.status, 200);
}
