//! BBR congestion control (version 1, as Linux's `bbr` module runs it and
//! draft-cardwell-iccrg-bbr-congestion-control describes it): a model of
//! the path (its bottleneck bandwidth, the maximum of recent delivery-rate
//! samples, and its round-trip propagation delay, the minimum of recent
//! RTTs) sets the pacing rate and the window, instead of losses. Random
//! loss on a long path costs it little, where a loss-based controller such
//! as CUBIC halves its rate at each: 1% loss at 50 ms is a few Mbit/s for
//! CUBIC, for BBR nearly the bottleneck's rate.

use std::time::Duration;

use underpass_core::Instant;

use super::congestion::Ack;

/// Startup's gain, 2/ln 2: the smallest that doubles the sending rate
/// each round trip.
const HIGH_GAIN: f64 = 2.885;
/// ProbeBW's pacing gains, one round trip each: probe up, drain what that
/// queued, then cruise.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const CWND_GAIN: f64 = 2.0;
/// Rounds the bandwidth maximum is kept for.
const BW_WINDOW_ROUNDS: u64 = 10;
/// How long a minimum RTT stands before ProbeRTT measures it again.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// Startup ends when the bandwidth grew less than this for three rounds.
const FULL_BW_GROWTH: f64 = 1.25;
/// ...or, once it stopped growing, when a round lost more than this share
/// of what it delivered (after BBR v2's startup exit): the queue at the
/// bottleneck overflows, and waiting two more rounds would overflow it
/// twice more.
const STARTUP_LOSS: f64 = 0.02;
/// Losses in a round below this many segments do not end startup (random
/// loss is not a full pipe).
const STARTUP_LOSS_SEGMENTS: usize = 8;
const FULL_BW_ROUNDS: u32 = 3;
/// The least window, in segments.
const MIN_WINDOW: usize = 4;
/// Pace a little below the estimate, so a queue does not build at the
/// estimate's error.
const PACING_MARGIN: f64 = 0.99;
/// ACK aggregation (Linux's `extra_acked`): its estimate is the most of
/// two windows of this many rounds...
const AGGREGATION_ROUNDS: u64 = 5;
/// ...and the window it adds is at most this long at the estimated rate.
const MAX_AGGREGATION: Duration = Duration::from_millis(100);
/// An aggregation epoch this large is old: start a new one.
const AGGREGATION_EPOCH_RESET: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

/// A maximum over a window of rounds, kept as the best three samples
/// (Kathleen Nichols' algorithm, as Linux's `minmax`).
#[derive(Debug, Default, Clone, Copy)]
struct MaxFilter {
    s: [(u64, f64); 3],
}

impl MaxFilter {
    fn get(&self) -> f64 {
        self.s[0].1
    }

    fn reset(&mut self, round: u64, value: f64) {
        self.s = [(round, value); 3];
    }

    fn update(&mut self, round: u64, value: f64, window: u64) {
        if value >= self.s[0].1 || round - self.s[2].0 > window {
            return self.reset(round, value);
        }
        if value >= self.s[1].1 {
            self.s[2] = (round, value);
            self.s[1] = (round, value);
        } else if value >= self.s[2].1 {
            self.s[2] = (round, value);
        }
        // Age out the best samples past the window.
        if round - self.s[0].0 > window {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = (round, value);
            if round - self.s[0].0 > window {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
            }
        } else if self.s[1].0 == self.s[0].0 && round - self.s[1].0 > window / 4 {
            self.s[1] = (round, value);
            self.s[2] = (round, value);
        } else if self.s[2].0 == self.s[1].0 && round - self.s[2].0 > window / 2 {
            self.s[2] = (round, value);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Bbr {
    mss: usize,
    /// Picks ProbeBW's first phase, with how often it was entered.
    seed: u32,
    probe_bw_entries: u32,
    pub cwnd: usize,
    mode: Mode,
    bw: MaxFilter,
    min_rtt: Option<(Duration, Instant)>,
    round: u64,
    /// The round ends when a segment sent after this much was delivered
    /// is acknowledged.
    next_round_delivered: u64,
    full_bw: f64,
    full_bw_rounds: u32,
    filled_pipe: bool,
    pacing_gain: f64,
    cwnd_gain: f64,
    cycle: usize,
    cycle_start: Instant,
    /// ProbeRTT: when it may end, and whether a round has passed in it.
    probe_rtt_until: Option<Instant>,
    probe_rtt_round: bool,
    /// The window before a loss or ProbeRTT cut it, restored after.
    prior_cwnd: usize,
    /// Packet conservation for the first round of a recovery.
    conserving: bool,
    recovery_round: u64,
    in_recovery: bool,
    /// The pacing rate; before any sample, from the window and RTT.
    rate: Option<f64>,
    /// Bytes declared lost this round, and delivered when it began.
    round_lost: usize,
    round_start_delivered: u64,
    /// ACK aggregation: acknowledgments come in bunches (GRO, a receiver
    /// that acknowledges once per batch, an event loop that reads many
    /// datagrams at once, a browser's), and a window of exactly the
    /// bandwidth-delay product would stall between bunches. The most
    /// delivered beyond what the rate explains, over two windows of
    /// rounds, and the current epoch: its start and bytes acknowledged.
    extra_acked: [usize; 2],
    extra_window: usize,
    extra_rounds: u64,
    epoch: Option<(Instant, usize)>,
}

impl Bbr {
    /// `seed` (the connection's initial sequence number) picks the phases
    /// ProbeBW starts in.
    pub fn new(mss: usize, now: Instant, seed: u32) -> Bbr {
        Bbr {
            mss,
            seed,
            probe_bw_entries: 0,
            cwnd: super::cubic::INITIAL_WINDOW * mss,
            mode: Mode::Startup,
            bw: MaxFilter::default(),
            min_rtt: None,
            round: 0,
            next_round_delivered: 0,
            full_bw: 0.0,
            full_bw_rounds: 0,
            filled_pipe: false,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            cycle: 0,
            cycle_start: now,
            probe_rtt_until: None,
            probe_rtt_round: false,
            prior_cwnd: 0,
            conserving: false,
            recovery_round: 0,
            in_recovery: false,
            rate: None,
            round_lost: 0,
            round_start_delivered: 0,
            extra_acked: [0; 2],
            extra_window: 0,
            extra_rounds: 0,
            epoch: None,
        }
    }

    pub fn in_startup(&self) -> bool {
        self.mode == Mode::Startup
    }

    /// Holding the window down to see the path's own delay: what is sent
    /// meanwhile is not a measure of the path's rate.
    pub fn in_probe_rtt(&self) -> bool {
        self.mode == Mode::ProbeRtt
    }

    /// The estimated bandwidth-delay product, in bytes.
    fn bdp(&self, gain: f64) -> Option<usize> {
        let (rtt, _) = self.min_rtt?;
        let bw = self.bw.get();
        (bw > 0.0).then_some((gain * bw * rtt.as_secs_f64()) as usize)
    }

    pub fn on_ack(&mut self, a: &Ack) {
        let round_start = self.update_round(a);
        self.update_bw(a, round_start);
        self.update_aggregation(a, round_start);
        self.update_cycle(a);
        self.check_full_pipe(a, round_start);
        self.check_drain(a);
        self.update_min_rtt(a, round_start);
        self.set_pacing_rate(a);
        self.set_cwnd(a, round_start);
    }

    fn update_round(&mut self, a: &Ack) -> bool {
        match a.rate {
            Some(s) if s.prior_delivered >= self.next_round_delivered => {
                self.next_round_delivered = a.delivered;
                self.round += 1;
                true
            }
            _ => false,
        }
    }

    fn update_bw(&mut self, a: &Ack, _round_start: bool) {
        let Some(s) = a.rate else {
            return;
        };
        // A sample from a sender that had nothing to send only counts if
        // it shows more than we knew.
        if !s.app_limited || s.rate >= self.bw.get() {
            self.bw.update(self.round, s.rate, BW_WINDOW_ROUNDS);
        }
    }

    fn update_aggregation(&mut self, a: &Ack, round_start: bool) {
        if a.acked == 0 {
            return;
        }
        if round_start {
            self.extra_rounds += 1;
            if self.extra_rounds >= AGGREGATION_ROUNDS {
                self.extra_rounds = 0;
                self.extra_window ^= 1;
                self.extra_acked[self.extra_window] = 0;
            }
        }
        let (start, acked) = self.epoch.get_or_insert((a.now, 0));
        let expected =
            (self.bw.get() * a.now.saturating_duration_since(*start).as_secs_f64()) as usize;
        if *acked <= expected || *acked + a.acked >= AGGREGATION_EPOCH_RESET {
            // Acknowledgments at the rate or slower: a new epoch.
            *start = a.now;
            *acked = 0;
            return self.count_extra(a.acked, 0);
        }
        *acked += a.acked;
        let (acked, expected) = (*acked, expected);
        self.count_extra(acked, expected);
    }

    fn count_extra(&mut self, acked: usize, expected: usize) {
        let extra = acked.saturating_sub(expected).min(self.cwnd);
        let slot = &mut self.extra_acked[self.extra_window];
        *slot = (*slot).max(extra);
    }

    /// The window ACK aggregation needs on top of the path's.
    fn aggregation_window(&self) -> usize {
        if !self.filled_pipe {
            return 0;
        }
        let most = (self.bw.get() * MAX_AGGREGATION.as_secs_f64()) as usize;
        self.extra_acked[0].max(self.extra_acked[1]).min(most)
    }

    fn update_cycle(&mut self, a: &Ack) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let Some((min_rtt, _)) = self.min_rtt else {
            return;
        };
        let elapsed = a.now.saturating_duration_since(self.cycle_start) > min_rtt;
        let gain = self.pacing_gain;
        let bdp = self.bdp(1.0).unwrap_or(0);
        let next = if gain > 1.0 {
            // Probing: until the queue it makes is there, or a loss says
            // there is no room.
            elapsed && (a.lost > 0 || a.in_flight >= self.bdp(gain).unwrap_or(0))
        } else if gain < 1.0 {
            // Draining: as soon as the queue is gone.
            elapsed || a.in_flight <= bdp
        } else {
            elapsed
        };
        if next {
            self.cycle = (self.cycle + 1) % CYCLE.len();
            self.cycle_start = a.now;
            self.pacing_gain = CYCLE[self.cycle];
        }
    }

    /// Segments declared lost (count them against this round).
    pub fn on_lost(&mut self, bytes: usize) {
        self.round_lost += bytes;
    }

    fn check_full_pipe(&mut self, a: &Ack, round_start: bool) {
        if !round_start {
            return;
        }
        let delivered = (a.delivered - self.round_start_delivered) as usize;
        let lost = std::mem::take(&mut self.round_lost);
        self.round_start_delivered = a.delivered;
        if self.filled_pipe {
            return;
        }
        if a.rate.is_some_and(|s| s.app_limited) {
            return;
        }
        let bw = self.bw.get();
        if bw >= self.full_bw * FULL_BW_GROWTH {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        // The bandwidth stopped growing and the queue overflows: the pipe
        // is full now, not in two more rounds of overflowing it. (Loss
        // while the bandwidth still grows is the path's, not ours.)
        let overflowing = lost > STARTUP_LOSS_SEGMENTS * self.mss
            && lost as f64 > STARTUP_LOSS * delivered as f64;
        if self.full_bw_rounds >= FULL_BW_ROUNDS || overflowing {
            self.filled_pipe = true;
        }
    }

    fn check_drain(&mut self, a: &Ack) {
        if self.mode == Mode::Startup && self.filled_pipe {
            self.mode = Mode::Drain;
            self.pacing_gain = 1.0 / HIGH_GAIN;
            self.cwnd_gain = HIGH_GAIN;
        }
        if self.mode == Mode::Drain && a.in_flight <= self.bdp(1.0).unwrap_or(usize::MAX) {
            self.enter_probe_bw(a.now);
        }
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = CWND_GAIN;
        // Start in any phase but probing, as Linux does, each connection
        // and each entry in another: connections that left startup
        // together must not probe together, or they overflow the queue
        // together (eight uploads through a 300 Mbit/s bottleneck lost
        // 13% there, Linux's eight 6.6%). From the connection's initial
        // sequence number, so a run is still deterministic.
        self.probe_bw_entries += 1;
        let mixed =
            (self.seed ^ self.probe_bw_entries.wrapping_mul(0x85eb_ca6b)).wrapping_mul(0x9e37_79b1);
        self.cycle = CYCLE.len() - 1 - (mixed >> 16) as usize % (CYCLE.len() - 1);
        self.cycle_start = now;
        self.pacing_gain = CYCLE[self.cycle];
    }

    fn update_min_rtt(&mut self, a: &Ack, round_start: bool) {
        let expired = self
            .min_rtt
            .is_some_and(|(_, at)| a.now.saturating_duration_since(at) > MIN_RTT_WINDOW);
        if let Some(rtt) = a.rtt {
            if self.min_rtt.is_none_or(|(m, _)| rtt <= m) || expired {
                self.min_rtt = Some((rtt, a.now));
            }
        }
        if expired && self.mode != Mode::ProbeRtt {
            // Not measured lately: drain the queue for a moment to see the
            // path's own delay.
            self.mode = Mode::ProbeRtt;
            self.pacing_gain = 1.0;
            self.cwnd_gain = 1.0;
            self.save_cwnd();
            self.probe_rtt_until = None;
        }
        if self.mode != Mode::ProbeRtt {
            return;
        }
        match self.probe_rtt_until {
            None if a.in_flight <= MIN_WINDOW * self.mss => {
                self.probe_rtt_until = Some(a.now + PROBE_RTT_TIME);
                self.probe_rtt_round = false;
                self.next_round_delivered = a.delivered;
            }
            Some(until) => {
                self.probe_rtt_round |= round_start;
                if self.probe_rtt_round && a.now >= until {
                    if let Some((m, _)) = self.min_rtt {
                        self.min_rtt = Some((m, a.now));
                    }
                    self.cwnd = self.cwnd.max(self.prior_cwnd);
                    if self.filled_pipe {
                        self.enter_probe_bw(a.now);
                    } else {
                        self.mode = Mode::Startup;
                        self.pacing_gain = HIGH_GAIN;
                        self.cwnd_gain = HIGH_GAIN;
                    }
                }
            }
            None => {}
        }
    }

    fn set_pacing_rate(&mut self, a: &Ack) {
        let bw = self.bw.get();
        if bw <= 0.0 {
            return;
        }
        let rate = self.pacing_gain * bw * PACING_MARGIN;
        // Before the pipe is known full, never slow down on a low sample,
        // nor below the rate the connection started with: a first sample
        // is often a short request's (an HTTP request, iperf3's 37-byte
        // cookie) and says how little the application sent, not what the
        // path carries. Taken as the rate, it paced the transfer that
        // followed at a segment per half-second for a second and more
        // (Linux: only `bbr_init_pacing_rate_from_rtt` sets the rate
        // before the first sample, and Startup only raises it).
        let current = self.rate.unwrap_or_else(|| self.pacing_rate(a.srtt));
        self.rate = Some(if self.filled_pipe || rate > current {
            rate
        } else {
            current
        });
    }

    fn set_cwnd(&mut self, a: &Ack, round_start: bool) {
        if self.in_recovery && round_start && self.round > self.recovery_round {
            self.conserving = false;
        }
        // Room for ACKs that come in bunches: what aggregation was seen to
        // need, and three segments (Linux's three TSO bursts).
        let target = self
            .bdp(self.cwnd_gain)
            .map(|b| b + self.aggregation_window() + 3 * self.mss)
            .unwrap_or(self.cwnd);
        let mut cwnd = self.cwnd;
        if self.conserving {
            cwnd = cwnd.max(a.in_flight + a.acked);
        } else if self.filled_pipe {
            cwnd = (cwnd + a.acked).min(target);
        } else if cwnd < target || a.delivered < (super::cubic::INITIAL_WINDOW * self.mss) as u64 {
            cwnd += a.acked;
        }
        cwnd = cwnd.max(MIN_WINDOW * self.mss);
        if self.mode == Mode::ProbeRtt {
            cwnd = cwnd.min(MIN_WINDOW * self.mss);
        }
        self.cwnd = cwnd;
    }

    /// A loss: one round of packet conservation, the window kept to what
    /// is in flight (BBR v1 does not cut its rate for a loss).
    pub fn on_congestion(&mut self, in_flight: usize, _now: Instant) {
        self.save_cwnd();
        self.cwnd = in_flight.max(self.mss);
        self.conserving = true;
        self.in_recovery = true;
        self.recovery_round = self.round;
    }

    pub fn end_recovery(&mut self) {
        self.in_recovery = false;
        self.conserving = false;
        self.cwnd = self.cwnd.max(self.prior_cwnd);
    }

    /// Keeps the window to restore when a recovery or ProbeRTT ends. Both
    /// may overlap, and whichever ends first must leave the other the
    /// window from before either began (as Linux's `bbr_save_cwnd`).
    fn save_cwnd(&mut self) {
        self.prior_cwnd = if self.in_recovery || self.mode == Mode::ProbeRtt {
            self.prior_cwnd.max(self.cwnd)
        } else {
            self.cwnd
        };
    }

    pub fn on_timeout(&mut self) {
        self.save_cwnd();
        self.cwnd = self.mss;
        self.in_recovery = true;
        self.conserving = false;
        self.recovery_round = self.round;
    }

    /// Sending again after a pause: at the estimated rate at once (no
    /// slow restart), as BBR does.
    pub fn restart_after_idle(&mut self, now: Instant) {
        if self.mode == Mode::ProbeBw {
            self.cycle_start = now;
            self.pacing_gain = 1.0;
        }
    }

    /// Bytes per second; before any bandwidth sample, the initial window
    /// per round trip at Startup's gain.
    pub fn pacing_rate(&self, srtt: Duration) -> f64 {
        self.rate
            .unwrap_or_else(|| HIGH_GAIN * self.cwnd as f64 / srtt.as_secs_f64().max(1e-6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::rate::RateSample;

    const MSS: usize = 1000;

    fn ack(now: Instant, delivered: u64, rate: f64, in_flight: usize, prior: u64) -> Ack {
        Ack {
            now,
            acked: MSS,
            ack: 0,
            snd_max: 0,
            rtt: Some(Duration::from_millis(50)),
            srtt: Duration::from_millis(50),
            rate: Some(RateSample {
                rate,
                prior_delivered: prior,
                app_limited: false,
            }),
            delivered,
            in_flight,
            lost: 0,
            limited: true,
        }
    }

    #[test]
    fn startup_ends_when_the_bandwidth_stops_growing_and_the_window_fits_the_path() {
        let mut b = Bbr::new(MSS, Instant::ZERO, 0);
        let mut now = Instant::ZERO;
        let mut delivered = 0u64;
        // The bandwidth doubles for five rounds, then stays at 10 MB/s.
        for round in 0..12u32 {
            let rate = (1_000_000.0 * 2f64.powi(round as i32)).min(10_000_000.0);
            let prior = delivered;
            for _ in 0..20 {
                delivered += MSS as u64;
                b.on_ack(&ack(now, delivered, rate, 200_000, prior));
            }
            now += Duration::from_millis(50);
        }
        assert!(b.filled_pipe, "startup ended");
        assert_ne!(b.mode, Mode::Startup);
        // BDP = 10 MB/s x 50 ms = 500 KB; the window is twice that and a
        // little, at most.
        assert!(b.cwnd <= 1_000_000 + 3 * MSS, "{}", b.cwnd);
        let rate = b.pacing_rate(Duration::from_millis(50));
        assert!(rate < 10_000_000.0 * 1.3, "{rate}");
    }

    /// Seen on every upload at 50 ms: iperf3's 37-byte cookie, one
    /// round trip before the data, was the first sample (6 kbit/s), and
    /// the data that followed left at that rate: 1.25 s before the
    /// second segment.
    #[test]
    fn a_short_request_first_does_not_slow_startup_below_its_initial_rate() {
        let rtt = Duration::from_millis(50);
        let mut b = Bbr::new(MSS, Instant::ZERO, 0);
        let initial = b.pacing_rate(rtt);
        assert!(
            (initial - HIGH_GAIN * 10.0 * MSS as f64 / 0.05).abs() < 1.0,
            "{initial}"
        );
        let mut request = ack(Instant::ZERO + rtt, 37, 37.0 / 0.05, 37, 0);
        request.acked = 37;
        b.on_ack(&request);
        assert_eq!(b.pacing_rate(rtt), initial, "the request's sample");
        // Samples above it raise it, as before.
        b.on_ack(&ack(Instant::ZERO + 2 * rtt, 20_037, 400_000.0, 0, 37));
        assert!(b.pacing_rate(rtt) > initial);
    }

    #[test]
    fn a_loss_keeps_the_rate() {
        let mut b = Bbr::new(MSS, Instant::ZERO, 0);
        b.bw.reset(0, 10_000_000.0);
        b.min_rtt = Some((Duration::from_millis(50), Instant::ZERO));
        b.filled_pipe = true;
        b.enter_probe_bw(Instant::ZERO);
        b.cwnd = 1_000_000;
        let before = b.pacing_rate(Duration::from_millis(50));
        b.on_congestion(900_000, Instant::ZERO);
        assert_eq!(b.cwnd, 900_000, "packet conservation");
        b.end_recovery();
        assert_eq!(b.cwnd, 1_000_000, "restored");
        assert_eq!(b.pacing_rate(Duration::from_millis(50)), before);
    }

    #[test]
    fn connections_start_probe_bw_in_different_phases_none_probing() {
        let phases: Vec<usize> = [0x1234_5678u32, 0x9abc_def0, 7, 0x5555_0001, 0xdead_beef, 42]
            .iter()
            .map(|&isn| {
                let mut b = Bbr::new(MSS, Instant::ZERO, isn);
                b.enter_probe_bw(Instant::ZERO);
                b.cycle
            })
            .collect();
        assert!(phases.iter().all(|&c| c != 0), "{phases:?}");
        let mut distinct = phases.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 4, "{phases:?}");
        // The same connection starts elsewhere the next time.
        let mut b = Bbr::new(MSS, Instant::ZERO, 7);
        let entries: Vec<usize> = (0..6)
            .map(|_| {
                b.enter_probe_bw(Instant::ZERO);
                b.cycle
            })
            .collect();
        assert!(entries.windows(2).any(|w| w[0] != w[1]), "{entries:?}");
    }

    /// Seen at 200 ms and 1% loss: a recovery that ended while ProbeRTT
    /// held the window used up the window saved before both, so ProbeRTT
    /// ended at four segments, the bandwidth samples of the slow climb
    /// back replaced the path's, and the connection crawled at a tenth of
    /// its rate for the rest of the run.
    #[test]
    fn a_recovery_that_ends_in_probe_rtt_leaves_the_window_to_restore() {
        let rtt = Duration::from_millis(50);
        let mut b = Bbr::new(MSS, Instant::ZERO, 0);
        b.bw.reset(0, 10_000_000.0);
        b.min_rtt = Some((rtt, Instant::ZERO));
        b.filled_pipe = true;
        b.enter_probe_bw(Instant::ZERO);
        b.cwnd = 1_000_000;
        b.on_congestion(900_000, Instant::ZERO);
        // The minimum RTT expires in the recovery: ProbeRTT.
        let mut now = Instant::ZERO + MIN_RTT_WINDOW + rtt;
        let mut delivered = 10_000_000u64;
        let mut step = |b: &mut Bbr, now: Instant, in_flight: usize| {
            let prior = delivered;
            delivered += MSS as u64;
            b.on_ack(&ack(now, delivered, 10_000_000.0, in_flight, prior));
        };
        step(&mut b, now, 900_000);
        assert_eq!(b.mode, Mode::ProbeRtt);
        assert_eq!(b.cwnd, MIN_WINDOW * MSS, "ProbeRTT holds the window");
        b.end_recovery();
        // Drained to ProbeRTT's window, it lasts 200 ms and a round.
        for _ in 0..12 {
            step(&mut b, now, 2 * MSS);
            now += rtt;
        }
        assert_eq!(b.mode, Mode::ProbeBw, "ProbeRTT ended");
        assert!(
            b.cwnd >= 1_000_000,
            "the window before the loss is back: {}",
            b.cwnd
        );
    }
}
