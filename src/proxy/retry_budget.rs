//! The retry budget: retries of answered requests (a 502/503/504 from
//! Heroku's router while an app restarts) may be at most [`BUDGET_PERCENT`]
//! of the requests of the last [`WINDOW_SECONDS`] seconds, plus
//! [`FLOOR_PER_SECOND`] a second. Envoy's idea (`retry_budget`): when every
//! app fails, retries must not multiply the load on them; when one app
//! restarts, there is room for every request it refuses.
//!
//! Input: each client request and each retry the proxy wants (`mod.rs`).
//! Output: yes or no. One slot per second in a ring of atomics, so the
//! request path takes no lock; a slot is reset by the first request of its
//! new second (a race there loses a count or two, never a request).

use crate::time::monotonic_ms;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Retries allowed, in percent of the window's requests.
pub const BUDGET_PERCENT: u64 = 20;
/// Retries always allowed, per second of the window.
pub const FLOOR_PER_SECOND: u64 = 3;
/// Seconds the budget looks back.
pub const WINDOW_SECONDS: u64 = 10;

#[derive(Default)]
struct Slot {
    /// The second (on the process clock) this slot counts; 0: never used.
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// Requests and retries of the last [`WINDOW_SECONDS`] seconds.
#[derive(Default)]
pub struct RetryBudget {
    slots: [Slot; WINDOW_SECONDS as usize],
}

impl RetryBudget {
    /// The slot of `second`, emptied first if it counted an older second.
    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW_SECONDS) as usize];
        if slot.second.load(Ordering::Relaxed) != second
            && slot.second.swap(second, Ordering::Relaxed) != second
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Count one client request.
    pub fn request(&self) {
        self.request_at(now_second());
    }

    /// Spend one retry if the budget allows it.
    pub fn try_retry(&self) -> bool {
        self.try_retry_at(now_second())
    }

    fn request_at(&self, second: u64) {
        self.slot(second).requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry_at(&self, second: u64) -> bool {
        let current = self.slot(second);
        let (mut requests, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            let at = slot.second.load(Ordering::Relaxed);
            if at != 0 && at + WINDOW_SECONDS > second && at <= second {
                requests += u64::from(slot.requests.load(Ordering::Relaxed));
                retries += u64::from(slot.retries.load(Ordering::Relaxed));
            }
        }
        let allowed = requests * BUDGET_PERCENT / 100 + FLOOR_PER_SECOND * WINDOW_SECONDS;
        if retries >= allowed {
            return false;
        }
        current.retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The current second on the process clock, from 1.
fn now_second() -> u64 {
    monotonic_ms() / 1000 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_allows_three_a_second_over_the_window() {
        let budget = RetryBudget::default();
        let allowed = (0..100).filter(|_| budget.try_retry_at(5)).count();
        assert_eq!(allowed as u64, FLOOR_PER_SECOND * WINDOW_SECONDS);
    }

    #[test]
    fn a_fifth_of_the_requests_may_be_retried_on_top() {
        let budget = RetryBudget::default();
        for _ in 0..1000 {
            budget.request_at(7);
        }
        let allowed = (0..1000).filter(|_| budget.try_retry_at(7)).count();
        assert_eq!(allowed, 200 + 30);
    }

    #[test]
    fn the_window_forgets_what_is_older_than_ten_seconds() {
        let budget = RetryBudget::default();
        assert_eq!((0..100).filter(|_| budget.try_retry_at(1)).count(), 30);
        assert!(!budget.try_retry_at(10), "second 10 still sees second 1");
        assert!(budget.try_retry_at(11), "second 11 no longer does");
    }
}
