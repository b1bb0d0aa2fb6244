//! A transport session: one pair of keys from one handshake, the send
//! counter and the receive replay window (whitepaper section 5.4.6).
//!
//! This is the data path, so it uses ring's ChaCha20-Poly1305 and works in
//! place on the caller's buffers: nothing here allocates.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use crate::handshake::SessionKeys;
use crate::replay::ReplayWindow;
use crate::time::Instant;
use crate::timers::{REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME};
use crate::wire::{DATA_HEADER_LEN, DATA_OVERHEAD};

/// Why a transport message was refused by its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataError {
    /// The session is older than Reject-After-Time or its counter is spent.
    Expired,
    /// The counter was seen before or is behind the replay window.
    Replayed,
    /// Authentication failed.
    Decrypt,
}

pub(crate) struct Session {
    pub local_index: u32,
    pub remote_index: u32,
    /// Whether we sent the initiation that made this session. Only the
    /// initiator rekeys on age, so both ends don't start handshakes at once.
    pub initiator: bool,
    pub created: Instant,
    send_key: LessSafeKey,
    recv_key: LessSafeKey,
    next_send: u64,
    replay: ReplayWindow,
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32-byte ChaCha20 key"))
}

impl Session {
    pub fn new(keys: &SessionKeys, now: Instant) -> Self {
        Session {
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            initiator: keys.initiator,
            created: now,
            send_key: key(&keys.send),
            recv_key: key(&keys.recv),
            next_send: 0,
            replay: ReplayWindow::new(),
        }
    }

    pub fn age(&self, now: Instant) -> core::time::Duration {
        now.saturating_duration_since(self.created)
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.age(now) >= REJECT_AFTER_TIME
    }

    /// Whether this session may still encrypt.
    pub fn can_send(&self, now: Instant) -> bool {
        !self.is_expired(now) && self.next_send < REJECT_AFTER_MESSAGES
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.next_send
    }

    /// Encrypts `packet` into `out`, which is exactly [`DATA_OVERHEAD`] plus
    /// the padded length long; the bytes between the packet and the padded
    /// length become zero padding.
    pub fn encrypt(&mut self, packet: &[u8], out: &mut [u8]) {
        let padded = out.len() - DATA_OVERHEAD;
        debug_assert!(packet.len() <= padded);
        let counter = self.next_send;
        self.next_send += 1;
        out[..4].copy_from_slice(&[4, 0, 0, 0]);
        out[4..8].copy_from_slice(&self.remote_index.to_le_bytes());
        out[8..16].copy_from_slice(&counter.to_le_bytes());
        let (body, tag_out) = out[DATA_HEADER_LEN..].split_at_mut(padded);
        body[..packet.len()].copy_from_slice(packet);
        body[packet.len()..].fill(0);
        let tag = self
            .send_key
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), body)
            .expect("a datagram is far below the AEAD's length limit");
        tag_out.copy_from_slice(tag.as_ref());
    }

    /// Authenticates and decrypts a transport message in place and returns
    /// the padded plaintext. The replay window moves only after the message
    /// authenticated.
    pub fn decrypt<'a>(
        &mut self,
        counter: u64,
        message: &'a mut [u8],
        now: Instant,
    ) -> Result<&'a mut [u8], DataError> {
        if counter >= REJECT_AFTER_MESSAGES || self.is_expired(now) {
            return Err(DataError::Expired);
        }
        if !self.replay.check(counter) {
            return Err(DataError::Replayed);
        }
        let plain = self
            .recv_key
            .open_in_place(
                nonce(counter),
                Aad::empty(),
                &mut message[DATA_HEADER_LEN..],
            )
            .map_err(|_| DataError::Decrypt)?;
        if !self.replay.mark(counter) {
            return Err(DataError::Replayed);
        }
        Ok(plain)
    }
}

/// The length a packet is padded to before encryption: a multiple of 16,
/// without going past the MTU (whitepaper section 5.4.6).
pub(crate) fn padded_len(len: usize, mtu: usize) -> usize {
    let rounded = len.next_multiple_of(16);
    match mtu {
        0 => rounded,
        mtu if len >= mtu => len,
        mtu => rounded.min(mtu),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn pair() -> (Session, Session) {
        let a = SessionKeys {
            send: Zeroizing::new([1; 32]),
            recv: Zeroizing::new([2; 32]),
            local_index: 10,
            remote_index: 20,
            initiator: true,
        };
        let b = SessionKeys {
            send: Zeroizing::new([2; 32]),
            recv: Zeroizing::new([1; 32]),
            local_index: 20,
            remote_index: 10,
            initiator: false,
        };
        (
            Session::new(&a, Instant::ZERO),
            Session::new(&b, Instant::ZERO),
        )
    }

    fn seal(s: &mut Session, packet: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; DATA_OVERHEAD + padded_len(packet.len(), 1420)];
        s.encrypt(packet, &mut out);
        out
    }

    fn counter(msg: &[u8]) -> u64 {
        u64::from_le_bytes(msg[8..16].try_into().unwrap())
    }

    #[test]
    fn packets_round_trip_padded_and_replays_are_refused() {
        let (mut a, mut b) = pair();
        let mut msg = seal(&mut a, b"hello");
        assert_eq!(msg.len(), 32 + 16);
        assert_eq!(u32::from_le_bytes(msg[4..8].try_into().unwrap()), 20);
        let mut copy = msg.clone();
        let plain = b.decrypt(counter(&msg), &mut msg, Instant::ZERO).unwrap();
        assert_eq!(&plain[..5], b"hello");
        assert!(plain[5..].iter().all(|&x| x == 0));
        assert_eq!(
            b.decrypt(counter(&copy), &mut copy, Instant::ZERO),
            Err(DataError::Replayed)
        );
    }

    #[test]
    fn tampering_fails_and_does_not_burn_the_counter() {
        let (mut a, mut b) = pair();
        let good = seal(&mut a, b"data");
        let mut bad = good.clone();
        bad[20] ^= 1;
        assert_eq!(
            b.decrypt(0, &mut bad, Instant::ZERO),
            Err(DataError::Decrypt)
        );
        let mut good = good;
        assert!(b.decrypt(0, &mut good, Instant::ZERO).is_ok());
    }

    #[test]
    fn sessions_expire_after_reject_after_time() {
        let (mut a, mut b) = pair();
        let mut msg = seal(&mut a, b"late");
        let late = Instant::ZERO + REJECT_AFTER_TIME;
        assert!(!a.can_send(late));
        assert_eq!(b.decrypt(0, &mut msg, late), Err(DataError::Expired));
    }

    #[test]
    fn padding_rounds_to_16_within_the_mtu() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(1400, 1420), 1408);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1420, 1420), 1420);
        assert_eq!(padded_len(1500, 1420), 1500);
        assert_eq!(padded_len(17, 0), 32);
    }
}
