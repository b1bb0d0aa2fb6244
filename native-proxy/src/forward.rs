//! Port forwards, with wireproxy's section names: `[TCPClientTunnel]`
//! (local port to a target through the tunnel), `[TCPServerTunnel]` (a
//! tunnel port to a local target), `[UDPProxyTunnel]` and `[STDIOTunnel]`
//! (stdin/stdout to a target, for ssh's ProxyCommand).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::Sender;
use tokio::sync::oneshot;
use underpass_stack::ListenerId;

use crate::accept::{accept, ListenerKind, Listening};
use crate::config::{ProxyConfig, Target};
use crate::splice::splice_host;
use crate::tunnel::Tunnel;
use crate::udp_sessions::UdpSessions;
use crate::Failure;

/// The running forwards.
pub struct Forwards {
    /// The STDIO stream's end, when it is all the process is for.
    stdio: Option<oneshot::Receiver<Result<(), String>>>,
    /// The local sockets the forwards listen on.
    pub listening: Vec<Listening>,
}

impl Forwards {
    /// Resolves when the STDIO stream ends and the process should exit
    /// (never, without one or when the config asks for more than it).
    pub async fn stdio_done(self) -> Result<(), String> {
        match self.stdio {
            Some(rx) => rx.await.unwrap_or(Ok(())),
            None => std::future::pending().await,
        }
    }
}

/// Whether a `[STDIOTunnel]` is all `cfg` asks for, given the proxy
/// listeners the process has (the config's and the command line's): then
/// the process ends with the stream.
pub fn stdio_is_all(cfg: &ProxyConfig, proxy_listeners: usize) -> bool {
    !cfg.stdio_tunnels.is_empty()
        && proxy_listeners == 0
        && cfg.tcp_client_tunnels.is_empty()
        && cfg.tcp_server_tunnels.is_empty()
        && cfg.udp_proxy_tunnels.is_empty()
        && cfg.sni.is_empty()
}

/// Binds every forward of `cfg` (failing if one cannot) and starts them.
/// `stdio_is_all`: see [`stdio_is_all`].
pub async fn start(
    tunnel: &Tunnel,
    cfg: &ProxyConfig,
    stdio_is_all: bool,
) -> Result<Forwards, Failure> {
    let mut listening = Vec::new();
    for f in &cfg.tcp_client_tunnels {
        let listener = TcpListener::bind(f.bind).await.map_err(|e| {
            Failure::runtime(format!(
                "cannot listen for the TCPClientTunnel on {}: {e}",
                f.bind
            ))
        })?;
        let addr = listener.local_addr().map_err(Failure::runtime)?;
        tracing::info!("tcp-client-tunnel listening on {addr} -> {}", f.target);
        listening.push(Listening {
            kind: ListenerKind::TcpClientTunnel,
            addr,
            target: Some(f.target.to_string()),
        });
        tokio::task::spawn_local(tcp_client(listener, tunnel.clone(), f.target.clone()));
    }
    for f in &cfg.tcp_server_tunnels {
        let id = tunnel.tcp_listen(f.listen_port).map_err(|e| {
            Failure::runtime(format!(
                "TCPServerTunnel on tunnel port {}: {e}",
                f.listen_port
            ))
        })?;
        tracing::info!(
            "tcp-server-tunnel on tunnel port {} -> {}",
            f.listen_port,
            f.target
        );
        tokio::task::spawn_local(tcp_server(id, tunnel.clone(), f.target.clone()));
    }
    for f in &cfg.udp_proxy_tunnels {
        let socket = UdpSocket::bind(f.bind).await.map_err(|e| {
            Failure::runtime(format!("cannot bind the UDPProxyTunnel on {}: {e}", f.bind))
        })?;
        let addr = socket.local_addr().map_err(Failure::runtime)?;
        tracing::info!("udp-proxy-tunnel on {addr} -> {}", f.target);
        listening.push(Listening {
            kind: ListenerKind::UdpProxyTunnel,
            addr,
            target: Some(f.target.to_string()),
        });
        tokio::task::spawn_local(udp_proxy(
            socket,
            tunnel.clone(),
            f.target.clone(),
            f.inactivity_timeout,
        ));
    }
    let stdio = match cfg.stdio_tunnels.first() {
        Some(f) => {
            if cfg.stdio_tunnels.len() > 1 {
                tracing::warn!("only the first [STDIOTunnel] is used: there is one stdin");
            }
            let (tx, rx) = oneshot::channel();
            let (t, target) = (tunnel.clone(), f.target.clone());
            tokio::task::spawn_local(async move {
                let result = crate::stdio::run(t, target).await;
                if !stdio_is_all {
                    match &result {
                        Ok(()) => tracing::info!(
                            "the STDIO stream ended; the config's other sections go on serving"
                        ),
                        Err(e) => tracing::warn!("{e}; the config's other sections go on serving"),
                    }
                }
                let _ = tx.send(result);
            });
            stdio_is_all.then_some(rx)
        }
        None => None,
    };
    Ok(Forwards { stdio, listening })
}

async fn tcp_client(listener: TcpListener, tunnel: Tunnel, target: Target) {
    loop {
        let (mut local, peer) = accept(&listener, &tunnel, "TCPClientTunnel").await;
        let (tunnel, target) = (tunnel.clone(), target.clone());
        tokio::task::spawn_local(async move {
            match tunnel.connect_host(&target.host, target.port).await {
                Ok(mut remote) => {
                    let _ = splice_host(&mut local, &mut remote, &[]).await;
                }
                Err(e) => {
                    tracing::info!(%peer, %target, error = %e, "forward: cannot reach the target")
                }
            }
        });
    }
}

async fn tcp_server(id: ListenerId, tunnel: Tunnel, target: Target) {
    loop {
        let accepted = std::future::poll_fn(|cx| tunnel.poll_accept_from(cx, id)).await;
        let (conn, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel listener failed");
                return;
            }
        };
        tunnel
            .metrics()
            .proxy_connections
            .fetch_add(1, Ordering::Relaxed);
        let mut inner = tunnel.stream(conn);
        let target = target.clone();
        tokio::task::spawn_local(async move {
            match TcpStream::connect((target.host.as_str(), target.port)).await {
                Ok(mut local) => {
                    let _ = local.set_nodelay(true);
                    let _ = splice_host(&mut local, &mut inner, &[]).await;
                }
                Err(e) => {
                    tracing::info!(%remote, %target, error = %e, "server tunnel: local target refused")
                }
            }
        });
    }
}

/// Local clients one UDPProxyTunnel keeps at once (a tunnel socket and a
/// task each); past it the one quiet the longest is forgotten, so clients
/// kept forever (`InactivityTimeout = 0`) cannot pile up.
const MAX_UDP_PROXY_CLIENTS: usize = 1024;

/// Each local client gets its own tunnel socket, forgotten after the
/// inactivity timeout (`None`: never, but see [`MAX_UDP_PROXY_CLIENTS`]).
async fn udp_proxy(socket: UdpSocket, tunnel: Tunnel, target: Target, idle: Option<Duration>) {
    let socket = Rc::new(socket);
    let mut clients: UdpSessions<Sender<Vec<u8>>> = UdpSessions::new(MAX_UDP_PROXY_CLIENTS);
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "UDP proxy receive error");
                continue;
            }
        };
        clients.retain(|_, tx, _| !tx.is_closed());
        let now = std::time::Instant::now();
        let tx = match clients.touch(client, now) {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = tokio::sync::mpsc::channel(256);
                tokio::task::spawn_local(udp_client(
                    socket.clone(),
                    client,
                    rx,
                    tunnel.clone(),
                    target.clone(),
                    idle,
                ));
                if let (_, Some((old, _))) = clients.insert(client, tx.clone(), now) {
                    tracing::info!(client = %old, limit = MAX_UDP_PROXY_CLIENTS, "UDPProxyTunnel: too many clients; the quietest one is forgotten");
                }
                tx
            }
        };
        // A full queue drops the datagram, as a full socket buffer would.
        let _ = tx.try_send(buf[..n].to_vec());
    }
}

async fn udp_client(
    socket: Rc<UdpSocket>,
    client: SocketAddr,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    tunnel: Tunnel,
    target: Target,
    idle: Option<Duration>,
) {
    let dst = match tunnel.resolve(&target.host).await {
        Ok(ips) if !ips.is_empty() => SocketAddr::new(ips[0], target.port),
        _ => {
            tracing::info!(%target, "UDP proxy: target does not resolve");
            return;
        }
    };
    let Ok(inner) = tunnel.udp_bind() else {
        return;
    };
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(datagram) => {
                    let _ = inner.send_to(&datagram, dst).await;
                }
                None => return,
            },
            r = inner.recv_from(&mut buf) => {
                if let Ok((n, _)) = r {
                    let _ = socket.send_to(&buf[..n], client).await;
                }
            }
            _ = async {
                match idle {
                    Some(idle) => tokio::time::sleep(idle).await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::debug!(%client, "UDP proxy client idle; forgotten");
                return;
            }
        }
    }
}
