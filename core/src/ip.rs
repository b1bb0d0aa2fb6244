//! Just enough of the IPv4 and IPv6 headers for cryptokey routing: the
//! version, the length and the two addresses. The stack above parses the rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses and true length of an IP packet; `None` if the bytes are
/// not a plausible IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Length from the header; the buffer may be longer (padding).
    pub len: usize,
}

impl IpHeader {
    /// Reads the addresses of an IPv4 or IPv6 packet; `None` when it is neither or too short.
    pub fn parse(packet: &[u8]) -> Option<IpHeader> {
        match packet.first()? >> 4 {
            4 if packet.len() >= 20 => {
                let len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
                let ihl = usize::from(packet[0] & 0x0f) * 4;
                if len < 20 || ihl < 20 || ihl > len || len > packet.len() {
                    return None;
                }
                let src = <[u8; 4]>::try_from(&packet[12..16]).ok()?;
                let dst = <[u8; 4]>::try_from(&packet[16..20]).ok()?;
                Some(IpHeader {
                    src: Ipv4Addr::from(src).into(),
                    dst: Ipv4Addr::from(dst).into(),
                    len,
                })
            }
            6 if packet.len() >= 40 => {
                let len = 40 + u16::from_be_bytes([packet[4], packet[5]]) as usize;
                if len > packet.len() {
                    return None;
                }
                let src = <[u8; 16]>::try_from(&packet[8..24]).ok()?;
                let dst = <[u8; 16]>::try_from(&packet[24..40]).ok()?;
                Some(IpHeader {
                    src: Ipv6Addr::from(src).into(),
                    dst: Ipv6Addr::from(dst).into(),
                    len,
                })
            }
            _ => None,
        }
    }
}

/// Whether a live peer answers this IP packet within about a round trip:
/// a TCP segment carrying data, a SYN or a FIN (the other end ACKs it, at
/// worst a delayed ACK later), a DNS query, an ICMP echo request. A bare
/// ACK, a RST or a datagram of a one-way UDP flow can go unanswered on a
/// healthy tunnel; WireGuard's own answer to those is a keepalive after
/// Keepalive-Timeout. `packet` is trimmed to its header's length.
pub(crate) fn expects_answer(packet: &[u8]) -> bool {
    let (protocol, payload) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            if fragment_offset != 0 {
                return false;
            }
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            (packet[9], packet.get(ihl..).unwrap_or_default())
        }
        // Extension headers are not followed: such packets fall back to
        // the whitepaper's timers.
        Some(6) if packet.len() >= 40 => (packet[6], &packet[40..]),
        _ => return false,
    };
    const SYN: u8 = 0x02;
    const FIN: u8 = 0x01;
    match protocol {
        6 if payload.len() >= 20 => {
            let header = usize::from(payload[12] >> 4) * 4;
            payload[13] & (SYN | FIN) != 0 || payload.len() > header
        }
        17 if payload.len() >= 8 => u16::from_be_bytes([payload[2], payload[3]]) == 53,
        1 => payload.first() == Some(&8),
        58 => payload.first() == Some(&128),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v4_and_v6_headers_and_refuses_nonsense() {
        let mut v4 = [0u8; 28];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&24u16.to_be_bytes());
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let h = IpHeader::parse(&v4).unwrap();
        assert_eq!(
            (h.src, h.dst, h.len),
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 24)
        );
        v4[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(IpHeader::parse(&v4), None, "claims more than the buffer");

        let mut v6 = [0u8; 48];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&8u16.to_be_bytes());
        v6[23] = 1;
        v6[39] = 2;
        let h = IpHeader::parse(&v6).unwrap();
        assert_eq!(
            (h.src, h.dst, h.len),
            ("::1".parse().unwrap(), "::2".parse().unwrap(), 48)
        );
        assert_eq!(IpHeader::parse(&[]), None);
        assert_eq!(IpHeader::parse(&[0x45; 10]), None);
        assert_eq!(IpHeader::parse(&[0x75; 60]), None);
    }

    fn v4(protocol: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p[9] = protocol;
        p.extend_from_slice(l4);
        p
    }

    fn tcp(flags: u8, payload: usize) -> Vec<u8> {
        let mut t = vec![0u8; 20 + payload];
        t[12] = 5 << 4;
        t[13] = flags;
        t
    }

    #[test]
    fn knows_which_packets_a_live_peer_answers() {
        const ACK: u8 = 0x10;
        assert!(expects_answer(&v4(6, &tcp(0x02, 0))), "SYN");
        assert!(expects_answer(&v4(6, &tcp(ACK | 0x01, 0))), "FIN");
        assert!(expects_answer(&v4(6, &tcp(ACK, 1))), "data");
        assert!(!expects_answer(&v4(6, &tcp(ACK, 0))), "bare ACK");
        assert!(!expects_answer(&v4(6, &tcp(0x04, 0))), "RST");
        let mut udp = [0u8; 12];
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        assert!(expects_answer(&v4(17, &udp)), "DNS query");
        udp[2..4].copy_from_slice(&5004u16.to_be_bytes());
        assert!(!expects_answer(&v4(17, &udp)), "some UDP flow");
        assert!(expects_answer(&v4(1, &[8, 0, 0, 0])), "echo request");
        assert!(!expects_answer(&v4(1, &[0, 0, 0, 0])), "echo reply");
        let mut fragment = v4(6, &tcp(0x02, 0));
        fragment[7] = 1;
        assert!(!expects_answer(&fragment), "a later fragment");
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[6] = 58;
        v6.extend_from_slice(&[128, 0, 0, 0]);
        assert!(expects_answer(&v6), "ICMPv6 echo request");
        v6[6] = 6;
        v6.truncate(40);
        v6.extend_from_slice(&tcp(ACK, 0));
        assert!(!expects_answer(&v6), "bare ACK over IPv6");
        assert!(!expects_answer(&[]));
        assert!(!expects_answer(&v4(6, &[0; 10])), "truncated TCP header");
    }
}
