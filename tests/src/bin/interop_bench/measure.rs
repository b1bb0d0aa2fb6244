//! The figures: iperf3 throughput, curl's time to first byte, a process's
//! CPU time and peak RSS.

use std::ffi::OsStr;
use std::process::Command;

use rand::seq::SliceRandom;
use underpass_tests::bench::Iperf;

use crate::report::print_row;

/// Seconds per iperf3 figure.
pub const SECONDS: u32 = 5;
/// Fresh connections per time-to-first-byte figure.
pub const LATENCY_RUNS: usize = 50;

/// One client's line of the table.
#[derive(Default, Clone)]
pub struct Row {
    pub name: String,
    pub down1: f64,
    pub up1: f64,
    pub down8: f64,
    pub up8: f64,
    pub ttfb50: f64,
    pub ttfb90: f64,
    pub cpu_per_gib: Option<f64>,
    pub rss_mib: Option<f64>,
}

/// Median and 90th percentile.
pub type Percentiles = (f64, f64);

/// iperf3 from CPU 1 to `host:port`: (Mbit/s received, bytes received).
/// A tunnel that wedges gives no result, and that is a figure too: 0.
pub fn iperf(host: &str, port: u16, reverse: bool, streams: u32) -> (f64, f64) {
    let run = Iperf {
        streams,
        seconds: SECONDS,
        reverse,
        congestion: None,
    };
    run.run(host, port).unwrap_or_else(|why| {
        eprintln!("iperf3 to {host}:{port} (reverse {reverse}, {streams} streams): {why}");
        (0.0, 0.0)
    })
}

/// One fresh connection's time to first byte from CPU 1, in ms; NaN when
/// curl timed out or was refused (shown as "-").
fn ttfb_once(args: &[impl AsRef<OsStr>]) -> f64 {
    let out = Command::new("taskset")
        .args(["-c", "1", "curl", "--silent", "--max-time", "10", "-o"])
        .args(["/dev/null", "-w", "%{time_starttransfer}"])
        .args(args)
        .output()
        .expect("curl");
    if !out.status.success() {
        return f64::NAN;
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .map_or(f64::NAN, |s| s * 1e3)
}

/// Median and p90 of samples; NaNs (failures) sort last.
pub fn percentiles(mut t: Vec<f64>) -> Percentiles {
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[t.len() * 9 / 10])
}

/// The median over rounds of `a`'s sample divided by `b`'s of the same
/// round (see [`ttfb_rounds`]).
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    percentiles(a.iter().zip(b).map(|(a, b)| a / b).collect()).0
}

/// curl's time to first byte over [`LATENCY_RUNS`] fresh connections.
pub fn ttfb(args: &[impl AsRef<OsStr>]) -> Percentiles {
    percentiles((0..LATENCY_RUNS).map(|_| ttfb_once(args)).collect())
}

/// Several ways in measured in the same moments: each round takes one
/// sample of every way, in a fresh random order, so a noisy second of the
/// machine lands on all of them alike. Returns each way's samples, in
/// round order (compare them with [`paired_ratio`]).
pub fn ttfb_rounds(ways: &[Vec<String>], rounds: usize) -> Vec<Vec<f64>> {
    let mut samples = vec![Vec::with_capacity(rounds); ways.len()];
    let mut order: Vec<usize> = (0..ways.len()).collect();
    let mut rng = rand::thread_rng();
    for _ in 0..rounds {
        order.shuffle(&mut rng);
        for &w in &order {
            samples[w].push(ttfb_once(&ways[w]));
        }
    }
    samples
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name; utime and stime are the 12th and 13th.
    let fields: Vec<f64> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    fields.iter().sum::<f64>() / 100.0
}

pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Runs the latency measurement, then the four iperf3 ones (latency first:
/// onetun wedges for good under the upload, and would have no figure);
/// `pid` is the client-side tunnel process (CPU and memory are its own).
pub fn measure(
    name: &str,
    iperf_to: (&str, u16),
    curl_args: &[impl AsRef<OsStr>],
    pid: Option<u32>,
) -> Row {
    let latency = ttfb(curl_args);
    throughput_row(name, iperf_to, pid, latency)
}

/// The four iperf3 measurements, printed as a row with `(ttfb50, ttfb90)`
/// taken before.
pub fn throughput_row(
    name: &str,
    iperf_to: (&str, u16),
    pid: Option<u32>,
    (ttfb50, ttfb90): Percentiles,
) -> Row {
    let cpu0 = pid.map(cpu_seconds);
    let (down1, b1) = iperf(iperf_to.0, iperf_to.1, true, 1);
    let (up1, b2) = iperf(iperf_to.0, iperf_to.1, false, 1);
    let (down8, b3) = iperf(iperf_to.0, iperf_to.1, true, 8);
    let (up8, b4) = iperf(iperf_to.0, iperf_to.1, false, 8);
    let gib = (b1 + b2 + b3 + b4) / f64::from(1u32 << 30);
    let cpu_per_gib = pid.zip(cpu0).map(|(p, c0)| (cpu_seconds(p) - c0) / gib);
    let row = Row {
        name: name.into(),
        down1,
        up1,
        down8,
        up8,
        ttfb50,
        ttfb90,
        cpu_per_gib,
        rss_mib: pid.map(peak_rss_mib),
    };
    print_row(&row);
    row
}
