//! The relay's own ceiling (`--relay-ceiling`): WireGuard-sized datagrams
//! pushed through it both ways at once, at a given rate each way and as
//! fast as the ends can send, on the pinning of the benchmark (the relay
//! on CPU 0, both ends on CPU 1). What it sends per second, what its
//! sockets dropped for want of reading (overflowed) and the share of a
//! core its thread took say whether a path emulated at that rate is the
//! path's figure or the relay's. Then single datagrams' round trips
//! through it, to see how close its delay comes to the one it was told.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use underpass_tests::impair::batch::{
    pin_thread, realtime_thread, tune, wait_readable, RecvBatch, SendBatch,
};
use underpass_tests::impair::{ImpairRelay, Impairment};

/// A full WireGuard datagram for a 1,420-byte MTU.
const DATAGRAM: usize = 1452;
/// Datagrams per send of the paced ends.
const BURST: usize = 32;

pub fn run(seconds: u32) {
    println!(
        "relay ceiling: {DATAGRAM}-byte datagrams both ways at once, {seconds} s each; relay on CPU 0, both ends on CPU 1"
    );
    println!(
        "{:<34} {:>7} {:>13} {:>13} {:>13} {:>13} {:>9} {:>6}",
        "path",
        "offered",
        "received up",
        "sent up",
        "received down",
        "sent down",
        "overflow",
        "relay"
    );
    println!(
        "{:<34} {:>7} {:>13} {:>13} {:>13} {:>13} {:>9} {:>6}",
        "", "Mbit/s", "Mbit/s", "Mbit/s (k/s)", "Mbit/s", "Mbit/s (k/s)", "up/down", "% core"
    );
    let paths = [
        ("no delay, no bottleneck", Impairment::default()),
        (
            "RTT 50 ms, no bottleneck",
            Impairment::path(ms(50), 0.0, None),
        ),
        (
            "RTT 50 ms, 1% loss, 1000 Mbit/s",
            Impairment::path(ms(50), 0.01, Some(1000.0)),
        ),
    ];
    for (name, impairment) in paths {
        for offered in [Some(500.0), Some(1000.0), None] {
            measure(name, impairment, offered, seconds);
        }
    }
    println!();
    println!("round trips of one datagram at a time through the relay (an echo behind it), ms:");
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>8}",
        "path RTT", "min", "median", "p99", "max"
    );
    for rtt in [2, 10, 50] {
        round_trips(rtt);
    }
}

/// 200 datagrams, one at a time, to an echo behind a relay told `rtt_ms`:
/// how close the path's delay comes to what it was told.
fn round_trips(rtt_ms: u64) {
    let bind = || UdpSocket::bind("127.0.0.1:0").unwrap();
    let (near, far) = (bind(), bind());
    let impairment = Impairment::path(ms(rtt_ms), 0.0, None);
    let relay = ImpairRelay::start_on(far.local_addr().unwrap(), impairment, 7, Some(0));
    far.set_read_timeout(Some(ms(100))).unwrap();
    // Both ends at real-time priority too, so their own wake-ups are not
    // taken for the relay's.
    let echo = std::thread::spawn(move || {
        pin_thread(Some(1));
        realtime_thread();
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = far.recv_from(&mut buf) {
            let _ = far.send_to(&buf[..n], from);
        }
    });
    near.set_read_timeout(Some(ms(rtt_ms * 10))).unwrap();
    let prober = std::thread::spawn(move || {
        pin_thread(Some(1));
        realtime_thread();
        let relay_addr = relay.addr;
        let mut times = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..200u32 {
            let started = Instant::now();
            near.send_to(&i.to_be_bytes(), relay_addr).unwrap();
            if near.recv(&mut buf).is_ok() {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            std::thread::sleep(ms(1));
        }
        times
    });
    let mut times = prober.join().unwrap();
    drop(relay);
    let _ = echo.join();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "{:<12} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        format!("{rtt_ms} ms"),
        at(0.0),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// One line: both ends sending `offered` Mbit/s each way (`None`: as fast
/// as they can) through a relay impairing as told.
fn measure(name: &str, impairment: Impairment, offered: Option<f64>, seconds: u32) {
    let bind = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        tune(&s);
        Arc::new(s)
    };
    let (near, far) = (bind(), bind());
    let relay = ImpairRelay::start_on(far.local_addr().unwrap(), impairment, 7, Some(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = vec![
        sink(near.clone(), &stop),
        sink(far.clone(), &stop),
        source(near.clone(), relay.addr, offered, &stop),
    ];
    // The way back has nowhere to go until the relay has seen the client.
    while relay.up.tally().received == 0 {
        std::thread::sleep(ms(1));
    }
    let back = SocketAddr::from(([127, 0, 0, 1], relay.source_port()));
    threads.push(source(far.clone(), back, offered, &stop));
    std::thread::sleep(impairment.delay + ms(500));
    let (up0, down0, cpu0) = (relay.up.tally(), relay.down.tally(), relay.cpu_seconds());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds.into()));
    let (up1, down1, cpu1) = (relay.up.tally(), relay.down.tally(), relay.cpu_seconds());
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let (up, down) = (up1 - up0, down1 - down0);
    let per_s = |n: u64| n as f64 / secs;
    let mbit = |n: u64| format!("{:.0}", per_s(n) * DATAGRAM as f64 * 8.0 / 1e6);
    let sent = |n: u64| format!("{} ({:.1})", mbit(n), per_s(n) / 1e3);
    println!(
        "{:<34} {:>7} {:>13} {:>13} {:>13} {:>13} {:>9} {:>6.0}",
        name,
        offered.map_or("max".into(), |o| format!("{o:.0}")),
        mbit(up.received),
        sent(up.sent),
        mbit(down.received),
        sent(down.sent),
        format!("{}/{}", up.overflowed, down.overflowed),
        100.0 * (cpu1 - cpu0) / secs
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reads and forgets what comes to `socket`, on CPU 1.
fn sink(socket: Arc<UdpSocket>, stop: &Arc<AtomicBool>) -> JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        pin_thread(Some(1));
        let mut rx = RecvBatch::default();
        while !stop.load(Ordering::Relaxed) {
            if matches!(rx.recv(&socket), Ok(0)) {
                wait_readable(&[&socket], ms(5));
            }
        }
    })
}

/// Sends full datagrams to `to` at `mbit` Mbit/s in bursts of [`BURST`]
/// (`None`: as fast as it can), on CPU 1.
fn source(
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    mbit: Option<f64>,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        pin_thread(Some(1));
        let mut tx = SendBatch::default();
        let burst = vec![vec![0x5au8; DATAGRAM]; BURST];
        let interval =
            mbit.map(|m| Duration::from_secs_f64((BURST * DATAGRAM * 8) as f64 / (m * 1e6)));
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            tx.send(&socket, Some(to), &burst);
            if let Some(interval) = interval {
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
        }
    })
}
