//! The event loop that drives the tunnel's [`Engine`] with a UDP socket
//! (quinn-udp, GSO and GRO) and tokio, and the handle ([`Tunnel`]) every
//! listener and connection task uses.
//!
//! Everything runs on one thread (a current-thread runtime and a LocalSet):
//! the engine is single-owner, so tasks share it through an
//! `Rc<RefCell<..>>` and never hold the borrow across an await. Tasks reach
//! it only through [`Tunnel`]'s methods and the streams, which wake the loop
//! after every change. A turn of the loop reads every ready datagram into
//! the engine, lets the tasks that woke read and write, then runs the
//! engine's turn and sends what it encrypted in GSO batches, so a reply
//! leaves with the ACK of what it answers.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use underpass_core::{Event, Instant, PeerId};
use underpass_stack::{
    Accepted, ConnId, DnsError, Engine, EngineEvent, ListenerId, Policy, TcpError, UdpError, UdpId,
};

mod streams;

pub use streams::{TunnelStream, TunnelUdp};

use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::udp::{RecvBatch, UdpIo};

/// Receive batches handled per loop turn before the rest gets a chance.
const RECV_BATCHES_PER_TURN: usize = 8;

/// The loop's state: the engine and what joins it to tokio.
struct Driver {
    engine: Engine,
    udp: UdpIo,
    epoch: std::time::Instant,
    loop_waker: Option<Waker>,
    /// Something changed that the loop must look at.
    dirty: bool,
    /// Encrypted data is waiting for the socket to become writable.
    blocked: bool,
    handshake_waiters: Vec<Waker>,
    metrics: Arc<Metrics>,
    /// Which family of a name's addresses goes first.
    resolve: crate::config::ResolveStrategy,
    /// Gateway mode: what to do with each accepted flow.
    on_accept: Option<Rc<dyn Fn(Tunnel, Accepted)>>,
    /// Peers whose host-name endpoint should be resolved again.
    reresolve: Vec<(PeerId, String, u16)>,
    accepted: Vec<Accepted>,
    shutdown: bool,
    /// How often the connection limit is logged.
    limit_log: LogLimit,
    /// Gateway: the stack's counts of flows its limits refused (TCP, UDP)
    /// when they were last logged, and how often that is.
    limit_refusals: (u64, u64),
    refusals_log: LogLimit,
}

/// A cheap, clonable handle to the running tunnel.
#[derive(Clone)]
pub struct Tunnel(Rc<RefCell<Driver>>);

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

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_duration(self.epoch.elapsed())
    }

    fn wake(&mut self) {
        self.dirty = true;
        if let Some(w) = self.loop_waker.take() {
            w.wake();
        }
    }

    /// Reads every datagram that is ready (up to a budget) into the
    /// engine; true if the budget ran out with more waiting.
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
            let engine = &mut self.engine;
            batch.for_each(n, |from, datagram| {
                engine.handle_datagram(now, from, datagram)
            });
        }
        true
    }

    /// One turn of the engine, then the socket and the events.
    fn turn(&mut self) {
        let now = self.now();
        self.engine.handle_timeout(now);
        self.flush();
        self.events();
    }

    /// Sends what the engine encrypted until the socket is full.
    fn flush(&mut self) {
        loop {
            let max = self.udp.max_segments();
            let Some(t) = self.engine.poll_transmit(max) else {
                self.blocked = false;
                return;
            };
            let segments = t.segments();
            match self.udp.try_send(t.dst, t.segment_size, t.contents) {
                Ok(()) => self.engine.advance_transmit(segments),
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
                    self.engine.discard_transmit(segments);
                }
            }
        }
    }

    fn events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            match event {
                EngineEvent::Node(event) => self.log(event),
                EngineEvent::ResolveEndpoint { peer, host, port } => {
                    self.reresolve.push((peer, host, port));
                }
                EngineEvent::Accepted(a) => self.accepted.push(a),
            }
        }
    }

    fn log(&mut self, event: Event) {
        match event {
            Event::HandshakeCompleted { peer } => {
                tracing::info!(peer = %self.peer_name(peer), "handshake completed");
                self.metrics.handshake();
                for w in self.handshake_waiters.drain(..) {
                    w.wake();
                }
            }
            Event::HandshakeTimedOut { peer } => {
                tracing::warn!(
                    peer = %self.peer_name(peer),
                    "no handshake answer for {} s",
                    underpass_core::timers::REKEY_ATTEMPT_TIME.as_secs()
                );
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

    /// Says the limit was reached, at most once per `LOG_EVERY`: a
    /// client that keeps trying must not flood the log.
    fn warn_connection_limit(&mut self) {
        if let Some(held_back) = self.limit_log.pass() {
            tracing::warn!(
                held_back,
                "connection limit reached (--max-connections): new connections are refused until some close"
            );
        }
    }

    /// Gateway: says how many flows the stack refused at its limits since
    /// it last said, at most once per `LOG_EVERY`.
    fn log_limit_refusals(&mut self) {
        let stats = self.engine.stack().stats();
        let (tcp, udp) = (stats.refused_by_limit, stats.udp_refused_by_limit);
        let (tcp_logged, udp_logged) = self.limit_refusals;
        if (tcp, udp) == self.limit_refusals || self.refusals_log.pass().is_none() {
            return;
        }
        self.limit_refusals = (tcp, udp);
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
        self.engine
            .node()
            .peer(peer, self.now())
            .map_or_else(|| format!("{peer:?}"), |p| p.public_key.short().to_string())
    }
}

impl Tunnel {
    /// Wraps `engine` (built from the config) and its socket into a loop
    /// that [`Tunnel::run`] starts.
    pub fn new(
        engine: Engine,
        udp: UdpIo,
        epoch: std::time::Instant,
        metrics: Arc<Metrics>,
        resolve: crate::config::ResolveStrategy,
    ) -> Tunnel {
        Tunnel(Rc::new(RefCell::new(Driver {
            engine,
            udp,
            epoch,
            loop_waker: None,
            dirty: true,
            blocked: false,
            handshake_waiters: Vec::new(),
            metrics,
            resolve,
            on_accept: None,
            reresolve: Vec::new(),
            accepted: Vec::new(),
            shutdown: false,
            limit_log: LogLimit::default(),
            limit_refusals: (0, 0),
            refusals_log: LogLimit::default(),
        })))
    }

    /// Changes the engine's stack and wakes the loop, so what changed
    /// (a write, a close) leaves in the next turn.
    fn stack<R>(&self, f: impl FnOnce(&mut underpass_stack::Stack) -> R) -> R {
        let mut d = self.0.borrow_mut();
        let r = f(d.engine.stack_mut());
        d.wake();
        r
    }

    /// Tells the loop that something changed.
    pub fn wake(&self) {
        self.0.borrow_mut().wake();
    }

    /// The counters `--metrics` serves.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.0.borrow().metrics.clone()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.borrow().udp.local_addr()
    }

    /// Gateway mode: `f` is called for every flow accept-any takes in.
    pub fn on_accept(&self, f: impl Fn(Tunnel, Accepted) + 'static) {
        self.0.borrow_mut().on_accept = Some(Rc::new(f));
    }

    /// Gateway mode: which flows the stack takes in, and from whom.
    pub fn set_accept_any(&self, policy: Policy) {
        self.stack(|s| s.set_accept_any(policy));
    }

    /// Gateway mode: routes packets between peers that `allowed` lets
    /// through (see the engine's hub).
    pub fn set_peer_to_peer(&self, allowed: underpass_stack::PeerToPeer) {
        self.0.borrow_mut().engine.set_peer_to_peer(allowed);
    }

    /// Takes a flow accept-any offered (gateway).
    pub fn tcp_accept(&self, conn: ConnId) -> Result<(), TcpError> {
        self.stack(|s| s.tcp_accept(conn))
    }

    /// Refuses or ends a flow with a reset.
    pub fn tcp_abort(&self, conn: ConnId) {
        self.stack(|s| s.tcp_abort(conn));
    }

    /// Listens on `port` of the tunnel address (`[TCPServerTunnel]`).
    pub fn tcp_listen(&self, port: u16) -> Result<ListenerId, TcpError> {
        self.stack(|s| s.tcp_listen(port))
    }

    /// The next connection a listener took in.
    pub fn poll_accept_from(
        &self,
        cx: &mut Context<'_>,
        id: ListenerId,
    ) -> Poll<Result<(ConnId, SocketAddr), TcpError>> {
        self.0
            .borrow_mut()
            .engine
            .stack_mut()
            .poll_accept_from(cx, id)
    }

    /// The (local, remote) addresses of a connection.
    pub fn tcp_endpoints(&self, conn: ConnId) -> Result<(SocketAddr, SocketAddr), TcpError> {
        self.0.borrow().engine.stack().tcp_endpoints(conn)
    }

    /// Binds a UDP socket on the tunnel address; `port` or an ephemeral one.
    pub fn udp_bind_port(&self, port: Option<u16>) -> Result<UdpId, UdpError> {
        self.stack(|s| s.udp_bind(port))
    }

    /// Sends an ICMP echo request to `ip` through the tunnel (CheckAlive).
    pub fn ping(&self, ip: IpAddr) -> Result<(), underpass_stack::EchoError> {
        self.stack(|s| s.ping(ip))
    }

    pub fn shutdown(&self) {
        let mut d = self.0.borrow_mut();
        d.shutdown = true;
        d.wake();
    }

    /// Runs the loop until [`Tunnel::shutdown`].
    pub async fn run(&self) {
        let mut batch = RecvBatch::default();
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            let deadline = {
                let mut d = self.0.borrow_mut();
                if d.shutdown {
                    break;
                }
                let epoch = d.epoch;
                d.engine.poll_timeout().map(|t| epoch + t.since_epoch())
            };
            match deadline {
                Some(at) => sleep.as_mut().reset(tokio::time::Instant::from_std(at)),
                None => sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_secs(3600)),
            }
            poll_fn(|cx| {
                let mut d = self.0.borrow_mut();
                let mut ready = d.dirty;
                d.loop_waker = Some(cx.waker().clone());
                if d.udp.poll_recv_ready(cx).is_ready() {
                    ready = true;
                }
                if d.blocked && d.udp.poll_send_ready(cx).is_ready() {
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
                let mut d = self.0.borrow_mut();
                d.loop_waker = None;
                let more = d.receive(&mut batch);
                let now = d.now();
                d.engine.process_ingress(now);
                more
            };
            // Let the tasks what arrived woke (and any other ready task)
            // run before anything is sent: their replies leave with the
            // ACKs, in one batch, and their bytes reach the local sockets
            // before the loop spends a send on the tunnel.
            tokio::task::yield_now().await;
            let (on_accept, accepted, reresolve) = {
                let mut d = self.0.borrow_mut();
                // The turn takes in everything the tasks did; come back at
                // once only if datagrams are still waiting.
                d.dirty = more;
                d.turn();
                if d.on_accept.is_some() {
                    d.log_limit_refusals();
                }
                d.metrics.update(&d.engine);
                (
                    d.on_accept.clone(),
                    std::mem::take(&mut d.accepted),
                    std::mem::take(&mut d.reresolve),
                )
            };
            if let Some(f) = on_accept {
                for a in accepted {
                    f(self.clone(), a);
                }
            }
            for (peer, host, port) in reresolve {
                tokio::task::spawn_local(self.clone().reresolve(peer, host, port));
            }
        }
        self.0.borrow_mut().engine.flush_tap();
    }

    /// Resolves a peer's host-name endpoint again (dynamic DNS) and
    /// retries the handshake there.
    async fn reresolve(self, peer: PeerId, host: String, port: u16) {
        self.metrics().reresolve();
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(mut addrs) => {
                if let Some(addr) = addrs.next() {
                    tracing::info!(%host, %addr, "endpoint resolved again");
                    let mut d = self.0.borrow_mut();
                    let now = d.now();
                    d.engine.set_endpoint(peer, addr, now);
                    d.wake();
                }
            }
            Err(err) => tracing::warn!(%host, error = %err, "endpoint does not resolve"),
        }
    }

    /// Starts handshakes with every peer that has an endpoint.
    pub fn connect_peers(&self) {
        let mut d = self.0.borrow_mut();
        let now = d.now();
        d.engine.connect_all(now);
        d.wake();
    }

    /// Peers the client dials (they have an endpoint) that have no
    /// session yet: `(public key, endpoint as configured)`.
    pub fn peers_awaiting_handshake(&self) -> Vec<(String, String)> {
        let d = self.0.borrow();
        let now = d.now();
        let node = d.engine.node();
        node.peer_ids()
            .filter_map(|id| {
                let info = node.peer(id, now)?;
                let endpoint = d.engine.configured_endpoint(id, now)?;
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
        self.0.borrow().engine.node().route(ip).is_some()
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
            let mut d = self.0.borrow_mut();
            let conn = d.engine.stack_mut().tcp_connect(addr).map_err(|err| {
                if err == TcpError::TooMany {
                    d.warn_connection_limit();
                }
                io_error(err)
            })?;
            d.wake();
            conn
        };
        let stream = TunnelStream {
            tunnel: self.clone(),
            conn,
        };
        poll_fn(|cx| {
            self.0
                .borrow_mut()
                .engine
                .stack_mut()
                .poll_connected(cx, conn)
        })
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
        !self.0.borrow().engine.stack().dns_servers().is_empty()
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
        let id = self.stack(|s| s.dns_resolve(host))?;
        let mut ips =
            poll_fn(|cx| self.0.borrow_mut().engine.stack_mut().poll_resolve(cx, id)).await?;
        self.order(&mut ips);
        Ok(ips)
    }

    /// `[Resolve] ResolveStrategy` applied to a name's addresses.
    fn order(&self, ips: &mut [IpAddr]) {
        let d = self.0.borrow();
        d.resolve.order(d.engine.stack().addresses(), ips);
    }

    /// Resolves and connects, trying each address in turn (the preferred
    /// family first) until one answers.
    pub async fn connect_host(&self, host: &str, port: u16) -> Result<TunnelStream, ConnectError> {
        let ips = self.resolve(host).await.map_err(ConnectError::Dns)?;
        let ips = self.0.borrow().engine.reachable(&ips);
        let mut last = io::Error::new(
            io::ErrorKind::NetworkUnreachable,
            "no route through the tunnel",
        );
        for ip in ips {
            match self.connect(SocketAddr::new(ip, port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(ConnectError::Io(last))
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
