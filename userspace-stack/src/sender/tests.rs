//! The sender against made-up ACKs, on a simulated clock.

use super::*;
use crate::segment::tests::segment;
use smoltcp::wire::TcpControl;

const MSS: usize = 1000;
const ISN: u32 = 10_000;
const RTT: Duration = Duration::from_millis(50);

/// A sender and what it put on the wire.
struct Harness {
    s: Sender,
    /// Sequence number of the next segment smoltcp writes.
    next: u32,
    now: Instant,
    /// Segments sent, as (seq, payload length), in order.
    wire: Vec<(u32, usize)>,
}

impl Harness {
    fn new() -> Harness {
        let now = Instant::from_secs(100);
        Harness {
            s: Sender::new(ISN + 1, MSS, 0, true, Some(RTT), Algorithm::Cubic, now),
            next: ISN + 1,
            now,
            wire: Vec::new(),
        }
    }

    /// smoltcp writes `n` full segments; the sender sends what it may.
    fn write(&mut self, n: usize) {
        for _ in 0..n {
            let packet = segment(self.next as i32, 1, &[7; MSS], TcpControl::Psh, [None; 3]);
            let seg = Segment::parse(&packet).unwrap();
            assert!(matches!(
                self.s.on_segment_out(&seg, packet, self.now),
                Outbound::Kept
            ));
            self.next = self.next.wrapping_add(MSS as u32);
        }
        self.transmit();
    }

    /// Lets time pass until the pacer has sent everything it holds.
    fn flush(&mut self) {
        while self.s.board.unsent > 0 {
            let next = self.s.poll_at().expect("held segments have a time");
            self.advance(next.saturating_duration_since(self.now));
        }
    }

    fn transmit(&mut self) {
        let wire = &mut self.wire;
        self.s
            .transmit(self.now, Some((1, 100)), usize::MAX, &mut |p| {
                let seg = Segment::parse(p).unwrap();
                wire.push((seg.seq, seg.payload));
            });
    }

    /// An ACK from the peer; returns the window field smoltcp is shown.
    fn ack(&mut self, ack: u32, sack: [Option<(u32, u32)>; 3]) -> u16 {
        let mut packet = segment(1, ack as i32, &[], TcpControl::None, sack);
        packet[20 + 14..20 + 16].copy_from_slice(&u16::MAX.to_be_bytes());
        let seg = Segment::parse(&packet).unwrap();
        self.s.on_ack(&seg, self.now, &mut |_| {})
    }

    fn seq(i: usize) -> u32 {
        ISN + 1 + (i * MSS) as u32
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.s.poll_at().is_some_and(|t| t <= self.now) {
            self.s.on_timeout(self.now);
        }
        self.transmit();
    }
}

#[test]
fn smoltcp_is_shown_the_congestion_window_as_its_edge() {
    let mut h = Harness::new();
    assert_eq!(
        h.ack(ISN + 1, [None; 3]),
        (10 * MSS) as u16,
        "initial window"
    );
    h.write(10);
    assert_eq!(h.wire.len(), 10, "the initial window goes at once");
    h.now += RTT;
    // Two segments acknowledged in slow start: the window grows by two,
    // and the edge (ack + window) is the new window past the oldest byte.
    assert_eq!(h.ack(Harness::seq(2), [None; 3]), (12 * MSS) as u16);
    // Nothing written beyond: the edge stays where it was allowed.
    assert_eq!(h.s.outstanding(), 8 * MSS);
}

#[test]
fn a_hole_reported_by_sack_is_sent_again_once_and_the_window_comes_down() {
    let mut h = Harness::new();
    h.s.set_cubic(40 * MSS, usize::MAX);
    h.ack(ISN + 1, [None; 3]);
    h.write(20);
    h.flush();
    h.now += RTT;
    // Segment 0 lost: the peer acknowledges none but SACKs 1..20.
    let (left, right) = (Harness::seq(1), Harness::seq(20));
    h.ack(ISN + 1, [Some((left, right)), None, None]);
    assert!(
        h.s.recovery.is_some(),
        "a SACKed tail past a hole is a loss"
    );
    assert_eq!(h.s.state_of(Harness::seq(0)), Some(State::Lost));
    h.wire.clear();
    h.transmit();
    assert_eq!(h.wire, vec![(Harness::seq(0), MSS)], "the hole, once");
    h.transmit();
    assert_eq!(h.wire.len(), 1, "not twice");
    h.now += RTT;
    h.ack(Harness::seq(20), [None; 3]);
    assert!(h.s.recovery.is_none(), "everything acknowledged");
    assert_eq!(h.s.cwnd(), (40.0 * MSS as f64 * cubic::BETA) as usize);
    assert_eq!(h.s.retransmitted, 1);
}

#[test]
fn reordering_within_a_quarter_round_trip_is_not_a_loss() {
    let mut h = Harness::new();
    h.s.set_cubic(40 * MSS, usize::MAX);
    h.ack(ISN + 1, [None; 3]);
    h.write(4);
    h.now += RTT;
    // Segment 0 is late: 1 and 2 are SACKed first (fewer than three).
    h.ack(
        ISN + 1,
        [Some((Harness::seq(1), Harness::seq(3))), None, None],
    );
    assert!(
        h.s.recovery.is_none(),
        "RACK waits for its reordering window"
    );
    let timer = h.s.reorder_at.expect("reordering timer");
    assert_eq!(timer, h.now + RTT / 4);
    h.now += Duration::from_millis(5);
    h.ack(Harness::seq(3), [None; 3]);
    h.advance(RTT);
    assert!(h.s.recovery.is_none());
    assert_eq!(h.s.retransmitted, 0);
}

#[test]
fn a_silent_tail_is_probed_then_timed_out() {
    let mut h = Harness::new();
    h.ack(ISN + 1, [None; 3]);
    h.write(5);
    let t0 = h.now;
    assert_eq!(
        h.s.poll_at(),
        Some(t0 + 2 * RTT),
        "probe after two round trips"
    );
    h.wire.clear();
    h.advance(2 * RTT);
    assert_eq!(
        h.wire,
        vec![(Harness::seq(4), MSS)],
        "the newest segment again"
    );
    // No answer: the timeout, then one segment (the oldest) at a time.
    let rto = h.s.poll_at().unwrap();
    assert_eq!(rto, h.now + RTT + Duration::from_millis(200));
    h.wire.clear();
    h.advance(rto - h.now);
    assert_eq!(h.s.timeouts, 1);
    assert_eq!(h.wire, vec![(Harness::seq(0), MSS)]);
    assert_eq!(h.s.cwnd(), MSS);
    // Its ACK lets two more go (slow start from one).
    h.now += RTT;
    h.ack(Harness::seq(1), [None; 3]);
    h.wire.clear();
    h.transmit();
    assert_eq!(h.wire, vec![(Harness::seq(1), MSS), (Harness::seq(2), MSS)]);
}

#[test]
fn smoltcps_own_retransmissions_are_dropped_and_keepalives_pass() {
    let mut h = Harness::new();
    h.ack(ISN + 1, [None; 3]);
    h.write(2);
    let again = segment(
        Harness::seq(0) as i32,
        1,
        &[7; MSS],
        TcpControl::None,
        [None; 3],
    );
    let seg = Segment::parse(&again).unwrap();
    assert!(matches!(
        h.s.on_segment_out(&seg, again, h.now),
        Outbound::Drop(_)
    ));
    h.ack(Harness::seq(2), [None; 3]);
    // A keep-alive: one byte before the next, with nothing outstanding.
    let probe = segment(
        Harness::seq(2) as i32 - 1,
        1,
        &[0],
        TcpControl::None,
        [None; 3],
    );
    let seg = Segment::parse(&probe).unwrap();
    assert!(matches!(
        h.s.on_segment_out(&seg, probe, h.now),
        Outbound::Pass(_)
    ));
    let ack = segment(Harness::seq(2) as i32, 1, &[], TcpControl::None, [None; 3]);
    let seg = Segment::parse(&ack).unwrap();
    assert!(matches!(
        h.s.on_segment_out(&seg, ack, h.now),
        Outbound::Pass(_)
    ));
}

#[test]
fn pacing_spreads_a_window_over_the_round_trip() {
    let mut h = Harness::new();
    h.s.set_cubic(100 * MSS, 100 * MSS);
    h.ack(ISN + 1, [None; 3]);
    h.write(100);
    let burst = h.wire.len();
    assert!((10..=15).contains(&burst), "a short burst first: {burst}");
    let start = h.now;
    while h.wire.len() < 100 {
        let next = h.s.poll_at().expect("held segments have a time");
        assert!(next > h.now, "no busy loop");
        h.advance(next - h.now);
    }
    // 1.2 windows per round trip in congestion avoidance: the rest of the
    // window takes most of a round trip.
    let took = h.now - start;
    assert!(
        took > RTT * 3 / 5 && took < RTT,
        "100 segments paced over {took:?}"
    );
}
