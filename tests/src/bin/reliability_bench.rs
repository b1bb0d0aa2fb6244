//! The figures of RELIABILITY.md, client and gateway as separate processes
//! on loopback. Run by hand (not in CI):
//!
//!     cargo build --release -p underpass
//!     UNDERPASS_BIN=target/release/underpass \
//!       cargo run --release -p underpass-tests --bin reliability_bench -- loss [MIB] [RATE...]
//!     ... -- loss-reorder [MIB] [RATE...]   the same without the base delay
//!     ... -- loss-only [MIB] [RATE...]      drops alone
//!     ... -- conns [COUNT]     COUNT SOCKS connections held open at once
//!     ... -- churn [MINUTES]   connections opening, moving data, closing
//!
//! `loss` puts the impairing relay between client and gateway (the rate
//! dropped each way, half as many duplicated, as many reordered by 5 ms)
//! and times a download and an upload of MIB (default 64) at each RATE
//! (default 0 0.01 0.05 0.1), checking every byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::impair::Impairment;
use underpass_tests::*;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(mode @ ("loss" | "loss-only" | "loss-reorder")) => {
            let mib = args.get(1).map_or(64, |a| a.parse().expect("MIB"));
            let rates: Vec<f64> = if args.len() > 2 {
                args[2..].iter().map(|r| r.parse().expect("RATE")).collect()
            } else {
                vec![0.0, 0.01, 0.05, 0.1]
            };
            // `loss`: with duplication, reordering and delay; `loss-reorder`:
            // the same without the base delay and jitter (which bind the
            // relay); `loss-only`: drops alone.
            let impairment: fn(f64) -> Impairment = match mode {
                "loss" => Impairment::lossy,
                "loss-reorder" => |rate| Impairment {
                    delay: Duration::ZERO,
                    jitter: Duration::ZERO,
                    ..Impairment::lossy(rate)
                },
                _ => |rate| Impairment {
                    loss: rate,
                    ..Impairment::default()
                },
            };
            loss(mib, &rates, impairment);
        }
        Some("conns") => conns(args.get(1).map_or(2000, |a| a.parse().expect("COUNT"))),
        Some("churn") => churn(args.get(1).map_or(10, |a| a.parse().expect("MINUTES"))),
        _ => {
            eprintln!(
                "usage: reliability_bench loss|loss-reorder|loss-only [MIB] [RATE...] | conns [COUNT] | churn [MINUTES]"
            );
            std::process::exit(2);
        }
    }
}

fn timed_curl(args: &[&str]) -> (Duration, String) {
    let started = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "3600"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn loss(mib: u64, rates: &[f64], impairment: fn(f64) -> Impairment) {
    let server = HttpServer::start();
    let len = mib << 20;
    println!("| loss each way | download {mib} MiB | upload {mib} MiB | intact | datagrams dropped (down/up) |");
    println!("|---|---|---|---|---|");
    for (i, &rate) in rates.iter().enumerate() {
        let pair = Pair::start(
            "bench-loss",
            PairOptions {
                impair: Some((impairment(rate), i as u64 + 1)),
                gateway_cpu: Some(0),
                client_cpu: Some(1),
                ..Default::default()
            },
        );
        let socks = pair.socks.to_string();
        let file = pair.scratch.path("down.bin");
        let (down, _) = timed_curl(&[
            "--socks5",
            &socks,
            "-o",
            file.to_str().unwrap(),
            &server.url(&format!("/bytes/{len}?seed=1")),
        ]);
        let expected = write_content(&pair.scratch.path("expected.bin"), 1, len);
        let down_ok = Checksum::of_file(&file) == (expected, len);
        let up = pair.scratch.path("expected.bin");
        let (up_time, answer) = timed_curl(&[
            "--socks5",
            &socks,
            "-T",
            up.to_str().unwrap(),
            &server.url("/sink"),
        ]);
        let up_ok = answer == format!("{len} {expected}\n");
        let relay = pair.relay.as_ref().unwrap();
        let mbit = |d: Duration| len as f64 * 8.0 / d.as_secs_f64() / 1e6;
        println!(
            "| {:.0}% | {:.1} s ({:.0} Mbit/s) | {:.1} s ({:.0} Mbit/s) | {} | {} / {} |",
            rate * 100.0,
            down.as_secs_f64(),
            mbit(down),
            up_time.as_secs_f64(),
            mbit(up_time),
            if down_ok && up_ok { "yes" } else { "NO" },
            relay.down.lost.load(Ordering::Relaxed),
            relay.up.lost.load(Ordering::Relaxed),
        );
    }
}

/// A TCP echo server on loopback, a thread per connection.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut s = stream;
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                })
                .unwrap();
        }
    });
    addr
}

/// A SOCKS5 CONNECT to `target` (no auth), ready for data.
fn socks_connect(socks: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(socks)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(&[5, 1, 0])?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply)?;
    let SocketAddr::V4(t) = target else {
        panic!("IPv4 target")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend(t.ip().octets());
    req.extend(t.port().to_be_bytes());
    s.write_all(&req)?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply)?;
    if reply[1] != 0 {
        return Err(std::io::Error::other(format!("SOCKS reply {}", reply[1])));
    }
    Ok(s)
}

fn round_trip(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    s.write_all(data)?;
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back)?;
    if back != data {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(())
}

fn rss(p: &Process) -> String {
    let (now, peak) = p.rss_kib();
    format!(
        "{:.1} MiB (peak {:.1})",
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    )
}

fn conns(count: usize) {
    let echo = echo_server();
    let pair = Pair::start("bench-conns", PairOptions::default());
    println!(
        "idle: client {}, gateway {}",
        rss(&pair.client),
        rss(&pair.gateway)
    );
    let started = Instant::now();
    let mut open = Vec::with_capacity(count);
    let data = content(1, 1024);
    for i in 0..count {
        let mut s =
            socks_connect(pair.socks, echo).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        round_trip(&mut s, &data).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        open.push(s);
    }
    println!(
        "{count} SOCKS connections open, 1 KiB echoed on each, in {:.1} s: client {}, gateway {}",
        started.elapsed().as_secs_f64(),
        rss(&pair.client),
        rss(&pair.gateway)
    );
    // All still alive: another round on every one.
    for (i, s) in open.iter_mut().enumerate() {
        round_trip(s, &data).unwrap_or_else(|e| panic!("connection {i}, second round: {e}"));
    }
    println!("second round on all {count}: ok");
    drop(open);
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "after closing: client {}, gateway {}",
        rss(&pair.client),
        rss(&pair.gateway)
    );
}

fn churn(minutes: u64) {
    const WORKERS: usize = 32;
    let echo = echo_server();
    let pair = Pair::start("bench-churn", PairOptions::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (stop, done, failed, socks) =
                (stop.clone(), done.clone(), failed.clone(), pair.socks);
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // From 1 KiB to 256 KiB, a different size each time.
                    let len = 1024 << ((w as u64 + i) % 9);
                    let data = content(i, len as usize);
                    let result =
                        socks_connect(socks, echo).and_then(|mut s| round_trip(&mut s, &data));
                    match result {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    println!("| minute | connections done | failed | client RSS | gateway RSS |");
    println!("|---|---|---|---|---|");
    let started = Instant::now();
    for minute in 0..=minutes {
        let target = started + Duration::from_secs(60 * minute);
        std::thread::sleep(target.saturating_duration_since(Instant::now()));
        println!(
            "| {minute} | {} | {} | {} | {} |",
            done.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            rss(&pair.client),
            rss(&pair.gateway)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
}
