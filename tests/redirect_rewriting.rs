//! An app that builds absolute URLs from the `Host` it sees (its own
//! hostname, behind the balancer) would send browsers around the balancer.
//! The balancer rewrites the backend's own origin in `Location`,
//! `Content-Location` and `Refresh` to the origin the client used, and drops
//! a `Set-Cookie` `Domain` naming the backend's host, like nginx's
//! `proxy_redirect default` and `proxy_cookie_domain`. Relative URLs and
//! other hosts pass untouched; `rewrite_redirects: false` turns it off.

mod common;

use common::lb::{LbBuilder, LbProcess};
use common::raw_backend::{serve_keep_alive, RawRequest, RawServer};
use common::Reply;

/// The backend's hostname, pinned to 127.0.0.1: it differs from the
/// client's `127.0.0.1:LBPORT`, as `app.herokuapp.com` differs from the
/// balancer's own host on Heroku.
const APP_HOST: &str = "app-fh.test";

/// Answers `/login` like an app that builds its redirect from its own Host:
/// 302 to `http://<Host>/next`, with a `Content-Location`, a `Refresh` and a
/// cookie scoped to its host; `/elsewhere` redirects to another site,
/// `/relative` to a path; anything else (health checks, warm-up) gets 200.
async fn redirecting_app() -> RawServer {
    RawServer::start(|stream| {
        serve_keep_alive(stream, |request: RawRequest| async move {
            let host = request
                .header_values("host")
                .pop()
                .unwrap_or_else(|| "no-host".to_string());
            let bare_host = host.split(':').next().unwrap_or("").to_string();
            let headers = match request.path.as_str() {
                "/login" => format!(
                    "Location: http://{host}/next?from=login\r\n\
                     Content-Location: https://{host}/login.html\r\n\
                     Refresh: 0; url=http://{host}/refreshed\r\n\
                     Set-Cookie: s=1; Domain={bare_host}; Path=/\r\n\
                     Set-Cookie: t=2; Domain=.{}; Path=/; HttpOnly\r\n\
                     Set-Cookie: u=3; Domain=example.org\r\n",
                    bare_host.to_ascii_uppercase()
                ),
                "/elsewhere" => "Location: https://elsewhere.example/x\r\n\
                     Content-Location: http://app-fh.test.evil.example/y\r\n"
                    .to_string(),
                "/relative" => "Location: /next\r\nRefresh: 5; url=/later\r\n".to_string(),
                _ => {
                    return "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string();
                }
            };
            format!("HTTP/1.1 302 Found\r\n{headers}content-length: 0\r\n\r\n")
        })
    })
    .await
}

/// The app at `http://app-fh.test:PORT` behind a balancer set up by `configure`, proxying.
async fn balancer_over(
    app: &RawServer,
    configure: impl FnOnce(LbBuilder) -> LbBuilder,
) -> (LbProcess, reqwest::Client) {
    let lb = configure(
        LbBuilder::new()
            .backends(&[format!("http://{APP_HOST}:{}", app.addr().port())])
            .resolve(&[(APP_HOST, "127.0.0.1")]),
    )
    .start()
    .await;
    lb.wait_proxying(&common::http_client()).await;
    (lb, common::http_client_without_redirects())
}

/// GET `path` with `headers`, without following a redirect.
async fn get(
    client: &reqwest::Client,
    lb: &LbProcess,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = client.get(lb.url_for(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    common::send(request)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Every value of response header `name`, as text.
fn values(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect()
}

/// The app's own origin in Location, Content-Location and Refresh becomes the client's, and a cookie Domain naming the app is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_the_apps_own_host_are_rewritten_to_the_clients_host() {
    let app = redirecting_app().await;
    let (lb, client) = balancer_over(&app, |builder| builder).await;
    let app_origin = format!("{APP_HOST}:{}", app.addr().port());
    let lb_origin = format!("127.0.0.1:{}", lb.port());

    let reply = get(&client, &lb, "/login", &[]).await;
    assert_eq!(reply.status, 302, "{reply:?}");
    println!("Location the app sent:    http://{app_origin}/next?from=login");
    println!("Location the client got:  {:?}", values(&reply, "location"));
    assert_eq!(
        values(&reply, "location"),
        [format!("http://{lb_origin}/next?from=login")]
    );
    // The client came over plain HTTP (no trusted X-Forwarded-Proto).
    assert_eq!(
        values(&reply, "content-location"),
        [format!("http://{lb_origin}/login.html")]
    );
    assert_eq!(
        values(&reply, "refresh"),
        [format!("0; url=http://{lb_origin}/refreshed")]
    );
    let cookies = values(&reply, "set-cookie");
    println!("Set-Cookie the client got: {cookies:?}");
    assert!(cookies.contains(&"s=1; Path=/".to_string()), "{cookies:?}");
    assert!(
        cookies.contains(&"t=2; Path=/; HttpOnly".to_string()),
        "{cookies:?}"
    );
    assert!(
        cookies.contains(&"u=3; Domain=example.org".to_string()),
        "another domain is the app's business: {cookies:?}"
    );

    // Relative URLs and other hosts pass as they are.
    let reply = get(&client, &lb, "/elsewhere", &[]).await;
    assert_eq!(values(&reply, "location"), ["https://elsewhere.example/x"]);
    assert_eq!(
        values(&reply, "content-location"),
        ["http://app-fh.test.evil.example/y"]
    );
    let reply = get(&client, &lb, "/relative", &[]).await;
    assert_eq!(values(&reply, "location"), ["/next"]);
    assert_eq!(values(&reply, "refresh"), ["5; url=/later"]);
}

/// Behind a trusted hop, the rewritten URLs take the client's scheme from X-Forwarded-Proto and its host from X-Forwarded-Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_hop_redirects_take_its_scheme_and_host() {
    let app = redirecting_app().await;
    let (lb, client) = balancer_over(&app, |builder| {
        builder.env("LB_TRUSTED_PROXIES", "127.0.0.1")
    })
    .await;

    let reply = get(
        &client,
        &lb,
        "/login",
        &[("Host", "lb.example.com"), ("X-Forwarded-Proto", "https")],
    )
    .await;
    println!("Location the client got: {:?}", values(&reply, "location"));
    assert_eq!(
        values(&reply, "location"),
        ["https://lb.example.com/next?from=login"]
    );

    let reply = get(
        &client,
        &lb,
        "/login",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "shop.example.com"),
        ],
    )
    .await;
    assert_eq!(
        values(&reply, "location"),
        ["https://shop.example.com/next?from=login"]
    );

    // An untrusted client claiming https gets the scheme it really used.
    drop(lb);
    let (lb, client) = balancer_over(&app, |builder| builder).await;
    let reply = get(&client, &lb, "/login", &[("X-Forwarded-Proto", "https")]).await;
    assert_eq!(
        values(&reply, "location"),
        [format!("http://127.0.0.1:{}/next?from=login", lb.port())]
    );
}

/// One way of setting up the balancer.
type Configure = fn(LbBuilder) -> LbBuilder;

/// With rewrite_redirects: false (or LB_REWRITE_REDIRECTS=false) the app's headers pass untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_can_be_turned_off_in_the_file_or_the_environment() {
    let app = redirecting_app().await;
    let app_origin = format!("{APP_HOST}:{}", app.addr().port());
    let setups: [(&str, Configure); 2] = [
        ("rewrite_redirects: false", |builder| {
            builder.config("rewrite_redirects", "false")
        }),
        (
            "LB_REWRITE_REDIRECTS=false over the file's true",
            |builder| {
                builder
                    .config("rewrite_redirects", "true")
                    .env("LB_REWRITE_REDIRECTS", "false")
            },
        ),
    ];
    for (what, configure) in setups {
        let (lb, client) = balancer_over(&app, configure).await;
        let reply = get(&client, &lb, "/login", &[]).await;
        println!("{what}: Location {:?}", values(&reply, "location"));
        assert_eq!(
            values(&reply, "location"),
            [format!("http://{app_origin}/next?from=login")],
            "{what}"
        );
        assert!(
            values(&reply, "set-cookie").contains(&format!("s=1; Domain={APP_HOST}; Path=/")),
            "{what}: {:?}",
            values(&reply, "set-cookie")
        );
    }
}
