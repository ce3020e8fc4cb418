//! The fake Heroku Platform API of the tests (`tests/common/heroku_api/`),
//! run on its own for `bench/run.py`'s "discovery" scenario: one pipeline
//! whose production stage holds `--apps N` apps.
//!
//! App `n` is named `app-n` and its `web_url` is `http://app-n.bench.test:PORT/`
//! with PORT taken round robin from `--backend-ports`. Distinct hostnames give
//! each app a distinct URL (heroku-lb identifies a backend by its URL), as on
//! Heroku, where every app shares the router's address and only the hostname
//! differs; the benchmark pins every `app-n.bench.test` to 127.0.0.1 in
//! heroku-lb's `resolve:` map, so no DNS is involved.
//!
//! Prints one JSON line (`api_url`, `api_key`, `pipeline`, `stats_url`), then
//! answers every HTTP request on `stats_url` with the API requests the fake
//! has received so far, counted by kind. `GET {stats_url}leave/app-N` and
//! `GET {stats_url}join/app-N` move app N out of the production stage and
//! back (the soak's churn). `--page-size N` cuts every list into pages of N,
//! as Heroku may. Runs until killed.
//!
//! `cargo run --release --example fake_platform_api -- --apps 1000 --backend-ports 9001,9002,9003`

// The listener it keeps its port with while refusing (`super::held_port` to the fake).
#[allow(dead_code)]
#[path = "../tests/common/held_port.rs"]
mod held_port;
// The tests' fake, whole: this program drives only part of it.
#[allow(dead_code)]
#[path = "../tests/common/heroku_api/mod.rs"]
mod heroku_api;

use heroku_api::{AppFixture, FakeHerokuApi, RecordedRequest};
use std::io::{Read, Write};
use std::net::TcpListener;

const API_KEY: &str = "bench-api-key";

fn main() {
    let mut apps = 1000usize;
    let mut page_size: Option<usize> = None;
    let mut ports: Vec<u16> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--apps" => apps = value.parse().unwrap_or_else(|_| usage("--apps N")),
            "--page-size" => {
                page_size = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .unwrap_or_else(|| usage("--page-size N (1 or more)")),
                )
            }
            "--backend-ports" => {
                ports = value
                    .split(',')
                    .map(|p| p.trim().parse().unwrap_or_else(|_| usage("bad port")))
                    .collect()
            }
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    if ports.is_empty() {
        usage("--backend-ports is required");
    }

    let api = FakeHerokuApi::start(API_KEY);
    if let Some(size) = page_size {
        api.set_page_size_cap(size);
    }
    let pipeline = api.add_pipeline("bench");
    for n in 0..apps {
        let name = format!("app-{n}");
        let url = format!("http://{name}.bench.test:{}/", ports[n % ports.len()]);
        api.add_app(AppFixture::new(&name, &pipeline, &url));
    }

    let stats = TcpListener::bind("127.0.0.1:0").expect("bind the stats listener");
    let stats_url = format!("http://{}/", stats.local_addr().expect("bound address"));
    println!(
        "{}",
        serde_json::json!({
            "api_url": api.url(),
            "api_key": API_KEY,
            "pipeline": pipeline.as_str(),
            "apps": apps,
            "stats_url": stats_url,
        })
    );
    std::io::stdout().flush().expect("flush stdout");

    for stream in stats.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request = [0u8; 4096];
        let read = stream.read(&mut request).unwrap_or(0);
        let head = String::from_utf8_lossy(&request[..read]);
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        let moved = ["leave", "join"].iter().find_map(|verb| {
            let name = path.strip_prefix(&format!("/{verb}/"))?;
            let app = api.app_id(name)?;
            api.set_stage(
                &app,
                if *verb == "leave" {
                    "staging"
                } else {
                    "production"
                },
            );
            Some(())
        });
        let body = match (path, moved) {
            (_, Some(())) | ("/", _) => {
                counts(&api.requests(), api.rate_limit_remaining()).to_string()
            }
            _ => serde_json::json!({"error": format!("unknown path {path}")}).to_string(),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// The API requests received so far, by kind.
fn counts(requests: &[RecordedRequest], rate_limit_remaining: u32) -> serde_json::Value {
    let mut couplings = 0;
    let mut conditional = 0;
    let mut filters = 0;
    let mut formations = 0;
    let mut other = 0;
    for request in requests {
        let path = request.path.as_str();
        if path.ends_with("/pipeline-couplings") {
            couplings += 1;
            if request.header("if-none-match").is_some() {
                conditional += 1;
            }
        } else if path == "/filters/apps" {
            filters += 1;
        } else if path.contains("/formation") {
            formations += 1;
        } else {
            other += 1;
        }
    }
    serde_json::json!({
        "total": requests.len(),
        "couplings": couplings,
        "couplings_conditional": conditional,
        "filters_apps": filters,
        "formation": formations,
        "other": other,
        "rate_limit_remaining": rate_limit_remaining,
    })
}

fn usage(problem: &str) -> ! {
    eprintln!("fake_platform_api: {problem}");
    eprintln!("usage: fake_platform_api --apps N --backend-ports P1,P2,... [--page-size N]");
    std::process::exit(2)
}
