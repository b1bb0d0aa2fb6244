//! The one engine: a WireGuard [`Node`] joined to its [`Stack`], sans-IO.
//!
//! Every program that runs a tunnel — the native loop (tokio, quinn-udp),
//! the browser loop (a WebSocket or WebTransport, JS timers) and the
//! simulators of the tests — drives this type the same way, so the turn
//! that joins the two state machines is written once:
//!
//! 1. [`Engine::handle_datagram`] for every encrypted datagram that arrived
//!    (decrypted, routed between peers in a hub, or handed to the stack);
//! 2. optionally [`Engine::process_ingress`], so readers see the new bytes
//!    before the turn (the native loop lets its tasks run here, so replies
//!    leave with the ACK of what they answer);
//! 3. [`Engine::handle_timeout`]: timers, the stack's polling, and what the
//!    stack wants to send encrypted into the node's GSO queue, until the
//!    queue holds [`EngineOptions::max_pending_transmit`] bytes;
//! 4. [`Engine::poll_transmit`] / [`Engine::advance_transmit`] until the
//!    socket is full, [`Engine::poll_event`] until `None`, and sleep until
//!    [`Engine::poll_timeout`] or the next input.
//!
//! The engine owns the node, the stack, the endpoint state (host names to
//! resolve again), the peer-to-peer rules of a hub and the counters; callers
//! reach the stack only through [`Engine::stack`] / [`Engine::stack_mut`]
//! and must run a turn after changing it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use underpass_core::{Instant, Node, PeerId, Received, Transmit};

use crate::{Accepted, Stack};

mod build;
mod hub;

pub use build::{BuildError, Endpoints};
pub use hub::PeerToPeer;

/// What a driver must react to, in the order it happened.
#[derive(Debug)]
pub enum EngineEvent {
    /// A node event: handshakes, sessions, endpoints (log or count them).
    Node(underpass_core::Event),
    /// A peer whose endpoint is a host name stopped answering: resolve
    /// `host` again and pass the address to [`Engine::set_endpoint`].
    ResolveEndpoint {
        /// The peer to reach at the new address.
        peer: PeerId,
        /// The name as configured.
        host: String,
        /// The port as configured.
        port: u16,
    },
    /// A flow the stack took in (gateway mode, [`Stack::set_accept_any`]).
    Accepted(Accepted),
}

/// Tuning of the turn; the defaults are what the native client uses.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Encrypted bytes allowed to wait for the socket before the stack
    /// must wait too: past this smoltcp keeps data in its buffers and TCP
    /// windows close, which is the back-pressure of a full socket.
    pub max_pending_transmit: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_pending_transmit: 4 << 20,
        }
    }
}

/// Datagrams and bytes through the tunnel's transport, both ways.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Encrypted datagrams received (whatever became of them).
    pub rx_datagrams: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Encrypted datagrams handed to the transport.
    pub tx_datagrams: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Batches handed to the transport (GSO sends, WebSocket messages).
    pub tx_batches: u64,
    /// Packets a hub routed from one peer to another.
    pub peer_to_peer_packets: u64,
}

/// Sees every IP packet in the clear, both ways (a packet capture).
pub trait PacketTap {
    /// One packet, as it entered or left the stack.
    fn packet(&mut self, packet: &[u8]);
    /// Writes out what is buffered: the driver is stopping.
    fn flush(&mut self) {}
}

/// A peer whose endpoint is a host name, resolved again when handshakes
/// stop being answered.
#[derive(Debug, Clone)]
struct DynamicEndpoint {
    peer: PeerId,
    host: String,
    port: u16,
}

/// A WireGuard node and its userspace stack, driven as one state machine.
pub struct Engine {
    node: Node,
    stack: Stack,
    options: EngineOptions,
    counters: Counters,
    dynamic: Vec<DynamicEndpoint>,
    events: VecDeque<EngineEvent>,
    tap: Option<Box<dyn PacketTap>>,
    peer_to_peer: Option<PeerToPeer>,
    /// Handshakes this engine started with [`Engine::connect`], and when.
    handshakes_started: Vec<(PeerId, Instant)>,
    /// The last handshake's round trip per peer, for display.
    handshake_rtts: Vec<(PeerId, Duration)>,
}

impl Engine {
    /// Joins `node` and `stack`; see [`Engine::from_config`] to build both
    /// from a wg-quick config.
    pub fn new(node: Node, stack: Stack, options: EngineOptions) -> Engine {
        Engine {
            node,
            stack,
            options,
            counters: Counters::default(),
            dynamic: Vec::new(),
            events: VecDeque::new(),
            tap: None,
            peer_to_peer: None,
            handshakes_started: Vec::new(),
            handshake_rtts: Vec::new(),
        }
    }

    /// The WireGuard node, to read peers and statistics.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The stack, to read its state.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The stack, to open, read, write and close flows. Run a turn
    /// ([`Engine::handle_timeout`]) afterwards: what was written leaves
    /// only then.
    pub fn stack_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }

    /// Datagrams and bytes so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Captures every packet in the clear from now on.
    pub fn set_tap(&mut self, tap: Box<dyn PacketTap>) {
        self.tap = Some(tap);
    }

    /// Writes out what the tap buffered.
    pub fn flush_tap(&mut self) {
        if let Some(tap) = self.tap.as_mut() {
            tap.flush();
        }
    }

    /// A hub: packets from one peer to an address another peer's
    /// AllowedIPs hold go to that peer when `allowed` says so.
    pub fn set_peer_to_peer(&mut self, allowed: PeerToPeer) {
        self.peer_to_peer = Some(allowed);
    }

    /// Starts a handshake with `peer` (its round trip is kept for
    /// [`Engine::handshake_rtt`]).
    pub fn connect(&mut self, peer: PeerId, now: Instant) {
        self.handshakes_started.retain(|(p, _)| *p != peer);
        self.handshakes_started.push((peer, now));
        self.node.connect(peer, now);
    }

    /// Starts handshakes with every peer that has an endpoint.
    pub fn connect_all(&mut self, now: Instant) {
        let peers: Vec<PeerId> = self.node.peer_ids().collect();
        for peer in peers {
            self.connect(peer, now);
        }
    }

    /// From [`Engine::connect`] to the completed handshake, the last time.
    pub fn handshake_rtt(&self, peer: PeerId) -> Option<Duration> {
        self.handshake_rtts
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, rtt)| *rtt)
    }

    /// Whether `peer` has a session that can carry data now.
    pub fn has_session(&self, peer: PeerId, now: Instant) -> bool {
        self.node.peer(peer, now).is_some_and(|p| p.has_session)
    }

    /// Where `peer` is now (after resolving its host name again) and a
    /// handshake there.
    pub fn set_endpoint(&mut self, peer: PeerId, endpoint: SocketAddr, now: Instant) {
        self.node.set_endpoint(peer, endpoint);
        self.connect(peer, now);
    }

    /// The endpoint of `peer` as configured: `host:port` for a name, else
    /// the address the node has.
    pub fn configured_endpoint(&self, peer: PeerId, now: Instant) -> Option<String> {
        match self.dynamic.iter().find(|d| d.peer == peer) {
            Some(d) => Some(format!("{}:{}", d.host, d.port)),
            None => self
                .node
                .peer(peer, now)
                .and_then(|p| p.endpoint)
                .map(|e| e.to_string()),
        }
    }

    /// Those of `ips` worth a connection attempt, in the order given: a
    /// peer's AllowedIPs hold them and the tunnel has an address of their
    /// family (a name's IPv6 address is no use on an IPv4-only tunnel).
    pub fn reachable(&self, ips: &[IpAddr]) -> Vec<IpAddr> {
        let families = self.stack.addresses();
        ips.iter()
            .copied()
            .filter(|ip| {
                self.node.route(*ip).is_some()
                    && families.iter().any(|n| n.addr().is_ipv4() == ip.is_ipv4())
            })
            .collect()
    }

    /// One encrypted datagram from `from`: a packet for the stack, a
    /// packet a hub routes on, or a handshake message whose answer is
    /// queued. Refused datagrams are counted by the node.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) {
        self.counters.rx_datagrams += 1;
        self.counters.rx_bytes += datagram.len() as u64;
        match self.node.handle_datagram(now, from, datagram) {
            Ok(Received::Packet { peer, packet }) => {
                if let Some(tap) = self.tap.as_mut() {
                    tap.packet(packet);
                }
                if let Some(allowed) = self.peer_to_peer.as_mut() {
                    let max = self.options.max_pending_transmit;
                    match hub::forward(&mut self.node, allowed, now, peer, packet, max) {
                        hub::Hop::Stack => {}
                        hub::Hop::Forwarded => {
                            self.counters.peer_to_peer_packets += 1;
                            return;
                        }
                        hub::Hop::Dropped => return,
                    }
                }
                self.stack.receive(now, packet);
            }
            Ok(_) => {}
            Err(reason) => tracing::trace!(%from, %reason, "datagram dropped"),
        }
    }

    /// Lets the stack take in the packets [`Engine::handle_datagram`]
    /// gave it, so that readers see their bytes before the turn. Optional:
    /// [`Engine::handle_timeout`] does it too.
    pub fn process_ingress(&mut self, now: Instant) {
        self.stack.poll_ingress(now);
    }

    /// The turn: due timers, the stack, and what it sends encrypted into
    /// the node's queue (until that holds the pending-transmit limit);
    /// then the events it caused. Call after inputs, after changing the
    /// stack, and when [`Engine::poll_timeout`] passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        self.stack.poll(now);
        while self.node.pending_transmit_bytes() < self.options.max_pending_transmit {
            self.encrypt_outbound(now);
            if !self.stack.outbound_full() {
                break;
            }
            self.stack.poll(now);
        }
        self.collect_events(now);
    }

    /// Encrypts the packets the stack has queued, without polling it for
    /// more: [`Engine::handle_timeout`] does this in a loop; tests that
    /// look at one flight at a time call it alone.
    pub fn encrypt_outbound(&mut self, now: Instant) {
        let (node, tap) = (&mut self.node, &mut self.tap);
        self.stack.drain_outbound(|packet| {
            if let Some(tap) = tap.as_mut() {
                tap.packet(packet);
            }
            if let Err(e) = node.handle_ip_packet(now, packet) {
                tracing::trace!(error = %e, "packet not sent");
            }
        });
    }

    /// The next batch of encrypted datagrams for the transport: up to
    /// `max_segments` datagrams of `segment_size` bytes (the last may be
    /// shorter) to one destination, in the order they were written.
    pub fn poll_transmit(&self, max_segments: usize) -> Option<Transmit<'_>> {
        self.node.poll_transmit(max_segments)
    }

    /// The first `segments` datagrams of [`Engine::poll_transmit`] left.
    pub fn advance_transmit(&mut self, segments: usize) {
        if segments == 0 {
            return;
        }
        if let Some(t) = self.node.poll_transmit(segments) {
            self.counters.tx_datagrams += t.segments() as u64;
            self.counters.tx_bytes += t.contents.len() as u64;
            self.counters.tx_batches += 1;
        }
        self.node.advance_transmit(segments);
    }

    /// The first `segments` datagrams of [`Engine::poll_transmit`] could
    /// not be sent and are given up (the transport failed for good; a
    /// full one is waited for instead).
    pub fn discard_transmit(&mut self, segments: usize) {
        self.node.advance_transmit(segments);
    }

    /// When [`Engine::handle_timeout`] must run even if nothing arrives.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [self.node.poll_timeout(), self.stack.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next thing the driver must react to.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    fn collect_events(&mut self, now: Instant) {
        while let Some(event) = self.node.poll_event() {
            match event {
                underpass_core::Event::HandshakeCompleted { peer } => {
                    if let Some(i) = self.handshakes_started.iter().position(|(p, _)| *p == peer) {
                        let (_, started) = self.handshakes_started.swap_remove(i);
                        let rtt = now.saturating_duration_since(started);
                        self.handshake_rtts.retain(|(p, _)| *p != peer);
                        self.handshake_rtts.push((peer, rtt));
                    }
                }
                underpass_core::Event::HandshakeTimedOut { peer } => {
                    self.events.push_back(EngineEvent::Node(event));
                    if let Some(d) = self.dynamic.iter().find(|d| d.peer == peer) {
                        self.events.push_back(EngineEvent::ResolveEndpoint {
                            peer,
                            host: d.host.clone(),
                            port: d.port,
                        });
                    }
                    continue;
                }
                _ => {}
            }
            self.events.push_back(EngineEvent::Node(event));
        }
        while let Some(accepted) = self.stack.poll_accepted() {
            self.events.push_back(EngineEvent::Accepted(accepted));
        }
    }
}
