//! Two WireGuard nodes on the simulated network every sans-IO test shares
//! (`underpass_sim`): time jumps straight to the next thing that happens,
//! so hours of protocol run in milliseconds and every run with the same
//! seed is the same run.

use std::net::SocketAddr;
use std::time::Duration;

use underpass_core::{
    Event, Instant, Node, NodeOptions, PeerId, PeerOptions, PrivateKey, Received, SendError,
    Transmit,
};
use underpass_sim::Host;
pub use underpass_sim::Link;

use super::*;

/// The link of most tests: 10 ms each way, nothing lost.
pub const CLEAN: Link = Link::delay(Duration::from_millis(10));

/// A WireGuard node as a host of the simulated network, with what it
/// received and emitted.
pub struct TestNode {
    pub node: Node,
    /// IP packets the node received, in order.
    pub delivered: Vec<Vec<u8>>,
    /// Events the node emitted, with when.
    pub events: Vec<(Instant, Event)>,
}

impl Host for TestNode {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) {
        if let Ok(Received::Packet { packet, .. }) = self.node.handle_datagram(now, from, datagram)
        {
            self.delivered.push(packet.to_vec());
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        Host::handle_timeout(&mut self.node, now);
        while let Some(e) = self.node.poll_event() {
            self.events.push((now, e));
        }
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.node.poll_timeout()
    }
    fn poll_transmit(&self, max_segments: usize) -> Option<Transmit<'_>> {
        self.node.poll_transmit(max_segments)
    }
    fn advance_transmit(&mut self, segments: usize) {
        self.node.advance_transmit(segments);
    }
}

impl TestNode {
    fn new(node: Node) -> TestNode {
        TestNode {
            node,
            delivered: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// Two nodes on the shared simulated network (`underpass_sim`), and how
/// each was made, so one can restart.
pub struct Sim {
    net: underpass_sim::Sim<TestNode>,
    setup: [(PrivateKey, NodeOptions, PeerOptions); 2],
    restarts: u64,
}

impl std::ops::Deref for Sim {
    type Target = underpass_sim::Sim<TestNode>;
    fn deref(&self) -> &Self::Target {
        &self.net
    }
}

impl std::ops::DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.net
    }
}

pub const A: usize = 0;
pub const B: usize = 1;

impl Sim {
    /// Node A dials B; B knows A without an endpoint (like a gateway).
    pub fn new(seed: u64, link: Link, options: NodeOptions) -> Sim {
        Self::with_keepalive(seed, link, options, None)
    }

    pub fn with_keepalive(
        seed: u64,
        link: Link,
        options: NodeOptions,
        keepalive: Option<Duration>,
    ) -> Sim {
        Self::with_options(seed, link, [options.clone(), options], keepalive)
    }

    pub fn with_options(
        seed: u64,
        link: Link,
        [options_a, options_b]: [NodeOptions; 2],
        keepalive: Option<Duration>,
    ) -> Sim {
        let (ka, kb) = (key(1), key(2));
        let addrs: [SocketAddr; 2] = [
            "192.0.2.1:40000".parse().unwrap(),
            "192.0.2.2:51820".parse().unwrap(),
        ];
        let mut a = node(ka.clone(), seed.wrapping_mul(2), options_a.clone());
        let mut b = node(kb.clone(), seed.wrapping_mul(2) + 1, options_b.clone());
        let mut pa = peer(kb.public_key(), Some(addrs[B]), &["10.0.0.2/32"]);
        pa.persistent_keepalive = keepalive;
        let pb = peer(ka.public_key(), None, &["10.0.0.1/32"]);
        a.add_peer(pa.clone(), Instant::ZERO).unwrap();
        b.add_peer(pb.clone(), Instant::ZERO).unwrap();
        let mut net =
            underpass_sim::Sim::new([TestNode::new(a), TestNode::new(b)], addrs, link, seed);
        net.record_sent = true;
        Sim {
            net,
            setup: [(ka, options_a, pa), (kb, options_b, pb)],
            restarts: 0,
        }
    }

    /// Replaces node `n` with a new one of the same keys and peer, as a
    /// restarted process: every session and handshake of the old one is
    /// forgotten. Its datagrams in flight still arrive.
    pub fn restart(&mut self, n: usize) {
        self.restarts += 1;
        let (key, options, peer) = self.setup[n].clone();
        let mut node = Node::new(
            key,
            options,
            rng(1000 + self.restarts * 2 + n as u64),
            self.now,
            WALL + self.now.since_epoch(),
        );
        node.add_peer(peer, self.now).unwrap();
        self.hosts[n].node = node;
    }

    pub fn peer_of(&self, node: usize) -> PeerId {
        only_peer(&self.hosts[node].node)
    }

    /// Sends an IP packet from `node`.
    pub fn send(&mut self, node: usize, packet: &[u8]) -> Result<(), SendError> {
        let now = self.now;
        let result = self.hosts[node].node.handle_ip_packet(now, packet);
        self.net.pump();
        result
    }

    /// Moves node `n` to a new source address (NAT rebinding).
    pub fn rebind(&mut self, n: usize, addr: SocketAddr) {
        self.addrs[n] = addr;
    }

    pub fn handshakes(&self, n: usize) -> Vec<Instant> {
        self.hosts[n]
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::HandshakeCompleted { .. }))
            .map(|(t, _)| *t)
            .collect()
    }
}

/// A packet from A's tunnel address to B's (or back) carrying `id`.
pub fn numbered(from: usize, id: u64, len: usize) -> Vec<u8> {
    let (src, dst) = if from == A {
        ([10, 0, 0, 1], [10, 0, 0, 2])
    } else {
        ([10, 0, 0, 2], [10, 0, 0, 1])
    };
    let mut payload = vec![0u8; len.max(8)];
    payload[..8].copy_from_slice(&id.to_be_bytes());
    ipv4_udp(src.into(), dst.into(), &payload)
}

/// A TCP segment from A's tunnel address to B's (or back) with `flags`
/// and `len` bytes of payload, the first eight of them `id` when there is
/// room.
pub fn tcp(from: usize, id: u64, flags: u8, len: usize) -> Vec<u8> {
    let (src, dst) = if from == A {
        ([10, 0, 0, 1], [10, 0, 0, 2])
    } else {
        ([10, 0, 0, 2], [10, 0, 0, 1])
    };
    let mut payload = vec![0u8; len];
    if len >= 8 {
        payload[..8].copy_from_slice(&id.to_be_bytes());
    }
    ipv4_tcp(src.into(), dst.into(), flags, &payload)
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// A DNS query (UDP to port 53) from A to B, or back.
pub fn dns_query(from: usize, id: u64) -> Vec<u8> {
    let mut p = numbered(from, id, 30);
    p[22..24].copy_from_slice(&53u16.to_be_bytes());
    p
}

pub fn id_of(packet: &[u8]) -> u64 {
    u64::from_be_bytes(packet[28..36].try_into().unwrap())
}
