//! Build script: records the commit heroku-lb is built from, for
//! `heroku-lb --version` and the `heroku_lb_build_info` metric.
//!
//! The commit comes from `SOURCE_VERSION` when the build sets it (a container
//! build has no `.git`; pass it as a build argument), else from `git` in the
//! source tree, else it is `unknown`. Rerun when HEAD moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_VERSION");
    let commit = std::env::var("SOURCE_VERSION")
        .ok()
        .map(|v| v.trim().chars().take(12).collect::<String>())
        .filter(|v| !v.is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            Some(if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            })
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=HEROKU_LB_COMMIT={commit}");
    // Only files that exist: a missing one would rerun this script every build.
    for path in ["HEAD", "index"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(file) = git(&["rev-parse", "--git-path", &branch]) {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
}
