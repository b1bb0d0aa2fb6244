//! Accepting the local clients of the proxies and forwards.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::tunnel::Tunnel;

/// The next client of `listener`, counted in the metrics, Nagle off. An
/// accept error (out of file descriptors and the like) is logged and
/// waited out: the listener keeps serving.
pub async fn accept(
    listener: &TcpListener,
    tunnel: &Tunnel,
    what: &str,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tunnel.with(|e| e.metrics.proxy_connections.fetch_add(1, Ordering::Relaxed));
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A local socket a user's program connects to, as `underpass up --wait`
/// prints it: `KIND ADDR [TARGET]`, e.g. `socks5 127.0.0.1:1080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub kind: &'static str,
    pub addr: std::net::SocketAddr,
    /// Where a forward leads.
    pub target: Option<String>,
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.addr)?;
        match &self.target {
            Some(t) => write!(f, " {t}"),
            None => Ok(()),
        }
    }
}
