//! The built binary run the way the Dockerfile's CMD runs it in the image:
//! the files the runtime stage COPYs laid out under a tempdir "image root",
//! the CMD's arguments with their image paths rewritten into that root, the
//! WORKDIR as the current directory, an environment of only `PATH`, `PORT`
//! and config vars heroku-lb reads, and (when the tests run as root) an
//! unprivileged uid/gid, as Heroku never runs a container as root.

mod common;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::dockerfile::{container_path, copy_parts, dockerfile, repo};

/// The uid/gid the balancer runs as when the tests run as root (`nobody`).
const UNPRIVILEGED: u32 = 65534;
/// Heroku's SIGKILL comes 30 s after SIGTERM.
const SIGKILL_AFTER: Duration = Duration::from_secs(30);

/// The parts of the Dockerfile's runtime (last) stage that say how it runs.
#[derive(Debug, Default)]
struct RuntimeStage {
    workdir: PathBuf,
    /// (repository source, absolute destination in the image) of each COPY without --from.
    copies: Vec<(PathBuf, PathBuf)>,
    cmd: Vec<String>,
}

/// Read the runtime (last) stage of the shipped Dockerfile.
fn runtime_stage() -> RuntimeStage {
    let stages = dockerfile();
    let last = stages.last().expect("the Dockerfile has a stage");
    let mut stage = RuntimeStage {
        workdir: PathBuf::from("/"),
        ..RuntimeStage::default()
    };
    for instruction in &last.instructions {
        let args = instruction.args.as_str();
        match instruction.keyword.as_str() {
            "WORKDIR" => stage.workdir = container_path(&stage.workdir, args),
            "COPY" => {
                let (flags, words) = copy_parts(args);
                if flags.iter().any(|w| w.starts_with("--from")) {
                    continue;
                }
                let (dest, sources) = words.split_last().expect("COPY has a destination");
                let dest = container_path(&stage.workdir, dest);
                for source in sources {
                    stage.copies.push((PathBuf::from(source), dest.clone()));
                }
            }
            "CMD" => {
                stage.cmd = serde_json::from_str(args)
                    .unwrap_or_else(|e| panic!("CMD {args} is not in exec form: {e}"))
            }
            _ => {}
        }
    }
    assert!(
        !stage.cmd.is_empty(),
        "the Dockerfile's runtime stage has no CMD"
    );
    stage
}

/// Copy a file or directory tree, making directories 0755 and files 0644.
fn copy_readable(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755 a directory we created");
        for entry in std::fs::read_dir(from).expect("read a repository directory") {
            let entry = entry.expect("a directory entry");
            copy_readable(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            make_dirs_readable(parent);
        }
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))
            .expect("chmod 0644 a file we created");
    }
}

/// `mkdir -p` with mode 0755 on every directory made.
fn make_dirs_readable(dir: &Path) {
    if dir.is_dir() {
        return;
    }
    if let Some(parent) = dir.parent() {
        make_dirs_readable(parent);
    }
    std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 a directory we created");
}

/// The real uid of this test process, from /proc/self/status.
fn current_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    uid_in_status(&status).expect("a Uid: line in /proc/self/status")
}

/// The real uid in a /proc/PID/status text.
fn uid_in_status(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// Panics unless `path` and every directory above it let "others" in.
fn assert_usable_by_others(path: &Path) {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode();
    assert!(
        mode & 0o005 == 0o005,
        "{} is mode {mode:o}: not readable and executable by others, so uid {UNPRIVILEGED} \
         cannot run it",
        path.display()
    );
    for dir in path.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()))
            .permissions()
            .mode();
        assert!(
            mode & 0o001 != 0,
            "{} is mode {mode:o}: others cannot traverse it to reach the binary",
            dir.display()
        );
    }
}

/// The declared variables of app.json's `env`.
/// A config var a user can set on Heroku: a variable in the code's settings
/// table (app.json's form asks only some of them).
fn is_config_var(name: &str) -> bool {
    heroku_lb::config::table::setting(name).is_some()
}

/// Kills the child if the test panics before reaping it.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Reaped {
    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("try_wait on our own child") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.0.try_wait().expect("try_wait on our own child")
    }
}

/// The Dockerfile's CMD, run as in the image, serves a proxied 200 and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_cmd_proxies_as_an_unprivileged_user_and_exits_cleanly_on_sigterm() {
    let stage = runtime_stage();
    println!("runtime stage: {stage:?}");
    let backend = TestBackend::start("container-app").await;

    // The image root: what the runtime stage's COPY lines put there.
    let tmp = tempfile::Builder::new()
        .prefix("heroku-lb-image-")
        .tempdir()
        .expect("create a tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the tempdir");
    let root = tmp.path().join("root");
    make_dirs_readable(&root);
    let in_root = |image_path: &Path| root.join(image_path.strip_prefix("/").unwrap_or(image_path));
    for (source, dest) in &stage.copies {
        let from = repo().join(source);
        let to = if from.is_file() && dest.to_string_lossy().ends_with('/') {
            in_root(dest).join(source.file_name().expect("a file has a name"))
        } else {
            in_root(dest)
        };
        copy_readable(&from, &to);
    }
    let workdir = in_root(&stage.workdir);
    make_dirs_readable(&workdir);

    // CMD: the program is the binary cargo built; image paths point into the root.
    let args: Vec<String> = stage.cmd[1..]
        .iter()
        .map(|arg| {
            if arg.starts_with('/') && in_root(Path::new(arg)).exists() {
                in_root(Path::new(arg)).display().to_string()
            } else {
                arg.clone()
            }
        })
        .collect();
    let conf = args
        .iter()
        .position(|a| a == "-c")
        .and_then(|i| args.get(i + 1))
        .expect("CMD passes -c <file>");
    assert!(
        Path::new(conf).is_file(),
        "CMD's config file {conf} is not in the image root: the COPY lines do not put it there"
    );

    // Only PATH, PORT and config vars heroku-lb reads.
    let port = common::free_port();
    let declared = [
        ("LB_BACKENDS", backend.url()),
        ("LB_LISTEN_HOST", "127.0.0.1".to_string()),
    ];
    for (name, _) in &declared {
        assert!(is_config_var(name), "heroku-lb reads no variable {name}");
    }
    let binary = Path::new(env!("CARGO_BIN_EXE_heroku-lb"));
    let mut command = Command::new(binary);
    command
        .args(&args)
        .current_dir(&workdir)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("PORT", port.to_string())
        .envs(declared.iter().map(|(k, v)| (k, v)));
    let as_root = current_uid() == 0;
    if as_root {
        assert_usable_by_others(binary);
        command.uid(UNPRIVILEGED).gid(UNPRIVILEGED);
    }
    let stdout_path = tmp.path().join("stdout.log");
    let stderr_path = tmp.path().join("stderr.log");
    command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("create stdout.log"))
        .stderr(File::create(&stderr_path).expect("create stderr.log"));
    println!(
        "running {} {args:?} in {} as uid {}",
        binary.display(),
        workdir.display(),
        if as_root { UNPRIVILEGED } else { current_uid() }
    );
    let mut child = Reaped(command.spawn().expect("spawn heroku-lb"));
    let logs = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };

    // Listening on PORT.
    let listening = common::poll_until(200, Duration::from_millis(50), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    if let Some(status) = child.0.try_wait().expect("try_wait") {
        panic!(
            "heroku-lb exited ({status}) instead of listening; {}",
            logs()
        );
    }
    assert!(listening, "heroku-lb never listened on {port}; {}", logs());

    if as_root {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))
            .expect("read the child's /proc status");
        assert_eq!(
            uid_in_status(&status),
            Some(UNPRIVILEGED),
            "the balancer is not running as uid {UNPRIVILEGED}"
        );
    }

    // A proxied request.
    let client = common::http_client();
    let reply = common::get(&client, &format!("http://127.0.0.1:{port}/from-container")).await;
    assert_eq!(reply.status, 200, "{reply:?}; {}", logs());
    assert_eq!(reply.body, backend.name());
    assert_eq!(backend.count_to("/from-container"), 1);

    // SIGTERM, then reaped before Heroku's SIGKILL.
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .expect("run kill -TERM");
    assert!(kill.success(), "kill -TERM failed");
    let status = child.wait_exit(SIGKILL_AFTER).await;
    let elapsed = signalled.elapsed();
    println!("SIGTERM to exit: {elapsed:?}, status {status:?}");
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {SIGKILL_AFTER:?} after SIGTERM: Heroku would SIGKILL it; {}",
            logs()
        )
    });
    assert!(status.success(), "exit status {status}; {}", logs());
    println!("{}", logs());
}
