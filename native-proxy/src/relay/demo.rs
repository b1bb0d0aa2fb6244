//! `underpass relay --demo`: a gateway on loopback with client configs to
//! hand to pages, a TCP echo and a byte source, so the web demo works with
//! nothing else running.
//!
//! The configs are handed to whoever passes the relay's checks (the token
//! when there is one, the relay's own pages), so the gateway is kept
//! small: its UDP port is on loopback only, and its flows reach the echo
//! and the byte source and nothing else on the host.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use underpass_core::PrivateKey;
use underpass_stack::Protocol;

use super::Relay;
use crate::cli::Common;
use crate::gateway::Defaults;
use crate::http_serve::{self, Limits, Throttle};
use crate::quickstart::{parse, spawn_gateway};
use crate::Failure;

/// Client configs handed out in turn, so several tabs do not share a key.
const CLIENTS: usize = 16;
/// The most `/bytes` sends.
const MAX_BYTES: u64 = 1 << 30;
/// TCP flows the demo gateway carries at once, in all and per client:
/// each costs two file descriptors (the gateway's and the service's).
pub const MAX_FLOWS: usize = 64;
const MAX_FLOWS_PER_CLIENT: usize = 16;

pub struct Demo {
    /// The demo gateway's UDP endpoint.
    pub endpoint: SocketAddr,
    configs: Vec<String>,
    next: AtomicUsize,
    echo: SocketAddr,
    /// The byte source, reached through the tunnel.
    bytes: SocketAddr,
}

impl Demo {
    /// Starts the echo, the byte source and the gateway, all on loopback.
    pub async fn start() -> Result<Demo, Failure> {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let echo = tokio::net::TcpListener::bind((loopback, 0))
            .await
            .map_err(Failure::runtime)?;
        let echo_addr = echo.local_addr().map_err(Failure::runtime)?;
        tokio::spawn(async move {
            loop {
                match echo.accept().await {
                    Ok((mut stream, _)) => {
                        tokio::spawn(async move {
                            let (mut r, mut w) = stream.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let source = tokio::net::TcpListener::bind((loopback, 0))
            .await
            .map_err(Failure::runtime)?;
        let bytes_addr = source.local_addr().map_err(Failure::runtime)?;
        let app = axum::Router::new().route("/bytes", get(bytes));
        let limits = Limits {
            header_timeout: Duration::from_secs(10),
            max_connections: MAX_FLOWS,
            max_per_client: MAX_FLOWS,
        };
        tokio::spawn(http_serve::serve(source, app, limits, "demo byte source"));

        let mut rng = rand::rngs::OsRng;
        let gateway_key = PrivateKey::generate(&mut rng);
        let clients: Vec<PrivateKey> = (0..CLIENTS)
            .map(|_| PrivateKey::generate(&mut rng))
            .collect();
        let mut gateway = format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.78.0.1/32\nListenPort = 0\n",
            gateway_key.to_base64()
        );
        for (i, key) in clients.iter().enumerate() {
            gateway.push_str(&format!(
                "\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.78.0.{}/32\n",
                key.public_key(),
                i + 2
            ));
        }
        let common = Common {
            max_connections: MAX_FLOWS,
            max_connections_per_client: MAX_FLOWS_PER_CLIENT,
            udp_bind: Some(loopback),
            ..Common::default()
        };
        let port = spawn_gateway(
            parse(&gateway, "demo gateway")?,
            Defaults::Public,
            common,
            Some(only_to([echo_addr, bytes_addr])),
        )?;
        let endpoint = SocketAddr::new(loopback, port);
        let configs = clients
            .iter()
            .enumerate()
            .map(|(i, key)| {
                format!(
                    "[Interface]\nPrivateKey = {}\nAddress = 10.78.0.{}/32\nDNS = 10.78.0.1\n\n\
                     [Peer]\nPublicKey = {}\nEndpoint = {endpoint}\nAllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n",
                    key.to_base64(),
                    i + 2,
                    gateway_key.public_key()
                )
            })
            .collect();
        tracing::info!(%endpoint, echo = %echo_addr, bytes = %bytes_addr, "demo gateway");
        Ok(Demo {
            endpoint,
            configs,
            next: AtomicUsize::new(0),
            echo: echo_addr,
            bytes: bytes_addr,
        })
    }
}

/// The demo gateway's policy: TCP to `services`, nothing else (refusals
/// logged at most every 10 s).
fn only_to(services: [SocketAddr; 2]) -> underpass_stack::Policy {
    let log = Throttle::new(Duration::from_secs(10));
    Box::new(move |proto: Protocol, dst: SocketAddr| {
        let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
        let ok = proto == Protocol::Tcp && services.contains(&dst);
        if !ok {
            if let Some(more) = log.pass() {
                tracing::info!(?proto, %dst, more_since_last = more, "demo gateway: refused a flow: it reaches only its echo and byte source");
            }
        }
        ok
    })
}

pub(super) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `GET /demo`: a client config and what to try through it, for the
/// relay's own pages (and allowed origins) with the token.
pub async fn info(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(demo) = &relay.demo else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(refused) = relay
        .access
        .check("/demo", client, &headers, raw.as_deref())
    {
        return refused.response();
    }
    let i = demo.next.fetch_add(1, Ordering::Relaxed) % demo.configs.len();
    let bytes_url = format!("http://{}/bytes?n=", demo.bytes);
    let body = format!(
        "{{\"config\":{},\"echo\":{},\"httpUrl\":{},\"bytesUrl\":{}}}",
        json_string(&demo.configs[i]),
        json_string(&demo.echo.to_string()),
        json_string(&format!("{bytes_url}1000")),
        json_string(&bytes_url),
    );
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The byte source's `GET /bytes?n=N`: N bytes of a fixed pattern (byte
/// i is i % 251), for throughput tests that can check what arrived.
async fn bytes(RawQuery(raw): RawQuery) -> Response {
    let n = raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("n="))
        .and_then(|v| v.parse::<u64>().ok());
    let Some(n) = n.filter(|n| *n <= MAX_BYTES) else {
        return (StatusCode::BAD_REQUEST, "n=BYTES, at most 1 GiB\n").into_response();
    };
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::new(Pattern { sent: 0, len: n }),
    )
        .into_response()
}

/// The `/bytes` body, made as it is sent.
struct Pattern {
    sent: u64,
    len: u64,
}

impl hyper::body::Body for Pattern {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let left = self.len - self.sent;
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = left.min(64 * 1024);
        let start = self.sent;
        let chunk: Vec<u8> = (start..start + n).map(|i| (i % 251) as u8).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}
