//! Sticky sessions (`LB_STICKY_COOKIE`): the first answer to a client pins it
//! with a cookie whose opaque token names one backend; requests carrying it
//! stay there while it is healthy, on every balancer with the same secret; a
//! token naming nothing usable is ignored and replaced; the cookie never
//! reaches the apps, whose own cookies pass untouched; and an invalid cookie
//! name stops the balancer at start.
//! The shared test backend sets no cookies, so the app that does is a small
//! HTTP/1.1 server defined in this file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::backend::{TestBackend, BACKEND_HEADER};
use common::lb::{assert_fails_naming, balancer, LbBuilder, LbProcess};
use common::raw_backend::{named_ok, serve_keep_alive, RawServer};
use common::status::wait_healthy;
use common::Reply;
use tokio::net::TcpStream;

/// The sticky cookie's name in these tests.
const COOKIE: &str = "lb_sticky";
/// `LB_STICKY_SECRET` in these tests.
const SECRET: &str = "sticky-test-secret-3b8e";
/// The cookie the cookie-setting app sets on every answer.
const APP_SET_COOKIE: &str = "app_session=from-the-app; Path=/; HttpOnly";

/// A balancer over `backends` with the sticky cookie on, checking `/health` every 0.3 s.
fn sticky_balancer(urls: &[String]) -> LbBuilder {
    balancer(urls)
        .env("LB_STICKY_COOKIE", COOKIE)
        .env("LB_STICKY_SECRET", SECRET)
}

fn urls(backends: &[TestBackend]) -> Vec<String> {
    backends.iter().map(|b| b.url()).collect()
}

/// GET `path` with an optional `Cookie` header.
async fn get_with_cookie(
    client: &reqwest::Client,
    lb: &LbProcess,
    path: &str,
    cookie: Option<&str>,
) -> Reply {
    let mut request = client.get(lb.url_for(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    common::send(request)
        .await
        .unwrap_or_else(|e| panic!("GET {path} with cookie {cookie:?}: {e}"))
}

/// The backend that answered (the test backends name themselves in a header).
fn answered_by(reply: &Reply) -> String {
    reply
        .headers
        .get(BACKEND_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("no {BACKEND_HEADER} in {reply:?}"))
        .to_string()
}

/// Every `Set-Cookie` value of a reply.
fn set_cookies(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect()
}

/// The balancer's `Set-Cookie` of a reply, split into its token and its
/// attributes; None when there is none. Panics when there are several.
fn sticky_set_cookie(reply: &Reply) -> Option<(String, Vec<String>)> {
    let ours: Vec<String> = set_cookies(reply)
        .into_iter()
        .filter(|value| value.starts_with(&format!("{COOKIE}=")))
        .collect();
    assert!(
        ours.len() <= 1,
        "more than one {COOKIE} Set-Cookie: {ours:?}"
    );
    let value = ours.into_iter().next()?;
    let mut parts = value.split(';').map(str::trim);
    let token = parts
        .next()
        .and_then(|pair| pair.strip_prefix(&format!("{COOKIE}=")))
        .unwrap_or_default()
        .to_string();
    Some((token, parts.map(str::to_string).collect()))
}

/// Whether `token` has the promised shape: 32 lowercase hex digits.
fn is_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The token of a reply's `Set-Cookie`, checked for shape; panics (naming
/// `what`) when the reply is not a 200 with one.
fn fresh_token(reply: &Reply, what: &str) -> String {
    assert_eq!(reply.status, 200, "{what}: {reply:?}");
    let (token, _) = sticky_set_cookie(reply)
        .unwrap_or_else(|| panic!("{what}: no {COOKIE} Set-Cookie in {reply:?}"));
    assert!(
        is_token(&token),
        "{what}: the token {token:?} is not 32 lowercase hex digits"
    );
    token
}

/// The token each backend's answers carry, learnt from requests without a
/// cookie (at most 10 per backend).
async fn learn_tokens(
    client: &reqwest::Client,
    lb: &LbProcess,
    count: usize,
) -> BTreeMap<String, String> {
    let mut tokens = BTreeMap::new();
    for i in 0..count * 10 {
        let reply = get_with_cookie(client, lb, &format!("/learn/{i}"), None).await;
        let token = fresh_token(&reply, "a request without a cookie");
        tokens.insert(answered_by(&reply), token);
        if tokens.len() == count {
            break;
        }
    }
    assert_eq!(
        tokens.len(),
        count,
        "cookie-less requests did not reach all {count} backends: {tokens:?}"
    );
    tokens
}

/// A client that returns its cookie stays on one backend for 50 requests, under either policy, and is sent the cookie only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_returns_its_cookie_stays_on_one_backend_and_gets_it_only_once() {
    let backends = TestBackend::start_many("app", 3).await;
    let client = common::http_client();
    for policy in ["round_robin", "least_connections"] {
        let lb = sticky_balancer(&urls(&backends))
            .env("LB_POLICY", policy)
            .start()
            .await;
        wait_healthy(&client, &lb, 3).await;

        let prefix = format!("/{policy}/");
        let first = get_with_cookie(&client, &lb, &format!("{prefix}0"), None).await;
        let token = fresh_token(&first, "the first request");
        let (_, attributes) = sticky_set_cookie(&first).expect("checked above");
        assert_eq!(
            attributes,
            ["Path=/", "HttpOnly", "SameSite=Lax"],
            "{policy}: attributes of {:?}",
            set_cookies(&first)
        );
        let pinned = answered_by(&first);
        let cookie = format!("{COOKIE}={token}");
        for i in 1..50 {
            let reply = get_with_cookie(&client, &lb, &format!("{prefix}{i}"), Some(&cookie)).await;
            assert_eq!(reply.status, 200, "{policy}: request {i}: {reply:?}");
            assert_eq!(
                answered_by(&reply),
                pinned,
                "{policy}: request {i} with {cookie} left the pinned backend"
            );
            assert!(
                set_cookies(&reply).is_empty(),
                "{policy}: request {i} with a valid cookie got Set-Cookie {:?}",
                set_cookies(&reply)
            );
        }
        let counts: Vec<(&str, usize)> = backends
            .iter()
            .map(|b| (b.name(), b.count_to(&prefix)))
            .collect();
        let expected: Vec<(&str, usize)> = backends
            .iter()
            .map(|b| (b.name(), if b.name() == pinned { 50 } else { 0 }))
            .collect();
        assert_eq!(counts, expected, "{policy}: where the 50 requests arrived");
    }
}

/// Clients without a cookie are balanced round robin (10 each of 30), and each answer's cookie names the backend that answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_cookie_are_balanced_and_pinned_to_the_backend_that_answered() {
    let backends = TestBackend::start_many("app", 3).await;
    let client = common::http_client();
    let lb = sticky_balancer(&urls(&backends)).start().await;
    wait_healthy(&client, &lb, 3).await;

    let mut tokens: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..30 {
        let reply = get_with_cookie(&client, &lb, &format!("/spread/{i}"), None).await;
        let token = fresh_token(&reply, "a request without a cookie");
        tokens.entry(answered_by(&reply)).or_default().push(token);
    }
    let counts: Vec<usize> = backends.iter().map(|b| b.count_to("/spread/")).collect();
    assert_eq!(
        counts,
        [10, 10, 10],
        "30 cookie-less requests over 3 backends should be 10 each"
    );
    for (backend, seen) in &tokens {
        assert!(
            seen.iter().all(|token| token == &seen[0]),
            "{backend} answered with different tokens: {seen:?}"
        );
    }
    let distinct: BTreeSet<&String> = tokens.values().map(|seen| &seen[0]).collect();
    assert_eq!(
        distinct.len(),
        3,
        "three backends should have three different tokens: {tokens:?}"
    );
    // Each token names its backend: sending it back lands there.
    for (backend, seen) in &tokens {
        let cookie = format!("{COOKIE}={}", seen[0]);
        for i in 0..3 {
            let reply = get_with_cookie(&client, &lb, &format!("/back/{i}"), Some(&cookie)).await;
            assert_eq!(
                answered_by(&reply),
                *backend,
                "the token issued by {backend} led elsewhere"
            );
        }
    }
}

/// A second balancer process with the same secret honours the first one's cookie; one with another secret does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_balancer_with_the_same_secret_honours_the_first_ones_cookie() {
    let backends = TestBackend::start_many("app", 3).await;
    let client = common::http_client();
    let first = sticky_balancer(&urls(&backends)).start().await;
    let second = sticky_balancer(&urls(&backends)).start().await;
    let other_secret = sticky_balancer(&urls(&backends))
        .env("LB_STICKY_SECRET", "another-secret")
        .start()
        .await;
    for lb in [&first, &second, &other_secret] {
        wait_healthy(&client, lb, 3).await;
    }

    let reply = get_with_cookie(&client, &first, "/first/0", None).await;
    let token = fresh_token(&reply, "the first balancer's first answer");
    let pinned = answered_by(&reply);
    let cookie = format!("{COOKIE}={token}");
    for i in 0..10 {
        let reply = get_with_cookie(&client, &second, &format!("/second/{i}"), Some(&cookie)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            answered_by(&reply),
            pinned,
            "the second balancer sent request {i} with the first one's cookie elsewhere"
        );
        assert!(
            set_cookies(&reply).is_empty(),
            "the second balancer replaced the first one's cookie: {:?}",
            set_cookies(&reply)
        );
    }

    let reply = get_with_cookie(&client, &other_secret, "/other/0", Some(&cookie)).await;
    let replaced = fresh_token(&reply, "a balancer with another secret");
    assert_ne!(
        replaced, token,
        "a balancer with another secret issued the same token"
    );
}

/// When the pinned backend stops, the old cookie is served 200 elsewhere with a fresh, different cookie, which then sticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_pinned_backend_stops_the_client_moves_with_a_fresh_cookie_and_no_error() {
    let backends = TestBackend::start_many("app", 3).await;
    let client = common::http_client();
    let lb = sticky_balancer(&urls(&backends)).start().await;
    wait_healthy(&client, &lb, 3).await;

    let reply = get_with_cookie(&client, &lb, "/before", None).await;
    let old_token = fresh_token(&reply, "the first answer");
    let old_backend = answered_by(&reply);
    let stopped = backends
        .iter()
        .find(|b| b.name() == old_backend)
        .expect("the pinned backend is one of ours");
    stopped.stop_listening().await;

    let old_cookie = format!("{COOKIE}={old_token}");
    let reply = get_with_cookie(&client, &lb, "/after/0", Some(&old_cookie)).await;
    let new_token = fresh_token(&reply, "the first request with the old cookie");
    let new_backend = answered_by(&reply);
    assert_ne!(new_backend, old_backend, "served by the stopped backend?");
    assert_ne!(
        new_token, old_token,
        "the fresh cookie repeats the old token"
    );

    // More requests with the old cookie are also served (fresh cookie each time).
    for i in 1..5 {
        let reply = get_with_cookie(&client, &lb, &format!("/after/{i}"), Some(&old_cookie)).await;
        let token = fresh_token(&reply, "a later request with the old cookie");
        assert_ne!(answered_by(&reply), old_backend);
        assert_ne!(token, old_token);
    }
    // The new cookie sticks.
    let new_cookie = format!("{COOKIE}={new_token}");
    for i in 0..10 {
        let reply = get_with_cookie(&client, &lb, &format!("/moved/{i}"), Some(&new_cookie)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(answered_by(&reply), new_backend);
        assert!(set_cookies(&reply).is_empty(), "{:?}", set_cookies(&reply));
    }
    assert_eq!(stopped.count_to("/after/") + stopped.count_to("/moved/"), 0);
}

/// Garbage, empty, oversized, tampered and unknown cookie values are ignored: 200 with a fresh cookie for the backend that answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tampered_or_unknown_cookies_are_replaced_with_a_fresh_one() {
    let backends = TestBackend::start_many("app", 3).await;
    let client = common::http_client();
    let lb = sticky_balancer(&urls(&backends)).start().await;
    wait_healthy(&client, &lb, 3).await;
    let tokens = learn_tokens(&client, &lb, 3).await;

    let valid = tokens.values().next().expect("three tokens").clone();
    let last = valid.chars().last().expect("a 32-digit token");
    let tampered = format!("{}{}", &valid[..31], if last == '0' { '1' } else { '0' });
    let unknown = "0123456789abcdef0123456789abcdef".to_string();
    assert!(!tokens.values().any(|t| *t == unknown || *t == tampered));
    let cases = [
        ("garbage", "zzz".to_string()),
        ("empty", String::new()),
        ("oversized (4 KB of hex)", "ab".repeat(2048)),
        ("tampered", tampered),
        ("unknown", unknown),
    ];
    for (what, value) in &cases {
        let cookie = format!("{COOKIE}={value}");
        let reply = get_with_cookie(&client, &lb, "/odd", Some(&cookie)).await;
        let token = fresh_token(&reply, &format!("a request with a {what} cookie"));
        let backend = answered_by(&reply);
        assert_eq!(
            Some(&token),
            tokens.get(&backend),
            "the fresh cookie for a {what} value does not name {backend}, which answered"
        );
    }
}

/// The balancer's cookie is removed before forwarding, other cookies arrive as they were sent, and the app's own Set-Cookie reaches the client beside the balancer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sticky_cookie_never_reaches_the_app_and_the_apps_cookies_pass_untouched() {
    let app = CookieApp::start("cookie-app").await;
    let client = common::http_client();
    let lb = sticky_balancer(&[app.url()]).start().await;
    wait_healthy(&client, &lb, 1).await;

    // The first answer carries the app's cookie and ours.
    let reply = get_with_cookie(&client, &lb, "/first", None).await;
    let token = fresh_token(&reply, "the first answer");
    let all = set_cookies(&reply);
    assert!(
        all.contains(&APP_SET_COOKIE.to_string()) && all.len() == 2,
        "expected the app's Set-Cookie untouched beside ours, got {all:?}"
    );
    // With a valid cookie, only the app's.
    let ours = format!("{COOKIE}={token}");
    let reply = get_with_cookie(&client, &lb, "/only-ours", Some(&ours)).await;
    assert_eq!(set_cookies(&reply), [APP_SET_COOKIE]);

    let cases: [(&str, &[&str], &[&str]); 8] = [
        ("only ours", &[&ours], &[]),
        (
            "ours between two",
            &[&format!("a=1; {ours}; b=2")],
            &["a=1; b=2"],
        ),
        ("ours first", &[&format!("{ours}; a=1")], &["a=1"]),
        (
            "look-alike names",
            &["lb_sticky_x=1; xlb_sticky=2"],
            &["lb_sticky_x=1; xlb_sticky=2"],
        ),
        ("two Cookie lines", &["a=1", &ours], &["a=1"]),
        // Browsers send UTF-8 cookie values; one must not cost the others.
        (
            "a UTF-8 value beside garbage in ours",
            &[&format!("name=Zo\u{eb}; {COOKIE}=garbage; theme=dark")],
            &["name=Zo\u{eb}; theme=dark"],
        ),
        (
            "a UTF-8 value beside a valid token of ours",
            &[&format!("name=Zo\u{eb}; {ours}; theme=dark")],
            &["name=Zo\u{eb}; theme=dark"],
        ),
        (
            "not ours: byte for byte, spacing included",
            &["name=Zo\u{eb};theme=dark ;  x=\"q\""],
            &["name=Zo\u{eb};theme=dark ;  x=\"q\""],
        ),
    ];
    for (i, (what, sent, expected)) in cases.iter().enumerate() {
        let path = format!("/case/{i}");
        let mut request = client.get(lb.url_for(&path));
        for value in *sent {
            let value = reqwest::header::HeaderValue::from_bytes(value.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: {value:?} is no header value: {e}"));
            request = request.header("cookie", value);
        }
        let reply = common::send(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply.status, 200, "{what}: {reply:?}");
        let arrived = app
            .cookies_of(&path)
            .unwrap_or_else(|| panic!("{what}: {path} never reached the app"));
        assert_eq!(
            arrived, *expected,
            "{what}: sent Cookie {sent:?}, the app got Cookie {arrived:?}"
        );
    }
    // The first request had no cookie, and none was added on the way.
    assert_eq!(app.cookies_of("/first"), Some(Vec::new()));
}

/// The cookie gets Secure when a trusted hop's X-Forwarded-Proto is https (never on an untrusted client's word) and Max-Age with LB_STICKY_TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_and_max_age_are_added_for_https_clients_and_a_ttl() {
    let backend = TestBackend::start("app").await;
    let client = common::http_client();
    // From a trusted hop (Heroku's router, or LB_TRUSTED_PROXIES) the scheme
    // it reports counts; from anyone else the connection is plain HTTP.
    for trusted in [true, false] {
        let mut builder = sticky_balancer(&[backend.url()]).env("LB_STICKY_TTL", "3600");
        if trusted {
            builder = builder.env("LB_TRUSTED_PROXIES", "127.0.0.1");
        }
        let lb = builder.start().await;
        wait_healthy(&client, &lb, 1).await;

        let cases = [
            (Some("https"), trusted),
            (Some("http"), false),
            (None, false),
        ];
        for (proto, secure) in cases {
            let what = format!("trusted={trusted} X-Forwarded-Proto {proto:?}");
            let mut request = client.get(lb.url_for("/attrs"));
            if let Some(proto) = proto {
                request = request.header("x-forwarded-proto", proto);
            }
            let reply = common::send(request)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            fresh_token(&reply, &what);
            let (_, mut attributes) = sticky_set_cookie(&reply).expect("checked above");
            attributes.sort();
            let mut expected = vec!["HttpOnly", "Max-Age=3600", "Path=/", "SameSite=Lax"];
            if secure {
                expected.push("Secure");
            }
            expected.sort();
            assert_eq!(
                attributes,
                expected,
                "{what}: Set-Cookie {:?}",
                set_cookies(&reply)
            );
        }
    }
}

/// An invalid cookie name, in LB_STICKY_COOKIE or in the file's heroku_lb.sticky_cookie, stops the balancer naming it.
#[test]
fn an_invalid_cookie_name_stops_the_balancer_naming_the_setting() {
    let backend = format!("http://127.0.0.1:{}", common::free_port());
    let cases = [
        (
            LbBuilder::new()
                .backends(&[&backend])
                .env("LB_STICKY_COOKIE", "bad name"),
            "LB_STICKY_COOKIE",
        ),
        (
            LbBuilder::new()
                .backends(&[&backend])
                .env("LB_STICKY_COOKIE", "a;b"),
            "LB_STICKY_COOKIE",
        ),
        (
            LbBuilder::new()
                .backends(&[&backend])
                .config("sticky_cookie", "\"a;b\""),
            "heroku_lb.sticky_cookie",
        ),
    ];
    for (builder, culprit) in cases {
        assert_fails_naming(builder, culprit);
    }
}

/// What the cookie app saw: each request's path with its `Cookie` lines.
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// An HTTP/1.1 keep-alive app that sets its own cookie (`APP_SET_COOKIE`) on
/// every answer and records the `Cookie` header lines of each request by path.
struct CookieApp {
    seen: Seen,
    server: RawServer,
}

impl CookieApp {
    async fn start(name: &str) -> CookieApp {
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let server = RawServer::start({
            let name = name.to_string();
            let seen = seen.clone();
            move |stream| cookie_app_connection(stream, name.clone(), seen.clone())
        })
        .await;
        CookieApp { seen, server }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// The `Cookie` lines of the latest request to exactly `path`.
    fn cookies_of(&self, path: &str) -> Option<Vec<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, cookies)| cookies.clone())
    }
}

async fn cookie_app_connection(stream: TcpStream, name: String, seen: Seen) {
    serve_keep_alive(stream, |request| {
        let cookies = request.header_values("cookie");
        seen.lock().unwrap().push((request.path, cookies));
        let response = named_ok(&name, &format!("set-cookie: {APP_SET_COOKIE}\r\n"));
        async move { response }
    })
    .await
}
