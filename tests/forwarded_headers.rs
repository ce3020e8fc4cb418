//! The balancer adds the headers a hop behind Heroku's router should add:
//! X-Forwarded-For/-Proto/-Port, X-Request-Id, and the backend's own Host.

mod common;

use common::backend::{SeenRequest, TestBackend};
use common::lb::{LbBuilder, LbProcess};

/// One backend behind a fresh balancer, already proxying.
async fn one_backend() -> (TestBackend, LbProcess, reqwest::Client) {
    let backend = TestBackend::start("app").await;
    let lb = LbBuilder::new().backends(&[backend.url()]).start().await;
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

/// X-Forwarded-For gets the client address appended to what the client sent, or starts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_gets_the_client_address_appended() {
    let (backend, lb, client) = one_backend().await;

    let seen = seen_by_backend(&backend, &lb, &client, "/xff/none", &[]).await;
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));

    let seen = seen_by_backend(
        &backend,
        &lb,
        &client,
        "/xff/client",
        &[("X-Forwarded-For", "203.0.113.7")],
    )
    .await;
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
}

/// X-Forwarded-Proto and -Port describe the balancer's listener unless the client (Heroku's router) sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_proto_and_port_describe_the_listener_unless_already_set() {
    let (backend, lb, client) = one_backend().await;

    let seen = seen_by_backend(&backend, &lb, &client, "/xfp/none", &[]).await;
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen.header("x-forwarded-port"), Some(lb.port().to_string()));

    let seen = seen_by_backend(
        &backend,
        &lb,
        &client,
        "/xfp/router",
        &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", "443")],
    )
    .await;
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(seen.header("x-forwarded-port").as_deref(), Some("443"));
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
