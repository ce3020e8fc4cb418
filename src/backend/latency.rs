//! Each backend's latency estimate for the `peak_ewma` policy
//! (`selection/peak_ewma.rs`): a moving average of its latency to the first
//! response byte that decays over [`DECAY`] (10 s, Linkerd's default) but
//! jumps at once to a slower sample (the peak), so a backend that slows
//! down costs more from its first slow answer and less again as its answers
//! speed up. As in tower, the estimate also decays while no answer comes,
//! so a backend that was slow is tried again. A failed try or a 5xx counts
//! as a sample of at least [`FAILURE_PENALTY`]: an app that refuses fast
//! must not look fast.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The time constant of the average's decay (Linkerd's default).
pub const DECAY: Duration = Duration::from_secs(10);
/// The smallest sample a failure or a 5xx counts as.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// One backend's latency estimate.
#[derive(Debug, Default)]
pub struct PeakEwma(Mutex<Estimate>);

#[derive(Debug, Default)]
struct Estimate {
    /// Nanoseconds; meaningful only once `at` is set.
    rtt_ns: f64,
    /// When `rtt_ns` was last updated; `None`: no estimate yet.
    at: Option<Instant>,
}

impl Estimate {
    /// The estimate decayed to `now` toward `sample_ns` (0: decay alone),
    /// or the sample itself when it is slower (the peak).
    fn update(&mut self, sample_ns: f64, now: Instant) -> f64 {
        let Some(at) = self.at else {
            return self.rtt_ns;
        };
        if sample_ns > self.rtt_ns {
            self.rtt_ns = sample_ns;
        } else {
            let elapsed = now.saturating_duration_since(at).as_nanos() as f64;
            let decay = (-elapsed / DECAY.as_nanos() as f64).exp();
            self.rtt_ns = self.rtt_ns * decay + sample_ns * (1.0 - decay);
        }
        self.at = Some(now);
        self.rtt_ns
    }
}

impl PeakEwma {
    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a latency to the first response byte (a failure: a sample of
    /// at least [`FAILURE_PENALTY`]).
    pub fn record(&self, latency: Duration, failed: bool) {
        let latency = if failed {
            latency.max(FAILURE_PENALTY)
        } else {
            latency
        };
        let sample = latency.as_nanos() as f64;
        let now = Instant::now();
        let mut estimate = self.lock();
        if estimate.at.is_none() {
            *estimate = Estimate {
                rtt_ns: sample,
                at: Some(now),
            };
        } else {
            estimate.update(sample, now);
        }
    }

    /// Forget the estimate: the backend is back in rotation, cold.
    pub fn reset(&self) {
        *self.lock() = Estimate::default();
    }

    /// The estimate now, decayed; `None` before the first sample.
    pub fn estimate(&self) -> Option<Duration> {
        let mut estimate = self.lock();
        estimate.at?;
        let ns = estimate.update(0.0, Instant::now());
        Some(Duration::from_nanos(ns as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_sample_is_taken_at_once_and_fast_ones_pull_it_down_slowly() {
        let ewma = PeakEwma::default();
        assert_eq!(ewma.estimate(), None);
        ewma.record(Duration::from_millis(10), false);
        ewma.record(Duration::from_millis(500), false);
        let peak = ewma.estimate().expect("an estimate");
        assert!(peak > Duration::from_millis(490), "{peak:?}");
        ewma.record(Duration::from_millis(10), false);
        let after = ewma.estimate().expect("an estimate");
        assert!(
            after > Duration::from_millis(480),
            "one fast answer right after: {after:?}"
        );
    }

    #[test]
    fn failures_count_as_slow_and_a_reset_forgets() {
        let ewma = PeakEwma::default();
        ewma.record(Duration::from_millis(2), true);
        assert!(ewma.estimate().expect("an estimate") >= Duration::from_millis(990));
        ewma.reset();
        assert_eq!(ewma.estimate(), None);
    }
}
