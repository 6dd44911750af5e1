//! Log budgets: at most one log line a second for an event that can come by the thousand (the
//! 503s the service answers by design under overload or while draining), with the number of
//! such events left out since the previous line. Metrics still count every one.

use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of event's budget of one line a second.
#[derive(Debug, Default)]
pub struct LogBudget {
    /// The second (plus one, so that 0 means "never") in which the last line was written.
    window: AtomicU64,
    /// Events of this kind not logged since the last line.
    unlogged: AtomicU64,
}

impl LogBudget {
    pub const fn new() -> Self {
        LogBudget {
            window: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// [`LogBudget::admit`] at the wall clock's second.
    pub fn admit_now(&self) -> Option<u64> {
        self.admit(crate::clock::now_ms() / 1000)
    }

    /// Takes in one event at `now_secs`: `Some(n)` when it is to be logged (the first of its
    /// second), `n` being the events left out since the previous line; `None` when it is only
    /// counted. Every event is either logged or counted in exactly one later `n`.
    pub fn admit(&self, now_secs: u64) -> Option<u64> {
        let window = now_secs.saturating_add(1);
        let seen = self.window.load(Ordering::Relaxed);
        if seen != window
            && self
                .window
                .compare_exchange(seen, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.unlogged.swap(0, Ordering::Relaxed));
        }
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_each_left_out_event_counted_once() {
        let b = LogBudget::new();
        assert_eq!(b.admit(10), Some(0), "the first event is logged");
        assert_eq!((0..99).filter_map(|_| b.admit(10)).count(), 0);
        assert_eq!(b.admit(11), Some(99), "the next second's line counts them");
        assert_eq!(b.admit(11), None);
        assert_eq!(b.admit(30), Some(1));
        assert_eq!(
            b.admit(0),
            Some(0),
            "a clock that steps back starts a new second"
        );
    }

    #[test]
    fn under_contention_one_line_a_second_and_every_event_counted_once() {
        let b = std::sync::Arc::new(LogBudget::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..10_000)
                        .filter_map(|_| b.admit(5))
                        .fold((0u64, 0u64), |(lines, n), left_out| {
                            (lines + 1, n + left_out)
                        })
                })
            })
            .collect();
        let (lines, counted) = threads
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
        assert_eq!(lines, 1, "one line in the second");
        // Events that raced the line's own start may be counted in it rather than in the next
        // (the thread that opened the second takes the count after others added to it): each
        // event not logged is counted exactly once, in one line or the other.
        let rest = b.admit(6).expect("the next second's line");
        assert_eq!(
            counted + rest,
            39_999,
            "every event left out is counted once"
        );
    }
}
