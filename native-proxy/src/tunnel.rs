//! The event loop that owns one WireGuard node, its userspace stack and its
//! UDP socket, and the handle ([`Tunnel`]) every listener and connection
//! task uses.
//!
//! Everything runs on one thread (a current-thread runtime and a LocalSet):
//! the state machines are single-owner, so tasks share them through an
//! `Rc<RefCell<..>>` and never hold the borrow across an await. A task that
//! moves data wakes the loop. A turn of the loop reads every ready
//! datagram into the stack, lets the tasks that woke read and write, then
//! polls the stack, encrypts everything and sends it in GSO batches, so a
//! reply leaves with the ACK of what it answers.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use underpass_core::{Event, Instant, Node, PeerId, Received};
use underpass_stack::{Accepted, ConnId, DnsError, Stack, TcpError};

mod hub;
mod streams;

pub use hub::PeerToPeer;
pub use streams::{TunnelStream, TunnelUdp};

use crate::metrics::Metrics;
use crate::pcap::Pcap;
use crate::udp::{RecvBatch, UdpIo};

/// Encrypted bytes we let wait for the socket before the stack must wait
/// too: past this, smoltcp keeps data in its buffers and TCP windows close.
const MAX_PENDING_TRANSMIT: usize = 4 << 20;
/// Receive batches handled per loop turn before the rest gets a chance.
const RECV_BATCHES_PER_TURN: usize = 8;

/// A peer whose endpoint is a host name, resolved again when handshakes
/// stop being answered.
pub struct DynamicEndpoint {
    pub peer: PeerId,
    pub host: String,
    pub port: u16,
}

pub struct Engine {
    pub node: Node,
    pub stack: Stack,
    udp: UdpIo,
    epoch: std::time::Instant,
    loop_waker: Option<Waker>,
    /// Something changed that the loop must look at.
    dirty: bool,
    /// Encrypted data is waiting for the socket to become writable.
    blocked: bool,
    handshake_waiters: Vec<Waker>,
    pub pcap: Option<Pcap>,
    pub metrics: Arc<Metrics>,
    /// Which family of a name's addresses goes first.
    pub resolve: crate::config::ResolveStrategy,
    dynamic: Vec<DynamicEndpoint>,
    /// Peers whose host-name endpoint should be resolved again.
    reresolve: Vec<PeerId>,
    /// Gateway mode: what to do with each accepted flow.
    on_accept: Option<Rc<dyn Fn(Tunnel, Accepted)>>,
    /// Gateway with `PeerToPeer`: which packets between peers it routes.
    peer_to_peer: Option<PeerToPeer>,
    shutdown: bool,
    /// When the connection limit was last logged.
    limit_warned: Option<Instant>,
    /// Gateway: the stack's counts of flows its limits refused (TCP, UDP)
    /// when they were last logged, and when.
    limit_refusals: (u64, u64),
    limit_refusals_logged: Option<Instant>,
}

/// A cheap, clonable handle to the engine.
#[derive(Clone)]
pub struct Tunnel(Rc<RefCell<Engine>>);

/// Whether a connect failed because the connection limit is reached.
pub fn is_connection_limit(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TcpError>())
        .is_some_and(|t| *t == TcpError::TooMany)
}

fn io_error(e: TcpError) -> io::Error {
    let kind = match e {
        TcpError::Refused => io::ErrorKind::ConnectionRefused,
        TcpError::Reset => io::ErrorKind::ConnectionReset,
        TcpError::TimedOut => io::ErrorKind::TimedOut,
        TcpError::WriteClosed => io::ErrorKind::BrokenPipe,
        TcpError::InvalidHandle => io::ErrorKind::NotConnected,
        TcpError::NoRoute => io::ErrorKind::HostUnreachable,
        TcpError::Prohibited => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl Engine {
    pub fn new(
        node: Node,
        stack: Stack,
        udp: UdpIo,
        epoch: std::time::Instant,
        metrics: Arc<Metrics>,
    ) -> Engine {
        Engine {
            node,
            stack,
            udp,
            epoch,
            loop_waker: None,
            dirty: true,
            blocked: false,
            handshake_waiters: Vec::new(),
            pcap: None,
            metrics,
            resolve: Default::default(),
            dynamic: Vec::new(),
            reresolve: Vec::new(),
            on_accept: None,
            peer_to_peer: None,
            shutdown: false,
            limit_warned: None,
            limit_refusals: (0, 0),
            limit_refusals_logged: None,
        }
    }

    pub fn now(&self) -> Instant {
        Instant::from_duration(self.epoch.elapsed())
    }

    fn wake(&mut self) {
        self.dirty = true;
        if let Some(w) = self.loop_waker.take() {
            w.wake();
        }
    }

    /// Reads every datagram that is ready (up to a budget) into the node and
    /// the stack; true if the budget ran out with more waiting.
    fn receive(&mut self, batch: &mut RecvBatch) -> bool {
        for _ in 0..RECV_BATCHES_PER_TURN {
            let n = match self.udp.try_recv(batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // ICMP errors surface here on some kernels; they are not fatal.
                    tracing::debug!(error = %e, "UDP receive error");
                    return false;
                }
            };
            let now = self.now();
            let (node, stack, pcap, metrics, p2p) = (
                &mut self.node,
                &mut self.stack,
                &mut self.pcap,
                &self.metrics,
                &mut self.peer_to_peer,
            );
            batch.for_each(n, |from, datagram| {
                metrics.add_rx_datagram(datagram.len());
                match node.handle_datagram(now, from, datagram) {
                    Ok(Received::Packet { peer, packet }) => {
                        if let Some(p) = pcap.as_mut() {
                            p.write(packet);
                        }
                        if let Some(allowed) = p2p.as_mut() {
                            match hub::forward(
                                node,
                                allowed,
                                now,
                                peer,
                                packet,
                                MAX_PENDING_TRANSMIT,
                            ) {
                                hub::Hop::Stack => {}
                                hub::Hop::Forwarded => {
                                    metrics.peer_to_peer_packets.fetch_add(1, Relaxed);
                                    return;
                                }
                                hub::Hop::Dropped => return,
                            }
                        }
                        stack.receive(now, packet);
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        tracing::trace!(%from, %reason, "datagram dropped");
                    }
                }
            });
        }
        true
    }

    /// One turn of the state machines: timers, stack, encryption.
    fn turn(&mut self) {
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        self.stack.poll(now);
        loop {
            if self.node.pending_transmit_bytes() >= MAX_PENDING_TRANSMIT {
                break;
            }
            let (node, pcap) = (&mut self.node, &mut self.pcap);
            self.stack.drain_outbound(|packet| {
                if let Some(p) = pcap.as_mut() {
                    p.write(packet);
                }
                if let Err(e) = node.handle_ip_packet(now, packet) {
                    tracing::trace!(error = %e, "packet not sent");
                }
            });
            if !self.stack.outbound_full() {
                break;
            }
            self.stack.poll(now);
        }
        self.flush();
        self.events();
    }

    /// Sends what the node queued until the socket is full.
    fn flush(&mut self) {
        loop {
            let max = self.udp.max_segments();
            let Some(t) = self.node.poll_transmit(max) else {
                self.blocked = false;
                return;
            };
            let segments = t.segments();
            match self.udp.try_send(t.dst, t.segment_size, t.contents) {
                Ok(()) => {
                    self.metrics.add_tx(segments, t.contents.len());
                    self.node.advance_transmit(segments);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return;
                }
                Err(e) => {
                    if self.udp.max_segments() < max {
                        // The kernel refused GSO; quinn-udp switched it off.
                        // Send the same batch again a datagram at a time.
                        continue;
                    }
                    tracing::debug!(dst = %t.dst, error = %e, "UDP send failed; batch dropped");
                    self.node.advance_transmit(segments);
                }
            }
        }
    }

    fn events(&mut self) {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::HandshakeCompleted { peer } => {
                    tracing::info!(peer = %self.peer_name(peer), "handshake completed");
                    self.metrics.handshake();
                    for w in self.handshake_waiters.drain(..) {
                        w.wake();
                    }
                }
                Event::HandshakeTimedOut { peer } => {
                    tracing::warn!(peer = %self.peer_name(peer), "no handshake answer for 90 s");
                    if self.dynamic.iter().any(|d| d.peer == peer) {
                        self.reresolve.push(peer);
                    }
                }
                Event::SessionExpired { peer } => {
                    tracing::debug!(peer = %self.peer_name(peer), "session keys zeroed after inactivity");
                }
                Event::EndpointChanged { peer, endpoint } => {
                    tracing::info!(peer = %self.peer_name(peer), %endpoint, "peer endpoint changed");
                }
                Event::NoReply { peer, waited } => {
                    tracing::info!(peer = %self.peer_name(peer), ?waited, "no reply to data: new handshake");
                }
            }
        }
    }

    /// Says the limit was reached, at most every ten seconds: a client
    /// that keeps trying must not flood the log.
    fn warn_connection_limit(&mut self) {
        let now = self.now();
        if self
            .limit_warned
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(10))
        {
            self.limit_warned = Some(now);
            tracing::warn!(
                "connection limit reached (--max-connections): new connections are refused until some close"
            );
        }
    }

    /// Gateway: says how many flows the stack refused at its limits since
    /// it last said, at most every ten seconds.
    fn log_limit_refusals(&mut self) {
        let stats = self.stack.stats();
        let (tcp, udp) = (stats.refused_by_limit, stats.udp_refused_by_limit);
        let (tcp_logged, udp_logged) = self.limit_refusals;
        let now = self.now();
        if (tcp, udp) == self.limit_refusals
            || self
                .limit_refusals_logged
                .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(10))
        {
            return;
        }
        self.limit_refusals = (tcp, udp);
        self.limit_refusals_logged = Some(now);
        if tcp > tcp_logged {
            tracing::info!(
                refused = tcp - tcp_logged,
                "connection limit reached (--max-connections-per-client or --max-connections): SYNs refused"
            );
        }
        if udp > udp_logged {
            tracing::info!(
                dropped = udp - udp_logged,
                "UDP flow limit reached (--max-udp-flows-per-client or --max-udp-flows): datagrams to new destinations dropped"
            );
        }
    }

    fn peer_name(&self, peer: PeerId) -> String {
        self.node
            .peer(peer, self.now())
            .map_or_else(|| format!("{peer:?}"), |p| p.public_key.short().to_string())
    }

    /// When the loop must run even if nothing arrives.
    fn deadline(&mut self) -> Option<Instant> {
        [self.node.poll_timeout(), self.stack.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Tunnel {
    pub fn new(engine: Engine) -> Tunnel {
        Tunnel(Rc::new(RefCell::new(engine)))
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }

    /// Tells the loop that something changed.
    pub fn wake(&self) {
        self.0.borrow_mut().wake();
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.borrow().udp.local_addr()
    }

    pub fn set_dynamic_endpoints(&self, dynamic: Vec<DynamicEndpoint>) {
        self.0.borrow_mut().dynamic = dynamic;
    }

    /// Gateway mode: `f` is called for every flow accept-any takes in.
    pub fn on_accept(&self, f: impl Fn(Tunnel, Accepted) + 'static) {
        self.0.borrow_mut().on_accept = Some(Rc::new(f));
    }

    /// Gateway mode: routes packets between peers that `allowed` lets
    /// through (see `hub`).
    pub fn set_peer_to_peer(&self, allowed: PeerToPeer) {
        self.0.borrow_mut().peer_to_peer = Some(allowed);
    }

    pub fn shutdown(&self) {
        let mut e = self.0.borrow_mut();
        e.shutdown = true;
        e.wake();
    }

    /// Runs the loop until [`Tunnel::shutdown`].
    pub async fn run(&self) {
        let mut batch = RecvBatch::default();
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            let deadline = {
                let mut e = self.0.borrow_mut();
                if e.shutdown {
                    break;
                }
                e.deadline().map(|t| e.epoch + t.since_epoch())
            };
            match deadline {
                Some(at) => sleep.as_mut().reset(tokio::time::Instant::from_std(at)),
                None => sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_secs(3600)),
            }
            poll_fn(|cx| {
                let mut e = self.0.borrow_mut();
                let mut ready = e.dirty;
                e.loop_waker = Some(cx.waker().clone());
                if e.udp.poll_recv_ready(cx).is_ready() {
                    ready = true;
                }
                if e.blocked && e.udp.poll_send_ready(cx).is_ready() {
                    ready = true;
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    ready = true;
                }
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let more = {
                let mut e = self.0.borrow_mut();
                e.loop_waker = None;
                let more = e.receive(&mut batch);
                let now = e.now();
                e.stack.poll_ingress(now);
                more
            };
            // Let the tasks what arrived woke (and any other ready task)
            // run before anything is sent: their replies leave with the
            // ACKs, in one batch, and their bytes reach the local sockets
            // before the loop spends a send on the tunnel.
            tokio::task::yield_now().await;
            let (accepted, reresolve) = {
                let mut e = self.0.borrow_mut();
                // The turn takes in everything the tasks did; come back at
                // once only if datagrams are still waiting.
                e.dirty = more;
                e.turn();
                let mut accepted = Vec::new();
                if e.on_accept.is_some() {
                    while let Some(a) = e.stack.poll_accepted() {
                        accepted.push(a);
                    }
                    e.log_limit_refusals();
                }
                e.metrics.update(&e.node, &e.stack);
                let reresolve: Vec<(PeerId, String, u16)> = std::mem::take(&mut e.reresolve)
                    .into_iter()
                    .filter_map(|p| e.dynamic.iter().find(|d| d.peer == p))
                    .map(|d| (d.peer, d.host.clone(), d.port))
                    .collect();
                (
                    accepted
                        .into_iter()
                        .map(|a| (e.on_accept.clone(), a))
                        .collect::<Vec<_>>(),
                    reresolve,
                )
            };
            for (f, a) in accepted {
                if let Some(f) = f {
                    f(self.clone(), a);
                }
            }
            for (peer, host, port) in reresolve {
                tokio::task::spawn_local(self.clone().reresolve(peer, host, port));
            }
        }
        if let Some(p) = self.0.borrow_mut().pcap.as_mut() {
            p.flush();
        }
    }

    /// Resolves a peer's host-name endpoint again (dynamic DNS) and
    /// retries the handshake there.
    async fn reresolve(self, peer: PeerId, host: String, port: u16) {
        self.with(|e| e.metrics.reresolve());
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(mut addrs) => {
                if let Some(addr) = addrs.next() {
                    tracing::info!(%host, %addr, "endpoint resolved again");
                    let mut e = self.0.borrow_mut();
                    let now = e.now();
                    e.node.set_endpoint(peer, addr);
                    e.node.connect(peer, now);
                    e.wake();
                }
            }
            Err(err) => tracing::warn!(%host, error = %err, "endpoint does not resolve"),
        }
    }

    /// Starts handshakes with every peer that has an endpoint.
    pub fn connect_peers(&self) {
        let mut e = self.0.borrow_mut();
        let now = e.now();
        let peers: Vec<PeerId> = e.node.peer_ids().collect();
        for p in peers {
            e.node.connect(p, now);
        }
        e.wake();
    }

    /// Peers the client dials (they have an endpoint) that have no
    /// session yet: `(public key, endpoint as configured)`.
    pub fn peers_awaiting_handshake(&self) -> Vec<(String, String)> {
        let e = self.0.borrow();
        let now = e.now();
        e.node
            .peer_ids()
            .filter_map(|id| {
                let info = e.node.peer(id, now)?;
                let endpoint = match e.dynamic.iter().find(|d| d.peer == id) {
                    Some(d) => format!("{}:{}", d.host, d.port),
                    None => info.endpoint?.to_string(),
                };
                (!info.has_session).then(|| (info.public_key.to_base64(), endpoint))
            })
            .collect()
    }

    /// Waits until every peer the client dials has completed a handshake,
    /// or `limit` passes; then returns the peers still without one.
    pub async fn wait_for_handshakes(&self, limit: Duration) -> Result<(), Vec<(String, String)>> {
        let ready = poll_fn(|cx| {
            if self.peers_awaiting_handshake().is_empty() {
                return Poll::Ready(());
            }
            self.0
                .borrow_mut()
                .handshake_waiters
                .push(cx.waker().clone());
            Poll::Pending
        });
        match tokio::time::timeout(limit, ready).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.peers_awaiting_handshake()),
        }
    }

    /// Whether a peer's allowed IPs cover `ip`.
    pub fn routes_to(&self, ip: IpAddr) -> bool {
        self.0.borrow().node.route(ip).is_some()
    }

    /// Opens a TCP connection through the tunnel.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TunnelStream> {
        if !self.routes_to(addr.ip()) {
            return Err(io::Error::new(
                io::ErrorKind::NetworkUnreachable,
                "no peer's AllowedIPs cover this address",
            ));
        }
        let conn = {
            let mut e = self.0.borrow_mut();
            let conn = e.stack.tcp_connect(addr).map_err(|err| {
                if err == TcpError::TooMany {
                    e.warn_connection_limit();
                }
                io_error(err)
            })?;
            e.wake();
            conn
        };
        let stream = TunnelStream {
            tunnel: self.clone(),
            conn,
        };
        poll_fn(|cx| self.0.borrow_mut().stack.poll_connected(cx, conn))
            .await
            .map_err(io_error)?;
        Ok(stream)
    }

    /// Wraps an accepted connection (gateway, listeners) into a stream.
    pub fn stream(&self, conn: ConnId) -> TunnelStream {
        TunnelStream {
            tunnel: self.clone(),
            conn,
        }
    }

    /// Whether names are resolved through the tunnel (`DNS =` set).
    pub fn has_dns(&self) -> bool {
        !self.0.borrow().stack.dns_servers().is_empty()
    }

    /// Resolves `host` through the tunnel's DNS servers; without any, on
    /// the host (the caller has warned about the leak).
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        if !self.has_dns() {
            return match tokio::net::lookup_host((host, 0)).await {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.dedup();
                    self.order(&mut ips);
                    if ips.is_empty() {
                        Err(DnsError::NoRecords)
                    } else {
                        Ok(ips)
                    }
                }
                Err(_) => Err(DnsError::NxDomain),
            };
        }
        let id = {
            let mut e = self.0.borrow_mut();
            let id = e.stack.dns_resolve(host)?;
            e.wake();
            id
        };
        let mut ips = poll_fn(|cx| self.0.borrow_mut().stack.poll_resolve(cx, id)).await?;
        self.order(&mut ips);
        Ok(ips)
    }

    /// `[Resolve] ResolveStrategy` applied to a name's addresses.
    fn order(&self, ips: &mut [IpAddr]) {
        let e = self.0.borrow();
        e.resolve.order(e.stack.addresses(), ips);
    }

    /// Resolves and connects, trying each address in turn (the preferred
    /// family first) until one answers.
    pub async fn connect_host(&self, host: &str, port: u16) -> Result<TunnelStream, ConnectError> {
        let ips = self.resolve(host).await.map_err(ConnectError::Dns)?;
        let mut last = None;
        for ip in ips {
            if !self.routes_to(ip)
                || !self
                    .0
                    .borrow()
                    .stack
                    .addresses()
                    .iter()
                    .any(|n| n.addr().is_ipv4() == ip.is_ipv4())
            {
                last.get_or_insert(io::Error::new(
                    io::ErrorKind::NetworkUnreachable,
                    "no route through the tunnel",
                ));
                continue;
            }
            match self.connect(SocketAddr::new(ip, port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(ConnectError::Io(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no address")
        })))
    }
}

/// Why [`Tunnel::connect_host`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("name resolution failed: {0}")]
    Dns(DnsError),
    #[error("{0}")]
    Io(io::Error),
}
