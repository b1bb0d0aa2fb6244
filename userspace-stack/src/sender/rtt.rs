//! Round-trip time: the smoothed estimate and retransmission timeout of
//! RFC 6298 with Linux's floor, and the windowed minimum that RACK and
//! HyStart++ measure against.

use std::time::Duration;

use underpass_core::Instant;

/// Before any measurement (RFC 6298 2.1).
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// The least margin over the smoothed RTT, as Linux's 200 ms floor on its
/// variance term: a queue that fills briefly must not fire the timer.
const MIN_RTO_MARGIN: Duration = Duration::from_millis(200);
const MAX_RTO: Duration = Duration::from_secs(60);
/// How long a minimum RTT stands before a newer sample replaces it (a
/// path's base delay can change: a new route, a roaming client). Five
/// minutes, as Linux's `tcp_min_rtt_wlen`: delivery-rate samples over an
/// interval shorter than the minimum are dropped, and in a recovery the
/// ACKs answer retransmissions, which give no RTT sample. A minimum
/// re-taken at a slow moment then dropped every sample of the path's real
/// round trip, and BBR counted no rounds, so its ProbeRTT never ended:
/// seen at 200 ms / 1% loss, 5 s at four segments in flight.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default)]
pub(crate) struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The lowest sample of the window and when it was taken.
    min: Option<(Duration, Instant)>,
}

impl Rtt {
    /// A path measured once already (the handshake).
    pub fn with_sample(sample: Duration, now: Instant) -> Rtt {
        let mut rtt = Rtt::default();
        rtt.on_sample(sample, now);
        rtt
    }

    pub fn on_sample(&mut self, sample: Duration, now: Instant) {
        let sample = sample.max(Duration::from_micros(1));
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
        if self
            .min
            .is_none_or(|(m, at)| sample <= m || now.saturating_duration_since(at) > MIN_RTT_WINDOW)
        {
            self.min = Some((sample, now));
        }
    }

    pub fn has_sample(&self) -> bool {
        self.srtt.is_some()
    }

    /// The smoothed RTT, or the initial timeout before any sample.
    pub fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(INITIAL_RTO)
    }

    pub fn min(&self) -> Duration {
        self.min.map_or(self.srtt(), |(m, _)| m)
    }

    /// The retransmission timeout, before backoff.
    pub fn rto(&self) -> Duration {
        match self.srtt {
            None => INITIAL_RTO,
            Some(srtt) => (srtt + (self.rttvar * 4).max(MIN_RTO_MARGIN)).min(MAX_RTO),
        }
    }

    /// The timeout after `backoff` expiries in a row.
    pub fn rto_backed_off(&self, backoff: u32) -> Duration {
        self.rto().saturating_mul(1 << backoff.min(10)).min(MAX_RTO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sample_sets_the_estimate_and_the_floor_holds() {
        let t = Instant::from_millis(5);
        let mut r = Rtt::default();
        assert_eq!(r.rto(), INITIAL_RTO);
        r.on_sample(Duration::from_millis(50), t);
        assert_eq!(r.srtt(), Duration::from_millis(50));
        // 4 x 25 ms of variance is below the 200 ms floor.
        assert_eq!(r.rto(), Duration::from_millis(250));
        for _ in 0..50 {
            r.on_sample(Duration::from_millis(50), t);
        }
        assert_eq!(r.rto(), Duration::from_millis(250));
        assert_eq!(r.rto_backed_off(2), Duration::from_millis(1000));
    }

    #[test]
    fn the_minimum_is_windowed() {
        let mut r = Rtt::default();
        r.on_sample(Duration::from_millis(20), Instant::from_millis(0));
        r.on_sample(Duration::from_millis(80), Instant::from_millis(1000));
        assert_eq!(r.min(), Duration::from_millis(20));
        r.on_sample(Duration::from_millis(60), Instant::from_millis(11_000));
        assert_eq!(
            r.min(),
            Duration::from_millis(20),
            "a slower moment does not replace the path's minimum"
        );
        r.on_sample(Duration::from_millis(60), Instant::from_millis(301_000));
        assert_eq!(
            r.min(),
            Duration::from_millis(60),
            "the old minimum expired"
        );
    }
}
