//! One page's datagrams, both ways: WebSocket messages to GSO batches on
//! the upstream's UDP socket, and GRO batches from it to WebSocket
//! messages.
//!
//! With the batching subprotocol ([`underpass_core::relay_batch`]) a
//! message carries every datagram that one read from either side gave,
//! up to 64 KiB; without it a message is one datagram, as pages that ask
//! for nothing expect.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use rand::{Rng, SeedableRng};
use underpass_core::gso::MAX_PAYLOAD_V4;
use underpass_core::relay_batch::{self, Batcher};

use super::{close, refuse, Relay};
use crate::udp::{RecvBatch, UdpIo};

/// GRO buffers (64 KiB each) per connection: one `recvmmsg` takes up to
/// this many; kept small because every open connection holds them.
const RECV_BUFFERS: usize = 4;

/// `recvmmsg` calls before what they gave goes to the WebSocket.
const READS_PER_FLUSH: usize = 4;

/// How a connection's datagrams travel in WebSocket messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One datagram per binary message.
    Plain,
    /// The batching subprotocol.
    Batched,
}

/// Drops datagrams at random, both ways: an emulated lossy path between
/// page and relay, for benchmarks only (`--bench-loss`).
pub struct Loss {
    rate: f64,
    rng: rand::rngs::StdRng,
}

impl Loss {
    pub fn new(rate: f64) -> Loss {
        Loss {
            rate: rate.clamp(0.0, 1.0),
            rng: rand::rngs::StdRng::from_entropy(),
        }
    }

    pub fn drops(&mut self) -> bool {
        self.rate > 0.0 && self.rng.gen_bool(self.rate)
    }
}

/// Carries datagrams between `socket` and `upstream` until either side
/// ends, the page breaks the framing, or nothing moves for the idle time.
pub async fn pump(
    relay: &Relay,
    mut socket: WebSocket,
    upstream: SocketAddr,
    framing: Framing,
    client: SocketAddr,
) -> io::Result<()> {
    let unspecified = match upstream {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let udp = UdpIo::bind(SocketAddr::new(unspecified, 0))?;
    // Only the upstream's datagrams come back.
    udp.connect(upstream).await?;
    let mut recv = RecvBatch::with_buffers(RECV_BUFFERS);
    // One send's worth, reused: a page's message costs at most its own
    // size here, however its datagrams are sized.
    let mut gso = Vec::with_capacity(relay_batch::MAX_MESSAGE);
    let mut batcher = Batcher::new();
    let mut outgoing: Vec<Vec<u8>> = Vec::new();
    let mut loss = Loss::new(relay.bench_loss);
    let idle = tokio::time::sleep(relay.idle);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(message))) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + relay.idle);
                    match framing {
                        Framing::Plain => {
                            if !message.is_empty() && !loss.drops() {
                                send(&udp, upstream, message.len(), &message, 1).await;
                            }
                        }
                        Framing::Batched => match relay_batch::split(&message) {
                            Ok(mut datagrams) => {
                                datagrams.retain(|_| !loss.drops());
                                send_batched(&udp, upstream, &datagrams, &mut gso).await;
                            }
                            Err(e) => {
                                tracing::info!(%client, error = %e, "relay: malformed batch, connection closed");
                                let reason = format!("malformed batch: {e}");
                                refuse(socket, close::MALFORMED_BATCH, &reason).await;
                                return Ok(());
                            }
                        },
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    refuse(socket, close::TEXT_FRAME, "text frames are not WireGuard datagrams").await;
                    return Ok(());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Err(e)) => return Err(io::Error::other(e)),
            },
            readable = poll_fn(|cx| udp.poll_recv_ready(cx)) => {
                if readable.is_err() {
                    continue;
                }
                let mut any = false;
                for _ in 0..READS_PER_FLUSH {
                    let n = match udp.try_recv(&mut recv) {
                        Ok(n) => n,
                        // WouldBlock, or an ICMP error the peer may recover from.
                        Err(_) => break,
                    };
                    any = true;
                    recv.for_each(n, |_, datagram| {
                        if datagram.is_empty() || loss.drops() {
                            return;
                        }
                        match framing {
                            Framing::Plain => outgoing.push(datagram.to_vec()),
                            Framing::Batched => {
                                if !batcher.push(datagram) {
                                    outgoing.push(batcher.take());
                                    // Every UDP datagram fits an empty batch.
                                    batcher.push(datagram);
                                }
                            }
                        }
                    });
                    if n < RECV_BUFFERS {
                        break;
                    }
                }
                if !batcher.is_empty() {
                    outgoing.push(batcher.take());
                }
                if any {
                    idle.as_mut().reset(tokio::time::Instant::now() + relay.idle);
                }
                if outgoing.is_empty() {
                    continue;
                }
                for message in outgoing.drain(..) {
                    if socket.feed(Message::Binary(message.into())).await.is_err() {
                        return Ok(());
                    }
                }
                if socket.flush().await.is_err() {
                    return Ok(());
                }
            }
            () = &mut idle => {
                refuse(socket, close::IDLE, "idle").await;
                return Ok(());
            }
        }
    }
}

/// Sends `datagrams` in order, as GSO batches: runs of equal length (a
/// shorter one may end a run) within the kernel's segment and size limits,
/// copied through `buf`.
async fn send_batched(udp: &UdpIo, upstream: SocketAddr, datagrams: &[&[u8]], buf: &mut Vec<u8>) {
    let mut rest = datagrams;
    while let [first, ..] = rest {
        let size = first.len();
        let max = udp.max_segments();
        buf.clear();
        let mut taken = 0;
        for d in rest {
            if taken == max || d.len() > size || buf.len() + d.len() > MAX_PAYLOAD_V4 {
                break;
            }
            buf.extend_from_slice(d);
            taken += 1;
            if d.len() < size {
                break;
            }
        }
        // A single datagram over the UDP limit: the kernel refuses it.
        let taken = taken.max(1);
        if buf.is_empty() {
            buf.extend_from_slice(first);
        }
        send(udp, upstream, size, buf, taken).await;
        rest = &rest[taken..];
    }
}

/// One send of `segments` datagrams of `size` bytes (the last may be
/// shorter), waiting while the socket is full: the page's TCP slows down
/// rather than losing datagrams here. If the kernel refuses GSO, quinn-udp
/// switches it off and the datagrams go again one by one.
async fn send(udp: &UdpIo, dst: SocketAddr, size: usize, contents: &[u8], segments: usize) {
    loop {
        match udp.try_send(dst, size, contents) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if poll_fn(|cx| udp.poll_send_ready(cx)).await.is_err() {
                    return;
                }
            }
            Err(_) if segments > 1 && udp.max_segments() < segments => {
                for datagram in contents.chunks(size.max(1)) {
                    Box::pin(send(udp, dst, size, datagram, 1)).await;
                }
                return;
            }
            Err(e) => {
                tracing::debug!(%dst, error = %e, "relay: UDP send failed; datagrams dropped");
                return;
            }
        }
    }
}
