//! The protocol's constants of time and count (whitepaper section 6.1).
//!
//! The timer logic itself lives with the peer; this is the one place the
//! numbers are written down.

use core::time::Duration;

/// After this many messages on a session the initiator starts a new handshake.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// A session never sends or accepts a counter at or beyond this
/// (2^64 - 2^13 - 1).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// The initiator of a session starts a new handshake when it is this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// A session older than this neither sends nor accepts data.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Handshake attempts are retried for this long before giving up.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// A handshake without a response is retried after this (plus jitter).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to [`REKEY_TIMEOUT`], so that many
/// peers do not retry in lockstep.
pub const REKEY_TIMEOUT_JITTER: Duration = Duration::from_millis(334);
/// A peer that received data and sent nothing for this long sends a
/// keepalive, so the other side knows the session works.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Key material is zeroed when no new session was made for this long.
pub const ZERO_KEYS_AFTER: Duration = Duration::from_secs(3 * 180);
/// Initiations from one peer closer together than this are refused (a
/// flood of valid but replayed-in-time initiations costs DH each).
pub const INITIATIONS_MIN_INTERVAL: Duration = Duration::from_millis(20);

// Not in the whitepaper, which finds a peer that lost the session (a
// restart) only after Keepalive-Timeout + Rekey-Timeout of silence: a
// packet that a live peer answers within a round trip (a TCP segment with
// data, a SYN or a FIN; a DNS query; an echo request) and that got no
// authenticated reply for a few round trips starts a handshake sooner,
// still at most one initiation per Rekey-Timeout.

/// Handshake round trips such a packet may go unanswered...
pub const UNANSWERED_RTTS: u32 = 4;
/// ...and at least this long: well past a delayed ACK (200 ms at most on
/// Linux, 500 ms by RFC 1122), and below TCP's initial retransmission
/// timeout of 1 s, so that a SYN's first retransmission already rides the
/// new session.
pub const UNANSWERED_MIN: Duration = Duration::from_millis(800);
/// Upper bound of the random jitter added to that, as to the whitepaper's
/// timers that start a handshake.
pub const UNANSWERED_JITTER: Duration = Duration::from_millis(150);
