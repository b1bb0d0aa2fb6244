//! Loss recovery around smoltcp: the parts of NewReno and of a tail-loss
//! probe that smoltcp lacks, done by showing it duplicate ACKs.
//!
//! smoltcp retransmits a lost segment quickly only after three duplicate
//! ACKs, and then only that one; any other loss in the same window waits
//! for its retransmission timeout, which is at least one second. A burst
//! that overflows a peer's socket buffer (wireguard-go's, measured) loses
//! several segments at once, so a transfer stalls for a second at every
//! loss. Two things fix that without changing smoltcp:
//!
//! - a *partial* ACK during recovery (it acknowledges the retransmitted
//!   segment but not everything sent before the loss) means the next
//!   segment was lost too; NewReno retransmits it at once. We hand smoltcp
//!   that ACK three more times, and it does.
//! - when data waits unacknowledged well past the round trip with no
//!   progress (a lost tail, or a fast retransmission that was itself
//!   lost), we show smoltcp an ACK made from the connection's current
//!   state, once with a window one unit smaller (not a duplicate: it resets
//!   smoltcp's count, which fires only at exactly three) and three times
//!   more, so it retransmits the first unacknowledged segment after a few
//!   round trips instead of a second. Probes back off, and stop after a
//!   few; they are never made while only a FIN is outstanding (see
//!   `data_waiting`).
//!
//! Duplicate ACKs are ordinary TCP: the worst a spurious one does is one
//! needless retransmission. Measured (RELIABILITY.md): 8 MiB through 5%
//! loss each way, 18.2 s -> 3.9 s down, 19.2 s -> 4.8 s up.

use std::time::Duration;

use underpass_core::Instant;

use crate::segment::{before, Segment};

/// Copies of an ACK that make smoltcp retransmit (its threshold is three
/// duplicates).
pub(crate) const DUPLICATES: usize = 3;
/// The shortest wait before a probe; the round trip through a tunnel on
/// one machine is far shorter, but scheduling jitter is not.
const MIN_PROBE: Duration = Duration::from_millis(10);
/// Past this smoltcp's own retransmission timer is as good.
const MAX_PROBE: Duration = Duration::from_millis(800);
/// Probes without progress before giving up on probing.
const MAX_PROBES: u32 = 4;

#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Highest ACK from the peer.
    snd_una: Option<u32>,
    /// In recovery until the peer acknowledges this.
    recover: Option<u32>,
    /// The window field of the peer's last segment: a repeated ACK must
    /// carry it, or smoltcp takes it for a window update.
    last_window: u16,
    /// The acknowledgment number of our last segment: the peer's next
    /// sequence number, which a made-up ACK from it must carry.
    rcv_nxt: Option<u32>,
    /// The end of the highest data sent (a FIN not counted).
    data_end: Option<u32>,
    /// When the peer last acknowledged new data, or when data started
    /// waiting.
    progress_at: Option<Instant>,
    probes: u32,
    srtt: Option<Duration>,
    /// A segment being timed for the round trip: its end and when it left.
    sample: Option<(u32, Instant)>,
}

impl Recovery {
    /// Whether data we sent is not yet acknowledged.
    pub fn waiting(&self, snd_max: Option<u32>) -> bool {
        matches!((self.snd_una, snd_max), (Some(una), Some(max)) if before(una, max))
    }

    /// Whether *data* (not only a FIN) waits for its ACK. Duplicate ACKs
    /// must not be shown to smoltcp otherwise: its fast retransmit with
    /// nothing in the send buffer sends nothing and cancels the timer that
    /// would have retransmitted the FIN, which then never goes again.
    fn data_waiting(&self) -> bool {
        matches!((self.snd_una, self.data_end), (Some(una), Some(end)) if before(una, end))
    }

    /// An outbound segment; `retransmission` as ack_seq found it.
    pub fn on_sent(&mut self, seg: &Segment, retransmission: bool, now: Instant) {
        if seg.has(crate::segment::ACK) {
            self.rcv_nxt = Some(seg.ack);
        }
        if seg.payload == 0 {
            return;
        }
        let end = seg.seq.wrapping_add(seg.payload as u32);
        if self.data_end.is_none_or(|e| before(e, end)) {
            self.data_end = Some(end);
        }
        if retransmission {
            self.sample = None; // Karn: no round trip from a retransmission
            return;
        }
        if self.sample.is_none() {
            self.sample = Some((seg.end(), now));
        }
        if self.progress_at.is_none() {
            self.progress_at = Some(now);
        }
    }

    /// An inbound segment of the connection; returns how many copies of it
    /// to hand smoltcp after the original.
    pub fn on_received(&mut self, seg: &Segment, snd_max: Option<u32>, now: Instant) -> usize {
        if !seg.has(crate::segment::ACK) {
            return 0;
        }
        let advanced = self.snd_una.is_none_or(|una| before(una, seg.ack));
        if advanced {
            self.snd_una = Some(seg.ack);
            self.probes = 0;
            self.progress_at = if self.waiting(snd_max) {
                Some(now)
            } else {
                None
            };
            if let Some((end, sent)) = self.sample {
                if !before(seg.ack, end) {
                    let sample = now.saturating_duration_since(sent);
                    self.srtt = Some(self.srtt.map_or(sample, |s| (s * 7 + sample) / 8));
                    self.sample = None;
                }
            }
        }
        self.last_window = seg.window;
        match self.recover {
            Some(r)
                if advanced && before(seg.ack, r) && seg.is_pure_ack() && self.data_waiting() =>
            {
                DUPLICATES
            }
            Some(r) if !before(seg.ack, r) => {
                self.recover = None;
                0
            }
            _ => 0,
        }
    }

    /// smoltcp retransmitted: recovery lasts until everything sent so far
    /// is acknowledged.
    pub fn entered_recovery(&mut self, snd_max: Option<u32>) {
        if self.recover.is_none() {
            self.recover = snd_max;
        }
    }

    /// When a tail-loss probe is due, if one may be.
    pub fn probe_at(&self) -> Option<Instant> {
        if !self.data_waiting() || self.probes >= MAX_PROBES || self.rcv_nxt.is_none() {
            return None;
        }
        // A zero window is flow control, not loss.
        if self.last_window == 0 {
            return None;
        }
        let base = self.srtt.map_or(MIN_PROBE, |s| (s * 4).max(MIN_PROBE));
        let wait = (base * (1 << self.probes)).min(MAX_PROBE);
        self.progress_at.map(|t| t + wait)
    }

    /// Takes a due probe: the ACK to show smoltcp, as the peer would send
    /// it now (sequence, acknowledgment, window), made from the current
    /// state rather than a copy of an old packet: an old one may be outside
    /// the window by now, and smoltcp would drop it or answer it.
    pub fn take_probe(&mut self, snd_max: Option<u32>, now: Instant) -> Option<(u32, u32, u16)> {
        if self.probe_at().is_none_or(|t| t > now) {
            return None;
        }
        self.probes += 1;
        self.progress_at = Some(now);
        self.recover = self.recover.or(snd_max);
        Some((self.rcv_nxt?, self.snd_una?, self.last_window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn seg(ack: u32, payload: usize) -> Segment {
        Segment {
            src: "10.0.0.2:80".parse::<SocketAddr>().unwrap(),
            dst: "10.0.0.1:40000".parse::<SocketAddr>().unwrap(),
            offset: 20,
            seq: 5000,
            ack,
            flags: crate::segment::ACK,
            window: 1000,
            payload,
        }
    }

    fn sent(seq: u32, len: usize) -> Segment {
        Segment {
            seq,
            ack: 0,
            payload: len,
            ..seg(0, 0)
        }
    }

    #[test]
    fn a_partial_ack_in_recovery_asks_for_duplicates() {
        let mut r = Recovery::default();
        let t = Instant::from_millis(1);
        r.on_received(&seg(1000, 0), Some(1000), t);
        for i in 0..10 {
            r.on_sent(&sent(1000 + i * 100, 100), false, t);
        }
        let max = Some(2000);
        r.entered_recovery(max);
        assert_eq!(
            r.on_received(&seg(1300, 0), max, t),
            DUPLICATES,
            "partial ACK"
        );
        assert_eq!(
            r.on_received(&seg(1300, 0), max, t),
            0,
            "a plain duplicate is not partial"
        );
        assert_eq!(
            r.on_received(&seg(2000, 0), max, t),
            0,
            "all acknowledged: recovery ends"
        );
        assert_eq!(
            r.on_received(&seg(2100, 0), Some(3000), t),
            0,
            "no longer in recovery"
        );
    }

    #[test]
    fn a_silent_tail_gets_probes_that_back_off_and_stop() {
        let mut r = Recovery::default();
        let t0 = Instant::from_millis(100);
        r.on_received(&seg(1000, 0), Some(1000), t0);
        r.on_sent(&sent(1000, 500), false, t0);
        let max = Some(1500);
        let first = r.probe_at().expect("data waits");
        assert_eq!(first, t0 + MIN_PROBE);
        assert!(
            r.take_probe(max, first - Duration::from_millis(1))
                .is_none(),
            "not yet"
        );
        let mut at = first;
        let mut gaps = Vec::new();
        while let Some(next) = r.probe_at() {
            assert!(r.take_probe(max, next).is_some());
            gaps.push(next - at);
            at = next;
        }
        assert_eq!(r.probes, MAX_PROBES);
        assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "backs off: {gaps:?}");
        // Progress resets everything; with nothing left waiting, no probe.
        r.on_received(&seg(1500, 0), max, at);
        assert_eq!(r.probe_at(), None);
    }

    #[test]
    fn round_trips_are_measured_and_stretch_the_probe() {
        let mut r = Recovery::default();
        let t0 = Instant::from_millis(0);
        r.on_received(&seg(1000, 0), Some(1000), t0);
        r.on_sent(&sent(1000, 100), false, t0);
        r.on_received(&seg(1100, 0), Some(1100), t0 + Duration::from_millis(50));
        assert_eq!(r.srtt, Some(Duration::from_millis(50)));
        let t1 = t0 + Duration::from_millis(60);
        r.on_sent(&sent(1100, 100), false, t1);
        assert_eq!(r.probe_at(), Some(t1 + Duration::from_millis(200)));
    }
}
