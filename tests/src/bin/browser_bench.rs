//! The browser's transports in Chromium next to the native client, through
//! one gateway, in one run: Mbit/s down and up, and the CPU seconds each
//! process spent (where the time goes). Run by hand (not in CI):
//!
//!     web-demo/build.sh --release
//!     cargo run --release -p underpass-tests --bin browser_bench
//!     cargo run --release -p underpass-tests --bin browser_bench -- --runs 5 --loss 0,0.01 --mib 64
//!
//! The gateway, the relay and the HTTP server run on CPU 0; Chromium (all
//! its processes) and the native client with curl on CPU 1. The relay's
//! hidden `--bench-loss` drops that fraction of the datagrams between page
//! and relay, both ways; the native client has no relay, so it is measured
//! without loss only. `--path-loss` drops packets in the kernel instead,
//! between Chromium and the relay, where a WebSocket's TCP and
//! WebTransport's QUIC meet them as they would on a real path: the whole
//! benchmark then runs in a network namespace of its own (root, nftables,
//! ethtool; see `underpass_tests::kernel_loss`).
//!
//!     cargo run --release -p underpass-tests --bin browser_bench -- --loss 0 --path-loss 0.01
//!
//! Loss alone on loopback says little about TCP under a WebSocket (its
//! round trip is microseconds). `--wan RTT_MS/LOSS/MBIT` puts Chromium in
//! a network namespace whose way to the relay is a wireguard-go tunnel
//! through the impairment relay (one-way delay, random loss, a bottleneck
//! with a drop-tail queue; MBIT 0 for none), as wan_bench's reference row
//! is built: the WebSocket's TCP and WebTransport's QUIC then cross a long
//! lossy path as they would on the internet (root, wireguard-go).
//!
//!     cargo run --release -p underpass-tests --bin browser_bench -- --loss 0 --wan 50/0/100,50/0.01/100 --mib 32
//!
//! `UNDERPASS_BIN` picks another `underpass` build.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use underpass_tests::bench::underpass_binary;
use underpass_tests::http_server::HttpServer;
use underpass_tests::impair::{ImpairRelay, Impairment};
use underpass_tests::interop::{Peer, ReferenceClient};
use underpass_tests::relay::{demo_relay_args, web_demo};
use underpass_tests::*;

/// A way for the page to reach the relay: the relay's extra arguments and
/// what the page passes to `Tunnel.connect` for it.
struct Transport {
    name: &'static str,
    relay_args: &'static [&'static str],
    /// JSON merged into `Tunnel.connect`'s options.
    connect: &'static str,
}

/// Width of the table's first column (the longest row's name).
const NAME_WIDTH: usize = 58;

/// The rows, "before" first. The relay offers WebTransport to them all;
/// each row says what the page asks for.
const TRANSPORTS: &[Transport] = &[
    Transport {
        name: "websocket, one datagram per message",
        relay_args: &["--no-batch"],
        connect: r#"{"transport": "websocket"}"#,
    },
    Transport {
        name: "websocket, batched (the default)",
        relay_args: &[],
        connect: r#"{"transport": "websocket"}"#,
    },
    Transport {
        name: "webtransport, datagrams both ways",
        relay_args: &["--no-webtransport-stream"],
        connect: r#"{"transport": "webtransport"}"#,
    },
    Transport {
        name: "webtransport, datagrams down, stream up",
        relay_args: &[],
        connect: r#"{"transport": "webtransport", "webtransportDownload": "datagrams"}"#,
    },
    Transport {
        name: "webtransport, stream both ways",
        relay_args: &[],
        connect: r#"{"transport": "webtransport"}"#,
    },
];

#[derive(Parser)]
struct Args {
    /// Runs per row; the table shows the range.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Loss rates between page and relay, comma-separated.
    #[arg(long, default_value = "0,0.01", value_delimiter = ',')]
    loss: Vec<f64>,
    /// Loss rates on the path between Chromium and the relay, dropped by
    /// the kernel (root), comma-separated; each adds a row per transport.
    #[arg(long, value_delimiter = ',')]
    path_loss: Vec<f64>,
    /// Paths between Chromium and the relay through wireguard-go and the
    /// impairment relay, `RTT_MS/LOSS/MBIT` (MBIT 0: no bottleneck),
    /// comma-separated; each adds a row per transport.
    #[arg(long, value_delimiter = ',', value_parser = parse_wan)]
    wan: Vec<Wan>,
    /// MiB each way.
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// Only the rows whose name contains this (and the native client).
    #[arg(long)]
    only: Option<String>,
    /// The relay's RUST_LOG (`debug` logs what QUIC saw per WebTransport
    /// session, printed under its row); `warn` if not given.
    #[arg(long)]
    relay_log: Option<String>,
    /// More arguments for every relay (repeat for each), e.g.
    /// `--relay-arg=--bench-quic=congestion=bbr`.
    #[arg(long, allow_hyphen_values = true)]
    relay_arg: Vec<String>,
    /// Instead of the table: how many datagrams/s Chromium hands a page
    /// that only counts them, over WebTransport from a relay whose
    /// upstream sends 1,200-byte datagrams as fast as it can for this
    /// many seconds (what the relay and Chromium can carry, without the
    /// tunnel's engine or TCP).
    #[arg(long)]
    count_seconds: Option<u64>,
}

/// The relay's upstream for `--count-seconds`: waits for the page's
/// datagram, then sends to where it came from (the relay's socket for
/// that page) as fast as the socket takes them.
fn flood(seconds: u64) -> (SocketAddr, std::thread::JoinHandle<u64>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (_, page) = socket.recv_from(&mut buf).unwrap();
        let datagram = [0x5au8; 1200];
        let end = std::time::Instant::now() + Duration::from_secs(seconds);
        let mut sent = 0u64;
        while std::time::Instant::now() < end {
            for _ in 0..64 {
                if socket.send_to(&datagram, page).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    });
    (addr, sender)
}

fn count_only(seconds: u64, args: &Args) {
    let scratch = Scratch::new("browser-count");
    let (upstream, sender) = flood(seconds);
    let relay_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let base = demo_relay_args(relay_addr, &upstream.to_string(), "bench-token");
    let mut relay_args: Vec<&str> = base.iter().map(String::as_str).collect();
    relay_args.extend(args.relay_arg.iter().map(String::as_str));
    let log = args.relay_log.as_deref().unwrap_or("warn");
    let mut relay = Process::start_logged(Some(0), "relay", &scratch, &relay_args, Some(log));
    wait_tcp(relay_addr, Duration::from_secs(20));
    let out = Command::new("timeout")
        .args(["120", "taskset", "-c", "1", "node"])
        .arg(web_demo().join("test/bench.mjs"))
        .current_dir(web_demo())
        .env("PAGE_URL", format!("http://{relay_addr}/"))
        .env("TOKEN", "bench-token")
        .env("COUNT_SECONDS", seconds.to_string())
        .env("PIDS", format!(r#"{{"relay": {}}}"#, relay.id()))
        .output()
        .expect("node");
    let sent = sender.join().unwrap_or(0);
    relay.terminate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
        Some(json) => println!(
            "upstream sent {sent} datagrams ({:.0}/s); the page: {json}",
            sent as f64 / seconds as f64
        ),
        None => println!("no result: {}", String::from_utf8_lossy(&out.stderr)),
    }
    if args.relay_log.is_some() {
        for line in relay
            .log()
            .lines()
            .filter(|l| l.contains("WebTransport session"))
        {
            println!("    relay: {line}");
        }
    }
}

/// Keeps this process (the HTTP server's threads, and what it starts
/// without taskset) on CPU 0.
#[allow(unsafe_code)]
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One run's figures.
#[derive(Default, Clone)]
struct Run {
    down: f64,
    up: f64,
    cpu_down: BTreeMap<String, f64>,
    cpu_up: BTreeMap<String, f64>,
    note: String,
}

fn cpu_of(v: &serde_json::Value) -> BTreeMap<String, f64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default()
}

struct Setup {
    scratch: Scratch,
    config: String,
    server: HttpServer,
    gateway_pid: u32,
    bytes: u64,
}

/// One run of `bench.mjs`; `netns`: Chromium runs in that network
/// namespace (`--wan`), where the relay's origin is not loopback and must
/// be declared a secure context for WebTransport.
fn browser_run(
    s: &Setup,
    t: &Transport,
    relay: &Process,
    relay_addr: SocketAddr,
    netns: Option<&str>,
) -> Run {
    let pids = format!(
        r#"{{"relay": {}, "gateway": {}}}"#,
        relay.id(),
        s.gateway_pid
    );
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "timeout"]).env(
                "CHROMIUM_ARGS",
                format!("--unsafely-treat-insecure-origin-as-secure=http://{relay_addr}"),
            );
            c
        }
        None => Command::new("timeout"),
    };
    command
        .args(["600", "taskset", "-c", "1", "node"])
        .arg(web_demo().join("test/bench.mjs"))
        .current_dir(web_demo())
        .env("PAGE_URL", format!("http://{relay_addr}/"))
        .env("CONFIG", &s.config)
        .env("TOKEN", "bench-token")
        .env("BYTES", s.bytes.to_string())
        .env("DOWN_URL", s.server.url(&format!("/fast/{}", s.bytes)))
        .env("UP_URL", s.server.url("/discard"))
        .env("CONNECT", t.connect)
        .env("PIDS", pids);
    let out = command.output().expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(json) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
    else {
        return Run {
            note: format!("no result: {}", String::from_utf8_lossy(&out.stderr)),
            ..Run::default()
        };
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Run {
            note: err.lines().next().unwrap_or("failed").to_string(),
            ..Run::default()
        };
    }
    let stats = &json["stats"];
    Run {
        down: json["down"]["mbps"].as_f64().unwrap_or(0.0),
        up: json["up"]["mbps"].as_f64().unwrap_or(0.0),
        cpu_down: cpu_of(&json["down"]["cpu"]),
        cpu_up: cpu_of(&json["up"]["cpu"]),
        note: format!(
            "{}{}, datagrams/message down {} up {}, datagrams the page read down {} sent up {}",
            stats["transport"].as_str().unwrap_or("?"),
            if stats["batched"].as_bool() == Some(true) {
                " batched"
            } else {
                ""
            },
            json["down"]["datagramsPerMessage"]["in"],
            json["up"]["datagramsPerMessage"]["out"],
            json["down"]["datagrams"]["in"],
            json["up"]["datagrams"]["out"],
        ),
    }
}

fn curl_mbps(args: &[&str], what: &str) -> f64 {
    let out = Command::new("taskset")
        .args(["-c", "1", "curl", "--silent", "--show-error"])
        .args(["--max-time", "300", "-w", what])
        .args(args)
        .output()
        .expect("curl");
    if !out.status.success() {
        eprintln!("curl: {}", String::from_utf8_lossy(&out.stderr));
        return 0.0;
    }
    let bytes_per_s: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    bytes_per_s * 8.0 / 1e6
}

fn native_runs(s: &Setup, runs: usize) -> Vec<Run> {
    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = s.scratch.write("native.conf", &s.config);
    let mut client = Process::start_on(
        Some(1),
        "native-client",
        &s.scratch,
        &[
            "--config",
            config.to_str().unwrap(),
            "--socks5",
            &socks.to_string(),
        ],
    );
    wait_tcp(socks, Duration::from_secs(20));
    let upload = s.scratch.path("upload.bin");
    std::fs::write(&upload, vec![0x5au8; s.bytes as usize]).unwrap();
    let proxy = socks.to_string();
    let down_url = s.server.url(&format!("/fast/{}", s.bytes));
    let up_url = s.server.url("/discard");
    let runs = (0..runs)
        .map(|_| Run {
            down: curl_mbps(
                &["--socks5", &proxy, "-o", "/dev/null", &down_url],
                "%{speed_download}",
            ),
            up: curl_mbps(
                &[
                    "--socks5",
                    &proxy,
                    "-T",
                    upload.to_str().unwrap(),
                    "-o",
                    "/dev/null",
                    &up_url,
                ],
                "%{speed_upload}",
            ),
            note: "underpass SOCKS5 + curl".into(),
            ..Run::default()
        })
        .collect();
    client.terminate();
    runs
}

fn range(values: impl Iterator<Item = f64>) -> (String, f64) {
    let mut v: Vec<f64> = values.filter(|x| *x > 0.0).collect();
    if v.is_empty() {
        return ("failed".into(), 0.0);
    }
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    let text = if v.len() == 1 || v[0] == v[v.len() - 1] {
        format!("{:.0}", v[0])
    } else {
        format!("{:.0}-{:.0}", v[0], v[v.len() - 1])
    };
    (text, median)
}

/// CPU seconds of the median run, per process, in one direction.
fn cpu_text(runs: &[Run], pick: impl Fn(&Run) -> &BTreeMap<String, f64>) -> String {
    let mut good: Vec<&Run> = runs.iter().filter(|r| r.down > 0.0).collect();
    good.sort_by(|a, b| a.down.total_cmp(&b.down));
    let Some(run) = good.get(good.len() / 2) else {
        return String::new();
    };
    pick(run)
        .iter()
        .filter(|(_, v)| **v >= 0.05)
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the runs say about themselves, once each.
fn notes(runs: &[Run]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for r in runs {
        let note = r.note.split(", datagrams").next().unwrap_or("");
        if !seen.contains(&note) {
            seen.push(note);
        }
    }
    let per_message = runs
        .iter()
        .filter_map(|r| r.note.split_once(", ").map(|(_, rest)| rest))
        .collect::<Vec<_>>()
        .join(" | ");
    format!("{} ({per_message})", seen.join("; "))
}

/// A long path between Chromium and the relay (`--wan`).
#[derive(Clone, Copy, Debug)]
struct Wan {
    rtt_ms: f64,
    loss: f64,
    mbit: f64,
}

fn parse_wan(text: &str) -> Result<Wan, String> {
    let parts: Vec<f64> = text
        .split('/')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{text:?}: {e} (want RTT_MS/LOSS/MBIT)"))?;
    match parts[..] {
        [rtt_ms, loss, mbit] if rtt_ms >= 0.0 && (0.0..1.0).contains(&loss) && mbit >= 0.0 => {
            Ok(Wan { rtt_ms, loss, mbit })
        }
        _ => Err(format!("{text:?}: want RTT_MS/LOSS/MBIT, e.g. 50/0.01/100")),
    }
}

/// Where the loss of a row is: dropped by the relay (datagrams), by the
/// kernel on the loopback between Chromium and the relay (packets), or on
/// a long path through wireguard-go.
#[derive(Clone, Copy)]
enum Loss {
    Relay(f64),
    Path(f64),
    Wan(Wan),
}

impl Loss {
    fn label(self) -> String {
        match self {
            Loss::Relay(l) => format!("{}%", l * 100.0),
            Loss::Path(l) => format!("{}% path", l * 100.0),
            Loss::Wan(w) => format!(
                "{}ms {}%{}",
                w.rtt_ms,
                w.loss * 100.0,
                if w.mbit > 0.0 {
                    format!(" {}M", w.mbit)
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// Chromium's way to the relay over `--wan`: the wireguard-go peer's
/// namespace is where Chromium runs; its tunnel reaches this namespace's
/// wireguard-go (10.202.ID.3, where the relay listens) through the
/// impairment relay.
struct WanPath {
    peer: Peer,
    relay: ImpairRelay,
    _client: ReferenceClient,
}

impl WanPath {
    fn start(w: Wan) -> Option<WanPath> {
        let keys = keys();
        let peer = Peer::start_with("browser-wan", &[(keys.public.clone(), 3)], Some(1))?;
        let impairment = Impairment::path(
            Duration::from_secs_f64(w.rtt_ms / 1000.0),
            w.loss,
            (w.mbit > 0.0).then_some(w.mbit),
        );
        let relay = ImpairRelay::start_on(peer.endpoint(), impairment, 7, Some(0));
        let client = ReferenceClient::start_on(&peer, &keys, 3, relay.addr, 0);
        // wireguard-go on the peer learns this side's endpoint from its
        // handshake; Chromium there dials first, so make one now.
        // (The peer's TCP echo, port 7.)
        let echo = SocketAddr::new(peer.tunnel_ip().parse().unwrap(), 7);
        wait_tcp(echo, Duration::from_secs(20));
        Some(WanPath {
            peer,
            relay,
            _client: client,
        })
    }

    /// Where the relay listens: this side's tunnel address.
    fn relay_ip(&self) -> [u8; 4] {
        [10, 202, self.peer.id, 3]
    }
}

fn main() {
    let args = Args::parse();
    if args.path_loss.iter().any(|l| *l > 0.0) {
        kernel_loss::enter_own_network_namespace();
    }
    pin_to_cpu0();
    if let Some(seconds) = args.count_seconds {
        count_only(seconds, &args);
        return;
    }
    let bin = underpass_binary();
    let wasm = web_demo().join("pkg/underpass_wasm_bg.wasm");
    let Ok(meta) = std::fs::metadata(&wasm) else {
        eprintln!(
            "no {}: run web-demo/build.sh --release first",
            wasm.display()
        );
        std::process::exit(1);
    };
    assert!(
        web_demo().join("node_modules/playwright-core").exists(),
        "playwright-core is missing: npm ci in web-demo"
    );
    let bytes = args.mib << 20;
    let scratch = Scratch::new("browser-bench");
    let c = keys();
    let (gateway, gateway_port, g) = start_gateway(&scratch, &c.public, "", Some(0));
    let config = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{gateway_port}\nAllowedIPs = 0.0.0.0/0\n",
        c.private, g.public
    );
    let setup = Setup {
        scratch,
        config,
        server: HttpServer::start(),
        gateway_pid: gateway.id(),
        bytes,
    };
    println!(
        "{} MiB each way through one gateway; {} run(s) per row, range of Mbit/s; underpass {}, wasm {} ({} KiB)",
        args.mib,
        args.runs,
        bin.display(),
        wasm.display(),
        meta.len() / 1024
    );
    println!("CPU seconds are the median run's, per process, for that direction.\n");
    println!(
        "{:<NAME_WIDTH$} {:>8} {:>11} {:>11} {:>6} {:>6}",
        "", "loss", "down Mb/s", "up Mb/s", "down x", "up x"
    );
    let native = native_runs(&setup, args.runs);
    let (nd, native_down) = range(native.iter().map(|r| r.down));
    let (nu, native_up) = range(native.iter().map(|r| r.up));
    println!(
        "{:<NAME_WIDTH$} {:>8} {:>11} {:>11} {:>6} {:>6}",
        "native client (SOCKS5 + curl)", "0%", nd, nu, "1.00", "1.00"
    );
    let mut profiles = Vec::new();
    let losses = (args.loss.iter().map(|&l| Loss::Relay(l)))
        .chain(
            args.path_loss
                .iter()
                .filter(|&&l| l > 0.0)
                .map(|&l| Loss::Path(l)),
        )
        .chain(args.wan.iter().map(|&w| Loss::Wan(w)));
    for loss in losses {
        let wan = match loss {
            Loss::Wan(w) => match WanPath::start(w) {
                Some(path) => Some(path),
                None => {
                    println!(
                        "    {}: skipped (needs root and wireguard-go)",
                        loss.label()
                    );
                    continue;
                }
            },
            _ => None,
        };
        for t in TRANSPORTS {
            if args
                .only
                .as_ref()
                .is_some_and(|o| !t.name.contains(o.as_str()))
            {
                continue;
            }
            let ip = wan.as_ref().map_or([127, 0, 0, 1], WanPath::relay_ip);
            let relay_addr = SocketAddr::from((ip, free_port()));
            let upstream = format!("127.0.0.1:{gateway_port}");
            let base = demo_relay_args(relay_addr, &upstream, "bench-token");
            let relay_loss = match loss {
                Loss::Relay(l) => l,
                Loss::Path(_) | Loss::Wan(_) => 0.0,
            };
            let loss_text = relay_loss.to_string();
            let mut relay_args: Vec<&str> = base.iter().map(String::as_str).collect();
            relay_args.extend(["--bench-loss", &loss_text]);
            relay_args.extend_from_slice(t.relay_args);
            relay_args.extend(args.relay_arg.iter().map(String::as_str));
            let mut relay = Process::start_logged(
                Some(0),
                "relay",
                &setup.scratch,
                &relay_args,
                Some(args.relay_log.as_deref().unwrap_or("warn")),
            );
            wait_tcp(relay_addr, Duration::from_secs(20));
            let path = match loss {
                Loss::Path(l) => Some(kernel_loss::KernelLoss::on_port(relay_addr.port(), l)),
                Loss::Relay(_) | Loss::Wan(_) => None,
            };
            let netns = wan.as_ref().map(|w| w.peer.netns());
            let before = wan
                .as_ref()
                .map(|w| (w.relay.up.tally(), w.relay.down.tally()));
            let runs: Vec<Run> = (0..args.runs)
                .map(|_| browser_run(&setup, t, &relay, relay_addr, netns.as_deref()))
                .collect();
            relay.terminate();
            if let Some(path) = path {
                let (to, from) = path.dropped();
                println!("    the kernel dropped {to} packets to the relay, {from} from it");
            }
            if let (Some(w), Some((up, down))) = (&wan, before) {
                println!(
                    "    path, page -> relay: {}; relay -> page: {}",
                    w.relay.up.tally() - up,
                    w.relay.down.tally() - down,
                );
            }
            if args.relay_log.is_some() {
                // What QUIC saw per session, when asked (--relay-log debug).
                for line in relay
                    .log()
                    .lines()
                    .filter(|l| l.contains("WebTransport session"))
                {
                    println!("    relay: {line}");
                }
            }
            let (d, down) = range(runs.iter().map(|r| r.down));
            let (u, up) = range(runs.iter().map(|r| r.up));
            println!(
                "{:<NAME_WIDTH$} {:>8} {:>11} {:>11} {:>6.2} {:>6.2}   {}",
                format!("chromium: {}", t.name),
                loss.label(),
                d,
                u,
                down / native_down.max(1e-9),
                up / native_up.max(1e-9),
                notes(&runs)
            );
            profiles.push((
                format!("{} at {}", t.name, loss.label()),
                cpu_text(&runs, |r| &r.cpu_down),
                cpu_text(&runs, |r| &r.cpu_up),
            ));
        }
    }
    println!("\nwhere the time goes (CPU s):");
    for (name, down, up) in profiles {
        println!("  {name}\n    down: {down}\n    up:   {up}");
    }
    drop(gateway);
}
