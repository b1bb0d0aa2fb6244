//! What a tunnel-running mode is told, as plain values: the command line
//! (`cli::Common`) converts into [`TunnelOptions`], and the modes that
//! build a tunnel without one (quickstart's gateway, the relay's demo)
//! fill it in directly, so nothing below the command line knows clap.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Half of 1,024 descriptors (a hard limit some systems still have),
/// leaving the rest to clients that got through.
pub const DEFAULT_MAX_NEGOTIATING: u64 = 512;

/// The limits and extras of one tunnel; see `cli::Common` for what each
/// flag means.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// Where metrics and health checks are served.
    pub metrics: Option<SocketAddr>,
    /// Where the inner IP packets are written (pcap).
    pub pcap: Option<PathBuf>,
    /// TCP connections through the tunnel at once.
    pub max_connections: usize,
    /// Gateway: TCP connections at once from one client.
    pub max_connections_per_client: usize,
    /// Proxy clients still negotiating at once.
    pub max_negotiating: u64,
    /// Gateway: UDP flows at once.
    pub max_udp_flows: usize,
    /// Gateway: UDP flows at once from one client.
    pub max_udp_flows_per_client: usize,
    /// TCP buffer memory for all connections together, MiB.
    pub buffer_budget: usize,
    /// Congestion control of the connections through the tunnel.
    pub congestion: underpass_stack::Congestion,
    /// Where the WireGuard UDP socket binds (all interfaces when `None`).
    pub udp_bind: Option<IpAddr>,
}

impl Default for TunnelOptions {
    /// The stack's defaults (the flags' defaults too).
    fn default() -> Self {
        TunnelOptions {
            metrics: None,
            pcap: None,
            max_connections: underpass_stack::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: underpass_stack::DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            max_negotiating: DEFAULT_MAX_NEGOTIATING,
            max_udp_flows: underpass_stack::DEFAULT_MAX_UDP_FLOWS,
            max_udp_flows_per_client: underpass_stack::DEFAULT_MAX_UDP_FLOWS_PER_SOURCE,
            buffer_budget: underpass_stack::DEFAULT_BUFFER_BUDGET >> 20,
            congestion: underpass_stack::Congestion::Bbr,
            udp_bind: None,
        }
    }
}
