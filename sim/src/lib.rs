//! One simulated network and clock for every test of a sans-IO host: bare
//! WireGuard nodes (core's tests) and whole engines, node and stack (the
//! stack's tests and benchmarks).
//!
//! Two hosts share a link with a one-way delay, jitter, random loss,
//! duplication and a bottleneck with a drop-tail queue, each direction on
//! its own. Time jumps straight to the next thing that happens (a datagram
//! arriving, a host's timer), so minutes of protocol run in milliseconds,
//! and every run with the same seed is the same run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use underpass_core::{Instant, Node, Transmit};
use underpass_stack::Engine;

/// What the network needs of a host: the sans-IO surface core's [`Node`]
/// and the stack's [`Engine`] share.
pub trait Host {
    /// A datagram arrived from `from`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]);
    /// Runs after every arrival and whenever [`Host::poll_timeout`] passes
    /// (and before each look at what the host sends): hosts do what is due.
    fn handle_timeout(&mut self, now: Instant);
    /// When the host must run even if nothing arrives.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Datagrams the host wants to send.
    fn poll_transmit(&self, max_segments: usize) -> Option<Transmit<'_>>;
    /// The first `segments` of [`Host::poll_transmit`] were sent.
    fn advance_transmit(&mut self, segments: usize);
}

impl Host for Node {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) {
        let _ = Node::handle_datagram(self, now, from, datagram);
    }
    fn handle_timeout(&mut self, now: Instant) {
        if Node::poll_timeout(self).is_some_and(|t| t <= now) {
            Node::handle_timeout(self, now);
        }
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        Node::poll_timeout(self)
    }
    fn poll_transmit(&self, max_segments: usize) -> Option<Transmit<'_>> {
        Node::poll_transmit(self, max_segments)
    }
    fn advance_transmit(&mut self, segments: usize) {
        Node::advance_transmit(self, segments);
    }
}

impl Host for Engine {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) {
        Engine::handle_datagram(self, now, from, datagram);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Engine::handle_timeout(self, now);
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        Engine::poll_timeout(self)
    }
    fn poll_transmit(&self, max_segments: usize) -> Option<Transmit<'_>> {
        Engine::poll_transmit(self, max_segments)
    }
    fn advance_transmit(&mut self, segments: usize) {
        Engine::advance_transmit(self, segments);
    }
}

/// The path between the two hosts, the same each way.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// One-way delay.
    pub delay: Duration,
    /// Extra random delay up to this much; datagrams overtake each other.
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram arrives twice.
    pub duplicate: f64,
    /// A bottleneck: bits per second and a drop-tail queue in bytes.
    pub bottleneck: Option<(u64, usize)>,
}

impl Link {
    /// `delay` each way, nothing else.
    pub const fn delay(delay: Duration) -> Link {
        Link {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            bottleneck: None,
        }
    }

    /// A long path: `rtt` round trip, `mbit` Mbit/s at the bottleneck with
    /// a queue of one bandwidth-delay product (at least 64 KiB), `loss` at
    /// random.
    pub fn wan(rtt: Duration, mbit: u64, loss: f64) -> Link {
        let rate = mbit * 1_000_000;
        let bdp = (rate as f64 / 8.0 * rtt.as_secs_f64()) as usize;
        Link {
            loss,
            bottleneck: Some((rate, bdp.max(64 * 1024))),
            ..Link::delay(rtt / 2)
        }
    }
}

struct Flight {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
    /// For both copies of a duplicated transport message: which pair.
    pair: Option<u64>,
}

impl PartialEq for Flight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Flight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Two hosts on a simulated link, with a simulated clock.
pub struct Sim<H> {
    /// The clock.
    pub now: Instant,
    /// The two hosts.
    pub hosts: [H; 2],
    /// Each host's address; a datagram goes to the host whose address is
    /// its destination, or nowhere.
    pub addrs: [SocketAddr; 2],
    /// The path, the same each way.
    pub link: Link,
    /// Whether each host's datagrams reach the network at all.
    pub up: [bool; 2],
    /// Record every datagram each host sends in [`Sim::sent`].
    pub record_sent: bool,
    /// Datagrams each host put on the wire, with when and their length
    /// (when [`Sim::record_sent`] is on).
    pub sent: [Vec<(Instant, usize)>; 2],
    /// Datagrams the hosts sent, all told.
    pub datagrams: u64,
    /// Datagrams the bottleneck queues dropped.
    pub queue_drops: u64,
    /// Transport messages of which both copies reached each host (counted
    /// when the second arrives: copies reorder, and one still in flight
    /// when a run ends was not delivered).
    pub duplicated_data: [u64; 2],
    rng: ChaCha8Rng,
    seq: u64,
    flights: BinaryHeap<Reverse<Flight>>,
    /// When each host's bottleneck is next free.
    busy_until: [Instant; 2],
    pairs_arrived: HashSet<u64>,
}

impl<H: Host> Sim<H> {
    /// `hosts` at `addrs` on `link`; `seed` decides every random draw of
    /// the link.
    pub fn new(hosts: [H; 2], addrs: [SocketAddr; 2], link: Link, seed: u64) -> Sim<H> {
        Sim {
            now: Instant::ZERO,
            hosts,
            addrs,
            link,
            up: [true, true],
            record_sent: false,
            sent: [Vec::new(), Vec::new()],
            datagrams: 0,
            queue_drops: 0,
            duplicated_data: [0, 0],
            rng: ChaCha8Rng::seed_from_u64(seed),
            seq: 0,
            flights: BinaryHeap::new(),
            busy_until: [Instant::ZERO; 2],
            pairs_arrived: HashSet::new(),
        }
    }

    /// Lets every host do what is due and puts what it sends on the
    /// link, impaired.
    pub fn pump(&mut self) {
        for h in 0..2 {
            self.hosts[h].handle_timeout(self.now);
            while let Some(t) = self.hosts[h].poll_transmit(64) {
                let n = t.segments();
                let dst = t.dst;
                let datagrams: Vec<Vec<u8>> = t
                    .contents
                    .chunks(t.segment_size)
                    .map(<[u8]>::to_vec)
                    .collect();
                self.hosts[h].advance_transmit(n);
                for bytes in datagrams {
                    self.put_on_link(h, dst, bytes);
                }
            }
        }
    }

    fn put_on_link(&mut self, from: usize, dst: SocketAddr, bytes: Vec<u8>) {
        self.datagrams += 1;
        if self.record_sent {
            self.sent[from].push((self.now, bytes.len()));
        }
        let Some(to) = self.addrs.iter().position(|a| *a == dst) else {
            return; // nobody there
        };
        if !self.up[from] || self.rng.gen_bool(self.link.loss) {
            return;
        }
        let mut depart = self.now;
        if let Some((rate, queue)) = self.link.bottleneck {
            let busy = self.busy_until[from].max(self.now);
            let queued = (busy - self.now).as_secs_f64() * rate as f64 / 8.0;
            if queued as usize + bytes.len() > queue {
                self.queue_drops += 1;
                return;
            }
            depart = busy + Duration::from_secs_f64(bytes.len() as f64 * 8.0 / rate as f64);
            self.busy_until[from] = depart;
        }
        let copies = if self.rng.gen_bool(self.link.duplicate) {
            2
        } else {
            1
        };
        // WireGuard transport data is message type 4.
        let pair = (copies == 2 && bytes.first() == Some(&4)).then(|| {
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
            self.flights.push(Reverse(Flight {
                at: depart + self.link.delay + jitter,
                seq: self.seq,
                to,
                from: self.addrs[from],
                bytes: bytes.clone(),
                pair,
            }));
        }
    }

    /// When the next datagram arrives or a host's timer fires.
    fn next_event(&mut self) -> Option<Instant> {
        let arrival = self.flights.peek().map(|Reverse(f)| f.at);
        let timers = self.hosts.iter_mut().filter_map(Host::poll_timeout).min();
        [arrival, timers].into_iter().flatten().min()
    }

    /// Moves the clock to `at` (never back) and delivers every datagram
    /// due by then.
    fn advance_to(&mut self, at: Instant) {
        self.now = self.now.max(at);
        while let Some(Reverse(f)) = self.flights.peek() {
            if f.at > self.now {
                break;
            }
            let Reverse(mut f) = self.flights.pop().expect("peeked");
            if let Some(p) = f.pair {
                // The second copy to arrive, whichever it is.
                if !self.pairs_arrived.insert(p) {
                    self.duplicated_data[f.to] += 1;
                }
            }
            self.hosts[f.to].handle_datagram(self.now, f.from, &mut f.bytes);
        }
    }

    /// Advances the clock to the next event, or by at most `max`, and
    /// handles everything due.
    pub fn step(&mut self, max: Duration) {
        self.pump();
        let limit = self.now + max;
        let next = self.next_event().unwrap_or(limit).clamp(self.now, limit);
        self.advance_to(next);
        self.pump();
    }

    /// Runs until nothing happens before `until`; the clock ends at
    /// `until`.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            self.pump();
            match self.next_event() {
                Some(t) if t <= until => self.advance_to(t),
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }
}
