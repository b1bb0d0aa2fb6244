//! A UDP relay that impairs what it carries, both ways, from a seeded
//! generator: it drops, duplicates, reorders and delays datagrams at given
//! rates, and can put a bottleneck (a rate and a drop-tail queue) on the
//! path, so that it stands for a real one: a round-trip time, a narrowest
//! link, loss. The client sends to [`ImpairRelay::addr`]; the relay sends
//! on to the upstream from a socket of its own, which
//! [`ImpairRelay::rebind`] replaces mid-session, as a NAT that forgot the
//! mapping would.
//!
//! One thread carries both directions: it takes datagrams 64 to a system
//! call and sends what is due likewise, waking once per tick while they
//! come (tests/src/bin/wan_bench/ceiling.rs measures how much it carries),
//! so that the path it emulates, not the relay, is what a benchmark sees.

pub mod batch;
mod lane;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use batch::{pin_thread, thread_cpu_seconds, tune, wait_readable, RecvBatch, SendBatch, BATCH};
use lane::Lane;

/// What happens to each datagram, in each direction independently. The
/// default does nothing to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Probability a datagram is lost (at random, before the bottleneck).
    pub loss: f64,
    /// Probability a datagram is sent twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by `reorder_delay`, so the
    /// ones behind it overtake it.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Added to every datagram after the bottleneck (the one-way
    /// propagation delay), plus up to `jitter` more; jitter alone never
    /// reorders (a queue's delay varies, its order does not).
    pub delay: Duration,
    pub jitter: Duration,
    /// The bottleneck's rate in bit/s, or none: a datagram leaves it
    /// `len * 8 / rate` after the one before it left (or after it came,
    /// if the link was idle).
    pub rate: Option<f64>,
    /// Bytes the bottleneck's queue holds before it drops what comes
    /// (drop-tail); `None`: [`Impairment::queue_limit`]'s default.
    pub queue: Option<usize>,
}

/// The least queue a bottleneck gets by default: one 64 KiB GSO send,
/// which a sender hands over at once, fits.
pub const QUEUE_FLOOR: usize = 64 * 1024;

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
            ..Impairment::default()
        }
    }

    /// A wide-area path: `rtt` (half of it each way), random `loss`, and
    /// a bottleneck of `rate_mbit` Mbit/s if given, with the default queue.
    pub fn path(rtt: Duration, loss: f64, rate_mbit: Option<f64>) -> Impairment {
        Impairment {
            loss,
            delay: rtt / 2,
            rate: rate_mbit.map(|r| r * 1e6),
            ..Impairment::default()
        }
    }

    /// The bottleneck's queue in bytes: as given, else one bandwidth-delay
    /// product (rate x round trip / 8), at least [`QUEUE_FLOOR`].
    pub fn queue_limit(&self) -> usize {
        self.queue.unwrap_or_else(|| {
            let bdp = self.rate.unwrap_or(0.0) * (self.delay * 2).as_secs_f64() / 8.0;
            (bdp as usize).max(QUEUE_FLOOR)
        })
    }
}

/// What the relay did in one direction, so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub received: u64,
    /// Lost at random.
    pub lost: u64,
    /// Dropped because the bottleneck's queue was full.
    pub queue_dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Handed to the kernel towards the other end.
    pub sent: u64,
    /// Dropped by the kernel before the relay could read them (its socket
    /// buffer was full): the relay fell behind, not part of the path.
    pub overflowed: u64,
}

impl std::ops::Sub for Tally {
    type Output = Tally;
    fn sub(self, o: Tally) -> Tally {
        Tally {
            received: self.received - o.received,
            lost: self.lost - o.lost,
            queue_dropped: self.queue_dropped - o.queue_dropped,
            duplicated: self.duplicated - o.duplicated,
            reordered: self.reordered - o.reordered,
            sent: self.sent - o.sent,
            overflowed: self.overflowed - o.overflowed,
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = |n: u64| 100.0 * n as f64 / self.received.max(1) as f64;
        write!(
            f,
            "{} received, {} lost ({:.2}%), {} queue drops ({:.2}%), ",
            self.received,
            self.lost,
            share(self.lost),
            self.queue_dropped,
            share(self.queue_dropped)
        )?;
        if self.duplicated + self.reordered > 0 {
            write!(
                f,
                "{} duplicated, {} reordered, ",
                self.duplicated, self.reordered
            )?;
        }
        write!(f, "{} sent, {} overflowed", self.sent, self.overflowed)
    }
}

/// A direction's [`Tally`], published by the relay's thread after every
/// round.
#[derive(Debug, Default)]
pub struct Counts {
    pub received: AtomicU64,
    pub lost: AtomicU64,
    pub queue_dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub sent: AtomicU64,
    pub overflowed: AtomicU64,
}

impl Counts {
    pub fn tally(&self) -> Tally {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Tally {
            received: get(&self.received),
            lost: get(&self.lost),
            queue_dropped: get(&self.queue_dropped),
            duplicated: get(&self.duplicated),
            reordered: get(&self.reordered),
            sent: get(&self.sent),
            overflowed: get(&self.overflowed),
        }
    }

    fn publish(&self, t: &Tally) {
        let set = |c: &AtomicU64, v| c.store(v, Ordering::Relaxed);
        set(&self.received, t.received);
        set(&self.lost, t.lost);
        set(&self.queue_dropped, t.queue_dropped);
        set(&self.duplicated, t.duplicated);
        set(&self.reordered, t.reordered);
        set(&self.sent, t.sent);
        set(&self.overflowed, t.overflowed);
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tally().fmt(f)
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
    /// The thread's id, for its CPU time.
    tid: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

/// Longest the relay sleeps before it looks at the stop flag and for a
/// rebound socket again.
const POLL: Duration = Duration::from_millis(5);
/// While datagrams keep coming the relay wakes once per tick, takes all
/// that came (each timed by its arrival, SO_TIMESTAMPNS) and sends all
/// that falls due within half a tick of now: a datagram leaves within
/// 100 µs of its time, and the relay wakes at most 5,000 times a second
/// however fast they come (a wake costs ~30 µs of CPU in this VM, far
/// more than a datagram). When none came it waits for the next.
const TICK: Duration = Duration::from_micros(200);

impl ImpairRelay {
    pub fn start(upstream: SocketAddr, impairment: Impairment, seed: u64) -> ImpairRelay {
        Self::start_on(upstream, impairment, seed, None)
    }

    /// [`ImpairRelay::start`] with the relay's thread on `cpu` and, where
    /// allowed (root), scheduled ahead of ordinary processes (see
    /// [`batch::realtime_thread`]): a benchmark's path must not get
    /// slower or later because the machine is busy.
    pub fn start_on(
        upstream: SocketAddr,
        impairment: Impairment,
        seed: u64,
        cpu: Option<usize>,
    ) -> ImpairRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("relay socket"));
        tune(&front);
        let addr = front.local_addr().unwrap();
        let back = Arc::new(Mutex::new(Arc::new(Self::back_socket(upstream))));
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicU32::new(0));
        let (up, down) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
        let worker = Worker {
            front,
            back: back.clone(),
            up: Way::new(Lane::new(impairment, seed), up.clone()),
            down: Way::new(Lane::new(impairment, seed ^ 0x5eed), down.clone()),
        };
        let thread = {
            let (stop, tid) = (stop.clone(), tid.clone());
            std::thread::spawn(move || {
                pin_thread(cpu);
                if cpu.is_some() {
                    batch::realtime_thread();
                }
                tid.store(batch::thread_id(), Ordering::Relaxed);
                worker.run(&stop);
            })
        };
        ImpairRelay {
            addr,
            upstream,
            up,
            down,
            back,
            stop,
            tid,
            thread: Some(thread),
        }
    }

    /// Bound where the upstream is reached: loopback for loopback, else
    /// any address (a peer in a network namespace, behind a veth).
    fn back_socket(upstream: SocketAddr) -> UdpSocket {
        let local = if upstream.ip().is_loopback() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let s = UdpSocket::bind((local, 0)).expect("relay upstream socket");
        s.connect(upstream)
            .expect("connect the relay to its upstream");
        tune(&s);
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

    /// CPU seconds the relay's thread has used.
    pub fn cpu_seconds(&self) -> f64 {
        thread_cpu_seconds(self.tid.load(Ordering::Relaxed))
    }
}

impl Drop for ImpairRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One direction in the relay's thread: its lane, where its counts go,
/// and the kernel's drop count of its socket (and of those before it: a
/// rebind starts a new count).
struct Way {
    lane: Lane,
    counts: Arc<Counts>,
    overflow_before: u64,
    overflow_now: u64,
}

impl Way {
    fn new(lane: Lane, counts: Arc<Counts>) -> Way {
        Way {
            lane,
            counts,
            overflow_before: 0,
            overflow_now: 0,
        }
    }

    /// Takes all that waits on `socket`, each datagram timed by its
    /// arrival; tells `seen` its source. Returns how many came.
    fn take(
        &mut self,
        rx: &mut RecvBatch,
        socket: &UdpSocket,
        mut seen: impl FnMut(SocketAddr),
    ) -> usize {
        let mut total = 0;
        // An error (a port unreachable reported late) is over once read.
        while let Ok(n @ 1..) = rx.recv(socket) {
            let (now, wall) = (Instant::now(), SystemTime::now());
            for i in 0..n {
                let d = rx.datagram(i);
                if let Some(from) = d.from {
                    seen(from);
                }
                let age = d.arrived.and_then(|t| wall.duration_since(t).ok());
                let arrived = age.and_then(|age| now.checked_sub(age)).unwrap_or(now);
                self.lane.schedule(d.bytes, arrived);
            }
            if let Some(dropped) = rx.overflowed() {
                self.overflow_now = u64::from(dropped);
            }
            total += n;
            if n < BATCH {
                break;
            }
        }
        total
    }

    /// Sends what is due by `until` from `socket` to `to` (`None`: its
    /// connected peer); with nowhere to send yet, it is lost.
    fn send_due(
        &mut self,
        tx: &mut SendBatch,
        out: &mut Vec<Vec<u8>>,
        until: Instant,
        to: Option<(&UdpSocket, Option<SocketAddr>)>,
    ) {
        loop {
            self.lane.due(until, out, BATCH);
            if out.is_empty() {
                return;
            }
            if let Some((socket, to)) = to {
                self.lane.tally.sent += tx.send(socket, to, out) as u64;
            }
            self.lane.recycle(out);
        }
    }

    fn rebound(&mut self) {
        self.overflow_before += self.overflow_now;
        self.overflow_now = 0;
    }

    fn publish(&mut self) {
        self.lane.tally.overflowed = self.overflow_before + self.overflow_now;
        self.counts.publish(&self.lane.tally);
    }
}

/// The relay's thread: both directions, in rounds.
struct Worker {
    front: Arc<UdpSocket>,
    /// Replaced by [`ImpairRelay::rebind`].
    back: Arc<Mutex<Arc<UdpSocket>>>,
    up: Way,
    down: Way,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        let (mut rx, mut tx) = (RecvBatch::default(), SendBatch::default());
        let mut out = Vec::with_capacity(BATCH);
        let mut client = None;
        let mut back = self.back.lock().unwrap().clone();
        while !stop.load(Ordering::Relaxed) {
            let current = self.back.lock().unwrap().clone();
            if !Arc::ptr_eq(&current, &back) {
                back = current;
                self.down.rebound();
            }
            let woke = Instant::now();
            let came = self
                .up
                .take(&mut rx, &self.front, |from| client = Some(from))
                + self.down.take(&mut rx, &back, |_| {});
            let until = woke + TICK / 2;
            self.up
                .send_due(&mut tx, &mut out, until, Some((&back, None)));
            let to_client = client.map(|to| (&*self.front, Some(to)));
            self.down.send_due(&mut tx, &mut out, until, to_client);
            self.up.publish();
            self.down.publish();
            // Busy: the next tick. Idle: whichever comes first of a
            // datagram and the next one due (but not within this tick).
            let next = [self.up.lane.next_due(), self.down.lane.next_due()]
                .into_iter()
                .flatten()
                .min();
            let wake = next.map_or(woke + POLL, |at| {
                (at - TICK / 2).max(woke + TICK).min(woke + POLL)
            });
            if came > 0 {
                std::thread::sleep((woke + TICK).saturating_duration_since(Instant::now()));
            } else {
                let wait = wake.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    wait_readable(&[&self.front, &back], wait);
                }
            }
        }
    }
}
