//! Delivery rate samples (draft-cheng-iccrg-delivery-rate-estimation, as
//! Linux's tcp_rate.c does it): each segment remembers how much had been
//! delivered when it left; when it is acknowledged, the bytes delivered
//! since over the time since is a measurement of the path's bandwidth.
//! BBR is driven by them.

use std::time::Duration;

use underpass_core::Instant;

/// What a segment remembers of the connection when it is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    delivered: u64,
    delivered_at: Instant,
    first_sent_at: Instant,
    app_limited: bool,
}

/// One measurement, from the most recently sent segment an ACK delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateSample {
    /// Bytes per second.
    pub rate: f64,
    /// Delivered when the measured segment left (to tell round trips).
    pub prior_delivered: u64,
    /// The sender was not sending all it could: the sample may be low.
    pub app_limited: bool,
}

#[derive(Debug)]
pub(crate) struct Rate {
    /// Bytes delivered so far, and when the last were.
    pub delivered: u64,
    delivered_at: Instant,
    /// When the segment most recently delivered had left.
    first_sent_at: Instant,
    /// While set (not 0), what is sent is application-limited; cleared
    /// once delivery passes it.
    app_limited_until: u64,
    /// The best candidate of the ACK being handled: its stamp, when it was
    /// sent.
    candidate: Option<(Stamp, Instant)>,
}

impl Rate {
    pub fn new(now: Instant) -> Rate {
        Rate {
            delivered: 0,
            delivered_at: now,
            first_sent_at: now,
            app_limited_until: 0,
            candidate: None,
        }
    }

    /// A segment leaves; `in_flight` says whether anything else is out.
    pub fn stamp(&mut self, now: Instant, in_flight: bool) -> Stamp {
        if !in_flight {
            // A fresh start: the interval must not span the idle time.
            self.first_sent_at = now;
            self.delivered_at = now;
        }
        Stamp {
            delivered: self.delivered,
            delivered_at: self.delivered_at,
            first_sent_at: self.first_sent_at,
            // Set until delivery passes the mark (as Linux): a segment
            // sent with nothing in flight, when the mark is what has been
            // delivered already, is as limited as any.
            app_limited: self.app_limited_until > 0,
        }
    }

    /// A segment sent at `sent` with `stamp` was delivered (`len` bytes).
    pub fn on_delivered(&mut self, len: usize, stamp: Stamp, sent: Instant, now: Instant) {
        self.delivered += len as u64;
        self.delivered_at = now;
        if self
            .candidate
            .is_none_or(|(s, _)| stamp.delivered >= s.delivered)
        {
            self.candidate = Some((stamp, sent));
            self.first_sent_at = sent;
        }
    }

    /// The sample of the ACK just handled, if it makes one. Samples over an
    /// interval shorter than `min_rtt` are not trusted (ACKs bunched up).
    pub fn sample(&mut self, min_rtt: Duration) -> Option<RateSample> {
        if self.app_limited_until > 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let (stamp, sent) = self.candidate.take()?;
        let send_elapsed = sent.saturating_duration_since(stamp.first_sent_at);
        let ack_elapsed = self
            .delivered_at
            .saturating_duration_since(stamp.delivered_at);
        let interval = send_elapsed.max(ack_elapsed);
        let delivered = self.delivered - stamp.delivered;
        if interval < min_rtt || interval.is_zero() || delivered == 0 {
            return None;
        }
        Some(RateSample {
            rate: delivered as f64 / interval.as_secs_f64(),
            prior_delivered: stamp.delivered,
            app_limited: stamp.app_limited,
        })
    }

    /// The application has nothing more to send though the window would
    /// allow it: samples until what is in flight is delivered say less
    /// than the path can do.
    pub fn app_limited(&mut self, in_flight: usize) {
        self.app_limited_until = (self.delivered + in_flight as u64).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_flow_measures_its_rate() {
        let mut r = Rate::new(Instant::ZERO);
        let ms = Duration::from_millis(1);
        // A segment of 1,000 bytes every millisecond, each delivered 10 ms
        // after it left.
        let mut stamps = Vec::new();
        let mut samples = Vec::new();
        for i in 0..100u64 {
            let now = Instant::ZERO + ms * i as u32;
            stamps.push((r.stamp(now, i > 0), now));
            if i >= 10 {
                let (s, sent) = stamps[(i - 10) as usize];
                r.on_delivered(1000, s, sent, now);
                samples.extend(r.sample(Duration::from_millis(5)));
            }
        }
        let last = samples.last().unwrap();
        assert!((last.rate - 1_000_000.0).abs() < 20_000.0, "{last:?}");
        assert!(!last.app_limited);
    }

    /// BBR's ProbeRTT marks the connection limited at every ACK, often
    /// with nothing in flight: what it sends next is limited all the same
    /// (it was not, and its few segments per round trip became the
    /// bandwidth estimate on a real 10 ms path), until delivery passes
    /// the mark.
    #[test]
    fn a_segment_sent_with_nothing_in_flight_after_the_mark_is_limited() {
        let ms = Duration::from_millis(1);
        let mut r = Rate::new(Instant::ZERO);
        let first = r.stamp(Instant::ZERO, false);
        r.on_delivered(1000, first, Instant::ZERO, Instant::ZERO + ms * 10);
        r.sample(ms);
        r.app_limited(0);
        let now = Instant::ZERO + ms * 10;
        let limited = r.stamp(now, false);
        r.on_delivered(1000, limited, now, now + ms * 10);
        let s = r.sample(ms).expect("a sample over 10 ms");
        assert!(s.app_limited, "{s:?}");
        // Delivery passed the mark: what is sent now is not limited.
        let later = r.stamp(now + ms * 10, false);
        r.on_delivered(1000, later, now + ms * 10, now + ms * 20);
        let s = r.sample(ms).expect("a sample over 10 ms");
        assert!(!s.app_limited, "{s:?}");
    }
}
