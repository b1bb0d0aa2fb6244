//! What the node reports to the loop above it: the events it acts on,
//! what a datagram turned out to be, why one was dropped or a packet not
//! sent, and the counters of all that.

use core::time::Duration;
use std::net::SocketAddr;

use crate::node::PeerId;

/// Things the layer above acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the fields: the peer, and what the variant says
pub enum Event {
    /// A new session with the peer is usable.
    HandshakeCompleted { peer: PeerId },
    /// Handshakes went unanswered for Rekey-Attempt-Time; waiting packets
    /// were dropped. A host-name endpoint is worth resolving again.
    HandshakeTimedOut { peer: PeerId },
    /// No session was made for long enough that all keys were zeroed.
    SessionExpired { peer: PeerId },
    /// The peer's endpoint changed: it roamed, or it dialled us.
    EndpointChanged { peer: PeerId, endpoint: SocketAddr },
    /// Data sent to the peer got no reply for `waited`, so a new handshake
    /// was started: the peer may have restarted and lost the session.
    NoReply { peer: PeerId, waited: Duration },
}

/// What a datagram turned out to be, when it was not refused.
#[derive(Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields: the peer, and what the variant says
pub enum Received<'a> {
    /// A decrypted IP packet from `peer`, trimmed to its header's length,
    /// its source checked against the peer's allowed IPs.
    Packet { peer: PeerId, packet: &'a mut [u8] },
    /// An authenticated keepalive.
    Keepalive { peer: PeerId },
    /// A handshake message or cookie reply, consumed; any answer is queued.
    Handshake { peer: PeerId },
    /// We are under load and answered with a cookie reply.
    CookieSent,
}

/// Why a datagram was dropped. Each is counted in [`NodeStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DatagramError {
    /// Not a WireGuard message: wrong size or type.
    #[error("not a WireGuard message")]
    Malformed,
    /// MAC1 is wrong: not addressed to our public key.
    #[error("MAC1 invalid")]
    InvalidMac1,
    /// Under load and this source exceeded its handshake rate.
    #[error("handshake rate limit")]
    RateLimited,
    /// An initiation from a key that is not one of our peers.
    #[error("unknown peer")]
    UnknownPeer,
    /// A handshake field did not decrypt, or a key was weak.
    #[error("handshake did not authenticate")]
    HandshakeFailed,
    /// An initiation no newer than the last one accepted from that peer.
    #[error("replayed initiation")]
    ReplayedInitiation,
    /// Initiations from one peer too close together.
    #[error("initiation flood")]
    InitiationFlood,
    /// A response, cookie or data message for an index we do not have.
    #[error("unknown receiver index")]
    UnknownIndex,
    /// A cookie reply that did not decrypt.
    #[error("invalid cookie reply")]
    InvalidCookieReply,
    /// A transport message that did not authenticate.
    #[error("data did not authenticate")]
    DecryptFailed,
    /// A transport counter seen before or too old.
    #[error("replayed data")]
    Replayed,
    /// A transport message on a session past its limits.
    #[error("session expired")]
    SessionExpired,
    /// The plaintext is not an IP packet.
    #[error("payload is not an IP packet")]
    NotIp,
    /// The inner source address is not in the peer's allowed IPs.
    #[error("source address not allowed for peer")]
    DisallowedSource,
}

impl DatagramError {
    /// Every reason, for metrics.
    pub const ALL: [DatagramError; 14] = [
        DatagramError::Malformed,
        DatagramError::InvalidMac1,
        DatagramError::RateLimited,
        DatagramError::UnknownPeer,
        DatagramError::HandshakeFailed,
        DatagramError::ReplayedInitiation,
        DatagramError::InitiationFlood,
        DatagramError::UnknownIndex,
        DatagramError::InvalidCookieReply,
        DatagramError::DecryptFailed,
        DatagramError::Replayed,
        DatagramError::SessionExpired,
        DatagramError::NotIp,
        DatagramError::DisallowedSource,
    ];

    /// A stable name for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DatagramError::Malformed => "malformed",
            DatagramError::InvalidMac1 => "invalid_mac1",
            DatagramError::RateLimited => "rate_limited",
            DatagramError::UnknownPeer => "unknown_peer",
            DatagramError::HandshakeFailed => "handshake_failed",
            DatagramError::ReplayedInitiation => "replayed_initiation",
            DatagramError::InitiationFlood => "initiation_flood",
            DatagramError::UnknownIndex => "unknown_index",
            DatagramError::InvalidCookieReply => "invalid_cookie_reply",
            DatagramError::DecryptFailed => "decrypt_failed",
            DatagramError::Replayed => "replayed",
            DatagramError::SessionExpired => "session_expired",
            DatagramError::NotIp => "not_ip",
            DatagramError::DisallowedSource => "disallowed_source",
        }
    }
}

/// Why an outbound IP packet was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is
pub enum SendError {
    #[error("not an IP packet")]
    NotIp,
    #[error("no peer's allowed IPs contain the destination")]
    NoRoute,
    #[error("the peer has no known endpoint")]
    NoEndpoint,
}

/// Counters of the whole node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Transport data messages sent (keepalives included).
    pub packets_sent: u64,
    /// Transport data messages received and authenticated.
    pub packets_received: u64,
    /// Handshake initiations sent.
    pub handshakes_initiated: u64,
    /// Handshakes completed, in either role.
    pub handshakes_completed: u64,
    /// Cookie replies sent because the node was under load.
    pub cookies_sent: u64,
    /// Packets dropped from a peer's queue while its handshake was pending.
    pub staged_dropped: u64,
    /// Outbound packets no peer's allowed IPs contain.
    pub no_route: u64,
    pub(crate) dropped: [u64; DatagramError::ALL.len()],
}

impl NodeStats {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DatagramError) -> u64 {
        self.dropped[reason as usize]
    }

    /// Datagrams dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}
