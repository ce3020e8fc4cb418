//! The admission queue, HAProxy's `maxconn` + `maxqueue` + `timeout queue`:
//! with `max_in_flight_per_dyno` set, a request that finds every fit app at
//! its cap (that number × its web dynos) waits here, first in first out, up
//! to `queue_timeout_seconds` and `queue_max` entries, and so does one that
//! finds no app routable at all (the first seconds after boot, every app
//! restarting at once), instead of getting a 503 at once.
//!
//! Input: the proxy's `wait` for a slot, and a wake-up each time a slot is
//! freed (`InFlight`'s drop). Output: the slot, or a rejection the proxy
//! answers with 503 and `Retry-After`; depth, recent wait times and
//! rejections for status and metrics. A freed slot wakes the head of the
//! queue, which takes it; newcomers queue behind whoever waits, so nobody is
//! overtaken. The head also looks again every [`POLL`], for what no slot
//! release announces (a backend coming back). A waiter that goes away (a
//! timeout, the client's request dropped) leaves the queue as it goes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often the head of the queue looks again without being woken.
pub const POLL: Duration = Duration::from_millis(50);

/// How many recent wait times are kept for status's percentiles.
const RECENT_WAITS: usize = 1024;

/// Why a request did not get a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `queue_max` requests wait already.
    Full,
    /// It waited `queue_timeout_seconds`.
    TimedOut,
}

/// The queue.
#[derive(Debug)]
pub struct AdmissionQueue {
    waiters: Mutex<Waiters>,
    max: usize,
    timeout: Duration,
    recent: Mutex<VecDeque<Duration>>,
    rejected_full: AtomicU64,
    rejected_timeout: AtomicU64,
}

#[derive(Debug, Default)]
struct Waiters {
    next_id: u64,
    queue: VecDeque<(u64, Arc<Notify>)>,
}

/// What status shows of the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueFigures {
    pub depth: usize,
    pub max: usize,
    pub timeout: Duration,
    /// Percentiles of the last waits (`None`: nobody waited yet).
    pub wait_p50: Option<Duration>,
    pub wait_p99: Option<Duration>,
    pub rejected_full: u64,
    pub rejected_timeout: u64,
}

/// Removes a waiter from the queue however its wait ends.
struct Leave<'a> {
    queue: &'a AdmissionQueue,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut waiters = self.queue.lock();
        let was_head = waiters.queue.front().is_some_and(|(id, _)| *id == self.id);
        waiters.queue.retain(|(id, _)| *id != self.id);
        drop(waiters);
        // A head that leaves without a slot hands the turn on.
        if was_head {
            self.queue.notify();
        }
    }
}

impl AdmissionQueue {
    /// A queue of at most `max` waiters, each waiting at most `timeout`.
    pub fn new(max: usize, timeout: Duration) -> Self {
        AdmissionQueue {
            waiters: Mutex::new(Waiters::default()),
            max,
            timeout,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_WAITS)),
            rejected_full: AtomicU64::new(0),
            rejected_timeout: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether anyone waits (newcomers then queue behind them).
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Wake the head of the queue: a slot was freed.
    pub fn notify(&self) {
        if let Some((_, head)) = self.lock().queue.front() {
            head.notify_one();
        }
    }

    /// Wait in line until `take` gives a slot (it is tried when this
    /// waiter is at the head and is woken, or every [`POLL`]), or reject.
    pub async fn wait<T>(&self, mut take: impl FnMut() -> Option<T>) -> Result<T, Rejection> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (id, wake) = {
            let mut waiters = self.lock();
            if waiters.queue.len() >= self.max {
                self.rejected_full.fetch_add(1, Ordering::Relaxed);
                return Err(Rejection::Full);
            }
            waiters.next_id += 1;
            let id = waiters.next_id;
            let wake = Arc::new(Notify::new());
            waiters.queue.push_back((id, Arc::clone(&wake)));
            (id, wake)
        };
        let leave = Leave { queue: self, id };
        loop {
            let head = self
                .lock()
                .queue
                .front()
                .is_some_and(|(first, _)| *first == id);
            if head {
                if let Some(slot) = take() {
                    drop(leave);
                    self.record_wait(started.elapsed());
                    // More slots may be free: the next in line looks too.
                    self.notify();
                    return Ok(slot);
                }
            }
            let until = deadline.min(tokio::time::Instant::now() + POLL);
            let _ = tokio::time::timeout_at(until, wake.notified()).await;
            if tokio::time::Instant::now() >= deadline {
                drop(leave);
                self.rejected_timeout.fetch_add(1, Ordering::Relaxed);
                self.record_wait(started.elapsed());
                return Err(Rejection::TimedOut);
            }
        }
    }

    fn record_wait(&self, waited: Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_WAITS {
            recent.pop_front();
        }
        recent.push_back(waited);
    }

    /// Depth, recent waits and rejections.
    pub fn figures(&self) -> QueueFigures {
        let mut waits: Vec<Duration> = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        waits.sort();
        let quantile = |q: f64| {
            (!waits.is_empty()).then(|| waits[((waits.len() - 1) as f64 * q).round() as usize])
        };
        QueueFigures {
            depth: self.depth(),
            max: self.max,
            timeout: self.timeout,
            wait_p50: quantile(0.5),
            wait_p99: quantile(0.99),
            rejected_full: self.rejected_full.load(Ordering::Relaxed),
            rejected_timeout: self.rejected_timeout.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_free_slot_is_taken_at_once() {
        let queue = AdmissionQueue::new(10, Duration::from_secs(1));
        assert_eq!(queue.wait(|| Some(7)).await, Ok(7));
        assert_eq!(queue.depth(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_rejects_at_once_and_a_long_wait_times_out() {
        let queue = Arc::new(AdmissionQueue::new(1, Duration::from_millis(200)));
        let waiting = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.wait(|| None::<()>).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(queue.depth(), 1);
        let started = Instant::now();
        assert_eq!(queue.wait(|| Some(())).await, Err(Rejection::Full));
        assert!(started.elapsed() < Duration::from_millis(5));
        assert_eq!(waiting.await.expect("joined"), Err(Rejection::TimedOut));
        assert_eq!(queue.depth(), 0);
        let figures = queue.figures();
        assert_eq!((figures.rejected_full, figures.rejected_timeout), (1, 1));
    }

    #[tokio::test]
    async fn freed_slots_go_to_the_waiters_in_the_order_they_came() {
        let queue = Arc::new(AdmissionQueue::new(100, Duration::from_secs(5)));
        let free = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..5 {
            let (queue, free, order) = (Arc::clone(&queue), Arc::clone(&free), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let take = || {
                    free.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                        .ok()
                };
                if queue.wait(take).await.is_ok() {
                    order.lock().expect("unpoisoned").push(n);
                }
            }));
            // Each one queues before the next arrives.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..5 {
            free.fetch_add(1, Ordering::SeqCst);
            queue.notify();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for task in tasks {
            task.await.expect("joined");
        }
        assert_eq!(*order.lock().expect("unpoisoned"), vec![0, 1, 2, 3, 4]);
        assert_eq!(queue.depth(), 0);
    }
}
