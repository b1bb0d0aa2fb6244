//! Pacing: a window's worth of segments spread over the round trip instead
//! of leaving in one burst, which a shallow queue at the bottleneck would
//! drop. The rate is the congestion controller's. Short bursts stay
//! allowed (each wake-up of the event loop has a cost), and an event loop
//! woken late (tokio's timers have a millisecond's grain, a browser's 4 ms)
//! catches up on what it missed, or the rate would be the timer's.
//!
//! Held segments leave in batches of about a millisecond at the rate (at
//! most a GSO batch), as Linux sends a paced connection's data in chunks
//! of that size: waking the event loop, and the peer, for every segment
//! cost more CPU than the segment on a fast path (on loopback a third of
//! the segments went one per turn, each with its own ACK back).

use std::time::Duration;

use underpass_core::Instant;

/// Back-to-back sending allowed after a pause, in time at the pacing rate.
const BURST: Duration = Duration::from_millis(1);
/// ... and at least this many segments.
const BURST_SEGMENTS: usize = 10;
/// The most a late wake-up catches up on.
const MAX_CATCH_UP: Duration = Duration::from_millis(8);
/// Held segments go in batches of this long at the pacing rate...
const BATCH: Duration = Duration::from_millis(1);
/// ... of at most this many bytes (what one GSO send carries)...
const MAX_BATCH: usize = 64 * 1024;
/// ... and at least this many segments.
const MIN_BATCH_SEGMENTS: usize = 2;

#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// When the next segment may leave.
    next: Option<Instant>,
    /// Segments were waiting for `next`: a wake-up after it is late, not
    /// a start after a pause.
    waiting: bool,
    /// The rate (bytes per second) and segment size of the last segment
    /// sent, which set how far apart the next ones are.
    rate: f64,
    mss: usize,
}

impl Pacer {
    /// Whether a segment may leave at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| t <= now)
    }

    /// When the next segment may leave, if it must wait.
    #[cfg(test)]
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// When `waiting` bytes held should start to leave: once a batch of
    /// them is due (all of them, if fewer), or at once.
    pub fn due(&self, waiting: usize) -> Option<Instant> {
        let next = self.next?;
        let batch = ((self.rate * BATCH.as_secs_f64()) as usize)
            .min(MAX_BATCH)
            .max(MIN_BATCH_SEGMENTS * self.mss);
        let after_first = waiting.min(batch).saturating_sub(self.mss);
        Some(next + Duration::from_secs_f64(after_first as f64 / self.rate))
    }

    /// Whether held segments (`waiting` bytes) may start to leave at `now`:
    /// [`Pacer::ready`] for a batch.
    pub fn batch_ready(&self, waiting: usize, now: Instant) -> bool {
        self.due(waiting).is_none_or(|t| t <= now)
    }

    /// Segments wait for [`Pacer::next`].
    pub fn hold(&mut self) {
        self.waiting = true;
    }

    /// `len` bytes left at `now` at `rate` bytes per second.
    pub fn sent(&mut self, len: usize, mss: usize, rate: f64, now: Instant) {
        let rate = if rate.is_finite() {
            rate.max(1.0)
        } else {
            f64::MAX
        };
        let burst = BURST.max(Duration::from_secs_f64(
            (BURST_SEGMENTS * mss) as f64 / rate,
        ));
        // Credit for time spent idle is capped at one burst; for a late
        // wake-up, at what was missed (up to a limit).
        let cap = if self.waiting {
            MAX_CATCH_UP.max(burst)
        } else {
            burst
        };
        let from = match self.next {
            Some(t) if t + cap > now => t,
            _ => now - cap.min(now.since_epoch()),
        };
        self.rate = rate;
        self.mss = mss;
        let spacing = Duration::from_secs_f64(len as f64 / rate);
        let next = from + spacing;
        self.next = Some(next);
        if next > now {
            self.waiting = false; // caught up
        }
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

    #[test]
    fn a_late_wake_up_catches_up_and_a_pause_does_not() {
        let rate = 10_000_000.0; // 0.1 ms per 1,000 bytes; a burst is 1 ms
        let t0 = Instant::from_secs(10);
        let count = |p: &mut Pacer, at: Instant| {
            let mut n = 0;
            while p.ready(at) {
                p.sent(1000, 1000, rate, at);
                n += 1;
            }
            n
        };
        let mut p = Pacer::default();
        count(&mut p, t0);
        // Segments waited, and the timer fired 4 ms late: 4 ms of them go.
        p.hold();
        let late = p.next().unwrap() + Duration::from_millis(4);
        assert_eq!(count(&mut p, late), 41);
        // After a pause with nothing waiting, one burst only.
        assert_eq!(count(&mut p, late + Duration::from_millis(50)), 11);
    }
}
