//! A client and a gateway, each an engine (a core node with a stack), on
//! the simulated network every sans-IO test shares. Time jumps to the
//! next thing that happens.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::hash::Hasher;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use underpass_core::{Instant, Node, NodeOptions, PeerOptions, PrivateKey};
use underpass_stack::{
    Accepted, ConnId, Engine, EngineEvent, EngineOptions, PacketTap, Stack, StackOptions, TcpError,
};

pub static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Trace packets from this many milliseconds of simulated time on.
pub static TRACE_FROM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);
pub const CLIENT: usize = 0;
pub const GATEWAY: usize = 1;

pub use underpass_sim::Link;

/// The link of most tests: half a millisecond each way, nothing lost.
pub const CLEAN: Link = Link::delay(Duration::from_micros(500));

/// TCP segments a host sent, as (flags, payload length).
type Segments = Rc<RefCell<Vec<(u8, usize)>>>;

/// Sees each host's packets in the clear: records the TCP segments a host
/// sends while [`Net::carry`] asks, and prints them when tracing.
struct Observer {
    host: usize,
    recording: Rc<Cell<bool>>,
    segments: Segments,
    clock_ms: Rc<Cell<u64>>,
}

impl PacketTap for Observer {
    fn packet(&mut self, p: &[u8]) {
        if p.first().map(|b| b >> 4) != Some(4) || p.len() < 40 || p[9] != 6 {
            return;
        }
        let tcp = &p[20..];
        let header = usize::from(tcp[12] >> 4) * 4;
        if self.recording.get() {
            self.segments
                .borrow_mut()
                .push((tcp[13], tcp.len() - header));
        }
        if self.host == CLIENT
            && (TRACE.load(Ordering::Relaxed)
                || TRACE_FROM.load(Ordering::Relaxed) < self.clock_ms.get())
        {
            trace(self.clock_ms.get(), p);
        }
    }
}

/// One line per TCP segment the client sends or receives.
fn trace(ms: u64, p: &[u8]) {
    let t = &p[20..];
    let hl = usize::from(t[12] >> 4) * 4;
    let mut sack = Vec::new();
    let mut o = 20;
    while o + 1 < hl {
        match t[o] {
            0 => break,
            1 => o += 1,
            kind => {
                let len = usize::from(t[o + 1]).max(2);
                if kind == 5 {
                    for b in t[o + 2..o + len].chunks(8) {
                        let l = u32::from_be_bytes(b[0..4].try_into().unwrap());
                        let r = u32::from_be_bytes(b[4..8].try_into().unwrap());
                        sack.push((l, r));
                    }
                }
                o += len;
            }
        }
    }
    eprintln!(
        "{ms} ms {}.{} > {}.{} flags {:02x} seq {} ack {} len {} win {} sack {:?}",
        p[15],
        u16::from_be_bytes([t[0], t[1]]),
        p[19],
        u16::from_be_bytes([t[2], t[3]]),
        t[13],
        u32::from_be_bytes(t[4..8].try_into().unwrap()),
        u32::from_be_bytes(t[8..12].try_into().unwrap()),
        p.len() - 20 - hl,
        u16::from_be_bytes([t[14], t[15]]),
        sack
    );
}

/// A client and a gateway, each an [`Engine`] (a core node and a stack),
/// on the shared simulated network (`underpass_sim`).
pub struct Net {
    sim: underpass_sim::Sim<Engine>,
    recording: [Rc<Cell<bool>>; 2],
    segments: [Segments; 2],
    clock_ms: Rc<Cell<u64>>,
    accepted: std::collections::VecDeque<Accepted>,
}

impl std::ops::Deref for Net {
    type Target = underpass_sim::Sim<Engine>;
    fn deref(&self) -> &Self::Target {
        &self.sim
    }
}

impl std::ops::DerefMut for Net {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.sim
    }
}

pub fn waker() -> Waker {
    Waker::noop().clone()
}

impl Net {
    /// A client (10.0.0.1) and a gateway (10.0.0.2) that accepts any flow.
    pub fn new(seed: u64, link: Link) -> Net {
        Self::with(seed, link, |_| {}, |_| {})
    }

    pub fn with(
        seed: u64,
        link: Link,
        client_opts: impl FnOnce(&mut StackOptions),
        gateway_opts: impl FnOnce(&mut StackOptions),
    ) -> Net {
        let wall = Duration::from_secs(1_764_000_000);
        let (kc, kg) = (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        );
        let (ca, ga): (SocketAddr, SocketAddr) = (
            "192.0.2.1:40000".parse().unwrap(),
            "192.0.2.2:51820".parse().unwrap(),
        );
        let rng = |s: u64| Box::new(ChaCha8Rng::seed_from_u64(s));
        let mut cn = Node::new(
            kc.clone(),
            NodeOptions::default(),
            rng(seed),
            Instant::ZERO,
            wall,
        );
        let mut gn = Node::new(
            kg.clone(),
            NodeOptions::default(),
            rng(seed + 1),
            Instant::ZERO,
            wall,
        );
        let mut p = PeerOptions::new(kg.public_key());
        p.endpoint = Some(ga);
        p.allowed_ips = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        cn.add_peer(p, Instant::ZERO).unwrap();
        let mut p = PeerOptions::new(kc.public_key());
        p.allowed_ips = vec![
            "10.0.0.1/32".parse().unwrap(),
            "fd00::1/128".parse().unwrap(),
        ];
        gn.add_peer(p, Instant::ZERO).unwrap();

        let mut co = StackOptions::new(
            vec![
                "10.0.0.1/32".parse().unwrap(),
                "fd00::1/128".parse().unwrap(),
            ],
            seed,
        );
        co.dns_servers = vec!["10.0.0.2".parse().unwrap()];
        client_opts(&mut co);
        let mut go = StackOptions::new(
            vec![
                "10.0.0.2/32".parse().unwrap(),
                "fd00::2/128".parse().unwrap(),
            ],
            seed + 7,
        );
        gateway_opts(&mut go);
        let cs = Stack::new(co, Instant::ZERO).unwrap();
        let mut gs = Stack::new(go, Instant::ZERO).unwrap();
        gs.set_accept_any(Box::new(|_, dst: SocketAddr| dst.port() != 9));
        let mut hosts = [
            Engine::new(cn, cs, EngineOptions::default()),
            Engine::new(gn, gs, EngineOptions::default()),
        ];
        let recording = [Rc::new(Cell::new(false)), Rc::new(Cell::new(false))];
        let segments = [Rc::default(), Rc::default()];
        let clock_ms = Rc::new(Cell::new(0));
        for (h, engine) in hosts.iter_mut().enumerate() {
            engine.set_tap(Box::new(Observer {
                host: h,
                recording: recording[h].clone(),
                segments: Rc::clone(&segments[h]),
                clock_ms: clock_ms.clone(),
            }));
        }
        Net {
            sim: underpass_sim::Sim::new(hosts, [ca, ga], link, seed ^ 0xabcdef),
            recording,
            segments,
            clock_ms,
            accepted: Default::default(),
        }
    }

    pub fn stack(&mut self, h: usize) -> &mut Stack {
        self.sim.hosts[h].stack_mut()
    }

    /// Advances the clock to the next event (or by at most `max`) and
    /// handles everything due.
    pub fn step(&mut self, max: Duration) {
        self.clock_ms
            .set(self.sim.now.since_epoch().as_millis() as u64);
        self.sim.step(max);
        for engine in &mut self.sim.hosts {
            while let Some(event) = engine.poll_event() {
                if let EngineEvent::Accepted(a) = event {
                    self.accepted.push_back(a);
                }
            }
        }
    }

    /// The next flow the gateway took in, for the test to accept.
    pub fn poll_accepted(&mut self) -> Option<Accepted> {
        self.accepted.pop_front()
    }

    /// Steps until `done` holds, failing after `limit` of simulated time.
    pub fn run_until(
        &mut self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&mut Net) -> bool,
    ) {
        let deadline = self.now + limit;
        while !done(self) {
            assert!(
                self.now < deadline,
                "timed out (simulated {limit:?}) waiting for {what}"
            );
            self.step(Duration::from_millis(100));
        }
    }

    /// Sends what host `h`'s stack has queued, without polling it, through
    /// its node and straight into the other host's stack (not polled
    /// either), past the link; returns the TCP segments that went as
    /// (flags, payload length).
    pub fn carry(&mut self, h: usize) -> Vec<(u8, usize)> {
        let now = self.now;
        let from = self.addrs[h];
        self.recording[h].set(true);
        self.sim.hosts[h].encrypt_outbound(now);
        self.recording[h].set(false);
        let segments = std::mem::take(&mut *self.segments[h].borrow_mut());
        let mut datagrams = Vec::new();
        while let Some(t) = self.sim.hosts[h].poll_transmit(64) {
            datagrams.extend(t.contents.chunks(t.segment_size).map(<[u8]>::to_vec));
            let n = t.segments();
            self.sim.hosts[h].advance_transmit(n);
        }
        for mut d in datagrams {
            self.sim.hosts[1 - h].handle_datagram(now, from, &mut d);
        }
        segments
    }

    /// Brings the WireGuard session up from the client's side, so the
    /// gateway knows where the client is.
    pub fn handshake(&mut self) {
        let now = self.now;
        let peer = self.hosts[CLIENT].node().peer_ids().next().unwrap();
        self.hosts[CLIENT].connect(peer, now);
        self.run_until(Duration::from_secs(5), "the handshake", |net| {
            let g = net.hosts[GATEWAY].node().peer_ids().next().unwrap();
            net.hosts[GATEWAY].has_session(g, net.now)
        });
    }

    /// Steps until the client's connection `c` is established or has
    /// failed, within `limit`; returns which.
    pub fn connect_outcome(
        &mut self,
        c: ConnId,
        limit: Duration,
        what: &str,
    ) -> Result<(), TcpError> {
        let w = waker();
        let mut result = None;
        self.run_until(limit, what, |net| {
            if let Poll::Ready(r) = net
                .stack(CLIENT)
                .poll_connected(&mut Context::from_waker(&w), c)
            {
                result = Some(r);
            }
            result.is_some()
        });
        result.expect("run_until returns once it is set")
    }

    /// Connects from the client to `dst` and accepts on the gateway; returns
    /// both ends.
    pub fn connect(&mut self, dst: SocketAddr) -> (ConnId, ConnId) {
        let c = self.stack(CLIENT).tcp_connect(dst).unwrap();
        let mut g = None;
        self.run_until(
            Duration::from_secs(10),
            "the gateway to see the SYN",
            |net| {
                while let Some(a) = net.poll_accepted() {
                    if let Accepted::Tcp { conn, local, .. } = a {
                        assert_eq!(local, dst, "the gateway sees the original destination");
                        net.stack(GATEWAY).tcp_accept(conn).unwrap();
                        g = Some(conn);
                    }
                }
                g.is_some()
            },
        );
        let w = waker();
        self.run_until(
            Duration::from_secs(10),
            "the connection to establish",
            |net| {
                matches!(
                    net.stack(CLIENT)
                        .poll_connected(&mut Context::from_waker(&w), c),
                    Poll::Ready(Ok(()))
                )
            },
        );
        (c, g.unwrap())
    }
}

/// A stream of pseudo-random bytes with a running checksum, so gigabytes
/// can be checked without being stored.
pub struct Pattern {
    rng: ChaCha8Rng,
    pub remaining: usize,
    hash: std::hash::DefaultHasher,
    chunk: Vec<u8>,
    offset: usize,
}

impl Pattern {
    pub fn new(seed: u64, len: usize) -> Pattern {
        Pattern {
            rng: ChaCha8Rng::seed_from_u64(seed),
            remaining: len,
            hash: Default::default(),
            chunk: Vec::new(),
            offset: 0,
        }
    }

    /// Writes as much as the connection takes; returns bytes written.
    pub fn write_to(&mut self, stack: &mut Stack, conn: ConnId) -> usize {
        let mut total = 0;
        while self.remaining > 0 {
            if self.offset == self.chunk.len() {
                let n = self.remaining.min(64 * 1024);
                self.chunk.resize(n, 0);
                self.rng.fill(&mut self.chunk[..]);
                self.offset = 0;
            }
            match stack.tcp_write(conn, &self.chunk[self.offset..]) {
                Ok(n) => {
                    self.hash.write(&self.chunk[self.offset..self.offset + n]);
                    self.offset += n;
                    self.remaining -= n;
                    total += n;
                }
                Err(TcpError::WouldBlock) => break,
                Err(e) => panic!("write failed: {e}"),
            }
        }
        total
    }

    pub fn checksum(&self) -> u64 {
        self.hash.finish()
    }
}

/// Reads everything available into a running checksum; returns (bytes
/// read now, EOF seen).
pub fn drain_into(
    stack: &mut Stack,
    conn: ConnId,
    hash: &mut std::hash::DefaultHasher,
) -> (usize, bool) {
    let mut total = 0;
    loop {
        let r = stack.tcp_read_with(conn, |data| {
            hash.write(data);
            data.len()
        });
        match r {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(TcpError::WouldBlock) => return (total, false),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// One connection from the client to the gateway moving bytes one way for
/// at most `limit` of simulated time (or until `len` arrived), reading as
/// fast as they come; returns the bytes that arrived and the time it took
/// from the connect.
pub fn transfer(net: &mut Net, len: usize, upload: bool, limit: Duration) -> (usize, Duration) {
    let start = net.now;
    let (c, g) = net.connect("198.51.100.9:5201".parse().unwrap());
    let (writer, reader, wc, rc) = if upload {
        (CLIENT, GATEWAY, c, g)
    } else {
        (GATEWAY, CLIENT, g, c)
    };
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7) as u8).collect();
    let (mut sent, mut got) = (0, 0);
    let deadline = start + limit;
    let mut last_trace = u128::MAX;
    while got < len && net.now < deadline {
        while sent < len {
            let n = (len - sent).min(chunk.len());
            match net.stack(writer).tcp_write(wc, &chunk[..n]) {
                Ok(n) => sent += n,
                Err(TcpError::WouldBlock) => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        loop {
            match net.stack(reader).tcp_read_with(rc, |d| d.len()) {
                Ok(0) | Err(TcpError::WouldBlock) => break,
                Ok(n) => got += n,
                Err(e) => panic!("read: {e}"),
            }
        }
        net.step(Duration::from_millis(100));
        if TRACE_SENDER.load(std::sync::atomic::Ordering::Relaxed) {
            let t = net.now - start;
            if t.as_millis() / 100 != last_trace {
                last_trace = t.as_millis() / 100;
                if let Ok(Some(i)) = net.stack(writer).tcp_info(wc) {
                    eprintln!(
                        "{:>7.1} s got {:>10} cwnd {:>9} ssthresh {:>10} flight {:>9} srtt {:>6.1} ms min {:>6.1} retx {:>6} rto {} rec {} peer win {} pace {:.0} rate {:.0} Mbit/s",
                        t.as_secs_f64(), got, i.cwnd, i.ssthresh.min(999_999_999), i.in_flight,
                        i.srtt.as_secs_f64() * 1e3, i.min_rtt.as_secs_f64() * 1e3, i.retransmitted,
                        i.timeouts, i.in_recovery, i.peer_window,
                        i.pacing_rate as f64 * 8e-6, i.delivery_rate as f64 * 8e-6
                    );
                }
            }
        }
    }
    (got, net.now - start)
}

/// Prints the sender's state every 100 ms of [`transfer`].
pub static TRACE_SENDER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
