//! The status page in a real browser: headless Chromium opens
//! `http://user:TOKEN@…/_lb/status` (Basic credentials from the URL, as an
//! operator would type it), runs the page's script, and the dumped DOM shows
//! both backends healthy, redrawn from the JSON with the same credentials. A
//! screenshot is saved as `<target>/status-page.png` (the one in `docs/` was
//! taken this way). Needs Chromium: a missing one fails the test.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::backend::TestBackend;
use common::browser;
use common::lb::{balancer, LbProcess};

/// The token the balancer is started with.
const TOKEN: &str = "browser-status-token";

/// The rows of the backend table (`<tbody id="rows">`) in `dom`.
fn table_rows(dom: &str) -> Vec<&str> {
    let Some(start) = dom.find("<tbody id=\"rows\">") else {
        return Vec::new();
    };
    let body = &dom[start..];
    let body = &body[..body.find("</tbody>").unwrap_or(body.len())];
    body.split("<tr").skip(1).collect()
}

/// The page's URL with Basic credentials in it (any user name, the token as password).
fn page_url(lb: &LbProcess) -> String {
    format!("http://operator:{TOKEN}@127.0.0.1:{}/_lb/status", lb.port())
}

/// Where the screenshot goes: the target directory this test was built in.
fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("status-page.png")
}

/// Chromium, given `user:TOKEN@` in the URL, shows a table naming both backends as healthy, and the page's script refreshes it from the JSON with the same credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_with_the_token_in_the_url_sees_both_backends_healthy() {
    // Fail first, and clearly, when there is no browser.
    browser::chromium();
    let backends = TestBackend::start_many("app", 2).await;
    let (lb, client) = balancer(&backends)
        .status_token(TOKEN)
        .start_healthy(2)
        .await;
    for i in 0..40 {
        let reply = common::get(&client, &lb.url_for(&format!("/page/{i}"))).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }

    let url = page_url(&lb);
    // Page time for the 5 s refresh to run once.
    let dom_url = url.clone();
    let dom = tokio::task::spawn_blocking(move || {
        browser::dump_dom(&dom_url, Duration::from_millis(8000))
    })
    .await
    .expect("the Chromium task does not panic");
    let rows = table_rows(&dom);
    assert_eq!(rows.len(), 2, "two backend rows expected; DOM:\n{dom}");
    for backend in &backends {
        let row = rows
            .iter()
            .find(|row| row.contains(&format!(">{}<", backend.url())))
            .unwrap_or_else(|| panic!("no row names {}; DOM:\n{dom}", backend.url()));
        assert!(row.contains("<td>healthy</td>"), "not healthy: {row}");
        assert!(row.contains("<svg"), "no sparkline: {row}");
    }
    assert!(
        dom.contains("<span id=\"updated\">updated "),
        "the page's script never redrew the table from the JSON (credentials not re-sent?); DOM:\n{dom}"
    );
    assert!(dom.contains("admitted"), "no events; DOM:\n{dom}");

    let path = screenshot_path();
    let _ = std::fs::remove_file(&path);
    let shot = path.clone();
    tokio::task::spawn_blocking(move || browser::screenshot(&url, &shot, 1400, 900))
        .await
        .expect("the Chromium task does not panic");
    let png =
        std::fs::read(&path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        path.display()
    );
    println!("screenshot: {}", path.display());
}
