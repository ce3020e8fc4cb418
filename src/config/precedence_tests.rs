//! Every row of `table::SETTINGS`, driven through `load()`: its variable beats
//! its key, its key beats the default, the default is the table's, and a bad
//! value of the variable is an error naming it. A row without a case here, or
//! a case whose setting `build.rs` does not read, fails.

use super::table::{Key, SETTINGS};
use super::*;

/// The setting as loaded, as text.
type Read = fn(&Settings, &ServerConf) -> String;

struct Case {
    var: &'static str,
    /// Other variables the setting needs to be read at all (pipeline mode, a sticky cookie).
    context: &'static [(&'static str, &'static str)],
    /// A value for the variable, and what it reads as.
    env: (&'static str, &'static str),
    /// A value (YAML) for the key, and what it reads as; `None` for variables without a key.
    file: Option<(&'static str, &'static str)>,
    /// The key's value in the "variable beats key" round, when `file`'s would
    /// read the same as the variable's (booleans, two-valued choices).
    file_against_env: Option<&'static str>,
    /// What reads when neither is set (an error reads as `error: CULPRIT`).
    default: &'static str,
    /// A value the variable refuses; `None` when every value is accepted.
    bad: Option<&'static str>,
    /// `None`: not read by `load()` (the logger reads `RUST_LOG`).
    read: Option<Read>,
}

const PIPELINE: &[(&str, &str)] = &[("HEROKU_API_KEY", "hk-k"), ("PIPELINE_IDENTIFIER", "p")];
const STICKY: &[(&str, &str)] = &[("LB_STICKY_COOKIE", "lb")];
const QUEUED: &[(&str, &str)] = &[("LB_MAX_IN_FLIGHT_PER_DYNO", "8")];
const WEBHOOKS: &[(&str, &str)] = &[
    ("HEROKU_API_KEY", "hk-k"),
    ("PIPELINE_IDENTIFIER", "p"),
    ("LB_WEBHOOK_SECRET", "whsec"),
];

fn pipeline(settings: &Settings) -> &PipelineSettings {
    match &settings.source {
        BackendSource::Pipeline(pipeline) => pipeline,
        other => panic!("expected pipeline mode, got {other:?}"),
    }
}

fn ca(name: &str) -> String {
    format!("{}/tests/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    fn case(var: &'static str, env: (&'static str, &'static str), file: (&'static str, &'static str), default: &'static str, bad: &'static str, read: Read) -> Case {
        Case { var, context: &[], env, file: Some(file), file_against_env: None, default, bad: Some(bad), read: Some(read) }
    }
    fn in_pipeline(mut case: Case) -> Case {
        case.context = PIPELINE;
        case
    }
    vec![
        case("PORT", ("9100", "9100"), ("9000", "9000"), "8080", "notaport", |s, _| s.listen_port.to_string()),
        case("LB_LISTEN_HOST", ("127.0.0.2", "127.0.0.2:8080"), ("127.0.0.3", "127.0.0.3:8080"), "0.0.0.0:8080", "nohost", |s, _| s.listen.clone()),
        case("LB_BACKENDS", ("https://env.test", "[https://env.test]"), ("[\"https://file.test\"]", "[https://file.test]"), "demo", "ftp://x", |s, _| match &s.source {
            BackendSource::Static(urls) => format!("[{}]", urls.iter().map(|url| url.to_string()).collect::<Vec<_>>().join(", ")),
            BackendSource::Demo => "demo".to_string(),
            other => format!("{other:?}"),
        }),
        Case { var: "HEROKU_API_KEY", context: &[("PIPELINE_IDENTIFIER", "p")], env: ("hk-env", "hk-env"), file: None, file_against_env: None, default: "error: HEROKU_API_KEY", bad: None, read: Some(|s, _| pipeline(s).api_key.expose().to_string()) },
        Case { var: "PIPELINE_IDENTIFIER", context: &[("HEROKU_API_KEY", "hk-k")], env: ("env-p", "env-p"), file: Some(("file-p", "file-p")), file_against_env: None, default: "error: PIPELINE_IDENTIFIER", bad: None, read: Some(|s, _| pipeline(s).pipeline.clone()) },
        in_pipeline(case("PIPELINE_STAGE", ("staging", "staging"), ("review", "review"), "production", "prod", |s, _| pipeline(s).stage.clone())),
        in_pipeline(case("HEROKU_API_URL", ("http://127.0.0.1:1", "http://127.0.0.1:1"), ("http://127.0.0.1:2/", "http://127.0.0.1:2"), "https://api.heroku.com", "ftp://x", |s, _| pipeline(s).api_url.clone())),
        in_pipeline(case("DISCOVERY_INTERVAL", ("7", "7s"), ("8", "8s"), "30s", "soon", |s, _| format!("{:?}", pipeline(s).interval))),
        in_pipeline(case("LB_APP_REFRESH_INTERVAL_SECONDS", ("60", "60s"), ("120", "120s"), "600s", "0", |s, _| format!("{:?}", pipeline(s).app_refresh_interval))),
        in_pipeline(case("LB_RATE_LIMIT_RESERVE", ("100", "100"), ("200", "200"), "500", "-5", |s, _| pipeline(s).rate_limit_reserve.to_string())),
        in_pipeline(Case { file_against_env: Some("true"), ..case("LB_WEIGHT_BY_DYNOS", ("false", "false"), ("false", "false"), "true", "sometimes", |s, _| pipeline(s).weight_by_dynos.to_string()) }),
        in_pipeline(case("LB_API_TIMEOUT_SECONDS", ("3", "3s"), ("4", "4s"), "10s", "x", |s, _| format!("{:?}", pipeline(s).api_timeout))),
        case("LB_RESOLVE", ("a.test=127.0.0.2", "Some(127.0.0.2)"), ("{a.test: 127.0.0.3}", "Some(127.0.0.3)"), "None", "a.test", |s, _| format!("{:?}", s.resolve_pins.get("a.test"))),
        case("LB_RESOLVE_INTERVAL_SECONDS", ("7", "7s"), ("8", "8s"), "30s", "soon", |s, _| format!("{:?}", s.resolve_interval)),
        case("HEALTH_CHECK_INTERVAL", ("7", "7s"), ("8", "8s"), "5s", "x", |s, _| format!("{:?}", s.health.interval)),
        case("HEALTH_CHECK_PATH", ("/env", "/env"), ("/file", "/file"), "/", "health", |s, _| s.health.path.clone()),
        case("LB_HEALTH_CHECK_TIMEOUT_SECONDS", ("3", "3s"), ("4", "4s"), "2s", "0", |s, _| format!("{:?}", s.health.timeout)),
        case("LB_HEALTH_CHECK_RISE", ("3", "3"), ("4", "4"), "2", "0", |s, _| s.health.rise.to_string()),
        case("LB_HEALTH_CHECK_FALL", ("3", "3"), ("4", "4"), "2", "many", |s, _| s.health.fall.to_string()),
        case("LB_HEALTH_CHECK_STATUSES", ("2xx, 304", "[(200, 299), (304, 304)]"), ("[\"2xx\", 301]", "[(200, 299), (301, 301)]"), "[(200, 299), (300, 399)]", "6xx", |s, _| format!("{:?}", s.health.statuses)),
        case("LB_PASSIVE_5XX_THRESHOLD", ("0", "0"), ("4", "4"), "5", "-1", |s, _| s.health.passive_5xx_threshold.to_string()),
        case("LB_MAX_EJECTION_PERCENT", ("10", "10"), ("20", "20"), "50", "150", |s, _| s.health.max_ejection_percent.to_string()),
        Case { var: "LB_WEBHOOK_SECRET", context: PIPELINE, env: ("whsec-env", "whsec-env"), file: None, file_against_env: None, default: "none", bad: None, read: Some(|s, _| pipeline(s).webhooks.as_ref().map_or("none".to_string(), |w| String::from_utf8_lossy(&w.secret).into_owned())) },
        Case { context: WEBHOOKS, ..case("LB_WEBHOOK_URL", ("https://lb.example.com/", "Some(\"https://lb.example.com\")"), ("https://file.example.com", "Some(\"https://file.example.com\")"), "None", "ftp://x", |s, _| format!("{:?}", pipeline(s).webhooks.as_ref().and_then(|w| w.public_url.clone()))) },
        case("LB_SLOW_START_SECONDS", ("0", "0ns"), ("10", "10s"), "30s", "-1", |s, _| format!("{:?}", s.slow_start)),
        case("LB_DRAIN_TIMEOUT_SECONDS", ("5", "5s"), ("10", "10s"), "30s", "soon", |s, _| format!("{:?}", s.drain_timeout)),
        case("LB_RETRY_5XX_WITHIN_MS", ("0", "0ns"), ("500", "500ms"), "1s", "-1", |s, _| format!("{:?}", s.upstream.retry_5xx_within)),
        case("LB_CONNECT_TIMEOUT_SECONDS", ("3", "3s"), ("4", "4s"), "5s", "x", |s, _| format!("{:?}", s.upstream.connect_timeout)),
        case("LB_FIRST_BYTE_TIMEOUT_SECONDS", ("10", "10s"), ("20", "20s"), "30s", "-3", |s, _| format!("{:?}", s.upstream.first_byte_timeout)),
        case("LB_IDLE_TIMEOUT_SECONDS", ("10", "10s"), ("20", "20s"), "55s", "nan", |s, _| format!("{:?}", s.upstream.idle_timeout)),
        case("LB_CONNECT_RETRIES", ("0", "0"), ("1", "1"), "2", "many", |s, _| s.upstream.connect_retries.to_string()),
        Case { var: "SSL_CERT_FILE", context: &[], env: (leak(ca("ca.pem")), "ca.pem"), file: Some((leak(ca("other-ca.pem")), "other-ca.pem")), file_against_env: None, default: "None", bad: Some("/nonexistent/ca.pem"), read: Some(|_, conf| match &conf.ca_file {
            Some(path) => path.rsplit('/').next().unwrap_or_default().to_string(),
            None => "None".to_string(),
        }) },
        Case { file_against_env: Some("round_robin"), ..case("LB_POLICY", ("least_connections", "LeastConnections"), ("least_connections", "LeastConnections"), "RoundRobin", "fastest", |s, _| format!("{:?}", s.policy)) },
        case("LB_MAX_IN_FLIGHT_PER_DYNO", ("4", "Some(4)"), ("6", "Some(6)"), "None", "0", |s, _| format!("{:?}", s.queueing.as_ref().map(|q| q.max_in_flight_per_dyno))),
        Case { context: QUEUED, ..case("LB_QUEUE_TIMEOUT_SECONDS", ("3", "3s"), ("0", "0ns"), "10s", "soon", |s, _| format!("{:?}", s.queueing.as_ref().map(|q| q.timeout).unwrap_or_default())) },
        Case { context: QUEUED, ..case("LB_QUEUE_MAX", ("50", "50"), ("60", "60"), "1000", "-1", |s, _| s.queueing.as_ref().map_or(0, |q| q.max).to_string()) },
        case("LB_STICKY_COOKIE", ("env_c", "Some(\"env_c\")"), ("file_c", "Some(\"file_c\")"), "None", "bad name", |s, _| format!("{:?}", s.sticky.as_ref().map(|sticky| &sticky.cookie))),
        Case { context: STICKY, ..case("LB_STICKY_TTL", ("60", "Some(60s)"), ("120", "Some(120s)"), "None", "0", |s, _| format!("{:?}", s.sticky.as_ref().and_then(|sticky| sticky.ttl))) },
        Case { var: "LB_STICKY_SECRET", context: STICKY, env: ("hush", "hush"), file: None, file_against_env: None, default: "heroku-lb default sticky cookie key", bad: None, read: Some(|s, _| s.sticky.as_ref().map(|sticky| String::from_utf8_lossy(&sticky.secret).into_owned()).unwrap_or_default()) },
        case("LB_STATUS_TOKEN", ("env-token", "Some(\"env-token\")"), ("file-token", "Some(\"file-token\")"), "None", "   ", |s, _| format!("{:?}", s.status_token)),
        case("LB_ADMIN_PATH_PREFIX", ("/_env/", "/_env/"), ("/_file/", "/_file/"), "/_lb/", "lb", |s, _| s.admin_prefix.clone()),
        case("LB_TRUSTED_PROXIES", ("10.0.0.0/8,::1", "[10.0.0.0/8, ::1/128]"), ("[\"192.168.0.0/16\"]", "[192.168.0.0/16]"), "[]", "router", |s, _| format!("[{}]", s.trusted_proxies.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))),
        Case { file_against_env: Some("true"), ..case("LB_REWRITE_REDIRECTS", ("false", "false"), ("false", "false"), "true", "maybe", |s, _| s.rewrite_redirects.to_string()) },
        Case { var: "REDIS_URL", context: PIPELINE, env: ("redis://127.0.0.1:6379", "heroku-lb:p:production"), file: None, file_against_env: None, default: "none", bad: Some("http://127.0.0.1"), read: Some(|s, _| s.store.as_ref().map_or("none".to_string(), |store| store.namespace.clone())) },
        Case { var: "LB_STORE_URL", context: &[("LB_BACKENDS", "http://a.test"), ("REDIS_URL", "redis://127.0.0.1:1")], env: ("rediss://127.0.0.1:2", "rediss://127.0.0.1:2"), file: None, file_against_env: None, default: "redis://127.0.0.1:1", bad: Some("not a url"), read: Some(|s, _| s.store.as_ref().map_or(String::new(), |store| store.url.expose().to_string())) },
        case("LB_LOG_FLUSH_INTERVAL_SECONDS", ("2", "2s"), ("0.5", "500ms"), "100ms", "often", |s, _| format!("{:?}", s.log_flush_interval)),
        case("LB_THREADS", ("97", "97"), ("98", "98"), "cpus", "0", |_, conf| if conf.threads == super::default_threads() { "cpus".to_string() } else { conf.threads.to_string() }),
        case("LB_GRACE_PERIOD_SECONDS", ("12", "Some(12)"), ("8", "Some(8)"), "Some(10)", "30", |_, conf| format!("{:?}", conf.grace_period_seconds)),
        case("LB_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS", ("3", "Some(3)"), ("4", "Some(4)"), "Some(5)", "soon", |_, conf| format!("{:?}", conf.graceful_shutdown_timeout_seconds)),
        Case { var: "DYNO", context: &[("LB_BACKENDS", "http://a.test")], env: ("web.1", "Some(\"web.1\")"), file: None, file_against_env: None, default: "None", bad: None, read: Some(|s, _| format!("{:?}", s.dyno)) },
        Case { var: "RUST_LOG", context: &[], env: ("debug", ""), file: None, file_against_env: None, default: "", bad: None, read: None },
    ]
}

/// The test's own CA paths live as long as the test process.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// Load with `vars` and, when given, `value` (YAML) under the row's key.
fn load_case(
    key: Key,
    value: Option<&str>,
    vars: &[(&str, &str)],
) -> Result<(Settings, ServerConf), ConfigError> {
    let mut yaml = String::from("version: 1\n");
    match (key, value) {
        (Key::Section(key), Some(value)) => {
            yaml.push_str(&format!("heroku_lb:\n  {key}: {value}\n"))
        }
        (Key::Pingora(key), Some(value)) => yaml.push_str(&format!("{key}: {value}\n")),
        _ => {}
    }
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, yaml.as_bytes()).expect("temp file is writable");
    let env: HashMap<&str, &str> = vars.iter().copied().collect();
    load(file.path().to_str(), &env)
}

fn outcome(case: &Case, loaded: Result<(Settings, ServerConf), ConfigError>) -> String {
    match (loaded, case.read) {
        (Ok((settings, conf)), Some(read)) => read(&settings, &conf),
        (Ok(_), None) => String::new(),
        (Err(error), _) => format!("error: {}", error.culprit),
    }
}

/// Environment over file over default, for every variable in the table.
#[test]
fn every_variable_beats_its_key_which_beats_the_default() {
    let cases = cases();
    let mut failures = Vec::new();
    for setting in SETTINGS {
        let Some(case) = cases.iter().find(|case| case.var == setting.var) else {
            failures.push(format!(
                "{}: no precedence case; add one to precedence_tests.rs",
                setting.var
            ));
            continue;
        };
        let with_env: Vec<(&str, &str)> = case
            .context
            .iter()
            .copied()
            .chain([(case.var, case.env.0)])
            .collect();
        let mut check = |round: &str, got: String, want: &str| {
            if got != want {
                failures.push(format!(
                    "{} ({round}): got {got:?}, want {want:?}",
                    case.var
                ));
            }
        };
        match (setting.key, case.file) {
            (Key::None, None) => {
                check(
                    "variable",
                    outcome(case, load_case(setting.key, None, &with_env)),
                    case.env.1,
                );
            }
            (Key::None, Some(_)) | (_, None) => {
                check(
                    "key",
                    format!("{:?} with a file case {}", setting.key, case.file.is_some()),
                    "a file case exactly when the row has a key",
                );
                continue;
            }
            (key, Some((file_value, file_reads))) => {
                let contest = case.file_against_env.unwrap_or(file_value);
                check(
                    "variable over key",
                    outcome(case, load_case(key, Some(contest), &with_env)),
                    case.env.1,
                );
                check(
                    "key over default",
                    outcome(case, load_case(key, Some(file_value), case.context)),
                    file_reads,
                );
                if case.read.is_some() {
                    check(
                        "values differ",
                        (case.env.1 == case.default || file_reads == case.default).to_string(),
                        "false",
                    );
                }
            }
        }
        check(
            "default",
            outcome(case, load_case(setting.key, None, case.context)),
            case.default,
        );
    }
    for case in &cases {
        if super::table::setting(case.var).is_none() {
            failures.push(format!(
                "{}: a case for a variable the table does not list",
                case.var
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The table's default text is the default `load()` applies.
#[test]
fn the_table_defaults_are_the_loaded_defaults() {
    let cases = cases();
    let mut failures = Vec::new();
    for setting in SETTINGS {
        let Some(case) = cases.iter().find(|case| case.var == setting.var) else {
            continue;
        };
        if case.read.is_none() || setting.default.is_empty() {
            continue;
        }
        let as_variable: Vec<(&str, &str)> = case
            .context
            .iter()
            .copied()
            .chain([(setting.var, setting.default)])
            .collect();
        let got = outcome(case, load_case(setting.key, None, &as_variable));
        let default = outcome(case, load_case(setting.key, None, case.context));
        if got != default {
            failures.push(format!(
                "{}: the table's default {:?} reads {got:?}, the applied default {default:?}",
                setting.var, setting.default
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A bad value of each variable is an error naming that variable.
#[test]
fn a_bad_value_of_every_variable_names_it() {
    let mut failures = Vec::new();
    for case in cases() {
        let Some(bad) = case.bad else { continue };
        let key = super::table::setting(case.var)
            .map(|s| s.key)
            .unwrap_or(Key::None);
        let vars: Vec<(&str, &str)> = case
            .context
            .iter()
            .copied()
            .chain([(case.var, bad)])
            .collect();
        match load_case(key, None, &vars) {
            Ok(_) => failures.push(format!("{}={bad:?} was accepted", case.var)),
            Err(error) => {
                let named = error
                    .culprit
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|word| word == case.var);
                if !named {
                    failures.push(format!(
                        "{}={bad:?}: the error names {:?}",
                        case.var, error.culprit
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
