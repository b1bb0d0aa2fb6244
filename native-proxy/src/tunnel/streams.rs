//! The handles tasks read and write through: a TCP connection and a UDP
//! socket on the tunnel's stack, each borrowing the engine only for the
//! length of one poll.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use underpass_stack::{ConnId, TcpError, UdpError, UdpId};

use super::{io_error, Tunnel};

/// A UDP socket on the tunnel's userspace stack.
pub struct TunnelUdp {
    pub(super) tunnel: Tunnel,
    pub(super) id: UdpId,
}

impl Tunnel {
    /// Binds a UDP socket on an ephemeral port of the tunnel address.
    pub fn udp_bind(&self) -> Result<TunnelUdp, UdpError> {
        let id = self.0.borrow_mut().engine.stack_mut().udp_bind(None)?;
        Ok(TunnelUdp {
            tunnel: self.clone(),
            id,
        })
    }

    /// Wraps a socket accept-any made (gateway).
    pub fn udp(&self, id: UdpId) -> TunnelUdp {
        TunnelUdp {
            tunnel: self.clone(),
            id,
        }
    }
}

impl TunnelUdp {
    /// Queues a datagram to `dst`; waits while the socket's buffer is full.
    pub async fn send_to(&self, payload: &[u8], dst: SocketAddr) -> Result<(), UdpError> {
        poll_fn(|cx| {
            let mut e = self.tunnel.0.borrow_mut();
            match e.engine.stack_mut().udp_send_to(self.id, payload, dst) {
                Ok(()) => {
                    e.wake();
                    Poll::Ready(Ok(()))
                }
                Err(UdpError::WouldBlock) => {
                    e.engine.stack_mut().register_udp_send_waker(cx, self.id);
                    Poll::Pending
                }
                Err(err) => Poll::Ready(Err(err)),
            }
        })
        .await
    }

    /// Waits for a datagram; returns its length and sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), UdpError> {
        poll_fn(|cx| {
            self.tunnel
                .0
                .borrow_mut()
                .engine
                .stack_mut()
                .poll_udp_recv_from(cx, self.id, buf)
        })
        .await
    }
}

impl Drop for TunnelUdp {
    fn drop(&mut self) {
        if let Ok(mut e) = self.tunnel.0.try_borrow_mut() {
            e.engine.stack_mut().udp_close(self.id);
        }
    }
}

/// A TCP connection through the tunnel, for tokio's IO traits.
pub struct TunnelStream {
    pub(super) tunnel: Tunnel,
    pub(super) conn: ConnId,
}

impl TunnelStream {
    pub fn id(&self) -> ConnId {
        self.conn
    }

    /// Fills free room in the send buffer with `fill` (a host socket's
    /// `try_read`), which says how many bytes it put there: bytes move from
    /// the kernel into the stack with no copy buffer in between. Pending
    /// while the send buffer is full.
    pub fn poll_fill(
        &self,
        cx: &mut Context<'_>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        let mut e = self.tunnel.0.borrow_mut();
        match e.engine.stack_mut().tcp_write_with(self.conn, fill) {
            Ok(n) => {
                if n > 0 {
                    e.wake();
                }
                Poll::Ready(Ok(n))
            }
            Err(TcpError::WouldBlock) => {
                e.engine.stack_mut().register_write_waker(cx, self.conn);
                Poll::Pending
            }
            Err(err) => Poll::Ready(Err(io_error(err))),
        }
    }

    /// Hands the bytes at the front of the receive buffer to `drain` (a host
    /// socket's `try_write`), which says how many it took. `Ready(Ok(0))` is
    /// the end of the stream. Pending while there is nothing to read, and
    /// also when `drain` took nothing (the caller knows why).
    pub fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        drain: impl FnOnce(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        let mut e = self.tunnel.0.borrow_mut();
        match e.engine.stack_mut().tcp_read_with(self.conn, drain) {
            Ok(n) => {
                if n > 0 {
                    // The window opened: the stack may owe the peer an update.
                    e.wake();
                }
                Poll::Ready(Ok(n))
            }
            Err(TcpError::WouldBlock) => {
                e.engine.stack_mut().register_read_waker(cx, self.conn);
                Poll::Pending
            }
            Err(err) => Poll::Ready(Err(io_error(err))),
        }
    }

    /// Half-close: a FIN follows the bytes already written.
    pub fn shutdown_write(&self) -> io::Result<()> {
        let mut e = self.tunnel.0.borrow_mut();
        let result = e
            .engine
            .stack_mut()
            .tcp_shutdown(self.conn)
            .map_err(io_error);
        e.wake();
        result
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut e = self.tunnel.0.borrow_mut();
        let conn = self.conn;
        match e
            .engine
            .stack_mut()
            .poll_read(cx, conn, buf.initialize_unfilled())
        {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                if n > 0 {
                    // The window opened: the stack may owe the peer an update.
                    e.wake();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(io_error(err))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut e = self.tunnel.0.borrow_mut();
        match e.engine.stack_mut().poll_write(cx, self.conn, buf) {
            Poll::Ready(Ok(n)) => {
                e.wake();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(io_error(err))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        match self.tunnel.0.try_borrow_mut() {
            Ok(mut e) => {
                e.engine.stack_mut().tcp_close(self.conn);
                e.wake();
            }
            // Streams are only dropped by tasks, never inside the loop's
            // turn; if that ever changes, this says so.
            Err(_) => tracing::error!(
                "tunnel stream dropped while the engine was borrowed; its socket leaks"
            ),
        }
    }
}
