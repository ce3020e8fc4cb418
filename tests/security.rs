//! What must never cross the balancer: hop-by-hop request headers (they
//! belong to the client's connection, not the app's), requests for the
//! balancer's own `/_lb/` paths (never an app's business), the operator's view
//! without the status token, and secrets (the API key, clients'
//! `Authorization` values, query strings) into a log line or a status answer.
//! Requests an HTTP client library would tidy up are written as raw bytes.

mod common;

use std::time::Duration;

use common::backend::{Answer, TestBackend, BACKEND_HEADER};
use common::heroku_api::{Failure, FakeHerokuApi};
use common::lb::{balancer, LbBuilder, LbProcess, HEALTH_PATH};
use common::raw_client::raw_head;
use common::status::poll_status;
use serde_json::Value;

const TOKEN: &str = "status-token-9d7e1c44-secret";
const KEY: &str = "hrku-security-key-0f6a2b93-do-not-log";
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// Two backends behind a balancer with `LB_STATUS_TOKEN`, both healthy.
async fn two_apps_behind_the_token() -> (Vec<TestBackend>, LbProcess, reqwest::Client) {
    let backends = TestBackend::start_many("app", 2).await;
    let (lb, client) = balancer(&backends)
        .status_token(TOKEN)
        .start_healthy(2)
        .await;
    (backends, lb, client)
}

/// Paths the backends received that start with `prefix`.
fn paths_seen(backends: &[TestBackend], prefix: &str) -> Vec<String> {
    backends
        .iter()
        .flat_map(|b| b.requests())
        .map(|r| r.path)
        .filter(|p| p.starts_with(prefix))
        .collect()
}

/// `Connection` and the fields it nominates, `Keep-Alive`, `TE`, `Trailer`,
/// `Proxy-Authorization`, `Proxy-Connection` and `Upgrade` (on a request that
/// is no upgrade) stop at the balancer; end-to-end headers pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_from_the_client_never_reach_the_backend() {
    let backends = TestBackend::start_many("app", 1).await;
    let (lb, _client) = balancer(&backends).start_healthy(1).await;

    // The same hop-by-hop set twice: with `Upgrade: websocket` and with
    // `Upgrade: h2c`. Neither request is an upgrade: `Connection` does not
    // nominate `upgrade`.
    let mut leaked = Vec::new();
    for upgrade in ["websocket", "h2c"] {
        let path = format!("/hop/{upgrade}");
        let request = format!(
            "GET {path} HTTP/1.1\r\n\
            Host: 127.0.0.1\r\n\
            Connection: keep-alive, X-Foo\r\n\
            Connection: X-Bar\r\n\
            X-Foo: nominated-by-connection\r\n\
            X-Bar: nominated-too\r\n\
            Keep-Alive: timeout=5, max=100\r\n\
            TE: trailers\r\n\
            Trailer: X-Checksum\r\n\
            Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n\
            Proxy-Connection: keep-alive\r\n\
            Upgrade: {upgrade}\r\n\
            X-Kept: end-to-end\r\n\
            \r\n"
        );
        let answer = raw_head(&lb, request.as_bytes()).await;
        assert_eq!(
            answer.as_ref().map(|answer| answer.status).ok(),
            Some(200),
            "{path}: {answer:?}\noutput:\n{}",
            lb.output()
        );
        let seen = backends[0]
            .last_request_to(&path)
            .expect("the request reached the backend");
        assert_eq!(
            seen.header("x-kept").as_deref(),
            Some("end-to-end"),
            "{path}: an end-to-end header was lost: {:?}",
            seen.headers
        );
        for name in [
            "x-foo",
            "x-bar",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-connection",
            "upgrade",
        ] {
            if let Some(value) = seen.headers.get(name) {
                leaked.push(format!("{path}: {name}: {value:?}"));
            }
        }
        // The balancer may say `Connection: keep-alive` for its own hop, but
        // never pass on what the client's connection nominated, nor turn the
        // request into an upgrade.
        for value in seen.headers.get_all("connection") {
            let value = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
            if value.contains("x-foo") || value.contains("x-bar") || value.contains("upgrade") {
                leaked.push(format!("{path}: connection: {value}"));
            }
        }
        println!("{path}: the backend saw {:?}", seen.headers);
    }
    assert!(
        leaked.is_empty(),
        "hop-by-hop headers reached the backend: {leaked:#?}"
    );
}

/// Every method on every path under `/_lb/` (and `/_lb` itself, and the
/// absolute form `http://host/_lb/...`) is answered by the balancer; no
/// backend ever receives one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_are_never_forwarded_whatever_the_method_or_sub_path() {
    let (backends, lb, _client) = two_apps_behind_the_token().await;

    let methods = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PURGE",
    ];
    let paths = [
        "/_lb",
        "/_lb/",
        "/_lb/status",
        "/_lb/metrics",
        "/_lb/status/extra",
        "/_lb/a/b/c",
        "/_lb/status?format=json",
        "/_lb?x=1",
        "/_lb/../status",
        "/_lb/%2e%2e/status",
        "/_lb//status",
    ];
    let mut answered_by_backend = Vec::new();
    for method in methods {
        for path in paths {
            let body = if matches!(method, "POST" | "PUT" | "PATCH") {
                "Content-Length: 3\r\n\r\nx=1"
            } else {
                "\r\n"
            };
            let request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{body}");
            match raw_head(&lb, request.as_bytes()).await {
                Ok(answer) if answer.header(BACKEND_HEADER).is_some() => {
                    answered_by_backend.push(format!("{method} {path}"))
                }
                Ok(_) => {}
                Err(e) => answered_by_backend.push(format!("{method} {path}: no answer: {e}")),
            }
        }
    }
    for path in ["/_lb/status", "/_lb/metrics", "/_lb/other"] {
        let request = format!("GET http://127.0.0.1{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        match raw_head(&lb, request.as_bytes()).await {
            Ok(answer) if answer.header(BACKEND_HEADER).is_some() => {
                answered_by_backend.push(format!("absolute-form GET http://127.0.0.1{path}"))
            }
            Ok(_) => {}
            Err(e) => answered_by_backend.push(format!("absolute-form {path}: no answer: {e}")),
        }
    }
    let forwarded: Vec<String> = paths_seen(&backends, "/_lb")
        .into_iter()
        .chain(paths_seen(&backends, "http"))
        .collect();
    assert!(
        answered_by_backend.is_empty() && forwarded.is_empty(),
        "answered by a backend: {answered_by_backend:?}; backends received: {forwarded:?}"
    );
}

/// Encoded and unnormalized spellings of `/_lb/status` (`/%5Flb/status`,
/// `//_lb/status`, `/x/../_lb/status`, ...) are either answered by the
/// balancer or passed to the app byte for byte, never half-decoded, never a
/// 5xx; without the token none of them shows the status detail. What each one
/// does is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_admin_paths_are_answered_by_the_balancer_or_passed_on_verbatim() {
    let (backends, lb, _client) = two_apps_behind_the_token().await;

    let variants = [
        "/%5Flb/status",
        "/%5flb/status",
        "/_lb%2Fstatus",
        "/%5F%6C%62/status",
        "/_LB/status",
        "//_lb/status",
        "/./_lb/status",
        "/x/../_lb/status",
        "/_lb%2fstatus",
    ];
    let mut report = Vec::new();
    let mut problems = Vec::new();
    for path in variants {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let answer = raw_head(&lb, request.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let received: Vec<String> = backends
            .iter()
            .flat_map(|b| b.requests())
            .map(|r| r.path)
            .filter(|p| p == path)
            .collect();
        let outcome = match &answer {
            Err(e) => {
                problems.push(format!("{path}: no answer: {e}"));
                "no answer".to_string()
            }
            Ok(answer) if answer.header(BACKEND_HEADER).is_some() => {
                let status = answer.status;
                if received.is_empty() {
                    problems.push(format!(
                        "{path}: answered by an app that did not receive it verbatim"
                    ));
                }
                format!("forwarded to the app verbatim, app answered {status}")
            }
            Ok(answer) => {
                let status = answer.status;
                if status >= 500 {
                    problems.push(format!("{path}: {status}"));
                }
                // Health checks may land meanwhile; only this path counts.
                if !received.is_empty() {
                    problems.push(format!("{path}: answered {status} yet also forwarded"));
                }
                format!("answered by the balancer: {status}")
            }
        };
        report.push(format!("{path:22} -> {outcome}"));
    }
    println!("encoded admin paths:\n{}", report.join("\n"));
    assert!(problems.is_empty(), "{problems:#?}\n{}", report.join("\n"));
}

/// With `LB_STATUS_TOKEN`, `/_lb/metrics` answers 401 to callers without the
/// exact token (it names every app) and 200 with it; `/_lb/status` gives them
/// only the summary, in JSON (200) and in HTML (401, asking for Basic auth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_detail_need_the_token() {
    let (backends, lb, client) = two_apps_behind_the_token().await;

    let wrong: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[1..])),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ];
    let ports: Vec<String> = backends.iter().map(|b| b.port().to_string()).collect();
    for authorization in &wrong {
        let with = |request: reqwest::RequestBuilder| match authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        };
        let metrics = common::send(with(client.get(lb.url_for("/_lb/metrics"))))
            .await
            .expect("an answer");
        assert_eq!(
            metrics.status, 401,
            "metrics with {authorization:?}: {metrics:?}"
        );
        let query = common::send(with(
            client.get(lb.url_for(&format!("/_lb/metrics?token={TOKEN}"))),
        ))
        .await
        .expect("an answer");
        assert_eq!(query.status, 401, "a token in the query string is no token");

        for accept in ["application/json", BROWSER_ACCEPT] {
            let status = common::send(with(
                client
                    .get(lb.url_for("/_lb/status"))
                    .header("accept", accept),
            ))
            .await
            .expect("an answer");
            // A browser is challenged for Basic credentials; a monitor's JSON
            // stays 200 with the summary.
            let expected = if accept == BROWSER_ACCEPT { 401 } else { 200 };
            assert_eq!(
                status.status, expected,
                "{authorization:?} {accept}: {status:?}"
            );
            let leaked: Vec<&String> = ports
                .iter()
                .filter(|port| status.body.contains(port.as_str()))
                .collect();
            assert!(
                leaked.is_empty() && !status.body.contains("\"backends\":"),
                "{authorization:?} {accept}: the summary gives away backends: {}",
                status.body
            );
        }
    }

    let bearer = format!("Bearer {TOKEN}");
    let metrics = common::send(
        client
            .get(lb.url_for("/_lb/metrics"))
            .header("authorization", &bearer),
    )
    .await
    .expect("an answer");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(metrics.body.contains("# TYPE"), "{}", metrics.body);
    let status = common::send(
        client
            .get(lb.url_for("/_lb/status"))
            .header("authorization", &bearer),
    )
    .await
    .expect("an answer");
    assert!(
        ports.iter().all(|port| status.body.contains(port.as_str())),
        "the token shows the detail: {}",
        status.body
    );
}

/// Every secret the balancer sees, and whether `text` contains one.
fn secrets_in(text: &str, secrets: &[&str]) -> Vec<String> {
    secrets
        .iter()
        .filter(|secret| text.contains(*secret))
        .map(|secret| secret.to_string())
        .collect()
}

/// With `RUST_LOG=debug`, neither the API key nor any client `Authorization`
/// (or `Proxy-Authorization`, or a wrong status token) reaches a log line,
/// through served requests, failed ones, admin requests and failing API
/// rounds; nor does any of them, or the status token, appear in a status
/// answer (JSON or HTML).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_a_log_line_or_a_status_answer() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("secrets");
    let one = TestBackend::start_app(&api, &pipeline, "sec-one").await;
    let two = TestBackend::start_app(&api, &pipeline, "sec-two").await;
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .health_check_path(HEALTH_PATH)
        .health_check_interval("0.3")
        .status_token(TOKEN)
        .env("RUST_LOG", "debug")
        .config("first_byte_timeout_seconds", "1")
        .config("api_timeout_seconds", "0.5")
        .start()
        .await;
    let client = common::http_client();
    poll_status(&client, &lb)
        .token(TOKEN)
        .until_healthy(2)
        .await;

    let client_bearer = "client-bearer-3a9f0c71-secret";
    let basic = "dXNlcjpiYXNpYy1wYXNzd29yZC1zZWNyZXQ="; // user:basic-password-secret
    let proxy_basic = "cHJveHk6cHJveHktcGFzc3dvcmQtc2VjcmV0"; // proxy:proxy-password-secret
    let wrong_token = "wrong-status-token-77e2-secret";
    let authorizations = [format!("Bearer {client_bearer}"), format!("Basic {basic}")];

    // Served requests.
    for (i, authorization) in authorizations.iter().enumerate() {
        for j in 0..4 {
            let reply = common::send(
                client
                    .get(lb.url_for(&format!("/secret/{i}/{j}")))
                    .header("authorization", authorization)
                    .header("proxy-authorization", format!("Basic {proxy_basic}")),
            )
            .await
            .expect("an answer");
            assert_eq!(reply.status, 200, "{reply:?}");
        }
    }
    // A POST to an app that resets (not retried: an error line), and a GET
    // that times out (504: an error line).
    one.stop_listening().await;
    for i in 0..2 {
        let _ = common::send(
            client
                .post(lb.url_for(&format!("/secret/post/{i}")))
                .header("authorization", &authorizations[0])
                .body("x=1"),
        )
        .await;
    }
    one.listen_again().await;
    two.set_answer(Answer::Stall);
    for i in 0..2 {
        let _ = common::send(
            client
                .get(lb.url_for(&format!("/secret/stall/{i}")))
                .header("authorization", &authorizations[1]),
        )
        .await;
    }
    two.set_answer(Answer::Normal);
    // Admin requests with a wrong token and with the right one.
    for authorization in [format!("Bearer {wrong_token}"), format!("Bearer {TOKEN}")] {
        for path in ["/_lb/status", "/_lb/metrics", "/_lb/nope"] {
            let _ = common::send(
                client
                    .get(lb.url_for(path))
                    .header("authorization", &authorization),
            )
            .await;
        }
    }
    // Failing API rounds: a 500, then a 401 (after which rounds wait 30 s).
    for failure in [Failure::Status(500), Failure::Unauthorized] {
        let mark = api.mark();
        api.set_failure(failure);
        common::wait_until(
            "a discovery round against the failing API",
            100,
            Duration::from_millis(50),
            || async { !api.requests_since(mark).is_empty() },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    api.clear_failures();

    let secrets = [
        KEY,
        client_bearer,
        basic,
        proxy_basic,
        wrong_token,
        "basic-password-secret",
    ];
    let bearer = format!("Bearer {TOKEN}");
    let mut answers = Vec::new();
    for accept in ["application/json", BROWSER_ACCEPT] {
        for authorization in [Some(bearer.as_str()), None] {
            let mut request = client
                .get(lb.url_for("/_lb/status"))
                .header("accept", accept);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let reply = common::send(request).await.expect("an answer");
            answers.push((format!("{accept} token={}", authorization.is_some()), reply));
        }
    }
    for (what, reply) in &answers {
        let mut leaked = secrets_in(&reply.body, &secrets);
        leaked.extend(secrets_in(&reply.body, &[TOKEN]));
        assert!(
            leaked.is_empty(),
            "status ({what}) shows {leaked:?}: {}",
            reply.body
        );
    }
    let detail: Value = serde_json::from_str(&answers[0].1.body).expect("status JSON");
    assert!(
        detail["discovery"]["failed_rounds"].as_u64() > Some(0),
        "the API failures were seen: {}",
        detail["discovery"]
    );

    let output = lb.output();
    println!(
        "{} log lines, {} at error level, {} at debug level",
        output.lines().count(),
        output
            .lines()
            .filter(|l| l.contains("level=error") || l.contains("at=error"))
            .count(),
        output.lines().filter(|l| l.contains("level=debug")).count()
    );
    let leaking: Vec<&str> = output
        .lines()
        .filter(|line| {
            !secrets_in(line, &secrets).is_empty() || !secrets_in(line, &[TOKEN]).is_empty()
        })
        .collect();
    assert!(
        output.lines().count() > 20 && output.contains("level=debug"),
        "expected debug output; got:\n{output}"
    );
    assert!(
        leaking.is_empty(),
        "log lines with secrets:\n{}",
        leaking.join("\n")
    );
}

/// Query strings never reach a log line (README: "Query strings ... are never
/// logged"), whether the request is served, retried after a refused connect,
/// times out (504), or finds no backend (502/503), at `RUST_LOG=debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_never_reach_a_log_line() {
    let backends = TestBackend::start_many("app", 2).await;
    let lb = balancer(&backends)
        .env("RUST_LOG", "debug")
        .config("first_byte_timeout_seconds", "1")
        .health_check_interval("60")
        .start()
        .await;
    let client = common::http_client();
    poll_status(&client, &lb)
        .token(TOKEN)
        .until_healthy(2)
        .await;
    let secret = "query-secret-5e1d-never-log";

    let mut outcomes = Vec::new();
    let ask = |path: String| {
        let client = client.clone();
        let url = lb.url_for(&path);
        async move {
            let reply = common::send(client.get(&url)).await;
            format!("{path}: {:?}", reply.map(|r| r.status))
        }
    };
    // Served.
    outcomes.push(ask(format!("/q/served?api_token={secret}")).await);
    // A timeout: 504.
    backends[0].set_answer(Answer::Stall);
    backends[1].set_answer(Answer::Stall);
    outcomes.push(ask(format!("/q/stall?api_token={secret}")).await);
    backends[0].set_answer(Answer::Normal);
    backends[1].set_answer(Answer::Normal);
    // Refused connects, retried, then nothing left: 502/503.
    backends[0].stop_listening().await;
    backends[1].stop_listening().await;
    for i in 0..3 {
        outcomes.push(ask(format!("/q/refused/{i}?api_token={secret}")).await);
    }
    println!("{outcomes:#?}");

    let output = lb.output();
    let leaking: Vec<&str> = output
        .lines()
        .filter(|line| line.contains(secret))
        .collect();
    assert!(
        leaking.is_empty(),
        "log lines with the query string:\n{}",
        leaking.join("\n")
    );
}
