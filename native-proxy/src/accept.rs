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
