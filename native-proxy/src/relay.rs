//! `underpass relay`: carries a browser's WireGuard datagrams between a
//! WebSocket (one datagram per binary frame, on `/relay`) and UDP, and
//! serves the web demo's files.
//!
//! A page cannot send UDP, so it needs this; but a relay that sent UDP
//! wherever a page asked would be an open proxy for anyone's traffic. Each
//! WebSocket therefore gets its own UDP socket to one of the `--upstream`
//! endpoints the relay was started with, and nothing else.

mod demo;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use clap::Args;
use futures_util::SinkExt;
use tokio::net::UdpSocket;

use crate::udp::SOCKET_BUFFER;
use crate::Failure;

/// The largest WebSocket frame or message: a WireGuard datagram is at most
/// MTU + 32 bytes; anything near this is not one.
pub const MAX_FRAME: usize = 64 * 1024;

/// Datagrams read from UDP before the WebSocket is flushed.
const DATAGRAMS_PER_FLUSH: usize = 64;

/// Close codes the page sees, with a reason: the 4000 range is ours.
pub mod close {
    pub const BAD_TOKEN: u16 = 4401;
    pub const FORBIDDEN_ENDPOINT: u16 = 4403;
    pub const FULL: u16 = 4429;
    pub const TEXT_FRAME: u16 = 1003;
    pub const IDLE: u16 = 4408;
}

#[derive(Args, Debug, Clone)]
pub struct RelayArgs {
    /// Where the page connects (HTTP and WebSocket).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A WireGuard endpoint (HOST:PORT) pages may reach; repeat for more.
    /// A page names the one its config's Endpoint says; nothing else is
    /// ever sent to.
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: Vec<String>,
    /// Require `?token=T` on the WebSocket URL.
    #[arg(
        long,
        value_name = "T",
        env = "UNDERPASS_RELAY_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Serve the web demo's files (index.html, pkg/...) from here.
    #[arg(long, value_name = "DIR")]
    pub web_root: Option<PathBuf>,
    /// Also run a demo gateway on loopback, add it as an upstream and give
    /// pages its client config at /demo (with a TCP echo and a byte source
    /// on loopback to try). Anyone who can reach the relay can then reach
    /// this host's loopback through the tunnel: keep --listen on loopback.
    #[arg(long)]
    pub demo: bool,
    /// WebSocket connections open at once, in all.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// WebSocket connections open at once from one client address.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_per_client: usize,
    /// A connection with no datagram either way for this long is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub idle_timeout: u64,
}

struct Upstream {
    /// As given on the command line: what a page's Endpoint must match.
    text: String,
    addr: SocketAddr,
}

struct Relay {
    upstreams: Vec<Upstream>,
    token: Option<String>,
    max_connections: usize,
    max_per_client: usize,
    idle: Duration,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    demo: Option<demo::Demo>,
}

/// What a page puts in the WebSocket URL's query.
struct RelayQuery {
    endpoint: Option<String>,
    token: Option<String>,
}

pub async fn run(args: RelayArgs) -> Result<(), Failure> {
    if !args.listen.ip().is_loopback() {
        if args.demo {
            tracing::warn!("--demo with --listen off loopback: every visitor can reach this host's loopback through the demo gateway");
        }
        if args.token.is_none() {
            tracing::warn!("relay listening on {} without --token: anyone who reaches it can use the upstreams", args.listen);
        }
    }
    let mut upstreams = Vec::new();
    for text in &args.upstream {
        let addr = resolve(text).await?;
        upstreams.push(Upstream {
            text: text.clone(),
            addr,
        });
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::runtime(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener.local_addr().map_err(Failure::runtime)?;
    let demo = if args.demo {
        let d = demo::Demo::start(local).await?;
        upstreams.push(Upstream {
            text: d.endpoint.to_string(),
            addr: d.endpoint,
        });
        Some(d)
    } else {
        None
    };
    if upstreams.is_empty() {
        return Err(Failure::usage(
            "relay: give at least one --upstream HOST:PORT (the WireGuard endpoints pages may reach), or --demo",
        ));
    }
    let relay = Arc::new(Relay {
        upstreams,
        token: args.token.clone().filter(|t| !t.is_empty()),
        max_connections: args.max_connections,
        max_per_client: args.max_per_client,
        idle: Duration::from_secs(args.idle_timeout.max(1)),
        open: Mutex::new((0, HashMap::new())),
        demo,
    });
    let mut app = Router::new().route("/relay", get(upgrade));
    if relay.demo.is_some() {
        app = app
            .route("/demo", get(demo::info))
            .route("/demo/bytes", get(demo::bytes));
    }
    if let Some(root) = &args.web_root {
        if !root.join("index.html").is_file() {
            tracing::warn!("--web-root {}: no index.html there", root.display());
        }
        app = app.fallback_service(tower_http::services::ServeDir::new(root));
    }
    let app = app.with_state(relay.clone());
    let targets: Vec<&str> = relay.upstreams.iter().map(|u| u.text.as_str()).collect();
    // One line on stdout that scripts can read.
    println!(
        "relay http://{local} (WebSocket ws://{local}/relay) -> {}",
        targets.join(", ")
    );
    tracing::info!("relay on {local}, upstreams: {}", targets.join(", "));
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    );
    tokio::select! {
        r = serve => r.map_err(|e| Failure::runtime(format!("relay: {e}"))),
        () = crate::setup::shutdown_signal() => Ok(()),
    }
}

async fn resolve(text: &str) -> Result<SocketAddr, Failure> {
    let bad = || Failure::usage(format!("--upstream {text:?}: expected HOST:PORT"));
    if text
        .rsplit_once(':')
        .is_none_or(|(_, p)| p.parse::<u16>().is_err())
    {
        return Err(bad());
    }
    match tokio::net::lookup_host(text).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| Failure::usage(format!("--upstream {text}: the name has no address"))),
        Err(e) => Err(Failure::usage(format!("--upstream {text}: {e}"))),
    }
}

/// Reads `endpoint` and `token` from the raw query string (axum's `Query`
/// would need serde for two strings).
fn parse_query(raw: Option<&str>) -> RelayQuery {
    let mut q = RelayQuery {
        endpoint: None,
        token: None,
    };
    for pair in raw.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "endpoint" => q.endpoint = Some(value),
            "token" => q.token = Some(value),
            _ => {}
        }
    }
    q
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Relay {
    /// The upstream a page's `endpoint` names (the first when it names
    /// none), matched by its text or by its address.
    fn upstream(&self, endpoint: Option<&str>) -> Option<SocketAddr> {
        let Some(wanted) = endpoint.filter(|e| !e.is_empty()) else {
            return self.upstreams.first().map(|u| u.addr);
        };
        let parsed: Option<SocketAddr> = wanted.parse().ok();
        self.upstreams
            .iter()
            .find(|u| u.text.eq_ignore_ascii_case(wanted) || parsed == Some(u.addr))
            .map(|u| u.addr)
    }

    fn token_ok(&self, given: Option<&str>) -> bool {
        use subtle_eq::ct_eq;
        match &self.token {
            None => true,
            Some(t) => given.is_some_and(|g| ct_eq(g.as_bytes(), t.as_bytes())),
        }
    }

    /// Counts a connection from `ip` in, unless a limit says no.
    fn admit(&self, ip: IpAddr) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let per = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.max_connections || per >= self.max_per_client {
            return false;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        true
    }

    fn leave(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&ip);
            }
        }
    }
}

mod subtle_eq {
    /// Compares without an early exit, so timing says nothing about how
    /// much of a token matched.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

async fn upgrade(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let query = parse_query(raw.as_deref());
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| session(relay, client, query, socket))
}

async fn refuse(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// One page's WebSocket, tied to one UDP socket.
async fn session(relay: Arc<Relay>, client: SocketAddr, query: RelayQuery, socket: WebSocket) {
    if !relay.token_ok(query.token.as_deref()) {
        tracing::info!(%client, "relay: refused, wrong or missing token");
        return refuse(socket, close::BAD_TOKEN, "wrong or missing token").await;
    }
    let Some(upstream) = relay.upstream(query.endpoint.as_deref()) else {
        let shown: String = query
            .endpoint
            .unwrap_or_default()
            .chars()
            .take(80)
            .collect();
        tracing::info!(%client, endpoint = %shown, "relay: refused, not an upstream");
        let reason = format!("{shown} is not an endpoint this relay forwards to");
        return refuse(socket, close::FORBIDDEN_ENDPOINT, &reason).await;
    };
    if !relay.admit(client.ip()) {
        tracing::info!(%client, "relay: refused, connection limit");
        return refuse(socket, close::FULL, "too many relay connections").await;
    }
    tracing::debug!(%client, %upstream, "relay: connected");
    if let Err(e) = pump(&relay, socket, upstream).await {
        tracing::debug!(%client, error = %e, "relay: ended");
    }
    relay.leave(client.ip());
}

async fn pump(relay: &Relay, mut socket: WebSocket, upstream: SocketAddr) -> std::io::Result<()> {
    let unspecified = match upstream {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let udp = udp_socket(SocketAddr::new(unspecified, 0))?;
    udp.connect(upstream).await?;
    let mut buf = vec![0u8; MAX_FRAME];
    let idle = tokio::time::sleep(relay.idle);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(datagram))) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + relay.idle);
                    // UDP: a datagram the kernel will not take is lost, as on any path.
                    let _ = udp.send(&datagram).await;
                }
                Some(Ok(Message::Text(_))) => {
                    refuse(socket, close::TEXT_FRAME, "text frames are not WireGuard datagrams").await;
                    return Ok(());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            },
            readable = udp.readable() => {
                if readable.is_err() {
                    continue;
                }
                // Everything waiting goes out in one write to the WebSocket.
                let mut any = false;
                for _ in 0..DATAGRAMS_PER_FLUSH {
                    match udp.try_recv(&mut buf) {
                        Ok(n) => {
                            any = true;
                            let frame = bytes::Bytes::copy_from_slice(&buf[..n]);
                            if socket.feed(Message::Binary(frame)).await.is_err() {
                                return Ok(());
                            }
                        }
                        // WouldBlock, or an ICMP error the peer may recover from.
                        Err(_) => break,
                    }
                }
                if any {
                    idle.as_mut().reset(tokio::time::Instant::now() + relay.idle);
                    if socket.flush().await.is_err() {
                        return Ok(());
                    }
                }
            }
            () = &mut idle => {
                refuse(socket, close::IDLE, "idle").await;
                return Ok(());
            }
        }
    }
}

fn udp_socket(bind: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(bind);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // The tunnel's size: a peer sends bursts (GSO batches) that a default
    // buffer drops, and each drop costs the page's TCP a retransmission
    // timeout. Best effort: the kernel caps it at rmem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = parse_query(Some("endpoint=127.0.0.1%3A51820&token=a%2Bb+c&x=1"));
        assert_eq!(q.endpoint.as_deref(), Some("127.0.0.1:51820"));
        assert_eq!(q.token.as_deref(), Some("a+b c"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%E2%9C%93"), "\u{2713}");
        assert!(parse_query(None).endpoint.is_none());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(subtle_eq::ct_eq(b"secret", b"secret"));
        assert!(!subtle_eq::ct_eq(b"secret", b"secreT"));
        assert!(!subtle_eq::ct_eq(b"secret", b"secret2"));
    }
}
