//! Turns a configuration into a running engine: node, stack, UDP socket,
//! metrics and capture. Shared by the client and the gateway.

// Unsafe only for libc calls, each block with its SAFETY comment.
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use underpass_core::config::Endpoint;
use underpass_stack::{Endpoints, Engine, EngineOptions, Policy, StackOptions};

use crate::config::ProxyConfig;
use crate::metrics::{self, Metrics};
use crate::options::TunnelOptions;
use crate::pcap::Pcap;
use crate::tunnel::Tunnel;
use crate::udp::UdpIo;
use crate::Failure;

/// What the engine is for.
pub enum Role {
    /// Dials its peers; names resolve through the tunnel.
    Client,
    /// Answers its peers and accepts any flow `policy` allows.
    Gateway(Policy),
}

/// wireproxy's default `CheckAliveInterval`, seconds.
const DEFAULT_CHECK_ALIVE_INTERVAL: u16 = 5;

/// Builds the engine of `cfg` and starts `--metrics`; the loop itself is
/// started by the caller with [`Tunnel::run`].
pub async fn build(
    cfg: &ProxyConfig,
    role: Role,
    common: &TunnelOptions,
) -> Result<Tunnel, Failure> {
    let iface = &cfg.wg.interface;
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
    let epoch = std::time::Instant::now();
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut resolved = Vec::with_capacity(cfg.wg.peers.len());
    for peer in &cfg.wg.peers {
        resolved.push(match &peer.endpoint {
            Some(Endpoint::Host { host, port }) => {
                let addr = resolve_endpoint(host, *port).await;
                if addr.is_none() {
                    tracing::warn!(%host, "peer endpoint does not resolve now; will try again");
                }
                addr
            }
            _ => None,
        });
    }
    let tune = |options: &mut StackOptions| {
        options.tcp.max_connections = common.max_connections;
        options.tcp.max_connections_per_source = common.max_connections_per_client;
        options.udp.max_flows = common.max_udp_flows;
        options.udp.max_flows_per_source = common.max_udp_flows_per_client;
        options.tcp.congestion = common.congestion;
        options.buffer_budget = common.buffer_budget.saturating_mul(1 << 20);
    };
    let mut engine = Engine::from_config(
        &cfg.wg,
        Endpoints::Resolved(&resolved),
        tune,
        EngineOptions::default(),
        Box::new(rand::rngs::StdRng::from_entropy()),
        wall,
    )
    .map_err(|e| Failure::usage(e.to_string()))?;
    if let Role::Gateway(policy) = role {
        engine.stack_mut().set_accept_any(policy);
    }
    let bind = common.udp_bind.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let udp = UdpIo::bind(SocketAddr::new(bind, port))
        .map_err(|e| Failure::runtime(format!("cannot bind the WireGuard UDP port {port}: {e}")))?;
    let (send_buf, recv_buf) = udp.buffer_sizes();
    tracing::debug!(
        local = %udp.local_addr().map_err(Failure::runtime)?,
        gso_segments = udp.max_segments(),
        send_buf,
        recv_buf,
        "WireGuard socket"
    );
    let check_alive = (!gateway && !iface.check_alive.is_empty()).then(|| {
        let seconds = iface
            .check_alive_interval
            .unwrap_or(DEFAULT_CHECK_ALIVE_INTERVAL);
        metrics::CheckAlive::new(&iface.check_alive, Duration::from_secs(seconds.into()))
    });
    let mut metrics = Metrics::default();
    metrics.check_alive = check_alive;
    let metrics = Arc::new(metrics);
    metrics.dials_out.store(!gateway, Ordering::Relaxed);
    if let Some(path) = &common.pcap {
        let pcap = Pcap::create(path)
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
        engine.set_tap(Box::new(pcap));
    }
    let tunnel = Tunnel::new(engine, udp, epoch, metrics.clone(), cfg.resolve);
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

/// The soft limit on open files the process started with, before
/// [`raise_fd_limit`]; commands `exec` starts get it back.
static STARTING_FD_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Raises the soft limit on open files to the hard limit. Every flow takes
/// a descriptor or two, and the soft limit is often 1,024 (systemd's
/// default) while the hard one is far higher: 1,024 descriptors are a
/// few hundred proxied connections. Called first thing in every mode.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        let _ = STARTING_FD_LIMIT.set(limit.rlim_cur);
        if limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            // macOS refuses an unlimited soft limit; the rest is a kernel
            // that knows better.
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot raise the open-file limit"
            );
        }
    }
}

/// The soft limit on open files now.
pub fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return Some(limit.rlim_cur);
        }
    }
    None
}

/// Gives a command the soft limit on open files the process started with:
/// programs that use select(2) break on descriptors past 1,024, so the
/// raised limit is ours alone.
pub fn restore_fd_limit_for(command: &mut tokio::process::Command) {
    #[cfg(unix)]
    if let Some(&soft) = STARTING_FD_LIMIT.get() {
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only getrlimit and setrlimit, which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                    && limit.rlim_cur != soft as libc::rlim_t
                {
                    limit.rlim_cur = soft as libc::rlim_t;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
                Ok(())
            });
        }
    }
}

/// Warns at start when the open-file limit is below what a gateway's
/// limits let its flows take (a host socket each), so that a flood of
/// flows fails on descriptors rather than on the limits.
pub fn check_fd_limit(common: &TunnelOptions) {
    let Some(limit) = fd_limit() else {
        return;
    };
    // A TCP flow holds one host socket, a UDP flow one; a few dozen more
    // for the process itself and the metrics.
    let wanted = common.max_connections as u64 + common.max_udp_flows as u64 + 64;
    if limit < wanted {
        tracing::warn!(
            limit,
            wanted,
            "the open-file limit (ulimit -n) is below --max-connections + --max-udp-flows: \
             past it new flows fail; raise the hard limit (LimitNOFILE= in systemd) or lower those"
        );
    }
}
