//! A small Dockerfile reader for the tests that check the shipped image:
//! instructions (comments dropped, `\` continuations joined), build stages,
//! COPY's parts, image paths, and where a file in the image comes from in the
//! repository. Files are read from the repository root.

use std::path::{Component, Path, PathBuf};

/// The repository root (where `Cargo.toml`, `app.json` and the Dockerfile are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of `name` at the repository root.
pub fn read_repo_file(name: &str) -> String {
    let path = repo().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// One build stage: its `FROM` image, optional name and instructions.
#[derive(Debug, Default)]
pub struct Stage {
    pub image: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

/// Split a Dockerfile into instructions: comment lines dropped (also inside
/// continuations, as Docker does), `\` continuations joined.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (part, continues) = match trimmed.strip_suffix('\\') {
            Some(part) => (part.trim_end(), true),
            None => (trimmed, false),
        };
        if !pending.is_empty() {
            pending.push(' ');
        }
        pending.push_str(part);
        if !continues {
            let (keyword, args) = pending
                .split_once(char::is_whitespace)
                .unwrap_or((&pending, ""));
            out.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_string(),
            });
            pending.clear();
        }
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    out
}

/// The build stages of a Dockerfile, in order.
pub fn stages(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(text) {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                image: words.first().expect("FROM names an image").to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{} before any FROM", instruction.keyword))
                .instructions
                .push(instruction);
        }
    }
    stages
}

/// `--flag=value` options and the remaining words of a COPY.
pub fn copy_parts(args: &str) -> (Vec<String>, Vec<String>) {
    let words: Vec<String> = if args.starts_with('[') {
        serde_json::from_str(args).expect("COPY in JSON form is a JSON array of strings")
    } else {
        args.split_whitespace().map(str::to_string).collect()
    };
    words.into_iter().partition(|w| w.starts_with("--"))
}

/// `path` joined to `base` when relative, with `.` and `..` resolved.
pub fn container_path(base: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in base.join(path).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            _ => {}
        }
    }
    out
}

/// Where a file at `target` in the image comes from in the repository,
/// following the runtime stage's WORKDIR and COPY (not `--from`) lines.
pub fn repo_source_of(stage: &Stage, target: &Path) -> Option<PathBuf> {
    let mut workdir = PathBuf::from("/");
    let mut found = None;
    for instruction in &stage.instructions {
        match instruction.keyword.as_str() {
            "WORKDIR" => workdir = container_path(&workdir, &instruction.args),
            "COPY" | "ADD" => {
                let (flags, mut words) = copy_parts(&instruction.args);
                if flags.iter().any(|f| f.starts_with("--from")) || words.len() < 2 {
                    continue;
                }
                let dest_raw = words.pop().expect("checked above");
                let dest = container_path(&workdir, &dest_raw);
                for source in &words {
                    let in_repo = repo().join(source);
                    let candidate = if in_repo.is_dir() {
                        target
                            .strip_prefix(&dest)
                            .ok()
                            .map(|rest| PathBuf::from(source).join(rest))
                    } else if dest_raw.ends_with('/') || words.len() > 1 {
                        Path::new(source)
                            .file_name()
                            .filter(|name| dest.join(name) == target)
                            .map(|_| PathBuf::from(source))
                    } else {
                        (dest == target).then(|| PathBuf::from(source))
                    };
                    if candidate.is_some() {
                        found = candidate;
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// The runtime (last) stage of the shipped Dockerfile, and all stages.
pub fn dockerfile() -> Vec<Stage> {
    let stages = stages(&read_repo_file("Dockerfile"));
    assert!(!stages.is_empty(), "the Dockerfile has no FROM");
    stages
}

/// The last `keyword` instruction of `stage`, if any.
pub fn last<'a>(stage: &'a Stage, keyword: &str) -> Option<&'a Instruction> {
    stage
        .instructions
        .iter()
        .rev()
        .find(|i| i.keyword == keyword)
}
