//! Helpers shared by core's integration tests.
#![allow(dead_code)]

pub mod sim;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use underpass_core::{Instant, Node, NodeOptions, PeerId, PeerOptions, PrivateKey, PublicKey};

/// A deterministic CSPRNG for a test node.
pub fn rng(seed: u64) -> Box<ChaCha8Rng> {
    Box::new(ChaCha8Rng::seed_from_u64(seed))
}

pub fn key(byte: u8) -> PrivateKey {
    PrivateKey::from_bytes([byte; 32])
}

/// Wall-clock time the simulated clocks start at.
pub const WALL: Duration = Duration::from_secs(1_764_000_000);

pub fn node(private: PrivateKey, seed: u64, options: NodeOptions) -> Node {
    Node::new(private, options, rng(seed), Instant::ZERO, WALL)
}

pub fn peer(public: PublicKey, endpoint: Option<SocketAddr>, allowed: &[&str]) -> PeerOptions {
    let mut p = PeerOptions::new(public);
    p.endpoint = endpoint;
    p.allowed_ips = allowed.iter().map(|n| n.parse().unwrap()).collect();
    p
}

/// An IPv4 UDP packet with a valid header (checksums are not checked below
/// the stack, so they are left zero).
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// An IPv4 TCP segment with `flags` (a 20-byte header, no options).
pub fn ipv4_tcp(src: Ipv4Addr, dst: Ipv4Addr, flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&80u16.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p[40..].copy_from_slice(payload);
    p
}

/// Every datagram the node has queued, one by one, with its destination.
pub fn drain(node: &mut Node) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = node.poll_transmit(64) {
        let n = t.segments();
        for chunk in t.contents.chunks(t.segment_size) {
            out.push((t.dst, chunk.to_vec()));
        }
        node.advance_transmit(n);
    }
    out
}

pub fn only_peer(node: &Node) -> PeerId {
    node.peer_ids().next().expect("one peer")
}
