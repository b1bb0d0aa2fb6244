//! One direction of the emulated path, with no IO: what happens to each
//! datagram (lost, dropped at the bottleneck's queue, duplicated, held
//! back) and when it is delivered. The relay's threads feed it what they
//! receive and send what it says is due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Impairment, Tally};

/// A datagram waiting for its time: when, its arrival number (so that
/// ties keep the order of arrival and the bytes are never compared), and
/// its bytes.
type Due = (Instant, u64, Vec<u8>);

pub(super) struct Lane {
    impairment: Impairment,
    queue_limit: usize,
    rng: StdRng,
    pub(super) tally: Tally,
    /// Datagrams in delivery order: their times only grow.
    line: VecDeque<Due>,
    /// Datagrams held back to be overtaken, in no order of arrival.
    held: BinaryHeap<Reverse<Due>>,
    seq: u64,
    /// When the last datagram of the line is delivered: later ones not
    /// before (jitter varies a queue's delay, not its order).
    last: Option<Instant>,
    /// When the bottleneck finishes sending the last datagram it took.
    departure: Option<Instant>,
    /// Departure times and sizes of what the bottleneck still holds.
    backlog: VecDeque<(Instant, usize)>,
    backlog_bytes: usize,
    /// Buffers of datagrams already sent, for the next ones.
    pool: Vec<Vec<u8>>,
}

impl Lane {
    pub(super) fn new(impairment: Impairment, seed: u64) -> Lane {
        Lane {
            impairment,
            queue_limit: impairment.queue_limit(),
            rng: StdRng::seed_from_u64(seed),
            tally: Tally::default(),
            line: VecDeque::new(),
            held: BinaryHeap::new(),
            seq: 0,
            last: None,
            departure: None,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            pool: Vec::new(),
        }
    }

    /// Takes a datagram that arrived `now`: drops it (lost at random, or
    /// at a full bottleneck queue) or lines it up for delivery.
    pub(super) fn schedule(&mut self, bytes: &[u8], now: Instant) {
        let i = self.impairment;
        self.tally.received += 1;
        if i.loss > 0.0 && self.rng.gen_bool(i.loss) {
            self.tally.lost += 1;
            return;
        }
        let Some(departure) = self.bottleneck(bytes.len(), now) else {
            self.tally.queue_dropped += 1;
            return;
        };
        let copies = if i.duplicate > 0.0 && self.rng.gen_bool(i.duplicate) {
            self.tally.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = departure + i.delay;
            if !i.jitter.is_zero() {
                at += i.jitter.mul_f64(self.rng.gen::<f64>());
            }
            self.seq += 1;
            let mut buf = self.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(bytes);
            if i.reorder > 0.0 && self.rng.gen_bool(i.reorder) {
                self.tally.reordered += 1;
                self.held
                    .push(Reverse((at + i.reorder_delay, self.seq, buf)));
            } else {
                let at = self.last.map_or(at, |last| at.max(last));
                self.last = Some(at);
                self.line.push_back((at, self.seq, buf));
            }
        }
    }

    /// When a datagram of `len` bytes arriving `now` has crossed the
    /// bottleneck (`now` where there is none), or `None` if the queue in
    /// front of it has no room for it (drop-tail).
    fn bottleneck(&mut self, len: usize, now: Instant) -> Option<Instant> {
        let Some(rate) = self.impairment.rate else {
            return Some(now);
        };
        while let Some(&(gone, bytes)) = self.backlog.front() {
            if gone > now {
                break;
            }
            self.backlog.pop_front();
            self.backlog_bytes -= bytes;
        }
        if self.backlog_bytes + len > self.queue_limit {
            return None;
        }
        let start = self.departure.map_or(now, |d| d.max(now));
        let departure = start + Duration::from_secs_f64(len as f64 * 8.0 / rate);
        self.departure = Some(departure);
        self.backlog.push_back((departure, len));
        self.backlog_bytes += len;
        Some(departure)
    }

    /// Moves what is due at `now` into `out` in delivery order, at most
    /// `max` datagrams; hand them back with [`Lane::recycle`] once sent.
    pub(super) fn due(&mut self, now: Instant, out: &mut Vec<Vec<u8>>, max: usize) {
        while out.len() < max {
            let line = self.line.front().filter(|d| d.0 <= now);
            let held = self.held.peek().map(|Reverse(d)| d).filter(|d| d.0 <= now);
            let from_line = match (line, held) {
                (Some(l), Some(h)) => l < h,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return,
            };
            let d = if from_line {
                self.line.pop_front().expect("looked at")
            } else {
                self.held.pop().expect("looked at").0
            };
            out.push(d.2);
        }
    }

    /// When the next datagram is due, if any waits.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let line = self.line.front().map(|d| d.0);
        let held = self.held.peek().map(|Reverse(d)| d.0);
        line.into_iter().chain(held).min()
    }

    /// Takes back the buffers [`Lane::due`] handed out.
    pub(super) fn recycle(&mut self, out: &mut Vec<Vec<u8>>) {
        self.pool.append(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(rate_mbit: f64, rtt_ms: u64, queue: usize) -> Impairment {
        Impairment {
            queue: Some(queue),
            ..Impairment::path(Duration::from_millis(rtt_ms), 0.0, Some(rate_mbit))
        }
    }

    /// A lane of 8 Mbit/s (1 ms per 1,000 bytes), 5 ms each way and a
    /// queue of `queue` bytes, and `n` datagrams of 1,000 bytes that came
    /// to it at once.
    fn burst(queue: usize, n: usize) -> (Lane, Instant) {
        let mut lane = Lane::new(path(8.0, 10, queue), 1);
        let t0 = Instant::now();
        for _ in 0..n {
            lane.schedule(&[0; 1000], t0);
        }
        (lane, t0)
    }

    #[test]
    fn the_bottleneck_spaces_datagrams_at_its_rate_then_adds_the_delay() {
        let (mut lane, t0) = burst(100_000, 3);
        let mut out = Vec::new();
        lane.due(t0 + Duration::from_micros(5999), &mut out, 10);
        assert!(out.is_empty());
        lane.due(t0 + Duration::from_millis(6), &mut out, 10);
        assert_eq!(out.len(), 1);
        lane.due(t0 + Duration::from_millis(8), &mut out, 10);
        assert_eq!(out.len(), 3);
        assert_eq!(lane.next_due(), None);
    }

    #[test]
    fn a_full_queue_drops_the_tail_until_the_bottleneck_drains_it() {
        // Room for 3 datagrams.
        let (mut lane, t0) = burst(3000, 5);
        assert_eq!((lane.tally.received, lane.tally.queue_dropped), (5, 2));
        // One has left the bottleneck 1 ms later: room for one more.
        lane.schedule(&[0; 1000], t0 + Duration::from_millis(1));
        lane.schedule(&[0; 1000], t0 + Duration::from_millis(1));
        assert_eq!(lane.tally.queue_dropped, 3);
    }

    #[test]
    fn the_default_queue_is_one_bandwidth_delay_product_with_a_floor() {
        let bdp = Impairment::path(Duration::from_millis(100), 0.0, Some(100.0));
        assert_eq!(bdp.queue_limit(), 1_250_000);
        let short = Impairment::path(Duration::from_millis(1), 0.0, Some(10.0));
        assert_eq!(short.queue_limit(), super::super::QUEUE_FLOOR);
    }
}
