//! HTTP/1.1 pipelining (RFC 9112 §9.3.2): a client may send several requests
//! on one connection without waiting for each answer, and the server answers
//! them in the order they came. The balancer must answer every pipelined
//! request, in order, keep the connection open afterwards (its answers say
//! keep-alive), and frame each request by its own length, so that a body is
//! never read as the next request.
//!
//! The client here is a raw TCP stream writing the requests by hand; the
//! backends echo each request's path in `x-test-path`, which is how the
//! client matches answers to requests.

mod common;

use common::backend::{TestBackend, PATH_HEADER};
use common::lb::{balancer, LbProcess};
use common::raw_client::{RawConnection, RawResponse};

/// Status and every header, for failure messages.
fn status_and_headers(answer: &RawResponse) -> (u16, &[(String, String)]) {
    (answer.status, &answer.headers)
}

/// Status and `x-test-path`, for comparing answers with requests.
fn summary(answer: &RawResponse) -> (u16, String) {
    (
        answer.status,
        answer.header(PATH_HEADER).unwrap_or("-").to_string(),
    )
}

/// A client connection to the balancer; each answer may take `CLIENT_TIMEOUT`.
async fn connect(lb: &LbProcess) -> RawConnection {
    RawConnection::to(lb)
        .await
        .with_timeout(common::CLIENT_TIMEOUT)
}

/// Write `requests` back to back in one write.
async fn send(client: &mut RawConnection, requests: &[String]) {
    client
        .send(requests.concat().as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write the requests: {e}"));
}

/// Read `count` answers in turn; stops at the first one that does not come
/// (the error names how many came before it).
async fn read(client: &mut RawConnection, count: usize) -> Result<Vec<RawResponse>, String> {
    let mut answers = Vec::new();
    for i in 0..count {
        match client.read_response().await {
            Ok(answer) => answers.push(answer),
            Err(e) => {
                return Err(format!(
                    "answer {} of {count}: {e}; answers before it: {:?}",
                    i + 1,
                    answers.iter().map(status_and_headers).collect::<Vec<_>>()
                ))
            }
        }
    }
    Ok(answers)
}

/// `GET path` as a client writes it.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: pipelining.test\r\n\r\n")
}

/// `POST path` with `body`, framed by `Content-Length`.
fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: pipelining.test\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Two backends behind a static-mode balancer, both healthy.
async fn setup() -> (Vec<TestBackend>, LbProcess) {
    let backends = TestBackend::start_many("app", 2).await;
    let (lb, _) = balancer(&backends)
        .default_health_check_interval()
        .start_healthy(2)
        .await;
    (backends, lb)
}

/// Panics unless `answers` are 200s for `paths`, in that order.
fn assert_answers(answers: &[RawResponse], paths: &[&str], lb: &LbProcess) {
    let got: Vec<(u16, String)> = answers.iter().map(summary).collect();
    let want: Vec<(u16, String)> = paths.iter().map(|p| (200, p.to_string())).collect();
    assert_eq!(
        got,
        want,
        "(status, {PATH_HEADER}) of each answer\nbalancer output:\n{}",
        lb.output()
    );
}

/// Read `count` answers or panic with why not, the backends' view and the balancer's output.
async fn expect_answers(
    client: &mut RawConnection,
    count: usize,
    backends: &[TestBackend],
    lb: &LbProcess,
) -> Vec<RawResponse> {
    read(client, count).await.unwrap_or_else(|e| {
        let seen: Vec<Vec<String>> = backends
            .iter()
            .map(|b| {
                b.requests()
                    .iter()
                    .filter(|r| r.path != "/health")
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect()
            })
            .collect();
        panic!(
            "{e}\nrequests at the backends: {seen:?}\nbalancer output:\n{}",
            lb.output()
        )
    })
}

/// Requests other than health checks that reached any backend, as `METHOD path`, sorted.
fn proxied(backends: &[TestBackend]) -> Vec<String> {
    let mut seen: Vec<String> = backends
        .iter()
        .flat_map(|b| b.requests())
        .filter(|r| r.path != "/health")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    seen.sort();
    seen
}

/// Three GETs written at once on one connection get three 200s in request order, and the connection then takes a fourth request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_requests_written_at_once_are_answered_in_order_and_the_connection_stays_open() {
    let (backends, lb) = setup().await;
    let mut client = connect(&lb).await;

    send(&mut client, &[get("/p/1"), get("/p/2"), get("/p/3")]).await;
    let answers = expect_answers(&mut client, 3, &backends, &lb).await;
    assert_answers(&answers, &["/p/1", "/p/2", "/p/3"], &lb);
    for answer in &answers {
        assert!(
            !answer
                .header("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close")),
            "an answer announced a close: {answer:?}"
        );
    }

    send(&mut client, &[get("/p/4")]).await;
    let fourth = expect_answers(&mut client, 1, &backends, &lb).await;
    assert_answers(&fourth, &["/p/4"], &lb);
    assert_eq!(
        proxied(&backends),
        ["GET /p/1", "GET /p/2", "GET /p/3", "GET /p/4"],
        "each request reaches a backend once"
    );
}

/// After one request answered alone, two more written at once on the same connection get two answers in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_written_at_once_after_an_answered_one_are_answered_in_order() {
    let (backends, lb) = setup().await;
    let mut client = connect(&lb).await;

    send(&mut client, &[get("/q/1")]).await;
    let first = expect_answers(&mut client, 1, &backends, &lb).await;
    assert_answers(&first, &["/q/1"], &lb);

    send(&mut client, &[get("/q/2"), get("/q/3")]).await;
    let next = expect_answers(&mut client, 2, &backends, &lb).await;
    assert_answers(&next, &["/q/2", "/q/3"], &lb);
    assert_eq!(
        proxied(&backends),
        ["GET /q/1", "GET /q/2", "GET /q/3"],
        "each request reaches a backend once"
    );
}

/// A POST pipelined ahead of two GETs ends where its Content-Length says: a body that looks like a request is not taken for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_post_body_is_framed_by_its_content_length_and_never_read_as_a_request() {
    let (backends, lb) = setup().await;
    let mut client = connect(&lb).await;

    let body = "GET /smuggled HTTP/1.1\r\nHost: pipelining.test\r\n\r\n";
    send(&mut client, &[post("/b/1", body), get("/b/2"), get("/b/3")]).await;
    let answers = expect_answers(&mut client, 3, &backends, &lb).await;
    assert_answers(&answers, &["/b/1", "/b/2", "/b/3"], &lb);
    assert_eq!(
        proxied(&backends),
        ["GET /b/2", "GET /b/3", "POST /b/1"],
        "each request reaches a backend once, and the body is no request"
    );
    let at = backends
        .iter()
        .find_map(|b| b.last_request_to("/b/1"))
        .expect("the POST reached a backend");
    assert_eq!(
        at.header("content-length").as_deref(),
        Some(body.len().to_string().as_str()),
        "{at:?}"
    );
}
