//! The command line a new user tries first: `--version` prints the version
//! and the commit, `--help` names heroku-lb, explains the flags and lists
//! the environment variables; both exit 0 without starting anything.

mod common;

use common::lb::{LbBuilder, EXIT_TIMEOUT};

/// `heroku-lb --version` prints `heroku-lb <version> (commit <id>)` and exits 0.
#[test]
fn version_prints_the_version_and_commit_and_exits_0() {
    for flag in ["--version", "-V"] {
        let exit = LbBuilder::new().arg(flag).run_to_exit(EXIT_TIMEOUT);
        assert!(exit.status.success(), "{flag}: {exit:?}");
        let line = exit.stdout.trim();
        assert!(
            line.starts_with(&format!("heroku-lb {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{flag}: {line}"
        );
        assert!(!line.contains("(commit )"), "an empty commit: {line}");
    }
}

/// `heroku-lb --help` names the program (not Pingora's "basic"), explains
/// each flag and lists every variable, and exits 0 without listening.
#[test]
fn help_explains_the_flags_and_lists_the_variables() {
    let exit = LbBuilder::new().arg("--help").run_to_exit(EXIT_TIMEOUT);
    assert!(exit.status.success(), "{exit:?}");
    let text = &exit.stdout;
    assert!(text.starts_with("heroku-lb "), "{text}");
    assert!(!text.contains("basic"), "{text}");
    for flag in ["-c, --conf", "-t, --test", "-d, --daemon", "-u, --upgrade"] {
        assert!(text.contains(flag), "{flag} missing:\n{text}");
    }
    for name in heroku_lb::config::env::ALL {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(
        !text.contains("heroku-lb listening on"),
        "it started: {text}"
    );
}

/// `heroku-lb --help | head -1`: a reader that closes the pipe early ends the output quietly, exit 0 and no panic, as other command line tools do.
#[test]
fn help_into_a_closed_pipe_exits_quietly() {
    for flag in ["--help", "--version"] {
        // A pipe whose reading end is closed before the program writes: every
        // write fails with EPIPE, as after `head -1` has exited.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_heroku-lb"))
            .arg(flag)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run heroku-lb");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{flag} into a closed pipe: {:?}; stderr:\n{stderr}",
            output.status
        );
        assert!(!stderr.contains("panicked"), "{flag}: {stderr}");
    }
}
