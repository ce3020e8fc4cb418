//! The per-request logfmt lines on stdout: one per proxied request, with
//! every field Heroku-router-style tools expect; no secret (the Platform API
//! key, a client's `Authorization`) anywhere in the output even at debug
//! level; and `RUST_LOG=warn` silencing the info-level request lines.

mod common;

use std::time::Duration;

use common::backend::TestBackend;
use common::heroku_api::{AppFixture, Failure, FakeHerokuApi};
use common::lb::{LbBuilder, LbProcess, HEALTH_PATH};
use common::router::TestRouter;

/// The keys of a request line, in order: Heroku's router fields and units,
/// then ours (lines with a code add `code` and `desc` after `at`, and
/// `detail` at the end when there was an error).
const FIELDS: [&str; 14] = [
    "at",
    "method",
    "path",
    "host",
    "request_id",
    "fwd",
    "dyno",
    "connect",
    "service",
    "status",
    "bytes",
    "protocol",
    "backend",
    "app",
];

/// A distinctive Platform API key that must never be printed.
const API_KEY: &str = "hk-SECRET-4f9a";
/// A client's bearer token that must never be printed.
const CLIENT_SECRET: &str = "client-secret-xyz";

/// Parse a logfmt text into (key, value) pairs; quoted values are unescaped.
fn logfmt(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return pairs;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ' ' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Request lines in `output`: the logfmt part (from `at=`) of lines that
/// start, after an optional timestamp, with `at=info` or `at=error`.
fn request_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|line| {
            let at = line.find("at=")?;
            let rest = &line[at..];
            let prefix_ok = !line[..at].contains('=');
            (prefix_ok && (rest.starts_with("at=info ") || rest.starts_with("at=error ")))
                .then_some(rest)
        })
        .collect()
}

/// The request lines whose `request_id` is `id`.
fn lines_with_id<'a>(output: &'a str, id: &str) -> Vec<&'a str> {
    request_lines(output)
        .into_iter()
        .filter(|line| field(line, "request_id").as_deref() == Some(id))
        .collect()
}

fn field(line: &str, key: &str) -> Option<String> {
    logfmt(line)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The keys of a request line, `code`, `desc` and `detail` left out.
fn keys(line: &str) -> Vec<String> {
    logfmt(line)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "code" && k != "desc" && k != "detail")
        .collect()
}

/// A duration in the router's unit: digits then `ms`.
fn is_millis(value: &str) -> bool {
    value.strip_suffix("ms").is_some_and(is_number)
}

fn is_number(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

/// A UUID in its 8-4-4-4-12 hex form.
fn is_uuid(value: &str) -> bool {
    value.len() == 36
        && value.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Wait until stdout holds a request line for every id in `ids`.
async fn wait_for_lines(lb: &LbProcess, ids: &[&str]) {
    let ok = common::poll_until(100, Duration::from_millis(50), || async {
        let out = lb.stdout();
        ids.iter().all(|id| !lines_with_id(&out, id).is_empty())
    })
    .await;
    assert!(
        ok,
        "no request line for some of {ids:?}; stdout:\n{}",
        lb.stdout()
    );
}

/// Each proxied request gets one logfmt line with method, path without query, host, status, backend, app, timings, bytes, request id and fwd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_proxied_request_gets_one_line_with_every_field() {
    let backend = TestBackend::start("log-app").await;
    let lb = LbBuilder::new().backends(&[backend.url()]).start().await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    let logged = common::send(
        client
            .get(lb.url_for("/logged?token=abc"))
            .header("X-Request-Id", "test-log-123"),
    )
    .await
    .expect("GET /logged answered");
    assert_eq!(logged.status, 200);
    let posted = common::send(
        client
            .post(lb.url_for("/orders"))
            .header("X-Request-Id", "test-log-124")
            .body("{\"sku\": 1}"),
    )
    .await
    .expect("POST /orders answered");
    assert_eq!(posted.status, 200);
    let unnamed = common::get(&client, &lb.url_for("/no-id")).await;
    assert_eq!(unnamed.status, 200);
    let generated = backend
        .last_request_to("/no-id")
        .and_then(|r| r.header("x-request-id"))
        .expect("the balancer sends an X-Request-Id upstream when the client sent none");

    wait_for_lines(&lb, &["test-log-123", "test-log-124", &generated]).await;
    let out = lb.stdout();
    for id in ["test-log-123", "test-log-124", generated.as_str()] {
        let lines = lines_with_id(&out, id);
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line for request {id}: {lines:#?}"
        );
        println!("{}", lines[0]);
    }

    let line = lines_with_id(&out, "test-log-123")[0];
    assert_eq!(keys(line), FIELDS, "fields of {line}");
    let get = |key| field(line, key).unwrap_or_else(|| panic!("no {key} in {line}"));
    assert_eq!(get("at"), "info");
    assert_eq!(get("method"), "GET");
    assert_eq!(
        get("path"),
        "/logged",
        "the query string must not be logged"
    );
    assert!(
        !out.contains("token=abc"),
        "the query string appears in the output"
    );
    assert_eq!(get("host"), format!("127.0.0.1:{}", lb.port()));
    assert_eq!(get("status"), "200");
    assert_eq!(get("backend"), backend.url());
    assert_eq!(get("app"), backend.addr().to_string());
    for key in ["connect", "service"] {
        assert!(is_millis(&get(key)), "{key} is not in ms in {line}");
    }
    assert!(is_number(&get("bytes")), "bytes is not a number in {line}");
    assert_eq!(
        get("protocol"),
        "http",
        "a client without a trusted hop used http"
    );
    assert_eq!(
        get("dyno"),
        "",
        "off Heroku the dyno is empty, as the router leaves unknowns"
    );
    assert!(
        line.contains(" path=\"/logged\" "),
        "path quoted as the router does: {line}"
    );
    assert_eq!(
        get("bytes"),
        backend.name().len().to_string(),
        "bytes should count the body sent to the client"
    );
    assert_eq!(get("request_id"), "test-log-123");
    assert_eq!(get("fwd"), "127.0.0.1");

    let post = lines_with_id(&out, "test-log-124")[0];
    assert_eq!(field(post, "method").as_deref(), Some("POST"));
    assert_eq!(field(post, "path").as_deref(), Some("/orders"));
    assert!(
        is_uuid(&generated),
        "a generated request id should be a UUID, got {generated}"
    );
}

/// A request that cannot be proxied gets one at=error line with a stable code, a desc and the same fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_gets_an_error_line_with_the_same_fields() {
    let backend = TestBackend::start("gone-app").await;
    let lb = LbBuilder::new().backends(&[backend.url()]).start().await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    backend.stop_listening().await;

    let reply = common::send(
        client
            .get(lb.url_for("/fails?secret=1"))
            .header("X-Request-Id", "test-log-error-1"),
    )
    .await
    .expect("the balancer answers even when the backend is gone");
    assert!(
        reply.status >= 500,
        "expected a 5xx with the only backend refusing connections, got {reply:?}"
    );
    wait_for_lines(&lb, &["test-log-error-1"]).await;
    let out = lb.stdout();
    let lines = lines_with_id(&out, "test-log-error-1");
    assert_eq!(lines.len(), 1, "one line per request: {lines:#?}");
    let line = lines[0];
    println!("{line}");
    assert_eq!(field(line, "at").as_deref(), Some("error"), "{line}");
    let desc = field(line, "desc").unwrap_or_default();
    assert!(!desc.is_empty(), "an error line needs a desc: {line}");
    let code = field(line, "code").unwrap_or_default();
    assert!(
        ["L10", "L11"].contains(&code.as_str()),
        "no backend (L10) or connect failure (L11): {line}"
    );
    assert_eq!(keys(line), FIELDS, "fields of {line}");
    assert_eq!(field(line, "path").as_deref(), Some("/fails"));
    assert_eq!(
        field(line, "status"),
        Some(reply.status.to_string()),
        "{line}"
    );
}

/// At RUST_LOG=debug, with discovery failing in several ways, neither the API key nor a client's bearer token is ever printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_the_api_key_nor_a_clients_authorization_is_ever_printed() {
    const APP: &str = "app-one.test";
    let router = TestRouter::start(&[APP]).await;
    let api = FakeHerokuApi::start(API_KEY);
    let pipeline = api.add_pipeline("secret-pipeline");
    api.add_app(AppFixture::new(
        "app-one",
        &pipeline,
        &format!("{}/", router.url_for(APP)),
    ));
    let lb = LbBuilder::pipeline(&api, "secret-pipeline")
        .env("RUST_LOG", "debug")
        .resolve(&[(APP, "127.0.0.1")])
        .ca_file(common::ca_pem())
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;

    let bearer = format!("Bearer {CLIENT_SECRET}");
    let mut sent = 0;
    let mut send_with_authorization = |path: String| {
        sent += 1;
        let request = client
            .get(lb.url_for(&path))
            .header("Authorization", bearer.clone())
            .header("X-Request-Id", format!("secret-test-{sent}"));
        common::send(request)
    };
    let reply = send_with_authorization("/private".into())
        .await
        .expect("answered");
    assert_eq!(reply.status, 200, "{reply:?}");
    let reached = router
        .app(APP)
        .requests_to("/private")
        .last()
        .and_then(|r| r.headers.get("authorization").cloned())
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    assert_eq!(
        reached.as_deref(),
        Some(bearer.as_str()),
        "the client's Authorization should reach the app unchanged"
    );

    // Discovery failing in several ways, each seen by the fake at least once;
    // 401 last, since it (like 403 and 404) backs discovery off for 30 s.
    for failure in [
        Failure::Status(500),
        Failure::WrongShape,
        Failure::TruncatedJson,
        Failure::Unauthorized,
    ] {
        let mark = api.mark();
        api.set_failure(failure.clone());
        common::wait_until(
            &format!("a discovery request answered with {failure:?}"),
            200,
            Duration::from_millis(50),
            || async { !api.requests_since(mark).is_empty() },
        )
        .await;
        for path in ["/private/again", "/_lb/status", "/_lb/status.json"] {
            let _ = send_with_authorization(path.to_string()).await;
        }
    }
    api.clear_failures();
    router.app(APP).set_unavailable(true);
    for _ in 0..3 {
        let _ = send_with_authorization("/private/unavailable".into()).await;
    }

    // The key was really in use, and debug logging really was on.
    assert!(
        api.requests()
            .iter()
            .any(|r| r.header("authorization") == Some(&format!("Bearer {API_KEY}"))),
        "discovery never sent the API key, so its absence from the logs proves nothing"
    );
    let out = lb.stdout();
    let err = lb.stderr();
    assert!(
        out.contains("level=debug"),
        "RUST_LOG=debug produced no debug lines; stdout:\n{out}"
    );
    println!(
        "stdout: {} lines ({} at debug), stderr: {} lines",
        out.lines().count(),
        out.lines().filter(|l| l.contains("level=debug")).count(),
        err.lines().count()
    );
    let mut leaks = Vec::new();
    for (name, text) in [("stdout", &out), ("stderr", &err)] {
        for secret in [API_KEY, CLIENT_SECRET] {
            let lines: Vec<_> = text.lines().filter(|l| l.contains(secret)).collect();
            if !lines.is_empty() {
                leaks.push(format!(
                    "{secret} appears on {} {name} lines, first from module {:?}:\n{}",
                    lines.len(),
                    field(lines[0], "module").unwrap_or_default(),
                    lines[0]
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets printed:\n{}", leaks.join("\n"));
}

/// On a dyno, the line names the balancer's dyno, and the protocol and
/// client that Heroku's router reported (the last X-Forwarded-For entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_dyno_the_line_names_the_dyno_and_the_routers_protocol_and_client() {
    let backend = TestBackend::start("dyno-app").await;
    let lb = LbBuilder::new()
        .backends(&[backend.url()])
        .env("DYNO", "web.3")
        .status_token("log-test-token")
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    let reply = common::send(
        client
            .get(lb.url_for("/via-router"))
            .header("X-Request-Id", "test-log-dyno")
            .header("X-Forwarded-For", "198.51.100.9, 203.0.113.50")
            .header("X-Forwarded-Proto", "https"),
    )
    .await
    .expect("answered");
    assert_eq!(reply.status, 200);
    wait_for_lines(&lb, &["test-log-dyno"]).await;
    let out = lb.stdout();
    let line = lines_with_id(&out, "test-log-dyno")[0];
    println!("{line}");
    assert_eq!(field(line, "dyno").as_deref(), Some("web.3"), "{line}");
    assert_eq!(field(line, "protocol").as_deref(), Some("https"), "{line}");
    assert_eq!(
        field(line, "fwd").as_deref(),
        Some("203.0.113.50"),
        "{line}"
    );
}

/// Every kind of failure carries its stable code: L10 no backend, L11 a
/// failed connection, L15 a refused request head, and L27 with status 499
/// for a client that leaves before the answer (as nginx logs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_failure_is_logged_with_its_code() {
    // A backend that stalls, to be left by the client.
    let slow = TestBackend::start("slow-app").await;
    slow.set_answer_for("/slow", common::backend::Answer::Stall);
    let lb = LbBuilder::new()
        .backends(&[slow.url()])
        .health_check_path(HEALTH_PATH)
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    let impatient = common::http_client_with_timeout(Duration::from_millis(500));
    let left = common::send(
        impatient
            .get(lb.url_for("/slow"))
            .header("X-Request-Id", "test-log-499"),
    )
    .await;
    assert!(left.is_err(), "the client should have given up: {left:?}");
    let refused = common::send(
        client
            .get(lb.url_for("/big"))
            .header("X-Request-Id", "test-log-431")
            .header("X-Big", "b".repeat(9 * 1024)),
    )
    .await
    .expect("answered");
    assert_eq!(refused.status, 431);
    wait_for_lines(&lb, &["test-log-499", "test-log-431"]).await;
    let out = lb.stdout();
    let gone = lines_with_id(&out, "test-log-499")[0];
    println!("{gone}");
    assert_eq!(field(gone, "at").as_deref(), Some("info"), "{gone}");
    assert_eq!(field(gone, "code").as_deref(), Some("L27"), "{gone}");
    assert_eq!(field(gone, "status").as_deref(), Some("499"), "{gone}");
    let big = lines_with_id(&out, "test-log-431")[0];
    println!("{big}");
    assert_eq!(field(big, "code").as_deref(), Some("L15"), "{big}");
    assert_eq!(field(big, "status").as_deref(), Some("431"), "{big}");

    // The only backend refuses: a failed connection, then nothing to try.
    slow.stop_listening().await;
    let failed = common::send(
        client
            .get(lb.url_for("/down"))
            .header("X-Request-Id", "test-log-l11"),
    )
    .await
    .expect("answered");
    assert!(failed.status >= 500);
    wait_for_lines(&lb, &["test-log-l11"]).await;
    let out = lb.stdout();
    let l11 = lines_with_id(&out, "test-log-l11")[0];
    println!("{l11}");
    assert_eq!(field(l11, "code").as_deref(), Some("L11"), "{l11}");

    // A pipeline with no app at all: nothing to send to.
    let api = FakeHerokuApi::start(API_KEY);
    let empty = api.add_pipeline("empty");
    let lb = LbBuilder::pipeline(&api, empty.as_str()).start().await;
    let none = common::send(
        client
            .get(lb.url_for("/none"))
            .header("X-Request-Id", "test-log-l10"),
    )
    .await
    .expect("answered");
    assert_eq!(none.status, 503);
    wait_for_lines(&lb, &["test-log-l10"]).await;
    let out = lb.stdout();
    let l10 = lines_with_id(&out, "test-log-l10")[0];
    println!("{l10}");
    assert_eq!(field(l10, "code").as_deref(), Some("L10"), "{l10}");
    assert_eq!(field(l10, "desc").as_deref(), Some("No backend available"));
}

/// With RUST_LOG=warn no at=info request line is written, while error lines still are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_warn_silences_the_info_request_lines() {
    let backend = TestBackend::start("quiet-app").await;
    let lb = LbBuilder::new()
        .env("RUST_LOG", "warn")
        .backends(&[backend.url()])
        .start()
        .await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    for i in 0..3 {
        let reply = common::send(
            client
                .get(lb.url_for(&format!("/quiet/{i}")))
                .header("X-Request-Id", format!("quiet-{i}")),
        )
        .await
        .expect("answered");
        assert_eq!(reply.status, 200);
    }
    assert_eq!(backend.count_to("/quiet/"), 3);

    // A failing request logs at error level: once its line is out, the
    // lines of the earlier requests would have been written too.
    backend.stop_listening().await;
    let failed = common::send(
        client
            .get(lb.url_for("/quiet/failing"))
            .header("X-Request-Id", "quiet-error"),
    )
    .await
    .expect("answered");
    assert!(failed.status >= 500, "{failed:?}");
    wait_for_lines(&lb, &["quiet-error"]).await;

    let out = lb.stdout();
    let info: Vec<_> = request_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("at=info"))
        .collect();
    assert!(
        info.is_empty(),
        "RUST_LOG=warn still wrote request lines:\n{}",
        info.join("\n")
    );
    assert!(
        !out.contains("level=info"),
        "RUST_LOG=warn still wrote info lines:\n{out}"
    );
}

/// Send `count` requests with ids `{prefix}-N`, each answered 200, then
/// signal the balancer with `signal` and wait (up to 10 s) for it to exit.
/// Returns its stdout. With `only_the_exit_flush`, the buffer's interval is
/// raised to a minute and only request lines are logged (nothing else wakes
/// the writer), and the lines are checked to be still unwritten just before
/// the signal: only the flush at exit can write them.
async fn requests_then_signal(
    prefix: &str,
    count: usize,
    signal: &str,
    only_the_exit_flush: bool,
) -> String {
    let backend = TestBackend::start(&format!("{prefix}-app")).await;
    let mut builder = LbBuilder::new().backends(&[backend.url()]);
    if only_the_exit_flush {
        builder = builder
            .env("LB_LOG_FLUSH_INTERVAL_SECONDS", "60")
            .env("RUST_LOG", "off,heroku_lb::access=info");
    }
    let mut lb = builder.start().await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    for i in 0..count {
        let reply = common::send(
            client
                .get(lb.url_for(&format!("/{prefix}/{i}")))
                .header("X-Request-Id", format!("{prefix}-{i}")),
        )
        .await
        .expect("answered");
        assert_eq!(reply.status, 200);
    }
    if only_the_exit_flush {
        // Well past the default interval (100 ms): still in the buffer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let early = lines_with_id(&lb.stdout(), &format!("{prefix}-0")).len();
        assert_eq!(
            early, 0,
            "a request line was written before the exit with a 60 s interval"
        );
    }
    // At once: the last lines are still in the log buffer.
    let kill = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(lb.pid().to_string())
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -{signal} failed");
    let status = lb.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "heroku-lb did not exit 0 within 10 s of SIG{signal}: {status:?}; stderr:\n{}",
        lb.stderr()
    );
    lb.stdout()
}

/// Every request line is on stdout when the process has exited after SIGTERM,
/// with a flush interval of a minute and nothing else logged: the lines are
/// written by the flush at exit alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_line_is_lost_at_sigterm() {
    // 100 lines (about 30 KB) stay below the 64 KiB that wakes the writer.
    let out = requests_then_signal("term", 100, "TERM", true).await;
    let ids: Vec<String> = request_lines(&out)
        .into_iter()
        .filter_map(|line| field(line, "request_id"))
        .filter(|id| id.starts_with("term-"))
        .collect();
    assert_eq!(
        ids.len(),
        100,
        "request lines after SIGTERM; stdout:\n{out}"
    );
    // In order: the buffer keeps lines as they were logged.
    let expected: Vec<String> = (0..100).map(|i| format!("term-{i}")).collect();
    assert_eq!(ids, expected);
}

/// The same after SIGINT, Pingora's fast shutdown, with every line logged:
/// Pingora's last line, logged as the process exits, is there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_line_is_lost_at_sigint() {
    let out = requests_then_signal("int", 300, "INT", false).await;
    let lines = request_lines(&out)
        .into_iter()
        .filter(|line| field(line, "request_id").is_some_and(|id| id.starts_with("int-")))
        .count();
    assert_eq!(lines, 300, "request lines after SIGINT; stdout:\n{out}");
    assert!(
        out.contains("All runtimes exited"),
        "Pingora's last line is missing; stdout:\n{out}"
    );
}

/// A line waits in the buffer at most about 100 ms: one request's line is on
/// stdout well within a second, with nothing else logged to fill the buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_line_is_written_within_the_flush_interval() {
    let backend = TestBackend::start("lone-app").await;
    let lb = LbBuilder::new().backends(&[backend.url()]).start().await;
    let client = common::http_client();
    lb.wait_proxying(&client).await;
    let reply = common::send(client.get(lb.url()).header("X-Request-Id", "lone-1"))
        .await
        .expect("answered");
    assert_eq!(reply.status, 200);
    let sent = std::time::Instant::now();
    let seen = common::poll_until(100, Duration::from_millis(10), || async {
        !lines_with_id(&lb.stdout(), "lone-1").is_empty()
    })
    .await;
    let waited = sent.elapsed();
    println!("request line on stdout {waited:?} after the answer");
    assert!(
        seen,
        "no line for lone-1 within 1 s; stdout:\n{}",
        lb.stdout()
    );
}
