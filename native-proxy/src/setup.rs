//! Turns a configuration into a running engine: node, stack, UDP socket,
//! metrics and capture. Shared by the client and the gateway.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::{RngCore, SeedableRng};
use underpass_core::config::Endpoint;
use underpass_core::{Instant, Node, NodeOptions};
use underpass_stack::{Policy, Stack, StackOptions};

use crate::cli::Common;
use crate::config::ProxyConfig;
use crate::metrics::{self, Metrics};
use crate::pcap::Pcap;
use crate::tunnel::{DynamicEndpoint, Engine, Tunnel};
use crate::udp::UdpIo;
use crate::Failure;

/// What the engine is for.
pub enum Role {
    /// Dials its peers; names resolve through the tunnel.
    Client,
    /// Answers its peers and accepts any flow `policy` allows.
    Gateway(Policy),
}

pub const DEFAULT_MTU: u16 = 1420;

/// Builds the engine of `cfg` and starts `--metrics`; the loop itself is
/// started by the caller with [`Tunnel::run`].
pub async fn build(cfg: &ProxyConfig, role: Role, common: &Common) -> Result<Tunnel, Failure> {
    let iface = &cfg.wg.interface;
    if iface.addresses.is_empty() {
        return Err(Failure::usage(format!(
            "line {}: [Interface] needs an Address: the tunnel address the peer routes to this side (e.g. Address = 10.0.0.2/32)",
            iface.line
        )));
    }
    let gateway = matches!(role, Role::Gateway(_));
    let port = match (iface.listen_port, gateway) {
        (Some(p), _) => p,
        (None, false) => 0,
        (None, true) => {
            return Err(Failure::usage(format!(
            "line {}: a gateway needs ListenPort in [Interface], so its peers know where to send",
            iface.line
        )))
        }
    };
    let mtu = iface.mtu.unwrap_or(DEFAULT_MTU);
    let epoch = std::time::Instant::now();
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let rng = rand::rngs::StdRng::from_entropy();
    let mut node = Node::new(
        iface.private_key.clone(),
        NodeOptions {
            mtu: usize::from(mtu),
            ..NodeOptions::default()
        },
        Box::new(rng),
        Instant::ZERO,
        wall,
    );
    let mut dynamic = Vec::new();
    for peer in &cfg.wg.peers {
        let endpoint = match &peer.endpoint {
            None => None,
            Some(Endpoint::Addr(a)) => Some(*a),
            Some(Endpoint::Host { host, port }) => {
                let resolved = resolve_endpoint(host, *port).await;
                if resolved.is_none() {
                    tracing::warn!(%host, "peer endpoint does not resolve now; will try again");
                }
                resolved
            }
        };
        let id = node
            .add_peer(peer.options(endpoint), Instant::ZERO)
            .map_err(|e| Failure::usage(format!("line {}: {e}", peer.line)))?;
        if let Some(Endpoint::Host { host, port }) = &peer.endpoint {
            dynamic.push(DynamicEndpoint {
                peer: id,
                host: host.clone(),
                port: *port,
            });
        }
    }
    let mut options = StackOptions::new(iface.addresses.clone(), rand::rngs::OsRng.next_u64());
    options.mtu = usize::from(mtu);
    options.dns_servers = iface.dns.clone();
    options.tcp.max_connections = common.max_connections;
    options.tcp.max_connections_per_source = common.max_connections_per_client;
    options.tcp.congestion = common.congestion.into();
    options.buffer_budget = common.buffer_budget.saturating_mul(1 << 20);
    let mut stack = Stack::new(options, Instant::ZERO)
        .map_err(|e| Failure::usage(format!("[Interface]: {e}")))?;
    if let Role::Gateway(policy) = role {
        stack.set_accept_any(policy);
    }
    let udp = UdpIo::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
        .map_err(|e| Failure::runtime(format!("cannot bind the WireGuard UDP port {port}: {e}")))?;
    let (send_buf, recv_buf) = udp.buffer_sizes();
    tracing::debug!(
        local = %udp.local_addr().map_err(Failure::runtime)?,
        gso_segments = udp.max_segments(),
        send_buf,
        recv_buf,
        "WireGuard socket"
    );
    let metrics = Arc::new(Metrics::default());
    metrics.dials_out.store(!gateway, Ordering::Relaxed);
    let mut engine = Engine::new(node, stack, udp, epoch, metrics.clone());
    if let Some(path) = &common.pcap {
        engine.pcap = Some(
            Pcap::create(path)
                .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?,
        );
    }
    let tunnel = Tunnel::new(engine);
    tunnel.set_dynamic_endpoints(dynamic);
    if let Some(addr) = common.metrics {
        let listener = metrics::bind(addr)
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen for --metrics on {addr}: {e}")))?;
        tracing::info!("metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, metrics));
    }
    Ok(tunnel)
}

async fn resolve_endpoint(host: &str, port: u16) -> Option<SocketAddr> {
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(Duration::from_secs(10), lookup).await {
        Ok(Ok(mut addrs)) => addrs.next(),
        _ => None,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
