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
//!     cargo build --release -p underpass -p underpass-tests --bins
//!     target/release/interop_bench
//!     target/release/interop_bench --only gateway,plain
//!     target/release/interop_bench --ttfb-server python
//!     target/release/interop_bench --only underpass --steps
//!     UNDERPASS_BIN=/tmp/underpass-old target/release/interop_bench   # another build
//!     target/release/interop_bench --only underpass,reference --against /tmp/underpass-old
//!
//! Time to first byte is measured against the tests' Rust HTTP server (this
//! binary started with `--origin ADDR`, in the namespace and on the host),
//! one thread per connection: Python's `http.server`, which earlier runs
//! used, takes ~1 ms per request itself and hid the tunnels' differences.
//!
//! The table's latency goes through SOCKS5; a second table gives it
//! through underpass's HTTP proxy and a TCPClientTunnel as well (the
//! reference and onetun are entered directly, as a forward is). With both
//! the underpass and the reference rows, a third table measures all four
//! ways in interleaved rounds while both clients are up (before either
//! row), so that the machine's noise falls on each alike and their ratio
//! means something on a busy machine. `--against OLD` adds a second
//! underpass client, another build, to those rounds: an A/B of two builds
//! that the machine's noise cannot decide.
//!
//! Pinning: the peer side (wireguard-go peer, its servers, the underpass
//! gateway, the host's iperf3 server) on CPU 0; the client side (the tunnel
//! client under test, iperf3 and curl clients) on CPU 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use underpass_tests::bench::{ready_for_interop, spawn_on_cpu1, Kill};
use underpass_tests::interop::{Peer, ReferenceClient};
use underpass_tests::*;

mod measure;
mod procs;
mod report;

use measure::{measure, throughput_row, ttfb, ttfb_rounds, Row, LATENCY_RUNS, SECONDS};
use procs::{onetun, origin, python_origin, ttfb_steps};
use report::{print_entries, print_header, print_ratio, print_rounds, Entries, Round};

/// Benchmarks underpass against wireguard-go's own client and onetun,
/// through one wireguard-go peer in a network namespace (run as root).
#[derive(Parser)]
struct Options {
    /// Rows to run, comma-separated: underpass, reference, onetun,
    /// gateway, plain (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The HTTP server behind the peer for time to first byte.
    #[arg(long, value_enum, default_value_t = Origin::Rust)]
    ttfb_server: Origin,
    /// Capture 50 more SOCKS5 requests of the underpass row and say where
    /// their time goes (tests/interop/ttfb_steps.py; needs tcpdump).
    #[arg(long)]
    steps: bool,
    /// Rounds of the interleaved time-to-first-byte comparison.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Another underpass binary (an older build, for an A/B) to run beside
    /// ours as a second client of the peer: the interleaved rounds then
    /// take its three entry points too, and give each of ours as a paired
    /// ratio to its.
    #[arg(long, value_name = "BINARY")]
    against: Option<PathBuf>,
    /// Serve as the benchmark's HTTP origin on IP:PORT and nothing else
    /// (the benchmark starts itself this way).
    #[arg(long, value_name = "IP:PORT", hide = true)]
    origin: Option<SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Origin {
    /// The tests' server, one thread per connection.
    Rust,
    /// Python's http.server, as runs 1-3 (2026-11-25) used.
    Python,
}

impl Options {
    fn runs(&self, row: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|r| r == row))
    }
}

/// What every row shares: the peer and the addresses behind it.
struct Bench {
    peer: Peer,
    underpass: PathBuf,
    server_ip: String,
    /// The origin behind the peer and its URL.
    peer_origin: String,
    small: String,
    /// The origin on the host (behind the underpass gateway) and its URL.
    host_origin: String,
    host_small: String,
    path: &'static str,
}

/// The underpass client of the peer, with every entry point.
struct UnderpassClient {
    process: Kill,
    socks: u16,
    http: u16,
    /// TCPClientTunnels to iperf3 and to the origin.
    iperf: u16,
    web: u16,
}

impl UnderpassClient {
    /// `binary` as the peer's client `keys` at 10.202.ID.`host`; `name`
    /// names its config and log.
    fn start(b: &Bench, binary: &Path, keys: &Keys, host: u8, name: &str) -> UnderpassClient {
        let (iperf, socks, http, web) = (free_port(), free_port(), free_port(), free_port());
        let cfg = b.peer.dir.write(
            &format!("{name}.conf"),
            &b.peer.client_config_as(
                keys,
                host,
                "",
                &format!(
                    "[Socks5]\nBindAddress = 127.0.0.1:{socks}\n\n[http]\nBindAddress = 127.0.0.1:{http}\n\n\
                     [TCPClientTunnel]\nBindAddress = 127.0.0.1:{iperf}\nTarget = {}:5201\n\n\
                     [TCPClientTunnel]\nBindAddress = 127.0.0.1:{web}\nTarget = {}\n",
                    b.server_ip, b.peer_origin
                ),
            ),
        );
        let process = spawn_on_cpu1(
            binary,
            &["--config", cfg.to_str().unwrap()],
            &b.peer.dir.path(&format!("{name}.log")),
        );
        wait_tcp(
            SocketAddr::from(([127, 0, 0, 1], socks)),
            Duration::from_secs(10),
        );
        std::thread::sleep(Duration::from_millis(500));
        UnderpassClient {
            process,
            socks,
            http,
            iperf,
            web,
        }
    }

    /// curl's arguments to the peer's origin through each entry point.
    fn ways_in(&self, b: &Bench) -> WaysIn {
        ways_in(
            self.socks,
            self.http,
            &b.small,
            format!("http://127.0.0.1:{}{}", self.web, b.path),
        )
    }
}

/// curl's arguments to one origin through each of underpass's entry
/// points, named: SOCKS5, the HTTP proxy, a TCPClientTunnel to it.
type WaysIn = [(&'static str, Vec<String>); 3];

/// [`WaysIn`] for the proxies on loopback ports `socks` and `http` to
/// `url`, and the forward's `forward_url` to the same origin.
fn ways_in(socks: u16, http: u16, url: &str, forward_url: String) -> WaysIn {
    [
        (
            "SOCKS5",
            vec!["--socks5".into(), format!("127.0.0.1:{socks}"), url.into()],
        ),
        (
            "HTTP proxy",
            vec!["-x".into(), format!("http://127.0.0.1:{http}"), url.into()],
        ),
        ("TCPClientTunnel", vec![forward_url]),
    ]
}

/// An underpass row: time to first byte through the HTTP proxy and the
/// forward, then the row itself (SOCKS5 latency, throughput).
fn underpass_row(
    name: &str,
    iperf_to: (&str, u16),
    [(_, socks), (_, http), (_, forward)]: &WaysIn,
    pid: Option<u32>,
) -> (Row, Entries) {
    let http = ttfb(http);
    let forward = ttfb(forward);
    let row = measure(name, iperf_to, socks, pid);
    let entries = Entries {
        name: row.name.clone(),
        socks: (row.ttfb50, row.ttfb90),
        http,
        forward,
    };
    (row, entries)
}

fn main() {
    let options = Options::parse();
    if let Some(addr) = options.origin {
        let _server = underpass_tests::http_server::HttpServer::start_on(addr);
        loop {
            std::thread::park();
        }
    }
    let underpass = ready_for_interop();

    let (reference_keys, onetun_keys, against_keys) = (keys(), keys(), keys());
    let Some(peer) = Peer::start_with(
        "bench",
        &[
            (reference_keys.public.clone(), 3),
            (onetun_keys.public.clone(), 4),
            (against_keys.public.clone(), 5),
        ],
        Some(0),
    ) else {
        return;
    };
    let server_ip = peer.tunnel_ip();
    std::fs::write(peer.dir.path("www/small.txt"), "hello\n").unwrap();
    let out = peer.exec(&[
        "taskset", "-c", "0", "iperf3", "-s", "-D", "-B", &server_ip, "-p", "5201",
    ]);
    assert!(out.status.success(), "iperf3 server in the namespace");
    // A child of ours (not a daemon), so it goes when the run ends.
    let _host_iperf = Kill(
        std::process::Command::new("taskset")
            .args(["-c", "0", "iperf3", "-s", "-B", "127.0.0.1", "-p", "5202"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("iperf3"),
    );
    wait_tcp("127.0.0.1:5202".parse().unwrap(), Duration::from_secs(5));
    let host_http_port = free_port();
    let host_origin = format!("127.0.0.1:{host_http_port}");
    let python = matches!(options.ttfb_server, Origin::Python);
    let _host_http = if python {
        python_origin(host_http_port, &peer.dir.path("www"))
    } else {
        origin(None, &host_origin)
    };
    wait_tcp(host_origin.parse().unwrap(), Duration::from_secs(5));
    // Behind wireguard-go: its Python server on 8000, or the Rust origin.
    let (peer_origin, path) = if python {
        (format!("{server_ip}:8000"), "/small.txt")
    } else {
        (format!("{server_ip}:8080"), "/hello")
    };
    let _peer_http =
        (!python).then(|| origin(Some(&format!("underpass-{}", peer.id)), &peer_origin));
    std::thread::sleep(Duration::from_millis(500));
    let b = Bench {
        small: format!("http://{peer_origin}{path}"),
        host_small: format!("http://{host_origin}{path}"),
        peer,
        underpass,
        server_ip,
        peer_origin,
        host_origin,
        path,
    };

    println!("interop benchmark: peer side pinned to CPU 0, client side to CPU 1; iperf3 {SECONDS} s per figure; ttfb = curl time to first byte, {LATENCY_RUNS} runs, {} server",
        if python { "Python http.server" } else { "Rust (thread per connection)" });
    println!("CPU s/GiB and RSS are those of the client-side tunnel process (the reference's kernel TCP time is not in its figure)");
    print_header();
    let mut entries = Vec::new();
    let mut steps = None;

    // Both clients of the peer up at once: first the same requests
    // interleaved (latency before any throughput, as in every row), then
    // each client's own row.
    let ours = options
        .runs("underpass")
        .then(|| UnderpassClient::start(&b, &b.underpass, &b.peer.client, 2, "underpass"));
    let against = options
        .against
        .as_ref()
        .filter(|_| ours.is_some())
        .map(|bin| UnderpassClient::start(&b, bin, &against_keys, 5, "against"));
    let reference = options
        .runs("reference")
        .then(|| ReferenceClient::start(&b.peer, &reference_keys, 3, b.peer.endpoint()));
    if let Some(c) = &ours {
        if options.steps {
            steps = Some(ttfb_steps(c.socks, &b.small, &b.peer.dir));
        }
    }
    let rounds = ours
        .as_ref()
        .zip(reference.as_ref())
        .map(|(c, _)| interleaved(&b, c, against.as_ref(), options.rounds));

    // 1. underpass client -> wireguard-go.
    let ours_row = ours.as_ref().map(|c| {
        let (row, e) = underpass_row(
            "underpass -> wireguard-go",
            ("127.0.0.1", c.iperf),
            &c.ways_in(&b),
            Some(c.process.0.id()),
        );
        entries.push(e);
        row
    });

    // 2. wireguard-go reference client (kernel TCP) -> wireguard-go.
    let reference_row = reference.as_ref().map(|r| {
        measure(
            "wireguard-go client (kernel TCP) -> wireguard-go",
            (&b.server_ip, 5201),
            &[&b.small],
            r.pid,
        )
    });
    drop((ours, against, reference));

    // 3. onetun -> wireguard-go.
    let onetun_row = options.runs("onetun").then(|| onetun_row(&b, &onetun_keys));

    // 4. underpass client -> underpass gateway.
    if options.runs("gateway") {
        entries.push(gateway_row(&b));
    }

    // 5. No tunnel.
    if options.runs("plain") {
        measure(
            "no tunnel (loopback)",
            ("127.0.0.1", 5202),
            &[&b.host_small],
            None,
        );
    }

    println!();
    println!("ratios (latency ratios below 1 are better)");
    if let (Some(ours), Some(reference)) = (&ours_row, &reference_row) {
        print_ratio("underpass / wireguard-go reference", ours, reference);
    }
    if let (Some(ours), Some(onetun)) = (&ours_row, &onetun_row) {
        print_ratio("underpass / onetun", ours, onetun);
    }
    print_entries(&entries);
    if let Some(lines) = rounds {
        print_rounds(options.rounds, &lines);
    }
    if let Some(steps) = steps {
        println!();
        println!("underpass -> wireguard-go, one SOCKS5 request step by step (--steps):");
        print!("{steps}");
    }
}

/// The reference and underpass's three entry points to the same origin
/// (and the `--against` build's), one request each per round.
fn interleaved(
    b: &Bench,
    ours: &UnderpassClient,
    against: Option<&UnderpassClient>,
    rounds: usize,
) -> Vec<Round> {
    let mut ways = vec![(
        "wireguard-go client (kernel TCP), direct".to_string(),
        vec![b.small.clone()],
    )];
    ways.extend(ours.ways_in(b).map(|(n, a)| (format!("underpass {n}"), a)));
    if let Some(c) = against {
        ways.extend(c.ways_in(b).map(|(n, a)| (format!("--against {n}"), a)));
    }
    let args: Vec<Vec<String>> = ways.iter().map(|(_, a)| a.clone()).collect();
    let samples = ttfb_rounds(&args, rounds);
    ways.into_iter()
        .enumerate()
        .map(|(i, (name, _))| Round {
            name,
            ttfb: measure::percentiles(samples[i].clone()),
            to_reference: measure::paired_ratio(&samples[i], &samples[0]),
            // Ours (ways 1-3) against theirs (4-6).
            to_against: (against.is_some() && (1..=3).contains(&i))
                .then(|| measure::paired_ratio(&samples[i], &samples[i + 3])),
        })
        .collect()
}

fn onetun_row(b: &Bench, keys: &Keys) -> Row {
    let onetun = onetun();
    let (ofwd, ohttp) = (free_port(), free_port());
    let start = || {
        let p = spawn_on_cpu1(
            &onetun,
            &[
                &format!("127.0.0.1:{ofwd}:{}:5201", b.server_ip),
                &format!("127.0.0.1:{ohttp}:{}", b.peer_origin),
                "--endpoint-addr",
                &b.peer.endpoint().to_string(),
                "--endpoint-public-key",
                &b.peer.public,
                "--private-key",
                &keys.private,
                "--source-peer-ip",
                &format!("10.202.{}.4", b.peer.id),
                "--keep-alive",
                "10",
            ],
            &b.peer.dir.path("onetun.log"),
        );
        wait_tcp(
            SocketAddr::from(([127, 0, 0, 1], ofwd)),
            Duration::from_secs(10),
        );
        std::thread::sleep(Duration::from_millis(500));
        p
    };
    // A fresh onetun for each half: after the 50 latency connections its
    // download falls from ~160 to 10-90 Mbit/s (and after the upload it
    // moves nothing), which says more about onetun than a figure would.
    let first = start();
    let latency = ttfb(&[&format!("http://127.0.0.1:{ohttp}{}", b.path)]);
    drop(first);
    let second = start();
    throughput_row(
        "onetun -> wireguard-go (fresh per half)",
        ("127.0.0.1", ofwd),
        Some(second.0.id()),
        latency,
    )
}

fn gateway_row(b: &Bench) -> Entries {
    let (fwd_port, web_port) = (free_port(), free_port());
    let pair = Pair::start(
        "bench-pair",
        PairOptions {
            gateway_cpu: Some(0),
            client_cpu: Some(1),
            extra_client: format!(
                "\n[TCPClientTunnel]\nBindAddress = 127.0.0.1:{fwd_port}\nTarget = 127.0.0.1:5202\n\n\
                 [TCPClientTunnel]\nBindAddress = 127.0.0.1:{web_port}\nTarget = {}\n",
                b.host_origin
            ),
            ..Default::default()
        },
    );
    let ways = ways_in(
        pair.socks.port(),
        pair.http.port(),
        &b.host_small,
        format!("http://127.0.0.1:{web_port}{}", b.path),
    );
    let pid = Some(pair.client.id());
    underpass_row(
        "underpass -> underpass gateway",
        ("127.0.0.1", fwd_port),
        &ways,
        pid,
    )
    .1
}
