//! What the sender has in flight: every segment from the oldest
//! unacknowledged byte to the newest written, with its IP packet kept for
//! retransmission (smoltcp can resend only the first unacknowledged
//! segment, so every other repair is sent from here), its state as the
//! peer's cumulative and selective acknowledgments tell it (RFC 6675), and
//! its transmissions in time order for RACK (RFC 8985).
//!
//! Packets are kept, not copied: the buffer smoltcp wrote is the one held,
//! and it is recycled once acknowledged.

use std::collections::{BTreeSet, VecDeque};

use underpass_core::Instant;

use super::rate::Stamp;
use crate::segment::{after, before};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Written by smoltcp, held by the pacer.
    Unsent,
    InFlight,
    /// The peer has it (SACK); kept until the cumulative ACK passes it.
    Sacked,
    /// Declared lost and not sent again yet.
    Lost,
}

pub(crate) struct Seg {
    /// Its place among the segments ever pushed (in sequence order, and
    /// unchanged when an acknowledgment trims the segment's start).
    pos: u64,
    pub start: u32,
    pub end: u32,
    pub packet: Vec<u8>,
    /// Where the TCP header is in `packet`.
    pub offset: usize,
    pub state: State,
    /// The last transmission (meaningless while `Unsent`).
    pub xmit: Instant,
    pub retransmitted: bool,
    /// What the connection had delivered when it left (rate samples).
    stamp: Option<Stamp>,
}

impl std::fmt::Debug for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}..{} {:?} sent {:?}{}",
            self.start,
            self.end,
            self.state,
            self.xmit,
            if self.retransmitted { " again" } else { "" }
        )
    }
}

impl Seg {
    pub fn len(&self) -> usize {
        self.end.wrapping_sub(self.start) as usize
    }
}

/// The most recently sent of the segments an acknowledgment delivered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Newest {
    pub sent: Instant,
    pub end: u32,
    pub retransmitted: bool,
    pub stamp: Stamp,
}

/// What an acknowledgment newly told.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Delivery {
    /// Bytes newly acknowledged, cumulatively or selectively.
    pub bytes: usize,
    pub newest: Option<Newest>,
    /// A segment sent before an already-delivered one arrived (only now),
    /// without having been sent again: the path reorders.
    pub reordered: bool,
}

impl Delivery {
    fn note(&mut self, seg: &Seg, highest_sacked: Option<u32>) {
        self.bytes += seg.len();
        let newer = self
            .newest
            .is_none_or(|n| seg.xmit > n.sent || (seg.xmit == n.sent && after(seg.end, n.end)));
        if let (true, Some(stamp)) = (newer, seg.stamp) {
            self.newest = Some(Newest {
                sent: seg.xmit,
                end: seg.end,
                retransmitted: seg.retransmitted,
                stamp,
            });
        }
        if !seg.retransmitted && highest_sacked.is_some_and(|h| before(seg.end, h)) {
            self.reordered = true;
        }
    }
}

#[derive(Default)]
pub(crate) struct Scoreboard {
    segs: VecDeque<Seg>,
    /// Transmissions in time order: (when, segment position). An entry
    /// whose segment was acknowledged, sent again later or declared lost
    /// is stale and skipped.
    sent: VecDeque<(Instant, u64)>,
    /// Positions of segments declared lost and not sent again: they go
    /// again lowest first, as the receiver needs them to move on.
    lost: BTreeSet<u64>,
    next_pos: u64,
    pub in_flight: usize,
    pub unsent: usize,
    /// Unsent segments: always the last ones (the pacer sends in order).
    unsent_segs: usize,
    pub lost_bytes: usize,
    pub sacked_bytes: usize,
    pub sacked_segments: usize,
    /// The end of the highest SACKed segment.
    pub highest_sacked: Option<u32>,
    /// SACK blocks already applied, as (left, right done so far), so a
    /// block the peer repeats on every ACK is not walked again.
    applied: [(u32, u32); 4],
    applied_next: usize,
}

impl std::fmt::Debug for Scoreboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoreboard")
            .field("segs", &self.segs.len())
            .field("first", &self.segs.iter().take(4).collect::<Vec<_>>())
            .field("sent", &self.sent.iter().take(4).collect::<Vec<_>>())
            .field("lost", &self.lost.iter().take(4).collect::<Vec<_>>())
            .field("in_flight", &self.in_flight)
            .field("unsent", &self.unsent)
            .field("lost_bytes", &self.lost_bytes)
            .field("sacked", &(self.sacked_bytes, self.sacked_segments))
            .field("highest_sacked", &self.highest_sacked)
            .finish()
    }
}

impl Scoreboard {
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Bytes the network holds or will soon: in flight and waiting for the
    /// pacer (RFC 6675's pipe, plus what is queued behind it).
    pub fn pipe(&self) -> usize {
        self.in_flight + self.unsent
    }

    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.segs.len()
    }

    fn index(&self, pos: u64) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.pos < pos);
        (self.segs.get(i)?.pos == pos).then_some(i)
    }

    /// A segment smoltcp just wrote, in sequence order after the others.
    pub fn push(&mut self, start: u32, end: u32, packet: Vec<u8>, offset: usize, now: Instant) {
        let seg = Seg {
            pos: self.next_pos,
            start,
            end,
            packet,
            offset,
            state: State::Unsent,
            xmit: now,
            retransmitted: false,
            stamp: None,
        };
        self.next_pos += 1;
        self.unsent += seg.len();
        self.unsent_segs += 1;
        self.segs.push_back(seg);
    }

    /// The cumulative acknowledgment `ack`: drops every segment below it
    /// (their packets go to `recycle`).
    pub fn ack(&mut self, ack: u32, d: &mut Delivery, mut recycle: impl FnMut(Vec<u8>)) {
        while let Some(front) = self.segs.front() {
            if after(front.end, ack) {
                break;
            }
            let seg = self.segs.pop_front().expect("peeked");
            self.forget(&seg, d);
            recycle(seg.packet);
        }
        // An acknowledgment inside a segment (smoltcp resent a range cut
        // differently): the rest stays, the acknowledged part is counted.
        if let Some(front) = self.segs.front_mut() {
            if after(ack, front.start) && front.state != State::Unsent {
                let done = ack.wrapping_sub(front.start) as usize;
                match front.state {
                    State::InFlight => self.in_flight -= done,
                    State::Lost => self.lost_bytes -= done,
                    State::Sacked => self.sacked_bytes -= done,
                    State::Unsent => {}
                }
                if front.state != State::Sacked {
                    d.bytes += done;
                }
                front.start = ack;
                crate::segment::trim_front(&mut front.packet, front.offset, done);
            }
        }
    }

    /// Takes a segment that leaves the board out of the counters.
    fn forget(&mut self, seg: &Seg, d: &mut Delivery) {
        let len = seg.len();
        match seg.state {
            State::Unsent => {
                self.unsent -= len;
                self.unsent_segs -= 1;
            }
            State::InFlight => {
                self.in_flight -= len;
                d.note(seg, self.highest_sacked);
            }
            State::Lost => {
                self.lost_bytes -= len;
                self.lost.remove(&seg.pos);
                d.note(seg, self.highest_sacked);
            }
            State::Sacked => {
                self.sacked_bytes -= len;
                self.sacked_segments -= 1;
            }
        }
    }

    /// A SACK block `[left, right)`: marks the segments wholly inside it.
    pub fn sack(&mut self, left: u32, right: u32, d: &mut Delivery) {
        let mut from = left;
        for (l, r) in &self.applied {
            if *l == left && !before(*r, from) && before(*r, right) {
                from = *r; // the block grew: only its new part
            } else if *l == left && !before(*r, right) {
                return; // seen whole
            }
        }
        let mut i = self.segs.partition_point(|s| !after(s.end, from));
        while let Some(seg) = self.segs.get_mut(i) {
            if !before(seg.start, right) {
                break;
            }
            i += 1;
            if before(seg.start, left) || after(seg.end, right) {
                continue;
            }
            let len = seg.len();
            match seg.state {
                State::InFlight => self.in_flight -= len,
                State::Lost => {
                    self.lost_bytes -= len;
                    self.lost.remove(&seg.pos);
                }
                State::Sacked | State::Unsent => continue,
            }
            seg.state = State::Sacked;
            self.sacked_bytes += len;
            self.sacked_segments += 1;
            d.note(seg, self.highest_sacked);
            if self.highest_sacked.is_none_or(|h| after(seg.end, h)) {
                self.highest_sacked = Some(seg.end);
            }
        }
        if let Some(slot) = self.applied.iter_mut().find(|(l, _)| *l == left) {
            slot.1 = right;
        } else {
            self.applied[self.applied_next] = (left, right);
            self.applied_next = (self.applied_next + 1) % self.applied.len();
        }
    }

    /// RACK (RFC 8985 6.2): every segment in flight sent before `rack`
    /// (the most recently sent segment the peer has, as (time, end)) and
    /// out longer than `rtt + reo_wnd` is lost. Returns the bytes declared
    /// lost, and when the next segment would be if nothing arrives.
    pub fn detect_losses(
        &mut self,
        rack: (Instant, u32),
        rtt: std::time::Duration,
        reo_wnd: std::time::Duration,
        now: Instant,
    ) -> (usize, Option<Instant>) {
        let mut lost = 0;
        while let Some(&(t, pos)) = self.sent.front() {
            let live = self
                .index(pos)
                .filter(|&i| self.segs[i].state == State::InFlight && self.segs[i].xmit == t);
            let Some(i) = live else {
                self.sent.pop_front();
                continue;
            };
            let seg = &self.segs[i];
            let sent_before = t < rack.0 || (t == rack.0 && before(seg.end, rack.1));
            if !sent_before {
                return (lost, None);
            }
            let deadline = t + rtt + reo_wnd;
            if deadline > now {
                return (lost, Some(deadline));
            }
            self.sent.pop_front();
            lost += self.mark_lost(i);
        }
        (lost, None)
    }

    fn mark_lost(&mut self, i: usize) -> usize {
        let seg = &mut self.segs[i];
        if seg.state != State::InFlight {
            return 0;
        }
        seg.state = State::Lost;
        let len = seg.len();
        self.in_flight -= len;
        self.lost_bytes += len;
        self.lost.insert(seg.pos);
        len
    }

    /// Declares the first segment lost (three duplicate ACKs from a peer
    /// without SACK, or a partial ACK in recovery).
    pub fn mark_front_lost(&mut self) -> usize {
        if self.segs.is_empty() {
            return 0;
        }
        self.mark_lost(0)
    }

    /// A retransmission timeout: everything not SACKed is lost.
    pub fn mark_all_lost(&mut self) -> usize {
        self.sent.clear();
        (0..self.segs.len()).map(|i| self.mark_lost(i)).sum()
    }

    /// The next segment to send and whether it is a retransmission: the
    /// lowest lost one first (if `repair` allows), else the oldest unsent.
    pub fn next_to_send(&mut self, repair: impl Fn(usize) -> bool) -> Option<(usize, bool)> {
        if let Some(i) = self.lost.first().and_then(|&pos| self.index(pos)) {
            if repair(self.segs[i].len()) {
                return Some((i, true));
            }
        }
        (self.unsent_segs > 0).then(|| (self.segs.len() - self.unsent_segs, false))
    }

    /// The length of the lost segment [`Scoreboard::next_to_send`] would
    /// resend first.
    pub fn next_lost_len(&self) -> Option<usize> {
        let i = self.index(*self.lost.first()?)?;
        Some(self.segs[i].len())
    }

    pub fn seg(&self, i: usize) -> &Seg {
        &self.segs[i]
    }

    pub fn seg_mut(&mut self, i: usize) -> &mut Seg {
        &mut self.segs[i]
    }

    /// Segment `i` leaves now.
    pub fn mark_sent(&mut self, i: usize, now: Instant, stamp: Stamp) {
        let seg = &mut self.segs[i];
        seg.stamp = Some(stamp);
        let len = seg.len();
        match seg.state {
            State::Unsent => {
                self.unsent -= len;
                self.unsent_segs -= 1;
            }
            State::Lost => {
                self.lost_bytes -= len;
                seg.retransmitted = true;
                self.lost.remove(&seg.pos);
            }
            State::InFlight => {
                // A probe: sent again while still counted in flight.
                seg.retransmitted = true;
                seg.xmit = now;
                self.sent.push_back((now, seg.pos));
                return;
            }
            State::Sacked => return,
        }
        seg.state = State::InFlight;
        seg.xmit = now;
        self.in_flight += len;
        self.sent.push_back((now, seg.pos));
    }

    /// The newest segment in flight (a tail-loss probe resends it).
    pub fn last_in_flight(&self) -> Option<usize> {
        self.segs.iter().rposition(|s| s.state == State::InFlight)
    }

    /// Every packet, for recycling when the connection goes.
    pub fn drain(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.sent.clear();
        self.lost.clear();
        self.in_flight = 0;
        self.unsent = 0;
        self.unsent_segs = 0;
        self.lost_bytes = 0;
        self.sacked_bytes = 0;
        self.sacked_segments = 0;
        self.segs.drain(..).map(|s| s.packet)
    }
}
