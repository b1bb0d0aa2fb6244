//! Listeners on a port of the tunnel address (reverse forwards): a few
//! listening sockets per port, refilled as connections arrive, and a
//! backlog the caller accepts from.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};

use super::{ConnId, Listener, ListenerId, TcpError};
use crate::slots::Key;
use crate::stack::{from_endpoint, Stack};

/// Listening sockets kept per listener.
const LISTEN_SOCKETS: usize = 4;
/// Accepted connections waiting for `tcp_accept_from` per listener.
const BACKLOG: usize = 128;

impl Stack {
    /// Listens on `port` of every tunnel address (reverse forwards).
    pub fn tcp_listen(&mut self, port: u16) -> Result<ListenerId, TcpError> {
        if port == 0 {
            return Err(TcpError::Unaddressable);
        }
        if !self.ports.claim(port) {
            return Err(TcpError::InUse);
        }
        let mut listener = Listener {
            port,
            sockets: Vec::new(),
            backlog: Default::default(),
            waker: None,
        };
        for _ in 0..LISTEN_SOCKETS {
            listener.sockets.push(self.listening_socket(port));
        }
        Ok(ListenerId(self.listeners.insert(listener)))
    }

    fn listening_socket(&mut self, port: u16) -> SocketHandle {
        self.add_tcp_socket(|socket, _| socket.listen(port))
            .expect("listening on a non-zero port of a fresh socket cannot fail")
    }

    /// The next accepted connection and its remote address.
    pub fn tcp_accept_from(&mut self, id: ListenerId) -> Result<(ConnId, SocketAddr), TcpError> {
        let listener = self
            .listeners
            .get_mut(id.0)
            .ok_or(TcpError::InvalidHandle)?;
        listener.backlog.pop_front().ok_or(TcpError::WouldBlock)
    }

    /// The next connection a listener accepted, with its remote address; `Pending` (with `cx` woken later) when none waits.
    pub fn poll_accept_from(
        &mut self,
        cx: &mut Context<'_>,
        id: ListenerId,
    ) -> Poll<Result<(ConnId, SocketAddr), TcpError>> {
        match self.tcp_accept_from(id) {
            Err(TcpError::WouldBlock) => {
                if let Some(l) = self.listeners.get_mut(id.0) {
                    l.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }

    /// Stops listening; connections already accepted stay.
    pub fn tcp_unlisten(&mut self, id: ListenerId) {
        if let Some(listener) = self.listeners.remove(id.0) {
            for handle in listener.sockets {
                self.remove_tcp_socket(handle);
            }
            for (conn, _) in listener.backlog {
                self.tcp_abort(conn);
            }
            self.ports.release(listener.port);
        }
    }

    /// Moves listening sockets that got a connection into the backlog and
    /// puts fresh ones in their place.
    pub(crate) fn collect_listeners(&mut self) {
        let ids: Vec<Key> = self.listeners.iter().map(|(k, _)| k).collect();
        for key in ids {
            let (port, taken) = {
                let listener = self.listeners.get_mut(key).expect("listed");
                let sockets = &self.sockets;
                let (taken, still): (Vec<SocketHandle>, Vec<SocketHandle>) = listener
                    .sockets
                    .iter()
                    .partition(|h| sockets.get::<tcp::Socket>(**h).state() != State::Listen);
                listener.sockets = still;
                (listener.port, taken)
            };
            if taken.is_empty() {
                continue;
            }
            let mut accepted = Vec::new();
            for handle in taken {
                let socket = self.sockets.get::<tcp::Socket>(handle);
                let (Some(local), Some(remote)) =
                    (socket.local_endpoint(), socket.remote_endpoint())
                else {
                    self.remove_tcp_socket(handle);
                    continue;
                };
                let (local, remote) = (from_endpoint(local), from_endpoint(remote));
                let id = self.track(handle, local, remote, None);
                accepted.push((id, remote));
            }
            let fresh: Vec<SocketHandle> = (0..accepted.len())
                .map(|_| self.listening_socket(port))
                .collect();
            let listener = self.listeners.get_mut(key).expect("listed");
            listener.sockets.extend(fresh);
            let mut refused = Vec::new();
            for (id, remote) in accepted {
                if listener.backlog.len() < BACKLOG {
                    listener.backlog.push_back((id, remote));
                } else {
                    refused.push(id);
                }
            }
            if let Some(w) = listener.waker.take() {
                w.wake();
            }
            for id in refused {
                self.tcp_abort(id);
            }
        }
    }
}
