//! The one place that touches the WireGuard UDP socket: quinn-udp over a
//! tokio socket, sending GSO batches and receiving GRO batches.
//!
//! Falls back by itself: quinn-udp reports one segment at a time where the
//! kernel has no GSO (or refuses it once), and GRO off means one datagram
//! per buffer.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;

/// The socket buffer size we ask for; 4 MiB is what an unprivileged process
/// may have on common kernels (`net.core.rmem_max`).
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;
/// Datagram batches read per `recvmmsg`.
pub const RECV_BATCH: usize = 32;
/// Room per receive buffer: a full GRO batch.
const RECV_BUFFER: usize = 64 * 1024;

pub struct UdpIo {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// Whether the socket is IPv6 (dual-stack): IPv4 peers are then sent to
    /// as v4-mapped addresses.
    v6: bool,
}

/// A block of receive buffers, reused for every batch.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::with_buffers(RECV_BATCH)
    }
}

impl RecvBatch {
    /// `buffers` GRO buffers of 64 KiB: one read takes up to that many
    /// messages.
    pub fn with_buffers(buffers: usize) -> Self {
        let buffers = buffers.max(1);
        RecvBatch {
            bufs: (0..buffers).map(|_| vec![0u8; RECV_BUFFER]).collect(),
            meta: vec![RecvMeta::default(); buffers],
        }
    }

    /// Every datagram of the last `n` messages, split at their GRO stride.
    pub fn for_each(&mut self, n: usize, mut f: impl FnMut(SocketAddr, &mut [u8])) {
        for (buf, meta) in self.bufs.iter_mut().zip(&self.meta).take(n) {
            let from = SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port());
            let stride = meta.stride.max(1);
            for datagram in buf[..meta.len].chunks_mut(stride) {
                f(from, datagram);
            }
        }
    }
}

fn socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

impl UdpIo {
    /// Binds `addr`. An unspecified IPv6 address is bound dual-stack; if the
    /// host has no IPv6, `[::]:port` falls back to `0.0.0.0:port`.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpIo> {
        let sock = match socket(addr) {
            Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
                tracing::debug!(error = %e, "no IPv6 socket; using IPv4 only");
                socket(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), addr.port()))?
            }
            other => other?,
        };
        let std: std::net::UdpSocket = sock.into();
        let socket = tokio::net::UdpSocket::from_std(std)?;
        let state = UdpSocketState::new((&socket).into())?;
        for (what, result) in [
            (
                "send",
                state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER),
            ),
            (
                "receive",
                state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER),
            ),
        ] {
            if let Err(e) = result {
                tracing::debug!(error = %e, "could not set the UDP {what} buffer");
            }
        }
        let v6 = socket.local_addr()?.is_ipv6();
        Ok(UdpIo { socket, state, v6 })
    }

    /// Receives only from `peer` from now on (a relay connection's socket
    /// serves one upstream).
    pub async fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        self.socket.connect(self.wire_addr(peer)).await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Segments the kernel takes in one send right now.
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    pub fn buffer_sizes(&self) -> (usize, usize) {
        let sock = (&self.socket).into();
        let send = self.state.send_buffer_size(sock).unwrap_or(0);
        let recv = self
            .state
            .recv_buffer_size((&self.socket).into())
            .unwrap_or(0);
        (send, recv)
    }

    fn wire_addr(&self, dst: SocketAddr) -> SocketAddr {
        match dst.ip() {
            IpAddr::V4(v4) if self.v6 => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), dst.port())
            }
            _ => dst,
        }
    }

    /// Sends one batch: `contents` are datagrams of `segment_size` bytes
    /// (the last may be shorter) to `dst`.
    pub fn try_send(
        &self,
        dst: SocketAddr,
        segment_size: usize,
        contents: &[u8],
    ) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: self.wire_addr(dst),
            ecn: None,
            contents,
            segment_size: (contents.len() > segment_size).then_some(segment_size),
            src_ip: None,
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        })
    }

    pub fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_send_ready(cx)
    }

    pub fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_recv_ready(cx)
    }

    /// Reads one batch of messages (each possibly GRO-coalesced) without
    /// waiting; returns how many.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> =
            batch.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut slices, &mut batch.meta)
        })
    }
}
