//! Peak-EWMA, the load estimate of the `peak_ewma` policy: Finagle's and
//! Linkerd's (tower's) balancer. Each backend keeps a moving average of its
//! latency to the first response byte that decays over [`DECAY`] (10 s, as
//! Linkerd) but jumps at once to a slower sample (the peak), so a backend
//! that slows down is avoided from its first slow answer and comes back as
//! its answers speed up. Its cost is that average × (requests in flight +
//! 1), divided by its weight (dyno count) and slow-start share; the policy
//! picks two fit backends at random, weighted by dyno count, and sends the
//! request to the cheaper (power of two choices: near-optimal, and a herd
//! of balancer threads does not pile onto the one best backend).
//!
//! Input: each backend's estimate (`backend/latency.rs`), its requests in
//! flight, weight and share. Output: the cost the pick compares and status
//! shows. A backend with no estimate yet (new, or back in rotation) starts
//! pessimistic: as slow as the slowest of its peers (or [`DEFAULT_RTT`]),
//! so it is not flooded before its first answers say what it is worth.

use std::time::Duration;

/// The estimate of a backend nobody has measured yet, when no peer has one.
pub const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// A backend's cost: its latency estimate (`pessimistic` when it has none)
/// × (requests in flight + 1), per unit of weight × slow-start share (in
/// 1/65,536ths). Lower is better.
pub fn cost(
    estimate: Option<Duration>,
    pessimistic: Duration,
    in_flight: usize,
    weight: usize,
    share: u32,
) -> f64 {
    let rtt = estimate.unwrap_or(pessimistic).as_secs_f64();
    let capacity = weight.max(1) as f64 * f64::from(share.max(1)) / 65_536.0;
    rtt * (in_flight as f64 + 1.0) / capacity
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cost_grows_with_latency_and_load_and_shrinks_with_weight() {
        let ms = Duration::from_millis;
        let base = cost(Some(ms(10)), ms(100), 0, 1, 65_536);
        assert!(cost(Some(ms(20)), ms(100), 0, 1, 65_536) > base);
        assert!(cost(Some(ms(10)), ms(100), 3, 1, 65_536) > base);
        assert!(cost(Some(ms(10)), ms(100), 0, 2, 65_536) < base);
        assert!(cost(None, ms(100), 0, 1, 65_536) > base);
        // A slow-starting backend at 5 % costs twenty times as much.
        let ramping = cost(Some(ms(10)), ms(100), 0, 1, 65_536 / 20);
        assert!((ramping / base - 20.0).abs() < 0.01);
    }
}
