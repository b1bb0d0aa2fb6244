//! Out-of-order data held in front of smoltcp.
//!
//! smoltcp keeps at most a few ranges of out-of-order data per socket (32
//! with the feature we build with) and throws away what would make more.
//! After a burst of losses on a long path (a bottleneck queue overflowing
//! in slow start), a window holds thousands of holes: smoltcp discarded
//! almost everything past the first ones, and the sender had to send the
//! whole window again, one round trip per few holes. Linux keeps every
//! out-of-order segment. So do we: a segment that does not continue the
//! stream is held here, in sequence order, and handed to smoltcp once the
//! hole before it is filled; smoltcp only ever sees data in order. What is
//! held is reported to the peer in SACK blocks (see [`Reassembly::sack`]),
//! on ACKs we send for it at once, as a Linux receiver does.

use std::collections::BTreeMap;

use crate::segment::{after, before, Segment, RST, SYN};

/// A segment waiting for the hole before it.
struct Held {
    seq: u32,
    end: u32,
    packet: Vec<u8>,
}

/// Blocks remembered as recently added to. Linux keeps four, but it
/// answers every out-of-order segment with an ACK of its own; one turn of
/// ours can add to many blocks (a batch of datagrams after a stall), and
/// its ACKs name them all.
const RECENT_BLOCKS: usize = 16;

/// The SACK blocks of one ACK.
pub(crate) type SackBlocks = [Option<(u32, u32)>; 3];

pub(crate) struct Reassembly {
    /// The next sequence number smoltcp needs (as far as it has been fed).
    rcv_nxt: u32,
    /// Held segments by their distance past `rcv_nxt` when they came...
    /// kept as absolute stream positions so the order survives wrapping.
    held: BTreeMap<u64, Held>,
    /// The stream position of `rcv_nxt`.
    pos: u64,
    /// What is held, merged into ranges: start position to end position.
    ranges: BTreeMap<u64, u64>,
    pub held_bytes: usize,
    /// Positions of the segments held last, one per block, the newest
    /// first: the SACK blocks are named in this order (RFC 2018: the block
    /// of the segment that came last first, then the blocks reported most
    /// recently). One ACK answers all that a turn took in; a turn that
    /// made or grew several blocks names all of them, and each stays named
    /// on the next ACKs (one of them may be lost) instead of only the
    /// lowest ones being repeated: a block the sender never hears of is
    /// data it sends again for nothing.
    recent: Vec<u64>,
    /// How many of `recent` (the first ones) were added to since the last
    /// ACK.
    fresh: usize,
    /// Blocks the turn added to that its ACK had no room for: each set is
    /// sent in an ACK of its own (see [`Reassembly::take_extra`]).
    extra: Vec<SackBlocks>,
    /// An ACK should go now (something was held).
    pub ack_due: bool,
    /// A segment came that was all here already: the next ACK names it
    /// (a D-SACK, RFC 2883), so the sender can tell a needless
    /// retransmission and undo the slowdown it took for it (Linux does).
    duplicate: Option<(u32, u32)>,
}

/// What to do with an inbound segment.
pub(crate) enum Verdict {
    /// Hand it to smoltcp (then whatever `released` holds, in order).
    Pass(Vec<u8>),
    /// Held here until the hole before it is filled.
    Held,
    /// Not for smoltcp (past the window).
    Dropped(Vec<u8>),
}

impl Reassembly {
    /// Starts after the peer's SYN.
    pub fn new(rcv_nxt: u32) -> Reassembly {
        Reassembly {
            rcv_nxt,
            held: BTreeMap::new(),
            pos: 0,
            ranges: BTreeMap::new(),
            held_bytes: 0,
            recent: Vec::new(),
            fresh: 0,
            extra: Vec::new(),
            ack_due: false,
            duplicate: None,
        }
    }

    fn position(&self, seq: u32) -> u64 {
        self.pos
            .wrapping_add(seq.wrapping_sub(self.rcv_nxt) as i32 as i64 as u64)
    }

    fn advance(&mut self, to: u32) {
        if after(to, self.rcv_nxt) {
            self.pos = self.position(to);
            self.rcv_nxt = to;
        }
    }

    /// An inbound segment of the connection. `edge` is the right edge of
    /// the window we advertised: nothing past it is held. Segments it
    /// frees (the hole before them filled) go to `released`, in order,
    /// after the verdict's own packet.
    pub fn on_segment(
        &mut self,
        seg: &Segment,
        packet: Vec<u8>,
        edge: Option<u32>,
        released: &mut impl FnMut(Vec<u8>),
    ) -> Verdict {
        let end = seg.end();
        if seg.has(SYN) || seg.has(RST) || end == seg.seq {
            return Verdict::Pass(packet);
        }
        if edge.is_some_and(|e| after(end, e)) {
            // Past the window we offered: a sender has no business there
            // (or it probes a zero window). Dropped, and answered with an
            // ACK saying where we are; smoltcp, whose buffer is larger
            // than the window, would have taken it, and its pages too.
            self.ack_due = true;
            return Verdict::Dropped(packet);
        }
        if !after(seg.seq, self.rcv_nxt) {
            if !after(end, self.rcv_nxt) {
                // All old: a retransmission that was not needed.
                self.duplicate = Some((seg.seq, end));
                self.ack_due = true;
            }
            // In order (or partly old): it goes, and what it joins to.
            self.advance(end);
            self.release(released);
            return Verdict::Pass(packet);
        }
        let key = self.position(seg.seq);
        self.ack_due = true;
        match self.held.get(&key) {
            Some(h) if !before(h.end, end) => self.duplicate = Some((seg.seq, end)),
            _ => {
                let len = end.wrapping_sub(seg.seq) as usize;
                self.add_range(key, key + len as u64);
                if let Some(old) = self.held.insert(
                    key,
                    Held {
                        seq: seg.seq,
                        end,
                        packet,
                    },
                ) {
                    self.held_bytes -= old.end.wrapping_sub(old.seq) as usize;
                }
                self.held_bytes += len;
            }
        }
        self.touch(key);
        Verdict::Held
    }

    /// The block holding stream position `at`, if one does.
    fn block(&self, at: u64) -> Option<(u64, u64)> {
        let (&s, &e) = self.ranges.range(..=at).next_back()?;
        (e > at).then_some((s, e))
    }

    /// The block holding `at` was just added to: it goes first.
    fn touch(&mut self, at: u64) {
        let Some((start, _)) = self.block(at) else {
            return;
        };
        let pos = self.pos;
        let mut recent = std::mem::take(&mut self.recent);
        let was = recent
            .iter()
            .position(|&p| self.block(p).is_some_and(|(s, _)| s == start));
        recent.retain(|&p| p >= pos && self.block(p).is_some_and(|(s, _)| s != start));
        recent.insert(0, at);
        recent.truncate(RECENT_BLOCKS);
        if was.is_none_or(|i| i >= self.fresh) {
            self.fresh += 1;
        }
        self.fresh = self.fresh.min(recent.len());
        self.recent = recent;
    }

    fn add_range(&mut self, mut start: u64, mut end: u64) {
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        while let Some((&s, &e)) = self.ranges.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// Hands over the held segments the stream has reached.
    fn release(&mut self, released: &mut impl FnMut(Vec<u8>)) {
        while let Some(entry) = self.held.first_entry() {
            let h = entry.get();
            if after(h.seq, self.rcv_nxt) {
                break;
            }
            let h = entry.remove();
            self.held_bytes -= h.end.wrapping_sub(h.seq) as usize;
            self.advance(h.end);
            released(h.packet);
        }
        while let Some(entry) = self.ranges.first_entry() {
            if *entry.get() > self.pos {
                if *entry.key() < self.pos {
                    let end = entry.remove();
                    self.ranges.insert(self.pos, end);
                }
                break;
            }
            entry.remove();
        }
    }

    pub fn rcv_nxt(&self) -> u32 {
        self.rcv_nxt
    }

    #[cfg(test)]
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether the next ACK has something to say beyond smoltcp's own (a
    /// SACK block or a D-SACK).
    pub fn has_blocks(&self) -> bool {
        !self.held.is_empty() || self.duplicate.is_some()
    }

    /// Up to three SACK blocks: a D-SACK first if a duplicate came (it is
    /// said once), then the blocks added to most recently, newest first,
    /// then the others from the lowest. When the turn added to more
    /// blocks than fit, this ACK names the lowest of them, and the rest
    /// wait in [`Reassembly::take_extra`] for the ACKs that follow it.
    pub fn sack(&mut self) -> SackBlocks {
        let seq = |p: u64| self.rcv_nxt.wrapping_add(p.wrapping_sub(self.pos) as u32);
        let mut out = [None; 3];
        let mut n = 0;
        if let Some(d) = self.duplicate.take() {
            out[0] = Some(d);
            n = 1;
        }
        // The recent blocks (each in a block of its own, see `touch`),
        // newest first; the first `fresh` were added to this turn.
        let mut extra = std::mem::take(&mut self.extra);
        extra.clear();
        // (On the stack: this runs for every ACK that has blocks.)
        let mut recent = [(0u64, 0u64); RECENT_BLOCKS];
        let mut len = 0;
        for (slot, block) in recent
            .iter_mut()
            .zip(self.recent.iter().filter_map(|&p| self.block(p)))
        {
            *slot = block;
            len += 1;
        }
        let fresh = self.fresh.min(len);
        let room = out.len() - n;
        let this_ack = if fresh > room {
            // More than this ACK holds: the turn's ACKs name them from the
            // lowest, this one first, as a Linux receiver's ACK for each
            // segment would have. A Linux sender takes data it hears of
            // below data already acknowledged as reordering, and once it
            // has seen reordering it waits a quarter of the RTT before it
            // takes any hole for a loss.
            let blocks = &mut recent[..fresh];
            blocks.sort_unstable();
            for chunk in blocks[room..].chunks(3) {
                let mut ack = [None; 3];
                for (slot, &(s, e)) in ack.iter_mut().zip(chunk.iter().rev()) {
                    *slot = Some((seq(s), seq(e)));
                }
                extra.push(ack);
            }
            blocks[..room].reverse();
            &recent[..room]
        } else {
            &recent[..room.min(len)]
        };
        let mut named = [None; 3];
        for &(s, e) in this_ack {
            named[n] = Some(s);
            out[n] = Some((seq(s), seq(e)));
            n += 1;
        }
        // Then the others, from the lowest.
        for (&s, &e) in &self.ranges {
            if n == out.len() {
                break;
            }
            if !named.contains(&Some(s)) {
                out[n] = Some((seq(s), seq(e)));
                n += 1;
            }
        }
        self.extra = extra;
        self.fresh = 0;
        out
    }

    /// SACK blocks for ACKs beyond the turn's own: the blocks it added to
    /// that its ACK had no room for (a Linux receiver would have named
    /// each in the ACK of the segment that grew it). Without them the
    /// sender takes that data as lost and sends it again.
    pub fn take_extra(&mut self) -> Vec<SackBlocks> {
        std::mem::take(&mut self.extra)
    }

    /// Whether ACKs are owed beyond the turn's own.
    pub fn has_extra(&self) -> bool {
        !self.extra.is_empty()
    }

    /// Every held packet, for recycling.
    pub fn drain(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.held_bytes = 0;
        self.ranges.clear();
        self.recent.clear();
        self.fresh = 0;
        self.extra.clear();
        std::mem::take(&mut self.held)
            .into_values()
            .map(|h| h.packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::tests::segment;
    use smoltcp::wire::TcpControl;

    /// Offers a segment of `len` bytes at `seq`: whether it passed, and the
    /// held segments it released.
    fn offer(r: &mut Reassembly, seq: u32, len: usize) -> (bool, Vec<u32>) {
        let p = segment(seq as i32, 1, &vec![9; len], TcpControl::None, [None; 3]);
        let s = Segment::parse(&p).unwrap();
        let mut released = Vec::new();
        let verdict = r.on_segment(&s, p, Some(100_000), &mut |p: Vec<u8>| {
            released.push(Segment::parse(&p).unwrap().seq)
        });
        (matches!(verdict, Verdict::Pass(_)), released)
    }

    #[test]
    fn segments_past_a_hole_wait_and_follow_it_in_order() {
        let mut r = Reassembly::new(1000);
        assert_eq!(offer(&mut r, 1000, 100), (true, vec![]), "in order");
        assert_eq!(offer(&mut r, 1300, 100), (false, vec![]), "past a hole");
        assert_eq!(offer(&mut r, 1200, 100), (false, vec![]));
        assert_eq!(offer(&mut r, 1500, 100), (false, vec![]));
        assert_eq!(offer(&mut r, 1500, 100), (false, vec![]), "a duplicate");
        assert_eq!(r.sack()[0], Some((1500, 1600)), "named once as a D-SACK");
        assert!(r.ack_due);
        assert_eq!(r.held_bytes, 300);
        assert_eq!(
            r.sack(),
            [Some((1500, 1600)), Some((1200, 1400)), None],
            "the newest block first"
        );
        assert_eq!(
            offer(&mut r, 1100, 100),
            (true, vec![1200, 1300]),
            "the hole filled"
        );
        assert_eq!(r.rcv_nxt(), 1400);
        assert_eq!(r.sack(), [Some((1500, 1600)), None, None]);
        assert_eq!(r.held_bytes, 100);
        assert_eq!(offer(&mut r, 1400, 100), (true, vec![1500]));
        assert!(!r.is_holding());
        assert_eq!(r.sack(), [None; 3]);
        assert_eq!(
            offer(&mut r, 1000, 100),
            (true, vec![]),
            "old: smoltcp acknowledges it"
        );
        assert_eq!(r.sack(), [Some((1000, 1100)), None, None], "a D-SACK");
    }

    #[test]
    fn the_blocks_a_turn_added_to_are_named_lowest_first_across_its_acks_and_stay_named() {
        let mut r = Reassembly::new(0);
        // Five holes in one window; the turn's single ACK comes after.
        for seq in [100, 300, 500, 700, 900] {
            offer(&mut r, seq, 100);
        }
        assert_eq!(
            r.sack(),
            [Some((500, 600)), Some((300, 400)), Some((100, 200))],
            "the turn's ACK names its lowest three"
        );
        assert_eq!(
            r.take_extra(),
            vec![[Some((900, 1000)), Some((700, 800)), None]],
            "the others go in an ACK of their own, after it"
        );
        // The next turn grows the oldest block and a middle one.
        offer(&mut r, 200, 50);
        offer(&mut r, 600, 100);
        assert_eq!(
            r.sack(),
            [Some((500, 800)), Some((100, 250)), Some((900, 1000))],
            "what this turn touched first (one block now), then what was named last"
        );
        assert!(r.take_extra().is_empty(), "all fit");
        // The holes before them fill: what was released is not named.
        assert_eq!(offer(&mut r, 0, 100), (true, vec![100, 200]));
        assert_eq!(offer(&mut r, 250, 50), (true, vec![300]));
        assert_eq!(r.sack(), [Some((500, 800)), Some((900, 1000)), None]);
    }

    #[test]
    fn nothing_past_the_window_is_held_and_sequence_numbers_wrap() {
        let mut r = Reassembly::new(u32::MAX - 50);
        assert_eq!(
            offer(&mut r, 200_000, 100),
            (false, vec![]),
            "past the edge"
        );
        assert!(r.ack_due, "answered");
        assert!(!r.is_holding(), "not kept");
        assert_eq!(offer(&mut r, 50, 100), (false, vec![]));
        assert_eq!(offer(&mut r, u32::MAX - 50, 100), (true, vec![]));
        assert_eq!(r.rcv_nxt(), 49, "across the wrap");
        assert_eq!(offer(&mut r, 40, 20), (true, vec![50]), "partly old");
        assert_eq!(r.rcv_nxt(), 150);
    }
}
