//! Pipeline discovery against the fake Platform API: which apps of a Heroku
//! pipeline get traffic, how they are weighted, how changes are picked up,
//! what a discovery round costs, and how the first round survives a failing
//! API (the ten failure modes of a running balancer are in
//! `faults_control_plane.rs`).
//! Apps are plain HTTP test backends whose `web_url` is `http://127.0.0.1:PORT/`.

mod common;

use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::heroku_api::{AppFixture, Failure, FakeHerokuApi, PipelineId, RecordedRequest};
use common::lb::{LbBuilder, LbProcess};

/// A key no log line may ever show.
const KEY: &str = "hrku-test-key-7f3c9e21-b5d4-do-not-log";
const ACCEPT_V3: &str = "application/vnd.heroku+json; version=3";
const ACCEPT_FILTERS: &str = "application/vnd.heroku+json; version=3.filters";

/// Send `count` sequential GETs to `{prefix}{i}`; every one must answer 200.
async fn send_all(client: &reqwest::Client, lb: &LbProcess, prefix: &str, count: usize) {
    for i in 0..count {
        let url = lb.url_for(&format!("{prefix}{i}"));
        let reply = common::get(client, &url).await;
        assert_eq!(
            reply.status,
            200,
            "GET {url}: {reply:?}\nbalancer output:\n{}",
            lb.output()
        );
    }
}

/// Send requests under `/warmup/` until every backend in `serving` got one.
/// False when that did not happen within about 5 s.
async fn reaches_all(lb: &LbProcess, client: &reqwest::Client, serving: &[&TestBackend]) -> bool {
    common::poll_until(100, Duration::from_millis(50), || async {
        for i in 0..serving.len() * 2 {
            let _ = common::send(client.get(lb.url_for(&format!("/warmup/{i}")))).await;
        }
        serving.iter().all(|b| b.count_to("/warmup/") > 0)
    })
    .await
}

/// `reaches_all`, panicking with the balancer's output when it fails.
async fn wait_serving(lb: &LbProcess, client: &reqwest::Client, serving: &[&TestBackend]) {
    if !reaches_all(lb, client, serving).await {
        let names: Vec<&str> = serving.iter().map(|b| b.name()).collect();
        panic!(
            "the balancer never reached all of {names:?}; counts {:?}\nbalancer output:\n{}",
            serving
                .iter()
                .map(|b| b.count_to("/warmup/"))
                .collect::<Vec<_>>(),
            lb.output()
        );
    }
}

/// Once both of `pair` serve, send `count` GETs under `prefix` and return
/// how many each of the two got.
async fn split(
    lb: &LbProcess,
    client: &reqwest::Client,
    pair: [&TestBackend; 2],
    prefix: &str,
    count: usize,
) -> (usize, usize) {
    wait_serving(lb, client, &pair).await;
    send_all(client, lb, prefix, count).await;
    (pair[0].count_to(prefix), pair[1].count_to(prefix))
}

fn couplings_path(pipeline: &PipelineId) -> String {
    format!("/pipelines/{pipeline}/pipeline-couplings")
}

fn is_couplings(request: &RecordedRequest) -> bool {
    request.method == "GET" && request.path.ends_with("/pipeline-couplings")
}

fn describe(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            format!(
                "{} {} range={:?} if-none-match={:?}",
                r.method,
                r.path,
                r.header("range"),
                r.header("if-none-match")
            )
        })
        .collect()
}

/// With two production apps and one staging app, only the stage asked for gets traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_apps_of_the_chosen_stage_get_traffic() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let prod_one = TestBackend::start_app(&api, &pipeline, "prod-one").await;
    let prod_two = TestBackend::start_app(&api, &pipeline, "prod-two").await;
    let staging = TestBackend::start("staging-one").await;
    api.add_app(AppFixture::new("staging-one", &pipeline, &staging.web_url()).stage("staging"));

    let production_lb = LbBuilder::pipeline(&api, pipeline.as_str()).start().await;
    let client = common::http_client();
    wait_serving(&production_lb, &client, &[&prod_one, &prod_two]).await;
    send_all(&client, &production_lb, "/production/", 100).await;
    assert_eq!(prod_one.count_to("/production/"), 50);
    assert_eq!(prod_two.count_to("/production/"), 50);
    assert_eq!(
        staging.request_count(),
        0,
        "the staging app got production traffic (or health checks)"
    );
    drop(production_lb);

    let staging_lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("PIPELINE_STAGE", "staging")
        .start()
        .await;
    wait_serving(&staging_lb, &client, &[&staging]).await;
    send_all(&client, &staging_lb, "/staging/", 40).await;
    assert_eq!(staging.count_to("/staging/"), 40);
    assert_eq!(prod_one.count_to("/staging/"), 0);
    assert_eq!(prod_two.count_to("/staging/"), 0);
}

/// A couplings list cut into pages is followed through Next-Range, and all five apps serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_couplings_list_cut_into_pages_is_followed_to_the_end() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let backends = TestBackend::start_many("paged", 5).await;
    for backend in &backends {
        api.add_app(AppFixture::new(
            backend.name(),
            &pipeline,
            &backend.web_url(),
        ));
    }
    api.set_page_size_cap(2);

    // The Next-Range values the fake hands out, read the way the balancer should.
    let direct = common::http_client();
    let mut expected_ranges = vec!["id ..; max=1000".to_string()];
    for _ in 0..2 {
        let response = direct
            .get(format!("{}{}", api.url(), couplings_path(&pipeline)))
            .header("accept", ACCEPT_V3)
            .bearer_auth(KEY)
            .header("range", expected_ranges.last().unwrap())
            .send()
            .await
            .expect("the fake answers");
        assert_eq!(response.status(), 206, "a cut page is a 206");
        let next = response
            .headers()
            .get("next-range")
            .expect("a 206 carries Next-Range")
            .to_str()
            .unwrap()
            .to_string();
        expected_ranges.push(next);
    }

    let mark = api.mark();
    let lb = LbBuilder::pipeline(&api, pipeline.as_str()).start().await;
    let client = common::http_client();
    let serving: Vec<&TestBackend> = backends.iter().collect();
    wait_serving(&lb, &client, &serving).await;
    send_all(&client, &lb, "/paged/", 50).await;
    for backend in &backends {
        assert_eq!(
            backend.count_to("/paged/"),
            10,
            "{} did not get its fifth of the traffic",
            backend.name()
        );
    }

    // Let a few more rounds run: every round walks the three pages again.
    common::wait_until(
        "three discovery rounds",
        100,
        Duration::from_millis(50),
        || async {
            api.requests_since(mark)
                .iter()
                .filter(|r| is_couplings(r))
                .count()
                >= 9
        },
    )
    .await;
    let couplings: Vec<RecordedRequest> = api
        .requests_since(mark)
        .into_iter()
        .filter(is_couplings)
        .collect();
    let ranges: Vec<Option<&str>> = couplings.iter().map(|r| r.header("range")).collect();
    for (round, pages) in ranges.chunks(3).take(3).enumerate() {
        let expected: Vec<Option<&str>> =
            expected_ranges.iter().map(|r| Some(r.as_str())).collect();
        assert_eq!(
            pages,
            expected.as_slice(),
            "round {round}: the Range headers did not follow Next-Range; all: {:?}",
            describe(&couplings)
        );
    }
    assert!(
        couplings
            .iter()
            .all(|r| r.header("if-none-match").is_none()),
        "a list that took several pages cannot be revalidated with If-None-Match: {:?}",
        describe(&couplings)
    );
}

/// A pipeline name is looked up once, then couplings are read by id; a UUID is never looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_name_is_resolved_once_and_a_uuid_never() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop-pipeline");
    let backend = TestBackend::start_app(&api, &pipeline, "shop-web").await;
    let client = common::http_client();
    let by_id = couplings_path(&pipeline);

    for identifier in ["shop-pipeline", pipeline.as_str()] {
        let mark = api.mark();
        let lb = LbBuilder::pipeline(&api, identifier).start().await;
        wait_serving(&lb, &client, &[&backend]).await;
        common::wait_until(
            "five discovery rounds",
            100,
            Duration::from_millis(50),
            || async {
                api.requests_since(mark)
                    .iter()
                    .filter(|r| is_couplings(r))
                    .count()
                    >= 5
            },
        )
        .await;
        drop(lb);
        let requests = api.requests_since(mark);
        let lookups: Vec<&RecordedRequest> = requests
            .iter()
            .filter(|r| {
                r.path.starts_with("/pipelines/") && !r.path.ends_with("/pipeline-couplings")
            })
            .collect();
        if identifier == "shop-pipeline" {
            assert_eq!(
                lookups.len(),
                1,
                "by name: expected one pipeline lookup: {:?}",
                describe(&requests)
            );
            assert_eq!(lookups[0].method, "GET");
            assert_eq!(lookups[0].path, "/pipelines/shop-pipeline");
            assert_eq!(
                requests[0].path,
                "/pipelines/shop-pipeline",
                "the lookup comes first: {:?}",
                describe(&requests)
            );
        } else {
            assert!(
                lookups.is_empty(),
                "by UUID: no pipeline lookup expected: {:?}",
                describe(&requests)
            );
        }
        let couplings: Vec<&RecordedRequest> = requests
            .iter()
            .filter(|r| r.path.starts_with("/pipelines/"))
            .filter(|r| r.path.ends_with("/pipeline-couplings"))
            .collect();
        assert!(
            couplings.iter().all(|r| r.path == by_id),
            "{identifier}: couplings must be read by pipeline id ({by_id}): {:?}",
            describe(&requests)
        );
    }
}

/// Null web_url (warned about by name), maintenance and no web dynos keep an app out of rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_that_cannot_serve_are_left_out_and_a_null_web_url_is_warned_about() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let good_one = TestBackend::start_app(&api, &pipeline, "good-one").await;
    let good_two = TestBackend::start_app(&api, &pipeline, "good-two").await;
    let maintenance = TestBackend::start("in-maintenance").await;
    let zero = TestBackend::start("zero-dynos").await;
    let no_formation = TestBackend::start("no-web-formation").await;
    api.add_app(
        AppFixture::new("null-url-app", &pipeline, "http://unused.invalid/").without_web_url(),
    );
    api.add_app(
        AppFixture::new("in-maintenance", &pipeline, &maintenance.web_url()).maintenance(true),
    );
    api.add_app(AppFixture::new("zero-dynos", &pipeline, &zero.web_url()).web_quantity(Some(0)));
    api.add_app(
        AppFixture::new("no-web-formation", &pipeline, &no_formation.web_url()).web_quantity(None),
    );

    let lb = LbBuilder::pipeline(&api, pipeline.as_str()).start().await;
    let client = common::http_client();
    wait_serving(&lb, &client, &[&good_one, &good_two]).await;
    send_all(&client, &lb, "/mixed/", 60).await;

    assert_eq!(good_one.count_to("/mixed/"), 30);
    assert_eq!(good_two.count_to("/mixed/"), 30);
    for left_out in [&maintenance, &zero, &no_formation] {
        assert_eq!(
            left_out.count_to("/warmup/") + left_out.count_to("/mixed/"),
            0,
            "{} must get no traffic",
            left_out.name()
        );
    }
    let warnings: Vec<String> = lb
        .lines_with("null-url-app")
        .into_iter()
        .filter(|line| line.to_ascii_lowercase().contains("warn"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "expected one warning naming null-url-app; output:\n{}",
        lb.output()
    );
}

/// Weights follow the web dyno count (3:1), or are all equal with `weight_by_dynos: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_is_weighted_by_web_dyno_count_unless_turned_off() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let heavy = TestBackend::start("three-dynos").await;
    let light = TestBackend::start("one-dyno").await;
    api.add_app(AppFixture::new("three-dynos", &pipeline, &heavy.web_url()).web_quantity(Some(3)));
    api.add_app(AppFixture::new("one-dyno", &pipeline, &light.web_url()));
    let client = common::http_client();

    let weighted = LbBuilder::pipeline(&api, pipeline.as_str()).start().await;
    let (h, l) = split(&weighted, &client, [&heavy, &light], "/weighted/", 400).await;
    assert!(
        (260..=340).contains(&h) && h + l == 400,
        "weight 3 vs 1: expected about 300/100 (±40), got {h}/{l}\nbalancer output:\n{}",
        weighted.output()
    );
    drop(weighted);

    let equal = LbBuilder::pipeline(&api, pipeline.as_str())
        .config("weight_by_dynos", "false")
        .start()
        .await;
    let (h, l) = split(&equal, &client, [&heavy, &light], "/equal/", 400).await;
    assert!(
        (160..=240).contains(&h) && h + l == 400,
        "weight_by_dynos false: expected about 200/200 (±40), got {h}/{l}\nbalancer output:\n{}",
        equal.output()
    );
}

/// An app added to the pipeline serves within a few rounds; a removed one gets no more traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_added_to_or_removed_from_the_pipeline_are_picked_up_within_a_few_rounds() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let first = TestBackend::start("first").await;
    let second = TestBackend::start("second").await;
    let third = TestBackend::start("third").await;
    let first_id = api.add_app(AppFixture::new("first", &pipeline, &first.web_url()));
    api.add_app(AppFixture::new("second", &pipeline, &second.web_url()));

    let lb = LbBuilder::pipeline(&api, pipeline.as_str()).start().await;
    let client = common::http_client();
    wait_serving(&lb, &client, &[&first, &second]).await;

    // Added: DISCOVERY_INTERVAL is 0.3 s; allow ten intervals.
    api.add_app(AppFixture::new("third", &pipeline, &third.web_url()));
    let added = Instant::now();
    let reached = common::poll_until(60, Duration::from_millis(50), || async {
        for i in 0..3 {
            let _ = common::send(client.get(lb.url_for(&format!("/after-add/{i}")))).await;
        }
        third.count_to("/after-add/") > 0
    })
    .await;
    assert!(
        reached,
        "the added app got no traffic within {:?}\nbalancer output:\n{}",
        added.elapsed(),
        lb.output()
    );
    assert!(
        added.elapsed() < Duration::from_secs(3),
        "the added app took {:?} to get traffic",
        added.elapsed()
    );

    // Removed: wait until a batch no longer reaches it, then it must stay out.
    api.remove_app(&first_id);
    let removed = Instant::now();
    let gone = common::poll_until(60, Duration::from_millis(50), || async {
        let before = first.count_to("/after-remove/");
        for i in 0..4 {
            let reply = common::send(client.get(lb.url_for(&format!("/after-remove/{i}")))).await;
            if !matches!(reply, Ok(ref r) if r.status == 200) {
                return false;
            }
        }
        first.count_to("/after-remove/") == before
    })
    .await;
    assert!(
        gone,
        "the removed app still got traffic after {:?}\nbalancer output:\n{}",
        removed.elapsed(),
        lb.output()
    );
    assert!(
        removed.elapsed() < Duration::from_secs(3),
        "the removed app took {:?} to leave",
        removed.elapsed()
    );
    send_all(&client, &lb, "/settled/", 60).await;
    assert_eq!(
        first.count_to("/settled/"),
        0,
        "the removed app got traffic again"
    );
    assert_eq!(second.count_to("/settled/"), 30);
    assert_eq!(third.count_to("/settled/"), 30);

    assert_eq!(
        lb.lines_with("discovery added app=third").len(),
        1,
        "{}",
        lb.output()
    );
    assert_eq!(
        lb.lines_with("discovery removed app=first").len(),
        1,
        "{}",
        lb.output()
    );
}

/// A refused and a timed-out API call are logged as two errors, each naming its cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_and_a_timed_out_api_call_are_logged_as_different_errors() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let backend = TestBackend::start_app(&api, &pipeline, "app-one").await;
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .config("api_timeout_seconds", "0.5")
        .start()
        .await;
    let client = common::http_client();
    wait_serving(&lb, &client, &[&backend]).await;

    let mut problems = Vec::new();
    for (failure, cause) in [
        (Failure::Refuse, &["refused"][..]),
        (
            Failure::Stall(Duration::from_secs(3)),
            &["timed out", "timeout"][..],
        ),
    ] {
        let before = lb.lines_with("discovery failed").len();
        api.set_failure(failure.clone());
        // Back-off is 1 s here, the API timeout 0.5 s: a new line within 4 s.
        let logged = common::poll_until(80, Duration::from_millis(50), || async {
            lb.lines_with("discovery failed").len() > before
        })
        .await;
        if logged {
            let line = lb.lines_with("discovery failed").pop().unwrap_or_default();
            let lower = line.to_ascii_lowercase();
            if !cause.iter().any(|word| lower.contains(word)) {
                problems.push(format!(
                    "{failure:?}: the error line does not give the cause (one of {cause:?}): {line}"
                ));
            }
        } else {
            problems.push(format!(
                "{failure:?}: not logged as a new error within 4 s (API requests meanwhile: {:?})",
                describe(&api.requests()[api.request_count().saturating_sub(3)..])
            ));
        }
        send_all(&client, &lb, "/still-serving/", 4).await;
    }
    assert!(
        problems.is_empty(),
        "{}\nall discovery lines:\n{}",
        problems.join("\n"),
        lb.lines_with("discovery ").join("\n")
    );
}

/// If the very first round fails, the balancer still listens and answers 503, then serves
/// within a few seconds of the API coming back.
async fn first_round_fails_then_recovers(failure: Failure) {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let one = TestBackend::start_app(&api, &pipeline, "app-one").await;
    let two = TestBackend::start_app(&api, &pipeline, "app-two").await;
    api.set_failure(failure.clone());

    let lb = LbBuilder::pipeline(&api, pipeline.as_str()).start().await;
    let client = common::http_client();
    common::wait_until(
        "the first failure to be logged",
        100,
        Duration::from_millis(50),
        || async { !lb.lines_with("discovery failed").is_empty() },
    )
    .await;
    let failures = lb.lines_with("discovery failed");
    assert!(
        failures[0].contains("kept_apps=0") && failures[0].contains(&api.url()),
        "{failure:?}: {}",
        failures[0]
    );
    for i in 0..3 {
        let reply = common::get(&client, &lb.url_for(&format!("/before/{i}"))).await;
        assert_eq!(
            reply.status, 503,
            "{failure:?}: no app known yet: {reply:?}"
        );
    }

    api.clear_failures();
    let fixed = Instant::now();
    wait_serving(&lb, &client, &[&one, &two]).await;
    assert!(
        fixed.elapsed() < Duration::from_secs(4),
        "{failure:?}: traffic took {:?} to flow after the API came back",
        fixed.elapsed()
    );
    send_all(&client, &lb, "/after/", 20).await;
    assert_eq!(
        lb.lines_with("discovery added app=").len(),
        2,
        "{}",
        lb.output()
    );
}

/// With the API refusing at start, the balancer answers 503, then serves once the API is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_round_answers_503_until_the_api_is_back() {
    first_round_fails_then_recovers(Failure::Refuse).await;
}

/// With the API answering 500 at start, the balancer answers 503, then serves once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_round_answered_500_answers_503_until_the_api_is_back() {
    first_round_fails_then_recovers(Failure::Status(500)).await;
}

/// A steady round costs at most two API requests, each with Heroku's Accept, Bearer and UA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_round_costs_at_most_two_requests_with_herokus_headers() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let backends = TestBackend::start_many("steady", 3).await;
    for backend in &backends {
        api.add_app(AppFixture::new(
            backend.name(),
            &pipeline,
            &backend.web_url(),
        ));
    }
    let lb = LbBuilder::pipeline(&api, pipeline.as_str())
        .env("DISCOVERY_INTERVAL", "0.2")
        // So that refreshes of known apps happen inside the window.
        .config("app_refresh_interval_seconds", "1")
        .start()
        .await;
    let client = common::http_client();
    let serving: Vec<&TestBackend> = backends.iter().collect();
    wait_serving(&lb, &client, &serving).await;
    // Steady state: a revalidating couplings request shows the rounds that
    // found the apps are over (an event, not a sleep).
    common::wait_until(
        "a steady discovery round",
        100,
        Duration::from_millis(50),
        || async {
            api.requests()
                .iter()
                .any(|r| is_couplings(r) && r.header("if-none-match").is_some())
        },
    )
    .await;

    let mark = api.mark();
    let window = Instant::now();
    common::wait_until(
        "thirteen steady discovery rounds",
        160,
        Duration::from_millis(50),
        || async {
            api.requests_since(mark)
                .iter()
                .filter(|r| is_couplings(r))
                .count()
                >= 14
        },
    )
    .await;
    // The mark may fall inside a round: start at the first round that
    // begins after it, and cut at the 13th: 12 whole rounds.
    let all = api.requests_since(mark);
    let first = all
        .iter()
        .position(is_couplings)
        .expect("a couplings request after the mark");
    let all = &all[first..];
    let cut = all
        .iter()
        .enumerate()
        .filter(|(_, r)| is_couplings(r))
        .nth(12)
        .map(|(i, _)| i)
        .expect("thirteen couplings requests");
    let requests = &all[..cut];
    let couplings = requests.iter().filter(|r| is_couplings(r)).count();
    eprintln!(
        "{} API requests for {couplings} rounds in {:?}",
        requests.len(),
        window.elapsed()
    );
    assert!(couplings >= 10, "{:?}", describe(requests));
    assert!(
        is_couplings(&requests[0]),
        "the window starts with a round: {:?}",
        describe(requests)
    );
    assert!(
        requests.len() <= 2 * couplings,
        "{} requests for {couplings} rounds: {:?}",
        requests.len(),
        describe(requests)
    );
    // Round by round: the couplings request, then at most one more.
    let mut extra_in_round = 0;
    for request in requests {
        if is_couplings(request) {
            extra_in_round = 0;
        } else {
            extra_in_round += 1;
            assert!(
                extra_in_round <= 1,
                "a round spent more than one refresh request: {:?}",
                describe(requests)
            );
        }
    }
    let refreshes = requests.len() - couplings;
    assert!(
        refreshes >= 1,
        "with app_refresh_interval_seconds 1, known apps were never refreshed: {:?}",
        describe(requests)
    );
    let conditional = requests
        .iter()
        .filter(|r| is_couplings(r))
        .all(|r| r.header("if-none-match").is_some());
    assert!(
        conditional,
        "a single-page couplings list is revalidated with If-None-Match: {:?}",
        describe(requests)
    );

    // Headers, on every request since the balancer started.
    for request in api.requests() {
        let what = format!("{} {}", request.method, request.path);
        let accept = if request.method == "POST" && request.path == "/filters/apps" {
            ACCEPT_FILTERS
        } else {
            ACCEPT_V3
        };
        assert_eq!(request.header("accept"), Some(accept), "{what}");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {KEY}").as_str()),
            "{what}"
        );
        let agent = request.header("user-agent").unwrap_or_default();
        assert!(
            agent.starts_with("heroku-lb"),
            "{what}: User-Agent {agent:?}"
        );
    }
}

/// The API key never shows in the balancer's output, even at debug level with the API failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_appears_in_the_logs() {
    let api = FakeHerokuApi::start(KEY);
    let pipeline = api.add_pipeline("shop");
    let backend = TestBackend::start_app(&api, &pipeline, "app-one").await;
    api.add_app(AppFixture::new("no-url", &pipeline, "http://unused.invalid/").without_web_url());
    // The first round fails too: the error path from the very start.
    api.fail_next(1, Failure::Status(500));
    let lb = LbBuilder::pipeline(&api, "shop")
        .env("RUST_LOG", "debug")
        .start()
        .await;
    let client = common::http_client();
    wait_serving(&lb, &client, &[&backend]).await;

    for (failure, needle) in [
        (Failure::Status(503), "status 503"),
        (Failure::TruncatedJson, "discovery failed"),
        (Failure::Unauthorized, "status 401"),
    ] {
        let before = lb.lines_with(needle).len();
        api.set_failure(failure.clone());
        common::wait_until(
            &format!("{failure:?} to be logged"),
            100,
            Duration::from_millis(50),
            || async { lb.lines_with(needle).len() > before },
        )
        .await;
        send_all(&client, &lb, "/while-failing/", 5).await;
    }

    let output = lb.output();
    assert!(
        output.to_ascii_lowercase().contains("debug"),
        "RUST_LOG=debug should produce debug lines (whatever the log format)"
    );
    assert!(!output.contains(KEY), "the API key leaked:\n{output}");
    // Not even a recognisable part of it.
    assert!(
        !output.contains("7f3c9e21"),
        "part of the API key leaked:\n{output}"
    );
}
