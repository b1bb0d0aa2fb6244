//! The one rate-limited logger: refusals and errors a remote can cause
//! thousands of times a second are logged at most once per
//! [`LOG_EVERY`], each line saying how many were held back since the
//! last, so a flood neither fills the disk nor goes unseen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeated refusal or error is logged, at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets a log line through at most once per period and counts those held
/// back. Shareable between threads (the relay's handlers run on several).
pub struct LogLimit {
    every: Duration,
    /// When a line last went out, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(LOG_EVERY)
    }
}

impl LogLimit {
    /// A limit of one line per `every`.
    pub const fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(lines held back since the last)` when one may go out now;
    /// `None` (and one more held back) otherwise.
    pub fn pass(&self) -> Option<u64> {
        self.pass_at(Instant::now())
    }

    /// [`LogLimit::pass`] at `now`.
    pub fn pass_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .0
            .is_some_and(|at| now.saturating_duration_since(at) < self.every)
        {
            state.1 += 1;
            return None;
        }
        state.0 = Some(now);
        Some(std::mem::take(&mut state.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_counting_those_held_back() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.pass_at(t0), Some(0));
        assert_eq!(limit.pass_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.pass_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(limit.pass_at(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(limit.pass_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.pass_at(t0 + Duration::from_secs(30)), Some(1));
        let always = LogLimit::new(Duration::ZERO);
        assert_eq!((always.pass(), always.pass()), (Some(0), Some(0)));
    }
}
