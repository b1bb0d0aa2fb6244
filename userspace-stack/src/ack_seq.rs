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

use crate::segment::{before, Segment};

/// What is tracked per connection: the sequence number after the highest
/// byte (or SYN/FIN) ever sent.
pub(crate) type SndMax = Option<u32>;

/// Updates `snd_max` from an outbound segment and, if it is a pure ACK
/// behind it, moves its sequence number up (checksum adjusted). Returns
/// whether the segment retransmits data sent before.
pub(crate) fn fix(packet: &mut [u8], seg: &Segment, snd_max: &mut SndMax) -> bool {
    if seg.has(crate::segment::RST) {
        return false;
    }
    let end = seg.end();
    match *snd_max {
        Some(max) if before(seg.seq, max) && seg.is_pure_ack() => {
            set_seq(packet, seg.offset, seg.seq, max);
            false
        }
        Some(max) if !before(max, end) => seg.payload > 0 && before(seg.seq, max),
        _ => {
            *snd_max = Some(end);
            false
        }
    }
}

/// Rewrites the sequence number and patches the checksum (RFC 1624).
fn set_seq(packet: &mut [u8], offset: usize, old: u32, new: u32) {
    packet[offset + 4..offset + 8].copy_from_slice(&new.to_be_bytes());
    let mut sum = u32::from(!u16::from_be_bytes([
        packet[offset + 16],
        packet[offset + 17],
    ]));
    for (o, n) in [(old >> 16, new >> 16), (old & 0xffff, new & 0xffff)] {
        sum += u32::from(!(o as u16)) + n;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    packet[offset + 16..offset + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
        TcpSeqNumber,
    };

    fn segment(seq: i32, payload: &[u8], control: TcpControl) -> Vec<u8> {
        let src = Ipv4Address::new(10, 0, 0, 1);
        let dst = Ipv4Address::new(10, 0, 0, 2);
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control,
            seq_number: TcpSeqNumber(seq),
            ack_number: Some(TcpSeqNumber(77)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; 20 + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(&mut buf[20..]),
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            &caps,
        );
        buf
    }

    fn seq_and_checksum_ok(buf: &[u8]) -> (i32, bool) {
        let src = IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1));
        let dst = IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2));
        let p = TcpPacket::new_checked(&buf[20..]).unwrap();
        (p.seq_number().0, p.verify_checksum(&src, &dst))
    }

    #[test]
    fn a_rewound_pure_ack_is_sent_with_the_highest_sequence() {
        let mut max = None;
        let mut data = segment(1000, &[7; 500], TcpControl::None);
        let seg = Segment::parse(&data).unwrap();
        assert_eq!((seg.src.port(), seg.payload), (40000, 500));
        assert!(!fix(&mut data, &seg, &mut max));
        assert_eq!(max, Some(1500));
        // Go-back-N: a retransmission keeps its sequence number...
        let mut again = segment(1000, &[7; 500], TcpControl::None);
        assert!(
            {
                let seg = Segment::parse(&again).unwrap();
                fix(&mut again, &seg, &mut max)
            },
            "a retransmission"
        );
        assert_eq!(seq_and_checksum_ok(&again), (1000, true));
        // ...but a pure ACK moves up to the frontier, checksum still right.
        let mut ack = segment(1000, &[], TcpControl::None);
        {
            let seg = Segment::parse(&ack).unwrap();
            fix(&mut ack, &seg, &mut max)
        };
        assert_eq!(seq_and_checksum_ok(&ack), (1500, true));
        // A FIN is never moved.
        let mut fin = segment(1200, &[], TcpControl::Fin);
        {
            let seg = Segment::parse(&fin).unwrap();
            fix(&mut fin, &seg, &mut max)
        };
        assert_eq!(seq_and_checksum_ok(&fin), (1200, true));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut max = None;
        let mut data = segment(-100, &[1; 200], TcpControl::None);
        {
            let seg = Segment::parse(&data).unwrap();
            fix(&mut data, &seg, &mut max)
        };
        assert_eq!(max, Some(100));
        let mut ack = segment(-100, &[], TcpControl::None);
        {
            let seg = Segment::parse(&ack).unwrap();
            fix(&mut ack, &seg, &mut max)
        };
        assert_eq!(seq_and_checksum_ok(&ack), (100, true));
    }
}
