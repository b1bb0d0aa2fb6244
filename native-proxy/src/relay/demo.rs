//! `underpass relay --demo`: a gateway on loopback with client configs to
//! hand to pages, a TCP echo and a byte source, so the web demo works with
//! nothing else running.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use underpass_core::PrivateKey;

use super::Relay;
use crate::gateway::Defaults;
use crate::quickstart::{parse, spawn_gateway};
use crate::Failure;

/// Client configs handed out in turn, so several tabs do not share a key.
const CLIENTS: usize = 16;
/// The most `/demo/bytes` sends.
const MAX_BYTES: u64 = 1 << 30;

pub struct Demo {
    /// The demo gateway's UDP endpoint.
    pub endpoint: SocketAddr,
    configs: Vec<String>,
    next: AtomicUsize,
    echo: SocketAddr,
    relay: SocketAddr,
}

impl Demo {
    /// Starts the gateway and the echo; `relay` is the relay's own address,
    /// which serves `/demo/bytes` to the tunnel too.
    pub async fn start(relay: SocketAddr) -> Result<Demo, Failure> {
        let mut rng = rand::rngs::OsRng;
        let gateway_key = PrivateKey::generate(&mut rng);
        let clients: Vec<PrivateKey> = (0..CLIENTS)
            .map(|_| PrivateKey::generate(&mut rng))
            .collect();
        let mut gateway = format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.78.0.1/32\nListenPort = 0\n\n\
             [Gateway]\nAllowedDestinations = 127.0.0.1/32, ::1/128\n",
            gateway_key.to_base64()
        );
        for (i, key) in clients.iter().enumerate() {
            gateway.push_str(&format!(
                "\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.78.0.{}/32\n",
                key.public_key(),
                i + 2
            ));
        }
        let port = spawn_gateway(parse(&gateway, "demo gateway")?, Defaults::Everything)?;
        let endpoint = SocketAddr::from(([127, 0, 0, 1], port));
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
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Failure::runtime)?;
        let echo_addr = echo.local_addr().map_err(Failure::runtime)?;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        tracing::info!(%endpoint, echo = %echo_addr, "demo gateway");
        Ok(Demo {
            endpoint,
            configs,
            next: AtomicUsize::new(0),
            echo: echo_addr,
            relay,
        })
    }
}

fn json_string(s: &str) -> String {
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

/// `GET /demo`: a client config and what to try through it.
pub async fn info(State(relay): State<Arc<Relay>>) -> Response {
    let Some(demo) = &relay.demo else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let i = demo.next.fetch_add(1, Ordering::Relaxed) % demo.configs.len();
    let body = format!(
        "{{\"config\":{},\"echo\":{},\"httpUrl\":{},\"bytesUrl\":{}}}",
        json_string(&demo.configs[i]),
        json_string(&demo.echo.to_string()),
        json_string(&format!(
            "http://127.0.0.1:{}/demo/bytes?n=1000",
            demo.relay.port()
        )),
        json_string(&format!(
            "http://127.0.0.1:{}/demo/bytes?n=",
            demo.relay.port()
        )),
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

/// `GET /demo/bytes?n=N`: N bytes of a fixed pattern (byte i is i % 251),
/// for throughput tests that can check what arrived.
pub async fn bytes(RawQuery(raw): RawQuery) -> Response {
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

/// The `/demo/bytes` body, made as it is sent.
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
