//! Pacing: a window's worth of segments spread over the round trip instead
//! of leaving in one burst, which a shallow queue at the bottleneck would
//! drop. The rate is the congestion controller's. Short bursts stay allowed (the event loop wakes at best
//! every millisecond or so, and each wake-up has a cost).

use std::time::Duration;

use underpass_core::Instant;

/// Back-to-back sending allowed after a pause, in time at the pacing rate.
const BURST: Duration = Duration::from_millis(1);
/// ... and at least this many segments.
const BURST_SEGMENTS: usize = 10;

#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// When the next segment may leave.
    next: Option<Instant>,
}

impl Pacer {
    /// Whether a segment may leave at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| t <= now)
    }

    /// When the next segment may leave, if it must wait.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// `len` bytes left at `now` at `rate` bytes per second.
    pub fn sent(&mut self, len: usize, mss: usize, rate: f64, now: Instant) {
        let burst = BURST.max(Duration::from_secs_f64(
            (BURST_SEGMENTS * mss) as f64 / rate,
        ));
        // Credit for time spent idle is capped at one burst.
        let from = match self.next {
            Some(t) if t + burst > now => t,
            _ => now - burst.min(now.since_epoch()),
        };
        let spacing = Duration::from_secs_f64(len as f64 / rate);
        self.next = Some(from + spacing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_then_segments_are_spaced_at_the_rate() {
        let mut p = Pacer::default();
        let rate = 1_000_000.0; // 1 MB/s: 1 ms per 1,000 bytes
        let t0 = Instant::from_secs(10);
        let mut sent = 0;
        while p.ready(t0) {
            p.sent(1000, 1000, rate, t0);
            sent += 1;
        }
        // The burst is max(1 ms, 10 segments) = 10 ms at this rate.
        assert_eq!(sent, 11);
        let next = p.next().unwrap();
        assert_eq!(next, t0 + Duration::from_millis(1));
        p.sent(1000, 1000, rate, next);
        assert_eq!(p.next().unwrap(), t0 + Duration::from_millis(2));
    }
}
