//! underpass-stack: TCP, UDP and DNS over a WireGuard tunnel's IP packets,
//! in userspace, sans-IO.
//!
//! A smoltcp interface whose device is a pair of packet queues: the caller
//! feeds it the IP packets core decrypted and hands what it emits back to
//! core to encrypt. It opens no socket and reads no clock (time is core's
//! [`underpass_core::Instant`], passed in), so no TUN device and no root are
//! needed, and it runs in a browser as well as under tokio.
//!
//! Start with [`Engine`], which joins a WireGuard node to a [`Stack`] and
//! is what every driver (native, browser, simulator) runs; then [`Stack`]: connections are [`ConnId`]s, UDP sockets
//! [`UdpId`]s, name lookups [`QueryId`]s; [`Stack::ping`] checks a path with
//! ICMP echo.

#![warn(missing_docs)]

mod ack_seq;
mod device;
mod dns;
mod echo;
mod engine;
mod flow;
mod icmp;
mod memory;
mod options;
mod ports;
mod reassembly;
mod receiver;
mod segment;
mod sender;
mod slots;
mod stack;
mod tcp;
mod udp;

pub use dns::{DnsError, QueryId};
pub use echo::{EchoError, MAX_ECHO_TARGETS};
pub use engine::{
    BuildError, Counters, Endpoints, Engine, EngineEvent, EngineOptions, PacketTap, PeerToPeer,
};
pub use sender::SenderInfo;
pub use stack::{
    Accepted, Congestion, Policy, Protocol, Stack, StackError, StackOptions, StackStats,
    TcpOptions, DEFAULT_BUFFER_BUDGET, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
};
pub use tcp::{ConnId, ListenerId, TcpError, TcpState};
pub use udp::{
    UdpError, UdpId, UdpOptions, DEFAULT_MAX_UDP_FLOWS, DEFAULT_MAX_UDP_FLOWS_PER_SOURCE,
};
