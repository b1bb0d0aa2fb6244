//! The stack: a smoltcp interface over core's IP packets, and the batch
//! surface the event loop drives.
//!
//! Per batch: [`Stack::receive`] every decrypted packet, [`Stack::poll`]
//! once, then [`Stack::drain_outbound`] into the node. Sockets are driven
//! through handles (see the `tcp`, `udp` and `dns` modules), with wakers for
//! readiness so tokio and a browser can both wait on them.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use foldhash::fast::FixedState;

use ipnet::IpNet;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use underpass_core::{Instant, IpHeader};

use crate::device::Queues;
use crate::dns::Resolver;
use crate::flow::{Flow, Limits};
use crate::ports::Ports;
use crate::slots::Slots;
use crate::tcp::{Conn, ConnId, Listener};

pub use crate::options::{
    Congestion, StackOptions, TcpOptions, DEFAULT_BUFFER_BUDGET, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
};
use crate::sender::Outbound;
use crate::udp::UdpEntry;

/// Decides which flows the gateway accepts: protocol and original
/// destination in, yes or no out.
pub type Policy = Box<dyn FnMut(Protocol, SocketAddr) -> bool + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A transport protocol, for the accept-any policy.
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A flow the gateway's accept-any took in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A TCP connection to `local` (its original destination) from
    /// `remote`. Its SYN-ACK waits until [`Stack::tcp_accept`] (say, once
    /// the host connection succeeded) or [`Stack::tcp_abort`] (refused).
    Tcp {
        /// The accepted connection.
        conn: ConnId,
        /// Its original destination.
        local: SocketAddr,
        /// Its source.
        remote: SocketAddr,
    },
    /// A UDP socket bound to `local`, the destination of the first datagram
    /// seen for it; every datagram to `local` arrives on it.
    Udp {
        /// The socket the datagrams arrive on.
        socket: crate::udp::UdpId,
        /// The destination it is bound to.
        local: SocketAddr,
    },
}

/// Maps keyed by addresses and ports; the connection ones are looked up
/// for every packet, where SipHash cost a few percent of the loop.
/// Seeded ([`Seeds::hasher`]), because a gateway's peers choose keys that
/// get stored (their source ports) and must not be able to aim them at
/// one bucket. Core's `hash` module is the one hasher of both crates.
pub(crate) type AddrMap<K, V> = underpass_core::hash::FastMap<K, V>;
pub(crate) type AddrSet<K> = underpass_core::hash::FastSet<K>;

/// The stack's randomness, all from [`StackOptions::seed`] (see core's
/// `random` module): smoltcp's gets the seed itself (its initial sequence
/// numbers), everything else its own number of the seed's sequence.
pub(crate) struct Seeds {
    pub hasher: FixedState,
    pub ports: u64,
    pub dns: u64,
    pub ping: u64,
}

impl Seeds {
    pub(crate) fn new(seed: u64) -> Seeds {
        let mut sequence = underpass_core::random::SeedSequence::new(seed);
        Seeds {
            hasher: underpass_core::hash::seeded(sequence.next()),
            ports: sequence.next(),
            dns: sequence.next(),
            ping: sequence.next(),
        }
    }
}

pub(crate) struct AcceptAny {
    pub policy: Policy,
    /// Listening sockets made for SYNs, by the destination they listen on.
    pub listening: AddrMap<SocketAddr, Vec<SocketHandle>>,
    /// SYNs seen since the last poll, as (source, destination).
    pub syns: AddrSet<(SocketAddr, SocketAddr)>,
    /// Accepted connections still open, by source address.
    pub per_source: AddrMap<IpAddr, usize>,
    /// Accept-any UDP sockets still open, by the source address whose
    /// datagram opened them.
    pub udp_per_source: AddrMap<IpAddr, usize>,
}

impl AcceptAny {
    /// An accepted connection from `source` was released.
    pub fn forget_source(&mut self, source: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

/// Counters a user would look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackStats {
    /// IP packets taken in from the tunnel.
    pub packets_in: u64,
    /// IP packets handed out to the tunnel.
    pub packets_out: u64,
    /// TCP connections open now.
    pub tcp_open: usize,
    /// UDP sockets open now.
    pub udp_open: usize,
    /// SYNs the accept-any policy refused.
    pub refused_by_policy: u64,
    /// Connections refused at [`TcpOptions::max_connections`] or
    /// [`TcpOptions::max_connections_per_source`].
    pub refused_by_limit: u64,
    /// Datagrams to a new destination dropped at [`UdpOptions::max_flows`]
    /// or [`UdpOptions::max_flows_per_source`].
    pub udp_refused_by_limit: u64,
    /// TCP buffer memory: resident (estimated: what was written through the
    /// buffers since they last gave their pages back), and claimed (the
    /// windows and send allowances connections may fill), in bytes.
    pub buffer_resident: usize,
    /// TCP buffer memory claimed, in bytes (see above).
    pub buffer_claimed: usize,
    /// TCP segments our senders sent again, and retransmission timeouts.
    pub retransmitted: u64,
    /// TCP retransmission timeouts.
    pub timeouts: u64,
}

/// A userspace TCP/IP stack over the tunnel's IP packets (smoltcp), sans-IO: packets in with `now`, packets out, and TCP, UDP and DNS handles for the layer above.
pub struct Stack {
    pub(crate) iface: Interface,
    pub(crate) device: Queues,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) options: StackOptions,
    pub(crate) now: Instant,
    pub(crate) ports: Ports,
    pub(crate) conns: Slots<Conn>,
    /// (local, remote) of every TCP socket we track: its [`Flow`] (our
    /// sending and receiving around smoltcp, RST detection).
    pub(crate) by_tuple: AddrMap<(SocketAddr, SocketAddr), Flow>,
    /// Flows with data held, in flight or timed (the ones
    /// [`Stack::poll_timeout`] and [`Stack::drain_outbound`] look at).
    pub(crate) sending: AddrSet<(SocketAddr, SocketAddr)>,
    /// SYNs seen for connections smoltcp has not made yet (its listeners
    /// and accept-any), by (their end, our end): their options.
    pub(crate) syns: crate::flow::SynStash,
    /// Where each TCP socket's buffers are (see the `memory` module).
    pub(crate) buffers: AddrMap<SocketHandle, crate::memory::Buffers>,
    pub(crate) budget: crate::memory::Budget,
    /// Buffers that emptied after a transfer, given back if they stay so.
    pub(crate) drained: Vec<crate::memory::Drained>,
    /// Sockets whose handle was closed, draining their FIN or RST.
    pub(crate) closing: Vec<(SocketHandle, SocketAddr, SocketAddr, Option<u16>)>,
    /// Sockets to close once they leave SYN-RECEIVED.
    pub(crate) deferred_close: Vec<SocketHandle>,
    pub(crate) listeners: Slots<Listener>,
    pub(crate) accept_any: Option<AcceptAny>,
    pub(crate) accepted: VecDeque<Accepted>,
    pub(crate) udp: Slots<UdpEntry>,
    /// Accept-any UDP sockets by the endpoint they are bound to.
    pub(crate) udp_any: AddrMap<SocketAddr, crate::udp::UdpId>,
    pub(crate) dns: Resolver,
    pub(crate) pinger: crate::echo::Pinger,
    pub(crate) stats: StackStats,
}

pub(crate) fn smol_time(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.since_epoch().as_micros() as i64)
}

pub(crate) fn to_endpoint(addr: SocketAddr) -> smoltcp::wire::IpEndpoint {
    smoltcp::wire::IpEndpoint::new(addr.ip().into(), addr.port())
}

pub(crate) fn from_endpoint(ep: smoltcp::wire::IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(ep.addr), ep.port)
}

/// Why the stack could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is
pub enum StackError {
    #[error("the stack needs at least one tunnel address")]
    NoAddress,
    #[error("at most {max} tunnel addresses are supported, not {given}")]
    TooManyAddresses { max: usize, given: usize },
}

impl Stack {
    /// A stack on `options.addresses`. `now` is on core's clock.
    pub fn new(options: StackOptions, now: Instant) -> Result<Stack, StackError> {
        if options.addresses.is_empty() {
            return Err(StackError::NoAddress);
        }
        const MAX: usize = 4;
        if options.addresses.len() > MAX {
            return Err(StackError::TooManyAddresses {
                max: MAX,
                given: options.addresses.len(),
            });
        }
        let mut device = Queues::new(options.mtu, options.max_outbound_packets);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = options.seed;
        let mut iface = Interface::new(config, &mut device, smol_time(now));
        iface.update_ip_addrs(|addrs| {
            for net in &options.addresses {
                let cidr = IpCidr::new(IpAddress::from(net.addr()), net.prefix_len());
                // Bounded above, so this cannot fail.
                let _ = addrs.push(cidr);
            }
        });
        let seeds = Seeds::new(options.seed);
        let dns = Resolver::new(options.dns_servers.clone(), seeds.dns);
        let hasher = seeds.hasher;
        let budget = options.buffer_budget;
        let mut stack = Stack {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            ports: Ports::new(seeds.ports),
            options,
            now,
            conns: Slots::default(),
            by_tuple: AddrMap::with_hasher(hasher.clone()),
            sending: AddrSet::with_hasher(hasher.clone()),
            syns: crate::flow::SynStash::new(hasher.clone()),
            buffers: AddrMap::with_hasher(hasher.clone()),
            budget: crate::memory::Budget::new(budget),
            drained: Vec::new(),
            closing: Vec::new(),
            deferred_close: Vec::new(),
            listeners: Slots::default(),
            accept_any: None,
            accepted: VecDeque::new(),
            udp: Slots::default(),
            udp_any: AddrMap::with_hasher(hasher.clone()),
            dns,
            pinger: crate::echo::Pinger::new(seeds.ping, hasher.clone()),
            stats: StackStats::default(),
        };
        stack.dns_open();
        Ok(stack)
    }

    /// Turns the stack into a gateway's: every TCP connection and UDP flow
    /// that `policy` allows, to any address and port, is accepted and
    /// handed up by [`Stack::poll_accepted`] with its original destination.
    pub fn set_accept_any(&mut self, policy: Policy) {
        self.iface.set_any_ip(true);
        self.iface.routes_mut().update(|routes| routes.clear());
        for net in &self.options.addresses {
            let _ = match net.addr() {
                IpAddr::V4(a) => self.iface.routes_mut().add_default_ipv4_route(a),
                IpAddr::V6(a) => self.iface.routes_mut().add_default_ipv6_route(a),
            };
        }
        let hasher = Seeds::new(self.options.seed).hasher;
        self.accept_any = Some(AcceptAny {
            policy,
            listening: AddrMap::with_hasher(hasher.clone()),
            syns: AddrSet::with_hasher(hasher.clone()),
            per_source: AddrMap::with_hasher(hasher.clone()),
            udp_per_source: AddrMap::with_hasher(hasher.clone()),
        });
    }

    /// The tunnel address of the family of `remote`, to send from.
    pub(crate) fn local_ip_for(&self, remote: IpAddr) -> Option<IpAddr> {
        self.options
            .addresses
            .iter()
            .map(|n| n.addr())
            .find(|a| a.is_ipv4() == remote.is_ipv4())
    }

    /// Whether `addr` is one of our tunnel addresses with a port that a
    /// socket of ours holds (so accept-any must leave it alone).
    pub(crate) fn is_local_port(&self, addr: SocketAddr) -> bool {
        self.options.addresses.iter().any(|n| n.addr() == addr.ip())
            && self.ports.in_use(addr.port())
    }

    /// The tunnel addresses.
    pub fn addresses(&self) -> &[IpNet] {
        &self.options.addresses
    }

    /// The stack's counters now.
    pub fn stats(&self) -> StackStats {
        StackStats {
            tcp_open: self.conns.len(),
            udp_open: self.udp.len(),
            buffer_resident: self.budget.resident,
            buffer_claimed: self.budget.claimed(),
            ..self.stats.clone()
        }
    }

    /// Queues one decrypted inbound IP packet. Call [`Stack::poll`] after a
    /// batch of them.
    pub fn receive(&mut self, now: Instant, packet: &[u8]) {
        self.stats.packets_in += 1;
        let seg = crate::segment::Segment::parse(packet);
        let tuple = seg.map(|s| (s.dst, s.src));
        let tracked = tuple.is_some_and(|t| self.by_tuple.contains_key(&t));
        if seg.is_none() && self.echo_receive(now, packet) {
            return;
        }
        if !tracked && !self.inspect_new(now, seg.as_ref(), packet) {
            return; // refused without an answer (a UDP flow past its limit)
        }
        let (Some(seg), Some(tuple), true) = (seg, tuple, tracked) else {
            self.device.push_rx(packet);
            return;
        };
        let limits = self.limits();
        let flow = self.by_tuple.get_mut(&tuple).expect("looked up above");
        if seg.has(crate::segment::RST) {
            if let Some(c) = self.conns.get_mut(flow.conn.0) {
                c.reset = true;
            }
        }
        flow.on_inbound(&seg, packet, &limits, now, &mut self.device);
        if flow.is_active() {
            self.sending.insert(tuple);
        }
    }

    /// How connections are set up, for their flows.
    pub(crate) fn limits(&self) -> Limits {
        let tcp = &self.options.tcp;
        Limits {
            mtu: self.options.mtu,
            initial_window: tcp.initial_window,
            max_window: tcp.rx_buffer,
            congestion: match tcp.congestion {
                Congestion::None => None,
                Congestion::Cubic => Some(crate::sender::Algorithm::Cubic),
                Congestion::Bbr => Some(crate::sender::Algorithm::Bbr),
            },
        }
    }

    /// Flows the stack does not track yet: a gateway's new ones, and the
    /// options of SYNs a listener or accept-any will take. False when the
    /// packet must be dropped unseen by smoltcp.
    fn inspect_new(
        &mut self,
        now: Instant,
        seg: Option<&crate::segment::Segment>,
        packet: &[u8],
    ) -> bool {
        if let Some(seg) = seg {
            let (syn, ack) = (seg.has(crate::segment::SYN), seg.has(crate::segment::ACK));
            if syn && !ack && !seg.has(crate::segment::RST) {
                self.syns
                    .insert((seg.src, seg.dst), crate::flow::Syn::of(seg, now));
                if self.accept_any.is_some() && !self.accept_syn(seg.src, seg.dst) {
                    // smoltcp's RST follows: a client that ignores the ICMP
                    // (an older underpass) still learns of the refusal at
                    // once; one that reads it is done before the RST.
                    self.prohibit(packet);
                }
            }
            return true;
        }
        if let Some((local, remote)) = crate::icmp::prohibited_tuple(packet) {
            self.tcp_prohibited(local, remote);
            return false;
        }
        let Some(ip) = IpHeader::parse(packet) else {
            return true;
        };
        let (proto, offset) = match packet[0] >> 4 {
            4 => (packet[9], usize::from(packet[0] & 0x0f) * 4),
            _ => (packet[6], 40),
        };
        let Some(l4) = packet.get(offset..ip.len) else {
            return true;
        };
        if proto == 17 && l4.len() >= 8 && self.accept_any.is_some() {
            let src = SocketAddr::new(ip.src, u16::from_be_bytes([l4[0], l4[1]]));
            let dst = SocketAddr::new(ip.dst, u16::from_be_bytes([l4[2], l4[3]]));
            return self.accept_udp(src, dst);
        }
        true
    }

    /// Answers a SYN the policy refused with "administratively prohibited",
    /// ahead of smoltcp's RST, so the client can tell a refusal by policy
    /// from a closed port. At most one per SYN, none while the outbound
    /// queue is full.
    fn prohibit(&mut self, syn: &[u8]) {
        if self.device.tx_full() {
            return;
        }
        let mut answer = self.device.tx_buffer();
        if crate::icmp::write_prohibited(syn, &mut answer) {
            self.device.tx.push_back(answer);
        } else {
            self.device.recycle_tx(answer);
        }
    }

    /// Runs smoltcp over everything received since the last poll, without
    /// letting any socket send. The tasks the arrivals woke can then read
    /// and write before [`Stack::poll`] sends: a reply leaves with the ACK
    /// of what it answers (one packet, not a bare ACK and then the data),
    /// and the application gets its bytes a send sooner.
    pub fn poll_ingress(&mut self, now: Instant) {
        self.now = now;
        let t = smol_time(now);
        self.iface.poll_maintenance(t);
        while !matches!(
            self.iface
                .poll_ingress_single(t, &mut self.device, &mut self.sockets),
            smoltcp::iface::PollIngressSingleResult::None
        ) {}
        self.after_poll(now);
    }

    /// Runs smoltcp over everything received since the last poll and lets
    /// every socket send. Call once per batch.
    pub fn poll(&mut self, now: Instant) {
        self.now = now;
        self.sender_timers(now);
        self.iface
            .poll(smol_time(now), &mut self.device, &mut self.sockets);
        self.after_poll(now);
    }

    fn after_poll(&mut self, now: Instant) {
        self.release_drained(now);
        self.collect_accepted();
        self.collect_listeners();
        self.collect_deferred_close();
        self.collect_closing();
        self.dns_poll(now);
    }

    /// Hands every outbound IP packet to `f` (the node's
    /// `handle_ip_packet`), oldest first: what the flows' senders have due
    /// (retransmissions, paced segments), then what smoltcp wrote. If the
    /// queue was full, poll again afterwards: smoltcp held data back.
    pub fn drain_outbound(&mut self, mut f: impl FnMut(&[u8])) {
        let now = self.now;
        let limits = self.limits();
        let mut out = |p: &[u8], stats: &mut StackStats| {
            stats.packets_out += 1;
            f(p);
        };
        while let Some(mut packet) = self.device.tx.pop_front() {
            let Some(seg) = crate::segment::Segment::parse(&packet) else {
                out(&packet, &mut self.stats);
                self.device.recycle_tx(packet);
                continue;
            };
            let tuple = (seg.src, seg.dst);
            let Some(flow) = self.by_tuple.get_mut(&tuple) else {
                out(&packet, &mut self.stats);
                self.device.recycle_tx(packet);
                continue;
            };
            crate::ack_seq::fix(&mut packet, &seg, &mut flow.snd_max);
            let connections = self.conns.len();
            match flow.on_outbound(&seg, packet, now, &limits, &mut self.budget, connections) {
                Outbound::Pass(packet) => {
                    out(&packet, &mut self.stats);
                    self.device.recycle_tx(packet);
                }
                Outbound::Drop(packet) => self.device.recycle_tx(packet),
                Outbound::Kept => {
                    self.sending.insert(tuple);
                }
            }
        }
        // Then what the flows have due: the segments smoltcp just wrote
        // (as the pacer lets them go), repairs, and ACKs for held data.
        let stats = &mut self.stats;
        for tuple in &self.sending {
            if let Some(flow) = self.by_tuple.get_mut(tuple) {
                let queued = self.conns.get(flow.conn.0).map_or(0, |c| {
                    let written = self.sockets.get::<tcp::Socket>(c.handle).send_queue();
                    written.saturating_sub(flow.outstanding())
                });
                let before = flow.retransmitted();
                flow.transmit(now, *tuple, queued, &mut self.device, &mut |p| {
                    out(p, stats)
                });
                stats.retransmitted += flow.retransmitted() - before;
            }
        }
        let flows = &self.by_tuple;
        let mut quiet = Vec::new();
        self.sending.retain(|t| {
            let active = flows.get(t).is_some_and(Flow::is_active);
            if !active {
                quiet.push(*t);
            }
            active
        });
        for tuple in quiet {
            // Everything sent was acknowledged: a send buffer that held a
            // transfer gives its pages back if it stays so.
            if let Some(conn) = self.by_tuple.get(&tuple).map(|f| f.conn) {
                self.note_drained(conn, tuple, crate::memory::Side::Send);
            }
        }
    }

    /// Whether outbound packets are waiting for [`Stack::drain_outbound`].
    pub fn has_outbound(&self) -> bool {
        !self.device.tx.is_empty()
    }

    /// Whether smoltcp stopped early because the outbound queue was full.
    pub fn outbound_full(&self) -> bool {
        self.device.tx_full()
    }

    /// Runs the senders' timers that are due (their retransmissions go
    /// with the next [`Stack::drain_outbound`]).
    fn sender_timers(&mut self, now: Instant) {
        for tuple in &self.sending {
            if let Some(flow) = self.by_tuple.get_mut(tuple) {
                if flow.poll_at().is_some_and(|t| t <= now) {
                    let before = flow.timeouts();
                    flow.on_timeout(now);
                    self.stats.timeouts += flow.timeouts() - before;
                }
            }
        }
    }

    fn sender_timeout(&self) -> Option<Instant> {
        self.sending
            .iter()
            .filter_map(|t| self.by_tuple.get(t))
            .filter_map(Flow::poll_at)
            .min()
    }

    /// When [`Stack::poll`] must next run (retransmissions, pacing,
    /// delayed ACKs, DNS retries), if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let smol = self
            .iface
            .poll_at(smol_time(self.now), &self.sockets)
            .map(|t| Instant::from_duration(Duration::from_micros(t.total_micros().max(0) as u64)));
        [
            smol,
            self.dns_timeout(),
            self.sender_timeout(),
            self.drained_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Makes a TCP socket, lets `setup` connect or listen it, and adds
    /// it (with its buffers' record) if that worked.
    pub(crate) fn add_tcp_socket<E>(
        &mut self,
        setup: impl FnOnce(&mut tcp::Socket<'static>, &mut Interface) -> Result<(), E>,
    ) -> Result<SocketHandle, E> {
        let o = &self.options.tcp;
        let (rx, rx_buffer) = crate::memory::Buffer::new(o.rx_buffer);
        let (tx, tx_buffer) = crate::memory::Buffer::new(o.tx_buffer);
        let mut s = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
        // Ours runs around smoltcp (see the `sender` module); smoltcp's
        // only where a connection's handshake could not be followed.
        s.set_congestion_control(tcp::CongestionControl::None);
        s.set_nagle_enabled(o.nagle);
        s.set_ack_delay(
            o.ack_delay
                .map(|d| smoltcp::time::Duration::from_micros(d.as_micros() as u64)),
        );
        s.set_keep_alive(
            o.keepalive
                .map(|d| smoltcp::time::Duration::from_micros(d.as_micros() as u64)),
        );
        setup(&mut s, &mut self.iface)?;
        let handle = self.sockets.add(s);
        self.buffers
            .insert(handle, crate::memory::Buffers::new(rx_buffer, tx_buffer));
        Ok(handle)
    }

    /// Removes a TCP socket (and the record of its buffers, which go with
    /// it).
    pub(crate) fn remove_tcp_socket(&mut self, handle: SocketHandle) {
        self.forget_buffers(handle);
        self.sockets.remove(handle);
    }
}
