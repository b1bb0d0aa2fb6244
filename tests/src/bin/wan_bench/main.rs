//! TCP throughput through the tunnel over emulated wide-area paths, side
//! by side with the reference, in one run (run by hand, as root; not in
//! CI). Every row goes through the same kind of relay
//! (underpass_tests::impair) with the same path: a round-trip time (half
//! each way), random loss per datagram, and a bottleneck (a rate and a
//! drop-tail queue of one bandwidth-delay product, at least 64 KiB), each
//! direction on its own:
//!
//! - `underpass`: underpass client -> wireguard-go peer in a network
//!   namespace, iperf3 through a `[TCPClientTunnel]` to the namespace;
//! - `gateway`: underpass client -> underpass gateway, iperf3 to the host
//!   behind the gateway;
//! - `reference`: wireguard-go's own client on a TUN (kernel TCP) -> the
//!   same wireguard-go peer.
//!
//! Who sends matters as much as the tunnel. The reference's sender is the
//! kernel both ways; the underpass row's download is sent by the peer's
//! kernel (the iperf3 server in the namespace), its upload by underpass's
//! stack; the gateway row's both ways by underpass's stacks (the kernel
//! only carries the loopback legs to iperf3). `--kernel-cc` sets the
//! algorithm of every kernel sender (iperf3 `-C`, which the server takes
//! too). With `both` (the default) each reference is run with CUBIC (most
//! distributions' default) and with BBR (this machine's), and so is the
//! underpass download, so that it is compared with the reference whose
//! sender is the same: its ratio then says what the tunnel and underpass's
//! receiving end cost. Figures underpass sent itself are compared with
//! every reference. Where a kernel sends with BBR, its state is read
//! through the run: a figure marked `S` is from a run whose sender never
//! left BBR's Startup (with Debian's 4 MiB send buffer a Linux BBR v1
//! sender at 50 ms and more may not), so two figures compare like with
//! like only if both are marked or neither is.
//!
//!     cargo build --release -p underpass-tests --bin wan_bench
//!     target/release/wan_bench                     # the whole matrix (~2 h)
//!     UNDERPASS_BIN=/tmp/underpass-base target/release/wan_bench \
//!         --rtt 2,10,50,100,200 --loss 0 --rate 300 --streams 1
//!     target/release/wan_bench --relay-ceiling     # the relay alone (~2 min)
//!
//! Without `UNDERPASS_BIN` the binary is built fresh (release). Each
//! underpass client and gateway, reference client and relay is started
//! fresh for each path, so no state crosses from one path to the next; the
//! wireguard-go peer and the iperf3 servers stay (the servers are
//! restarted after a run that gave no result).
//!
//! Pinning: the peer side (wireguard-go peer, the iperf3 servers, the
//! underpass gateway) on CPU 0, the client side (the tunnel client under
//! test, the iperf3 client) on CPU 1, as interop_bench does. The relay's
//! two threads run on CPU 0 at real-time priority: on CPU 1 they would
//! charge the network's work to the client being measured, while CPU 0's
//! load falls on every row alike; and ahead of everything else there, so
//! that the machine's other work (it is shared) delays the peer side, as a
//! busy host would, rather than the path, whose delay and rate must stay
//! what they were told. Measured with `--relay-ceiling` on this 2-core VM
//! while another build ran: 1 Gbit/s of 1,452-byte datagrams each way at
//! once (86,000 a second each way) passes with none dropped at 72-77% of
//! the core; as much as the ends could send, 1.05-1.26 Gbit/s each way,
//! passed too (65-88%); a 1,000 Mbit/s bottleneck gives 1,000; single
//! datagrams take the path's RTT + 0.03-0.2 ms (median). Paths without a
//! bottleneck (`--rate 0`) are capped near there, and each run prints the
//! relay's CPU so a reader sees when it was near its limit.
//!
//! A bottleneck's rate counts whole WireGuard datagrams: at 1,452 bytes
//! each for 1,368-1,380 bytes of TCP payload, 300 Mbit/s carries at most
//! ~283 Mbit/s of what iperf3 counts.

mod ceiling;
mod report;
mod rows;
mod sender_info;

use std::time::Duration;

use clap::{Parser, ValueEnum};
use underpass_tests::bench::{ready_for_interop, sh};
use underpass_tests::impair::Impairment;
use underpass_tests::interop::Peer;
use underpass_tests::keys;

use rows::{measure_path, Servers};

/// Throughput through underpass and through wireguard-go's own client
/// over emulated wide-area paths (run as root). Every list option takes
/// comma-separated values; the defaults are the whole matrix.
#[derive(Parser)]
struct Options {
    /// Round-trip times, ms (half each way).
    #[arg(long, value_delimiter = ',', default_values_t = [2.0, 10.0, 50.0, 100.0, 200.0])]
    rtt: Vec<f64>,
    /// Random loss, probability per datagram, each direction.
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 0.001, 0.01])]
    loss: Vec<f64>,
    /// Bottleneck rate, Mbit/s each direction; 0: none.
    #[arg(long, value_delimiter = ',', default_values_t = [300.0, 0.0])]
    rate: Vec<f64>,
    /// The bottleneck's queue, bytes (default: one bandwidth-delay
    /// product, at least 64 KiB).
    #[arg(long)]
    queue: Option<usize>,
    /// Directions: down (the peer side sends) and up.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Dir::Down, Dir::Up])]
    dir: Vec<Dir>,
    /// Parallel TCP streams per run.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    streams: Vec<u32>,
    /// Rows to run.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Row::Underpass, Row::Gateway, Row::Reference])]
    rows: Vec<Row>,
    /// Congestion control of every kernel sender.
    #[arg(long, value_enum, default_value_t = KernelCc::Both)]
    kernel_cc: KernelCc,
    /// Seconds per iperf3 run (per line with --relay-ceiling).
    #[arg(long, default_value_t = 12)]
    seconds: u32,
    /// Measure the relay alone instead (no root needed).
    #[arg(long)]
    relay_ceiling: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Dir {
    Down,
    Up,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Row {
    Underpass,
    Gateway,
    Reference,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelCc {
    Cubic,
    Bbr,
    Both,
}

impl KernelCc {
    fn algorithms(self) -> Vec<&'static str> {
        match self {
            KernelCc::Cubic => vec!["cubic"],
            KernelCc::Bbr => vec!["bbr"],
            KernelCc::Both => vec!["cubic", "bbr"],
        }
    }
}

/// One emulated path.
#[derive(Clone, Copy)]
pub struct Path {
    pub rtt_ms: f64,
    pub loss: f64,
    /// Mbit/s, none for no bottleneck.
    pub rate: Option<f64>,
    pub queue: Option<usize>,
}

impl Path {
    pub fn impairment(&self) -> Impairment {
        Impairment {
            queue: self.queue,
            ..Impairment::path(
                Duration::from_secs_f64(self.rtt_ms / 1e3),
                self.loss,
                self.rate,
            )
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RTT {} ms, loss {}%, ", self.rtt_ms, self.loss * 100.0)?;
        match self.rate {
            Some(rate) => write!(
                f,
                "bottleneck {rate} Mbit/s (queue {} B)",
                self.impairment().queue_limit()
            ),
            None => write!(f, "no bottleneck"),
        }
    }
}

/// What a run needs to know besides its path.
pub struct Bench {
    pub peer: Peer,
    pub reference_keys: underpass_tests::Keys,
    pub servers: Servers,
    pub algorithms: Vec<&'static str>,
    pub seconds: u32,
    pub dirs: Vec<Dir>,
    pub streams: Vec<u32>,
}

fn main() {
    let o = Options::parse();
    if o.relay_ceiling {
        ceiling::run(o.seconds);
        return;
    }
    let binary = ready_for_interop();
    let algorithms = o.kernel_cc.algorithms();
    let mut paths = Vec::new();
    for &rtt_ms in &o.rtt {
        for &loss in &o.loss {
            for &rate in &o.rate {
                let rate = (rate > 0.0).then_some(rate);
                paths.push(Path {
                    rtt_ms,
                    loss,
                    rate,
                    queue: o.queue,
                });
            }
        }
    }
    let sysctl = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "WAN benchmark: {} paths, iperf3 {} s per run, underpass binary {}",
        paths.len(),
        o.seconds,
        binary.display()
    );
    println!("load at start: {}", uptime());
    println!(
        "kernel senders use {} (iperf3 -C; the system default is {}); tcp_rmem {}, tcp_wmem {}",
        algorithms.join(" and "),
        sysctl("tcp_congestion_control"),
        sysctl("tcp_rmem"),
        sysctl("tcp_wmem")
    );
    println!("peer side on CPU 0, client side on CPU 1, the relay on CPU 0 at real-time priority");
    report::print_senders(&algorithms);

    let reference_keys = keys();
    let Some(peer) = Peer::start_with("wan", &[(reference_keys.public.clone(), 3)], Some(0)) else {
        std::process::exit(1);
    };
    let servers = Servers::start(&peer);
    let mut b = Bench {
        peer,
        reference_keys,
        servers,
        algorithms,
        seconds: o.seconds,
        dirs: o.dir.clone(),
        streams: o.streams.clone(),
    };
    let mut results = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        println!();
        println!("== path {}/{}: {path} ==", i + 1, paths.len());
        let mut runs = Vec::new();
        for &row in &o.rows {
            runs.extend(measure_path(&mut b, row, path, i as u64));
        }
        report::print_path(path, &runs, &b.algorithms);
        results.push((*path, runs));
    }
    report::print_summary(&results, &b.algorithms);
    println!();
    println!("load at end: {}", uptime());
}

fn uptime() -> String {
    String::from_utf8_lossy(&sh("uptime").stdout)
        .trim()
        .to_string()
}
