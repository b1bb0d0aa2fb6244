//! The stack: a smoltcp interface over core's IP packets, and the batch
//! surface the event loop drives.
//!
//! Per batch: [`Stack::receive`] every decrypted packet, [`Stack::poll`]
//! once, then [`Stack::drain_outbound`] into the node. Sockets are driven
//! through handles (see the `tcp`, `udp` and `dns` modules), with wakers for
//! readiness so tokio and a browser can both wait on them.

use std::collections::{HashMap, HashSet, VecDeque};
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
use crate::ports::Ports;
use crate::slots::Slots;
use crate::tcp::{Conn, ConnId, Listener};
use crate::udp::UdpEntry;

/// How TCP sockets are set up. The defaults were chosen by measurement;
/// see BENCHMARKS.md.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// Receive buffer per connection; it is also the largest window we
    /// advertise (scaled beyond 64 KiB).
    pub rx_buffer: usize,
    /// Send buffer per connection.
    pub tx_buffer: usize,
    pub congestion: Congestion,
    pub nagle: bool,
    /// Delayed ACK; `None` acknowledges every segment at once.
    pub ack_delay: Option<Duration>,
    /// How long a connection may stay unanswered while connecting.
    pub connect_timeout: Duration,
    /// How long an established connection with data to send may go without
    /// hearing from its peer (a laptop asleep, a gateway gone).
    pub idle_timeout: Duration,
    pub keepalive: Option<Duration>,
    /// Connections open at once (ours and accepted); past it, connecting
    /// fails with [`crate::TcpError::TooMany`] and accept-any answers SYNs
    /// with RST. Each costs up to `rx_buffer + tx_buffer` of memory.
    pub max_connections: usize,
    /// Accept-any connections open at once from one source address (one
    /// gateway client), so one client cannot take them all.
    pub max_connections_per_source: usize,
}

/// Congestion control for our side's sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    None,
    Reno,
    Cubic,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            rx_buffer: 512 * 1024,
            tx_buffer: 512 * 1024,
            congestion: Congestion::Cubic,
            nagle: false,
            ack_delay: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive: None,
            max_connections: 8192,
            max_connections_per_source: 4096,
        }
    }
}

/// How the stack is set up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The tunnel addresses (the config's `Address`).
    pub addresses: Vec<IpNet>,
    /// Largest IP packet (the tunnel MTU).
    pub mtu: usize,
    pub tcp: TcpOptions,
    /// DNS servers reached through the tunnel (the config's `DNS`).
    pub dns_servers: Vec<IpAddr>,
    /// Outbound packets held before smoltcp is made to wait for a drain.
    /// Small, so the packets smoltcp writes are still in the CPU's cache
    /// when they are encrypted: 1,024 (1.5 MB of packets) spilled a 512 KiB
    /// L2 and cost a quarter of the gateway pair's throughput; 32-128 were
    /// equally fast, 256 already slower (BENCHMARKS.md).
    pub max_outbound_packets: usize,
    /// Randomness for TCP sequence numbers, ports and DNS ids; different
    /// every run.
    pub seed: u64,
}

impl StackOptions {
    pub fn new(addresses: Vec<IpNet>, seed: u64) -> Self {
        StackOptions {
            addresses,
            mtu: 1420,
            tcp: TcpOptions::default(),
            dns_servers: Vec::new(),
            max_outbound_packets: 64,
            seed,
        }
    }
}

/// Decides which flows the gateway accepts: protocol and original
/// destination in, yes or no out.
pub type Policy = Box<dyn FnMut(Protocol, SocketAddr) -> bool + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A flow the gateway's accept-any took in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A TCP connection to `local` (its original destination) from
    /// `remote`. Its SYN-ACK waits until [`Stack::tcp_accept`] (say, once
    /// the host connection succeeded) or [`Stack::tcp_abort`] (refused).
    Tcp {
        conn: ConnId,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// A UDP socket bound to `local`, the destination of the first datagram
    /// seen for it; every datagram to `local` arrives on it.
    Udp {
        socket: crate::udp::UdpId,
        local: SocketAddr,
    },
}

/// Maps keyed by addresses and ports; the connection ones are looked up
/// for every packet, where SipHash cost a few percent of the loop.
/// Seeded from the stack's random seed, because a gateway's peers choose
/// keys that get stored (their source ports) and must not be able to
/// aim them at one bucket.
pub(crate) type AddrMap<K, V> = HashMap<K, V, FixedState>;
pub(crate) type AddrSet<K> = HashSet<K, FixedState>;

fn addr_hasher(seed: u64) -> FixedState {
    // Not the seed itself: smoltcp and the port picker see that one.
    FixedState::with_seed(seed.rotate_left(17) ^ 0x5851_f42d_4c95_7f2d)
}

pub(crate) struct AcceptAny {
    pub policy: Policy,
    /// Listening sockets made for SYNs, by the destination they listen on.
    pub listening: AddrMap<SocketAddr, Vec<SocketHandle>>,
    /// SYNs seen since the last poll, as (source, destination).
    pub syns: AddrSet<(SocketAddr, SocketAddr)>,
    /// Accepted connections still open, by source address.
    pub per_source: AddrMap<IpAddr, usize>,
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
    pub packets_in: u64,
    pub packets_out: u64,
    pub tcp_open: usize,
    pub udp_open: usize,
    /// SYNs the accept-any policy refused.
    pub refused_by_policy: u64,
    /// Connections refused at [`TcpOptions::max_connections`] or
    /// [`TcpOptions::max_connections_per_source`].
    pub refused_by_limit: u64,
}

pub struct Stack {
    pub(crate) iface: Interface,
    pub(crate) device: Queues,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) options: StackOptions,
    pub(crate) now: Instant,
    pub(crate) ports: Ports,
    pub(crate) conns: Slots<Conn>,
    /// (local, remote) of every TCP socket we track, for RST detection and
    /// to tell a retransmitted SYN from a new one.
    pub(crate) by_tuple: AddrMap<(SocketAddr, SocketAddr), Tracked>,
    /// Connections with data sent and not yet acknowledged (loss probes).
    pub(crate) waiting: AddrSet<(SocketAddr, SocketAddr)>,
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
    pub(crate) stats: StackStats,
}

/// What the stack keeps per TCP 4-tuple, beside smoltcp's socket.
pub(crate) struct Tracked {
    pub conn: ConnId,
    pub snd_max: crate::ack_seq::SndMax,
    pub recovery: crate::recovery::Recovery,
}

impl Tracked {
    pub fn new(conn: ConnId) -> Tracked {
        Tracked {
            conn,
            snd_max: None,
            recovery: Default::default(),
        }
    }
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
        let dns = Resolver::new(options.dns_servers.clone(), options.seed);
        let hasher = addr_hasher(options.seed);
        let mut stack = Stack {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            ports: Ports::new(options.seed),
            options,
            now,
            conns: Slots::default(),
            by_tuple: AddrMap::with_hasher(hasher.clone()),
            waiting: AddrSet::with_hasher(hasher.clone()),
            closing: Vec::new(),
            deferred_close: Vec::new(),
            listeners: Slots::default(),
            accept_any: None,
            accepted: VecDeque::new(),
            udp: Slots::default(),
            udp_any: AddrMap::with_hasher(hasher.clone()),
            dns,
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
        let hasher = addr_hasher(self.options.seed);
        self.accept_any = Some(AcceptAny {
            policy,
            listening: AddrMap::with_hasher(hasher.clone()),
            syns: AddrSet::with_hasher(hasher.clone()),
            per_source: AddrMap::with_hasher(hasher.clone()),
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

    pub fn addresses(&self) -> &[IpNet] {
        &self.options.addresses
    }

    pub fn stats(&self) -> StackStats {
        StackStats {
            tcp_open: self.conns.len(),
            udp_open: self.udp.len(),
            ..self.stats.clone()
        }
    }

    /// Queues one decrypted inbound IP packet. Call [`Stack::poll`] after a
    /// batch of them.
    pub fn receive(&mut self, now: Instant, packet: &[u8]) {
        self.stats.packets_in += 1;
        let duplicates = self.inspect(now, packet);
        self.device.push_rx(packet);
        for _ in 0..duplicates {
            self.device.push_rx(packet);
        }
    }

    /// Looks at an inbound packet before smoltcp does: notes RSTs (so a
    /// reset is told from a timeout), feeds loss recovery, and for a
    /// gateway makes the socket a new flow needs. Returns how many
    /// duplicates of the packet smoltcp should see after it.
    fn inspect(&mut self, now: Instant, packet: &[u8]) -> usize {
        if let Some(seg) = crate::segment::Segment::parse(packet) {
            if let Some(t) = self.by_tuple.get_mut(&(seg.dst, seg.src)) {
                let snd_max = t.snd_max;
                return t.recovery.on_received(&seg, snd_max, now)
                    + usize::from(self.note_rst(&seg));
            }
        }
        self.inspect_new(packet);
        0
    }

    /// An RST for a tracked connection; returns 0 (no duplicates).
    fn note_rst(&mut self, seg: &crate::segment::Segment) -> bool {
        if seg.has(crate::segment::RST) {
            if let Some(conn) = self.by_tuple.get(&(seg.dst, seg.src)).map(|t| t.conn) {
                if let Some(c) = self.conns.get_mut(conn.0) {
                    c.reset = true;
                }
            }
        }
        false
    }

    /// Flows the stack does not track yet: a gateway's new ones.
    fn inspect_new(&mut self, packet: &[u8]) {
        let Some(ip) = IpHeader::parse(packet) else {
            return;
        };
        let (proto, offset) = match packet[0] >> 4 {
            4 => (packet[9], usize::from(packet[0] & 0x0f) * 4),
            _ => (packet[6], 40),
        };
        let Some(l4) = packet.get(offset..ip.len) else {
            return;
        };
        match proto {
            6 if l4.len() >= 20 => {
                let src = SocketAddr::new(ip.src, u16::from_be_bytes([l4[0], l4[1]]));
                let dst = SocketAddr::new(ip.dst, u16::from_be_bytes([l4[2], l4[3]]));
                let flags = l4[13];
                let (syn, rst, ack) = (flags & 0x02 != 0, flags & 0x04 != 0, flags & 0x10 != 0);
                if rst {
                    if let Some(conn) = self.by_tuple.get(&(dst, src)).map(|t| t.conn) {
                        if let Some(c) = self.conns.get_mut(conn.0) {
                            c.reset = true;
                        }
                    }
                } else if syn && !ack && self.accept_any.is_some() {
                    self.accept_syn(src, dst);
                }
            }
            17 if l4.len() >= 8 && self.accept_any.is_some() => {
                let dst = SocketAddr::new(ip.dst, u16::from_be_bytes([l4[2], l4[3]]));
                self.accept_udp(dst);
            }
            _ => {}
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
        self.loss_probes(now);
        self.iface
            .poll(smol_time(now), &mut self.device, &mut self.sockets);
        self.after_poll(now);
    }

    fn after_poll(&mut self, now: Instant) {
        self.collect_accepted();
        self.collect_listeners();
        self.collect_deferred_close();
        self.collect_closing();
        self.dns_poll(now);
    }

    /// Hands every outbound IP packet to `f` (the node's
    /// `handle_ip_packet`), oldest first. If the queue was full, poll again
    /// afterwards: smoltcp held data back.
    pub fn drain_outbound(&mut self, mut f: impl FnMut(&[u8])) {
        let now = self.now;
        while let Some(mut packet) = self.device.tx.pop_front() {
            self.stats.packets_out += 1;
            if let Some(seg) = crate::segment::Segment::parse(&packet) {
                let tuple = (seg.src, seg.dst);
                if let Some(t) = self.by_tuple.get_mut(&tuple) {
                    let retransmission = crate::ack_seq::fix(&mut packet, &seg, &mut t.snd_max);
                    t.recovery.on_sent(&seg, retransmission, now);
                    if retransmission {
                        t.recovery.entered_recovery(t.snd_max);
                    }
                    if t.recovery.waiting(t.snd_max) {
                        self.waiting.insert(tuple);
                    }
                }
            }
            f(&packet);
            self.device.recycle_tx(packet);
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

    /// Hands smoltcp duplicates of the peer's last ACK for connections
    /// whose data went unanswered too long (see recovery.rs).
    fn loss_probes(&mut self, now: Instant) {
        let by_tuple = &mut self.by_tuple;
        let device = &mut self.device;
        self.waiting.retain(|tuple| {
            let Some(t) = by_tuple.get_mut(tuple) else {
                return false;
            };
            if !t.recovery.waiting(t.snd_max) {
                return false;
            }
            let snd_max = t.snd_max;
            if let Some((seq, ack, window)) = t.recovery.take_probe(snd_max, now) {
                // smoltcp fast-retransmits at exactly its third duplicate
                // ACK; if an earlier fast retransmission was lost it has
                // counted past three and never will again. An ACK with a
                // window one unit smaller is not a duplicate and resets the
                // count; three copies of it then are.
                let (local, remote) = *tuple;
                let window = if window > 1 { window - 1 } else { window + 1 };
                let packet = crate::segment::pure_ack(remote, local, seq, ack, window);
                for _ in 0..=crate::recovery::DUPLICATES {
                    device.push_rx(&packet);
                }
            }
            true
        });
    }

    fn probe_timeout(&self) -> Option<Instant> {
        self.waiting
            .iter()
            .filter_map(|tuple| self.by_tuple.get(tuple))
            .filter_map(|t| t.recovery.probe_at())
            .min()
    }

    /// When [`Stack::poll`] must next run (retransmissions, delayed ACKs,
    /// DNS retries), if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let smol = self
            .iface
            .poll_at(smol_time(self.now), &self.sockets)
            .map(|t| Instant::from_duration(Duration::from_micros(t.total_micros().max(0) as u64)));
        [smol, self.dns_timeout(), self.probe_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    pub(crate) fn new_tcp_socket(&self) -> tcp::Socket<'static> {
        let o = &self.options.tcp;
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; o.rx_buffer]),
            tcp::SocketBuffer::new(vec![0; o.tx_buffer]),
        );
        s.set_congestion_control(match o.congestion {
            Congestion::None => tcp::CongestionControl::None,
            Congestion::Reno => tcp::CongestionControl::Reno,
            Congestion::Cubic => tcp::CongestionControl::Cubic,
        });
        s.set_nagle_enabled(o.nagle);
        s.set_ack_delay(
            o.ack_delay
                .map(|d| smoltcp::time::Duration::from_micros(d.as_micros() as u64)),
        );
        s.set_keep_alive(
            o.keepalive
                .map(|d| smoltcp::time::Duration::from_micros(d.as_micros() as u64)),
        );
        s
    }
}
