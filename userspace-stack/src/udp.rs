//! UDP through the tunnel: bound sockets with `send_to` / `recv_from`, and
//! the gateway's accept-any sockets.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;

use crate::slots::Key;
use crate::stack::{from_endpoint, to_endpoint, Accepted, Protocol, Stack};

/// A UDP socket of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpId(pub(crate) Key);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    #[error("operation would block")]
    WouldBlock,
    #[error("no such socket")]
    InvalidHandle,
    #[error("no free local port")]
    NoPorts,
    #[error("no tunnel address of the destination's family")]
    NoRoute,
    #[error("invalid address")]
    Unaddressable,
    #[error("datagram too large for the socket buffer")]
    TooLarge,
    #[error("port already in use")]
    InUse,
}

pub(crate) struct UdpEntry {
    pub handle: SocketHandle,
    pub local: SocketAddr,
    /// Ephemeral or claimed port to release.
    pub port: Option<u16>,
}

/// Datagrams and bytes each UDP socket buffers per direction.
const PACKETS: usize = 256;
const BYTES: usize = 256 * 1024;

fn new_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; PACKETS], vec![0; BYTES]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; PACKETS], vec![0; BYTES]),
    )
}

impl Stack {
    /// Binds a socket: to `port` of the tunnel addresses, or an ephemeral
    /// port when `None`.
    pub fn udp_bind(&mut self, port: Option<u16>) -> Result<UdpId, UdpError> {
        let port = match port {
            Some(0) | None => self.ports.allocate().ok_or(UdpError::NoPorts)?,
            Some(p) => {
                if !self.ports.claim(p) {
                    return Err(UdpError::InUse);
                }
                p
            }
        };
        let mut socket = new_socket();
        if socket.bind(port).is_err() {
            self.ports.release(port);
            return Err(UdpError::Unaddressable);
        }
        let handle = self.sockets.add(socket);
        let local = SocketAddr::new(self.options.addresses[0].addr(), port);
        Ok(UdpId(self.udp.insert(UdpEntry {
            handle,
            local,
            port: Some(port),
        })))
    }

    pub fn udp_local(&self, id: UdpId) -> Result<SocketAddr, UdpError> {
        Ok(self.udp.get(id.0).ok_or(UdpError::InvalidHandle)?.local)
    }

    fn udp_socket(&mut self, id: UdpId) -> Result<&mut udp::Socket<'static>, UdpError> {
        let entry = self.udp.get(id.0).ok_or(UdpError::InvalidHandle)?;
        Ok(self.sockets.get_mut::<udp::Socket>(entry.handle))
    }

    /// Queues one datagram to `dst`; it leaves on the next poll.
    pub fn udp_send_to(
        &mut self,
        id: UdpId,
        payload: &[u8],
        dst: SocketAddr,
    ) -> Result<(), UdpError> {
        if dst.port() == 0 || dst.ip().is_unspecified() {
            return Err(UdpError::Unaddressable);
        }
        if self.local_ip_for(dst.ip()).is_none() {
            return Err(UdpError::NoRoute);
        }
        let socket = self.udp_socket(id)?;
        match socket.send_slice(payload, to_endpoint(dst)) {
            Ok(()) => Ok(()),
            Err(udp::SendError::BufferFull) if payload.len() > BYTES => Err(UdpError::TooLarge),
            Err(udp::SendError::BufferFull) => Err(UdpError::WouldBlock),
            Err(udp::SendError::Unaddressable) => Err(UdpError::Unaddressable),
        }
    }

    /// Receives one datagram into `buf` (truncated if `buf` is short) and
    /// its sender.
    pub fn udp_recv_from(
        &mut self,
        id: UdpId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), UdpError> {
        let socket = self.udp_socket(id)?;
        match socket.recv() {
            Ok((data, meta)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok((n, from_endpoint(meta.endpoint)))
            }
            Err(_) => Err(UdpError::WouldBlock),
        }
    }

    pub fn poll_udp_recv_from(
        &mut self,
        cx: &mut Context<'_>,
        id: UdpId,
        buf: &mut [u8],
    ) -> Poll<Result<(usize, SocketAddr), UdpError>> {
        match self.udp_recv_from(id, buf) {
            Err(UdpError::WouldBlock) => {
                if let Ok(socket) = self.udp_socket(id) {
                    socket.register_recv_waker(cx.waker());
                }
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }

    /// Wakes `cx` when a datagram can be sent again.
    pub fn register_udp_send_waker(&mut self, cx: &mut Context<'_>, id: UdpId) {
        if let Ok(socket) = self.udp_socket(id) {
            socket.register_send_waker(cx.waker());
        }
    }

    pub fn udp_close(&mut self, id: UdpId) {
        if let Some(entry) = self.udp.remove(id.0) {
            self.sockets.remove(entry.handle);
            self.udp_any.retain(|_, v| *v != id);
            if let Some(port) = entry.port {
                self.ports.release(port);
            }
        }
    }

    /// A datagram to `dst` arrived at a gateway: make its socket if this is
    /// the first and the policy allows.
    pub(crate) fn accept_udp(&mut self, dst: SocketAddr) {
        if self.udp_any.contains_key(&dst) || self.is_local_port(dst) {
            return;
        }
        let any = self.accept_any.as_mut().expect("checked by caller");
        if !(any.policy)(Protocol::Udp, dst) {
            self.stats.refused_by_policy += 1;
            return;
        }
        let mut socket = new_socket();
        if socket.bind(to_endpoint(dst)).is_err() {
            return;
        }
        let handle = self.sockets.add(socket);
        let id = UdpId(self.udp.insert(UdpEntry {
            handle,
            local: dst,
            port: None,
        }));
        self.udp_any.insert(dst, id);
        self.accepted.push_back(Accepted::Udp {
            socket: id,
            local: dst,
        });
    }
}
