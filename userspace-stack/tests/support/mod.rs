//! A client and a gateway, each a core node with a stack, on a simulated
//! link with a simulated clock. Time jumps to the next thing that happens.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use underpass_core::{Instant, Node, NodeOptions, PeerOptions, PrivateKey, Received};
use underpass_stack::{Accepted, ConnId, Stack, StackOptions, TcpError};

pub static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Trace packets from this many milliseconds of simulated time on.
pub static TRACE_FROM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);
pub const CLIENT: usize = 0;
pub const GATEWAY: usize = 1;

/// The path between the hosts, the same each way (each direction has
/// its own bottleneck queue).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// One-way delay.
    pub delay: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// A bottleneck: bits per second and a drop-tail queue in bytes.
    pub bottleneck: Option<(u64, usize)>,
}

impl Link {
    pub const CLEAN: Link = Link {
        delay: Duration::from_micros(500),
        jitter: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
        bottleneck: None,
    };

    /// A long path: `rtt` round trip, `mbit` Mbit/s at the bottleneck with
    /// a queue of one bandwidth-delay product, `loss` at random.
    pub fn wan(rtt: Duration, mbit: u64, loss: f64) -> Link {
        let rate = mbit * 1_000_000;
        let bdp = (rate as f64 / 8.0 * rtt.as_secs_f64()) as usize;
        Link {
            delay: rtt / 2,
            jitter: Duration::ZERO,
            loss,
            duplicate: 0.0,
            bottleneck: Some((rate, bdp.max(64 * 1024))),
        }
    }
}

pub struct Host {
    pub node: Node,
    pub stack: Stack,
    pub addr: SocketAddr,
}

struct Flight {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Flight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Flight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

pub struct Net {
    pub now: Instant,
    pub hosts: [Host; 2],
    pub link: Link,
    /// Drop everything the gateway would receive (a dead far end).
    pub blackhole: bool,
    rng: ChaCha8Rng,
    seq: u64,
    flights: BinaryHeap<Reverse<Flight>>,
    pub datagrams: u64,
    /// When each host's bottleneck is next free.
    busy_until: [Instant; 2],
    /// Datagrams the bottleneck queues dropped.
    pub queue_drops: u64,
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
        Net {
            now: Instant::ZERO,
            hosts: [
                Host {
                    node: cn,
                    stack: cs,
                    addr: ca,
                },
                Host {
                    node: gn,
                    stack: gs,
                    addr: ga,
                },
            ],
            link,
            blackhole: false,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xabcdef),
            seq: 0,
            flights: BinaryHeap::new(),
            datagrams: 0,
            busy_until: [Instant::ZERO; 2],
            queue_drops: 0,
        }
    }

    pub fn stack(&mut self, h: usize) -> &mut Stack {
        &mut self.hosts[h].stack
    }

    /// Moves packets between each host's stack and node and onto the link.
    fn pump(&mut self) {
        for h in [CLIENT, GATEWAY] {
            let now = self.now;
            let from = self.hosts[h].addr;
            let host = &mut self.hosts[h];
            host.stack.poll(now);
            loop {
                let node = &mut host.node;
                host.stack.drain_outbound(|p| {
                    let _ = node.handle_ip_packet(now, p);
                });
                if !host.stack.outbound_full() {
                    break;
                }
                host.stack.poll(now);
            }
            while let Some(t) = host.node.poll_transmit(64) {
                let n = t.segments();
                let dgrams: Vec<Vec<u8>> = t
                    .contents
                    .chunks(t.segment_size)
                    .map(<[u8]>::to_vec)
                    .collect();
                host.node.advance_transmit(n);
                for bytes in dgrams {
                    self.datagrams += 1;
                    if self.rng.gen_bool(self.link.loss) || (h == CLIENT && self.blackhole) {
                        continue;
                    }
                    let mut depart = self.now;
                    if let Some((rate, queue)) = self.link.bottleneck {
                        let busy = self.busy_until[h].max(self.now);
                        let queued = (busy - self.now).as_secs_f64() * rate as f64 / 8.0;
                        if queued as usize + bytes.len() > queue {
                            self.queue_drops += 1;
                            continue;
                        }
                        let wire = Duration::from_secs_f64(bytes.len() as f64 * 8.0 / rate as f64);
                        depart = busy + wire;
                        self.busy_until[h] = depart;
                    }
                    let copies = if self.rng.gen_bool(self.link.duplicate) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let jitter = self.link.jitter.mul_f64(self.rng.gen::<f64>());
                        self.seq += 1;
                        self.flights.push(Reverse(Flight {
                            at: depart + self.link.delay + jitter,
                            seq: self.seq,
                            to: 1 - h,
                            from,
                            bytes: bytes.clone(),
                        }));
                    }
                }
            }
        }
    }

    /// Advances the clock to the next event (or by at most `max`) and
    /// handles everything due.
    pub fn step(&mut self, max: Duration) {
        self.pump();
        let arrival = self.flights.peek().map(|Reverse(f)| f.at);
        let mut next = arrival;
        for h in 0..2 {
            let t = [
                self.hosts[h].node.poll_timeout(),
                self.hosts[h].stack.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            next = [next, t].into_iter().flatten().min();
        }
        let limit = self.now + max;
        self.now = next.unwrap_or(limit).clamp(self.now, limit);
        let mut batches = [false; 2];
        while let Some(Reverse(f)) = self.flights.peek() {
            if f.at > self.now {
                break;
            }
            let Reverse(mut f) = self.flights.pop().unwrap();
            let host = &mut self.hosts[f.to];
            if let Ok(Received::Packet { packet, .. }) =
                host.node.handle_datagram(self.now, f.from, &mut f.bytes)
            {
                if (TRACE.load(std::sync::atomic::Ordering::Relaxed)
                    || TRACE_FROM.load(std::sync::atomic::Ordering::Relaxed)
                        < self.now.since_epoch().as_millis() as u64)
                    && packet[9] == 6
                {
                    let t = &packet[20..];
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
                        "{:?} to {} flags {:02x} seq {} ack {} len {} win {} sack {:?}",
                        self.now,
                        f.to,
                        t[13],
                        u32::from_be_bytes(t[4..8].try_into().unwrap()),
                        u32::from_be_bytes(t[8..12].try_into().unwrap()),
                        packet.len() - 20 - hl,
                        u16::from_be_bytes([t[14], t[15]]),
                        sack
                    );
                }
                host.stack.receive(self.now, packet);
            }
            batches[f.to] = true;
        }
        for h in 0..2 {
            let host = &mut self.hosts[h];
            if host.node.poll_timeout().is_some_and(|t| t <= self.now) {
                host.node.handle_timeout(self.now);
            }
        }
        self.pump();
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
        let from = self.hosts[h].addr;
        let mut segments = Vec::new();
        let host = &mut self.hosts[h];
        let node = &mut host.node;
        host.stack.drain_outbound(|p| {
            if p[9] == 6 {
                let tcp = &p[20..];
                let header = usize::from(tcp[12] >> 4) * 4;
                segments.push((tcp[13], tcp.len() - header));
            }
            let _ = node.handle_ip_packet(now, p);
        });
        let mut datagrams = Vec::new();
        while let Some(t) = host.node.poll_transmit(64) {
            datagrams.extend(t.contents.chunks(t.segment_size).map(<[u8]>::to_vec));
            host.node.advance_transmit(t.segments());
        }
        let to = &mut self.hosts[1 - h];
        for mut d in datagrams {
            if let Ok(Received::Packet { packet, .. }) = to.node.handle_datagram(now, from, &mut d)
            {
                to.stack.receive(now, packet);
            }
        }
        segments
    }

    /// Brings the WireGuard session up from the client's side, so the
    /// gateway knows where the client is.
    pub fn handshake(&mut self) {
        let peer = self.hosts[CLIENT].node.peer_ids().next().unwrap();
        self.hosts[CLIENT].node.connect(peer, self.now);
        self.run_until(Duration::from_secs(5), "the handshake", |net| {
            let g = net.hosts[GATEWAY].node.peer_ids().next().unwrap();
            net.hosts[GATEWAY]
                .node
                .peer(g, net.now)
                .unwrap()
                .has_session
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
                while let Some(a) = net.stack(GATEWAY).poll_accepted() {
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
