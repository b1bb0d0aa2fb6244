//! A TCP segment inside an IP packet, read once per packet (on
//! `smoltcp::wire`) for the stack's own work around smoltcp: RST detection,
//! the sender's congestion control and loss recovery, the receiver's
//! window, and the options of SYNs (window scale, MSS, SACK).

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpOption, TcpPacket};

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const ACK: u8 = 0x10;

/// Where the window field is in a TCP header.
const WINDOW_AT: usize = 14;
/// Where the checksum is in a TCP header.
const CHECKSUM_AT: usize = 16;

/// `a` is before `b` in sequence space.
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` is after `b` in sequence space.
pub(crate) fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// The options the stack acts on; the rest are smoltcp's business.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Options {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    /// SACK blocks as (left, right) sequence numbers, right exclusive.
    pub sack: [Option<(u32, u32)>; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Where the TCP header starts in the packet.
    pub offset: usize,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The window field as sent (not scaled).
    pub window: u16,
    /// Payload bytes.
    pub payload: usize,
    pub options: Options,
}

impl Segment {
    /// The TCP segment of an IPv4 or IPv6 packet (no extension headers),
    /// or `None` for anything else or anything malformed.
    pub fn parse(packet: &[u8]) -> Option<Segment> {
        let (src, dst, offset, l4): (IpAddr, IpAddr, usize, &[u8]) = match packet.first()? >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(packet).ok()?;
                if ip.next_header() != IpProtocol::Tcp {
                    return None;
                }
                let offset = usize::from(ip.header_len());
                (
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                    offset,
                    ip.payload(),
                )
            }
            6 => {
                let ip = Ipv6Packet::new_checked(packet).ok()?;
                if ip.next_header() != IpProtocol::Tcp {
                    return None;
                }
                (ip.src_addr().into(), ip.dst_addr().into(), 40, ip.payload())
            }
            _ => return None,
        };
        let tcp = TcpPacket::new_checked(l4).ok()?;
        let flags = l4[13];
        let header = usize::from(tcp.header_len());
        let mut options = Options::default();
        if header > 20 {
            let mut rest = tcp.options();
            while let Ok((next, option)) = TcpOption::parse(rest) {
                match option {
                    TcpOption::EndOfList => break,
                    TcpOption::MaxSegmentSize(m) => options.mss = Some(m),
                    TcpOption::WindowScale(s) => options.window_scale = Some(s.min(14)),
                    TcpOption::SackPermitted => options.sack_permitted = true,
                    TcpOption::SackRange(r) => options.sack = r,
                    _ => {}
                }
                if next.len() >= rest.len() {
                    break;
                }
                rest = next;
            }
        }
        Some(Segment {
            src: SocketAddr::new(src, tcp.src_port()),
            dst: SocketAddr::new(dst, tcp.dst_port()),
            offset,
            seq: tcp.seq_number().0 as u32,
            ack: tcp.ack_number().0 as u32,
            flags,
            window: tcp.window_len(),
            payload: l4.len() - header,
            options,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Sequence space the segment uses: payload, plus one each for SYN
    /// and FIN.
    pub fn end(&self) -> u32 {
        self.seq
            .wrapping_add(self.payload as u32)
            .wrapping_add(u32::from(self.has(SYN)))
            .wrapping_add(u32::from(self.has(FIN)))
    }

    /// An ACK that carries nothing else.
    pub fn is_pure_ack(&self) -> bool {
        self.payload == 0 && self.flags & (SYN | FIN | RST) == 0 && self.has(ACK)
    }
}

/// Replaces the 16-bit field at `at` of the TCP header at `offset` and
/// patches the checksum to match (RFC 1624), so an outbound packet stays
/// valid without summing it again.
pub(crate) fn patch_u16(packet: &mut [u8], offset: usize, at: usize, new: u16) {
    let field = offset + at;
    let old = u16::from_be_bytes([packet[field], packet[field + 1]]);
    if old == new {
        return;
    }
    packet[field..field + 2].copy_from_slice(&new.to_be_bytes());
    let c = offset + CHECKSUM_AT;
    let sum = u16::from_be_bytes([packet[c], packet[c + 1]]);
    let mut s = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    packet[c..c + 2].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

/// Sets the window field of the segment at `offset` (checksum patched).
pub(crate) fn set_window(packet: &mut [u8], offset: usize, window: u16) {
    patch_u16(packet, offset, WINDOW_AT, window);
}

/// Sets the sequence number of the segment at `offset` (checksum patched).
pub(crate) fn set_seq(packet: &mut [u8], offset: usize, seq: u32) {
    patch_u16(packet, offset, 4, (seq >> 16) as u16);
    patch_u16(packet, offset, 6, seq as u16);
}

/// Sets the acknowledgment number of the segment at `offset` (checksum
/// patched).
pub(crate) fn set_ack(packet: &mut [u8], offset: usize, ack: u32) {
    patch_u16(packet, offset, 8, (ack >> 16) as u16);
    patch_u16(packet, offset, 10, ack as u16);
}

/// Cuts the first `n` payload bytes off the segment at `offset` (they were
/// acknowledged): its sequence number moves up, lengths and checksums are
/// made again. A peer takes a FIN only in a segment that does not start
/// with bytes it already has.
pub(crate) fn trim_front(packet: &mut Vec<u8>, offset: usize, n: usize) {
    let Some(header) = packet.get(offset + 12).map(|b| usize::from(b >> 4) * 4) else {
        return;
    };
    let payload = offset + header;
    let n = n.min(packet.len().saturating_sub(payload));
    if n == 0 {
        return;
    }
    packet.drain(payload..payload + n);
    let seq = u32::from_be_bytes([
        packet[offset + 4],
        packet[offset + 5],
        packet[offset + 6],
        packet[offset + 7],
    ]);
    packet[offset + 4..offset + 8].copy_from_slice(&seq.wrapping_add(n as u32).to_be_bytes());
    let (src, dst) = match packet[0] >> 4 {
        4 => {
            let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
            ip.set_total_len(ip.total_len() - n as u16);
            ip.fill_checksum();
            (ip.src_addr().into(), ip.dst_addr().into())
        }
        _ => {
            let mut ip = Ipv6Packet::new_unchecked(&mut packet[..]);
            ip.set_payload_len(ip.payload_len() - n as u16);
            (ip.src_addr().into(), ip.dst_addr().into())
        }
    };
    let mut tcp = TcpPacket::new_unchecked(&mut packet[offset..]);
    tcp.fill_checksum(&src, &dst);
}

/// A pure ACK from `src` to `dst` carrying SACK blocks, as an IP packet
/// with valid checksums (it goes to the peer).
pub(crate) fn ack_packet(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    window: u16,
    sack: [Option<(u32, u32)>; 3],
    mut packet: Vec<u8>,
) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, Ipv4Repr, Ipv6Repr, TcpControl, TcpRepr, TcpSeqNumber};
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control: TcpControl::None,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: Some(TcpSeqNumber(ack as i32)),
        window_len: window,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: sack,
        timestamp: None,
        payload: &[],
    };
    let caps = ChecksumCapabilities::default();
    let (s, d): (IpAddress, IpAddress) = (src.ip().into(), dst.ip().into());
    packet.clear();
    match (s, d) {
        (IpAddress::Ipv4(s4), IpAddress::Ipv4(d4)) => {
            packet.resize(20 + tcp.buffer_len(), 0);
            let ip = Ipv4Repr {
                src_addr: s4,
                dst_addr: d4,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                hop_limit: 64,
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]), &caps);
            tcp.emit(
                &mut TcpPacket::new_unchecked(&mut packet[20..]),
                &s,
                &d,
                &caps,
            );
        }
        (IpAddress::Ipv6(s6), IpAddress::Ipv6(d6)) => {
            packet.resize(40 + tcp.buffer_len(), 0);
            let ip = Ipv6Repr {
                src_addr: s6,
                dst_addr: d6,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                hop_limit: 64,
            };
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut packet[..]));
            tcp.emit(
                &mut TcpPacket::new_unchecked(&mut packet[40..]),
                &s,
                &d,
                &caps,
            );
        }
        _ => {}
    }
    packet
}

/// The headers of the segment at `offset` alone, as a segment at `seq`
/// without data or FIN: what smoltcp is shown of a segment held for
/// later, so it learns the acknowledgment and window now.
pub(crate) fn headers_only(packet: &[u8], offset: usize, seq: u32, mut out: Vec<u8>) -> Vec<u8> {
    let header = usize::from(packet[offset + 12] >> 4) * 4;
    let len = offset + header;
    out.clear();
    out.extend_from_slice(&packet[..len]);
    out[offset + 4..offset + 8].copy_from_slice(&seq.to_be_bytes());
    out[offset + 13] &= !(FIN | 0x08);
    match out[0] >> 4 {
        4 => out[2..4].copy_from_slice(&(len as u16).to_be_bytes()),
        _ => out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes()),
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    /// An IPv4 TCP segment from 10.0.0.1:40000 to 10.0.0.2:80 with a valid
    /// checksum.
    pub fn segment(
        seq: i32,
        ack: i32,
        payload: &[u8],
        control: TcpControl,
        sack: [Option<(u32, u32)>; 3],
    ) -> Vec<u8> {
        let src = Ipv4Address::new(10, 0, 0, 1);
        let dst = Ipv4Address::new(10, 0, 0, 2);
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control,
            seq_number: TcpSeqNumber(seq),
            ack_number: Some(TcpSeqNumber(ack)),
            window_len: 1000,
            window_scale: (control == TcpControl::Syn).then_some(7),
            max_seg_size: (control == TcpControl::Syn).then_some(1380),
            sack_permitted: control == TcpControl::Syn,
            sack_ranges: sack,
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

    pub fn checksum_ok(buf: &[u8]) -> bool {
        let src = IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1));
        let dst = IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2));
        TcpPacket::new_checked(&buf[20..])
            .unwrap()
            .verify_checksum(&src, &dst)
    }

    #[test]
    fn a_syn_gives_its_options() {
        let p = segment(7, 0, &[], TcpControl::Syn, [None; 3]);
        let s = Segment::parse(&p).unwrap();
        assert_eq!(s.options.window_scale, Some(7));
        assert_eq!(s.options.mss, Some(1380));
        assert!(s.options.sack_permitted);
        assert_eq!(s.end(), 8);
    }

    #[test]
    fn sack_blocks_are_read() {
        let sack = [Some((100, 200)), Some((300, 400)), None];
        let p = segment(7, 50, &[], TcpControl::None, sack);
        let s = Segment::parse(&p).unwrap();
        assert_eq!(s.options.sack, sack);
        assert!(s.is_pure_ack());
        assert_eq!((s.seq, s.ack, s.payload), (7, 50, 0));
    }

    #[test]
    fn patched_fields_keep_the_checksum_valid() {
        let mut p = segment(-5, 9, &[1, 2, 3], TcpControl::Psh, [None; 3]);
        assert!(checksum_ok(&p));
        set_window(&mut p, 20, 4321);
        set_seq(&mut p, 20, 0xdead_beef);
        set_ack(&mut p, 20, 17);
        let s = Segment::parse(&p).unwrap();
        assert_eq!(
            (s.window, s.seq, s.ack, s.payload),
            (4321, 0xdead_beef, 17, 3)
        );
        assert!(checksum_ok(&p));
    }

    #[test]
    fn a_trimmed_segment_starts_later_and_stays_valid() {
        let mut p = segment(100, 9, b"hello world", TcpControl::Fin, [None; 3]);
        trim_front(&mut p, 20, 6);
        let s = Segment::parse(&p).unwrap();
        assert_eq!((s.seq, s.payload, s.end()), (106, 5, 112));
        assert!(s.has(FIN));
        assert_eq!(&p[40..], b"world");
        assert!(checksum_ok(&p));
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
    }

    #[test]
    fn a_made_ack_carries_its_sack_blocks() {
        let sack = [Some((100, 200)), Some((300, 400)), None];
        let src = "10.0.0.1:40000".parse().unwrap();
        let dst = "10.0.0.2:80".parse().unwrap();
        let p = ack_packet(src, dst, 7, 50, 99, sack, Vec::new());
        let s = Segment::parse(&p).unwrap();
        assert_eq!(
            (s.src, s.dst, s.seq, s.ack, s.window),
            (src, dst, 7, 50, 99)
        );
        assert_eq!(s.options.sack, sack);
        assert!(s.is_pure_ack());
        assert!(checksum_ok(&p));
        let bare = headers_only(
            &segment(9, 4, b"data", TcpControl::Fin, [None; 3]),
            20,
            5,
            Vec::new(),
        );
        let s = Segment::parse(&bare).unwrap();
        assert_eq!((s.seq, s.ack, s.payload, s.has(FIN)), (5, 4, 0, false));
    }

    #[test]
    fn garbage_is_not_a_segment() {
        for bad in [&[][..], &[0x45; 10], &[0x60; 39], &[0x45, 0, 0, 20]] {
            assert!(Segment::parse(bad).is_none());
        }
        // A header length past the packet.
        let mut p = segment(1, 1, &[], TcpControl::None, [None; 3]);
        p[32] = 0xf0;
        assert!(Segment::parse(&p).is_none());
    }
}
