//! MAC1, MAC2 and cookies (whitepaper section 5.4.4 and 5.4.7): the cheap
//! checks that run before any Diffie-Hellman, and the denial-of-service
//! defence for when a node is under load.
//!
//! A responder under load answers a handshake message whose MAC2 is not valid
//! with a cookie reply instead of doing the expensive work; the sender proves
//! it owns its address by putting the cookie into the MAC2 of its next try.

use core::time::Duration;
use std::net::{IpAddr, SocketAddr};

use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::{hash, mac, xaead_open, xaead_seal};
use crate::handshake::{LABEL_COOKIE, LABEL_MAC1};
use crate::keys::PublicKey;
use crate::time::Instant;
use crate::wire::{self, cookie_reply, mac_offsets, CookieReply};

/// How long a cookie secret, and so a cookie, stays valid.
pub(crate) const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);

fn address_bytes(addr: SocketAddr, out: &mut [u8; 18]) -> &[u8] {
    let n = match addr.ip() {
        IpAddr::V4(ip) => {
            out[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            out[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    out[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    &out[..n + 2]
}

/// The checks a node runs on handshake messages addressed to it.
pub(crate) struct CookieChecker {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    secret: Zeroizing<[u8; 32]>,
    secret_born: Option<Instant>,
}

impl CookieChecker {
    pub fn new(our_public: &PublicKey) -> Self {
        CookieChecker {
            mac1_key: hash(&[LABEL_MAC1, our_public.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, our_public.as_bytes()]),
            secret: Zeroizing::new([0; 32]),
            secret_born: None,
        }
    }

    /// MAC1 proves the sender knows our public key. It is checked first and
    /// in constant time; a message failing it costs one BLAKE2s.
    pub fn verify_mac1(&self, message: &[u8]) -> bool {
        let (m1, m2) = mac_offsets(message);
        let expected = mac(&self.mac1_key, &message[..m1]);
        expected.ct_eq(&message[m1..m2]).into()
    }

    fn secret_is_fresh(&self, now: Instant) -> bool {
        self.secret_born
            .is_some_and(|born| now.saturating_duration_since(born) < COOKIE_REFRESH_TIME)
    }

    fn cookie_for(&self, src: SocketAddr) -> [u8; 16] {
        let mut buf = [0u8; 18];
        mac(&*self.secret, address_bytes(src, &mut buf))
    }

    /// MAC2 proves the sender received a recent cookie at `src`.
    pub fn verify_mac2(&self, message: &[u8], src: SocketAddr, now: Instant) -> bool {
        if !self.secret_is_fresh(now) {
            return false;
        }
        let (_, m2) = mac_offsets(message);
        let cookie = Zeroizing::new(self.cookie_for(src));
        let expected = mac(&*cookie, &message[..m2]);
        expected.ct_eq(&message[m2..]).into()
    }

    /// Writes the cookie reply to `message` (an initiation or response that
    /// arrived from `src` while under load).
    pub fn create_reply(
        &mut self,
        message: &[u8],
        src: SocketAddr,
        now: Instant,
        rng: &mut dyn CryptoRngCore,
        out: &mut [u8; wire::COOKIE_REPLY_LEN],
    ) {
        if !self.secret_is_fresh(now) {
            rng.fill_bytes(&mut *self.secret);
            self.secret_born = Some(now);
        }
        let mut reply = CookieReply::new_unchecked(&mut out[..]);
        reply.set_header();
        let out = reply.as_bytes_mut();
        // Initiation and response both carry the sender's index at 4..8.
        out[cookie_reply::RECEIVER].copy_from_slice(&message[4..8]);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        out[cookie_reply::NONCE].copy_from_slice(&nonce);
        let (m1, m2) = mac_offsets(message);
        let (plain, tag) = out[cookie_reply::COOKIE].split_at_mut(16);
        plain.copy_from_slice(&self.cookie_for(src));
        xaead_seal(&self.cookie_key, &nonce, plain, &message[m1..m2], tag);
    }
}

/// What we keep per peer to MAC the handshake messages we send it.
pub(crate) struct CookieState {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    cookie: Option<([u8; 16], Instant)>,
    last_mac1: Option<[u8; 16]>,
}

/// A cookie reply we could not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidCookieReply;

impl CookieState {
    pub fn new(peer_public: &PublicKey) -> Self {
        CookieState {
            mac1_key: hash(&[LABEL_MAC1, peer_public.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, peer_public.as_bytes()]),
            cookie: None,
            last_mac1: None,
        }
    }

    /// Fills in MAC1 and, with a fresh cookie, MAC2 of a handshake message
    /// we are about to send.
    pub fn seal(&mut self, message: &mut [u8], now: Instant) {
        let (m1, m2) = mac_offsets(message);
        let mac1 = mac(&self.mac1_key, &message[..m1]);
        message[m1..m2].copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        let mac2 = match self.cookie {
            Some((cookie, received))
                if now.saturating_duration_since(received) < COOKIE_REFRESH_TIME =>
            {
                mac(&cookie, &message[..m2])
            }
            _ => [0; 16],
        };
        message[m2..].copy_from_slice(&mac2);
    }

    /// Stores the cookie from a reply to the last message we sealed.
    pub fn consume_reply(
        &mut self,
        reply: &CookieReply<&[u8]>,
        now: Instant,
    ) -> Result<(), InvalidCookieReply> {
        let aad = self.last_mac1.ok_or(InvalidCookieReply)?;
        let sealed = reply.encrypted_cookie();
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(&sealed[..16]);
        xaead_open(
            &self.cookie_key,
            &reply.nonce(),
            &mut cookie,
            &aad,
            &sealed[16..],
        )
        .map_err(|_| InvalidCookieReply)?;
        self.cookie = Some((cookie, now));
        // One reply per message: a second copy must not be accepted.
        self.last_mac1 = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use rand_core::OsRng;

    fn message() -> [u8; wire::INITIATION_LEN] {
        let mut m = [0x42u8; wire::INITIATION_LEN];
        m[..4].copy_from_slice(&[1, 0, 0, 0]);
        m
    }

    #[test]
    fn cookie_round_trip_makes_mac2_valid() {
        let responder = PrivateKey::from_bytes([5; 32]).public_key();
        let mut checker = CookieChecker::new(&responder);
        let mut state = CookieState::new(&responder);
        let src: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let t0 = Instant::from_secs(10);

        let mut msg = message();
        state.seal(&mut msg, t0);
        assert!(checker.verify_mac1(&msg));
        assert!(!checker.verify_mac2(&msg, src, t0));

        let mut reply = [0u8; wire::COOKIE_REPLY_LEN];
        checker.create_reply(&msg, src, t0, &mut OsRng, &mut reply);
        let reply = CookieReply::new_checked(&reply[..]).unwrap();
        state.consume_reply(&reply, t0).unwrap();
        assert_eq!(
            state.consume_reply(&reply, t0),
            Err(InvalidCookieReply),
            "replayed reply"
        );

        let mut msg = message();
        state.seal(&mut msg, t0 + Duration::from_secs(1));
        assert!(checker.verify_mac1(&msg));
        assert!(checker.verify_mac2(&msg, src, t0 + Duration::from_secs(1)));
        let elsewhere: SocketAddr = "192.0.2.8:5000".parse().unwrap();
        assert!(
            !checker.verify_mac2(&msg, elsewhere, t0),
            "cookie is bound to the address"
        );
        assert!(
            !checker.verify_mac2(&msg, src, t0 + COOKIE_REFRESH_TIME),
            "cookie secret expires"
        );
    }

    #[test]
    fn mac1_for_another_key_fails() {
        let ours = PrivateKey::from_bytes([5; 32]).public_key();
        let other = PrivateKey::from_bytes([6; 32]).public_key();
        let checker = CookieChecker::new(&ours);
        let mut msg = message();
        CookieState::new(&other).seal(&mut msg, Instant::ZERO);
        assert!(!checker.verify_mac1(&msg));
    }
}
