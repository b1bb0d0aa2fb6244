//! Our side's receive window, grown as a transfer needs it (Linux's
//! receive-buffer autotuning, "dynamic right-sizing").
//!
//! smoltcp advertises all the free space of its receive buffer. The buffer
//! is sized for the largest window a connection may reach; what a
//! connection is *shown* to be allowed starts smaller and grows to about
//! twice what the application read in the last round trip, so a fast
//! reader over a long path gets the bandwidth-delay product (and more to
//! grow) while a slow reader never has megabytes queued for it. The window
//! is cut on smoltcp's outgoing segments; its right edge never moves back.

use std::time::Duration;

use underpass_core::Instant;

use crate::segment::{after, before};

/// Measuring intervals are at least this long (loopback round trips are
/// too short to count bytes over).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub(crate) struct Receiver {
    /// Our window scale: the peer shifts our window field by it.
    scale: u8,
    mss: usize,
    /// The most the window may be (the receive buffer).
    max: usize,
    /// The window currently allowed.
    target: usize,
    /// The highest right edge advertised.
    edge: Option<u32>,
    /// Bytes the application read in the best interval so far.
    space: usize,
    /// Bytes read in total, and at the start of this interval, which began
    /// at `since`.
    read: u64,
    read_at_start: u64,
    since: Instant,
}

impl Receiver {
    pub fn new(scale: u8, mss: usize, initial: usize, max: usize, now: Instant) -> Receiver {
        Receiver {
            scale,
            mss,
            max,
            target: initial.min(max),
            edge: None,
            space: 10 * mss,
            read: 0,
            read_at_start: 0,
            since: now,
        }
    }

    /// The window the peer may fill now.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Brings the window down to at most `window` (the budget is short):
    /// what was offered stays offered, the edge just stops moving until
    /// the window is that small.
    pub fn shrink_to(&mut self, window: usize) {
        self.target = self.target.min(window.max(self.mss));
    }

    /// Back to the initial window (the connection went quiet); it grows
    /// again as the next transfer needs.
    pub fn reset(&mut self, initial: usize) {
        self.target = self.target.min(initial);
        self.space = 10 * self.mss;
    }

    /// The right edge of the window last advertised.
    pub fn edge(&self) -> Option<u32> {
        self.edge
    }

    /// The application read `n` bytes.
    pub fn on_read(&mut self, n: usize) {
        self.read += n as u64;
    }

    /// Once per round trip: if the application read more than ever
    /// before, the window becomes twice that plus room to keep growing.
    /// `limit` is what the memory budget lets the window grow to.
    fn autotune(&mut self, rtt: Duration, now: Instant, limit: usize) {
        if now.saturating_duration_since(self.since) < rtt.max(MIN_INTERVAL) {
            return;
        }
        let copied = (self.read - self.read_at_start) as usize;
        self.read_at_start = self.read;
        self.since = now;
        if copied <= self.space {
            return;
        }
        let mut window = 2 * copied as u64 + 16 * self.mss as u64;
        // Still accelerating (slow start): leave room for the next round.
        // (In 64 bits: a browser's usize is 32.)
        let growth = window * (copied - self.space) as u64 / self.space.max(1) as u64;
        window += 2 * growth.min(window);
        let window = usize::try_from(window).unwrap_or(usize::MAX);
        self.space = copied;
        if window > self.target {
            self.target = window.min(self.max).min(limit.max(self.target));
            tracing::trace!(copied, rtt = ?rtt, window = self.target, "TCP receive window grows");
        }
    }

    /// The window field for an outgoing segment acknowledging `ack`, given
    /// smoltcp's own (its free buffer space).
    pub fn window_field(
        &mut self,
        ack: u32,
        smoltcp: u16,
        rtt: Duration,
        now: Instant,
        limit: usize,
    ) -> u16 {
        self.autotune(rtt, now, limit);
        let unit = 1usize << self.scale;
        let mut want = self.target.div_ceil(unit);
        if let Some(edge) = self.edge {
            // Never take back what was offered.
            if after(edge, ack) {
                want = want.max((edge.wrapping_sub(ack) as usize).div_ceil(unit));
            }
        }
        let field = want.min(usize::from(smoltcp)).min(0xffff) as u16;
        let edge = ack.wrapping_add((usize::from(field) << self.scale) as u32);
        if self.edge.is_none_or(|e| before(e, edge)) {
            self.edge = Some(edge);
        }
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    #[test]
    fn the_window_grows_with_what_the_application_reads_per_round_trip() {
        let rtt = Duration::from_millis(50);
        let mut r = Receiver::new(7, MSS, 64 * 1024, 8 << 20, Instant::ZERO);
        let mut now = Instant::ZERO;
        let mut ack = 1u32;
        assert_eq!(r.window_field(ack, u16::MAX, rtt, now, usize::MAX), 512);
        // A reader that takes a full window each round trip.
        let mut windows = Vec::new();
        for _ in 0..10 {
            let n = r.target();
            r.on_read(n);
            ack = ack.wrapping_add(n as u32);
            now += rtt;
            r.window_field(ack, u16::MAX, rtt, now, usize::MAX);
            windows.push(r.target());
        }
        assert!(windows.windows(2).all(|w| w[1] >= w[0]), "{windows:?}");
        assert_eq!(
            *windows.last().unwrap(),
            8 << 20,
            "reached the buffer: {windows:?}"
        );
    }

    #[test]
    fn a_slow_reader_keeps_a_small_window_and_the_edge_never_retreats() {
        let rtt = Duration::from_millis(50);
        let mut r = Receiver::new(7, MSS, 64 * 1024, 8 << 20, Instant::ZERO);
        let mut now = Instant::ZERO;
        let f = r.window_field(1, u16::MAX, rtt, now, usize::MAX);
        for _ in 0..20 {
            r.on_read(10_000);
            now += rtt;
            r.window_field(1, u16::MAX, rtt, now, usize::MAX);
        }
        assert_eq!(r.target(), 64 * 1024);
        // smoltcp's buffer fills (nothing read): the offered edge stays.
        assert_eq!(r.window_field(1, 3, rtt, now, usize::MAX), 3);
        assert_eq!(r.window_field(1, u16::MAX, rtt, now, usize::MAX), f);
    }

    #[test]
    fn the_budget_caps_growth() {
        let rtt = Duration::from_millis(10);
        let mut r = Receiver::new(7, MSS, 64 * 1024, 8 << 20, Instant::ZERO);
        let mut now = Instant::ZERO;
        for _ in 0..20 {
            r.on_read(r.target());
            now += rtt;
            r.window_field(1, u16::MAX, rtt, now, 256 * 1024);
        }
        assert_eq!(r.target(), 256 * 1024);
    }
}
