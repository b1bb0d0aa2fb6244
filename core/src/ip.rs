//! Just enough of the IPv4 and IPv6 headers for cryptokey routing: the
//! version, the length and the two addresses. The stack above parses the rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses and true length of an IP packet; `None` if the bytes are
/// not a plausible IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Length from the header; the buffer may be longer (padding).
    pub len: usize,
}

impl IpHeader {
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
}
