//! Two nodes on a simulated network with a simulated clock.
//!
//! Time jumps straight to the next thing that happens (a datagram arriving,
//! a node's timer), so hours of protocol run in milliseconds and every run
//! with the same seed is the same run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use underpass_core::{
    Event, Instant, Node, NodeOptions, PeerId, PeerOptions, PrivateKey, Received, SendError,
};

use super::*;

/// Impairments of the link, applied to every datagram in both directions.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub delay: Duration,
    /// Extra random delay up to this much; datagrams overtake each other.
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
}

impl Link {
    pub const CLEAN: Link = Link {
        delay: Duration::from_millis(10),
        jitter: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
    };
}

struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
    /// For both copies of a duplicated transport message: which pair.
    pair: Option<u64>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub struct Sim {
    pub now: Instant,
    pub nodes: [Node; 2],
    pub addrs: [SocketAddr; 2],
    pub link: Link,
    /// Whether each node's datagrams reach the network at all.
    pub up: [bool; 2],
    rng: ChaCha8Rng,
    seq: u64,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    /// IP packets each node received, in order.
    pub delivered: [Vec<Vec<u8>>; 2],
    /// Events each node emitted, with when.
    pub events: [Vec<(Instant, Event)>; 2],
    /// Datagrams each node put on the wire, with when and their length.
    pub sent: [Vec<(Instant, usize)>; 2],
    /// Transport messages of which both copies reached each node (counted
    /// when the second arrives: copies reorder, and one still in flight
    /// when a run ends was not delivered).
    pub duplicated_data: [u64; 2],
    pairs_arrived: HashSet<u64>,
    /// How each node was made, for [`Sim::restart`].
    setup: [(PrivateKey, NodeOptions, PeerOptions); 2],
    restarts: u64,
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
        Sim {
            now: Instant::ZERO,
            nodes: [a, b],
            addrs,
            link,
            up: [true, true],
            rng: ChaCha8Rng::seed_from_u64(seed),
            seq: 0,
            in_flight: BinaryHeap::new(),
            delivered: [Vec::new(), Vec::new()],
            events: [Vec::new(), Vec::new()],
            sent: [Vec::new(), Vec::new()],
            duplicated_data: [0, 0],
            pairs_arrived: HashSet::new(),
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
        self.nodes[n] = node;
    }

    pub fn peer_of(&self, node: usize) -> PeerId {
        only_peer(&self.nodes[node])
    }

    /// Sends an IP packet from `node`.
    pub fn send(&mut self, node: usize, packet: &[u8]) -> Result<(), SendError> {
        let result = self.nodes[node].handle_ip_packet(self.now, packet);
        self.pump();
        result
    }

    /// Puts everything the nodes queued on the wire, impaired.
    fn pump(&mut self) {
        for from in [A, B] {
            while let Some(t) = self.nodes[from].poll_transmit(64) {
                let n = t.segments();
                let datagrams: Vec<Vec<u8>> = t
                    .contents
                    .chunks(t.segment_size)
                    .map(<[u8]>::to_vec)
                    .collect();
                let dst = t.dst;
                self.nodes[from].advance_transmit(n);
                for bytes in datagrams {
                    self.sent[from].push((self.now, bytes.len()));
                    let Some(to) = self.addrs.iter().position(|a| *a == dst) else {
                        continue; // nobody there
                    };
                    if !self.up[from] || self.rng.gen_bool(self.link.loss) {
                        continue;
                    }
                    let copies = if self.rng.gen_bool(self.link.duplicate) {
                        2
                    } else {
                        1
                    };
                    let pair = (copies == 2 && bytes[0] == 4).then(|| {
                        self.seq += 1;
                        self.seq
                    });
                    for _ in 0..copies {
                        let jitter = if self.link.jitter.is_zero() {
                            Duration::ZERO
                        } else {
                            self.link.jitter.mul_f64(self.rng.gen::<f64>())
                        };
                        self.seq += 1;
                        self.in_flight.push(Reverse(InFlight {
                            at: self.now + self.link.delay + jitter,
                            seq: self.seq,
                            to,
                            from: self.addrs[from],
                            bytes: bytes.clone(),
                            pair,
                        }));
                    }
                }
            }
        }
    }

    fn collect_events(&mut self) {
        for n in [A, B] {
            while let Some(e) = self.nodes[n].poll_event() {
                self.events[n].push((self.now, e));
            }
        }
    }

    /// Runs until nothing happens before `until`; the clock ends at `until`.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            self.pump();
            self.collect_events();
            let next_arrival = self.in_flight.peek().map(|Reverse(f)| f.at);
            let next_timer = self.nodes.iter().filter_map(Node::poll_timeout).min();
            let next = [next_arrival, next_timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    while let Some(Reverse(f)) = self.in_flight.peek() {
                        if f.at > self.now {
                            break;
                        }
                        let Reverse(mut f) = self.in_flight.pop().unwrap();
                        if let Some(p) = f.pair {
                            // The second copy to arrive, whichever it is.
                            if !self.pairs_arrived.insert(p) {
                                self.duplicated_data[f.to] += 1;
                            }
                        }
                        if let Ok(Received::Packet { packet, .. }) =
                            self.nodes[f.to].handle_datagram(self.now, f.from, &mut f.bytes)
                        {
                            self.delivered[f.to].push(packet.to_vec());
                        }
                    }
                    for n in [A, B] {
                        if self.nodes[n].poll_timeout().is_some_and(|t| t <= self.now) {
                            self.nodes[n].handle_timeout(self.now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Moves node `n` to a new source address (NAT rebinding).
    pub fn rebind(&mut self, n: usize, addr: SocketAddr) {
        self.addrs[n] = addr;
    }

    pub fn handshakes(&self, n: usize) -> Vec<Instant> {
        self.events[n]
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
