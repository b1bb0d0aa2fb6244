//! underpass-core: the WireGuard protocol and a WireGuard node, sans-IO.
//!
//! A fully deterministic implementation of WireGuard's protocol logic: it
//! opens no socket, reads no clock, spawns nothing and never sleeps. Time
//! comes in as an [`Instant`] on the caller's clock, randomness from an
//! injected CSPRNG, datagrams and IP packets as bytes. The same code runs
//! under tokio, in a browser (wasm32-unknown-unknown) and in a simulation.
//!
//! Start with [`Node`]: feed it datagrams, IP packets and time; take
//! datagrams (GSO batches, see [`GsoQueue`]) and [`Event`]s out. [`config`]
//! reads and writes the wg-quick format.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod allowed_ips;
pub mod config;
mod cookie;
mod crypto;
pub mod gso;
mod handshake;
pub mod hash;
mod ip;
mod keys;
mod node;
mod peer;
pub mod random;
mod rate_limit;
pub mod relay_batch;
mod replay;
mod report;
mod session;
mod time;
pub mod timers;
pub mod wire;

pub use allowed_ips::AllowedIps;
pub use config::DEFAULT_MTU;
pub use gso::{GsoQueue, Transmit};
pub use ip::IpHeader;
pub use keys::{KeyError, PresharedKey, PrivateKey, PublicKey, ShortKey};
pub use node::{
    DatagramError, Event, Node, NodeOptions, NodeStats, PeerError, PeerId, PeerOptions, Received,
    SendError,
};
pub use peer::PeerInfo;
pub use time::Instant;
