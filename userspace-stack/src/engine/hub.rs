//! A gateway as a hub (`[Gateway] PeerToPeer = true`): a packet one peer
//! sends to an address another peer's AllowedIPs hold is routed to that
//! peer at the IP level, as a WireGuard server with IP forwarding does.
//! The gateway's stack never sees it: no TCP is terminated, every protocol
//! passes, and the two peers talk end to end.

use std::net::IpAddr;

use underpass_core::{Instant, IpHeader, Node, PeerId};

/// Whether a packet to this destination may go from one peer to another
/// (the gateway's rules: `PeerToPeer`, `AllowedDestinations`).
pub type PeerToPeer = Box<dyn FnMut(IpAddr) -> bool>;

/// What became of a packet offered to [`forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Not one to route between peers: the stack's.
    Stack,
    /// Encrypted to the peer it is for.
    Forwarded,
    /// For another peer, but dropped (its hop limit ran out, or the queue
    /// to the socket is full).
    Dropped,
}

/// Takes a decrypted packet from peer `from` if it is for another peer
/// and the rules allow it: it leaves encrypted to that peer, its TTL (hop
/// limit) one less, as from a router. Past `max_pending` bytes waiting
/// for the socket, such a packet is dropped, as a router with a full
/// queue would.
pub fn forward(
    node: &mut Node,
    allowed: &mut PeerToPeer,
    now: Instant,
    from: PeerId,
    packet: &mut [u8],
    max_pending: usize,
) -> Hop {
    let Some(header) = IpHeader::parse(packet) else {
        return Hop::Stack;
    };
    match node.route(header.dst) {
        Some(to) if to != from => {}
        _ => return Hop::Stack,
    }
    if !allowed(header.dst) {
        // The stack refuses it, logged by the gateway's policy.
        return Hop::Stack;
    }
    let packet = &mut packet[..header.len];
    if node.pending_transmit_bytes() >= max_pending || !decrement_hop_limit(packet) {
        return Hop::Dropped;
    }
    match node.handle_ip_packet(now, packet) {
        Ok(()) => Hop::Forwarded,
        Err(e) => {
            tracing::trace!(error = %e, dst = %header.dst, "peer-to-peer packet not sent");
            Hop::Dropped
        }
    }
}

/// Lowers the IPv4 TTL or IPv6 hop limit by one (the IPv4 header
/// checksum made right again); false when it would reach zero and the
/// packet must be dropped. `packet` passed [`IpHeader::parse`].
fn decrement_hop_limit(packet: &mut [u8]) -> bool {
    match packet[0] >> 4 {
        4 => {
            if packet[8] <= 1 {
                return false;
            }
            packet[8] -= 1;
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            packet[10] = 0;
            packet[11] = 0;
            let mut sum: u32 = packet[..header_len]
                .chunks_exact(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            packet[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            true
        }
        _ => {
            if packet[7] <= 1 {
                return false;
            }
            packet[7] -= 1;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal IPv4 header (20 bytes) with a correct checksum.
    fn ipv4(ttl: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 20, 0x12, 0x34, 0x40, 0, ttl, 6, 0, 0, 10, 9, 0, 2, 10, 9, 0, 3,
        ];
        let sum: u32 = p
            .chunks_exact(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let sum = (sum & 0xffff) + (sum >> 16);
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p
    }

    fn checksum_ok(p: &[u8]) -> bool {
        let mut sum: u32 = p[..20]
            .chunks_exact(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn a_forwarded_packet_loses_one_hop_and_keeps_a_valid_checksum() {
        for ttl in [2u8, 64, 255] {
            let mut p = ipv4(ttl);
            assert!(checksum_ok(&p));
            assert!(decrement_hop_limit(&mut p));
            assert_eq!(p[8], ttl - 1);
            assert!(checksum_ok(&p), "ttl {ttl}");
        }
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        v6.resize(40, 0);
        assert!(decrement_hop_limit(&mut v6));
        assert_eq!(v6[7], 63);
    }

    #[test]
    fn a_packet_at_its_last_hop_is_dropped() {
        assert!(!decrement_hop_limit(&mut ipv4(1)));
        assert!(!decrement_hop_limit(&mut ipv4(0)));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 1];
        v6.resize(40, 0);
        assert!(!decrement_hop_limit(&mut v6));
    }
}
