//! CUBIC congestion control (RFC 9438), as Linux runs it by default, with
//! HyStart++ (RFC 9406) ending slow start when the round trip starts to
//! grow (a queue filling) instead of at the first loss. Windows are in
//! bytes; smoltcp's own controller, which grows by at most one segment per
//! ACK, is switched off.

use std::time::Duration;

use underpass_core::Instant;

use super::congestion::Ack;
use crate::segment::after;

/// Window growth constant, in segments per second cubed.
const C: f64 = 0.4;
/// Multiplicative decrease.
pub(crate) const BETA: f64 = 0.7;
/// Initial window, in segments (RFC 6928, Linux).
pub(crate) const INITIAL_WINDOW: usize = 10;

const HYSTART_SAMPLES: u32 = 8;
const HYSTART_MIN_THRESH: Duration = Duration::from_millis(4);
const HYSTART_MAX_THRESH: Duration = Duration::from_millis(16);
const CSS_GROWTH_DIVISOR: usize = 4;
const CSS_ROUNDS: u32 = 5;

#[derive(Debug, Default)]
struct HyStart {
    /// This round ends when the cumulative ACK passes it.
    round_end: Option<u32>,
    last_min: Option<Duration>,
    current_min: Option<Duration>,
    samples: u32,
    /// In conservative slow start since this baseline RTT, and rounds so.
    css: Option<(Duration, u32)>,
}

#[derive(Debug)]
pub(crate) struct Cubic {
    mss: usize,
    pub cwnd: usize,
    pub ssthresh: usize,
    /// The window before the last reduction, in bytes.
    w_max: f64,
    /// Where the cubic curve starts this epoch: its start, plateau and the
    /// time to reach it.
    epoch: Option<(Instant, f64, f64)>,
    /// What Reno would have now (the "Reno-friendly" window).
    w_est: f64,
    hystart: HyStart,
    /// Proportional Rate Reduction (RFC 6937) during a recovery: the
    /// flight when it began, and bytes delivered and sent since.
    prr: Option<(usize, usize, usize)>,
}

impl Cubic {
    pub fn new(mss: usize) -> Cubic {
        Cubic {
            mss,
            cwnd: INITIAL_WINDOW * mss,
            ssthresh: usize::MAX,
            w_max: 0.0,
            epoch: None,
            w_est: 0.0,
            hystart: HyStart::default(),
            prr: None,
        }
    }

    pub fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// An ACK: in recovery, PRR brings the window down to `ssthresh` in
    /// step with what is delivered; else slow start (HyStart++) or the
    /// cubic curve grow it, if the window (not the application) was what
    /// limited the sender.
    pub fn on_ack(&mut self, a: &Ack) {
        if let Some((flight, delivered, out)) = self.prr.as_mut() {
            *delivered += a.acked;
            let (flight, delivered, out) = (*flight, *delivered, *out);
            let pipe = a.in_flight;
            let sndcnt = if pipe > self.ssthresh {
                // In 64 bits: a browser's usize is 32.
                let share =
                    (delivered as u64 * self.ssthresh as u64).div_ceil(flight.max(1) as u64);
                usize::try_from(share)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(out)
            } else {
                // The slow-start reduction bound: back up to ssthresh no
                // faster than slow start would.
                let limit = delivered.saturating_sub(out).max(a.acked) + self.mss;
                (self.ssthresh - pipe).min(limit)
            };
            self.cwnd = pipe + sndcnt;
            return;
        }
        if a.acked == 0 {
            return;
        }
        if self.in_slow_start() {
            self.hystart_round(a.ack, a.snd_max);
            if let Some(rtt) = a.rtt {
                self.hystart_sample(rtt);
            }
            if a.limited {
                let growth = match self.hystart.css {
                    Some(_) => a.acked / CSS_GROWTH_DIVISOR,
                    None => a.acked,
                };
                self.cwnd = (self.cwnd + growth).min(self.ssthresh.max(self.cwnd));
            }
            return;
        }
        if !a.limited {
            return;
        }
        let (acked, now, srtt) = (a.acked, a.now, a.srtt);
        let mss = self.mss as f64;
        let cwnd = self.cwnd as f64;
        let (start, origin, k) = *self.epoch.get_or_insert_with(|| {
            self.w_est = cwnd;
            if cwnd < self.w_max {
                let k = ((self.w_max - cwnd) / (C * mss)).cbrt();
                (now, self.w_max, k)
            } else {
                (now, cwnd, 0.0)
            }
        });
        let t = (now.saturating_duration_since(start) + srtt).as_secs_f64() - k;
        let target = (origin + C * mss * t * t * t).clamp(cwnd, 1.5 * cwnd);
        let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
        self.w_est += alpha * mss * acked as f64 / cwnd;
        let next = if target < self.w_est {
            // Where Reno would be faster (short RTTs), be as fast.
            self.w_est
        } else {
            cwnd + (target - cwnd) * acked as f64 / cwnd
        };
        self.cwnd = next.max(cwnd) as usize;
    }

    /// Bytes sent during a recovery (PRR counts them).
    pub fn on_sent(&mut self, bytes: usize) {
        if let Some((_, _, out)) = self.prr.as_mut() {
            *out += bytes;
        }
    }

    fn hystart_round(&mut self, ack: u32, snd_max: u32) {
        let h = &mut self.hystart;
        if h.round_end.is_some_and(|end| after(end, ack)) {
            return;
        }
        h.round_end = Some(snd_max);
        h.last_min = h.current_min.take();
        h.samples = 0;
        if let Some((_, rounds)) = h.css.as_mut() {
            *rounds += 1;
            if *rounds >= CSS_ROUNDS {
                // Conservative slow start lasted long enough: the queue is
                // real. Avoid congestion from here.
                self.ssthresh = self.cwnd;
                h.css = None;
            }
        }
    }

    fn hystart_sample(&mut self, rtt: Duration) {
        let h = &mut self.hystart;
        h.current_min = Some(h.current_min.map_or(rtt, |m| m.min(rtt)));
        h.samples += 1;
        if h.samples < HYSTART_SAMPLES {
            return;
        }
        let current = h.current_min.expect("just set");
        match h.css {
            None => {
                if let Some(last) = h.last_min {
                    let thresh = (last / 8).clamp(HYSTART_MIN_THRESH, HYSTART_MAX_THRESH);
                    if current >= last + thresh {
                        h.css = Some((current, 0));
                    }
                }
            }
            Some((baseline, _)) if current < baseline => h.css = None,
            Some(_) => {}
        }
    }

    /// A loss, with `in_flight` bytes out: the window is to come down to
    /// `ssthresh` (PRR brings it there during the recovery).
    pub fn on_congestion(&mut self, in_flight: usize) {
        self.reduce();
        self.prr = Some((in_flight.max(self.mss), 0, 0));
    }

    fn reduce(&mut self) {
        let cwnd = self.cwnd as f64;
        // Fast convergence: a flow that lost below its last maximum gives
        // way to newer flows.
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        self.ssthresh = ((cwnd * BETA) as usize).max(2 * self.mss);
        self.epoch = None;
        self.hystart.css = None;
    }

    /// A retransmission timeout: start again from one segment (slow start
    /// up to the new threshold).
    pub fn on_timeout(&mut self) {
        if self.prr.take().is_none() {
            self.reduce();
        }
        self.cwnd = self.mss;
    }

    /// Recovery ended: the window is what the reduction made it.
    pub fn end_recovery(&mut self) {
        if self.prr.take().is_some() {
            self.cwnd = self.ssthresh.max(2 * self.mss);
        }
    }

    /// After an idle period (RFC 7661's restart): at most the initial
    /// window, so a stale window does not burst into a path that changed.
    pub fn restart_after_idle(&mut self) {
        self.cwnd = self.cwnd.min(INITIAL_WINDOW * self.mss);
        self.epoch = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    fn ack(
        acked: usize,
        ack: u32,
        snd_max: u32,
        rtt: Duration,
        now: Instant,
        limited: bool,
    ) -> Ack {
        Ack {
            now,
            acked,
            ack,
            snd_max,
            rtt: Some(rtt),
            srtt: rtt,
            rate: None,
            delivered: 0,
            in_flight: 0,
            lost: 0,
            limited,
        }
    }

    #[test]
    fn slow_start_doubles_per_round_until_the_delay_grows() {
        let mut c = Cubic::new(MSS);
        let rtt = Duration::from_millis(50);
        let mut now = Instant::ZERO;
        let mut seq = 0u32;
        let start = c.cwnd;
        // Three rounds at a steady RTT: the window doubles each.
        for _ in 0..3 {
            let round = c.cwnd;
            let end = seq.wrapping_add(round as u32);
            for _ in 0..(round / MSS) {
                seq = seq.wrapping_add(MSS as u32);
                c.on_ack(&ack(MSS, seq, end, rtt, now, true));
            }
            now += rtt;
        }
        assert_eq!(c.cwnd, start * 8);
        assert!(c.in_slow_start());
        // Now the RTT jumps by 20 ms (a queue): conservative slow start.
        let round = c.cwnd;
        let end = seq.wrapping_add(round as u32);
        for _ in 0..(round / MSS) {
            seq = seq.wrapping_add(MSS as u32);
            c.on_ack(&ack(
                MSS,
                seq,
                end,
                rtt + Duration::from_millis(20),
                now,
                true,
            ));
        }
        assert!(c.hystart.css.is_some());
        assert!(c.cwnd < round * 2, "growth slowed: {} from {round}", c.cwnd);
    }

    #[test]
    fn a_loss_cuts_by_beta_and_the_window_climbs_back_to_its_old_maximum() {
        let mut c = Cubic::new(MSS);
        c.cwnd = 100 * MSS;
        c.ssthresh = 100 * MSS;
        c.on_congestion(100 * MSS);
        c.end_recovery();
        assert_eq!(c.cwnd, 70 * MSS);
        let rtt = Duration::from_millis(100);
        let mut now = Instant::from_secs(1);
        // K = cbrt(30 / 0.4) = 4.2 s: a concave climb to the old maximum,
        // flat around it, then convex beyond.
        let mut windows = Vec::new();
        for _ in 0..70 {
            for _ in 0..(c.cwnd / MSS) {
                c.on_ack(&ack(MSS, 0, 0, rtt, now, true));
            }
            now += rtt;
            windows.push(c.cwnd / MSS);
        }
        assert!((90..99).contains(&windows[19]), "{windows:?}");
        assert!((99..=101).contains(&windows[39]), "{windows:?}");
        assert!(windows[69] > 105, "{windows:?}");
    }

    #[test]
    fn prr_brings_the_window_down_in_step_with_deliveries() {
        let mut c = Cubic::new(MSS);
        c.cwnd = 100 * MSS;
        c.ssthresh = 100 * MSS;
        c.on_congestion(100 * MSS);
        // One segment lost; each ACK delivers one, 99 still out: PRR lets
        // 7 go for every 10 delivered.
        let mut sent = 0;
        for i in 1..=10 {
            let mut a = ack(MSS, 0, 0, Duration::from_millis(50), Instant::ZERO, true);
            a.in_flight = (99 - i) * MSS + sent;
            c.on_ack(&a);
            let may = c.cwnd.saturating_sub(a.in_flight);
            c.on_sent(may);
            sent += may;
        }
        assert_eq!(sent, 7 * MSS);
    }

    #[test]
    fn an_application_limited_window_does_not_grow() {
        let mut c = Cubic::new(MSS);
        let before = c.cwnd;
        for i in 0..100 {
            c.on_ack(&ack(
                MSS,
                i * 1000,
                i * 1000,
                Duration::from_millis(10),
                Instant::ZERO,
                false,
            ));
        }
        assert_eq!(c.cwnd, before);
    }
}
