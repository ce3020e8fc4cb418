//! A bad configuration stops the binary at start with a non-zero exit and a
//! message naming the culprit; `-t` checks a good one and exits 0.

mod common;

use common::lb::{assert_fails_naming, LbBuilder, LbExit, EXIT_TIMEOUT};

/// A builder with one valid backend, so only the case under test is wrong.
fn with_a_backend() -> LbBuilder {
    LbBuilder::new().backends(&[format!("http://127.0.0.1:{}", common::free_port())])
}

/// A misspelt key in the heroku_lb section is an error that names the key.
#[test]
fn an_unknown_key_in_the_heroku_lb_section_is_named() {
    assert_fails_naming(with_a_backend().config("bakends", "[]"), "bakends");
}

/// A PORT that is not a number is an error that names PORT.
#[test]
fn a_port_that_is_not_a_number_is_named() {
    assert_fails_naming(with_a_backend().env("PORT", "notaport"), "PORT");
}

/// A backend URL with a scheme other than http/https is an error that names LB_BACKENDS.
#[test]
fn a_backend_url_with_an_unsupported_scheme_is_named() {
    assert_fails_naming(
        LbBuilder::new().env("LB_BACKENDS", "ftp://x"),
        "LB_BACKENDS",
    );
}

/// A backend URL without a host is an error that names LB_BACKENDS.
#[test]
fn a_backend_url_without_a_host_is_named() {
    assert_fails_naming(
        LbBuilder::new().env("LB_BACKENDS", "http://"),
        "LB_BACKENDS",
    );
}

/// A CA bundle path that does not exist is an error that names SSL_CERT_FILE, not a panic.
#[test]
fn a_missing_ca_bundle_is_named() {
    let exit = assert_fails_naming(
        with_a_backend().env("SSL_CERT_FILE", "/nonexistent/ca.pem"),
        "SSL_CERT_FILE",
    );
    assert!(
        !exit.stderr.contains("panicked"),
        "a config error should not be a panic:\n{}",
        exit.stderr
    );
}

/// A config error never echoes the Heroku API key.
#[test]
fn a_config_error_does_not_echo_the_api_key() {
    let secret = "test-secret-key-0123456789";
    let exit = assert_fails_naming(
        with_a_backend()
            .env("PORT", "notaport")
            .env("HEROKU_API_KEY", secret),
        "PORT",
    );
    assert!(!exit.stderr.contains(secret), "stderr:\n{}", exit.stderr);
    assert!(!exit.stdout.contains(secret), "stdout:\n{}", exit.stdout);
}

/// `-t` with a good config checks it and exits 0 without serving.
#[test]
fn test_mode_with_a_good_config_exits_zero() {
    let exit = with_a_backend().arg("-t").run_to_exit(EXIT_TIMEOUT);
    assert!(
        exit.status.success(),
        "expected exit 0, got {}; stderr:\n{}",
        exit.status,
        exit.stderr
    );
}

/// A trusted proxy that is neither an IP address nor a CIDR range is an error naming LB_TRUSTED_PROXIES, or the file's key.
#[test]
fn a_bad_trusted_proxy_is_named() {
    let exit = assert_fails_naming(
        with_a_backend()
            .env("LB_TRUSTED_PROXIES", "10.0.0.0/8, not-an-ip")
            .arg("-t"),
        "LB_TRUSTED_PROXIES",
    );
    assert!(exit.stderr.contains("not-an-ip"), "{}", exit.stderr);
    assert_fails_naming(
        with_a_backend()
            .config("trusted_proxies", "[\"10.0.0.0/33\"]")
            .arg("-t"),
        "heroku_lb.trusted_proxies",
    );
}

/// An empty status token would let anyone see the detail: `status_token: ""` and a blank LB_STATUS_TOKEN are errors naming them.
#[test]
fn an_empty_status_token_is_named() {
    assert_fails_naming(
        with_a_backend().config("status_token", "\"\"").arg("-t"),
        "heroku_lb.status_token",
    );
    assert_fails_naming(
        with_a_backend().env("LB_STATUS_TOKEN", "   ").arg("-t"),
        "LB_STATUS_TOKEN",
    );
}

/// LB_REWRITE_REDIRECTS that is not a yes/no value is an error naming it.
#[test]
fn a_bad_rewrite_redirects_value_is_named() {
    assert_fails_naming(
        with_a_backend()
            .env("LB_REWRITE_REDIRECTS", "sometimes")
            .arg("-t"),
        "LB_REWRITE_REDIRECTS",
    );
}

/// `heroku-lb -t` exits with code 2 and names `culprit` in stderr.
fn assert_test_mode_exits_2_naming(builder: LbBuilder, culprit: &str) -> LbExit {
    let exit = assert_fails_naming(builder.arg("-t"), culprit);
    assert_eq!(
        exit.status.code(),
        Some(2),
        "expected exit code 2; stderr:\n{}",
        exit.stderr
    );
    exit
}

/// `-t` on a file that is not valid YAML, or that does not exist, exits 2 and names the file.
#[test]
fn test_mode_exits_2_naming_a_bad_file() {
    let exit = assert_test_mode_exits_2_naming(
        with_a_backend().config("health_check_path", "[unclosed"),
        "heroku-lb.yaml",
    );
    assert!(exit.stderr.contains("not valid YAML"), "{}", exit.stderr);
    assert_test_mode_exits_2_naming(
        with_a_backend()
            .without_config_file()
            .arg("-c")
            .arg("/nonexistent/heroku-lb.yaml"),
        "/nonexistent/heroku-lb.yaml",
    );
}

/// `-t` with a bad value in a variable, old or new, exits 2 and names the variable.
#[test]
fn test_mode_exits_2_naming_a_bad_variable() {
    for (name, value) in [
        ("HEALTH_CHECK_INTERVAL", "often"),
        ("LB_CONNECT_TIMEOUT_SECONDS", "soon"),
        ("LB_HEALTH_CHECK_STATUSES", "2xx,6xx"),
        ("LB_THREADS", "0"),
        // Over Heroku's shutdown budget once it overrides the file's value.
        ("LB_GRACE_PERIOD_SECONDS", "60"),
    ] {
        assert_test_mode_exits_2_naming(with_a_backend().env(name, value), name);
    }
}

/// `-t` with an unknown key in the heroku_lb section exits 2 and names the key.
#[test]
fn test_mode_exits_2_naming_an_unknown_key() {
    assert_test_mode_exits_2_naming(
        with_a_backend().config("conect_timeout_seconds", "1"),
        "conect_timeout_seconds",
    );
}

/// A variable overrides the file's key: `-t` accepts LB_CONNECT_TIMEOUT_SECONDS
/// over a file value it would refuse, and LB_THREADS over the file's threads.
#[test]
fn test_mode_accepts_a_variable_over_a_bad_key() {
    let exit = with_a_backend()
        .config("connect_timeout_seconds", "-1")
        .env("LB_CONNECT_TIMEOUT_SECONDS", "2")
        .server_config("threads", "0")
        .env("LB_THREADS", "2")
        .arg("-t")
        .run_to_exit(EXIT_TIMEOUT);
    assert!(exit.status.success(), "{}", exit.stderr);
}
