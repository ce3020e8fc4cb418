//! Config loading: each error case names its culprit; mutated files and
//! environments never panic.

use super::*;

fn load_with(yaml: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, yaml.as_bytes()).expect("temp file is writable");
    let env: HashMap<&str, &str> = vars.iter().copied().collect();
    load(file.path().to_str(), &env).map(|(settings, _)| settings)
}

const BASE: &str = "version: 1\ngrace_period_seconds: 10\ngraceful_shutdown_timeout_seconds: 5\n";

#[test]
fn nothing_configured_is_the_demo_on_port_8080() {
    let settings = load_with(BASE, &[]).expect("defaults load");
    assert_eq!(settings.source, BackendSource::Demo);
    assert_eq!(settings.listen, "0.0.0.0:8080");
    assert_eq!(settings.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(
        settings.upstream.first_byte_timeout,
        Duration::from_secs(30)
    );
}

#[test]
fn environment_overrides_the_file() {
    let yaml = format!("{BASE}heroku_lb:\n  port: 9000\n  backends: [\"http://a.test\"]\n");
    let settings = load_with(
        &yaml,
        &[("PORT", "9100"), ("LB_BACKENDS", "https://b.test:8443/")],
    )
    .expect("loads");
    assert_eq!(settings.listen_port, 9100);
    match settings.source {
        BackendSource::Static(urls) => assert_eq!(urls[0].to_string(), "https://b.test:8443"),
        other => panic!("expected static backends, got {other:?}"),
    }
}

#[test]
fn an_unknown_key_in_our_section_is_named() {
    let yaml = format!("{BASE}heroku_lb:\n  bakends: []\n");
    let error = load_with(&yaml, &[]).expect_err("unknown key rejected");
    assert!(error.to_string().contains("bakends"), "{error}");
    assert!(error.culprit.starts_with("heroku_lb"), "{error}");
}

#[test]
fn a_bad_port_names_the_variable() {
    let error = load_with(BASE, &[("PORT", "notaport")]).expect_err("bad port");
    assert_eq!(error.culprit, "PORT");
}

#[test]
fn a_malformed_backend_names_the_variable_and_the_entry() {
    let error =
        load_with(BASE, &[("LB_BACKENDS", "http://ok.test,ftp://bad.test")]).expect_err("bad url");
    assert_eq!(error.culprit, "LB_BACKENDS");
    assert!(error.reason.contains("ftp://bad.test"), "{error}");
}

#[test]
fn a_missing_ca_file_names_ssl_cert_file() {
    let error = load_with(BASE, &[("SSL_CERT_FILE", "/nonexistent/ca.pem")]).expect_err("bad ca");
    assert_eq!(error.culprit, "SSL_CERT_FILE");
}

#[test]
fn the_demo_is_refused_on_a_dyno() {
    let error = load_with(BASE, &[("DYNO", "web.1")]).expect_err("demo refused on Heroku");
    assert_eq!(error.culprit, "DYNO");
}

#[test]
fn pipeline_discovery_needs_both_variables_and_never_echoes_the_key() {
    let error = load_with(BASE, &[("HEROKU_API_KEY", "s3cret-key")]).expect_err("no pipeline");
    assert_eq!(error.culprit, "PIPELINE_IDENTIFIER");
    assert!(!error.to_string().contains("s3cret-key"));

    let settings = load_with(
        BASE,
        &[
            ("HEROKU_API_KEY", "s3cret-key"),
            ("PIPELINE_IDENTIFIER", "shop"),
            ("DISCOVERY_INTERVAL", "0.5"),
        ],
    )
    .expect("pipeline settings load");
    match settings.source {
        BackendSource::Pipeline(pipeline) => {
            assert_eq!(pipeline.stage, "production");
            assert_eq!(pipeline.interval, Duration::from_millis(500));
            assert!(!format!("{pipeline:?}").contains("s3cret-key"));
        }
        other => panic!("expected pipeline, got {other:?}"),
    }
}

#[test]
fn a_bad_stage_lists_the_accepted_ones() {
    let error = load_with(
        BASE,
        &[
            ("HEROKU_API_KEY", "k"),
            ("PIPELINE_IDENTIFIER", "p"),
            ("PIPELINE_STAGE", "prod"),
        ],
    )
    .expect_err("bad stage");
    assert_eq!(error.culprit, "PIPELINE_STAGE");
    assert!(error.reason.contains("production"));
}

#[test]
fn a_shutdown_longer_than_herokus_budget_is_refused() {
    let error = load_with("version: 1\ngrace_period_seconds: 300\n", &[])
        .expect_err("300 s of grace is too long");
    assert!(error.culprit.contains("grace_period_seconds"), "{error}");
    // Without the keys, ours are 10 s + 5 s, not Pingora's 300 s + 5 s.
    let conf = load(None, &HashMap::<&str, &str>::new())
        .expect("no file loads")
        .1;
    assert_eq!(conf.grace_period_seconds, Some(10));
    assert_eq!(conf.graceful_shutdown_timeout_seconds, Some(5));
    // The variables are checked after they override the file.
    let error = load_with(BASE, &[("LB_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS", "20")])
        .expect_err("10 s + 20 s is too long");
    assert!(
        error
            .culprit
            .contains("LB_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS"),
        "{error}"
    );
}

#[test]
fn health_statuses_accept_classes_and_codes() {
    let yaml = format!("{BASE}heroku_lb:\n  health_check_statuses: [\"2xx\", 301]\n");
    let settings = load_with(&yaml, &[]).expect("statuses load");
    assert!(settings.health.passes(204));
    assert!(settings.health.passes(301));
    assert!(!settings.health.passes(302));
    let yaml = format!("{BASE}heroku_lb:\n  health_check_statuses: [\"6xx\"]\n");
    let error = load_with(&yaml, &[]).expect_err("bad class");
    assert!(error.culprit.contains("health_check_statuses"), "{error}");
}

#[test]
fn policies_and_sticky_cookies_are_checked() {
    let error = load_with(BASE, &[("LB_POLICY", "fastest")]).expect_err("bad policy");
    assert_eq!(error.culprit, "LB_POLICY");
    assert!(error.reason.contains("least_connections"));
    let error = load_with(BASE, &[("LB_STICKY_COOKIE", "bad name")]).expect_err("bad cookie");
    assert_eq!(error.culprit, "LB_STICKY_COOKIE");
    let settings = load_with(
        BASE,
        &[
            ("LB_POLICY", "least_connections"),
            ("LB_STICKY_COOKIE", "lb"),
            ("LB_STICKY_SECRET", "hush"),
        ],
    )
    .expect("loads");
    assert_eq!(settings.policy, Policy::LeastConnections);
    let sticky = settings.sticky.expect("sticky on");
    assert!(!format!("{sticky:?}").contains("hush"));
}

#[test]
fn resolve_pins_parse_from_the_environment() {
    let settings = load_with(
        BASE,
        &[("LB_RESOLVE", "a.test=127.0.0.1, B.test=127.0.0.2")],
    )
    .expect("pins");
    assert_eq!(
        settings.resolve_pins["b.test"],
        "127.0.0.2".parse::<IpAddr>().expect("ip")
    );
    let error = load_with(BASE, &[("LB_RESOLVE", "a.test")]).expect_err("bad pin");
    assert_eq!(error.culprit, "LB_RESOLVE");
}

/// A small deterministic generator (xorshift64*), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const FULL: &str = "---\nversion: 1\nthreads: 2\ngrace_period_seconds: 10\n\
graceful_shutdown_timeout_seconds: 5\nheroku_lb:\n  port: 8080\n  listen_host: 0.0.0.0\n\
  backends: [\"https://a.test\", \"http://b.test:81\"]\n  resolve: {a.test: 127.0.0.1}\n\
  health_check_interval_seconds: 5\n  health_check_path: /\n  health_check_statuses: [\"2xx\", 301]\n\
  discovery_interval_seconds: 30\n  connect_timeout_seconds: 5\n  policy: round_robin\n\
  sticky_cookie: lb\n  sticky_ttl_seconds: 60\n  admin_path_prefix: /_lb/\n";

const ODD_VALUES: &[&str] = &[
    "",
    " ",
    "0",
    "-1",
    "65536",
    "1e309",
    "nan",
    "inf",
    "0.0000001",
    "99999999999999999999",
    "notaport",
    "http://",
    "https://x.test:0",
    "ftp://x",
    "a=b",
    "=",
    ",",
    ",,,",
    "[]",
    "{}",
    "\u{0}",
    "é",
    "😀",
    "/_lb",
    "round_robin",
    "least_connections",
    "production",
    "prod",
    "http://a.test,http://a.test",
    "x.test=999.1.1.1",
    "/nonexistent/ca.pem",
    "bad name",
];

const MUTATION_CHARS: &[&str] = &[
    ":", "-", " ", "\n", "'", "\"", "[", "]", "{", "}", "#", "&", "*", "!", "|", ">", "9", "x",
    "\t",
];

/// Mutated files and environments either load or fail with an error that
/// names a culprit and a reason; none panics.
#[test]
fn mutated_files_and_environments_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for case in 0..1500 {
        let mut yaml: Vec<char> = FULL.chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(yaml.len() + 1);
            match rng.below(3) {
                0 if at < yaml.len() => {
                    yaml.remove(at);
                }
                1 => {
                    for c in rng.pick(MUTATION_CHARS).chars().rev() {
                        yaml.insert(at.min(yaml.len()), c);
                    }
                }
                _ => {
                    let value = rng.pick(ODD_VALUES);
                    for c in value.chars().rev() {
                        yaml.insert(at.min(yaml.len()), c);
                    }
                }
            }
        }
        let yaml: String = yaml.into_iter().collect();
        let mut vars: Vec<(&str, &str)> = Vec::new();
        for _ in 0..rng.below(4) {
            vars.push((rng.pick(env::ALL), rng.pick(ODD_VALUES)));
        }
        let outcome = std::panic::catch_unwind(|| load_with(&yaml, &vars));
        match outcome {
            Err(_) => panic!("case {case} panicked: vars={vars:?} yaml={yaml:?}"),
            Ok(Err(error)) => {
                assert!(
                    !error.culprit.trim().is_empty() && !error.reason.trim().is_empty(),
                    "case {case}: an error without a culprit or reason: {error:?}"
                );
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// An API key given in the environment never appears in any error, whatever else is wrong.
#[test]
fn the_api_key_never_appears_in_an_error() {
    let mut rng = Rng(0xdead_beef_0000_0042);
    for _ in 0..300 {
        let mut vars = vec![("HEROKU_API_KEY", "hk-SECRET-9f1c")];
        for _ in 0..1 + rng.below(3) {
            vars.push((rng.pick(env::ALL), rng.pick(ODD_VALUES)));
        }
        if let Err(error) = load_with(BASE, &vars) {
            assert!(
                !error.to_string().contains("hk-SECRET"),
                "{error} with {vars:?}"
            );
        }
    }
}

#[test]
fn the_ejection_cap_is_a_percentage_from_the_environment_or_the_file() {
    assert_eq!(
        load_with(BASE, &[])
            .expect("defaults")
            .health
            .max_ejection_percent,
        50
    );
    let yaml = format!("{BASE}heroku_lb:\n  max_ejection_percent: 30\n");
    assert_eq!(
        load_with(&yaml, &[])
            .expect("file")
            .health
            .max_ejection_percent,
        30
    );
    let from_env = load_with(&yaml, &[("LB_MAX_EJECTION_PERCENT", "0")]).expect("env");
    assert_eq!(from_env.health.max_ejection_percent, 0);
    let error = load_with(BASE, &[("LB_MAX_EJECTION_PERCENT", "150")]).expect_err("over 100");
    assert_eq!(error.culprit, "LB_MAX_EJECTION_PERCENT");
    let yaml = format!("{BASE}heroku_lb:\n  max_ejection_percent: 101\n");
    let error = load_with(&yaml, &[]).expect_err("over 100 in the file");
    assert!(
        error.culprit.starts_with("heroku_lb.max_ejection_percent"),
        "{error}"
    );
}

#[test]
fn a_blank_status_token_is_an_error_and_an_empty_variable_is_unset() {
    let yaml = format!("{BASE}heroku_lb:\n  status_token: \"\"\n");
    let error = load_with(&yaml, &[]).expect_err("empty token in the file");
    assert!(
        error.culprit.starts_with("heroku_lb.status_token"),
        "{error}"
    );
    let yaml = format!("{BASE}heroku_lb:\n  status_token: \"  \"\n");
    assert!(load_with(&yaml, &[]).is_err(), "blank token in the file");

    let error = load_with(BASE, &[("LB_STATUS_TOKEN", "  \t")]).expect_err("blank variable");
    assert_eq!(error.culprit, "LB_STATUS_TOKEN");
    assert!(!error.reason.is_empty());

    // Heroku leaves optional variables empty: that is unset, and the file counts.
    let yaml = format!("{BASE}heroku_lb:\n  status_token: from-file\n");
    let settings = load_with(&yaml, &[("LB_STATUS_TOKEN", "")]).expect("empty is unset");
    assert_eq!(settings.status_token.as_deref(), Some("from-file"));
    let settings = load_with(&yaml, &[("LB_STATUS_TOKEN", " env ")]).expect("env wins");
    assert_eq!(settings.status_token.as_deref(), Some("env"));
    assert_eq!(load_with(BASE, &[]).expect("none").status_token, None);
}

#[test]
fn trusted_proxies_are_ip_ranges_from_the_environment_or_the_file() {
    assert!(load_with(BASE, &[])
        .expect("defaults")
        .trusted_proxies
        .is_empty());
    let settings = load_with(
        BASE,
        &[("LB_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,,::1")],
    )
    .expect("env list");
    let listed: Vec<String> = settings
        .trusted_proxies
        .iter()
        .map(|range| range.to_string())
        .collect();
    assert_eq!(listed, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);

    let error = load_with(BASE, &[("LB_TRUSTED_PROXIES", "10.0.0.0/8,router")])
        .expect_err("not an address");
    assert_eq!(error.culprit, "LB_TRUSTED_PROXIES");
    assert!(error.reason.contains("'router'"), "{error}");

    let yaml = format!("{BASE}heroku_lb:\n  trusted_proxies: [\"192.168.0.0/16\"]\n");
    let settings = load_with(&yaml, &[]).expect("file list");
    assert_eq!(settings.trusted_proxies.len(), 1);
    let yaml = format!("{BASE}heroku_lb:\n  trusted_proxies: [\"10.0.0.0/40\"]\n");
    let error = load_with(&yaml, &[]).expect_err("prefix too long");
    assert!(
        error.culprit.starts_with("heroku_lb.trusted_proxies"),
        "{error}"
    );
}

#[test]
fn redirect_rewriting_is_on_unless_the_file_or_the_environment_turns_it_off() {
    assert!(load_with(BASE, &[]).expect("defaults").rewrite_redirects);
    let yaml = format!("{BASE}heroku_lb:\n  rewrite_redirects: false\n");
    assert!(!load_with(&yaml, &[]).expect("file").rewrite_redirects);
    assert!(
        load_with(&yaml, &[("LB_REWRITE_REDIRECTS", "TRUE")])
            .expect("env over file")
            .rewrite_redirects
    );
    let error = load_with(BASE, &[("LB_REWRITE_REDIRECTS", "maybe")]).expect_err("not a boolean");
    assert_eq!(error.culprit, "LB_REWRITE_REDIRECTS");
}

/// Backends listed together with the pipeline variables (a Deploy-button
/// form filled in for both): static mode, and a warning naming what is ignored.
#[test]
fn listed_backends_win_over_the_pipeline_with_a_warning() {
    let settings = load_with(
        BASE,
        &[
            ("LB_BACKENDS", "http://a.test"),
            ("HEROKU_API_KEY", "hk-SECRET-1"),
            ("PIPELINE_IDENTIFIER", "shop"),
        ],
    )
    .expect("static mode wins");
    assert!(matches!(settings.source, BackendSource::Static(_)));
    let [warning] = settings.warnings.as_slice() else {
        panic!("one warning expected: {:?}", settings.warnings)
    };
    for name in ["LB_BACKENDS", "HEROKU_API_KEY", "PIPELINE_IDENTIFIER"] {
        assert!(warning.contains(name), "{warning}");
    }
    assert!(!warning.contains("hk-SECRET"), "{warning}");

    let yaml = format!("{BASE}heroku_lb:\n  backends: [\"http://a.test\"]\n");
    let settings = load_with(&yaml, &[("HEROKU_API_KEY", "k")]).expect("a key alone is ignored");
    assert!(matches!(settings.source, BackendSource::Static(_)));
    assert!(
        settings.warnings[0].contains("heroku_lb.backends")
            && settings.warnings[0].contains("HEROKU_API_KEY is ignored"),
        "{:?}",
        settings.warnings
    );

    let settings = load_with(BASE, &[("LB_BACKENDS", "http://a.test")]).expect("static");
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
}
