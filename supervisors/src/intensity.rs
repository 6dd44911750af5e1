//! Restart intensity (OTP's sliding window) and optional restart backoff.
//!
//! Pure logic with explicit `Instant`s so it can be tested without a runtime. Owns the rule
//! "more than `max_restarts` restarts within `period` ⇒ give up", counted over the whole
//! supervisor, and the exponential-with-jitter delay of [`Backoff`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Restart intensity: more than `max_restarts` restarts within `period` and the supervisor gives
/// up, stops its children and exits with `shutdown(reached_max_restart_intensity)` so that *its*
/// parent decides. The default is OTP's: 1 restart in 5 seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts tolerated inside one window (OTP `intensity`).
    pub max_restarts: u32,
    /// Length of the sliding window (OTP `period`).
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }
}

impl Intensity {
    /// An intensity of `max_restarts` restarts within `period`.
    pub fn new(max_restarts: u32, period: Duration) -> Self {
        Intensity {
            max_restarts,
            period,
        }
    }
}

/// The sliding window of one supervisor's recent restarts.
#[derive(Debug, Default)]
pub(crate) struct RestartWindow {
    restarts: VecDeque<Instant>,
}

impl RestartWindow {
    /// Records a restart at `now`. Returns `false` when that restart exceeds the intensity, i.e.
    /// when the window now holds more than `max_restarts` entries.
    pub(crate) fn add(&mut self, intensity: Intensity, now: Instant) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.duration_since(oldest) > intensity.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= intensity.max_restarts as usize
    }
}

/// Optional per-child restart delay (beyond OTP): `min × factor^attempt`, capped at `max`, then
/// stretched by up to `jitter` (0.2 = up to 20 % longer). The attempt counter goes back to zero
/// once the child has run for `reset_after` without exiting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub min: Duration,
    /// Upper bound before jitter.
    pub max: Duration,
    /// Growth per consecutive restart.
    pub factor: f64,
    /// Random extra fraction, 0.0 ..= 1.0.
    pub jitter: f64,
    /// Healthy run time after which the delay starts again from `min`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (0-based), with `unit` in `[0, 1)` as the random
    /// draw for the jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// use supervisors::Backoff;
    /// let b = Backoff { min: Duration::from_millis(10), max: Duration::from_millis(50), factor: 2.0, jitter: 0.0, reset_after: Duration::from_secs(1) };
    /// assert_eq!(b.delay(0, 0.5), Duration::from_millis(10));
    /// assert_eq!(b.delay(2, 0.5), Duration::from_millis(40));
    /// assert_eq!(b.delay(9, 0.5), Duration::from_millis(50));
    /// ```
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.min.as_secs_f64() * self.factor.max(1.0).powi(attempt.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let stretched = capped * (1.0 + unit.clamp(0.0, 1.0) * self.jitter.clamp(0.0, 1.0));
        Duration::from_secs_f64(stretched)
    }

    /// [`Backoff::delay`] with a random draw for the jitter: the wait before a restart, and
    /// for callers that back off on their own (a child that retries something itself instead
    /// of exiting to be restarted).
    pub fn jittered(&self, attempt: u32) -> Duration {
        self.delay(attempt, jitter_unit())
    }
}

/// A uniform draw in `[0, 1)` from a process-wide splitmix64 sequence; jitter needs spread, not
/// cryptographic quality, and this keeps the crate free of a `rand` dependency.
pub(crate) fn jitter_unit() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0));
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jittered_delay_lies_between_the_delay_and_its_stretch() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
            jitter: 0.5,
            reset_after: Duration::ZERO,
        };
        for attempt in [0, 1, 3, 9] {
            let (low, high) = (b.delay(attempt, 0.0), b.delay(attempt, 1.0));
            let draws: Vec<Duration> = (0..200).map(|_| b.jittered(attempt)).collect();
            assert!(
                draws.iter().all(|d| (low..=high).contains(d)),
                "{attempt}: {draws:?}"
            );
            assert!(draws.iter().any(|d| *d != draws[0]), "{attempt}: no spread");
        }
    }

    #[test]
    fn default_intensity_is_one_restart_in_five_seconds() {
        let i = Intensity::default();
        let t0 = Instant::now();
        let mut w = RestartWindow::default();
        assert!(w.add(i, t0));
        assert!(
            !w.add(i, t0 + Duration::from_secs(1)),
            "second restart within 5 s exceeds 1/5s"
        );
    }

    #[test]
    fn restarts_older_than_the_period_leave_the_window() {
        let i = Intensity::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let mut w = RestartWindow::default();
        assert!(w.add(i, t0));
        assert!(w.add(i, t0 + Duration::from_secs(5)));
        assert!(
            w.add(i, t0 + Duration::from_secs(11)),
            "the first restart has left the window"
        );
        assert!(!w.add(i, t0 + Duration::from_secs(12)));
    }

    #[test]
    fn zero_intensity_gives_up_on_the_first_restart() {
        let mut w = RestartWindow::default();
        assert!(!w.add(Intensity::new(0, Duration::from_secs(1)), Instant::now()));
    }

    #[test]
    fn backoff_grows_caps_and_jitters_upwards_only() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
            jitter: 0.5,
            reset_after: Duration::from_secs(5),
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(10, 1.0), Duration::from_millis(1500));
        assert!(b.delay(0, 0.99) < Duration::from_millis(150));
    }

    #[test]
    fn jitter_draws_stay_in_the_unit_interval_and_vary() {
        let draws: Vec<f64> = (0..1000).map(|_| jitter_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.35..0.65).contains(&mean), "mean {mean}");
    }
}
