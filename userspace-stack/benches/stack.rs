//! The CPU ceiling of the whole product: a client stack + core and a
//! gateway stack + core joined by a zero-delay in-memory link, on one
//! thread. Prints bulk TCP throughput, connection setup rate and memory per
//! open connection.
//!
//!     taskset -c 1 cargo bench -p underpass-stack --bench stack
//!     taskset -c 1 cargo bench -p underpass-stack --bench stack -- --sweep   # buffer sizes, congestion control, ACK delay
//!     taskset -c 1 cargo bench -p underpass-stack --bench stack -- --glibc-default   # without the binary's mallopt
//!     cargo bench -p underpass-stack --bench stack -- --bulk-mib 256 --down [--info]   # a fixed transfer, for callgrind
//!     cargo bench -p underpass-stack --bench stack -- --wan   # long paths, simulated time (see `wan`)

// A counting allocator and libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant as Clock};

use support::*;
use underpass_stack::{Accepted, Congestion, ConnId, StackOptions, TcpError};

/// Counts live heap bytes, to measure memory per connection.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

const PERFECT: Link = Link {
    delay: Duration::ZERO,
    jitter: Duration::ZERO,
    loss: 0.0,
    duplicate: 0.0,
    bottleneck: None,
};

/// Moves `len` bytes one way; returns wall time.
fn bulk(tune: &dyn Fn(&mut StackOptions), len: usize, upload: bool) -> Duration {
    let mut net = Net::with(1, PERFECT, |o| tune(o), |o| tune(o));
    let (c, g) = net.connect("198.51.100.7:5001".parse().unwrap());
    let (writer, reader, wc, rc) = if upload {
        (CLIENT, GATEWAY, c, g)
    } else {
        (GATEWAY, CLIENT, g, c)
    };
    // A fixed buffer: generating data would be measured too.
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7) as u8).collect();
    let (mut sent, mut got) = (0, 0);
    let start = Clock::now();
    while got < len {
        while sent < len {
            let n = (len - sent).min(chunk.len());
            match net.stack(writer).tcp_write(wc, &chunk[..n]) {
                Ok(n) => sent += n,
                Err(TcpError::WouldBlock) => break,
                Err(e) => panic!("{e}"),
            }
        }
        // Read without hashing: the benchmark measures the tunnel.
        loop {
            match net.stack(reader).tcp_read_with(rc, |d| d.len()) {
                Ok(0) | Err(TcpError::WouldBlock) => break,
                Ok(n) => got += n,
                Err(e) => panic!("{e}"),
            }
        }
        net.step(Duration::from_millis(1));
    }
    if std::env::args().any(|a| a == "--info") {
        eprintln!(
            "simulated {:?}, sender {:?}",
            net.now.since_epoch(),
            net.stack(writer).tcp_info(wc)
        );
    }
    start.elapsed()
}

/// Moves `len` bytes up a link with 4 ms RTT, jitter and 1% loss; returns
/// simulated time (how long a user would wait), not CPU time.
fn lossy(tune: &dyn Fn(&mut StackOptions), len: usize) -> Duration {
    let link = Link {
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(1),
        loss: 0.01,
        duplicate: 0.0,
        bottleneck: None,
    };
    let mut net = Net::with(3, link, |o| tune(o), |o| tune(o));
    let (c, g) = net.connect("198.51.100.7:5001".parse().unwrap());
    let mut pattern = Pattern::new(7, len);
    let mut got = 0;
    let start = net.now;
    while got < len {
        pattern.write_to(net.stack(CLIENT), c);
        while let Ok(n) = net.stack(GATEWAY).tcp_read_with(g, |d| d.len()) {
            if n == 0 {
                break;
            }
            got += n;
        }
        net.step(Duration::from_millis(1));
    }
    net.now - start
}

fn gbit(len: usize, d: Duration) -> f64 {
    len as f64 * 8.0 / d.as_secs_f64() / 1e9
}

/// Opens `n` connections at once; returns (time to establish all, net).
fn open_many(n: usize, tune: &dyn Fn(&mut StackOptions)) -> (Duration, Net, Vec<(ConnId, ConnId)>) {
    let mut net = Net::with(2, PERFECT, |o| tune(o), |o| tune(o));
    net.handshake();
    let start = Clock::now();
    let mut client = Vec::with_capacity(n);
    for i in 0..n {
        let dst = SocketAddr::new(
            format!("198.51.{}.{}", 100 + i / 250, 1 + i % 250)
                .parse()
                .unwrap(),
            80,
        );
        client.push(net.stack(CLIENT).tcp_connect(dst).unwrap());
    }
    let mut gateway = Vec::with_capacity(n);
    let mut established = 0;
    let mut pending: Vec<ConnId> = client.clone();
    while established < n {
        net.step(Duration::from_millis(1));
        while let Some(a) = net.poll_accepted() {
            if let Accepted::Tcp { conn, .. } = a {
                net.stack(GATEWAY).tcp_accept(conn).unwrap();
                gateway.push(conn);
            }
        }
        pending.retain(|&c| {
            let up = net.stack(CLIENT).tcp_state(c) != Ok(underpass_stack::TcpState::Connecting);
            if up {
                established += 1;
            }
            !up
        });
    }
    // Let the last ACKs land so both ends are established.
    for _ in 0..3 {
        net.step(Duration::from_millis(1));
    }
    let took = start.elapsed();
    let pairs = client.into_iter().zip(gateway).collect();
    (took, net, pairs)
}

fn default_tune(_: &mut StackOptions) {}

/// One connection over simulated long paths (both ends our stack): what a
/// user 10-200 ms from the gateway would get, in simulated time, so the
/// figures do not depend on this machine's speed or load. 12 s per cell
/// (or 64 MiB), as the WAN benchmark's iperf3 runs; `--seeds N` runs each
/// cell N times to show how much a bad start costs.
fn wan() {
    let len = 1 << 40;
    let arg = |name: &str| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.split(',')
                    .map(|x| x.parse::<f64>().unwrap())
                    .collect::<Vec<f64>>()
            })
    };
    let rates = arg("--rate").unwrap_or(vec![300.0, 1000.0]);
    let rtts = arg("--rtt").unwrap_or(vec![2.0, 10.0, 50.0, 100.0, 200.0]);
    let losses = arg("--loss").unwrap_or(vec![0.0, 0.001, 0.01]);
    // `--seeds N`: each cell N times with other random losses; each run is
    // printed, the median goes in the table.
    let seeds = arg("--seeds").map_or(1, |s| s[0].max(1.0) as u64);
    let seconds = Duration::from_secs_f64(arg("--seconds").map_or(12.0, |s| s[0]));
    println!(
        "one connection, {} s, simulated time; Mbit/s of payload (up / down)",
        seconds.as_secs_f64()
    );
    println!(
        "{:>8} {:>10} {:>8} {:>18} {:>16}",
        "RTT ms", "bottleneck", "loss %", "Mbit/s up / down", "queue drops"
    );
    if let Some(from) = arg("--trace-packets-from") {
        support::TRACE_FROM.store(from[0] as u64, Ordering::Relaxed);
    }
    if std::env::args().any(|a| a == "--trace") {
        TRACE_SENDER.store(true, Ordering::Relaxed);
    }
    for &rate in &rates {
        let rate = rate as u64;
        for &rtt in &rtts {
            let rtt = rtt as u64;
            for &loss in &losses {
                let link = Link::wan(Duration::from_millis(rtt), rate, loss);
                let mut figures = Vec::new();
                let mut drops = 0;
                let dirs: &[bool] = if std::env::args().any(|a| a == "--up") {
                    &[true]
                } else if std::env::args().any(|a| a == "--down") {
                    &[false]
                } else {
                    &[true, false]
                };
                let congestion = if std::env::args().any(|a| a == "--cubic") {
                    Congestion::Cubic
                } else {
                    Congestion::Bbr
                };
                let tune = |o: &mut StackOptions| o.tcp.congestion = congestion;
                for &upload in dirs {
                    let mut runs = Vec::new();
                    for seed in 0..seeds {
                        let mut net = Net::with((rtt ^ rate) + seed * 1_000, link, tune, tune);
                        let (got, took) = transfer(&mut net, len, upload, seconds);
                        runs.push(got as f64 * 8.0 / took.as_secs_f64() / 1e6);
                        drops += net.queue_drops;
                    }
                    if seeds > 1 {
                        let each: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
                        eprintln!(
                            "  {} {rtt} ms, {:.1}%: {}",
                            if upload { "up" } else { "down" },
                            loss * 100.0,
                            each.join(" ")
                        );
                    }
                    runs.sort_by(f64::total_cmp);
                    figures.push(runs[runs.len() / 2]);
                }
                println!(
                    "{rtt:>8} {:>10} {:>8.1} {:>8.0} / {:<8.0} {drops:>16}",
                    format!("{rate} Mbit/s"),
                    loss * 100.0,
                    figures[0],
                    figures.get(1).copied().unwrap_or(f64::NAN)
                );
            }
        }
    }
}

/// `--bulk-mib N`: only the bulk transfers, N MiB each way (or one way
/// with `--up` / `--down`), no warm-up, so that a run under `perf stat` or
/// callgrind counts the CPU of a known number of bytes.
fn fixed_bulk() -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "--bulk-mib")?;
    args.get(i + 1)?.parse().ok()
}

fn bulk_fixed(mib: usize) {
    let len = mib << 20;
    let up_only = std::env::args().any(|a| a == "--up");
    let down_only = std::env::args().any(|a| a == "--down");
    for (upload, name) in [(true, "upload"), (false, "download")] {
        if (upload && down_only) || (!upload && up_only) {
            continue;
        }
        let took = bulk(&default_tune, len, upload);
        println!(
            "  {name:<9} {mib} MiB  {:>6.2} Gbit/s  ({:.0} MiB/s)",
            gbit(len, took),
            mib as f64 / took.as_secs_f64()
        );
    }
}

fn main() {
    let sweep = std::env::args().any(|a| a == "--sweep");
    if std::env::args().any(|a| a == "--wan") {
        return wan();
    }
    if !std::env::args().any(|a| a == "--glibc-default") {
        // What the underpass binary does at start: socket buffers come
        // from fresh mmap'd pages, so untouched parts cost no memory.
        // SAFETY: called before any other thread exists.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024) };
    }
    if let Some(mib) = fixed_bulk() {
        return bulk_fixed(mib);
    }
    let len = 1024 * 1024 * 1024;
    println!("in-memory client+gateway (stack + core at both ends), one thread, zero-delay link");
    println!();
    if sweep {
        println!(
            "{:<40} {:>10} {:>10} {:>22}",
            "setting (both ends)", "up Gbit/s", "down", "16 MiB, 1% loss, 4 ms"
        );
        type Tune = Box<dyn Fn(&mut StackOptions)>;
        let settings: Vec<(String, Tune)> = vec![
            ("default".into(), Box::new(default_tune)),
            (
                "rx/tx 64 KiB".into(),
                Box::new(|o: &mut StackOptions| {
                    o.tcp.rx_buffer = 64 << 10;
                    o.tcp.tx_buffer = 64 << 10;
                }),
            ),
            (
                "rx/tx 256 KiB".into(),
                Box::new(|o: &mut StackOptions| {
                    o.tcp.rx_buffer = 256 << 10;
                    o.tcp.tx_buffer = 256 << 10;
                }),
            ),
            (
                "rx/tx 1 MiB".into(),
                Box::new(|o: &mut StackOptions| {
                    o.tcp.rx_buffer = 1 << 20;
                    o.tcp.tx_buffer = 1 << 20;
                }),
            ),
            (
                "rx/tx 4 MiB".into(),
                Box::new(|o: &mut StackOptions| {
                    o.tcp.rx_buffer = 4 << 20;
                    o.tcp.tx_buffer = 4 << 20;
                }),
            ),
            (
                "no congestion control".into(),
                Box::new(|o: &mut StackOptions| o.tcp.congestion = Congestion::None),
            ),
            (
                "ack delay 10 ms (smoltcp default)".into(),
                Box::new(|o: &mut StackOptions| o.tcp.ack_delay = Some(Duration::from_millis(10))),
            ),
            (
                "nagle on".into(),
                Box::new(|o: &mut StackOptions| o.tcp.nagle = true),
            ),
            (
                "outbound queue 1024".into(),
                Box::new(|o: &mut StackOptions| o.max_outbound_packets = 1024),
            ),
            (
                "outbound queue 256".into(),
                Box::new(|o: &mut StackOptions| o.max_outbound_packets = 256),
            ),
        ];
        for (name, tune) in &settings {
            let len = 256 * 1024 * 1024;
            let up = gbit(len, bulk(tune.as_ref(), len, true));
            let down = gbit(len, bulk(tune.as_ref(), len, false));
            let slow = lossy(tune.as_ref(), 16 << 20);
            println!(
                "{name:<40} {up:>10.2} {down:>10.2} {:>20.1} s",
                slow.as_secs_f64()
            );
        }
        return;
    }

    bulk(&default_tune, 64 << 20, true);
    let up = bulk(&default_tune, len, true);
    let down = bulk(&default_tune, len, false);
    println!("bulk TCP, one connection, 1 GiB each way");
    println!(
        "  upload    {:>6.2} Gbit/s  ({:.2} s)",
        gbit(len, up),
        up.as_secs_f64()
    );
    println!(
        "  download  {:>6.2} Gbit/s  ({:.2} s)",
        gbit(len, down),
        down.as_secs_f64()
    );
    if std::env::args().any(|a| a == "--bulk-only") {
        return;
    }

    let n = 1000;
    let (took, _, _) = open_many(n, &default_tune);
    println!(
        "connection setup, {n} opened at once: {:.0} connections/s ({:.1} ms)",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e3
    );

    let n = 10_000;
    let heap0 = LIVE.load(Ordering::Relaxed);
    let rss0 = rss_bytes();
    let (_, mut net, pairs) = open_many(n, &default_tune);
    // Each connection moves a small request and reply, then sits idle.
    for &(c, g) in &pairs {
        net.stack(CLIENT)
            .tcp_write(c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let _ = g;
    }
    for _ in 0..5 {
        net.step(Duration::from_millis(1));
    }
    for &(c, g) in &pairs {
        let mut buf = [0u8; 64];
        let _ = net.stack(GATEWAY).tcp_read(g, &mut buf);
        net.stack(GATEWAY)
            .tcp_write(g, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let _ = c;
    }
    for _ in 0..5 {
        net.step(Duration::from_millis(1));
    }
    let heap = (LIVE.load(Ordering::Relaxed) - heap0) as f64 / n as f64;
    let rss = rss_bytes().saturating_sub(rss0) as f64 / n as f64;
    println!("memory, {n} open idle connections (each end counted, both ends together):");
    println!(
        "  heap allocated  {:>8.0} bytes per connection ({:.0} MiB in all)",
        heap,
        heap * n as f64 / 1048576.0
    );
    println!(
        "  resident (RSS)  {:>8.0} bytes per connection ({:.0} MiB in all)",
        rss,
        rss * n as f64 / 1048576.0
    );
    drop(net);
}
