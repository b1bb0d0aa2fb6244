//! Keeps our pure ACKs acceptable to the peer after a retransmission
//! timeout.
//!
//! On an RTO smoltcp rewinds its "last sequence number sent" to the oldest
//! unacknowledged byte and sends everything again (go-back-N). Until it has
//! caught up, every segment it emits, pure ACKs included, carries that old
//! sequence number. A peer whose receive point is past it finds the segment
//! outside its window and, as RFC 9293 says, drops it with its ACK unread.
//! When both ends of a connection are smoltcp and both timed out (a
//! transfer each way on a lossy link), each drops every ACK of the other:
//! the connection never recovers (measured: 6 of 29 seeds at 1% loss).
//! Linux never rewinds the sequence number of its pure ACKs; this module
//! does what Linux does, on smoltcp's output: a pure ACK whose sequence
//! number is behind the highest one sent on its connection is sent with the
//! highest instead.

use crate::segment::{before, set_seq, Segment};

/// What is tracked per connection: the sequence number after the highest
/// byte (or SYN/FIN) ever sent.
pub(crate) type SndMax = Option<u32>;

/// Updates `snd_max` from an outbound segment and, if it is a pure ACK
/// behind it, moves its sequence number up (checksum adjusted).
pub(crate) fn fix(packet: &mut [u8], seg: &Segment, snd_max: &mut SndMax) {
    if seg.has(crate::segment::RST) {
        return;
    }
    let end = seg.end();
    match *snd_max {
        Some(max) if before(seg.seq, max) && seg.is_pure_ack() => {
            set_seq(packet, seg.offset, max);
        }
        Some(max) if !before(max, end) => {}
        _ => *snd_max = Some(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::tests::{checksum_ok, segment};
    use smoltcp::wire::TcpControl;

    fn fixed(seq: i32, payload: &[u8], control: TcpControl, max: &mut SndMax) -> (u32, bool) {
        let mut p = segment(seq, 77, payload, control, [None; 3]);
        let seg = Segment::parse(&p).unwrap();
        fix(&mut p, &seg, max);
        (Segment::parse(&p).unwrap().seq, checksum_ok(&p))
    }

    #[test]
    fn a_rewound_pure_ack_is_sent_with_the_highest_sequence() {
        let mut max = None;
        assert_eq!(
            fixed(1000, &[7; 500], TcpControl::None, &mut max),
            (1000, true)
        );
        assert_eq!(max, Some(1500));
        // Go-back-N: a retransmission keeps its sequence number...
        assert_eq!(
            fixed(1000, &[7; 500], TcpControl::None, &mut max),
            (1000, true)
        );
        // ...but a pure ACK moves up to the frontier, checksum still right.
        assert_eq!(fixed(1000, &[], TcpControl::None, &mut max), (1500, true));
        // A FIN is never moved.
        assert_eq!(fixed(1200, &[], TcpControl::Fin, &mut max), (1200, true));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut max = None;
        fixed(-100, &[1; 200], TcpControl::None, &mut max);
        assert_eq!(max, Some(100));
        assert_eq!(fixed(-100, &[], TcpControl::None, &mut max), (100, true));
    }
}
