//! How many events the worker hands the store at once.
//!
//! Normally the whole batch read from the stream. A batch the store did not
//! finish within its timeout would time out again if replayed at the same
//! size — for ever, with nothing persisted — so after a timeout the next
//! attempt applies it in halves, then quarters, down to one event at a time.
//! As soon as an attempt at the reduced size has gone through completely, the
//! limit is back to the full batch: a timeout is taken as a passing overload,
//! not as a new permanent setting.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The current most events per store write.
#[derive(Debug)]
pub struct BatchLimit {
    full: usize,
    current: AtomicUsize,
}

impl BatchLimit {
    /// Starts at `full` (the configured batch size, at least one).
    pub fn new(full: usize) -> Self {
        let full = full.max(1);
        Self {
            full,
            current: AtomicUsize::new(full),
        }
    }

    /// The most events to apply in one go now.
    pub fn get(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// A write of `tried` events timed out: the next attempts write at most
    /// half of that (never less than one). Returns the new limit.
    pub fn timed_out(&self, tried: usize) -> usize {
        let next = (tried / 2).max(1);
        self.current.fetch_min(next, Ordering::Relaxed);
        self.get()
    }

    /// Everything handed over at the reduced size was written: back to full
    /// batches. Returns whether the limit had been reduced.
    pub fn succeeded(&self) -> bool {
        self.current.swap(self.full, Ordering::Relaxed) != self.full
    }
}

#[cfg(test)]
mod tests {
    use super::BatchLimit;

    #[test]
    fn each_timeout_halves_what_was_tried_down_to_one_event() {
        let limit = BatchLimit::new(1000);
        assert_eq!(limit.get(), 1000);
        assert_eq!(limit.timed_out(1000), 500);
        assert_eq!(limit.timed_out(500), 250);
        assert_eq!(limit.timed_out(3), 1);
        assert_eq!(limit.timed_out(1), 1);
    }

    #[test]
    fn a_smaller_write_timing_out_never_raises_the_limit() {
        let limit = BatchLimit::new(1000);
        limit.timed_out(100);
        assert_eq!(limit.timed_out(400), 50);
    }

    #[test]
    fn a_success_restores_full_batches() {
        let limit = BatchLimit::new(1000);
        assert!(!limit.succeeded(), "nothing to restore yet");
        limit.timed_out(1000);
        limit.timed_out(500);
        assert!(limit.succeeded());
        assert_eq!(limit.get(), 1000);
    }

    #[test]
    fn a_zero_batch_size_still_writes_one_event_at_a_time() {
        let limit = BatchLimit::new(0);
        assert_eq!(limit.get(), 1);
    }
}
