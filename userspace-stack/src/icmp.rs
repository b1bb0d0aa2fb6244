//! "Administratively prohibited": how a gateway's policy refusal reaches
//! the client, and how the client tells it from a closed port.
//!
//! A gateway refuses a SYN its policy forbids the way a kernel firewall
//! with `REJECT --reject-with icmp-admin-prohibited` does: ICMP
//! destination unreachable, code 13 (ICMPv6: type 1, code 1), quoting the
//! SYN, sent from the destination's address (always inside the client's
//! `AllowedIPs` for that peer, since the client routed the SYN there),
//! and then the RST it sent before, for clients that ignore ICMP (older
//! underpass: smoltcp does). A closed port gets the RST alone. The client's stack fails the connection
//! that SYN belonged to with [`crate::TcpError::Prohibited`], so a proxy
//! can answer "not allowed" rather than "refused".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const TCP: u8 = 6;
const V4_UNREACHABLE: u8 = 3;
const V4_ADMIN_PROHIBITED: u8 = 13;
const V6_UNREACHABLE: u8 = 1;
const V6_ADMIN_PROHIBITED: u8 = 1;
/// What an ICMP error may quote of the packet it answers: an IPv4 error
/// fits in 576 bytes (RFC 1812), an IPv6 one in 1280 (RFC 4443).
const V4_QUOTE: usize = 576 - 20 - 8;
const V6_QUOTE: usize = 1280 - 40 - 8;

/// The Internet checksum of `parts` laid end to end (each of even length
/// but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv6 pseudo-header of an ICMPv6 message of `len` bytes.
fn v6_pseudo(src: &Ipv6Addr, dst: &Ipv6Addr, len: usize) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[..16].copy_from_slice(&src.octets());
    p[16..32].copy_from_slice(&dst.octets());
    p[32..36].copy_from_slice(&(len as u32).to_be_bytes());
    p[39] = ICMPV6;
    p
}

/// The "administratively prohibited" answer to `packet` (a refused SYN),
/// written into `out`; false if `packet` is not IP.
pub(crate) fn write_prohibited(packet: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let quote = &packet[..packet.len().min(V4_QUOTE)];
            let total = 20 + 8 + quote.len();
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&(total as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 64, ICMP, 0, 0]);
            out.extend_from_slice(&packet[16..20]); // from the destination
            out.extend_from_slice(&packet[12..16]); // to the source
            let ip = checksum(&[&out[..20]]);
            out[10..12].copy_from_slice(&ip.to_be_bytes());
            out.extend_from_slice(&[V4_UNREACHABLE, V4_ADMIN_PROHIBITED, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(quote);
            let icmp = checksum(&[&out[20..]]);
            out[22..24].copy_from_slice(&icmp.to_be_bytes());
            true
        }
        Some(6) if packet.len() >= 40 => {
            let quote = &packet[..packet.len().min(V6_QUOTE)];
            let len = 8 + quote.len();
            let (Ok(src), Ok(dst)) = (
                <[u8; 16]>::try_from(&packet[24..40]),
                <[u8; 16]>::try_from(&packet[8..24]),
            ) else {
                return false;
            };
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&[ICMPV6, 64]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            out.extend_from_slice(&[V6_UNREACHABLE, V6_ADMIN_PROHIBITED, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(quote);
            let sum = checksum(&[&v6_pseudo(&src, &dst, len), &out[40..]]);
            out[42..44].copy_from_slice(&sum.to_be_bytes());
            true
        }
        _ => false,
    }
}

/// The TCP connection, `(local, remote)` as this end sees it, whose SYN
/// an "administratively prohibited" error in `packet` quotes; `None` for
/// any other packet (other ICMP, a bad checksum, a quote that is not TCP).
pub(crate) fn prohibited_tuple(packet: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let ip = underpass_core::IpHeader::parse(packet)?;
    let quote = match (packet[0] >> 4, ip.src, ip.dst) {
        (4, _, _) => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let icmp = packet.get(ihl..ip.len)?;
            let ok = packet[9] == ICMP
                && icmp.len() >= 8
                && icmp[..2] == [V4_UNREACHABLE, V4_ADMIN_PROHIBITED]
                && checksum(&[icmp]) == 0;
            ok.then(|| &icmp[8..])?
        }
        (6, IpAddr::V6(src), IpAddr::V6(dst)) => {
            let icmp = packet.get(40..ip.len)?;
            let ok = packet[6] == ICMPV6
                && icmp.len() >= 8
                && icmp[..2] == [V6_UNREACHABLE, V6_ADMIN_PROHIBITED]
                && checksum(&[&v6_pseudo(&src, &dst, icmp.len()), icmp]) == 0;
            ok.then(|| &icmp[8..])?
        }
        _ => return None,
    };
    // The quoted packet may be cut short: only its addresses and ports
    // are needed.
    let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = match quote.first()? >> 4 {
        4 => {
            let ihl = usize::from(quote[0] & 0x0f) * 4;
            if quote.len() < 20 || quote[9] != TCP || ihl < 20 {
                return None;
            }
            let s = <[u8; 4]>::try_from(&quote[12..16]).ok()?;
            let d = <[u8; 4]>::try_from(&quote[16..20]).ok()?;
            (
                Ipv4Addr::from(s).into(),
                Ipv4Addr::from(d).into(),
                quote.get(ihl..)?,
            )
        }
        6 => {
            if quote.len() < 40 || quote[6] != TCP {
                return None;
            }
            let s = <[u8; 16]>::try_from(&quote[8..24]).ok()?;
            let d = <[u8; 16]>::try_from(&quote[24..40]).ok()?;
            (
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                &quote[40..],
            )
        }
        _ => return None,
    };
    let ports = tcp.get(..4)?;
    Some((
        SocketAddr::new(src, u16::from_be_bytes([ports[0], ports[1]])),
        SocketAddr::new(dst, u16::from_be_bytes([ports[2], ports[3]])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare SYN from `src` to `dst` (checksums left at zero: only the
    /// addresses and ports are read back).
    fn syn(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        let mut p = Vec::new();
        let tcp_header = |p: &mut Vec<u8>| {
            p.extend_from_slice(&src.port().to_be_bytes());
            p.extend_from_slice(&dst.port().to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        };
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, TCP, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, TCP, 64]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            _ => unreachable!(),
        }
        tcp_header(&mut p);
        p
    }

    #[test]
    fn a_refusal_names_the_connection_of_the_syn_in_both_families() {
        for (client, server) in [
            ("10.0.0.2:40000", "192.0.2.7:443"),
            ("[fd00::2]:40000", "[2001:db8::7]:22"),
        ] {
            let (client, server): (SocketAddr, SocketAddr) =
                (client.parse().unwrap(), server.parse().unwrap());
            let mut answer = Vec::new();
            assert!(write_prohibited(&syn(client, server), &mut answer));
            let ip = underpass_core::IpHeader::parse(&answer).unwrap();
            assert_eq!((ip.src, ip.dst), (server.ip(), client.ip()));
            assert_eq!(prohibited_tuple(&answer), Some((client, server)));
            // A flipped bit fails the checksum.
            let mut bad = answer.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(prohibited_tuple(&bad), None);
        }
    }

    #[test]
    fn other_packets_are_not_refusals() {
        let syn = syn("10.0.0.2:1".parse().unwrap(), "10.0.0.9:2".parse().unwrap());
        assert_eq!(prohibited_tuple(&syn), None);
        let mut answer = Vec::new();
        assert!(write_prohibited(&syn, &mut answer));
        // Port unreachable (code 3) is not a policy refusal.
        answer[21] = 3;
        answer[22..24].copy_from_slice(&[0, 0]);
        let sum = checksum(&[&answer[20..]]);
        answer[22..24].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(prohibited_tuple(&answer), None);
        assert!(!write_prohibited(b"garbage", &mut answer));
        for len in 0..answer.len() {
            let _ = prohibited_tuple(&answer[..len]);
        }
    }
}
