//! What a stack is built from: its addresses and MTU, how its TCP
//! sockets are set up (buffers, congestion control, limits), its UDP
//! limits and its memory budget. The defaults were chosen by measurement;
//! see BENCHMARKS.md.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::udp::UdpOptions;

/// How TCP sockets are set up. The defaults were chosen by measurement;
/// see BENCHMARKS.md.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// Receive buffer per connection: the largest window a connection may
    /// grow to. Memory is used only as data waits in it.
    pub rx_buffer: usize,
    /// The receive window a connection starts with; it grows with what
    /// the application reads per round trip, up to `rx_buffer`.
    pub initial_window: usize,
    /// Send buffer per connection: the most a connection may have written
    /// and not yet acknowledged.
    pub tx_buffer: usize,
    /// Which congestion controller our side sends with.
    pub congestion: Congestion,
    /// Nagle's algorithm (off: small writes leave at once).
    pub nagle: bool,
    /// Delayed ACK; `None` acknowledges every segment at once.
    pub ack_delay: Option<Duration>,
    /// How long a connection may stay unanswered while connecting.
    pub connect_timeout: Duration,
    /// How long an established connection with data to send may go without
    /// hearing from its peer (a laptop asleep, a gateway gone).
    pub idle_timeout: Duration,
    /// TCP keepalive interval; `None`: no keepalives.
    pub keepalive: Option<Duration>,
    /// Connections open at once (ours and accepted); past it, connecting
    /// fails with [`crate::TcpError::TooMany`] and accept-any answers SYNs
    /// with RST. Each costs up to `rx_buffer + tx_buffer` of memory.
    pub max_connections: usize,
    /// Accept-any connections open at once from one source address (one
    /// gateway client), so one client cannot take them all.
    pub max_connections_per_source: usize,
}

/// Congestion control for our side's sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// None at all: only the peer's window limits what is sent (tests and
    /// comparisons).
    None,
    /// CUBIC with HyStart++ (RFC 9438, 9406), as Linux by default: backs
    /// off at every loss, so random loss on a long path costs it most of
    /// its rate.
    Cubic,
    /// BBR (v1, as Linux's `bbr`): paced at the measured bottleneck rate,
    /// barely slowed by random loss.
    Bbr,
}

/// [`TcpOptions::max_connections`] unless the host says otherwise (the
/// binary's `--max-connections` defaults to it).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// [`TcpOptions::max_connections_per_source`]'s default.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 4096;
/// [`StackOptions::buffer_budget`]'s default, bytes.
pub const DEFAULT_BUFFER_BUDGET: usize = 512 << 20;

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            rx_buffer: 16 << 20,
            initial_window: 256 * 1024,
            tx_buffer: 16 << 20,
            congestion: Congestion::Bbr,
            nagle: false,
            ack_delay: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        }
    }
}

/// How the stack is set up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The tunnel addresses (the config's `Address`).
    pub addresses: Vec<IpNet>,
    /// Largest IP packet (the tunnel MTU).
    pub mtu: usize,
    /// TCP connections: buffers, timers, limits.
    pub tcp: TcpOptions,
    /// How many UDP flows a gateway's accept-any takes in.
    pub udp: UdpOptions,
    /// DNS servers reached through the tunnel (the config's `DNS`).
    pub dns_servers: Vec<IpAddr>,
    /// What all TCP connections together may claim for buffers (receive
    /// windows and data queued to send): at the budget, windows stop
    /// growing; nothing is dropped. See the `memory` module.
    pub buffer_budget: usize,
    /// Outbound packets held before smoltcp is made to wait for a drain.
    /// Small, so the packets smoltcp writes are still in the CPU's cache
    /// when they are encrypted: 1,024 (1.5 MB of packets) spilled a 512 KiB
    /// L2 and cost a quarter of the gateway pair's throughput; 32-128 were
    /// equally fast, 256 already slower (BENCHMARKS.md).
    pub max_outbound_packets: usize,
    /// Randomness for TCP sequence numbers, ports, DNS ids and hash seeds;
    /// different every run: draw it from the host's generator with
    /// `underpass_core::random::seed_from` (a test passes a fixed one).
    pub seed: u64,
}

impl StackOptions {
    /// Options with the defaults for `addresses`, randomised by `seed`.
    pub fn new(addresses: Vec<IpNet>, seed: u64) -> Self {
        StackOptions {
            addresses,
            mtu: usize::from(underpass_core::DEFAULT_MTU),
            tcp: TcpOptions::default(),
            udp: UdpOptions::default(),
            dns_servers: Vec::new(),
            buffer_budget: DEFAULT_BUFFER_BUDGET,
            max_outbound_packets: 64,
            seed,
        }
    }
}
