//! The gateway's accept-any: a listening socket appears for each SYN the
//! policy allows, to any address and port, and the connection is handed up
//! with its original destination.

use std::net::SocketAddr;

use smoltcp::socket::tcp::{self, State};

use super::{duration, ConnId, TcpError};
use crate::stack::{from_endpoint, to_endpoint, Accepted, Protocol, Stack};

/// Listening sockets the gateway keeps per destination with no SYN.
const SPARE_LISTENERS: usize = 2;
/// Connections the gateway sets up at once, at most (a SYN flood from a
/// peer costs a socket each).
const MAX_PENDING_ACCEPTS: usize = 1024;

impl Stack {
    /// A SYN to `dst` with no connection yet: make sure a listening socket
    /// waits there, if the policy allows. False when the policy refuses
    /// (the caller answers "administratively prohibited", see `icmp`).
    pub(crate) fn accept_syn(&mut self, src: SocketAddr, dst: SocketAddr) -> bool {
        if self.by_tuple.contains_key(&(dst, src)) || self.is_local_port(dst) {
            // A retransmitted SYN of a connection we have, or a port of our
            // own address that a listener serves.
            return true;
        }
        let any = self.accept_any.as_mut().expect("checked by caller");
        if !any.syns.insert((src, dst)) {
            return true; // the same SYN twice in one batch
        }
        // Every SYN of a batch needs its own listener: smoltcp hands each
        // listening socket one SYN, and answers the rest with RST.
        let wanted = any.syns.iter().filter(|(_, d)| *d == dst).count();
        let sockets = &self.sockets;
        let listening = any.listening.get(&dst).map_or(0, |hs| {
            hs.iter()
                .filter(|h| sockets.get::<tcp::Socket>(**h).state() == State::Listen)
                .count()
        });
        if listening >= wanted {
            return true;
        }
        if !(any.policy)(Protocol::Tcp, dst) {
            self.stats.refused_by_policy += 1;
            tracing::debug!(%src, %dst, "accept-any: destination not allowed");
            return false;
        }
        let limits = &self.options.tcp;
        if self.conns.len() >= limits.max_connections
            || any.per_source.get(&src.ip()).copied().unwrap_or(0)
                >= limits.max_connections_per_source
        {
            self.stats.refused_by_limit += 1;
            tracing::debug!(%src, %dst, "accept-any: connection limit reached");
            return true; // smoltcp answers the SYN with RST
        }
        let pending: usize = any.listening.values().map(Vec::len).sum();
        if pending >= MAX_PENDING_ACCEPTS {
            tracing::debug!(%src, %dst, "accept-any: too many connections being set up");
            return true;
        }
        let timeout = duration(self.options.tcp.connect_timeout);
        let Ok(handle) = self.add_tcp_socket(|socket, _| {
            socket.pause_synack(true);
            socket.set_timeout(Some(timeout));
            socket.listen(to_endpoint(dst))
        }) else {
            return true;
        };
        self.accept_any
            .as_mut()
            .expect("checked")
            .listening
            .entry(dst)
            .or_default()
            .push(handle);
        true
    }

    /// Turns gateway listeners that got their SYN into [`Accepted`] flows,
    /// and drops idle ones beyond a few per destination.
    pub(crate) fn collect_accepted(&mut self) {
        let Some(any) = self.accept_any.as_mut() else {
            return;
        };
        any.syns.clear();
        let (mut got, mut spare) = (Vec::new(), Vec::new());
        any.listening.retain(|_, handles| {
            let mut listening = 0;
            handles.retain(|h| {
                let socket = self.sockets.get::<tcp::Socket>(*h);
                match socket.state() {
                    State::Listen => {
                        listening += 1;
                        let keep = listening <= SPARE_LISTENERS;
                        if !keep {
                            spare.push(*h);
                        }
                        keep
                    }
                    _ => {
                        got.push(*h);
                        false
                    }
                }
            });
            !handles.is_empty()
        });
        for handle in spare {
            self.remove_tcp_socket(handle);
        }
        for handle in got {
            let socket = self.sockets.get::<tcp::Socket>(handle);
            let (Some(local), Some(remote)) = (socket.local_endpoint(), socket.remote_endpoint())
            else {
                self.remove_tcp_socket(handle);
                continue;
            };
            let (local, remote) = (from_endpoint(local), from_endpoint(remote));
            if self.by_tuple.contains_key(&(local, remote)) {
                // Two listeners caught SYNs of one connection; keep the first.
                self.sockets.get_mut::<tcp::Socket>(handle).abort();
                self.closing.push((handle, local, remote, None));
                continue;
            }
            let conn = self.track(handle, local, remote, None);
            if let (Some(any), Some(c)) = (self.accept_any.as_mut(), self.conns.get_mut(conn.0)) {
                c.from_accept_any = true;
                *any.per_source.entry(remote.ip()).or_default() += 1;
            }
            self.accepted.push_back(Accepted::Tcp {
                conn,
                local,
                remote,
            });
        }
    }

    /// Completes an accept-any connection: its SYN-ACK goes out.
    pub fn tcp_accept(&mut self, id: ConnId) -> Result<(), TcpError> {
        let idle = duration(self.options.tcp.idle_timeout);
        let (_, socket) = self.socket(id)?;
        socket.pause_synack(false);
        socket.set_timeout(Some(idle));
        Ok(())
    }

    /// The next flow accept-any took in.
    pub fn poll_accepted(&mut self) -> Option<Accepted> {
        self.accepted.pop_front()
    }
}
