//! The HTTP/1.1 server under the relay, its demo byte source and
//! `--metrics`.
//!
//! `axum::serve` counts nothing and waits for a request head forever, so a
//! client that opens connections and sends nothing (or a header a byte at
//! a time) holds a file descriptor each until the process has none left.
//! Here every accepted connection takes a slot from the limits at once,
//! before a byte is read, and keeps it until the socket is closed (a
//! WebSocket's included); a request head must arrive within a timeout,
//! which also closes idle keep-alive connections; a connection past a
//! limit is answered 503 and closed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::log_limit::LogLimit;

/// The largest request head read (hyper's minimum is 8 KiB); a browser's
/// is a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Refused connections answered and drained at once; past this they are
/// closed at once (the 503 may then be lost to a reset).
const MAX_LINGERING: usize = 64;
/// How long a refused connection is drained, so closing it with unread
/// input does not reset the 503 away.
const LINGER: Duration = Duration::from_secs(1);

/// What one server allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time from accepting a connection (or finishing its last response)
    /// to the end of the next request head.
    pub header_timeout: Duration,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one client: an IPv4 address or an
    /// IPv6 /64 (one host's usual allocation).
    pub max_per_client: usize,
}

/// File descriptors kept back from the connections: the listener, the
/// runtime, logs, refused connections being drained.
pub const FD_RESERVE: usize = 64 + MAX_LINGERING;

/// Serves `app` on `listener` under `limits` until the process ends;
/// `what` names the server in log lines. Handlers can read the client's
/// address as `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, what: &'static str) {
    serve_counted(listener, app, Counter::new(limits, what)).await
}

/// `serve`, counting connections in `counter`, which another server (the
/// relay's WebTransport) may share.
pub async fn serve_counted(listener: TcpListener, app: Router, counter: Arc<Counter>) {
    let limits = counter.limits;
    let what = counter.what;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD);
    let http = Arc::new(http);
    let lingering = Arc::new(AtomicUsize::new(0));
    let accept_errors = LogLimit::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was
                // taken: wait a moment rather than spin.
                if let Some(more) = accept_errors.pass() {
                    tracing::warn!(error = %e, more_since_last = more, "{what}: accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match counter.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                refuse(stream, full, &lingering);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let http = http.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let io = TokioIo::new(Counted {
                stream,
                _slot: slot,
            });
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                hyper::service::Service::call(&service, req)
            });
            // Errors are the client's: a timeout, a malformed head, a reset.
            let _ = http.serve_connection(io, service).with_upgrades().await;
        });
    }
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64
/// (a host gets a whole /64 and can use any address in it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn show_key(key: IpAddr) -> String {
    match key {
        IpAddr::V6(_) => format!("{key}/64"),
        v4 => v4.to_string(),
    }
}

#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Connections open, in all and per client, against the limits.
pub struct Counter {
    limits: Limits,
    open: Mutex<Open>,
    refusals: LogLimit,
    what: &'static str,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    Client,
}

impl Counter {
    pub fn new(limits: Limits, what: &'static str) -> Arc<Counter> {
        Arc::new(Counter {
            limits,
            open: Mutex::new(Open::default()),
            refusals: LogLimit::default(),
            what,
        })
    }

    /// A slot for a connection from `ip`, or the limit it would pass
    /// (logged, at most every 10 s).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.per_client.get(&key).copied().unwrap_or(0);
        let full = if open.total >= self.limits.max_connections {
            Some(Full::Total)
        } else if mine >= self.limits.max_per_client {
            Some(Full::Client)
        } else {
            None
        };
        if let Some(full) = full {
            drop(open);
            if let Some(more) = self.refusals.pass() {
                let what = self.what;
                match full {
                    Full::Total => tracing::warn!(
                        client = %show_key(key),
                        more_since_last = more,
                        "{what}: refused a connection: {} open, the most at once (--max-connections)",
                        self.limits.max_connections
                    ),
                    Full::Client => tracing::warn!(
                        client = %show_key(key),
                        more_since_last = more,
                        "{what}: refused a connection: {} open from this client, the most at once (--max-per-client)",
                        self.limits.max_per_client
                    ),
                }
            }
            return Err(full);
        }
        open.total += 1;
        *open.per_client.entry(key).or_insert(0) += 1;
        Ok(Slot {
            counter: self.clone(),
            key,
        })
    }

    fn leave(&self, key: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_client.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.per_client.remove(&key);
            }
        }
    }
}

/// A connection's place in the count, given back when the socket closes.
pub struct Slot {
    counter: Arc<Counter>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counter.leave(self.key);
    }
}

/// A client socket with its slot: hyper hands the socket on to a
/// WebSocket when it upgrades, so the slot lives exactly as long as the
/// connection, whatever it became.
struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Answers a connection past a limit with 503 and closes it.
fn refuse(mut stream: TcpStream, full: Full, lingering: &Arc<AtomicUsize>) {
    let reason = match full {
        Full::Total => "too many connections\n",
        Full::Client => "too many connections from your address\n",
    };
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{reason}",
        reason.len()
    );
    if lingering.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
        lingering.fetch_sub(1, Ordering::Relaxed);
        // A fresh socket's send buffer is empty: this write does not block.
        let _ = stream.try_write(response.as_bytes());
        return;
    }
    let lingering = lingering.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER, async {
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut drained = 0;
            while drained < 64 * 1024 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            io::Result::Ok(())
        })
        .await;
        lingering.fetch_sub(1, Ordering::Relaxed);
    });
}

/// How many connections fit the process's file-descriptor limit (which
/// `main` has raised to the hard limit) when each takes `per_connection`
/// and `reserve` are kept back; warns when that is fewer than `wanted`.
/// Past the limit, accepting fails and the listener stops answering
/// anyone; a 503 from the count is the better refusal.
pub fn fit_to_fd_limit(wanted: usize, per_connection: usize, reserve: usize, flag: &str) -> usize {
    let needed = wanted
        .saturating_mul(per_connection)
        .saturating_add(reserve) as u64;
    let Some(limit) = crate::setup::fd_limit() else {
        return wanted;
    };
    if limit >= needed {
        return wanted;
    }
    let fits = (limit.saturating_sub(reserve as u64) / per_connection as u64).max(1) as usize;
    tracing::warn!(
        "{flag} {wanted} needs {needed} file descriptors but the limit is {limit} (ulimit -n): serving at most {fits} connections"
    );
    fits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        assert_eq!(show_key(client_key(a)), "2001:db8:1:2::/64");
        // v4-mapped addresses are the IPv4 client they carry.
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_ne!(client_key(v4), client_key("192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn limits_count_clients_and_the_total() {
        let counter = Arc::new(Counter {
            limits: Limits {
                header_timeout: Duration::from_secs(1),
                max_connections: 3,
                max_per_client: 2,
            },
            open: Mutex::new(Open::default()),
            refusals: LogLimit::default(),
            what: "test",
        });
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let a = counter.admit(one).unwrap();
        let _b = counter.admit(same_64).unwrap();
        assert_eq!(counter.admit(one).err(), Some(Full::Client));
        let _c = counter.admit(other).unwrap();
        assert_eq!(counter.admit(other).err(), Some(Full::Total));
        drop(a);
        assert!(
            counter.admit(one).is_ok(),
            "a closed connection gives its slot back"
        );
    }
}
