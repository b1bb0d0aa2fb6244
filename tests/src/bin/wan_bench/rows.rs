//! The rows: each tunnel started fresh behind its own relay for a path,
//! its iperf3 runs, and the relay's counts for each run.

use std::net::{SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use underpass_tests::bench::{Iperf, Kill};
use underpass_tests::impair::{ImpairRelay, Tally};
use underpass_tests::interop::{Peer, ReferenceClient};
use underpass_tests::{free_port, Pair, PairOptions, Process};

use crate::sender_info::{Probe, Startup};
use crate::{Bench, Dir, Path, Row};

/// The relay's CPU (main.rs says why there).
const RELAY_CPU: Option<usize> = Some(0);
/// The iperf3 server's port in the namespace.
const PEER_PORT: u16 = 5201;

/// Who sends the measured bytes over the path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Kernel TCP with this congestion control.
    Kernel(&'static str),
    /// underpass's own stack.
    Underpass,
}

/// One iperf3 run and what the relay did meanwhile.
pub struct Run {
    pub row: Row,
    pub sender: Sender,
    pub dir: Dir,
    pub streams: u32,
    pub mbit: f64,
    /// Why there is no figure (the run counts as 0).
    pub failed: Option<String>,
    /// Whether a kernel BBR sender left Startup.
    pub startup: Startup,
}

/// The iperf3 servers: in the namespace behind the peer, and on the host
/// behind the underpass gateway; on CPU 0.
pub struct Servers {
    ns: String,
    server_ip: String,
    pub host_port: u16,
    processes: Vec<Kill>,
    pub log: std::path::PathBuf,
}

impl Servers {
    pub fn start(peer: &Peer) -> Servers {
        let mut s = Servers {
            ns: format!("underpass-{}", peer.id),
            server_ip: peer.tunnel_ip(),
            host_port: free_port(),
            processes: Vec::new(),
            log: peer.dir.path("iperf3-servers.log"),
        };
        s.restart();
        s
    }

    /// Kills both and starts them again: after a run with no result one
    /// may still be stuck in it, and would refuse the next.
    pub fn restart(&mut self) {
        self.processes.clear();
        let port = PEER_PORT.to_string();
        let host_port = self.host_port.to_string();
        let ns = ["ip", "netns", "exec", &self.ns];
        let peer_side = [&ns[..], &["taskset", "-c", "0", "iperf3", "-s"]].concat();
        let host = ["taskset", "-c", "0", "iperf3", "-s"];
        for (command, ip, port) in [
            (&peer_side[..], self.server_ip.as_str(), &port),
            (&host[..], "127.0.0.1", &host_port),
        ] {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            let child = Command::new(command[0])
                .args(&command[1..])
                .args(["-B", ip, "-p", port])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("iperf3 -s");
            self.processes.push(Kill(child));
        }
        let ns_shell = [&ns[..], &["sh", "-c"]].concat();
        wait_listening(&ns_shell, PEER_PORT);
        wait_listening(&["sh", "-c"], self.host_port);
    }
}

/// Waits until a TCP port listens (`ss` run with `shell`): a connection
/// to find out would reach iperf3's server, which takes it for a test.
fn wait_listening(shell: &[&str], port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = Command::new(shell[0])
            .args(&shell[1..])
            .arg(format!("ss -Hltn 'sport = :{port}' | grep -q ."))
            .status()
            .is_ok_and(|s| s.success());
        if listening {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A row's tunnel, up for one path.
enum Tunnel {
    Underpass {
        _client: Process,
        relay: ImpairRelay,
        port: u16,
    },
    Gateway {
        pair: Box<Pair>,
        port: u16,
    },
    Reference {
        _client: ReferenceClient,
        relay: ImpairRelay,
    },
}

impl Tunnel {
    /// Starts `row` behind a fresh relay for `path`; a panic on the way
    /// (a handshake that never completed) is an error, not the end of the
    /// benchmark.
    fn start(b: &Bench, row: Row, path: &Path, seed: u64) -> Result<Tunnel, String> {
        catch_unwind(AssertUnwindSafe(|| {
            Self::start_or_panic(b, row, path, seed)
        }))
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })?
    }

    fn start_or_panic(b: &Bench, row: Row, path: &Path, seed: u64) -> Result<Tunnel, String> {
        let impairment = path.impairment();
        let peer = &b.peer;
        let relay = || ImpairRelay::start_on(peer.endpoint(), impairment, seed, RELAY_CPU);
        Ok(match row {
            Row::Underpass => {
                let relay = relay();
                let port = free_port();
                let name = format!("underpass-{seed}");
                let config = peer.dir.write(
                    &format!("{name}.conf"),
                    &peer.client_config_via(
                        &peer.client,
                        2,
                        relay.addr,
                        "",
                        &format!(
                            "[TCPClientTunnel]\nBindAddress = 127.0.0.1:{port}\nTarget = {}:{PEER_PORT}\n",
                            peer.tunnel_ip()
                        ),
                    ),
                );
                let args = ["--config", config.to_str().unwrap()];
                let mut client = Process::start_on(Some(1), &name, &peer.dir, &args);
                client.wait_for_log("handshake completed", Duration::from_secs(30));
                wait_listening(&["sh", "-c"], port);
                Tunnel::Underpass {
                    _client: client,
                    relay,
                    port,
                }
            }
            Row::Gateway => {
                let port = free_port();
                let pair = Pair::start(
                    "wan-gateway",
                    PairOptions {
                        gateway_cpu: Some(0),
                        client_cpu: Some(1),
                        relay_cpu: RELAY_CPU,
                        impair: Some((impairment, seed)),
                        extra_client: format!(
                            "\n[TCPClientTunnel]\nBindAddress = 127.0.0.1:{port}\nTarget = 127.0.0.1:{}\n",
                            b.servers.host_port
                        ),
                        ..Default::default()
                    },
                );
                Tunnel::Gateway {
                    pair: Box::new(pair),
                    port,
                }
            }
            Row::Reference => {
                let relay = relay();
                let client = ReferenceClient::start(peer, &b.reference_keys, 3, relay.addr);
                // The handshake done and the path carrying TCP: the echo
                // server behind the peer answers.
                let echo =
                    SocketAddr::from((peer.tunnel_ip().parse::<std::net::Ipv4Addr>().unwrap(), 7));
                let deadline = Instant::now() + Duration::from_secs(30);
                while TcpStream::connect_timeout(&echo, Duration::from_secs(3)).is_err() {
                    if Instant::now() > deadline {
                        return Err("the reference client reached nothing in 30 s".into());
                    }
                }
                // A connection's handshake now takes one round trip: the
                // path's, as the relay was told, plus the tunnel's own.
                let started = Instant::now();
                if TcpStream::connect_timeout(&echo, Duration::from_secs(3)).is_ok() {
                    println!(
                        "  reference: a TCP connect through the tunnel takes {:.2} ms",
                        started.elapsed().as_secs_f64() * 1e3
                    );
                }
                Tunnel::Reference {
                    _client: client,
                    relay,
                }
            }
        })
    }

    fn relay(&self) -> &ImpairRelay {
        match self {
            Tunnel::Underpass { relay, .. } | Tunnel::Reference { relay, .. } => relay,
            Tunnel::Gateway { pair, .. } => pair.relay.as_ref().expect("the pair's relay"),
        }
    }

    /// Where iperf3's client connects.
    fn iperf_to(&self, peer: &Peer) -> (String, u16) {
        match self {
            Tunnel::Underpass { port, .. } | Tunnel::Gateway { port, .. } => {
                ("127.0.0.1".into(), *port)
            }
            Tunnel::Reference { .. } => (peer.tunnel_ip(), PEER_PORT),
        }
    }
}

/// Who sends in `row` going `dir`: one entry per kernel algorithm where
/// the kernel does.
fn senders(row: Row, dir: Dir, algorithms: &[&'static str]) -> Vec<Sender> {
    match (row, dir) {
        (Row::Reference, _) | (Row::Underpass, Dir::Down) => {
            algorithms.iter().map(|a| Sender::Kernel(a)).collect()
        }
        (Row::Underpass, Dir::Up) | (Row::Gateway, _) => vec![Sender::Underpass],
    }
}

/// Every run of `row` on `path`, its tunnel started fresh for them.
pub fn measure_path(b: &mut Bench, row: Row, path: &Path, path_index: u64) -> Vec<Run> {
    let seed = path_index * 8 + row as u64 + 1;
    // A server still in a test of the row before (its client gone before
    // the close reached it) would refuse this row's first run.
    b.servers.restart();
    let tunnel = Tunnel::start(b, row, path, seed);
    if let Err(why) = &tunnel {
        println!("  {}: did not come up: {why}", row_name(row));
    }
    let mut runs = Vec::new();
    for &streams in &b.streams.clone() {
        for &dir in &b.dirs.clone() {
            for sender in senders(row, dir, &b.algorithms) {
                let mut run = Run {
                    row,
                    sender,
                    dir,
                    streams,
                    mbit: 0.0,
                    failed: None,
                    startup: Startup::Unknown,
                };
                match &tunnel {
                    Ok(tunnel) => measure(b, tunnel, &mut run),
                    Err(_) => run.failed = Some("the tunnel did not come up".into()),
                }
                runs.push(run);
            }
        }
    }
    runs
}

/// One iperf3 run through `tunnel`, printed with the relay's counts.
fn measure(b: &mut Bench, tunnel: &Tunnel, run: &mut Run) {
    let relay = tunnel.relay();
    let (up0, down0, cpu0) = (relay.up.tally(), relay.down.tally(), relay.cpu_seconds());
    let tun0 = tun_counts(&b.peer);
    let started = Instant::now();
    let (host, port) = tunnel.iperf_to(&b.peer);
    let iperf = Iperf {
        streams: run.streams,
        seconds: b.seconds,
        reverse: run.dir == Dir::Down,
        // Where underpass sends, the kernel carries only the loopback leg.
        congestion: Some(match run.sender {
            Sender::Kernel(a) => a,
            Sender::Underpass => b.algorithms[0],
        }),
    };
    // What a kernel sender says about the run, read until near its end.
    let (sender, dir, netns) = (run.sender, run.dir, b.peer.netns());
    let until = Duration::from_secs_f64((f64::from(b.seconds) - 1.5).max(0.5));
    let start_probe = || match sender {
        Sender::Kernel(_) => Some(match dir {
            Dir::Down => Probe::start(Some(netns.clone()), PEER_PORT, true, until),
            Dir::Up => Probe::start(None, PEER_PORT, false, until),
        }),
        Sender::Underpass => None,
    };
    let mut probe = start_probe();
    let mut result = iperf.run(&host, port);
    if matches!(&result, Err(why) if why.contains("busy")) {
        // The server still thought itself in the last run (its client
        // gone unnoticed): a fresh one and the run again, rather than a
        // cell without a figure. (The first probe is left to end alone.)
        println!(
            "      iperf3's server was still busy with the last run: restarted it, running again"
        );
        b.servers.restart();
        probe = start_probe();
        result = iperf.run(&host, port);
    }
    match result {
        Ok((mbit, _)) => run.mbit = mbit,
        Err(why) => run.failed = Some(why),
    }
    let secs = started.elapsed().as_secs_f64();
    let (up, down) = (relay.up.tally() - up0, relay.down.tally() - down0);
    let cpu = 100.0 * (relay.cpu_seconds() - cpu0) / secs;
    println!(
        "  {:<26} {:<4} x{:<2} {:<24} {:>9}",
        row_name(run.row),
        dir_name(run.dir),
        run.streams,
        sender_name(run.sender),
        match &run.failed {
            None => format!("{:.1} Mbit/s", run.mbit),
            Some(why) => format!("0 Mbit/s: no result ({why})"),
        }
    );
    print_relay("client -> peer", &up, None);
    print_relay("peer -> client", &down, Some(cpu));
    if let Some(probe) = probe {
        let reading = probe.finish();
        println!("      kernel sender: {}", reading.line);
        if reading.startup != Startup::Unknown {
            println!("      kernel sender: {}", reading.startup);
        }
        run.startup = reading.startup;
    }
    if run.row != Row::Gateway {
        let (sent, dropped) = tun_counts(&b.peer);
        match (sent.checked_sub(tun0.0), dropped.checked_sub(tun0.1)) {
            (Some(sent), Some(dropped)) => println!(
                "      peer's TUN: {dropped} of {sent} packets dropped before wireguard-go read them (loss the relay does not count)"
            ),
            _ => println!("      peer's TUN: its counters went back (the peer was restarted?)"),
        }
    }
    if run.failed.is_some() {
        let log = std::fs::read_to_string(&b.servers.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        for line in tail.iter().rev() {
            println!("      iperf3 servers' log: {line}");
        }
        b.servers.restart();
    }
}

/// Packets the kernel handed the wireguard-go peer's TUN, and those it
/// dropped because wireguard-go had not read the queue yet.
fn tun_counts(peer: &Peer) -> (u64, u64) {
    let read = |what: &str| -> u64 {
        let path = format!("/sys/class/net/wgp{}/statistics/{what}", peer.id);
        let out = peer.exec(&["cat", &path]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    (read("tx_packets"), read("tx_dropped"))
}

fn print_relay(way: &str, t: &Tally, cpu: Option<f64>) {
    print!("      relay {way}: {t}");
    match cpu {
        Some(cpu) => println!("; relay CPU {cpu:.0}% of a core"),
        None => println!(),
    }
}

pub fn row_name(row: Row) -> &'static str {
    match row {
        Row::Underpass => "underpass -> wireguard-go",
        Row::Gateway => "underpass -> gateway",
        Row::Reference => "reference",
    }
}

pub fn dir_name(dir: Dir) -> &'static str {
    match dir {
        Dir::Down => "down",
        Dir::Up => "up",
    }
}

pub fn sender_name(sender: Sender) -> String {
    match sender {
        Sender::Kernel(a) => format!("kernel {a} sends"),
        Sender::Underpass => "underpass sends".into(),
    }
}
