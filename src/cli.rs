//! The command line: Pingora's own flags (`-c`, `-t`, `-d`, `-u`), parsed by
//! Pingora's `Opt`, plus `--version` and `--help` answered here.
//!
//! Pingora's parser names the program "basic", describes `-u` with text meant
//! for another flag and refuses `--version`, so main asks this module first:
//! these two flags print their text and exit 0 before Pingora sees the
//! command line. Everything else goes to Pingora unchanged.

use crate::config::table::SETTINGS;

/// `heroku-lb 0.2.0 (commit abc123def456)`
pub fn version() -> String {
    format!(
        "heroku-lb {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("HEROKU_LB_COMMIT")
    )
}

/// The `--help` text: what heroku-lb is, its flags, and every variable it reads.
pub fn help() -> String {
    let mut text = format!(
        "{}\n{}\n\n\
         USAGE:\n    heroku-lb [-c FILE] [-t] [-d] [-u]\n\n\
         FLAGS:\n\
         \x20   -c, --conf FILE   Pingora's YAML file with a heroku_lb: section of our own\n\
         \x20                     (see conf/pingora.yaml); without it, defaults and variables only\n\
         \x20   -t, --test        check the configuration, exit 0 if good, 2 naming the culprit if not\n\
         \x20   -d, --daemon      run in the background (not on Heroku)\n\
         \x20   -u, --upgrade     take over the listening socket of a running heroku-lb sent SIGQUIT\n\
         \x20   -h, --help        this text\n\
         \x20   -V, --version     the version and the commit it was built from\n\n\
         ENVIRONMENT (overrides the file; an empty variable counts as unset):\n",
        version(),
        env!("CARGO_PKG_DESCRIPTION"),
    );
    for setting in SETTINGS {
        let meaning = setting.meaning.replace('`', "");
        let default = match setting.default {
            "" => String::new(),
            default => format!(" [default: {default}]"),
        };
        text.push_str(&format!("    {:<38}{meaning}{default}\n", setting.var));
    }
    text.push_str(
        "\nRun with nothing configured for a demo on :8080 with three local backends.\n\
         Status: /_lb/status (JSON, HTML in a browser); metrics: /_lb/metrics.\n",
    );
    text
}

/// Print `text` to stdout. A reader that stops early (`heroku-lb --help |
/// head -1`) closes the pipe: that ends the output quietly, as other command
/// line tools do, instead of `println!`'s panic.
pub fn print(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
}

/// What to print and exit 0 with, when the arguments ask for `--version` or
/// `--help` (anywhere on the line, like most tools); `None` otherwise.
pub fn info_requested(args: &[String]) -> Option<String> {
    let args = args.get(1..).unwrap_or_default();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        Some(help())
    } else if args.iter().any(|arg| arg == "-V" || arg == "--version") {
        Some(version())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn version_names_the_program_version_and_commit() {
        let text = info_requested(&args(&["heroku-lb", "--version"])).expect("answered");
        assert!(text.starts_with(&format!("heroku-lb {} (commit ", env!("CARGO_PKG_VERSION"))));
        assert_eq!(info_requested(&args(&["heroku-lb", "-V"])), Some(text));
    }

    #[test]
    fn help_names_the_program_its_flags_and_every_variable() {
        let text = info_requested(&args(&["heroku-lb", "-c", "x.yaml", "--help"])).expect("help");
        assert!(text.contains("heroku-lb") && !text.contains("basic"));
        for flag in ["--conf", "--test", "--daemon", "--upgrade", "--version"] {
            assert!(text.contains(flag), "{flag}");
        }
        for name in crate::config::env::ALL {
            assert!(text.contains(name), "{name} missing from --help");
        }
    }

    #[test]
    fn other_arguments_go_to_pingora() {
        assert_eq!(
            info_requested(&args(&["heroku-lb", "-c", "conf/pingora.yaml"])),
            None
        );
        assert_eq!(info_requested(&args(&["heroku-lb"])), None);
    }
}
