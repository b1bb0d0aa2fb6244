//! `underpass relay`: carries a browser's WireGuard datagrams between a
//! WebSocket (on `/relay`: one datagram per binary message, or many with
//! the batching subprotocol, see `pump`) or a WebTransport session (QUIC
//! datagrams, see `webtransport`) and UDP, and serves the web demo's
//! files.
//!
//! A page cannot send UDP, so it needs this; but a relay that sent UDP
//! wherever a page asked would be an open proxy for anyone's traffic. Each
//! WebSocket therefore gets its own UDP socket to one of the `--upstream`
//! endpoints the relay was started with, and nothing else. Only the
//! relay's own pages (and `--allow-origin`s) with the token get that far
//! (see `access`); every connection counts against the limits from the
//! moment it is accepted (see `http_serve`).

mod access;
mod demo;
mod files;
mod pump;
mod webtransport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use underpass_core::relay_batch;

pub use crate::cli::{RelayArgs, TOKEN_ENV};
use crate::http_serve::{self, Limits};
use crate::Failure;

use access::{Access, Origin, Query};

/// The largest WebSocket frame or message: a WireGuard datagram is at most
/// MTU + 32 bytes, a batch of them at most this.
pub const MAX_FRAME: usize = relay_batch::MAX_MESSAGE;

/// Close codes the page sees, with a reason: the 4000 range is ours.
/// (A wrong token, a foreign page or a full relay is refused before the
/// upgrade, with an HTTP status.)
pub mod close {
    pub const FORBIDDEN_ENDPOINT: u16 = 4403;
    pub const TEXT_FRAME: u16 = 1003;
    /// A batch that breaks the subprotocol's framing (invalid payload).
    pub const MALFORMED_BATCH: u16 = 1007;
    pub const IDLE: u16 = 4408;
}

struct Upstream {
    /// As given on the command line: what a page's Endpoint must match.
    text: String,
    addr: SocketAddr,
}

struct Relay {
    upstreams: Vec<Upstream>,
    access: Access,
    idle: Duration,
    demo: Option<demo::Demo>,
    /// Where pages find the WebTransport side, when it runs.
    webtransport: Option<Arc<webtransport::Published>>,
    /// Whether pages may have the batching subprotocol.
    batch: bool,
    /// Whether WebTransport pages may upload on a stream.
    webtransport_stream: bool,
    bench_loss: f64,
}

/// File descriptors a relay connection takes: its TCP socket, and the UDP
/// socket of its WebSocket.
const FDS_PER_CONNECTION: usize = 2;

pub async fn run(args: RelayArgs) -> Result<(), Failure> {
    if !(0.0..=1.0).contains(&args.bench_loss) {
        return Err(Failure::usage("--bench-loss: a fraction from 0 to 1"));
    }
    let token = token(&args)?;
    let origins = args
        .allow_origin
        .iter()
        .map(|o| Origin::parse(o).map_err(|e| Failure::usage(format!("--allow-origin: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if !args.listen.ip().is_loopback() && token.is_none() {
        tracing::warn!(
            "relay listening on {} without --token: anyone who reaches it can use the upstreams{}",
            args.listen,
            if args.demo {
                " and the demo gateway"
            } else {
                ""
            }
        );
    }
    let mut upstreams = Vec::new();
    for text in &args.upstream {
        let addr = resolve(text).await?;
        upstreams.push(Upstream {
            text: text.clone(),
            addr,
        });
    }
    let files = match &args.web_root {
        Some(root) => Some(files::router(root)?),
        None => None,
    };
    let mut reserve = http_serve::FD_RESERVE;
    if args.demo {
        // The gateway's flows, each a socket on both ends, and its own.
        reserve += 2 * demo::MAX_FLOWS + 16;
    }
    let max_connections = http_serve::fit_to_fd_limit(
        args.max_connections.max(1),
        FDS_PER_CONNECTION,
        reserve,
        "--max-connections",
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::runtime(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener.local_addr().map_err(Failure::runtime)?;
    // Accepted connections take the listener's congestion controller.
    let congestion = args.congestion.name();
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_congestion(congestion.as_bytes()) {
        tracing::warn!(
            "relay: WebSockets keep the system's congestion controller: the kernel refused {congestion:?} ({e}; see net.ipv4.tcp_allowed_congestion_control)"
        );
    }
    let demo = if args.demo {
        let d = demo::Demo::start().await?;
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
    if args.bench_loss > 0.0 {
        tracing::warn!(
            "relay drops {:.2}% of the datagrams between pages and upstreams (--bench-loss)",
            args.bench_loss * 100.0
        );
    }
    let idle = Duration::from_secs(args.idle_timeout.max(1));
    let quic = if args.no_webtransport {
        None
    } else {
        let certificate = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => webtransport::Certificate::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => {
                let mut names = vec!["localhost".to_string(), local.ip().to_string()];
                if local.ip().is_unspecified() {
                    names.push("127.0.0.1".into());
                }
                let renew_every = args
                    .webtransport_renew
                    .map(|s| Duration::from_secs(s.max(1)))
                    .unwrap_or(webtransport::RENEW_EVERY);
                webtransport::Certificate::SelfSigned { names, renew_every }
            }
        };
        let tuning = webtransport::QuicTuning::parse(
            args.congestion.name(),
            args.bench_quic.as_deref().unwrap_or(""),
        )
        .map_err(|e| Failure::usage(format!("--bench-quic: {e}")))?;
        Some(webtransport::Server::bind(local, certificate, idle, tuning).await?)
    };
    let relay = Arc::new(Relay {
        upstreams,
        access: Access::new(token, origins),
        idle,
        demo,
        webtransport: quic.as_ref().map(|q| q.published.clone()),
        batch: !args.no_batch,
        webtransport_stream: !args.no_webtransport_stream,
        bench_loss: args.bench_loss,
    });
    let mut app = Router::new()
        .route("/relay", get(upgrade))
        .route("/webtransport", get(webtransport::info));
    if relay.demo.is_some() {
        app = app.route("/demo", get(demo::info));
    }
    let mut app = app.with_state(relay.clone());
    if let Some(files) = files {
        app = app.fallback_service(files);
    }
    let targets: Vec<&str> = relay.upstreams.iter().map(|u| u.text.as_str()).collect();
    // One line on stdout that scripts can read.
    let quic_line = match &relay.webtransport {
        Some(p) => format!(
            ", WebTransport https://{local}/relay, certificate sha-256 {}",
            p.hash().unwrap_or_else(|| "from --cert".into())
        ),
        None => String::new(),
    };
    println!(
        "relay http://{local} (WebSocket ws://{local}/relay{quic_line}) -> {}",
        targets.join(", ")
    );
    tracing::info!("relay on {local}, upstreams: {}", targets.join(", "));
    let limits = Limits {
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        max_connections,
        max_per_client: args.max_per_client.max(1),
    };
    // WebTransport sessions count against the same limits as WebSockets.
    let counter = http_serve::Counter::new(limits, "relay");
    if let Some(quic) = quic {
        tokio::spawn(quic.serve(relay.clone(), counter.clone(), limits.header_timeout));
    }
    tokio::select! {
        () = http_serve::serve_counted(listener, app, counter) => Ok(()),
        () = crate::signals::shutdown_signal() => Ok(()),
    }
}

/// The token from `--token`, the environment or `--token-file`; errors
/// name the file, never what is in it.
fn token(args: &RelayArgs) -> Result<Option<String>, Failure> {
    let Some(path) = &args.token_file else {
        if args.token.is_some() && std::env::var_os(TOKEN_ENV).is_none() {
            tracing::warn!("--token on the command line is visible to every user of this host (ps); --token-file or {TOKEN_ENV} keep it private");
        }
        return Ok(args.token.clone());
    };
    if args.token.is_some() {
        return Err(Failure::usage(format!(
            "give the token once: --token-file, or --token / {TOKEN_ENV}"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("--token-file {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(Failure::usage(format!(
            "--token-file {}: the first line is empty",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "--token-file {}: other users may read it (chmod 600)",
                    path.display()
                );
            }
        }
    }
    Ok(Some(token.to_string()))
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

impl Relay {
    /// The upstream a page's `endpoint` names (the first when it names
    /// none), matched by its text or by its address; else the name as it
    /// may be shown in a log line and a refusal (at most 80 characters of
    /// what the page sent).
    fn upstream(&self, endpoint: Option<&str>) -> Result<SocketAddr, String> {
        let Some(wanted) = endpoint.filter(|e| !e.is_empty()) else {
            return self
                .upstreams
                .first()
                .map(|u| u.addr)
                .ok_or_else(String::new);
        };
        let parsed: Option<SocketAddr> = wanted.parse().ok();
        self.upstreams
            .iter()
            .find(|u| u.text.eq_ignore_ascii_case(wanted) || parsed == Some(u.addr))
            .map(|u| u.addr)
            .ok_or_else(|| wanted.chars().take(80).collect())
    }
}

/// `GET /relay`: the checks, then the upgrade. A page that may not use the
/// relay gets an HTTP status, not a WebSocket to be told on.
async fn upgrade(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let query = match relay
        .access
        .check("/relay", client, &headers, raw.as_deref())
    {
        Ok(query) => query,
        Err(refused) => return refused.response(),
    };
    let ws = if relay.batch {
        ws.protocols([relay_batch::PROTOCOL])
    } else {
        ws
    };
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
async fn session(relay: Arc<Relay>, client: SocketAddr, query: Query, socket: WebSocket) {
    let upstream = match relay.upstream(query.endpoint.as_deref()) {
        Ok(upstream) => upstream,
        Err(shown) => {
            tracing::info!(%client, endpoint = %shown, "relay: refused, not an upstream");
            let reason = format!("{shown} is not an endpoint this relay forwards to");
            return refuse(socket, close::FORBIDDEN_ENDPOINT, &reason).await;
        }
    };
    let framing = match socket.protocol() {
        Some(p) if p.as_bytes() == relay_batch::PROTOCOL.as_bytes() => pump::Framing::Batched,
        _ => pump::Framing::Plain,
    };
    tracing::debug!(%client, %upstream, ?framing, "relay: connected");
    if let Err(e) = pump::pump(&relay, socket, upstream, framing, client).await {
        tracing::debug!(%client, error = %e, "relay: ended");
    }
}
