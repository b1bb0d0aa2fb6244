//! The userspace gateway: the exit peer that needs no root. It answers its
//! peers' handshakes, accepts any TCP or UDP flow they send to an allowed
//! destination and connects it with an ordinary host socket; DNS queries to
//! its tunnel address are answered by resolving on the host. Which
//! destinations are allowed is the `policy` module's; UDP flows and their
//! limits the `udp` module's. With `PeerToPeer = true` it is also a hub:
//! packets between its peers are routed in the engine (the engine's hub, `underpass_stack::PeerToPeer`).

mod host_addrs;
mod policy;
mod udp;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpStream;
use underpass_stack::{Accepted, ConnId};

use crate::cli::GatewayArgs;
use crate::config::ProxyConfig;
use crate::config_source::{ConfigSource, ServedBy};
use crate::options::TunnelOptions;
use crate::setup::{self, Role};
use crate::splice::splice_host;
use crate::tunnel::{Tunnel, TunnelUdp};
use crate::Failure;
use host_addrs::HostAddrs;
use policy::Destinations;

/// How long connecting to a destination may take before the client is
/// refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: GatewayArgs) -> Result<(), Failure> {
    let cfg = ConfigSource::from_flag(&args.config).load_for(ServedBy::Gateway)?;
    if args.check {
        println!("config OK");
        return Ok(());
    }
    let tunnel = start(&cfg, &(&args.common).into(), Defaults::Public).await?;
    tracing::info!(
        "gateway listening on UDP {}",
        tunnel.local_addr().map_err(Failure::runtime)?
    );
    let engine = tunnel.clone();
    let run = tokio::task::spawn_local(async move { engine.run().await });
    crate::signals::shutdown_signal().await;
    tracing::info!("shutting down");
    tunnel.shutdown();
    let _ = run.await;
    Ok(())
}

/// What a gateway allows when its config has no `AllowedDestinations`
/// (the tunnel's own addresses and subnets are refused either way).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Defaults {
    /// Everything but the host itself (loopback, link-local and the
    /// addresses of its interfaces): the host's own services stay private.
    Public,
    /// Everything, loopback included (quickstart on one machine).
    Everything,
}

/// Builds the gateway's engine, its DNS service and flow handling.
pub async fn start(
    cfg: &ProxyConfig,
    common: &TunnelOptions,
    defaults: Defaults,
) -> Result<Tunnel, Failure> {
    let host = if Destinations::needs_host_addrs(cfg, defaults) {
        let host = HostAddrs::read().map_err(|e| {
            Failure::runtime(format!(
                "cannot read the host's addresses, which a gateway without [Gateway] AllowedDestinations keeps private: {e}"
            ))
        })?;
        tokio::task::spawn_local(host.clone().watch());
        Some(host)
    } else {
        None
    };
    let destinations = Destinations::new(cfg, defaults, host);
    let peer_to_peer = destinations.peer_to_peer();
    let tunnel = setup::build(cfg, Role::Gateway(destinations.into_policy()), common).await?;
    if let Some(allowed) = peer_to_peer {
        tracing::info!("peer-to-peer: packets between peers are routed to the peer whose AllowedIPs hold the destination");
        tunnel.set_peer_to_peer(allowed);
    }
    let udp_flows = udp::HostFlows::new(udp::Limits {
        max_flows: common.max_udp_flows,
        max_flows_per_client: common.max_udp_flows_per_client,
        mtu: usize::from(cfg.wg.interface.mtu.unwrap_or(underpass_core::DEFAULT_MTU)),
    });
    setup::check_fd_limit(common);
    match tunnel.udp_bind_port(Some(53)) {
        Ok(id) => {
            tokio::task::spawn_local(dns_service(tunnel.udp(id)));
        }
        Err(e) => tracing::warn!(error = %e, "no DNS service on the tunnel address"),
    }
    tunnel.on_accept(move |tunnel, accepted| match accepted {
        Accepted::Tcp {
            conn,
            local,
            remote,
        } => {
            tokio::task::spawn_local(tcp_flow(tunnel, conn, local, remote));
        }
        Accepted::Udp { socket, local } => {
            tokio::task::spawn_local(udp::flow(tunnel, socket, local, udp_flows.clone()));
        }
    });
    Ok(tunnel)
}

/// Connects the destination first; only then does the client's SYN get
/// its SYN-ACK, so a refused destination is a refused connection.
async fn tcp_flow(tunnel: Tunnel, conn: ConnId, dst: SocketAddr, src: SocketAddr) {
    // The host reaches an IPv4-mapped address as IPv4, as the policy
    // judged it.
    let host_dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
    let host = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(host_dst)).await;
    let mut host = match host {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%src, %dst, error = %e, "destination refused");
            tunnel.tcp_abort(conn);
            return;
        }
        Err(_) => {
            tracing::debug!(%src, %dst, "destination did not answer");
            tunnel.tcp_abort(conn);
            return;
        }
    };
    let _ = host.set_nodelay(true);
    if tunnel.tcp_accept(conn).is_err() {
        return; // the client gave up meanwhile
    }
    let mut inner = tunnel.stream(conn);
    tracing::debug!(%src, %dst, "gateway TCP flow");
    let _ = splice_host(&mut host, &mut inner, &[]).await;
}

/// Answers A and AAAA queries to the tunnel address by asking the host.
async fn dns_service(socket: TunnelUdp) {
    let socket = Rc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let query = buf[..n].to_vec();
        let socket = socket.clone();
        tokio::task::spawn_local(async move {
            if let Some(reply) = crate::dns_answer::answer(&query).await {
                let _ = socket.send_to(&reply, client).await;
            }
        });
    }
}

/// Runs a gateway for `cfg` on its own thread (its own engine and runtime,
/// as in its own process), with the limits of `common`; `only`, if given,
/// replaces what `defaults` and the config allow. Returns its UDP port
/// once it listens.
pub fn spawn(
    cfg: ProxyConfig,
    defaults: Defaults,
    common: crate::options::TunnelOptions,
    only: Option<underpass_stack::Policy>,
) -> Result<u16, Failure> {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("gateway".into())
        .spawn(move || {
            let report = port_tx.clone();
            let result = crate::run(async move {
                let tunnel = start(&cfg, &common, defaults).await?;
                if let Some(policy) = only {
                    // Before the loop runs, so no flow saw the other policy.
                    tunnel.set_accept_any(policy);
                }
                let port = tunnel.local_addr().map_err(Failure::runtime)?.port();
                let _ = report.send(Ok(port));
                tunnel.run().await;
                Ok(())
            });
            if let Err(f) = result {
                let _ = port_tx.send(Err(f));
            }
        })
        .map_err(Failure::runtime)?;
    port_rx
        .recv()
        .map_err(|_| Failure::runtime("the gateway thread ended before it started"))?
}
