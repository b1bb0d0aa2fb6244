//! UDP through the tunnel: bound sockets with `send_to` / `recv_from`, and
//! the gateway's accept-any sockets.

use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;

use crate::slots::Key;
use crate::stack::{from_endpoint, to_endpoint, Accepted, Protocol, Stack};

/// A UDP socket of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpId(pub(crate) Key);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
/// Why a UDP operation failed.
#[allow(missing_docs)] // each variant's #[error] message says what it is
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

/// How many UDP flows a gateway's accept-any takes in. Each is a socket
/// here (one per destination) and, in the gateway, a host socket: a file
/// descriptor and a local port of the host.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// Accept-any UDP sockets open at once; past it a datagram to a new
    /// destination is dropped, without an ICMP answer.
    pub max_flows: usize,
    /// Accept-any UDP sockets open at once that one source address (one
    /// gateway client) opened, so one client cannot take them all.
    pub max_flows_per_source: usize,
}

/// [`UdpOptions::max_flows`]'s default. In a gateway a flow costs a host
/// socket and one of the host's ~28,000 ephemeral ports: 4,096 leaves most
/// of them to everyone else.
pub const DEFAULT_MAX_UDP_FLOWS: usize = 4096;
/// [`UdpOptions::max_flows_per_source`]'s default.
pub const DEFAULT_MAX_UDP_FLOWS_PER_SOURCE: usize = 1024;

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            max_flows: DEFAULT_MAX_UDP_FLOWS,
            max_flows_per_source: DEFAULT_MAX_UDP_FLOWS_PER_SOURCE,
        }
    }
}

pub(crate) struct UdpEntry {
    pub handle: SocketHandle,
    pub local: SocketAddr,
    /// Ephemeral or claimed port to release.
    pub port: Option<u16>,
    /// Accept-any: the source address whose datagram opened the socket.
    pub source: Option<IpAddr>,
}

/// Datagrams and bytes a UDP socket buffers in one direction.
#[derive(Clone, Copy)]
struct Room {
    packets: usize,
    bytes: usize,
}

/// A bound socket's, each way.
const BOUND: Room = Room {
    packets: 256,
    bytes: 256 * 1024,
};
/// A gateway's accept-any socket (one per destination a client names),
/// from the client: all the datagrams of one flow that one turn of the
/// loop reads must fit, as its task drains them only after.
const ACCEPTED_RX: Room = Room {
    packets: 128,
    bytes: 256 * 1024,
};
/// To the client: small, as a full buffer makes the gateway's task wait
/// (the host socket holds the rest) rather than drop, and the loop empties
/// it every turn (16 KiB a turn is over a Gbit/s at 10,000 turns a
/// second).
///
/// What a flow costs in memory is mostly here: the packet records of both
/// directions are written when made (~56 bytes each), and a buffer under
/// glibc's mmap threshold comes zeroed from the heap, all of it resident;
/// the receive side's 256 KiB is above it, fresh pages that cost only
/// what datagrams touch. 32 KiB and 288 records made 50 KiB a flow.
const ACCEPTED_TX: Room = Room {
    packets: 16,
    bytes: 16 * 1024,
};

fn new_socket(rx: Room, tx: Room) -> udp::Socket<'static> {
    let buffer = |r: Room| {
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; r.packets],
            vec![0; r.bytes],
        )
    };
    udp::Socket::new(buffer(rx), buffer(tx))
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
        let mut socket = new_socket(BOUND, BOUND);
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
            source: None,
        })))
    }

    /// The socket's local address.
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
        let capacity = socket.payload_send_capacity();
        match socket.send_slice(payload, to_endpoint(dst)) {
            Ok(()) => Ok(()),
            Err(udp::SendError::BufferFull) if payload.len() > capacity => Err(UdpError::TooLarge),
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

    /// Receives a datagram into `buf`, with its length and sender; `Pending` (with `cx` woken later) when none waits.
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

    /// Closes the socket; datagrams queued for it are dropped.
    pub fn udp_close(&mut self, id: UdpId) {
        if let Some(entry) = self.udp.remove(id.0) {
            self.sockets.remove(entry.handle);
            if let Some(port) = entry.port {
                self.ports.release(port);
            } else if self.udp_any.get(&entry.local) == Some(&id) {
                self.udp_any.remove(&entry.local);
            }
            if let (Some(source), Some(any)) = (entry.source, self.accept_any.as_mut()) {
                if let Some(n) = any.udp_per_source.get_mut(&source) {
                    *n -= 1;
                    if *n == 0 {
                        any.udp_per_source.remove(&source);
                    }
                }
            }
        }
    }

    /// A datagram from `src` to `dst` arrived at a gateway: make its socket
    /// if this is the first and the policy and the limits allow. False if
    /// the datagram must be dropped unanswered (a limit).
    pub(crate) fn accept_udp(&mut self, src: SocketAddr, dst: SocketAddr) -> bool {
        if self.udp_any.contains_key(&dst) || self.is_local_port(dst) {
            return true;
        }
        let any = self.accept_any.as_mut().expect("checked by caller");
        if !(any.policy)(Protocol::Udp, dst) {
            self.stats.refused_by_policy += 1;
            return true; // smoltcp answers with ICMP port unreachable
        }
        let limits = &self.options.udp;
        if self.udp_any.len() >= limits.max_flows
            || any.udp_per_source.get(&src.ip()).copied().unwrap_or(0)
                >= limits.max_flows_per_source
        {
            // No ICMP answer: a client spraying destinations gets nothing
            // back for its effort, and costs the gateway no reply.
            self.stats.udp_refused_by_limit += 1;
            tracing::debug!(%src, %dst, "accept-any: UDP flow limit reached");
            return false;
        }
        let mut socket = new_socket(ACCEPTED_RX, ACCEPTED_TX);
        if socket.bind(to_endpoint(dst)).is_err() {
            return true;
        }
        *any.udp_per_source.entry(src.ip()).or_default() += 1;
        let handle = self.sockets.add(socket);
        let id = UdpId(self.udp.insert(UdpEntry {
            handle,
            local: dst,
            port: None,
            source: Some(src.ip()),
        }));
        self.udp_any.insert(dst, id);
        self.accepted.push_back(Accepted::Udp {
            socket: id,
            local: dst,
        });
        true
    }
}
