//! The userspace gateway: the exit peer that needs no root. It answers its
//! peers' handshakes, accepts any TCP or UDP flow they send to an allowed
//! destination and connects it with an ordinary host socket; DNS queries to
//! its tunnel address are answered by resolving on the host.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant as Clock};

use ipnet::IpNet;
use tokio::net::{TcpStream, UdpSocket};
use underpass_stack::{Accepted, ConnId, Protocol, UdpId};

use crate::cli::{Common, GatewayArgs};
use crate::config::ProxyConfig;
use crate::config_source::ConfigSource;
use crate::setup::{self, Role};
use crate::splice::splice_host;
use crate::tunnel::{Tunnel, TunnelUdp};
use crate::Failure;

/// How long connecting to a destination may take before the client is
/// refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A UDP flow with no traffic either way for this long is closed.
const UDP_IDLE: Duration = Duration::from_secs(120);

pub async fn run(args: GatewayArgs) -> Result<(), Failure> {
    let cfg = ConfigSource::from_flag(&args.config)
        .load()
        .map_err(Failure::usage)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if args.check {
        println!("config OK");
        return Ok(());
    }
    let tunnel = start(&cfg, &args.common, Defaults::Public).await?;
    tracing::info!(
        "gateway listening on UDP {}",
        tunnel.local_addr().map_err(Failure::runtime)?
    );
    let engine = tunnel.clone();
    let run = tokio::task::spawn_local(async move { engine.run().await });
    setup::shutdown_signal().await;
    tracing::info!("shutting down");
    tunnel.shutdown();
    let _ = run.await;
    Ok(())
}

/// What a gateway allows when its config has no `AllowedDestinations`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Defaults {
    /// Everything but loopback and link-local: the host's own services
    /// stay private.
    Public,
    /// Everything, loopback included (quickstart on one machine).
    Everything,
}

/// Networks no default gateway forwards to.
fn private_to_host(ip: IpAddr) -> bool {
    let blocked: [IpNet; 4] = [
        "127.0.0.0/8".parse().expect("literal"),
        "169.254.0.0/16".parse().expect("literal"),
        "::1/128".parse().expect("literal"),
        "fe80::/10".parse().expect("literal"),
    ];
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    blocked.iter().any(|n| n.contains(&ip)) || ip.is_unspecified() || ip.is_multicast()
}

/// Builds the accept-any policy.
fn policy(cfg: &ProxyConfig, defaults: Defaults) -> underpass_stack::Policy {
    let own: Vec<IpAddr> = cfg
        .wg
        .interface
        .addresses
        .iter()
        .map(|n| n.addr())
        .collect();
    let allowed = cfg.gateway.allowed_destinations.clone();
    // Refusals are logged, but at most once a second (with how many more
    // there were): a client retrying must not flood the log.
    let mut last_logged: Option<std::time::Instant> = None;
    let mut unlogged = 0u64;
    Box::new(move |proto: Protocol, dst: SocketAddr| {
        if own.contains(&dst.ip()) {
            return false; // the gateway's own tunnel address serves only DNS
        }
        let ok = match &allowed {
            Some(nets) => nets.iter().any(|n| n.contains(&dst.ip())),
            None => defaults == Defaults::Everything || !private_to_host(dst.ip()),
        };
        if !ok {
            let now = std::time::Instant::now();
            if last_logged.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                let why = if allowed.is_some() {
                    "outside [Gateway] AllowedDestinations"
                } else {
                    "the gateway host's own loopback or link-local (set [Gateway] AllowedDestinations to allow it)"
                };
                tracing::info!(?proto, %dst, more_since_last = unlogged, "refused a flow: {why}");
                last_logged = Some(now);
                unlogged = 0;
            } else {
                unlogged += 1;
            }
        }
        ok
    })
}

/// Builds the gateway's engine, its DNS service and flow handling.
pub async fn start(
    cfg: &ProxyConfig,
    common: &Common,
    defaults: Defaults,
) -> Result<Tunnel, Failure> {
    let tunnel = setup::build(cfg, Role::Gateway(policy(cfg, defaults)), common).await?;
    match tunnel.with(|e| e.stack.udp_bind(Some(53))) {
        Ok(id) => {
            tokio::task::spawn_local(dns_service(tunnel.udp(id)));
        }
        Err(e) => tracing::warn!(error = %e, "no DNS service on the tunnel address"),
    }
    tunnel.on_accept(|tunnel, accepted| match accepted {
        Accepted::Tcp {
            conn,
            local,
            remote,
        } => {
            tokio::task::spawn_local(tcp_flow(tunnel, conn, local, remote));
        }
        Accepted::Udp { socket, local } => {
            tokio::task::spawn_local(udp_flow(tunnel, socket, local));
        }
    });
    Ok(tunnel)
}

/// Connects the destination first; only then does the client's SYN get
/// its SYN-ACK, so a refused destination is a refused connection.
async fn tcp_flow(tunnel: Tunnel, conn: ConnId, dst: SocketAddr, src: SocketAddr) {
    let host = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await;
    let mut host = match host {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%src, %dst, error = %e, "destination refused");
            tunnel.with(|e| e.stack.tcp_abort(conn));
            tunnel.wake();
            return;
        }
        Err(_) => {
            tracing::debug!(%src, %dst, "destination did not answer");
            tunnel.with(|e| e.stack.tcp_abort(conn));
            tunnel.wake();
            return;
        }
    };
    let _ = host.set_nodelay(true);
    if tunnel.with(|e| e.stack.tcp_accept(conn)).is_err() {
        return; // the client gave up meanwhile
    }
    tunnel.wake();
    let mut inner = tunnel.stream(conn);
    tracing::debug!(%src, %dst, "gateway TCP flow");
    let _ = splice_host(&mut host, &mut inner, &[]).await;
}

/// One stack socket per destination; a host socket per client behind it.
async fn udp_flow(tunnel: Tunnel, id: UdpId, dst: SocketAddr) {
    let inner = Rc::new(tunnel.udp(id));
    let mut clients: HashMap<SocketAddr, (Rc<UdpSocket>, Clock)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::time::timeout(UDP_IDLE, inner.recv_from(&mut buf)).await;
        let now = Clock::now();
        clients.retain(|_, (_, last)| now.duration_since(*last) < UDP_IDLE);
        let (n, client) = match received {
            Ok(Ok(x)) => x,
            Ok(Err(_)) => return,
            Err(_) if clients.is_empty() => return, // idle: the socket goes
            Err(_) => continue,
        };
        let host = match clients.get_mut(&client) {
            Some((s, last)) => {
                *last = now;
                s.clone()
            }
            None => {
                let bind: SocketAddr = if dst.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = match UdpSocket::bind(bind).await {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                if socket.connect(dst).await.is_err() {
                    continue;
                }
                let socket = Rc::new(socket);
                tokio::task::spawn_local(udp_replies(socket.clone(), inner.clone(), client));
                clients.insert(client, (socket.clone(), now));
                socket
            }
        };
        let _ = host.send(&buf[..n]).await;
    }
}

async fn udp_replies(host: Rc<UdpSocket>, inner: Rc<TunnelUdp>, client: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(UDP_IDLE, host.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if inner.send_to(&buf[..n], client).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
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
