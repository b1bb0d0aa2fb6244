//! Our side's sending, done around smoltcp: congestion control, pacing,
//! loss detection and retransmission, as a modern kernel does them.
//!
//! smoltcp keeps the connection (its states, its buffers, what the
//! application wrote) and decides *what* new data goes next; this decides
//! *how much* and *when*, and repairs losses itself:
//!
//! - **How much**: smoltcp runs without its own congestion controller and
//!   sends up to the right edge of the peer's window. Every ACK from the
//!   peer is shown to smoltcp with its window cut to what CUBIC allows
//!   ([`Sender::on_ack`]), so the edge smoltcp sees is ours.
//! - **When**: new segments smoltcp writes are held on the
//!   [`scoreboard`] and leave at the pacing rate ([`Sender::transmit`]).
//! - **Repair**: losses are found from SACK blocks and time (RACK-TLP,
//!   RFC 8985), the window comes down by Proportional Rate Reduction (RFC
//!   6937), lost segments are sent again from the packets the scoreboard
//!   kept, a tail-loss probe replaces most timeouts, and the timeout is
//!   RFC 6298's with Linux's 200 ms floor instead of smoltcp's 1 s.
//!   smoltcp's own retransmissions are dropped: it would resend only the
//!   first hole, or everything (go-back-N).

use std::time::Duration;

use underpass_core::Instant;

use crate::segment::{after, before, Segment};

mod bbr;
mod congestion;
pub(crate) mod cubic;
mod pacer;
mod rate;
mod rtt;
mod scoreboard;
mod timers;

pub(crate) use rtt::Rtt;

use congestion::{Ack, Controller};
use pacer::Pacer;
use rate::Rate;
#[cfg(test)]
use scoreboard::State;
use scoreboard::{Delivery, Scoreboard};

/// A tail-loss probe waits at least this long.
const MIN_PTO: Duration = Duration::from_millis(2);
/// The longest a peer may delay an ACK (RFC 8985's WCDelAckT).
const MAX_ACK_DELAY: Duration = Duration::from_millis(200);
/// Duplicate ACKs that declare a loss where the peer gives no SACK.
const DUP_THRESH: u32 = 3;

/// A recovery lasts until everything sent before it began is
/// acknowledged.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// Losses found from ACKs (RACK, or duplicate ACKs).
    Fast { point: u32 },
    /// After a retransmission timeout: slow start from one segment while
    /// what was lost is sent again.
    Timeout { point: u32 },
}

impl Recovery {
    fn point(self) -> u32 {
        match self {
            Recovery::Fast { point } | Recovery::Timeout { point } => point,
        }
    }
}

/// The congestion controller a connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Cubic,
    Bbr,
}

/// What smoltcp emitted, as the sender sees it.
pub(crate) enum Outbound {
    /// Send it now (pure ACKs, window updates, keep-alives).
    Pass(Vec<u8>),
    /// New data: the scoreboard keeps it and [`Sender::transmit`] sends it.
    Kept,
    /// A retransmission of smoltcp's own: not sent (ours are).
    Drop(Vec<u8>),
}

/// A snapshot of a connection's sending (as Linux's `TCP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Congestion window and slow-start threshold, in bytes.
    pub cwnd: usize,
    /// Slow-start threshold, in bytes.
    pub ssthresh: usize,
    /// Bytes sent and not yet acknowledged or declared lost.
    pub in_flight: usize,
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Smallest round-trip time seen.
    pub min_rtt: Duration,
    /// Segments sent again, and retransmission timeouts.
    pub retransmitted: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Whether loss recovery is under way.
    pub in_recovery: bool,
    /// The peer's receive window, in bytes.
    pub peer_window: usize,
    /// Bytes per second: the pacing rate, and the last delivery-rate
    /// sample.
    pub pacing_rate: u64,
    /// The last delivery-rate sample, bytes per second.
    pub delivery_rate: u64,
}

#[derive(Debug)]
pub(crate) struct Sender {
    mss: usize,
    /// The window scale the peer's window field is shifted by.
    peer_scale: u8,
    /// Whether the peer sends SACK blocks.
    sack: bool,
    snd_una: u32,
    /// After the highest sequence number smoltcp has written.
    snd_max: u32,
    /// The peer's receive window, in bytes.
    peer_window: usize,
    board: Scoreboard,
    rtt: Rtt,
    cc: Controller,
    rate: Rate,
    pacer: Pacer,
    recovery: Option<Recovery>,
    /// The most recently sent segment the peer has: (sent, end), and the
    /// RTT it measured (RACK.xmit_ts, RACK.end_seq, RACK.rtt).
    rack: Option<(Instant, u32, Duration)>,
    reordering: bool,
    reorder_at: Option<Instant>,
    rto_at: Option<Instant>,
    backoff: u32,
    pto_at: Option<Instant>,
    probing: bool,
    /// A tail-loss probe is due to go with the next transmission.
    probe_due: bool,
    /// Congestion control off: only the peer's window limits sending.
    unlimited: bool,
    dup_acks: u32,
    /// The most bytes the network held since the last ACK (whether the
    /// window was what limited the sender).
    max_pipe: usize,
    last_sent: Instant,
    last_rate: f64,
    /// When the sender's state was last traced.
    traced: Instant,
    /// Counters for the stack's statistics.
    pub retransmitted: u64,
    pub timeouts: u64,
}

impl Sender {
    /// A sender for a connection whose handshake is done: `snd_max` is
    /// after our SYN, `mss` what we may put in a segment, `peer_scale` and
    /// `sack` what the peer's SYN said, `rtt` the handshake's, if measured.
    pub fn new(
        snd_max: u32,
        mss: usize,
        peer_scale: u8,
        sack: bool,
        rtt: Option<Duration>,
        algorithm: Algorithm,
        now: Instant,
    ) -> Sender {
        let cc = match algorithm {
            Algorithm::Cubic => Controller::Cubic(cubic::Cubic::new(mss)),
            Algorithm::Bbr => Controller::Bbr(bbr::Bbr::new(mss, now, snd_max)),
        };
        Sender {
            mss,
            peer_scale,
            sack,
            snd_una: snd_max,
            snd_max,
            peer_window: usize::MAX,
            board: Scoreboard::default(),
            rtt: rtt.map_or_else(Rtt::default, |r| Rtt::with_sample(r, now)),
            cc,
            rate: Rate::new(now),
            pacer: Pacer::default(),
            recovery: None,
            rack: None,
            reordering: false,
            reorder_at: None,
            rto_at: None,
            backoff: 0,
            pto_at: None,
            probing: false,
            probe_due: false,
            unlimited: false,
            dup_acks: 0,
            max_pipe: 0,
            last_sent: now,
            last_rate: 0.0,
            traced: now,
            retransmitted: 0,
            timeouts: 0,
        }
    }

    /// No congestion control and no pacing: the peer's window alone
    /// limits what is sent (loss repair stays).
    pub fn disable_congestion_control(&mut self) {
        self.unlimited = true;
    }

    pub fn rtt(&self) -> &Rtt {
        &self.rtt
    }

    pub fn cwnd(&self) -> usize {
        self.cc.cwnd()
    }

    /// Bytes sent and not yet acknowledged, or waiting for the pacer.
    pub fn outstanding(&self) -> usize {
        self.snd_max.wrapping_sub(self.snd_una) as usize
    }

    /// What a user (or a metrics page) can read about the sender.
    pub fn info(&self) -> SenderInfo {
        SenderInfo {
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
            in_flight: self.board.in_flight,
            srtt: self.rtt.srtt(),
            min_rtt: self.rtt.min(),
            retransmitted: self.retransmitted,
            timeouts: self.timeouts,
            in_recovery: self.recovery.is_some(),
            peer_window: self.peer_window,
            pacing_rate: self.cc.pacing_rate(self.rtt.srtt()) as u64,
            delivery_rate: self.last_rate as u64,
        }
    }

    /// An ACK from the peer, before smoltcp sees it. Returns the window
    /// field smoltcp is to see instead of the peer's.
    pub fn on_ack(
        &mut self,
        seg: &Segment,
        now: Instant,
        recycle: &mut impl FnMut(Vec<u8>),
    ) -> u16 {
        let ack = seg.ack;
        self.peer_window = usize::from(seg.window) << self.peer_scale;
        let pipe_before = self.board.pipe() + self.board.lost_bytes;
        self.max_pipe = self.max_pipe.max(pipe_before);
        if after(ack, self.snd_max) || before(ack, self.snd_una) {
            // Old, or for data we never sent: smoltcp answers it.
            return self.window_field(ack);
        }
        let mut d = Delivery::default();
        let advanced = after(ack, self.snd_una);
        if advanced {
            self.board.ack(ack, &mut d, recycle);
            self.snd_una = ack;
            self.backoff = 0;
            self.dup_acks = 0;
            self.probing = false;
        } else if seg.is_pure_ack() && self.outstanding() > 0 {
            self.dup_acks += 1;
        }
        for (i, (left, right)) in seg.options.sack.iter().flatten().enumerate() {
            if after(*right, self.snd_una) && !after(*right, self.snd_max) {
                self.board.sack(*left, *right, &mut d);
            } else if i == 0 && !after(*right, ack) {
                // A D-SACK (RFC 2883): something was sent again that had
                // arrived. The path reorders, or our timers were early:
                // RACK waits its reordering window from now on.
                d.reordered = true;
            }
        }
        self.reordering |= d.reordered;
        let rtt_sample = d.newest.and_then(|n| {
            let sample = now.saturating_duration_since(n.sent);
            // A retransmitted segment's ACK may answer the first copy.
            (!n.retransmitted || sample >= self.rtt.min()).then_some(sample)
        });
        if let (Some(sample), Some(n)) = (rtt_sample, d.newest) {
            if !n.retransmitted {
                self.rtt.on_sample(sample, now);
            }
            let newer = self
                .rack
                .is_none_or(|(t, e, _)| n.sent > t || (n.sent == t && after(n.end, e)));
            if newer {
                self.rack = Some((n.sent, n.end, sample));
            }
        }
        if let Some(n) = d.newest {
            self.rate.on_delivered(d.bytes, n.stamp, n.sent, now);
        }
        let rate = self.rate.sample(self.rtt.min());
        if let Some(r) = rate {
            self.last_rate = r.rate;
        }
        self.detect_losses(now, pipe_before);
        if !self.sack && self.dup_acks == DUP_THRESH {
            let lost = self.board.mark_front_lost();
            self.declare_lost(lost, pipe_before, now);
        }
        if let (false, true, Some(Recovery::Fast { point })) = (self.sack, advanced, self.recovery)
        {
            if before(self.snd_una, point) {
                // NewReno: a partial ACK means the next segment is lost too.
                let lost = self.board.mark_front_lost();
                self.declare_lost(lost, pipe_before, now);
            }
        }
        if self
            .recovery
            .is_some_and(|r| !before(self.snd_una, r.point()))
        {
            self.recovery = None;
            self.cc.end_recovery();
        }
        let limited = if self.cc.in_slow_start() {
            self.max_pipe * 2 >= self.cc.cwnd()
        } else {
            self.max_pipe + 3 * self.mss >= self.cc.cwnd()
        };
        if !self.unlimited {
            self.cc.on_ack(&Ack {
                now,
                acked: d.bytes,
                ack,
                snd_max: self.snd_max,
                rtt: rtt_sample,
                srtt: self.rtt.srtt(),
                rate,
                delivered: self.rate.delivered,
                in_flight: self.board.in_flight,
                lost: self.board.lost_bytes,
                limited,
            });
            if self.cc.in_probe_rtt() {
                // As Linux: ProbeRTT's four segments per round trip say
                // how little was sent, not what the path carries. Taken as
                // rate samples they outlast the bandwidth filter's ten
                // rounds where ProbeRTT's 200 ms is more (round trips
                // under 20 ms), and BBR leaves it pacing at a few Mbit/s.
                self.rate.app_limited(self.board.pipe());
            }
        }
        self.max_pipe = self.board.pipe() + self.board.lost_bytes;
        // Once per round trip (at most every 50 ms): enough to follow
        // startup and recoveries round by round.
        if tracing::enabled!(tracing::Level::TRACE)
            && now.saturating_duration_since(self.traced)
                >= self.rtt.srtt().max(Duration::from_millis(50))
        {
            self.traced = now;
            tracing::trace!(info = ?self.info(), cc = ?self.cc, "TCP sender");
        }
        if advanced || d.bytes > 0 {
            // Progress of any kind (SACK too): the path works, so the
            // timeout waits again from here.
            self.arm_timers(now, true);
        }
        self.window_field(ack)
    }

    /// The window field that puts smoltcp's right edge where congestion
    /// control and the peer's window both allow.
    fn window_field(&self, ack: u32) -> u16 {
        if self.peer_window == 0 {
            return 0; // the peer's own zero window: smoltcp probes it
        }
        let budget = if self.unlimited {
            1 << 30
        } else {
            // Whole segments: smoltcp sends what the edge allows, and an
            // edge between segments would make it send a sliver.
            let free = self
                .cc
                .cwnd()
                .saturating_sub(self.board.pipe() + self.board.lost_bytes);
            free / self.mss * self.mss
        };
        let cc_edge = self.snd_max.wrapping_add(budget as u32);
        let allowed = (cc_edge.wrapping_sub(ack) as usize).min(self.peer_window);
        let unit = 1usize << self.peer_scale;
        // Rounded down (the edge is never past what is allowed), and never
        // zero: a zero window would start smoltcp's zero-window probes; a
        // window ending below what was sent stops it as well.
        (allowed / unit).clamp(1, 0xffff) as u16
    }

    /// A segment smoltcp wrote: new data is kept for pacing and repair,
    /// smoltcp's own retransmissions are dropped.
    pub fn on_segment_out(&mut self, seg: &Segment, packet: Vec<u8>, now: Instant) -> Outbound {
        let len = seg.end().wrapping_sub(seg.seq);
        if len == 0 || seg.has(crate::segment::SYN) || seg.has(crate::segment::RST) {
            return Outbound::Pass(packet);
        }
        let end = seg.end();
        if !after(end, self.snd_max) {
            // A keep-alive (one byte before everything was acknowledged)
            // must go; anything else here is a copy of what we resend.
            if self.outstanding() == 0 && seg.payload <= 1 && end == self.snd_max {
                return Outbound::Pass(packet);
            }
            return Outbound::Drop(packet);
        }
        let mut packet = packet;
        let start = if before(seg.seq, self.snd_max) {
            // Partly sent before (smoltcp went back after its own
            // timeout): only the new part is new.
            let old = self.snd_max.wrapping_sub(seg.seq) as usize;
            crate::segment::trim_front(&mut packet, seg.offset, old);
            self.snd_max
        } else {
            seg.seq
        };
        if self.outstanding() == 0 && now.saturating_duration_since(self.last_sent) > self.rtt.rto()
        {
            self.cc.restart_after_idle(now);
        }
        self.snd_max = end;
        self.board.push(start, end, packet, seg.offset, now);
        Outbound::Kept
    }

    /// Sends what may leave now: lost segments first (as congestion control
    /// allows), then new ones (as the pacer allows). `ack` and `window` are
    /// the current acknowledgment and window, written into every
    /// retransmission.
    /// `queued` is what the application wrote that smoltcp has not sent.
    pub fn transmit(
        &mut self,
        now: Instant,
        ack: Option<(u32, u16)>,
        queued: usize,
        send: &mut impl FnMut(&[u8]),
    ) {
        if std::mem::take(&mut self.probe_due) {
            self.send_probe(now, ack, send);
        }
        let rate = self.cc.pacing_rate(self.rtt.srtt());
        let pace = self.rtt.has_sample() && !self.unlimited;
        // The first segment waits for a batch to be due (see `pacer`), the
        // rest of the batch follows it.
        let mut first = true;
        loop {
            if pace {
                let go = if first {
                    self.pacer.batch_ready(self.waiting(), now)
                } else {
                    self.pacer.ready(now)
                };
                if !go {
                    if self.board.unsent > 0 || self.board.lost_bytes > 0 {
                        self.pacer.hold();
                    }
                    break;
                }
            }
            first = false;
            // PRR and the window bound repairs (one segment may always go,
            // so a recovery never stalls); new segments were let in by the
            // window already and wait only for the pacer.
            let (pipe, cwnd, unlimited) = (self.board.pipe(), self.cc.cwnd(), self.unlimited);
            let repair = |len: usize| unlimited || pipe == 0 || pipe + len <= cwnd;
            let Some((i, retransmission)) = self.board.next_to_send(repair) else {
                break;
            };
            let len = self.board.seg(i).len();
            if retransmission {
                self.retransmitted += 1;
            }
            self.send_segment(i, retransmission, now, ack, send);
            if pace {
                self.pacer.sent(len, self.mss, rate, now);
            }
        }
        let pipe = self.board.pipe();
        if queued < self.mss
            && self.board.unsent == 0
            && self.board.lost_bytes == 0
            && pipe + self.mss < self.cc.cwnd()
        {
            // Nothing more to send though the window has room: rate
            // samples until this is delivered understate the path.
            self.rate.app_limited(pipe);
        }
    }

    /// Sends segment `i` of the scoreboard; a retransmission carries the
    /// current acknowledgment and window.
    fn send_segment(
        &mut self,
        i: usize,
        again: bool,
        now: Instant,
        ack: Option<(u32, u16)>,
        send: &mut impl FnMut(&[u8]),
    ) {
        let seg = self.board.seg_mut(i);
        let len = seg.len();
        if let (true, Some((ack, window))) = (again, ack) {
            crate::segment::set_ack(&mut seg.packet, seg.offset, ack);
            crate::segment::set_window(&mut seg.packet, seg.offset, window);
        }
        send(&seg.packet);
        let stamp = self.rate.stamp(now, self.board.in_flight > 0);
        self.board.mark_sent(i, now, stamp);
        self.last_sent = now;
        if let Controller::Cubic(c) = &mut self.cc {
            c.on_sent(len);
        }
        // The probe is (re)started by new data (RFC 8985 7.2), the timeout
        // only if it was not running.
        if !again || self.pto_at.is_none() {
            self.arm_timers(now, false);
        }
    }

    /// Whether there is anything to send or time.
    pub fn is_active(&self) -> bool {
        !self.board.is_empty() || self.rto_at.is_some() || self.probe_due
    }

    /// Every packet held, for recycling when the connection goes.
    pub fn drain(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.board.drain()
    }

    #[cfg(test)]
    fn set_cubic(&mut self, cwnd: usize, ssthresh: usize) {
        if let Controller::Cubic(c) = &mut self.cc {
            c.cwnd = cwnd;
            c.ssthresh = ssthresh;
        }
    }

    #[cfg(test)]
    fn state_of(&self, start: u32) -> Option<State> {
        (0..self.board.segments())
            .map(|i| self.board.seg(i))
            .find(|s| s.start == start)
            .map(|s| s.state)
    }
}

#[cfg(test)]
mod tests;
