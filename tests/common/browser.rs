//! Debian's headless Chromium, driven from the command line: load a page and
//! dump its DOM after the page's scripts ran, or take a screenshot. Each run
//! gets a fresh profile in a tempdir and is killed when it overruns its
//! deadline, so a hung browser fails the test instead of hanging it.
//! `CHROMIUM` names the binary; otherwise `chromium` (Debian) or
//! `chromium-browser` on PATH. A missing browser is a test failure with the
//! install command, never a silent pass (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one Chromium run may take before it is killed.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// How often a running Chromium is polled for its exit.
const POLL: Duration = Duration::from_millis(100);

/// The Chromium binary; panics with how to install it when there is none.
pub fn chromium() -> PathBuf {
    super::required_tool(
        "CHROMIUM",
        &["chromium", "chromium-browser"],
        "a headless Chromium",
        "`apt-get install chromium`; .ci/run does",
    )
}

/// Load `url` and return the DOM after `virtual_time` of page time (scripts
/// and timers run in virtual time, so a 5 s refresh takes no real 5 s).
pub fn dump_dom(url: &str, virtual_time: Duration) -> String {
    let out = run(&[
        format!("--virtual-time-budget={}", virtual_time.as_millis()),
        "--dump-dom".to_string(),
        url.to_string(),
    ]);
    String::from_utf8_lossy(&out).into_owned()
}

/// Load `url` in a window of `width`×`height` and save a PNG at `path`.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) {
    run(&[
        format!("--screenshot={}", path.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_string(),
        "--virtual-time-budget=2000".to_string(),
        url.to_string(),
    ]);
}

/// Run Chromium headless with `args` and a fresh profile; its stdout.
fn run(args: &[String]) -> Vec<u8> {
    let profile = tempfile::Builder::new()
        .prefix("heroku-lb-chromium-")
        .tempdir()
        .expect("create a tempdir for the Chromium profile");
    let stdout_path = profile.path().join("stdout");
    let stderr_path = profile.path().join("stderr");
    let binary = chromium();
    let mut child = Command::new(&binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-proxy-server",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("create Chromium's stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("create Chromium's stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < RUN_DEADLINE => std::thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Chromium did not finish within {RUN_DEADLINE:?} ({args:?}); stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "Chromium {args:?} failed ({status}); stderr:\n{stderr}"
    );
    std::fs::read(&stdout_path).expect("read Chromium's stdout")
}
