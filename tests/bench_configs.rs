//! The configs the benchmark (`bench/run.py`) runs are valid for the servers
//! that read them: `python3 bench/configs.py emit DIR` writes a sample of each,
//! and each is checked by its own server's check mode (`nginx -t`,
//! `haproxy -c`, `heroku-lb -t`). The TLS configs of the heroku scenario
//! (router, HAProxy, nginx, heroku-lb with https backends) point at a
//! throwaway CA and certificate `emit` makes with the openssl CLI, so their
//! checks load real files. python3, openssl, nginx and HAProxy must be
//! installed (`.ci/run` installs them, README's prerequisites name them): a
//! missing one fails the test with what to install, never a silent pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One file `configs.py emit` wrote: its kind (`nginx`, `haproxy`,
/// `heroku-lb`), path, and for nginx the prefix directory.
struct Emitted {
    kind: String,
    path: PathBuf,
    prefix: Option<PathBuf>,
}

/// Runs `python3 bench/configs.py emit <dir>` and parses what it printed.
fn emit(dir: &Path) -> Vec<Emitted> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/configs.py");
    let output = match Command::new("python3")
        .arg(&script)
        .arg("emit")
        .arg(dir)
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("python3 is needed to emit the bench configs ({e}); install python3"),
    };
    assert_ok("python3 bench/configs.py emit", &output);
    let emitted: Vec<Emitted> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let mut fields = line.split_whitespace();
            Emitted {
                kind: fields.next().expect("a kind").to_string(),
                path: PathBuf::from(fields.next().expect("a path")),
                prefix: fields.next().map(PathBuf::from),
            }
        })
        .collect();
    assert!(!emitted.is_empty(), "configs.py emit wrote nothing");
    emitted
}

fn assert_ok(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Panics, naming the Debian package, unless `binary` can be run at all
/// (`-v` prints its version everywhere).
fn require(binary: &str) {
    if let Err(e) = Command::new(binary).arg("-v").output() {
        panic!("{binary} is needed to check its bench config ({e}): apt-get install {binary}");
    }
}

/// `emit` makes the heroku scenario's CA and certificate with the openssl CLI.
fn require_openssl() {
    if let Err(e) = Command::new("openssl").arg("version").output() {
        panic!("openssl is needed to make the bench's test certificates ({e}): apt-get install openssl");
    }
}

fn of_kind<'a>(emitted: &'a [Emitted], kind: &'a str) -> impl Iterator<Item = &'a Emitted> {
    emitted.iter().filter(move |e| e.kind == kind)
}

/// Every nginx config the benchmark generates (backends, 200-port backends,
/// proxy, the TLS router of 100 apps, the TLS proxy over 3 apps, the deploy
/// and mixed scenarios') passes `nginx -t`.
#[test]
fn the_generated_nginx_configs_pass_nginx_t() {
    require("nginx");
    require_openssl();
    let dir = tempfile::tempdir().expect("a temp dir");
    let emitted = emit(dir.path());
    let configs: Vec<&Emitted> = of_kind(&emitted, "nginx").collect();
    assert_eq!(
        configs.len(),
        7,
        "backends, many backends, proxy, TLS router, TLS apps proxy, deploy and mixed"
    );
    for config in configs {
        let prefix = config
            .prefix
            .as_ref()
            .expect("nginx configs come with a prefix");
        let output = Command::new("nginx")
            .args(["-e", "stderr", "-t", "-c"])
            .arg(&config.path)
            .arg("-p")
            .arg(prefix)
            .output()
            .expect("running nginx -t");
        assert_ok(&format!("nginx -t -c {}", config.path.display()), &output);
    }
}

/// Every HAProxy config the benchmark generates (plain, TLS to the apps of
/// one router, the deploy scenario's, the mixed scenario's) passes `haproxy -c`.
#[test]
fn the_generated_haproxy_configs_pass_haproxy_c() {
    require("haproxy");
    require_openssl();
    let dir = tempfile::tempdir().expect("a temp dir");
    let emitted = emit(dir.path());
    let configs: Vec<&Emitted> = of_kind(&emitted, "haproxy").collect();
    assert_eq!(configs.len(), 4, "plain, TLS apps, deploy and mixed");
    for config in configs {
        let output = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&config.path)
            .output()
            .expect("running haproxy -c");
        assert_ok(&format!("haproxy -c -f {}", config.path.display()), &output);
    }
}

/// Every heroku-lb config the benchmark generates (static list, pipeline,
/// https apps with `resolve` and `ca_file`, the deploy and mixed scenarios',
/// `peak_ewma` with the in-flight cap and queue) passes `heroku-lb -t`,
/// which loads the CA file.
#[test]
fn the_generated_heroku_lb_configs_pass_heroku_lb_t() {
    require_openssl();
    let dir = tempfile::tempdir().expect("a temp dir");
    let emitted = emit(dir.path());
    let configs: Vec<&Emitted> = of_kind(&emitted, "heroku-lb").collect();
    assert_eq!(
        configs.len(),
        6,
        "static, pipeline, https apps, deploy, mixed, mixed with the queue"
    );
    for config in configs {
        let mut command = Command::new(env!("CARGO_BIN_EXE_heroku-lb"));
        // Only what the file says: none of the caller's heroku-lb variables.
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if config.path.to_string_lossy().contains("pipeline") {
            // The API key is a secret: environment only, never in the file.
            command.env("HEROKU_API_KEY", "bench-config-test-key");
        }
        let output = command
            .arg("-t")
            .arg("-c")
            .arg(&config.path)
            .output()
            .expect("running heroku-lb -t");
        assert_ok(
            &format!("heroku-lb -t -c {}", config.path.display()),
            &output,
        );
    }
}
