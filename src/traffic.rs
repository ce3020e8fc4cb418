//! Recent traffic of one backend, for the status page: requests, 5xx answers
//! and upstream latency over the last ten minutes, in a ring of 10-second
//! buckets ([`TrafficWindow`]).
//!
//! Input: the proxy, through `TargetMetrics::count` (logging phase) and
//! `TargetMetrics::observe_latency` (response header), once per request each.
//! Output: [`TrafficFigures`] (requests per second and p50/p99 over the last
//! minute, 5xx per minute, the rate of each of the last ten minutes), read by
//! `status/` when it builds a snapshot.
//!
//! Prometheus keeps the cumulative series; this answers "what is happening
//! now" without a Prometheus server. Writes are a few relaxed atomic adds and
//! never lock. A bucket is recycled by the first writer of a new 10-second
//! slot; a write racing that reset may be lost or kept, which is fine for
//! figures meant for the eye. Percentiles come from a fixed log-scale
//! histogram (bounds √2 apart), so they are the bound of their bucket: at
//! most √2 above the real value. Rates are per second over whole windows, so
//! in a process's first minute `rps_1m` reads low.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Seconds per bucket.
const BUCKET_SECONDS: u64 = 10;
/// Buckets per minute.
const PER_MINUTE: u64 = 60 / BUCKET_SECONDS;
/// Minutes the ring covers (the sparkline's points).
pub const MINUTES: usize = 10;
const BUCKETS: usize = MINUTES * PER_MINUTE as usize;
/// Latency bucket bounds: `SMALLEST_SECONDS · √2^i`; the last one is open.
const LATENCY_BUCKETS: usize = 32;
const SMALLEST_SECONDS: f64 = 0.000_5;

/// What status shows of a backend's recent traffic.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficFigures {
    /// Requests per second over the last minute.
    pub rps_1m: f64,
    /// Upstream latency percentiles over the last minute, in milliseconds
    /// (`None`: no answer in that minute).
    pub p50_ms_1m: Option<f64>,
    pub p99_ms_1m: Option<f64>,
    /// 5xx answers in the last minute.
    pub errors_5xx_per_min: u64,
    /// Requests per second in each of the last ten minutes, oldest first;
    /// the last one is the same minute as `rps_1m`.
    pub rate_10m: [f64; MINUTES],
}

/// Latency buckets kept: the last minute's six and the one being recycled.
/// Percentiles are over the last minute only, so the other 53 slots of the
/// ring keep no histogram (at 1,000 apps that is 6.7 MiB less).
const LATENCY_SLOTS: usize = PER_MINUTE as usize + 1;

#[derive(Debug)]
struct Bucket {
    /// Which 10-second slot since the clock's start this bucket holds.
    slot: AtomicU64,
    requests: AtomicU64,
    errors_5xx: AtomicU64,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            // No slot yet: never equal to a real one.
            slot: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            errors_5xx: AtomicU64::new(0),
        }
    }
}

/// One 10-second slot's upstream latency histogram.
#[derive(Debug)]
struct LatencyBucket {
    slot: AtomicU64,
    counts: [AtomicU32; LATENCY_BUCKETS],
}

impl LatencyBucket {
    fn new() -> Self {
        LatencyBucket {
            slot: AtomicU64::new(u64::MAX),
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// The last ten minutes of one backend's traffic.
#[derive(Debug)]
pub struct TrafficWindow {
    buckets: Box<[Bucket]>,
    latency: Box<[LatencyBucket]>,
}

impl Default for TrafficWindow {
    fn default() -> Self {
        TrafficWindow::new()
    }
}

impl TrafficWindow {
    /// An empty window (all figures zero, percentiles unknown).
    pub fn new() -> Self {
        TrafficWindow {
            buckets: (0..BUCKETS).map(|_| Bucket::new()).collect(),
            latency: (0..LATENCY_SLOTS).map(|_| LatencyBucket::new()).collect(),
        }
    }

    /// Count a request that got `status` (or none) now.
    pub fn count(&self, status: Option<u16>) {
        self.count_at(clock_seconds(), status);
    }

    /// Record an upstream latency of `seconds` now.
    pub fn observe_latency(&self, seconds: f64) {
        self.observe_latency_at(clock_seconds(), seconds);
    }

    /// The figures as of now.
    pub fn figures(&self) -> TrafficFigures {
        self.figures_at(clock_seconds())
    }

    /// [`TrafficWindow::count`] at `now` seconds of the clock.
    pub fn count_at(&self, now: u64, status: Option<u16>) {
        let bucket = self.bucket_for(now);
        bucket.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_some_and(|code| code >= 500) {
            bucket.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`TrafficWindow::observe_latency`] at `now` seconds of the clock.
    pub fn observe_latency_at(&self, now: u64, seconds: f64) {
        let slot = now / BUCKET_SECONDS;
        let bucket = &self.latency[(slot % LATENCY_SLOTS as u64) as usize];
        if claim(&bucket.slot, slot) {
            for count in &bucket.counts {
                count.store(0, Ordering::Relaxed);
            }
        }
        bucket.counts[latency_index(seconds)].fetch_add(1, Ordering::Relaxed);
    }

    /// [`TrafficWindow::figures`] at `now` seconds of the clock.
    pub fn figures_at(&self, now: u64) -> TrafficFigures {
        let current = now / BUCKET_SECONDS;
        let mut rate_10m = [0.0; MINUTES];
        let mut errors_5xx_per_min = 0;
        let mut latency = [0u64; LATENCY_BUCKETS];
        // The minute ending now: this (partial) bucket and the five before.
        let last_minute_seconds = (PER_MINUTE - 1) * BUCKET_SECONDS + now % BUCKET_SECONDS + 1;
        for (minute, rate) in rate_10m.iter_mut().enumerate() {
            let minutes_ago = (MINUTES - 1 - minute) as u64;
            let mut requests = 0;
            for step in 0..PER_MINUTE {
                let Some(slot) = current.checked_sub(minutes_ago * PER_MINUTE + step) else {
                    continue;
                };
                let Some(bucket) = self.bucket_holding(slot) else {
                    continue;
                };
                requests += bucket.requests.load(Ordering::Relaxed);
                if minutes_ago == 0 {
                    errors_5xx_per_min += bucket.errors_5xx.load(Ordering::Relaxed);
                }
            }
            let seconds = if minutes_ago == 0 {
                last_minute_seconds
            } else {
                PER_MINUTE * BUCKET_SECONDS
            };
            *rate = round2(requests as f64 / seconds as f64);
        }
        for step in 0..PER_MINUTE {
            let Some(slot) = current.checked_sub(step) else {
                continue;
            };
            let bucket = &self.latency[(slot % LATENCY_SLOTS as u64) as usize];
            if bucket.slot.load(Ordering::Acquire) != slot {
                continue;
            }
            for (sum, count) in latency.iter_mut().zip(&bucket.counts) {
                *sum += u64::from(count.load(Ordering::Relaxed));
            }
        }
        TrafficFigures {
            rps_1m: rate_10m[MINUTES - 1],
            p50_ms_1m: percentile_ms(&latency, 0.50),
            p99_ms_1m: percentile_ms(&latency, 0.99),
            errors_5xx_per_min,
            rate_10m,
        }
    }

    /// The bucket for writes at `now`, recycled first when it holds an older slot.
    fn bucket_for(&self, now: u64) -> &Bucket {
        let slot = now / BUCKET_SECONDS;
        let bucket = &self.buckets[(slot % BUCKETS as u64) as usize];
        if claim(&bucket.slot, slot) {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.errors_5xx.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// The bucket holding `slot`, if it has not been recycled.
    fn bucket_holding(&self, slot: u64) -> Option<&Bucket> {
        let bucket = &self.buckets[(slot % BUCKETS as u64) as usize];
        (bucket.slot.load(Ordering::Acquire) == slot).then_some(bucket)
    }
}

/// Make `held` say `slot`; true for the one writer that recycled it (and
/// must now zero its counts).
fn claim(held: &AtomicU64, slot: u64) -> bool {
    let was = held.load(Ordering::Acquire);
    was != slot
        && held
            .compare_exchange(was, slot, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

/// Seconds since the first use of the clock (monotonic, process-wide).
fn clock_seconds() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

/// The histogram bucket for `seconds`: the first bound at or above it.
fn latency_index(seconds: f64) -> usize {
    if seconds.is_nan() || seconds <= SMALLEST_SECONDS {
        return 0;
    }
    let index = (2.0 * (seconds / SMALLEST_SECONDS).log2()).ceil();
    (index as usize).min(LATENCY_BUCKETS - 1)
}

/// The upper bound of histogram bucket `index`, in milliseconds.
fn bound_ms(index: usize) -> f64 {
    SMALLEST_SECONDS * 1000.0 * std::f64::consts::SQRT_2.powi(index as i32)
}

/// The `quantile` of `histogram` as its bucket's upper bound, in ms.
fn percentile_ms(histogram: &[u64; LATENCY_BUCKETS], quantile: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * quantile).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(round2(bound_ms(index)));
        }
    }
    Some(round2(bound_ms(LATENCY_BUCKETS - 1)))
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_window_has_zero_rates_and_no_percentiles() {
        let figures = TrafficWindow::new().figures_at(1_000);
        assert_eq!(figures.rps_1m, 0.0);
        assert_eq!(figures.p50_ms_1m, None);
        assert_eq!(figures.errors_5xx_per_min, 0);
        assert_eq!(figures.rate_10m, [0.0; MINUTES]);
    }

    #[test]
    fn the_last_minute_counts_requests_errors_and_percentiles() {
        let window = TrafficWindow::new();
        let now = 6_000;
        for i in 0..120 {
            let at = now - 59 + i % 60;
            window.count_at(at, Some(if i >= 114 { 503 } else { 200 }));
            window.observe_latency_at(at, if i < 99 { 0.010 } else { 2.0 });
        }
        let figures = window.figures_at(now);
        assert_eq!(figures.rps_1m, 2.0);
        assert_eq!(figures.errors_5xx_per_min, 6);
        let p50 = figures.p50_ms_1m.expect("answers seen");
        assert!((10.0..=14.2).contains(&p50), "p50 {p50}");
        let p99 = figures.p99_ms_1m.expect("answers seen");
        assert!((2000.0..=2829.0).contains(&p99), "p99 {p99}");
        assert_eq!(figures.rate_10m[MINUTES - 1], 2.0);
        // The nine seconds before the minute's first bucket: 18 requests.
        assert_eq!(figures.rate_10m[MINUTES - 2], 0.3);
        assert_eq!(figures.rate_10m[MINUTES - 3], 0.0);
    }

    #[test]
    fn each_of_the_last_ten_minutes_has_its_own_rate_and_older_traffic_drops_out() {
        let window = TrafficWindow::new();
        let now = 36_000 - 1;
        // 60·k requests in the minute that ended k minutes ago (k = 0..=9),
        // and some eleven minutes ago that must not show.
        for minutes_ago in 0..10u64 {
            for i in 0..60 * minutes_ago {
                window.count_at(now - minutes_ago * 60 - i % 60, Some(200));
            }
        }
        let figures = window.figures_at(now);
        let expected: Vec<f64> = (0..10).rev().map(|k| k as f64).collect();
        assert_eq!(figures.rate_10m.to_vec(), expected);
        for i in 0..100 {
            window.count_at(now + 660 + i % 5, Some(200));
        }
        let later = window.figures_at(now + 665);
        assert_eq!(later.rate_10m[..MINUTES - 1], [0.0; MINUTES - 1]);
        assert!(later.rps_1m > 0.0);
    }

    #[test]
    fn latency_buckets_are_ordered_and_bounded() {
        assert_eq!(latency_index(0.0), 0);
        assert_eq!(latency_index(-1.0), 0);
        assert_eq!(latency_index(f64::NAN), 0);
        assert_eq!(latency_index(1e9), LATENCY_BUCKETS - 1);
        let mut last = 0;
        for ms in [1, 2, 5, 10, 50, 100, 500, 1000, 5000] {
            let index = latency_index(ms as f64 / 1000.0);
            assert!(index >= last);
            assert!(bound_ms(index) >= ms as f64 - 1e-9, "{ms} ms");
            last = index;
        }
    }
}
