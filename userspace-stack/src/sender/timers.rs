//! The sender's clocks: RACK's reordering window and loss detection, the
//! tail-loss probe and the retransmission timeout (RFC 8985, RFC 6298),
//! and what they make the sender do.

use std::time::Duration;

use underpass_core::Instant;

use super::{Controller, Recovery, Sender, MAX_ACK_DELAY, MIN_PTO};

impl Sender {
    /// RACK over the scoreboard; enters recovery on a first loss.
    pub(super) fn detect_losses(&mut self, now: Instant, pipe_before: usize) {
        let Some((sent, end, rtt)) = self.rack else {
            return;
        };
        let in_recovery = self.recovery.is_some();
        let reo_wnd = if !self.reordering && (in_recovery || self.board.sacked_segments >= 3) {
            Duration::ZERO
        } else {
            (self.rtt.min() / 4).min(self.rtt.srtt())
        };
        let (lost, next) = self.board.detect_losses((sent, end), rtt, reo_wnd, now);
        self.reorder_at = next;
        self.declare_lost(lost, pipe_before, now);
    }

    pub(super) fn declare_lost(&mut self, bytes: usize, pipe_before: usize, now: Instant) {
        if bytes == 0 {
            return;
        }
        if let Controller::Bbr(b) = &mut self.cc {
            b.on_lost(bytes);
        }
        if self.recovery.is_none() {
            self.cc.on_congestion(pipe_before.max(self.mss), now);
            self.recovery = Some(Recovery::Fast {
                point: self.snd_max,
            });
            self.pto_at = None;
        }
    }

    /// Restarts the timeout when the cumulative ACK moved (or when data
    /// first goes out) and the probe after any progress.
    pub(super) fn arm_timers(&mut self, now: Instant, restart_rto: bool) {
        let waiting = self.board.in_flight + self.board.lost_bytes > 0;
        if !waiting {
            self.rto_at = None;
            self.pto_at = None;
            return;
        }
        if restart_rto || self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto_backed_off(self.backoff));
        }
        if self.recovery.is_none() && !self.probing && self.rtt.has_sample() {
            let srtt = self.rtt.srtt();
            let mut pto = srtt * 2;
            if self.board.in_flight <= self.mss {
                pto = pto.max(srtt * 3 / 2 + MAX_ACK_DELAY);
            }
            let pto = pto.max(MIN_PTO);
            let at = now + pto;
            self.pto_at = Some(self.rto_at.map_or(at, |r| at.min(r)));
        }
    }

    /// When [`Sender::on_timeout`] or [`Sender::transmit`] must run next.
    pub fn poll_at(&self) -> Option<Instant> {
        // Held segments wait for the pacer only; lost ones also for the
        // window (then for an ACK, which needs no timer).
        let waiting = self.waiting();
        let pacing = (waiting > 0).then(|| self.pacer.due(waiting).unwrap_or(Instant::ZERO));
        let probe = self.probe_due.then_some(Instant::ZERO);
        [self.rto_at, self.pto_at, self.reorder_at, pacing, probe]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers that are due: RACK's reordering window, the
    /// tail-loss probe, the retransmission timeout. What they resend goes
    /// with the next [`Sender::transmit`].
    /// Bytes that wait only for the pacer: held new segments, and lost
    /// ones if the window lets the first of them go again (else they wait
    /// for an ACK, which needs no timer).
    pub(super) fn waiting(&self) -> usize {
        let pipe = self.board.pipe();
        let repair = self
            .board
            .next_lost_len()
            .is_some_and(|len| self.unlimited || pipe == 0 || pipe + len <= self.cc.cwnd());
        self.board.unsent + if repair { self.board.lost_bytes } else { 0 }
    }

    pub fn on_timeout(&mut self, now: Instant) {
        if self.reorder_at.is_some_and(|t| t <= now) {
            self.reorder_at = None;
            let pipe = self.board.pipe() + self.board.lost_bytes;
            self.detect_losses(now, pipe);
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.timeout(now);
        } else if self.pto_at.is_some_and(|t| t <= now) {
            self.pto_at = None;
            self.probing = true;
            self.probe_due = true;
        }
    }

    /// Retransmission timeout: everything in flight is lost, the window
    /// starts again from one segment, the timer backs off.
    pub(super) fn timeout(&mut self, now: Instant) {
        self.timeouts += 1;
        if self.board.in_flight + self.board.lost_bytes == 0 {
            self.rto_at = None;
            return;
        }
        tracing::debug!(
            srtt = ?self.rtt.srtt(),
            backoff = self.backoff,
            in_flight = self.board.in_flight,
            lost = self.board.lost_bytes,
            sacked = self.board.sacked_bytes,
            cwnd = self.cc.cwnd(),
            "TCP retransmission timeout"
        );
        self.board.mark_all_lost();
        self.cc.on_timeout();
        self.recovery = Some(Recovery::Timeout {
            point: self.snd_max,
        });
        self.backoff += 1;
        self.probing = false;
        self.pto_at = None;
        self.reorder_at = None;
        self.rto_at = Some(now + self.rtt.rto_backed_off(self.backoff));
    }

    /// Tail-loss probe: new data if the pacer holds some, else the newest
    /// segment in flight again, so its ACK (with SACK) tells what of the
    /// tail was lost.
    pub(super) fn send_probe(
        &mut self,
        now: Instant,
        ack: Option<(u32, u16)>,
        send: &mut impl FnMut(&[u8]),
    ) {
        let target = match self.board.next_to_send(|_| false) {
            Some((i, false)) => Some((i, false)),
            _ => self.board.last_in_flight().map(|i| (i, true)),
        };
        let Some((i, again)) = target else {
            return;
        };
        if again {
            self.retransmitted += 1;
        }
        self.send_segment(i, again, now, ack, send);
        self.rto_at = Some(now + self.rtt.rto_backed_off(self.backoff));
    }
}
