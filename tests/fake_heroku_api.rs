//! Self-test of the fake Platform API in `tests/common/heroku_api/`: the other integration
//! tests trust it to behave like Heroku's, so its headers, paging, conditional requests, rate
//! limit and failure switches are checked here directly with reqwest.

// The listener it keeps its port with while refusing (`super::held_port` to the fake).
#[allow(dead_code)]
#[path = "common/held_port.rs"]
mod held_port;
// The fake, whole: this self-test checks its answers, not every builder.
#[allow(dead_code)]
#[path = "common/heroku_api/mod.rs"]
mod heroku_api;

use std::time::{Duration, Instant};

use heroku_api::{AppFixture, AppId, Failure, FakeHerokuApi, PipelineId, HUGE_PADDING};
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "test-api-key-0123";
const ACCEPT: &str = "application/vnd.heroku+json; version=3";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("building a reqwest client")
}

/// A GET with the headers the balancer sends.
fn get(api: &FakeHerokuApi, path: &str) -> reqwest::RequestBuilder {
    client()
        .get(format!("{}{path}", api.url()))
        .header("accept", ACCEPT)
        .bearer_auth(KEY)
}

/// A fake with one pipeline and `count` apps named app-1.. at https://app-N.test:8443/.
fn pipeline_with_apps(count: usize) -> (FakeHerokuApi, PipelineId, Vec<AppId>) {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let apps = (1..=count)
        .map(|n| {
            let name = format!("app-{n}");
            let url = format!("https://{name}.test:8443/");
            api.add_app(AppFixture::new(&name, &pipeline, &url))
        })
        .collect();
    (api, pipeline, apps)
}

fn couplings_path(pipeline: &PipelineId) -> String {
    format!("/pipelines/{pipeline}/pipeline-couplings")
}

/// GET the pipeline's couplings with a `Range` header; the answer must come back.
async fn get_couplings_range(
    api: &FakeHerokuApi,
    pipeline: &PipelineId,
    range: &str,
) -> reqwest::Response {
    get(api, &couplings_path(pipeline))
        .header("range", range)
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn remaining(response: &reqwest::Response) -> u32 {
    header(response, "ratelimit-remaining")
        .expect("every answer carries RateLimit-Remaining")
        .parse()
        .expect("RateLimit-Remaining is a number")
}

/// A request without the version 3 Accept header gets 406 `not_acceptable`, as Heroku's does.
#[tokio::test]
async fn a_request_without_the_v3_accept_header_answers_406() {
    let (api, pipeline, _) = pipeline_with_apps(1);
    let url = format!("{}/pipelines/{pipeline}", api.url());

    let response = client().get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "not_acceptable");
    assert!(body["url"]
        .as_str()
        .unwrap()
        .contains("platform-api-reference"));

    let wrong = client()
        .get(&url)
        .header("accept", "application/json")
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::NOT_ACCEPTABLE);

    let filters_version_elsewhere = client()
        .get(&url)
        .header("accept", "application/vnd.heroku+json; version=3.filters")
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        filters_version_elsewhere.status(),
        StatusCode::NOT_ACCEPTABLE
    );
}

/// Without an Authorization header, or with another key, the answer is 401 `unauthorized`.
#[tokio::test]
async fn a_missing_or_wrong_api_key_answers_401() {
    let (api, pipeline, _) = pipeline_with_apps(1);
    let url = format!("{}/pipelines/{pipeline}", api.url());

    let missing = client()
        .get(&url)
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json::<Value>().await.unwrap()["id"], "unauthorized");

    let wrong = client()
        .get(&url)
        .header("accept", ACCEPT)
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["message"], "Invalid credentials provided.");

    let right = get(&api, &format!("/pipelines/{pipeline}"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
}

/// A pipeline is found by id or by name; its couplings only by id, with the schema's fields.
#[tokio::test]
async fn pipelines_resolve_by_id_or_name_and_couplings_only_by_id() {
    let (api, pipeline, apps) = pipeline_with_apps(1);

    let by_name: Value = get(&api, "/pipelines/shop")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_name["id"], pipeline.as_str());
    assert_eq!(by_name["name"], "shop");
    assert_eq!(by_name["owner"]["type"], "user");
    assert!(by_name["created_at"].as_str().unwrap().ends_with('Z'));

    let unknown = get(&api, "/pipelines/nope").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.json::<Value>().await.unwrap()["id"], "not_found");

    let by_name = get(&api, "/pipelines/shop/pipeline-couplings")
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), StatusCode::NOT_FOUND);

    let couplings: Value = get(&api, &couplings_path(&pipeline))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let coupling = &couplings[0];
    assert_eq!(coupling["app"]["id"], apps[0].as_str());
    assert_eq!(coupling["pipeline"]["id"], pipeline.as_str());
    assert_eq!(coupling["stage"], "production");
    assert_eq!(coupling["id"].as_str().unwrap().len(), 36);
}

/// Five couplings under a page cap of two come back as 206, 206, 200 linked by Next-Range.
#[tokio::test]
async fn five_couplings_with_a_page_cap_of_two_come_in_three_linked_pages() {
    let (api, pipeline, apps) = pipeline_with_apps(5);
    api.set_page_size_cap(2);

    let mut statuses = Vec::new();
    let mut seen = Vec::new();
    let mut range: Option<String> = None;
    for _ in 0..10 {
        let mut request = get(&api, &couplings_path(&pipeline));
        if let Some(range) = &range {
            request = request.header("range", range);
        }
        let response = request.send().await.unwrap();
        statuses.push(response.status());
        let next = header(&response, "next-range").map(str::to_string);
        let page: Vec<Value> = response.json().await.unwrap();
        seen.extend(page.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        if let Some(next) = &next {
            let last = page.last().unwrap()["id"].as_str().unwrap();
            assert_eq!(next, &format!("id ]{last}..; max=200"));
        }
        match next {
            Some(next) => range = Some(next),
            None => break,
        }
    }

    assert_eq!(
        statuses,
        [
            StatusCode::PARTIAL_CONTENT,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::OK
        ]
    );
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages are in id order without repeats");
    assert_eq!(seen.len(), apps.len());

    api.clear_page_size_cap();
    let one_page = get_couplings_range(&api, &pipeline, "id ..; max=3").await;
    assert_eq!(one_page.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(one_page.json::<Vec<Value>>().await.unwrap().len(), 3);

    let documented_form = get_couplings_range(&api, &pipeline, "id ..; max=10;").await;
    assert_eq!(documented_form.status(), StatusCode::OK);
    assert_eq!(documented_form.json::<Vec<Value>>().await.unwrap().len(), 5);

    let other_attribute = get_couplings_range(&api, &pipeline, "name ..; max=10").await;
    assert_eq!(other_attribute.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

/// An unchanged app answers 304 with no body to its ETag; a change gives 200 and a new ETag.
#[tokio::test]
async fn an_unchanged_app_answers_304_and_a_changed_one_a_new_etag() {
    let (api, _, apps) = pipeline_with_apps(1);
    let path = format!("/apps/{}", apps[0]);

    let first = get(&api, &path).send().await.unwrap();
    let etag = header(&first, "etag").expect("an ETag").to_string();
    let app: Value = first.json().await.unwrap();
    assert_eq!(app["name"], "app-1");
    assert_eq!(app["web_url"], "https://app-1.test:8443/");
    assert_eq!(app["maintenance"], false);
    assert_eq!(app["region"]["name"], "us");
    assert!(app["stack"]["name"].is_string());
    assert!(app["released_at"].is_string());

    let again = get(&api, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&again, "etag"), Some(etag.as_str()));
    assert!(again.bytes().await.unwrap().is_empty());

    api.set_web_url(&apps[0], None);
    let changed = get(&api, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(header(&changed, "etag"), Some(etag.as_str()));
    assert_eq!(
        changed.json::<Value>().await.unwrap()["web_url"],
        Value::Null
    );
}

/// A couplings page answers 304 to its ETag too, and a new coupling changes it.
#[tokio::test]
async fn a_couplings_page_answers_304_until_the_pipeline_changes() {
    let (api, pipeline, _) = pipeline_with_apps(2);
    let path = couplings_path(&pipeline);
    let etag = header(&get(&api, &path).send().await.unwrap(), "etag")
        .unwrap()
        .to_string();

    let same = get(&api, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);

    api.add_app(AppFixture::new("app-3", &pipeline, "https://app-3.test:8443/").stage("staging"));
    let changed = get(&api, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(changed.json::<Vec<Value>>().await.unwrap().len(), 3);
}

/// POST /filters/apps returns the apps whose ids it names and leaves out unknown ids.
#[tokio::test]
async fn filters_apps_returns_known_apps_and_omits_unknown_ids() {
    let (api, _, apps) = pipeline_with_apps(3);
    let unknown = "01234567-89ab-4cde-8f01-23456789abcd";
    let body = json!({"in": {"id": [apps[0].as_str(), apps[2].as_str(), unknown]}});

    let response = client()
        .post(format!("{}/filters/apps", api.url()))
        .header("accept", "application/vnd.heroku+json; version=3.filters")
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let found: Vec<Value> = response.json().await.unwrap();
    let mut names: Vec<&str> = found.iter().map(|a| a["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["app-1", "app-3"]);

    let plain_v3 = client()
        .post(format!("{}/filters/apps", api.url()))
        .header("accept", ACCEPT)
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(plain_v3.status(), StatusCode::OK);
    assert_eq!(api.requests().last().unwrap().body, body.to_string());
}

/// An app without a web formation answers 404 for formation/web and an empty formation list.
#[tokio::test]
async fn an_app_without_a_web_formation_answers_404_for_formation_web() {
    let (api, pipeline, apps) = pipeline_with_apps(1);
    let worker_only = api.add_app(
        AppFixture::new("worker", &pipeline, "https://worker.test:8443/").web_quantity(None),
    );

    let missing = get(&api, &format!("/apps/{worker_only}/formation/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["id"], "not_found");
    let list: Vec<Value> = get(&api, &format!("/apps/{worker_only}/formation"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.is_empty());

    api.set_web_quantity(&apps[0], Some(0));
    let web: Value = get(&api, &format!("/apps/{}/formation/web", apps[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(web["type"], "web");
    assert_eq!(web["quantity"], 0);
    assert_eq!(web["size"], "Basic");
    assert_eq!(web["app"]["name"], "app-1");
}

/// RateLimit-Remaining goes down by one per request and, at zero, requests answer 429.
#[tokio::test]
async fn rate_limit_remaining_counts_down_and_zero_answers_429() {
    let (api, pipeline, _) = pipeline_with_apps(1);
    let path = format!("/pipelines/{pipeline}");

    let response = get(&api, &path).send().await.unwrap();
    assert_eq!(header(&response, "request-id").map(str::len), Some(36));
    let first = remaining(&response);
    let second = remaining(&get(&api, &path).send().await.unwrap());
    assert_eq!(first, heroku_api::DEFAULT_RATE_LIMIT - 1);
    assert_eq!(second, first - 1);
    assert_eq!(api.rate_limit_remaining(), second);

    api.set_rate_limit_remaining(1);
    let last = get(&api, &path).send().await.unwrap();
    assert_eq!(last.status(), StatusCode::OK);
    assert_eq!(remaining(&last), 0);
    let empty = get(&api, &path).send().await.unwrap();
    assert_eq!(empty.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(empty.json::<Value>().await.unwrap()["id"], "rate_limit");
}

/// requests_since(mark) lists only later requests, with lowercased header names.
#[tokio::test]
async fn requests_since_a_mark_lists_only_the_later_requests() {
    let (api, pipeline, _) = pipeline_with_apps(1);
    get(&api, "/pipelines/shop").send().await.unwrap();
    let mark = api.mark();
    get(&api, &couplings_path(&pipeline)).send().await.unwrap();

    let later = api.requests_since(mark);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].method, "GET");
    assert_eq!(later[0].path, couplings_path(&pipeline));
    assert_eq!(later[0].header("Accept"), Some(ACCEPT));
    assert_eq!(later[0].headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(api.request_count(), 2);
}

/// Refuse makes connects fail while no other socket can bind the port, and clearing it serves there again.
#[tokio::test]
async fn refuse_keeps_the_port_while_connects_fail_and_clearing_it_serves_there_again() {
    let (api, pipeline, _) = pipeline_with_apps(1);
    let path = format!("/pipelines/{pipeline}");
    for round in 1..=3 {
        // A client whose pooled connection Refuse cuts: the fake closes it
        // first, so its side waits in TIME_WAIT on the port when it listens
        // again. (Each request below has a client of its own, so no stale
        // pooled connection answers in place of a connect.)
        let keeper = client();
        let reply = keeper
            .get(format!("{}{path}", api.url()))
            .header("accept", ACCEPT)
            .bearer_auth(KEY)
            .send()
            .await;
        assert_eq!(
            reply.map(|r| r.status()).ok(),
            Some(StatusCode::OK),
            "round {round}: served before refusing"
        );

        api.set_failure(Failure::Refuse);
        let refused = get(&api, &path).send().await.unwrap_err();
        assert!(
            refused.is_connect(),
            "round {round}: expected a connect error, got {refused:?}"
        );
        assert!(tokio::net::TcpStream::connect(api.addr()).await.is_err());
        // std's listeners set SO_REUSEADDR, the case that can share a port.
        let other = std::net::TcpListener::bind(api.addr());
        assert_eq!(
            other.as_ref().map_err(std::io::Error::kind).err(),
            Some(std::io::ErrorKind::AddrInUse),
            "round {round}: another socket bound the refusing fake's port: {other:?}"
        );

        api.clear_failures();
        assert_eq!(
            get(&api, &path).send().await.unwrap().status(),
            StatusCode::OK,
            "round {round}: served again"
        );
        drop(keeper);
    }
}

/// ResetMidBody sends the status and headers, then drops the connection inside the body.
#[tokio::test]
async fn reset_mid_body_sends_headers_then_drops_the_connection() {
    let (api, pipeline, _) = pipeline_with_apps(3);
    api.set_failure(Failure::ResetMidBody);

    let response = get(&api, &couplings_path(&pipeline)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let error = response.bytes().await.unwrap_err();
    assert!(error.is_body() || error.is_decode(), "got {error:?}");
}

/// A stall delays the answer by its duration, and a shorter client timeout gives up first.
#[tokio::test]
async fn a_stall_delays_the_answer() {
    let (api, pipeline, _) = pipeline_with_apps(1);
    let path = format!("/pipelines/{pipeline}");
    api.set_failure(Failure::Stall(Duration::from_millis(300)));

    let started = Instant::now();
    assert_eq!(
        get(&api, &path).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    let timed_out = get(&api, &path)
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(timed_out.is_timeout());
}

/// Status, RateLimited and Unauthorized answer Heroku error bodies with their statuses.
#[tokio::test]
async fn error_switches_answer_heroku_error_bodies() {
    let (api, pipeline, _) = pipeline_with_apps(1);
    let path = format!("/pipelines/{pipeline}");

    api.set_failure(Failure::Status(500));
    let failed = get(&api, &path).send().await.unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        failed.json::<Value>().await.unwrap()["id"],
        "internal_server_error"
    );

    api.set_failure(Failure::RateLimited);
    let limited = get(&api, &path).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(remaining(&limited), 0);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["id"], "rate_limit");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Your account reached the API rate limit"));

    api.set_failure(Failure::Unauthorized);
    assert_eq!(
        get(&api, &path).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

/// TruncatedJson cuts a 200 body so it no longer parses; WrongShape answers an object for a list.
#[tokio::test]
async fn truncated_and_wrong_shape_bodies_do_not_parse_as_expected() {
    let (api, pipeline, _) = pipeline_with_apps(2);
    let path = couplings_path(&pipeline);

    api.set_failure(Failure::TruncatedJson);
    let truncated = get(&api, &path).send().await.unwrap();
    assert_eq!(truncated.status(), StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&truncated.bytes().await.unwrap()).is_err());

    api.set_failure(Failure::WrongShape);
    let wrong: Value = get(&api, &path).send().await.unwrap().json().await.unwrap();
    assert_eq!(wrong, json!({"unexpected": true}));
}

/// Huge answers about 10 MB that still parse to the normal answer.
#[tokio::test]
async fn huge_answers_ten_megabytes_of_valid_json() {
    let (api, pipeline, _) = pipeline_with_apps(1);
    api.set_failure(Failure::Huge);

    let body = get(&api, &format!("/pipelines/{pipeline}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body.len() > HUGE_PADDING);
    let pipeline_json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(pipeline_json["name"], "shop");
}

/// LoopingNextRange answers 206 with the same Next-Range however often it is followed.
#[tokio::test]
async fn looping_next_range_repeats_the_same_next_range() {
    let (api, pipeline, _) = pipeline_with_apps(3);
    api.set_failure_on("/pipelines/", Failure::LoopingNextRange);

    let mut ranges = Vec::new();
    let mut range = "id ..; max=200".to_string();
    for _ in 0..3 {
        let response = get_couplings_range(&api, &pipeline, &range).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        range = header(&response, "next-range").unwrap().to_string();
        ranges.push(range.clone());
    }
    assert!(ranges.windows(2).all(|w| w[0] == w[1]), "{ranges:?}");
}

/// fail_next fails exactly n requests; a prefix failure leaves other paths alone.
#[tokio::test]
async fn counted_and_prefixed_failures_stay_within_their_scope() {
    let (api, pipeline, apps) = pipeline_with_apps(1);
    let pipeline_path = format!("/pipelines/{pipeline}");
    let app_path = format!("/apps/{}", apps[0]);

    api.fail_next(2, Failure::Status(503));
    let statuses = [
        get(&api, &pipeline_path).send().await.unwrap().status(),
        get(&api, &pipeline_path).send().await.unwrap().status(),
        get(&api, &pipeline_path).send().await.unwrap().status(),
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK
        ]
    );

    api.set_failure_on("/apps/", Failure::Status(500));
    assert_eq!(
        get(&api, &app_path).send().await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get(&api, &pipeline_path).send().await.unwrap().status(),
        StatusCode::OK
    );

    api.set_failure_on("/apps/", Failure::None);
    assert_eq!(
        get(&api, &app_path).send().await.unwrap().status(),
        StatusCode::OK
    );
}
