//! The balancer adds the headers a hop behind Heroku's router should add:
//! X-Forwarded-For/-Proto/-Port/-Host, X-Request-Id, and the backend's own
//! Host. Which X-Forwarded-* headers it keeps depends on who set them: on a
//! dyno (every peer is Heroku's router) -For/-Proto/-Port, from a peer in
//! `LB_TRUSTED_PROXIES` all four, and the access line's `fwd` is the last
//! X-Forwarded-For entry; from anyone else they are replaced and `fwd` is
//! the peer. `header_trust.rs` has the cases where the two kinds differ.

mod common;

use std::time::Duration;

use common::backend::{SeenRequest, TestBackend};
use common::lb::{LbBuilder, LbProcess};

/// One backend behind a fresh balancer, already proxying.
async fn one_backend() -> (TestBackend, LbProcess, reqwest::Client) {
    one_backend_with(|builder| builder).await
}

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

/// Send `headers` to `path` through the balancer; return what the backend saw.
async fn seen_by_backend(
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

/// The `fwd` field of the access line of the request with `request_id`
/// (a bare value: the last field of the line), waiting up to 5 s for it.
async fn logged_fwd(lb: &LbProcess, request_id: &str) -> String {
    // `... request_id=ID fwd="ADDRESS" ...`: the router quotes fwd.
    let marker = format!(" request_id={request_id} fwd=\"");
    let find = || {
        lb.stdout().lines().find_map(|line| {
            let at = line.find(&marker)?;
            let rest = &line[at + marker.len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
    };
    common::wait_until(
        &format!("the access line of {request_id}"),
        100,
        Duration::from_millis(50),
        || async { find().is_some() },
    )
    .await;
    find().unwrap_or_default()
}

/// What a client outside any trusted hop claims about itself.
const SPOOFED: [(&str, &str); 5] = [
    ("X-Forwarded-For", "203.0.113.7"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Host", "evil.example"),
    ("Host", "lb.example.com:8443"),
];

/// From an untrusted peer, X-Forwarded-For/-Proto/-Port/-Host are replaced by what the balancer saw, and `fwd` is the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_cannot_choose_its_forwarded_headers_or_its_fwd() {
    // Trusting nobody, and trusting a range the peer is not in, are the same.
    for trusted in [None, Some("10.0.0.0/8, 192.168.0.0/16")] {
        let (backend, lb, client) = one_backend_with(|builder| match trusted {
            Some(list) => builder.env("LB_TRUSTED_PROXIES", list),
            None => builder,
        })
        .await;

        let mut headers = SPOOFED.to_vec();
        headers.push(("X-Request-Id", "untrusted-1"));
        let seen = seen_by_backend(&backend, &lb, &client, "/untrusted", &headers).await;
        println!("trusted={trusted:?}: the backend saw {:?}", seen.headers);
        assert_eq!(
            seen.header("x-forwarded-for").as_deref(),
            Some("127.0.0.1"),
            "trusted={trusted:?}"
        );
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(seen.header("x-forwarded-port"), Some(lb.port().to_string()));
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some("lb.example.com:8443"),
            "X-Forwarded-Host is the Host the client sent"
        );
        assert_eq!(logged_fwd(&lb, "untrusted-1").await, "127.0.0.1");
    }
}

/// Without any X-Forwarded-* from the client, the backend gets the peer, http, the listening port and the client's Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_forwarded_headers_the_backend_gets_the_peer_the_listener_and_the_host() {
    let (backend, lb, client) = one_backend().await;

    let seen = seen_by_backend(&backend, &lb, &client, "/plain", &[]).await;
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen.header("x-forwarded-port"), Some(lb.port().to_string()));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(format!("127.0.0.1:{}", lb.port())),
        "X-Forwarded-Host is the host the client asked for, port kept"
    );
}

/// From a peer in LB_TRUSTED_PROXIES, X-Forwarded-Proto/-Port/-Host are kept, the peer is appended to X-Forwarded-For, and `fwd` is the last entry that arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_keeps_its_forwarded_headers_and_names_the_client() {
    let (backend, lb, client) =
        one_backend_with(|builder| builder.env("LB_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")).await;
    assert_trusted_hop_is_believed(&backend, &lb, &client, "shop.example.com").await;
}

/// On a dyno (DYNO set) every peer is Heroku's router: the X-Forwarded-For/-Proto/-Port it sets are kept and `fwd` is the client it appended; X-Forwarded-Host, which it never sets, comes from Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_dyno_herokus_router_is_trusted_for_the_headers_it_sets() {
    let (backend, lb, client) = one_backend_with(|builder| builder.env("DYNO", "web.1")).await;
    assert_trusted_hop_is_believed(&backend, &lb, &client, "lb.example.com").await;
}

/// What a trusted hop sends is kept (X-Forwarded-Host only when it is
/// `forwarded_host`); what it left out is filled in as for anyone.
async fn assert_trusted_hop_is_believed(
    backend: &TestBackend,
    lb: &LbProcess,
    client: &reqwest::Client,
    forwarded_host: &str,
) {
    let seen = seen_by_backend(
        backend,
        lb,
        client,
        "/trusted/all",
        &[
            ("X-Forwarded-For", "198.51.100.9, 203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Host", "shop.example.com"),
            ("Host", "lb.example.com"),
            ("X-Request-Id", "trusted-1"),
        ],
    )
    .await;
    println!("the backend saw {:?}", seen.headers);
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("198.51.100.9, 203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(seen.header("x-forwarded-port").as_deref(), Some("443"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some(forwarded_host)
    );
    assert_eq!(
        logged_fwd(lb, "trusted-1").await,
        "203.0.113.7",
        "fwd is the client as the trusted hop saw it: the last entry"
    );

    // A hop that sets no X-Forwarded-* (Heroku's router never sets -Host).
    let seen = seen_by_backend(
        backend,
        lb,
        client,
        "/trusted/none",
        &[("Host", "lb.example.com"), ("X-Request-Id", "trusted-2")],
    )
    .await;
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen.header("x-forwarded-port"), Some(lb.port().to_string()));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("lb.example.com")
    );
    assert_eq!(logged_fwd(lb, "trusted-2").await, "127.0.0.1");
}

/// X-Request-Id is kept up to 200 characters, and generated fresh when longer or absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_request_id_is_kept_up_to_200_characters_and_generated_otherwise() {
    let (backend, lb, client) = one_backend().await;

    let id_200 = "a".repeat(200);
    let seen = seen_by_backend(
        &backend,
        &lb,
        &client,
        "/rid/200",
        &[("X-Request-Id", &id_200)],
    )
    .await;
    assert_eq!(seen.header("x-request-id"), Some(id_200));

    let id_201 = "b".repeat(201);
    let seen = seen_by_backend(
        &backend,
        &lb,
        &client,
        "/rid/201",
        &[("X-Request-Id", &id_201)],
    )
    .await;
    let replaced = seen.header("x-request-id").expect("an X-Request-Id");
    assert!(!replaced.is_empty());
    assert_ne!(replaced, id_201);
    assert!(replaced.len() <= 200, "generated id too long: {replaced}");

    let first = seen_by_backend(&backend, &lb, &client, "/rid/absent-1", &[])
        .await
        .header("x-request-id")
        .expect("a generated X-Request-Id");
    let second = seen_by_backend(&backend, &lb, &client, "/rid/absent-2", &[])
        .await
        .header("x-request-id")
        .expect("a generated X-Request-Id");
    assert!(!first.is_empty());
    assert_ne!(first, second, "two requests got the same generated id");
}

/// The backend sees its own host and port as Host, not the balancer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_rewritten_to_the_backend_host_and_port() {
    let (backend, lb, client) = one_backend().await;

    let seen = seen_by_backend(
        &backend,
        &lb,
        &client,
        "/host",
        &[("Host", "lb.example.com")],
    )
    .await;
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", backend.port()))
    );
}
