//! A TCP segment inside an IP packet, read just far enough for the stack's
//! own bookkeeping around smoltcp (RST detection, ACK sequence numbers,
//! loss recovery).

use std::net::{IpAddr, SocketAddr};

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const ACK: u8 = 0x10;

/// `a` is before `b` in sequence space.
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
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
    pub window: u16,
    /// Payload bytes.
    pub payload: usize,
}

impl Segment {
    /// The TCP segment of an IPv4 or IPv6 packet (no extension headers).
    pub fn parse(packet: &[u8]) -> Option<Segment> {
        let (src, dst, offset, end) = match packet.first()? >> 4 {
            4 if packet.len() >= 20 && packet[9] == 6 => {
                let ihl = usize::from(packet[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
                let src = IpAddr::from(<[u8; 4]>::try_from(&packet[12..16]).ok()?);
                let dst = IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?);
                (src, dst, ihl, total)
            }
            6 if packet.len() >= 40 && packet[6] == 6 => {
                let total = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
                let src = IpAddr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?);
                let dst = IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?);
                (src, dst, 40, total)
            }
            _ => return None,
        };
        let tcp = packet.get(offset..offset + 20)?;
        let header = usize::from(tcp[12] >> 4) * 4;
        let end = end.min(packet.len());
        let word = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
        Some(Segment {
            src: SocketAddr::new(src, u16::from_be_bytes([tcp[0], tcp[1]])),
            dst: SocketAddr::new(dst, u16::from_be_bytes([tcp[2], tcp[3]])),
            offset,
            seq: word(4),
            ack: word(8),
            flags: tcp[13],
            window: u16::from_be_bytes([tcp[14], tcp[15]]),
            payload: end.saturating_sub(offset + header),
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

/// A pure ACK from `src` to `dst`, as an IP packet without options. Only
/// for our own stack's input: checksums are left zero (inbound ones are
/// not checked; the tunnel's AEAD already was).
pub(crate) fn pure_ack(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    window: u16,
) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = ACK;
    tcp[14..16].copy_from_slice(&window.to_be_bytes());
    let mut packet = Vec::with_capacity(60);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            packet.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
            packet.extend_from_slice(&s.octets());
            packet.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            packet.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
            packet.extend_from_slice(&v6(s));
            packet.extend_from_slice(&v6(d));
        }
    }
    packet.extend_from_slice(&tcp);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_up_ack_parses_back() {
        for (src, dst) in [
            ("10.0.0.2:80", "10.0.0.1:40000"),
            ("[fd00::2]:80", "[fd00::1]:40000"),
        ] {
            let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
            let packet = pure_ack(src, dst, 7, 9, 512);
            let seg = Segment::parse(&packet).unwrap();
            assert_eq!(
                (seg.src, seg.dst, seg.seq, seg.ack, seg.window),
                (src, dst, 7, 9, 512)
            );
            assert!(seg.is_pure_ack());
        }
    }
}
