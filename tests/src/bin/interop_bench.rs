//! Side by side, in one run: throughput (one TCP stream and 8, both ways),
//! connect-to-first-byte latency, CPU seconds per GiB and peak RSS, for
//!
//! - underpass client -> wireguard-go peer (in a network namespace),
//! - the wireguard-go reference client (a second wireguard-go on a TUN in
//!   the host namespace, kernel TCP) -> the same peer,
//! - onetun (from crates.io) -> the same peer,
//! - underpass client -> underpass gateway,
//! - no tunnel (the ceiling).
//!
//! Run by hand, as root (not in CI):
//!
//!     cargo run --release -p underpass-tests --bin interop_bench
//!     cargo run --release -p underpass-tests --bin interop_bench -- --only gateway,plain
//!     cargo run --release -p underpass-tests --bin interop_bench -- --ttfb-server python
//!     cargo run --release -p underpass-tests --bin interop_bench -- --only underpass --steps
//!     UNDERPASS_BIN=/tmp/underpass-old cargo run --release ... # another build
//!
//! Rows: `underpass`, `reference`, `onetun`, `gateway`, `plain`.
//!
//! Time to first byte is measured against the tests' Rust HTTP server (this
//! binary started with `--origin ADDR`, in the namespace and on the host),
//! one thread per connection: Python's `http.server`, which earlier runs
//! used, takes ~1 ms per request itself and hid the tunnels' differences.
//!
//! The table's latency goes through SOCKS5; a second table gives it
//! through underpass's HTTP proxy and a TCPClientTunnel as well (the
//! reference and onetun are entered directly, as a forward is).
//!
//! Pinning: the peer side (wireguard-go peer, its servers, the underpass
//! gateway, the host's iperf3 server) on CPU 0; the client side (the tunnel
//! client under test, iperf3 and curl clients) on CPU 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use underpass_tests::interop::{self, Peer};
use underpass_tests::*;

const SECONDS: u32 = 5;
const LATENCY_RUNS: usize = 50;

#[derive(Default, Clone)]
struct Row {
    name: String,
    down1: f64,
    up1: f64,
    down8: f64,
    up8: f64,
    ttfb50: f64,
    ttfb90: f64,
    cpu_per_gib: Option<f64>,
    rss_mib: Option<f64>,
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

/// iperf3 from CPU 1 to `host:port`; Mbit/s received.
fn iperf(host: &str, port: u16, reverse: bool, streams: u32) -> (f64, f64) {
    let mut c = Command::new("timeout");
    c.args([
        "30",
        "taskset",
        "-c",
        "1",
        "iperf3",
        "-c",
        host,
        "-p",
        &port.to_string(),
        "-t",
        &SECONDS.to_string(),
        "-J",
        "-P",
        &streams.to_string(),
    ]);
    if reverse {
        c.arg("-R");
    }
    let out = c.output().expect("iperf3");
    let text = String::from_utf8_lossy(&out.stdout);
    // The receiver's sum: "sum_received": { ..., "bits_per_second": X, ... }
    let bits = text
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bits_per_second\":").nth(1))
        .and_then(|s| s.split([',', '\n', '}']).next())
        .and_then(|s| s.trim().parse::<f64>().ok());
    let Some(bits) = bits else {
        // A tunnel that wedges gives no result: that is a figure too.
        eprintln!("iperf3 to {host}:{port} (reverse {reverse}, {streams} streams) failed or hung");
        return (0.0, 0.0);
    };
    let bytes = text
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bytes\":").nth(1))
        .and_then(|s| s.split([',', '\n', '}']).next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (bits / 1e6, bytes)
}

/// curl's time to first byte over fresh connections, from CPU 1, in ms.
fn ttfb(args: &[&str]) -> (f64, f64) {
    let mut t: Vec<f64> = (0..LATENCY_RUNS)
        .map(|_| {
            let out = Command::new("taskset")
                .args([
                    "-c",
                    "1",
                    "curl",
                    "--silent",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{time_starttransfer}",
                ])
                .args(args)
                .output()
                .expect("curl");
            if !out.status.success() {
                // Timed out or refused: no figure (shown as "-").
                return f64::NAN;
            }
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .unwrap_or(f64::NAN)
                * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[LATENCY_RUNS / 2], t[LATENCY_RUNS * 9 / 10])
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_mib(pid: u32) -> f64 {
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
fn measure(name: &str, iperf_to: (&str, u16), curl_args: &[&str], pid: Option<u32>) -> Row {
    let latency = ttfb(curl_args);
    throughput_row(name, iperf_to, pid, latency)
}

/// The four iperf3 measurements, printed as a row with `(ttfb50, ttfb90)`
/// taken before.
fn throughput_row(
    name: &str,
    iperf_to: (&str, u16),
    pid: Option<u32>,
    (ttfb50, ttfb90): (f64, f64),
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

fn print_header() {
    println!(
        "{:<50} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "", "down 1", "up 1", "down 8", "up 8", "ttfb p50", "p90", "CPU s/GiB", "RSS MiB"
    );
    println!(
        "{:<50} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "Mbit/s", "Mbit/s", "Mbit/s", "Mbit/s", "ms", "ms"
    );
}

fn print_row(r: &Row) {
    let opt = |v: Option<f64>, w: usize, p: usize| {
        v.map_or(format!("{:>w$}", "-"), |v| format!("{v:>w$.p$}"))
    };
    let ms = |v: f64| opt(Some(v).filter(|v| v.is_finite()), 8, 2);
    println!(
        "{:<50} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {} {} {} {}",
        r.name,
        r.down1,
        r.up1,
        r.down8,
        r.up8,
        ms(r.ttfb50),
        ms(r.ttfb90),
        opt(r.cpu_per_gib, 9, 2),
        opt(r.rss_mib, 8, 1)
    );
}

fn print_ratio(name: &str, a: &Row, b: &Row) {
    // A side that moved nothing or never answered has no ratio.
    let r = |x: f64, y: f64| {
        let v = x / y;
        if v.is_finite() && y > 0.0 {
            format!("{v:>8.2}")
        } else {
            format!("{:>8}", "-")
        }
    };
    println!(
        "{:<50} {} {} {} {} {} {}",
        name,
        r(a.down1, b.down1),
        r(a.up1, b.up1),
        r(a.down8, b.down8),
        r(a.up8, b.up8),
        r(a.ttfb50, b.ttfb50),
        r(a.ttfb90, b.ttfb90)
    );
}

/// Time to first byte through each of underpass's entry points: SOCKS5
/// (the table's), the HTTP proxy (an absolute-form GET: the request is
/// in hand before the tunnel connection opens, so it can leave as soon as
/// the connection is up) and a TCPClientTunnel (curl talks to the origin
/// as if directly, no proxy negotiation).
struct Entries {
    name: String,
    socks: (f64, f64),
    http: (f64, f64),
    forward: (f64, f64),
}

/// The HTTP proxy's and the forward's figures `(http, forward)`, taken
/// just before the row's own (SOCKS5) ones.
fn other_entries(url: &str, http_port: u16, forward_url: &str) -> ((f64, f64), (f64, f64)) {
    (
        ttfb(&["-x", &format!("http://127.0.0.1:{http_port}"), url]),
        ttfb(&[forward_url]),
    )
}

impl Entries {
    fn new(row: &Row, (http, forward): ((f64, f64), (f64, f64))) -> Entries {
        Entries {
            name: row.name.clone(),
            socks: (row.ttfb50, row.ttfb90),
            http,
            forward,
        }
    }

    fn print(&self) {
        let f = |(a, b): (f64, f64)| format!("{:>15}", format!("{a:.2} / {b:.2}"));
        println!(
            "{:<50} {} {} {}",
            self.name,
            f(self.socks),
            f(self.http),
            f(self.forward)
        );
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_on_cpu1(program: &Path, args: &[&str], log: &Path) -> Kill {
    Kill(
        Command::new("taskset")
            .args(["-c", "1"])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn"),
    )
}

/// Time to first byte through the SOCKS5 port `socks`, step by step: 50
/// requests captured on loopback and on the WireGuard port, and the
/// report of tests/interop/ttfb_steps.py.
fn ttfb_steps(socks: u16, url: &str, dir: &Scratch) -> String {
    let cap = dir.path("steps.pcap");
    let mut dump = Command::new("tcpdump")
        .args(["-i", "any", "-n", "-U", "-w"])
        .arg(&cap)
        .arg(format!("udp port 51820 or tcp port {socks}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    // It says "listening on" once it captures.
    let mut err = std::io::BufReader::new(dump.stderr.take().unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap_or(0) > 0
        && !line.contains("listening on")
    {
        line.clear();
    }
    ttfb(&["--socks5", &format!("127.0.0.1:{socks}"), url]);
    let _ = Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status();
    let _ = dump.wait();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/ttfb_steps.py");
    let out = sh(&format!(
        "tcpdump -r {} -n -tt 2>/dev/null | python3 {} {socks}",
        cap.display(),
        script.display()
    ));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn onetun() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tools");
    let bin = root.join("bin/onetun");
    if !bin.exists() {
        eprintln!(
            "installing onetun from crates.io into {} ...",
            root.display()
        );
        let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "--quiet",
                "onetun",
                "--root",
                root.to_str().unwrap(),
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cargo install onetun failed");
    }
    bin
}

/// What to run, from the command line.
struct Options {
    only: Option<Vec<String>>,
    python_ttfb: bool,
    /// Capture 50 more SOCKS5 requests of the underpass row and say where
    /// their time goes (tests/interop/ttfb_steps.py).
    steps: bool,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            only: None,
            python_ttfb: false,
            steps: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--origin" => {
                    let addr: SocketAddr = args
                        .next()
                        .and_then(|a| a.parse().ok())
                        .expect("--origin IP:PORT");
                    let _server = underpass_tests::http_server::HttpServer::start_on(addr);
                    loop {
                        std::thread::park();
                    }
                }
                "--steps" => o.steps = true,
                "--only" => {
                    o.only = Some(
                        args.next()
                            .expect("--only ROW,ROW")
                            .split(',')
                            .map(str::to_string)
                            .collect(),
                    )
                }
                "--ttfb-server" => {
                    o.python_ttfb = match args.next().as_deref() {
                        Some("python") => true,
                        Some("rust") => false,
                        _ => panic!("--ttfb-server python|rust"),
                    }
                }
                other => panic!(
                    "unknown argument {other}; use --only underpass,reference,onetun,gateway,plain, --steps and --ttfb-server python|rust"
                ),
            }
        }
        o
    }

    fn runs(&self, row: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|r| r == row))
    }
}

/// Starts this program as an HTTP origin on `addr`, on CPU 0, inside the
/// namespace `netns` if given.
fn origin(netns: Option<&str>, addr: &str) -> Kill {
    let exe = std::env::current_exe().unwrap();
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "taskset", "-c", "0"]);
            c
        }
        None => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]);
            c
        }
    };
    c.arg(exe)
        .args(["--origin", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Kill(c.spawn().expect("origin"))
}

fn main() {
    let options = Options::parse();
    if let Some(why) = interop::unavailable() {
        eprintln!("cannot run: {why}");
        std::process::exit(1);
    }
    assert!(
        sh("command -v iperf3").status.success(),
        "install iperf3 (apt-get install iperf3)"
    );
    // UNDERPASS_BIN set: that binary (A/B comparisons); else a fresh build.
    let underpass = match std::env::var_os("UNDERPASS_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--quiet", "-p", "underpass"])
                .status()
                .expect("cargo");
            assert!(status.success());
            let bin = std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .join("underpass");
            std::env::set_var("UNDERPASS_BIN", &bin);
            bin
        }
    };

    let (reference, onetun_key) = (keys(), keys());
    let Some(peer) = Peer::start_with(
        "bench",
        &[
            (reference.public.clone(), 3),
            (onetun_key.public.clone(), 4),
        ],
        Some(0),
    ) else {
        return;
    };
    let id = peer.id;
    let server_ip = peer.tunnel_ip();
    std::fs::write(peer.dir.path("www/small.txt"), "hello\n").unwrap();
    let out = peer.exec(&[
        "taskset", "-c", "0", "iperf3", "-s", "-D", "-B", &server_ip, "-p", "5201",
    ]);
    assert!(out.status.success(), "iperf3 server in the namespace");
    let host_iperf = sh("taskset -c 0 iperf3 -s -D -B 127.0.0.1 -p 5202");
    assert!(host_iperf.status.success());
    let host_http_port = free_port();
    let host_origin = format!("127.0.0.1:{host_http_port}");
    let host_http = if options.python_ttfb {
        Kill(
            Command::new("taskset")
                .args([
                    "-c",
                    "0",
                    "python3",
                    "-m",
                    "http.server",
                    &host_http_port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .current_dir(peer.dir.path("www"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    } else {
        origin(None, &host_origin)
    };
    wait_tcp(host_origin.parse().unwrap(), Duration::from_secs(5));
    // Behind wireguard-go: its Python server on 8000, or the Rust origin.
    let (peer_origin, path) = if options.python_ttfb {
        (format!("{server_ip}:8000"), "/small.txt")
    } else {
        (format!("{server_ip}:8080"), "/hello")
    };
    let _peer_http =
        (!options.python_ttfb).then(|| origin(Some(&format!("underpass-{id}")), &peer_origin));
    std::thread::sleep(Duration::from_millis(500));

    println!("interop benchmark: peer side pinned to CPU 0, client side to CPU 1; iperf3 {SECONDS} s per figure; ttfb = curl time to first byte, {LATENCY_RUNS} runs, {} server",
        if options.python_ttfb { "Python http.server" } else { "Rust (thread per connection)" });
    println!("CPU s/GiB and RSS are those of the client-side tunnel process (the reference's kernel TCP time is not in its figure)");
    print_header();
    let mut entries = Vec::new();
    let mut steps = None;
    let small = format!("http://{peer_origin}{path}");
    let host_small = format!("http://{host_origin}{path}");

    // 1. underpass client -> wireguard-go.
    let ours = options.runs("underpass").then(|| {
        let (fwd, socks, http, web) = (free_port(), free_port(), free_port(), free_port());
        let cfg = peer.dir.write(
            "underpass.conf",
            &peer.client_config("", &format!("[Socks5]\nBindAddress = 127.0.0.1:{socks}\n\n[http]\nBindAddress = 127.0.0.1:{http}\n\n\
                 [TCPClientTunnel]\nBindAddress = 127.0.0.1:{fwd}\nTarget = {server_ip}:5201\n\n\
                 [TCPClientTunnel]\nBindAddress = 127.0.0.1:{web}\nTarget = {peer_origin}\n")),
        );
        let client = spawn_on_cpu1(
            &underpass,
            &["--config", cfg.to_str().unwrap()],
            &peer.dir.path("underpass.log"),
        );
        wait_tcp(
            SocketAddr::from(([127, 0, 0, 1], socks)),
            Duration::from_secs(10),
        );
        std::thread::sleep(Duration::from_millis(500));
        if options.steps {
            steps = Some(ttfb_steps(socks, &small, &peer.dir));
        }
        let other = other_entries(&small, http, &format!("http://127.0.0.1:{web}{path}"));
        let row = measure(
            "underpass -> wireguard-go",
            ("127.0.0.1", fwd),
            &["--socks5", &format!("127.0.0.1:{socks}"), &small],
            Some(client.0.id()),
        );
        entries.push(Entries::new(&row, other));
        row
    });

    // 2. wireguard-go reference client (kernel TCP) -> wireguard-go.
    let reference_row = options.runs("reference").then(|| {
        let wgr = format!("wgr{id}");
        std::fs::write(peer.dir.path("ref.key"), &reference.private).unwrap();
        let setup = format!(
            "taskset -c 1 wireguard-go {wgr} && wg set {wgr} private-key {} peer {} endpoint {} allowed-ips {server_ip}/32 && \
             ip addr add 10.202.{id}.3/32 dev {wgr} && ip link set {wgr} mtu 1420 up && ip route replace {server_ip}/32 dev {wgr}",
            peer.dir.path("ref.key").display(),
            peer.public,
            peer.endpoint()
        );
        assert!(sh(&setup).status.success(), "reference wireguard-go");
        std::thread::sleep(Duration::from_millis(500));
        let ref_pid = sh(&format!("pgrep -f 'wireguard-go {wgr}$'")).stdout;
        let ref_pid = String::from_utf8_lossy(&ref_pid)
            .trim()
            .lines()
            .next()
            .and_then(|p| p.parse().ok());
        let row = measure(
            "wireguard-go client (kernel TCP) -> wireguard-go",
            (&server_ip, 5201),
            &[&small],
            ref_pid,
        );
        let _ = sh(&format!(
            "pkill -f 'wireguard-go {wgr}$'; ip link del {wgr} 2>/dev/null"
        ));
        row
    });

    // 3. onetun -> wireguard-go.
    let onetun_row = options.runs("onetun").then(|| {
        let onetun = onetun();
        let (ofwd, ohttp) = (free_port(), free_port());
        let start = || {
            let p = spawn_on_cpu1(
                &onetun,
                &[
                    &format!("127.0.0.1:{ofwd}:{server_ip}:5201"),
                    &format!("127.0.0.1:{ohttp}:{peer_origin}"),
                    "--endpoint-addr",
                    &peer.endpoint().to_string(),
                    "--endpoint-public-key",
                    &peer.public,
                    "--private-key",
                    &onetun_key.private,
                    "--source-peer-ip",
                    &format!("10.202.{id}.4"),
                    "--keep-alive",
                    "10",
                ],
                &peer.dir.path("onetun.log"),
            );
            wait_tcp(
                SocketAddr::from(([127, 0, 0, 1], ofwd)),
                Duration::from_secs(10),
            );
            std::thread::sleep(Duration::from_millis(500));
            p
        };
        // A fresh onetun for each half: after the 50 latency connections
        // its download falls from ~160 to 10-90 Mbit/s (and after the
        // upload it moves nothing), which says more about onetun than a
        // figure would.
        let first = start();
        let latency = ttfb(&[&format!("http://127.0.0.1:{ohttp}{path}")]);
        drop(first);
        let second = start();
        throughput_row(
            "onetun -> wireguard-go (fresh per half)",
            ("127.0.0.1", ofwd),
            Some(second.0.id()),
            latency,
        )
    });

    // 4. underpass client -> underpass gateway.
    if options.runs("gateway") {
        let (fwd_port, web_port) = (free_port(), free_port());
        let pair = Pair::start(
            "bench-pair",
            PairOptions {
                gateway_cpu: Some(0),
                client_cpu: Some(1),
                extra_client: format!("\n[TCPClientTunnel]\nBindAddress = 127.0.0.1:{fwd_port}\nTarget = 127.0.0.1:5202\n\n\
                     [TCPClientTunnel]\nBindAddress = 127.0.0.1:{web_port}\nTarget = {host_origin}\n"),
                ..Default::default()
            },
        );
        let pid = sh("pgrep -f 'underpass --config .*bench-pair.*client.conf'").stdout;
        let pid = String::from_utf8_lossy(&pid)
            .trim()
            .lines()
            .next()
            .and_then(|p| p.parse().ok());
        let other = other_entries(
            &host_small,
            pair.http.port(),
            &format!("http://127.0.0.1:{web_port}{path}"),
        );
        let row = measure(
            "underpass -> underpass gateway",
            ("127.0.0.1", fwd_port),
            &["--socks5", &pair.socks.to_string(), &host_small],
            pid,
        );
        entries.push(Entries::new(&row, other));
    }

    // 5. No tunnel.
    if options.runs("plain") {
        measure(
            "no tunnel (loopback)",
            ("127.0.0.1", 5202),
            &[&host_small],
            None,
        );
    }

    println!();
    println!("ratios (latency ratios below 1 are better)");
    if let (Some(ours), Some(reference)) = (&ours, &reference_row) {
        print_ratio("underpass / wireguard-go reference", ours, reference);
    }
    if let (Some(ours), Some(onetun)) = (&ours, &onetun_row) {
        print_ratio("underpass / onetun", ours, onetun);
    }
    if !entries.is_empty() {
        println!();
        println!("time to first byte by entry point, ms p50 / p90 (the table's figure is SOCKS5)");
        println!(
            "{:<50} {:>15} {:>15} {:>15}",
            "", "SOCKS5", "HTTP proxy", "TCPClientTunnel"
        );
        for e in &entries {
            e.print();
        }
    }
    if let Some(steps) = steps {
        println!();
        println!("underpass -> wireguard-go, one SOCKS5 request step by step (--steps):");
        print!("{steps}");
    }
    drop(host_http);
    let _ = sh("pkill -f 'iperf3 -s -D -B 127.0.0.1 -p 5202'");
}
