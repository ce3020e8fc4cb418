//! Where every log line goes: stdout, one line each, for Heroku's logplex,
//! through a bounded buffer that a writer thread of its own empties at least
//! every flush interval ([`DEFAULT_FLUSH_INTERVAL`], `log_flush_interval_seconds`)
//! and as soon as it holds [`FLUSH_BYTES`].
//!
//! Input: the `log` crate's records (ours, Pingora's), formatted by
//! env_logger; `RUST_LOG` sets the level (default `info`, which includes one
//! request line per request, `proxy/access_log.rs`). Output: stdout.
//!
//! Why a buffer: env_logger writes each record with its own `write` system
//! call under the stdout lock, about 3.4 µs per request line on the
//! benchmark's machine, 15 % of a request's cost. Here a line is appended to
//! a buffer in memory and the writer thread writes batches.
//!
//! Why a writer thread, and why lines are dropped: a write to a pipe blocks
//! while the pipe is full, and a log pipe stalls (logplex backs up, a
//! `heroku logs` reader pauses, a supervisor stops reading). No worker
//! thread ever writes to stdout or waits for the writer: the writer takes
//! the whole buffer under the lock and writes it after letting go. When the
//! buffer holds [`MAX_PENDING_BYTES`] because stdout does not keep up, new
//! lines are dropped and counted ([`dropped_total`], the metric
//! `heroku_lb_log_lines_dropped_total`), and one line saying how many is
//! written after the last line kept, once stdout takes it. Lines other than
//! request lines (start-up, warnings, health and discovery events: few) wake
//! the writer at once, so an operator reading the log sees them promptly,
//! after every request line before them.
//!
//! Nothing is lost at shutdown when stdout keeps up: Pingora's `Server::run`
//! returns after SIGTERM (graceful) and SIGINT (fast) alike, and `main.rs`
//! then calls [`flush`], which waits (a bounded time) for the writer to write
//! everything; error paths that exit early call it too. Daemon mode forks
//! after logging starts and the writer thread would not survive the fork, so
//! [`write_through`] switches back to a write per record first.
//!
//! Other crates' debug and trace records are dropped whatever `RUST_LOG`
//! says: Pingora prints whole request and response headers at those levels
//! (`Authorization`, cookies), and secrets must never reach a log line.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest a request line waits in the buffer, unless
/// `log_flush_interval_seconds` says otherwise.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A buffer this full wakes the writer at once.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// Above this many bytes waiting for stdout, new lines are dropped: 1 MiB,
/// about 4,000 request lines, several seconds of a busy balancer's log.
pub const MAX_PENDING_BYTES: usize = 1024 * 1024;

/// How long [`flush`] waits for stdout to take what is pending.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// The buffer shared by the logger, the writer thread and [`flush`].
static OUTPUT: OnceLock<Arc<BufferedStdout>> = OnceLock::new();

/// Lines dropped since start because stdout did not keep up.
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Lines waiting for stdout, and what the writer is doing.
struct BufferedStdout {
    pending: Mutex<Pending>,
    /// Wakes the writer before its interval is up.
    wake: Condvar,
    /// Tells [`flush`] that a batch was written.
    written: Condvar,
    /// Write each record at once, on the caller's thread (daemon mode, or
    /// the writer thread could not start).
    direct: AtomicBool,
    /// Lines start with a timestamp (off Heroku; logplex adds its own).
    timestamps: bool,
    /// The last timestamp written: (Unix second, its text).
    stamp: Mutex<(u64, String)>,
    /// The writer's interval, in milliseconds (`log_flush_interval_seconds`).
    interval_ms: AtomicU64,
}

/// The state behind `BufferedStdout::pending`; never held during a write.
#[derive(Default)]
struct Pending {
    /// Text, so a request line is formatted straight into it (`fmt::Write`).
    text: String,
    /// Lines dropped since the last batch was taken (reported after it).
    dropped: u64,
    /// A line other than a request line waits: write without waiting.
    urgent: bool,
    /// The writer holds a batch it is writing.
    writing: bool,
}

impl BufferedStdout {
    fn new(timestamps: bool) -> Self {
        BufferedStdout {
            pending: Mutex::new(Pending {
                text: String::with_capacity(2 * FLUSH_BYTES),
                ..Pending::default()
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
            direct: AtomicBool::new(false),
            timestamps,
            stamp: Mutex::new((0, String::new())),
            interval_ms: AtomicU64::new(DEFAULT_FLUSH_INTERVAL.as_millis() as u64),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `pending` may take `more` bytes; counts a dropped line if not.
    fn room_for(pending: &mut Pending, more: usize) -> bool {
        if pending.text.len() + more <= MAX_PENDING_BYTES {
            return true;
        }
        pending.dropped += 1;
        DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Append a record other than a request line and wake the writer: such
    /// lines are few, and whoever reads the log should see them at once.
    fn append_now(&self, data: &[u8]) {
        let mut pending = self.lock();
        if !Self::room_for(&mut pending, data.len()) {
            return;
        }
        // env_logger hands over whole UTF-8 records; anything else is kept readable.
        pending.text.push_str(&String::from_utf8_lossy(data));
        if self.direct.load(Ordering::Relaxed) {
            write_out(&mut pending.text);
            return;
        }
        pending.urgent = true;
        drop(pending);
        self.wake.notify_one();
    }

    /// Append one line: the timestamp when lines carry one, what `write`
    /// writes, `\n`. Never writes to stdout itself (but in direct mode).
    fn append_line(&self, write: &dyn Fn(&mut String)) {
        let mut pending = self.lock();
        // A full buffer drops the line without formatting it.
        if !Self::room_for(&mut pending, 1) {
            return;
        }
        let before = pending.text.len();
        if self.timestamps {
            // As env_logger writes its timestamps, so all lines look alike;
            // made once a second.
            let now = SystemTime::now();
            let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let mut stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if stamp.0 != second || stamp.1.is_empty() {
                *stamp = (second, crate::time::rfc3339(now));
            }
            pending.text.push_str(&stamp.1);
            pending.text.push(' ');
        }
        write(&mut pending.text);
        pending.text.push('\n');
        if pending.text.len() > MAX_PENDING_BYTES {
            // The line did not fit after all.
            pending.text.truncate(before);
            pending.dropped += 1;
            DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.direct.load(Ordering::Relaxed) {
            write_out(&mut pending.text);
        } else if pending.text.len() >= FLUSH_BYTES {
            drop(pending);
            self.wake.notify_one();
        }
    }

    /// The writer thread: wait for the interval, a full buffer or an urgent
    /// line; take the whole buffer; write it with the lock let go.
    fn write_forever(&self) {
        let mut spare = String::with_capacity(2 * FLUSH_BYTES);
        loop {
            let mut pending = self.lock();
            let interval = Duration::from_millis(self.interval_ms.load(Ordering::Relaxed));
            let due = Instant::now() + interval;
            while !pending.urgent && pending.text.len() < FLUSH_BYTES {
                let left = due.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                pending = match self.wake.wait_timeout(pending, left) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            pending.urgent = false;
            if pending.text.is_empty() && pending.dropped == 0 {
                continue;
            }
            std::mem::swap(&mut pending.text, &mut spare);
            let dropped = std::mem::take(&mut pending.dropped);
            pending.writing = true;
            drop(pending);

            if dropped > 0 {
                // The lines dropped came after every line of this batch.
                use std::fmt::Write as _;
                let _ = writeln!(
                    spare,
                    "level=warn module=heroku_lb::logging dropped={dropped} log lines: stdout \
                     did not keep up (counted in heroku_lb_log_lines_dropped_total)"
                );
            }
            write_out(&mut spare);
            // A batch that grew large once does not keep its memory.
            if spare.capacity() > 4 * FLUSH_BYTES {
                spare = String::with_capacity(2 * FLUSH_BYTES);
            }

            self.lock().writing = false;
            self.written.notify_all();
        }
    }

    /// Have everything pending written, waiting at most `deadline`.
    fn flush(&self, deadline: Duration) {
        let mut pending = self.lock();
        if self.direct.load(Ordering::Relaxed) {
            write_out(&mut pending.text);
            return;
        }
        let until = Instant::now() + deadline;
        while !pending.text.is_empty() || pending.dropped > 0 || pending.writing {
            pending.urgent = true;
            self.wake.notify_one();
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            pending = match self.written.wait_timeout(pending, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
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
/// and the writer thread. `on_heroku` (`DYNO` is set) leaves the timestamp
/// to logplex. Request lines (`access_target`) are already logfmt and are
/// written as they are.
pub fn init(on_heroku: bool, access_target: &'static str) {
    let output = Arc::new(BufferedStdout::new(!on_heroku));
    let output = Arc::clone(OUTPUT.get_or_init(|| output));
    let writer = Arc::clone(&output);
    let started = std::thread::Builder::new()
        .name("log writer".into())
        .spawn(move || writer.write_forever());
    if started.is_err() {
        // No thread, no timely writes: write each record instead.
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

/// How long a request line may wait in the buffer (`log_flush_interval_seconds`),
/// at least 1 ms. Takes effect from the writer's next wait.
pub fn set_flush_interval(interval: Duration) {
    if let Some(output) = OUTPUT.get() {
        let ms = interval.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        output.interval_ms.store(ms, Ordering::Relaxed);
    }
}

/// Write one request line (`proxy/access_log.rs`) straight into the buffer,
/// in the format env_logger gives every other line. The caller has checked
/// with `log_enabled!` that `RUST_LOG` lets the line through; going around
/// env_logger's record, its own buffer and its writer's lock halves what a
/// request line costs. Before [`init`] (unit tests) the line goes through
/// `log` as any other.
pub fn request_line(target: &'static str, level: log::Level, write: &dyn Fn(&mut String)) {
    match OUTPUT.get() {
        Some(output) => output.append_line(write),
        None => {
            let mut line = String::new();
            write(&mut line);
            log::log!(target: target, level, "{line}");
        }
    }
}

/// Write out every line logged so far, waiting at most a few seconds for a
/// stalled stdout. Called before the process exits.
pub fn flush() {
    if let Some(output) = OUTPUT.get() {
        output.flush(FLUSH_DEADLINE);
    }
}

/// From now on write each record at once (before daemonizing: a forked
/// child has no writer thread).
pub fn write_through() {
    if let Some(output) = OUTPUT.get() {
        output.flush(FLUSH_DEADLINE);
        output.direct.store(true, Ordering::Relaxed);
    }
}

/// Log lines dropped since start because stdout did not keep up (for the
/// metric `heroku_lb_log_lines_dropped_total`).
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(direct: bool, timestamps: bool) -> BufferedStdout {
        let output = BufferedStdout::new(timestamps);
        output.direct.store(direct, Ordering::Relaxed);
        output
    }

    fn text(output: &BufferedStdout) -> String {
        output.lock().text.clone()
    }

    #[test]
    fn a_request_line_gets_the_timestamp_only_off_heroku() {
        let off = buffer(false, true);
        off.append_line(&|text: &mut String| text.push_str("at=info method=GET"));
        let text_off = text(&off);
        let (stamp, rest) = text_off.split_once(' ').expect("a timestamp");
        assert!(stamp.ends_with('Z') && stamp.len() == 20, "{text_off}");
        assert_eq!(rest, "at=info method=GET\n");
        let on = buffer(false, false);
        on.append_line(&|text: &mut String| text.push_str("at=info method=GET"));
        assert_eq!(text(&on), "at=info method=GET\n");
    }

    #[test]
    fn request_lines_wait_in_order_and_nothing_on_the_request_path_writes() {
        let output = buffer(false, false);
        output.append_line(&|text: &mut String| text.push_str("first"));
        output.append_line(&|text: &mut String| text.push_str("second"));
        assert_eq!(text(&output), "first\nsecond\n");
        // Past the wake-up size nothing is written here: that is the writer's job.
        output.append_line(&|text: &mut String| text.push_str(&"x".repeat(FLUSH_BYTES)));
        assert!(text(&output).starts_with("first\nsecond\nxxx"));
        // An urgent line too only wakes the writer.
        output.append_now(b"level=warn something\n");
        assert!(output.lock().urgent);
        assert!(text(&output).ends_with("level=warn something\n"));
    }

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them() {
        let output = buffer(false, false);
        let line = "y".repeat(999);
        let fits = MAX_PENDING_BYTES / 1000;
        let before = dropped_total();
        for _ in 0..fits + 7 {
            output.append_line(&|text: &mut String| text.push_str(&line));
        }
        // 1,048,000 bytes are kept; 600 more do not fit in 1 MiB.
        output.append_now("w".repeat(600).as_bytes());
        let pending = output.lock();
        assert!(pending.text.len() <= MAX_PENDING_BYTES);
        assert_eq!(pending.text.len(), fits * 1000);
        assert_eq!(pending.dropped, 8);
        assert!(dropped_total() >= before + 8);
    }

    #[test]
    fn in_direct_mode_nothing_stays_pending() {
        let direct = buffer(true, false);
        direct.append_line(&|text: &mut String| text.push_str("request"));
        direct.append_now(b"level=warn something\n");
        assert!(text(&direct).is_empty());
    }

    #[test]
    fn the_writer_empties_the_buffer_and_flush_waits_for_it() {
        let output = Arc::new(buffer(false, false));
        let writer = Arc::clone(&output);
        std::thread::spawn(move || writer.write_forever());
        output.append_line(&|text: &mut String| text.push_str("written by the writer thread"));
        output.flush(Duration::from_secs(5));
        let pending = output.lock();
        assert!(pending.text.is_empty() && !pending.writing);
    }
}
