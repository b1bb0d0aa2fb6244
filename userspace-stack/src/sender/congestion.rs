//! The congestion controllers the sender can run, behind one surface: the
//! sender tells them what each ACK delivered and when it found a loss or
//! timed out; they say how much may be in flight and how fast to pace.

use std::time::Duration;

use underpass_core::Instant;

use super::bbr::Bbr;
use super::cubic::Cubic;
use super::rate::RateSample;

/// What an ACK told the sender.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ack {
    pub now: Instant,
    /// Bytes newly delivered (cumulatively or by SACK).
    pub acked: usize,
    /// The cumulative acknowledgment, and after the highest byte sent.
    pub ack: u32,
    pub snd_max: u32,
    /// A round-trip sample from this ACK, and the estimates.
    pub rtt: Option<Duration>,
    pub srtt: Duration,
    /// The delivery-rate sample of this ACK, and all delivered so far.
    pub rate: Option<RateSample>,
    pub delivered: u64,
    /// Bytes in flight after this ACK, and declared lost and not yet sent
    /// again.
    pub in_flight: usize,
    pub lost: usize,
    /// The window, not the application, limited sending lately.
    pub limited: bool,
}

/// Which controller a connection runs.
#[derive(Debug)]
pub(crate) enum Controller {
    Cubic(Cubic),
    Bbr(Bbr),
}

impl Controller {
    pub fn cwnd(&self) -> usize {
        match self {
            Controller::Cubic(c) => c.cwnd,
            Controller::Bbr(b) => b.cwnd,
        }
    }

    pub fn ssthresh(&self) -> usize {
        match self {
            Controller::Cubic(c) => c.ssthresh,
            Controller::Bbr(_) => usize::MAX,
        }
    }

    /// Still growing fast (pacing runs ahead more then).
    pub fn in_slow_start(&self) -> bool {
        match self {
            Controller::Cubic(c) => c.in_slow_start(),
            Controller::Bbr(b) => b.in_startup(),
        }
    }

    /// BBR's ProbeRTT: rate samples of what is sent now understate the
    /// path.
    pub fn in_probe_rtt(&self) -> bool {
        matches!(self, Controller::Bbr(b) if b.in_probe_rtt())
    }

    pub fn on_ack(&mut self, a: &Ack) {
        match self {
            Controller::Cubic(c) => c.on_ack(a),
            Controller::Bbr(b) => b.on_ack(a),
        }
    }

    /// A loss was found: recovery begins (`in_flight` before it).
    pub fn on_congestion(&mut self, in_flight: usize, now: Instant) {
        match self {
            Controller::Cubic(c) => c.on_congestion(in_flight),
            Controller::Bbr(b) => b.on_congestion(in_flight, now),
        }
    }

    /// Everything sent before the loss is acknowledged.
    pub fn end_recovery(&mut self) {
        match self {
            Controller::Cubic(c) => c.end_recovery(),
            Controller::Bbr(b) => b.end_recovery(),
        }
    }

    pub fn on_timeout(&mut self) {
        match self {
            Controller::Cubic(c) => c.on_timeout(),
            Controller::Bbr(b) => b.on_timeout(),
        }
    }

    pub fn restart_after_idle(&mut self, now: Instant) {
        match self {
            Controller::Cubic(c) => c.restart_after_idle(),
            Controller::Bbr(b) => b.restart_after_idle(now),
        }
    }

    /// Bytes per second to pace at.
    pub fn pacing_rate(&self, srtt: Duration) -> f64 {
        match self {
            Controller::Cubic(c) => {
                // Linux: twice the window per RTT in slow start, 1.2 after.
                let gain = if c.in_slow_start() { 2.0 } else { 1.2 };
                gain * c.cwnd as f64 / srtt.as_secs_f64().max(1e-6)
            }
            Controller::Bbr(b) => b.pacing_rate(srtt),
        }
    }
}
