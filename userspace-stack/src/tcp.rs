//! TCP through the tunnel: outbound connections, listeners on a tunnel
//! port, and the gateway's accept-any, all behind [`ConnId`] handles.
//!
//! Reads and writes never block: they move what they can and say how much,
//! or return [`TcpError::WouldBlock`]; the `poll_*` forms register a waker
//! instead, which smoltcp wakes on data, buffer space and state changes.
//! A closed handle's socket stays only until its FIN or RST is out.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};

use crate::flow::Flow;
use crate::slots::Key;
use crate::stack::{to_endpoint, Stack};

mod accept_any;
mod listen;

/// A TCP connection of the stack. Stale ids are refused, never aliased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) Key);

/// A listener on a port of the tunnel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub(crate) Key);

/// What went wrong with a connection. Distinct variants for what a user
/// would handle differently (a SOCKS reply code, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is
pub enum TcpError {
    #[error("operation would block")]
    WouldBlock,
    #[error("connection refused")]
    Refused,
    #[error("connection reset by peer")]
    Reset,
    #[error("connection timed out")]
    TimedOut,
    /// The write half was shut down by us.
    #[error("connection closed for writing")]
    WriteClosed,
    /// The id names no connection (closed, or never was).
    #[error("no such connection")]
    InvalidHandle,
    #[error("no free local port")]
    NoPorts,
    #[error("no tunnel address of the destination's family")]
    NoRoute,
    #[error("invalid address")]
    Unaddressable,
    #[error("port already in use")]
    InUse,
    /// [`crate::TcpOptions::max_connections`] are open.
    #[error("too many open connections")]
    TooMany,
    /// The far end's policy forbids the destination (an ICMP
    /// "administratively prohibited" answered the SYN; see `icmp`).
    #[error("connection not allowed by the gateway's policy")]
    Prohibited,
}

/// A connection's state as a user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// Its SYN is not answered yet.
    Connecting,
    /// Open both ways.
    Established,
    /// The peer finished sending (we may still send).
    ReadClosed,
    /// We finished sending (we may still read).
    WriteClosed,
    /// Closed both ways, or reset.
    Closed,
}

pub(crate) struct Conn {
    pub handle: SocketHandle,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Our ephemeral port, released when the socket goes.
    pub port: Option<u16>,
    /// An RST arrived for this connection.
    pub reset: bool,
    /// It reached Established at some point.
    pub established: bool,
    /// We aborted it.
    pub aborted: bool,
    /// An "administratively prohibited" answered its SYN.
    pub prohibited: bool,
    /// Accept-any took it in: it counts against its source's limit.
    pub from_accept_any: bool,
}

pub(crate) struct Listener {
    pub port: u16,
    /// Sockets in Listen state; a few, so a burst of SYNs is not refused.
    pub sockets: Vec<SocketHandle>,
    pub backlog: std::collections::VecDeque<(ConnId, SocketAddr)>,
    pub waker: Option<std::task::Waker>,
}

pub(super) fn duration(d: std::time::Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(d.as_micros() as u64)
}

impl Stack {
    fn conn(&self, id: ConnId) -> Result<&Conn, TcpError> {
        self.conns.get(id.0).ok_or(TcpError::InvalidHandle)
    }

    fn socket(&mut self, id: ConnId) -> Result<(&mut Conn, &mut tcp::Socket<'static>), TcpError> {
        let conn = self.conns.get_mut(id.0).ok_or(TcpError::InvalidHandle)?;
        let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
        if !conn.established
            && matches!(
                socket.state(),
                State::Established | State::CloseWait | State::FinWait1 | State::FinWait2
            )
        {
            conn.established = true;
            // Past the handshake, a connection may wait longer for its peer.
            socket.set_timeout(Some(duration(self.options.tcp.idle_timeout)));
        }
        Ok((conn, socket))
    }

    /// Why a closed connection closed.
    fn closed_error(conn: &Conn) -> TcpError {
        if conn.prohibited {
            TcpError::Prohibited
        } else if conn.reset || conn.aborted {
            if conn.established {
                TcpError::Reset
            } else {
                TcpError::Refused
            }
        } else {
            TcpError::TimedOut
        }
    }

    /// Opens a connection to `remote` through the tunnel from an ephemeral
    /// port. Wait for it with [`Stack::poll_connected`].
    pub fn tcp_connect(&mut self, remote: SocketAddr) -> Result<ConnId, TcpError> {
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(TcpError::Unaddressable);
        }
        if self.conns.len() >= self.options.tcp.max_connections {
            self.stats.refused_by_limit += 1;
            return Err(TcpError::TooMany);
        }
        let local_ip = self.local_ip_for(remote.ip()).ok_or(TcpError::NoRoute)?;
        let port = self.ports.allocate().ok_or(TcpError::NoPorts)?;
        let local = SocketAddr::new(local_ip, port);
        let timeout = duration(self.options.tcp.connect_timeout);
        let added = self.add_tcp_socket(|socket, iface| {
            socket.set_timeout(Some(timeout));
            socket.connect(iface.context(), to_endpoint(remote), to_endpoint(local))
        });
        let Ok(handle) = added else {
            self.ports.release(port);
            return Err(TcpError::Unaddressable);
        };
        let id = ConnId(self.conns.insert(Conn {
            handle,
            local,
            remote,
            port: Some(port),
            reset: false,
            established: false,
            aborted: false,
            prohibited: false,
            from_accept_any: false,
        }));
        self.by_tuple.insert((local, remote), Flow::new(id, None));
        Ok(id)
    }

    /// Ready once the connection is established (or failed).
    pub fn poll_connected(
        &mut self,
        cx: &mut Context<'_>,
        id: ConnId,
    ) -> Poll<Result<(), TcpError>> {
        let (conn, socket) = match self.socket(id) {
            Ok(x) => x,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match socket.state() {
            State::Closed | State::TimeWait if !conn.established => {
                Poll::Ready(Err(Self::closed_error(conn)))
            }
            State::Listen | State::SynSent | State::SynReceived => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            _ => Poll::Ready(Ok(())),
        }
    }

    /// The connection's state.
    pub fn tcp_state(&self, id: ConnId) -> Result<TcpState, TcpError> {
        let conn = self.conn(id)?;
        let socket = self.sockets.get::<tcp::Socket>(conn.handle);
        Ok(match socket.state() {
            State::Listen | State::SynSent | State::SynReceived => TcpState::Connecting,
            State::Established => TcpState::Established,
            State::CloseWait => TcpState::ReadClosed,
            State::FinWait1 | State::FinWait2 => TcpState::WriteClosed,
            _ => TcpState::Closed,
        })
    }

    /// The connection's local and remote address.
    pub fn tcp_endpoints(&self, id: ConnId) -> Result<(SocketAddr, SocketAddr), TcpError> {
        let conn = self.conn(id)?;
        Ok((conn.local, conn.remote))
    }

    /// Reads into `buf`: `Ok(0)` means the peer finished sending (EOF).
    pub fn tcp_read(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, TcpError> {
        self.tcp_read_with(id, |data| {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            n
        })
    }

    /// Reads in place: `f` gets the bytes at the front of the receive buffer
    /// (one contiguous piece) and says how many it consumed, so they can go
    /// straight into a host socket without a copy. `Ok(0)` is EOF.
    pub fn tcp_read_with(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&[u8]) -> usize,
    ) -> Result<usize, TcpError> {
        let (conn, socket) = self.socket(id)?;
        let (tuple, handle) = ((conn.local, conn.remote), conn.handle);
        let mut at = std::ptr::null();
        match socket.recv(|data| {
            at = data.as_ptr();
            let n = if data.is_empty() {
                0
            } else {
                f(data).min(data.len())
            };
            (n, n)
        }) {
            Ok(0) => Err(TcpError::WouldBlock),
            Ok(n) => {
                let window = self.by_tuple.get(&tuple).map_or(usize::MAX, Flow::window);
                let drain = self.after_read(handle, at, n, window);
                if drain == crate::memory::Drain::Later {
                    self.note_drained(id, tuple, crate::memory::Side::Receive);
                }
                let limits = self.limits();
                if let Some(flow) = self.by_tuple.get_mut(&tuple) {
                    flow.on_read(n);
                    if drain == crate::memory::Drain::Now {
                        flow.quiet(true, false, &limits, &mut self.budget);
                    }
                }
                Ok(n)
            }
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(tcp::RecvError::InvalidState) => match socket.state() {
                State::Listen | State::SynSent | State::SynReceived => Err(TcpError::WouldBlock),
                _ => Err(Self::closed_error(conn)),
            },
        }
    }

    /// Reads what arrived into `buf`: `Ready(Ok(0))` at the end of the stream; `Pending` (with `cx` woken later) when nothing has.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        id: ConnId,
        buf: &mut [u8],
    ) -> Poll<Result<usize, TcpError>> {
        match self.tcp_read(id, buf) {
            Err(TcpError::WouldBlock) => {
                self.register_read_waker(cx, id);
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }

    /// Wakes `cx` when there is something to read (or the connection ends).
    pub fn register_read_waker(&mut self, cx: &mut Context<'_>, id: ConnId) {
        if let Ok((_, socket)) = self.socket(id) {
            socket.register_recv_waker(cx.waker());
        }
    }

    /// Wakes `cx` when there is room to write (or the connection ends).
    pub fn register_write_waker(&mut self, cx: &mut Context<'_>, id: ConnId) {
        if let Ok((_, socket)) = self.socket(id) {
            socket.register_send_waker(cx.waker());
        }
    }

    /// Writes as much of `buf` as fits in the send buffer.
    pub fn tcp_write(&mut self, id: ConnId, buf: &[u8]) -> Result<usize, TcpError> {
        if buf.is_empty() {
            return match self.tcp_write_with(id, |_| 0) {
                Err(TcpError::WouldBlock) => Ok(0),
                other => other,
            };
        }
        self.tcp_write_with(id, |room| {
            let n = room.len().min(buf.len());
            room[..n].copy_from_slice(&buf[..n]);
            n
        })
    }

    /// Writes in place: `f` gets free room at the end of the send buffer
    /// (one contiguous piece, never empty) and says how much it filled, so
    /// a host socket can be read straight into it without a copy buffer.
    /// `Err(WouldBlock)` when there is no room (`f` is not called then).
    pub fn tcp_write_with(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, TcpError> {
        let tuple = self.conn(id).map(|c| (c.local, c.remote))?;
        let buffer = self.options.tcp.tx_buffer;
        let allowance = match self.by_tuple.get_mut(&tuple) {
            Some(flow) => flow.send_allowance(buffer, &mut self.budget),
            None => buffer,
        };
        let (conn, socket) = self.socket(id)?;
        let handle = conn.handle;
        // The application may queue up to its allowance: memory follows
        // what the path can take, not the buffer's size.
        let may = allowance.saturating_sub(socket.send_queue());
        let (mut called, mut at) = (false, std::ptr::null());
        let result = socket.send(|room| {
            let room_len = room.len().min(may);
            if room_len == 0 {
                return (0, 0);
            }
            called = true;
            at = room.as_ptr();
            let n = f(&mut room[..room_len]).min(room_len);
            (n, n)
        });
        match result {
            Ok(0) if !called => Err(TcpError::WouldBlock),
            Ok(n) => {
                self.after_write(handle, at, n, allowance);
                Ok(n)
            }
            Err(tcp::SendError::InvalidState) => match socket.state() {
                State::Listen | State::SynSent | State::SynReceived => Err(TcpError::WouldBlock),
                State::FinWait1
                | State::FinWait2
                | State::Closing
                | State::LastAck
                | State::TimeWait
                    if !conn.reset && !conn.aborted =>
                {
                    Err(TcpError::WriteClosed)
                }
                _ => Err(Self::closed_error(conn)),
            },
        }
    }

    /// Writes what fits of `buf`; `Pending` (with `cx` woken later) when the send buffer is full.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        id: ConnId,
        buf: &[u8],
    ) -> Poll<Result<usize, TcpError>> {
        match self.tcp_write(id, buf) {
            Err(TcpError::WouldBlock) => {
                self.register_write_waker(cx, id);
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }

    /// How the connection's sending goes (congestion window, round trip,
    /// retransmissions), once its handshake is done.
    pub fn tcp_info(&self, id: ConnId) -> Result<Option<crate::SenderInfo>, TcpError> {
        let conn = self.conn(id)?;
        Ok(self
            .by_tuple
            .get(&(conn.local, conn.remote))
            .and_then(|f| f.sender.as_ref())
            .map(crate::sender::Sender::info))
    }

    /// Bytes written but not yet acknowledged by the peer.
    pub fn tcp_unacked(&self, id: ConnId) -> Result<usize, TcpError> {
        let conn = self.conn(id)?;
        Ok(self.sockets.get::<tcp::Socket>(conn.handle).send_queue())
    }

    /// Half-close: sends FIN after the data already written; reading goes on.
    pub fn tcp_shutdown(&mut self, id: ConnId) -> Result<(), TcpError> {
        let handle = self.conn(id)?.handle;
        self.close_socket(handle);
        Ok(())
    }

    /// Sends FIN, or arranges for it. smoltcp, asked to close in
    /// SYN-RECEIVED, forgets to send the FIN at all (it moves to FIN-WAIT-1
    /// and takes the ACK of its SYN for the ACK of that FIN); so such a
    /// close waits until the connection is established.
    fn close_socket(&mut self, handle: SocketHandle) {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        match socket.state() {
            State::SynReceived => {
                if !self.deferred_close.contains(&handle) {
                    self.deferred_close.push(handle);
                }
            }
            // Not synchronised yet: an RST tells the far end not to wait.
            State::SynSent => socket.abort(),
            _ => socket.close(),
        }
    }

    /// Applies closes that waited for their connection to be established.
    pub(crate) fn collect_deferred_close(&mut self) {
        let sockets = &mut self.sockets;
        self.deferred_close.retain(|h| {
            // Deferred sockets leave the set only after leaving this list.
            let socket = sockets.get_mut::<tcp::Socket>(*h);
            match socket.state() {
                State::SynReceived => true,
                _ => {
                    socket.close();
                    false
                }
            }
        });
    }

    /// Sends RST and forgets the connection. For an accept-any connection
    /// still waiting in [`Accepted::Tcp`], this refuses it.
    pub fn tcp_abort(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id.0) {
            conn.aborted = true;
            self.sockets.get_mut::<tcp::Socket>(conn.handle).abort();
        }
        self.release(id);
    }

    /// Fails the connection `(local, remote)` if it is still waiting for
    /// its SYN's answer: the gateway refused it by policy.
    pub(crate) fn tcp_prohibited(&mut self, local: SocketAddr, remote: SocketAddr) {
        let Some(flow) = self.by_tuple.get(&(local, remote)) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(flow.conn.0) else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
        if socket.state() == State::SynSent {
            conn.prohibited = true;
            // Closed at once (it wakes the connect); the RST smoltcp sends
            // matches nothing at the gateway.
            socket.abort();
        }
    }

    /// Closes the handle: a FIN goes after the data written (if not sent
    /// already); the socket and its buffers go once it is done.
    pub fn tcp_close(&mut self, id: ConnId) {
        if let Some(handle) = self.conns.get(id.0).map(|c| c.handle) {
            self.close_socket(handle);
        }
        self.release(id);
    }

    fn release(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.remove(id.0) {
            if let (true, Some(any)) = (conn.from_accept_any, self.accept_any.as_mut()) {
                any.forget_source(conn.remote.ip());
            }
            self.closing
                .push((conn.handle, conn.local, conn.remote, conn.port));
        }
    }

    /// Frees sockets whose closing finished (or that sat in TIME-WAIT: the
    /// tunnel delivers in order often enough that late duplicates do not
    /// justify holding memory for it).
    pub(crate) fn collect_closing(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let (handle, local, remote, port) = self.closing[i];
            let state = self.sockets.get::<tcp::Socket>(handle).state();
            if matches!(state, State::Closed | State::TimeWait)
                && !self.deferred_close.contains(&handle)
            {
                self.remove_tcp_socket(handle);
                // The tuple may be another socket's now (two listeners
                // caught one connection's SYNs): its flow stays.
                let theirs = self
                    .by_tuple
                    .get(&(local, remote))
                    .is_some_and(|f| self.conns.get(f.conn.0).is_some_and(|c| c.handle != handle));
                if !theirs {
                    if let Some(mut flow) = self.by_tuple.remove(&(local, remote)) {
                        flow.drain(&mut self.device);
                        self.budget.update(flow.claimed, 0);
                    }
                    self.sending.remove(&(local, remote));
                }
                if let Some(port) = port {
                    self.ports.release(port);
                }
                self.closing.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Sockets pending close (FIN or RST not yet through).
    pub fn tcp_closing(&self) -> usize {
        self.closing.len()
    }

    /// Gives a socket a handle and indexes its tuple for the per-packet
    /// lookups (RSTs, loss recovery).
    pub(super) fn track(
        &mut self,
        handle: SocketHandle,
        local: SocketAddr,
        remote: SocketAddr,
        port: Option<u16>,
    ) -> ConnId {
        let id = ConnId(self.conns.insert(Conn {
            handle,
            local,
            remote,
            port,
            reset: false,
            established: false,
            aborted: false,
            prohibited: false,
            from_accept_any: false,
        }));
        let syn = self.syns.take(&(remote, local));
        let mut flow = Flow::new(id, syn);
        if syn.is_none() && self.options.tcp.congestion != crate::Congestion::None {
            // The peer's SYN went by unseen (pushed out of the stash):
            // smoltcp's own controller is better than none.
            flow.unmanaged = true;
            self.sockets
                .get_mut::<tcp::Socket>(handle)
                .set_congestion_control(tcp::CongestionControl::Cubic);
        }
        self.by_tuple.insert((local, remote), flow);
        id
    }
}
