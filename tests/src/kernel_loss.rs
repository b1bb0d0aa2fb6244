//! Loss in the kernel, for benchmarks whose traffic is not all UDP: a
//! WebSocket is TCP, and TCP over a lossy path stalls every stream it
//! carries until it repairs the hole, which a relay that drops datagrams
//! cannot show. This machine's kernel has no netem, but nftables can drop
//! a random fraction of packets.
//!
//! The benchmark runs in a network namespace of its own whose loopback
//! looks like a network card (MTU 1500, no segmentation offloads, so one
//! dropped packet is one segment, not a 64 KiB super-packet), and drops
//! at prerouting (a packet dropped on output would fail the sender's
//! `send` with EPERM instead of vanishing). Root only.

use std::io::Write;
use std::process::{Command, Stdio};

/// Set in the re-executed benchmark, inside its namespace.
const INSIDE: &str = "UNDERPASS_BENCH_OWN_NETNS";

/// Runs this program again in a new network namespace (`unshare --net`)
/// and exits with its status, unless this is that run; there, brings up a
/// loopback like a network card. Everything the benchmark starts is on
/// that loopback, so nothing outside sees the rules.
pub fn enter_own_network_namespace() {
    if std::env::var_os(INSIDE).is_some() {
        let lo = "ip link set lo up mtu 1500 && \
                  ethtool -K lo tso off gso off gro off tx-udp-segmentation off";
        let out = crate::bench::sh(lo);
        assert!(
            out.status.success(),
            "{lo}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new("unshare")
        .arg("--net")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(INSIDE, "1")
        .status()
        .expect("unshare (util-linux)");
    if !status.success() {
        eprintln!("the benchmark in its own network namespace failed ({status}); it needs root, nft (nftables) and ethtool");
    }
    std::process::exit(status.code().unwrap_or(1));
}

/// Drops `fraction` of the packets to and from a local port, TCP and UDP
/// alike, while it lives.
pub struct KernelLoss;

const TABLE: &str = "underpass_bench_loss";

impl KernelLoss {
    pub fn on_port(port: u16, fraction: f64) -> KernelLoss {
        assert!(
            std::env::var_os(INSIDE).is_some(),
            "kernel loss only inside the benchmark's own network namespace"
        );
        let per_million = (fraction.clamp(0.0, 1.0) * 1e6).round() as u32;
        let rules = format!(
            "table inet {TABLE} {{\n\
               chain prerouting {{\n\
                 type filter hook prerouting priority 0; policy accept;\n\
                 th dport {port} numgen random mod 1000000 < {per_million} counter drop\n\
                 th sport {port} numgen random mod 1000000 < {per_million} counter drop\n\
               }}\n\
             }}\n"
        );
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (nftables)");
        nft.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let status = nft.wait().unwrap();
        assert!(status.success(), "nft refused the loss rules: {status}");
        KernelLoss
    }

    /// Packets dropped so far, (to the port, from the port).
    pub fn dropped(&self) -> (u64, u64) {
        let out = Command::new("nft")
            .args(["list", "table", "inet", TABLE])
            .output()
            .expect("nft");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut counts = text.lines().filter_map(|l| {
            let after = l.split("counter packets ").nth(1)?;
            after.split_whitespace().next()?.parse::<u64>().ok()
        });
        (counts.next().unwrap_or(0), counts.next().unwrap_or(0))
    }
}

impl Drop for KernelLoss {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", TABLE])
            .status();
    }
}
