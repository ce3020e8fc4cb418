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

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use common::backend::{TestBackend, PATH_HEADER};
use common::lb::{LbBuilder, LbProcess};
use common::status::wait_healthy;

/// Most header lines `read_response` reads before calling an answer malformed.
const MAX_HEADER_LINES: usize = 100;
/// Largest body `read_response` accepts.
const MAX_BODY: usize = 1024 * 1024;

/// One answer read off the connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Status and every header, for failure messages.
    fn status_and_headers(&self) -> (u16, &[(String, String)]) {
        (self.status, &self.headers)
    }

    /// Status and `x-test-path`, for comparing answers with requests.
    fn summary(&self) -> (u16, String) {
        (
            self.status,
            self.header(PATH_HEADER).unwrap_or("-").to_string(),
        )
    }
}

/// A client connection to the balancer, read through a buffer so that bytes
/// of the next answer stay there for the next read.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(lb: &LbProcess) -> Client {
        let stream = tokio::time::timeout(
            common::CLIENT_TIMEOUT,
            TcpStream::connect(("127.0.0.1", lb.port())),
        )
        .await
        .expect("connect to the balancer in time")
        .expect("connect to the balancer");
        Client {
            stream: BufReader::new(stream),
        }
    }

    /// Write `requests` back to back in one write.
    async fn send(&mut self, requests: &[String]) {
        let bytes = requests.concat();
        tokio::time::timeout(
            common::CLIENT_TIMEOUT,
            self.stream.get_mut().write_all(bytes.as_bytes()),
        )
        .await
        .expect("write the requests in time")
        .expect("write the requests");
    }

    /// Read `count` answers in turn; stops at the first one that does not
    /// come (the error names how many came before it).
    async fn read(&mut self, count: usize) -> Result<Vec<RawResponse>, String> {
        let mut answers = Vec::new();
        for i in 0..count {
            match tokio::time::timeout(common::CLIENT_TIMEOUT, read_response(&mut self.stream))
                .await
            {
                Ok(Ok(answer)) => answers.push(answer),
                Ok(Err(e)) => {
                    return Err(format!(
                        "answer {} of {count}: {e}; answers before it: {:?}",
                        i + 1,
                        answers
                            .iter()
                            .map(RawResponse::status_and_headers)
                            .collect::<Vec<_>>()
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "answer {} of {count}: none within {:?}; answers before it: {:?}",
                        i + 1,
                        common::CLIENT_TIMEOUT,
                        answers
                            .iter()
                            .map(RawResponse::status_and_headers)
                            .collect::<Vec<_>>()
                    ))
                }
            }
        }
        Ok(answers)
    }
}

/// Read one whole answer: status line, headers, and a body framed by
/// `Content-Length` or chunked encoding.
async fn read_response(stream: &mut BufReader<TcpStream>) -> Result<RawResponse, String> {
    let mut line = String::new();
    let n = stream
        .read_line(&mut line)
        .await
        .map_err(|e| format!("reading the status line: {e}"))?;
    if n == 0 {
        return Err("the balancer closed the connection".to_string());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not a status line: {line:?}"))?;
    let mut headers = Vec::new();
    for _ in 0..MAX_HEADER_LINES {
        line.clear();
        if stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("the connection ended inside the header".to_string());
        }
        let header = line.trim_end();
        if header.is_empty() {
            let response = RawResponse {
                status,
                headers,
                body: Vec::new(),
            };
            return read_body(stream, response).await;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("not a header line: {header:?}"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Err(format!("more than {MAX_HEADER_LINES} header lines"))
}

/// Read the body of `response` by its framing.
async fn read_body(
    stream: &mut BufReader<TcpStream>,
    mut response: RawResponse,
) -> Result<RawResponse, String> {
    if response.status / 100 == 1 || matches!(response.status, 204 | 304) {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut line = String::new();
        for _ in 0..MAX_BODY {
            line.clear();
            stream
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("not a chunk size: {line:?}"))?;
            if size == 0 {
                // No trailers expected: just the blank line.
                line.clear();
                stream
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(response);
            }
            if response.body.len() + size > MAX_BODY {
                return Err("chunked body too large".to_string());
            }
            let mut chunk = vec![0; size + 2];
            stream
                .read_exact(&mut chunk)
                .await
                .map_err(|e| format!("reading a chunk: {e}"))?;
            response.body.extend_from_slice(&chunk[..size]);
        }
        return Err("too many chunks".to_string());
    }
    let length: usize = response
        .header("content-length")
        .ok_or_else(|| format!("an answer with neither length nor chunks: {response:?}"))?
        .parse()
        .map_err(|e| format!("bad content-length: {e}"))?;
    if length > MAX_BODY {
        return Err(format!("content-length {length} too large"));
    }
    response.body = vec![0; length];
    stream
        .read_exact(&mut response.body)
        .await
        .map_err(|e| format!("reading a body of {length} bytes: {e}"))?;
    Ok(response)
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
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    let lb = LbBuilder::new()
        .backends(&urls)
        .env("HEALTH_CHECK_PATH", "/health")
        .start()
        .await;
    wait_healthy(&common::http_client(), &lb, 2).await;
    (backends, lb)
}

/// Panics unless `answers` are 200s for `paths`, in that order.
fn assert_answers(answers: &[RawResponse], paths: &[&str], lb: &LbProcess) {
    let got: Vec<(u16, String)> = answers.iter().map(RawResponse::summary).collect();
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
    client: &mut Client,
    count: usize,
    backends: &[TestBackend],
    lb: &LbProcess,
) -> Vec<RawResponse> {
    client.read(count).await.unwrap_or_else(|e| {
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
    let mut client = Client::connect(&lb).await;

    client.send(&[get("/p/1"), get("/p/2"), get("/p/3")]).await;
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

    client.send(&[get("/p/4")]).await;
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
    let mut client = Client::connect(&lb).await;

    client.send(&[get("/q/1")]).await;
    let first = expect_answers(&mut client, 1, &backends, &lb).await;
    assert_answers(&first, &["/q/1"], &lb);

    client.send(&[get("/q/2"), get("/q/3")]).await;
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
    let mut client = Client::connect(&lb).await;

    let body = "GET /smuggled HTTP/1.1\r\nHost: pipelining.test\r\n\r\n";
    client
        .send(&[post("/b/1", body), get("/b/2"), get("/b/3")])
        .await;
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
