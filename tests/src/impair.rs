//! A UDP relay on loopback that impairs what it carries: it drops,
//! duplicates, reorders and delays datagrams at given rates, both ways,
//! from a seeded generator. The client sends to [`ImpairRelay::addr`]; the
//! relay sends on to the upstream from a socket of its own, which
//! [`ImpairRelay::rebind`] replaces mid-session, as a NAT that forgot the
//! mapping would.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What happens to each datagram, in each direction independently.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// Probability a datagram is sent twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by `reorder_delay`, so the
    /// ones behind it overtake it.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Added to every datagram, plus up to `jitter` more; jitter alone
    /// never reorders (a queue's delay varies, its order does not).
    pub delay: Duration,
    pub jitter: Duration,
}

impl Impairment {
    /// `loss` dropped, half as many duplicated, as many reordered by 5 ms
    /// behind a 1 ms delay with 1 ms of jitter.
    pub fn lossy(loss: f64) -> Impairment {
        Impairment {
            loss,
            duplicate: loss / 2.0,
            reorder: loss,
            reorder_delay: Duration::from_millis(5),
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
        }
    }
}

/// What the relay did, one direction.
#[derive(Debug, Default)]
pub struct Counts {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "{} datagrams, {} dropped, {} duplicated, {} reordered",
            get(&self.received),
            get(&self.dropped),
            get(&self.duplicated),
            get(&self.reordered)
        )
    }
}

pub struct ImpairRelay {
    /// Where the client sends.
    pub addr: SocketAddr,
    pub upstream: SocketAddr,
    /// Client to upstream, and back.
    pub up: Arc<Counts>,
    pub down: Arc<Counts>,
    back: Arc<Mutex<Arc<UdpSocket>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A datagram waiting for its time.
struct Due {
    at: Instant,
    seq: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One direction: reads from `recv()`, schedules, writes with `send`.
struct Lane {
    impairment: Impairment,
    rng: StdRng,
    counts: Arc<Counts>,
    queue: BinaryHeap<Reverse<Due>>,
    seq: u64,
    /// When the last datagram not held back leaves: later ones not before.
    last: Option<Instant>,
}

impl Lane {
    fn schedule(&mut self, bytes: &[u8], now: Instant) {
        let i = self.impairment;
        self.counts.received.fetch_add(1, Ordering::Relaxed);
        if self.rng.gen_bool(i.loss) {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let copies = if self.rng.gen_bool(i.duplicate) {
            self.counts.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + i.delay + i.jitter.mul_f64(self.rng.gen::<f64>());
            if self.rng.gen_bool(i.reorder) {
                self.counts.reordered.fetch_add(1, Ordering::Relaxed);
                at += i.reorder_delay;
            } else {
                at = self.last.map_or(at, |last| at.max(last));
                self.last = Some(at);
            }
            self.seq += 1;
            self.queue.push(Reverse(Due {
                at,
                seq: self.seq,
                bytes: bytes.to_vec(),
            }));
        }
    }

    /// Sends what is due; returns how long until the next one is.
    fn flush(&mut self, now: Instant, mut send: impl FnMut(&[u8])) -> Duration {
        while let Some(Reverse(d)) = self.queue.peek() {
            if d.at > now {
                return (d.at - now).min(POLL);
            }
            let Reverse(d) = self.queue.pop().expect("peeked");
            send(&d.bytes);
        }
        POLL
    }
}

/// Longest a lane sleeps in recv before it looks at its queue and at the
/// stop flag again.
const POLL: Duration = Duration::from_millis(5);

fn wait(socket: &UdpSocket, timeout: Duration) {
    let _ = socket.set_read_timeout(Some(timeout.max(Duration::from_micros(100))));
}

impl ImpairRelay {
    pub fn start(upstream: SocketAddr, impairment: Impairment, seed: u64) -> ImpairRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("relay socket"));
        let addr = front.local_addr().unwrap();
        let back = Arc::new(Mutex::new(Arc::new(Self::back_socket(upstream))));
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (up, down) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
        let lane = |counts: &Arc<Counts>, seed: u64| Lane {
            impairment,
            rng: StdRng::seed_from_u64(seed),
            counts: counts.clone(),
            queue: BinaryHeap::new(),
            seq: 0,
            last: None,
        };
        let mut threads = Vec::new();
        {
            // Client to upstream.
            let (front, back, stop, client) =
                (front.clone(), back.clone(), stop.clone(), client.clone());
            let mut lane = lane(&up, seed);
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut timeout = POLL;
                while !stop.load(Ordering::Relaxed) {
                    wait(&front, timeout);
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        *client.lock().unwrap() = Some(from);
                        lane.schedule(&buf[..n], Instant::now());
                    }
                    let socket = back.lock().unwrap().clone();
                    timeout = lane.flush(Instant::now(), |d| {
                        let _ = socket.send(d);
                    });
                }
            }));
        }
        {
            // Upstream to client, from whichever back socket is current.
            let (front, back, stop, client) =
                (front.clone(), back.clone(), stop.clone(), client.clone());
            let mut lane = lane(&down, seed ^ 0x5eed);
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut timeout = POLL;
                while !stop.load(Ordering::Relaxed) {
                    let socket = back.lock().unwrap().clone();
                    wait(&socket, timeout);
                    if let Ok(n) = socket.recv(&mut buf) {
                        lane.schedule(&buf[..n], Instant::now());
                    }
                    let to = *client.lock().unwrap();
                    timeout = lane.flush(Instant::now(), |d| {
                        if let Some(to) = to {
                            let _ = front.send_to(d, to);
                        }
                    });
                }
            }));
        }
        ImpairRelay {
            addr,
            upstream,
            up,
            down,
            back,
            stop,
            threads,
        }
    }

    fn back_socket(upstream: SocketAddr) -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").expect("relay upstream socket");
        s.connect(upstream)
            .expect("connect the relay to its upstream");
        s
    }

    /// The port the upstream sees the client's datagrams come from.
    pub fn source_port(&self) -> u16 {
        self.back.lock().unwrap().local_addr().unwrap().port()
    }

    /// Sends from a new source port from now on; what the upstream sends to
    /// the old one is lost, as behind a NAT that lost its mapping.
    pub fn rebind(&self) {
        *self.back.lock().unwrap() = Arc::new(Self::back_socket(self.upstream));
    }
}

impl Drop for ImpairRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
