//! Where every log line goes: stdout, one line each, for Heroku's logplex,
//! through a buffer that is written out at least every
//! [`FLUSH_INTERVAL`] and whenever it holds [`FLUSH_BYTES`].
//!
//! Input: the `log` crate's records (ours, Pingora's), formatted by
//! env_logger; `RUST_LOG` sets the level (default `info`, which includes one
//! request line per request, `proxy/access_log.rs`). Output: stdout.
//!
//! Why a buffer: env_logger writes each record with its own `write` system
//! call under the stdout lock, about 3.4 µs per request line on the
//! benchmark's machine, 15 % of a request's cost. Here a request line is
//! appended to a buffer in memory; a flusher thread writes the buffer out
//! every 100 ms, and a line that fills it to 64 KiB writes it out at once.
//! Every other line (start-up, warnings, health and discovery events: few)
//! is written at once, after the request lines before it. Nothing is
//! lost at shutdown: Pingora's `Server::run` returns after SIGTERM (graceful)
//! and SIGINT (fast) alike, and `main.rs` then calls [`flush`] before the
//! process exits; error paths that exit early call it too. Daemon mode forks
//! after logging starts and the flusher thread would not survive the fork,
//! so [`write_through`] switches back to a write per record first.
//!
//! Other crates' debug and trace records are dropped whatever `RUST_LOG`
//! says: Pingora prints whole request and response headers at those levels
//! (`Authorization`, cookies), and secrets must never reach a log line.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A buffer this full is written out by the record that filled it.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// The buffer shared by the logger, the flusher thread and [`flush`].
static OUTPUT: OnceLock<Arc<BufferedStdout>> = OnceLock::new();

/// Lines waiting for stdout, and whether to wait at all.
struct BufferedStdout {
    /// Text, so a request line is formatted straight into it (`fmt::Write`).
    pending: Mutex<String>,
    /// Write each record at once (daemon mode, or the buffer was never set up).
    direct: AtomicBool,
    /// Lines start with a timestamp (off Heroku; logplex adds its own).
    timestamps: bool,
    /// The last timestamp written: (Unix second, its text).
    stamp: Mutex<(u64, String)>,
}

impl BufferedStdout {
    /// Append `data` and write everything out: other lines than request
    /// lines are few (start-up, warnings, health and discovery events), and
    /// an operator or a test reading the log sees them at once, with every
    /// request line before them. Writing happens under the lock, so lines
    /// keep their order.
    fn append_now(&self, data: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // env_logger hands over whole UTF-8 records; anything else is kept readable.
        pending.push_str(&String::from_utf8_lossy(data));
        write_out(&mut pending);
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        write_out(&mut pending);
    }

    /// Append one line: the timestamp when lines carry one, `line`, `\n`.
    fn append_line(&self, line: &dyn fmt::Display) {
        use std::fmt::Write as _;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if self.timestamps {
            // As env_logger writes its timestamps, so all lines look alike;
            // made once a second.
            let now = SystemTime::now();
            let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let mut stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if stamp.0 != second || stamp.1.is_empty() {
                *stamp = (second, crate::time::rfc3339(now));
            }
            pending.push_str(&stamp.1);
            pending.push(' ');
        }
        // Writing into a String cannot fail; a Display that fails leaves a partial line.
        let _ = writeln!(pending, "{line}");
        if pending.len() >= FLUSH_BYTES || self.direct.load(Ordering::Relaxed) {
            write_out(&mut pending);
        }
    }
}

/// Write `pending` to stdout and empty it (keeping its capacity). A failed
/// write (stdout closed) drops the lines: there is nowhere else to put them.
fn write_out(pending: &mut String) {
    if pending.is_empty() {
        return;
    }
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(pending.as_bytes());
    let _ = stdout.flush();
    pending.clear();
}

/// The writer env_logger is given, for every line but request lines.
struct LogWriter(Arc<BufferedStdout>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.append_now(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Set up the logger: env_logger with our format, writing into the buffer,
/// and the flusher thread. `on_heroku` (`DYNO` is set) leaves the timestamp
/// to logplex. Request lines (`access_target`) are already logfmt and are
/// written as they are.
pub fn init(on_heroku: bool, access_target: &'static str) {
    let output = Arc::new(BufferedStdout {
        pending: Mutex::new(String::with_capacity(2 * FLUSH_BYTES)),
        direct: AtomicBool::new(false),
        timestamps: !on_heroku,
        stamp: Mutex::new((0, String::new())),
    });
    let output = Arc::clone(OUTPUT.get_or_init(|| output));
    let flusher = Arc::clone(&output);
    let started = std::thread::Builder::new()
        .name("log flusher".into())
        .spawn(move || loop {
            std::thread::sleep(FLUSH_INTERVAL);
            flusher.flush();
        });
    if started.is_err() {
        // No thread, no timely flushes: write each record instead.
        output.direct.store(true, Ordering::Relaxed);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Pipe(Box::new(LogWriter(output))))
        .format(move |out, record| {
            if record.level() > log::Level::Info && !record.target().starts_with("heroku_lb") {
                return Ok(());
            }
            if !on_heroku {
                write!(out, "{} ", out.timestamp_seconds())?;
            }
            if record.target() == access_target {
                writeln!(out, "{}", record.args())
            } else {
                writeln!(
                    out,
                    "level={} module={} {}",
                    record.level().as_str().to_lowercase(),
                    record.target(),
                    record.args()
                )
            }
        })
        .init();
}

/// Write one request line (`proxy/access_log.rs`) straight into the buffer,
/// in the format env_logger gives every other line. The caller has checked
/// with `log_enabled!` that `RUST_LOG` lets the line through; going around
/// env_logger's record, its own buffer and its writer's lock halves what a
/// request line costs. Before [`init`] (unit tests) the line goes through
/// `log` as any other.
pub fn request_line(target: &'static str, level: log::Level, line: &dyn fmt::Display) {
    match OUTPUT.get() {
        Some(output) => output.append_line(line),
        None => log::log!(target: target, level, "{line}"),
    }
}

/// Write out every line logged so far. Called before the process exits.
pub fn flush() {
    if let Some(output) = OUTPUT.get() {
        output.flush();
    }
}

/// From now on write each record at once (before daemonizing: a forked
/// child has no flusher thread).
pub fn write_through() {
    if let Some(output) = OUTPUT.get() {
        output.direct.store(true, Ordering::Relaxed);
        output.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(direct: bool, timestamps: bool) -> BufferedStdout {
        BufferedStdout {
            pending: Mutex::new(String::new()),
            direct: AtomicBool::new(direct),
            timestamps,
            stamp: Mutex::new((0, String::new())),
        }
    }

    #[test]
    fn a_request_line_gets_the_timestamp_only_off_heroku() {
        let off = buffer(false, true);
        off.append_line(&"at=info method=GET");
        let text = off.pending.lock().expect("unpoisoned").clone();
        let (stamp, rest) = text.split_once(' ').expect("a timestamp");
        assert!(stamp.ends_with('Z') && stamp.len() == 20, "{text}");
        assert_eq!(rest, "at=info method=GET\n");
        let on = buffer(false, false);
        on.append_line(&"at=info method=GET");
        assert_eq!(
            on.pending.lock().expect("unpoisoned").as_str(),
            "at=info method=GET\n"
        );
    }

    #[test]
    fn request_lines_wait_until_the_buffer_is_full_and_keep_their_order() {
        let output = buffer(false, false);
        output.append_line(&"first");
        output.append_line(&"second");
        assert_eq!(
            output.pending.lock().expect("unpoisoned").as_str(),
            "first\nsecond\n"
        );
        // Filling it writes it out (to this test's stdout) and empties it.
        output.append_line(&"x".repeat(FLUSH_BYTES));
        assert!(output.pending.lock().expect("unpoisoned").is_empty());
    }

    #[test]
    fn other_lines_and_write_through_leave_nothing_pending() {
        let output = buffer(false, false);
        output.append_line(&"request");
        output.append_now(b"level=warn something\n");
        assert!(output.pending.lock().expect("unpoisoned").is_empty());
        let direct = buffer(true, false);
        direct.append_line(&"request");
        assert!(direct.pending.lock().expect("unpoisoned").is_empty());
    }
}
