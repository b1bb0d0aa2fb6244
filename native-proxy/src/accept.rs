//! Accepting the local clients of the proxies and forwards, and the cap
//! on proxy clients still negotiating.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::log_limit::LogLimit;
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
                tunnel
                    .metrics()
                    .proxy_connections
                    .fetch_add(1, Ordering::Relaxed);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Proxy clients that have not finished their SOCKS5 negotiation or sent
/// their first routable HTTP request, across every proxy listener. They
/// cost a descriptor each and do nothing for anyone: without a cap of
/// their own, slow or silent clients (slowloris) fill the descriptor
/// table and no one else gets in, established connections' new dials
/// included.
#[derive(Clone)]
pub struct Negotiations(Rc<Counts>);

struct Counts {
    cap: usize,
    open: Cell<usize>,
    refusals: LogLimit,
    /// Refused HTTP clients whose request is still being read and
    /// dropped, so that closing does not reset the 503 away.
    draining: Cell<usize>,
}

/// Refused HTTP clients drained at once; past it they are closed at once.
const MAX_DRAINING: usize = 64;
/// How long a refused HTTP client's request is read before closing.
const DRAIN_FOR: Duration = Duration::from_secs(1);

impl Negotiations {
    pub fn new(cap: usize) -> Negotiations {
        Negotiations(Rc::new(Counts {
            cap,
            open: Cell::new(0),
            refusals: LogLimit::default(),
            draining: Cell::new(0),
        }))
    }

    /// A slot for a new client, or `None` at the cap (then logged, at
    /// most every 10 s).
    pub fn enter(&self, what: &str) -> Option<Negotiating> {
        let c = &self.0;
        if c.open.get() < c.cap {
            c.open.set(c.open.get() + 1);
            return Some(Negotiating(self.0.clone()));
        }
        if let Some(more) = c.refusals.pass() {
            tracing::warn!(
                refused = more + 1,
                "{what}: {} clients are still negotiating (--max-negotiating); new ones are refused until some finish",
                c.cap
            );
        }
        None
    }

    /// Clients negotiating now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.0.open.get()
    }

    /// Answers an HTTP client past the cap with `503` and closes. The
    /// request it already sent is read and dropped first (for a second at
    /// most), since closing with unread data would reset the connection
    /// and could lose the answer.
    pub fn refuse_http(&self, mut stream: TcpStream) {
        const BODY: &str = "too many clients are connecting at once; try again later\n";
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        // The send buffer of a new connection is empty: this fits.
        let _ = stream.try_write(head.as_bytes());
        let c = &self.0;
        if c.draining.get() >= MAX_DRAINING {
            return;
        }
        c.draining.set(c.draining.get() + 1);
        let counts = self.0.clone();
        tokio::task::spawn_local(async move {
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(DRAIN_FOR, async {
                let mut left: usize = 64 * 1024;
                while left > 0 {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            })
            .await;
            counts.draining.set(counts.draining.get() - 1);
        });
    }
}

/// A negotiating client's slot; dropping it (negotiation over, or the
/// connection gone) frees it.
pub struct Negotiating(Rc<Counts>);

impl Drop for Negotiating {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// What a local listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Socks5,
    Http,
    /// The HTTP proxy over TLS.
    Https,
    Sni,
    TcpClientTunnel,
    UdpProxyTunnel,
}

impl ListenerKind {
    /// As `underpass up --wait` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Socks5 => "socks5",
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
            ListenerKind::Sni => "sni",
            ListenerKind::TcpClientTunnel => "tcp-client-tunnel",
            ListenerKind::UdpProxyTunnel => "udp-proxy-tunnel",
        }
    }
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A local socket a user's program connects to, as `underpass up --wait`
/// prints it: `KIND ADDR [TARGET]`, e.g. `socks5 127.0.0.1:1080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub kind: ListenerKind,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_freed_when_dropped() {
        let n = Negotiations::new(2);
        let a = n.enter("test").expect("first");
        let b = n.enter("test").expect("second");
        assert!(n.enter("test").is_none(), "a third past the cap");
        drop(a);
        assert_eq!(n.open(), 1);
        let _c = n.enter("test").expect("room again");
        drop(b);
        assert_eq!(n.open(), 1);
    }
}
