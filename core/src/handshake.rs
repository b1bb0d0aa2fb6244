//! The Noise_IKpsk2 handshake of WireGuard (whitepaper section 5.4.2-5.4.5),
//! as pure functions over the message bytes.
//!
//! This module knows nothing of peers, timers or MACs: the node decides who
//! may handshake and when, [`crate::cookie`] adds and checks the MACs. Every
//! secret intermediate lives in a zeroizing buffer.

use rand_core::CryptoRngCore;
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::crypto::{aead_open, aead_seal, hash, kdf1, kdf2, kdf3, Key};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::wire::{self, initiation, response, Initiation, Response};

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
pub(crate) const LABEL_MAC1: &[u8] = b"mac1----";
pub(crate) const LABEL_COOKIE: &[u8] = b"cookie--";

/// A TAI64N timestamp as carried in an initiation; later ones compare greater.
pub type Timestamp = [u8; 12];

/// Why a handshake message was refused after its MACs passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// A Diffie-Hellman result was all zeros (a low-order point).
    WeakKey,
    /// The AEAD refused a field: not for us, or tampered with.
    Decrypt,
}

/// Our static identity with the values derived from it once.
pub(crate) struct Identity {
    pub private: PrivateKey,
    pub public: PublicKey,
    /// HASH(HASH(CONSTRUCTION) || IDENTIFIER || our public key): where every
    /// handshake addressed to us starts.
    responder_hash: [u8; 32],
}

impl Identity {
    pub fn new(private: PrivateKey) -> Self {
        let public = private.public_key();
        Identity {
            responder_hash: hash(&[&initial_hash(), public.as_bytes()]),
            private,
            public,
        }
    }
}

/// What we know about a peer for handshakes with it.
pub(crate) struct PeerSecrets {
    pub public: PublicKey,
    pub psk: PresharedKey,
    /// DH(our static, their static): the same for every handshake.
    static_static: Key,
    /// Where a handshake we address to this peer starts.
    initiator_hash: [u8; 32],
}

impl PeerSecrets {
    pub fn new(identity: &Identity, public: PublicKey, psk: PresharedKey) -> Self {
        let ss = identity
            .private
            .as_secret()
            .diffie_hellman(&DhPublic::from(*public.as_bytes()));
        PeerSecrets {
            static_static: Zeroizing::new(ss.to_bytes()),
            initiator_hash: hash(&[&initial_hash(), public.as_bytes()]),
            public,
            psk,
        }
    }

    /// A peer whose key is a low-order point gives an all-zero DH; the
    /// protocol forbids using it.
    pub fn is_weak(&self) -> bool {
        *self.static_static == [0; 32]
    }
}

fn initial_chaining_key() -> [u8; 32] {
    hash(&[CONSTRUCTION])
}

fn initial_hash() -> [u8; 32] {
    hash(&[&initial_chaining_key(), IDENTIFIER])
}

fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<Key, HandshakeError> {
    let shared = secret.diffie_hellman(&DhPublic::from(*public));
    if !shared.was_contributory() {
        return Err(HandshakeError::WeakKey);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

fn random_secret(rng: &mut dyn CryptoRngCore) -> StaticSecret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *bytes);
    StaticSecret::from(*bytes)
}

/// The initiator's state between sending an initiation and reading the
/// response.
pub(crate) struct InitiatorState {
    pub local_index: u32,
    chaining_key: Key,
    hash: [u8; 32],
    ephemeral: StaticSecret,
}

/// Keys for a new transport session.
pub(crate) struct SessionKeys {
    pub send: Key,
    pub recv: Key,
    pub local_index: u32,
    pub remote_index: u32,
    pub initiator: bool,
}

/// Writes an initiation (without its MACs) into `out`.
pub(crate) fn create_initiation(
    identity: &Identity,
    peer: &PeerSecrets,
    rng: &mut dyn CryptoRngCore,
    local_index: u32,
    timestamp: Timestamp,
    out: &mut [u8; wire::INITIATION_LEN],
) -> Result<InitiatorState, HandshakeError> {
    let mut msg = Initiation::new_unchecked(&mut out[..]);
    msg.set_header();
    let out = msg.as_bytes_mut();
    out[initiation::SENDER].copy_from_slice(&local_index.to_le_bytes());

    let ephemeral = random_secret(rng);
    let e_pub = DhPublic::from(&ephemeral).to_bytes();
    let mut h = peer.initiator_hash;
    let ck = kdf1(&initial_chaining_key(), &e_pub);
    out[initiation::EPHEMERAL].copy_from_slice(&e_pub);
    h = hash(&[&h, &e_pub]);

    let (ck, k) = kdf2(&ck, &*dh(&ephemeral, peer.public.as_bytes())?);
    let (plain, tag) = out[initiation::STATIC].split_at_mut(32);
    plain.copy_from_slice(identity.public.as_bytes());
    aead_seal(&k, 0, plain, &h, tag);
    h = hash(&[&h, &out[initiation::STATIC]]);

    let (ck, k) = kdf2(&ck, &*peer.static_static);
    let (plain, tag) = out[initiation::TIMESTAMP].split_at_mut(12);
    plain.copy_from_slice(&timestamp);
    aead_seal(&k, 0, plain, &h, tag);
    h = hash(&[&h, &out[initiation::TIMESTAMP]]);

    Ok(InitiatorState {
        local_index,
        chaining_key: ck,
        hash: h,
        ephemeral,
    })
}

/// An initiation whose sender we have identified but not yet authenticated
/// fully: the node looks the static key up before [`finish_initiation`].
pub(crate) struct InitiationStart {
    pub initiator: PublicKey,
    chaining_key: Key,
    hash: [u8; 32],
    remote_ephemeral: [u8; 32],
    remote_index: u32,
}

/// First half of reading an initiation: decrypts the initiator's static key.
pub(crate) fn start_initiation(
    identity: &Identity,
    message: &Initiation<&[u8]>,
) -> Result<InitiationStart, HandshakeError> {
    let bytes = message.as_bytes();
    let e_pub = message.ephemeral();
    let mut h = identity.responder_hash;
    let ck = kdf1(&initial_chaining_key(), &e_pub);
    h = hash(&[&h, &e_pub]);
    let (ck, k) = kdf2(&ck, &*dh(identity.private.as_secret(), &e_pub)?);
    let mut static_key = Zeroizing::new([0u8; 32]);
    let (cipher, tag) = bytes[initiation::STATIC].split_at(32);
    static_key.copy_from_slice(cipher);
    aead_open(&k, 0, &mut *static_key, &h, tag).map_err(|_| HandshakeError::Decrypt)?;
    h = hash(&[&h, &bytes[initiation::STATIC]]);
    Ok(InitiationStart {
        initiator: PublicKey::from_bytes(*static_key),
        chaining_key: ck,
        hash: h,
        remote_ephemeral: e_pub,
        remote_index: message.sender(),
    })
}

/// The responder's state between reading an initiation and writing the
/// response.
pub(crate) struct ResponderState {
    chaining_key: Key,
    hash: [u8; 32],
    remote_ephemeral: [u8; 32],
    pub remote_index: u32,
}

/// Second half of reading an initiation: authenticates it with the static-
/// static secret and returns the timestamp for the replay check.
pub(crate) fn finish_initiation(
    start: InitiationStart,
    peer: &PeerSecrets,
    message: &Initiation<&[u8]>,
) -> Result<(Timestamp, ResponderState), HandshakeError> {
    if peer.is_weak() {
        return Err(HandshakeError::WeakKey);
    }
    let bytes = message.as_bytes();
    let (ck, k) = kdf2(&start.chaining_key, &*peer.static_static);
    let mut timestamp = [0u8; 12];
    let (cipher, tag) = bytes[initiation::TIMESTAMP].split_at(12);
    timestamp.copy_from_slice(cipher);
    aead_open(&k, 0, &mut timestamp, &start.hash, tag).map_err(|_| HandshakeError::Decrypt)?;
    let h = hash(&[&start.hash, &bytes[initiation::TIMESTAMP]]);
    Ok((
        timestamp,
        ResponderState {
            chaining_key: ck,
            hash: h,
            remote_ephemeral: start.remote_ephemeral,
            remote_index: start.remote_index,
        },
    ))
}

/// Writes a response (without its MACs) and returns the session keys.
pub(crate) fn create_response(
    state: ResponderState,
    peer: &PeerSecrets,
    rng: &mut dyn CryptoRngCore,
    local_index: u32,
    out: &mut [u8; wire::RESPONSE_LEN],
) -> Result<SessionKeys, HandshakeError> {
    let mut msg = Response::new_unchecked(&mut out[..]);
    msg.set_header();
    let out = msg.as_bytes_mut();
    out[response::SENDER].copy_from_slice(&local_index.to_le_bytes());
    out[response::RECEIVER].copy_from_slice(&state.remote_index.to_le_bytes());

    let ephemeral = random_secret(rng);
    let e_pub = DhPublic::from(&ephemeral).to_bytes();
    out[response::EPHEMERAL].copy_from_slice(&e_pub);
    let ck = kdf1(&state.chaining_key, &e_pub);
    let h = hash(&[&state.hash, &e_pub]);
    let ck = kdf1(&ck, &*dh(&ephemeral, &state.remote_ephemeral)?);
    let ck = kdf1(&ck, &*dh(&ephemeral, peer.public.as_bytes())?);
    let (ck, t, k) = kdf3(&ck, peer.psk.as_bytes());
    let h = hash(&[&h, &*t]);
    aead_seal(&k, 0, &mut [], &h, &mut out[response::EMPTY]);
    let (first, second) = kdf2(&ck, &[]);
    Ok(SessionKeys {
        send: second,
        recv: first,
        local_index,
        remote_index: state.remote_index,
        initiator: false,
    })
}

/// Reads the response to our initiation and returns the session keys.
pub(crate) fn consume_response(
    state: &InitiatorState,
    identity: &Identity,
    peer: &PeerSecrets,
    message: &Response<&[u8]>,
) -> Result<SessionKeys, HandshakeError> {
    let bytes = message.as_bytes();
    let e_pub = message.ephemeral();
    let ck = kdf1(&state.chaining_key, &e_pub);
    let h = hash(&[&state.hash, &e_pub]);
    let ck = kdf1(&ck, &*dh(&state.ephemeral, &e_pub)?);
    let ck = kdf1(&ck, &*dh(identity.private.as_secret(), &e_pub)?);
    let (ck, t, k) = kdf3(&ck, peer.psk.as_bytes());
    let h = hash(&[&h, &*t]);
    aead_open(&k, 0, &mut [], &h, &bytes[response::EMPTY]).map_err(|_| HandshakeError::Decrypt)?;
    let (first, second) = kdf2(&ck, &[]);
    Ok(SessionKeys {
        send: first,
        recv: second,
        local_index: state.local_index,
        remote_index: message.sender(),
        initiator: true,
    })
}

/// TAI64N of a wall-clock time given as time since the Unix epoch. The
/// nanoseconds are rounded down to about 16 ms, so the timestamp does not
/// give away the sender's precise clock (wireguard-go does the same).
pub(crate) fn tai64n(since_unix_epoch: core::time::Duration) -> Timestamp {
    const TAI64_EPOCH: u64 = 0x4000_0000_0000_000a;
    const WHITENER_MASK: u32 = 0x00ff_ffff;
    let mut ts = [0u8; 12];
    ts[..8].copy_from_slice(&(TAI64_EPOCH + since_unix_epoch.as_secs()).to_be_bytes());
    ts[8..].copy_from_slice(&(since_unix_epoch.subsec_nanos() & !WHITENER_MASK).to_be_bytes());
    ts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn pair() -> (Identity, Identity) {
        let a = Identity::new(PrivateKey::from_bytes([1; 32]));
        let b = Identity::new(PrivateKey::from_bytes([2; 32]));
        (a, b)
    }

    #[test]
    fn both_sides_derive_matching_session_keys() {
        let (alice, bob) = pair();
        let psk = PresharedKey::from_bytes([3; 32]);
        let bob_at_alice = PeerSecrets::new(&alice, bob.public, psk.clone());
        let alice_at_bob = PeerSecrets::new(&bob, alice.public, psk);

        let mut init = [0u8; wire::INITIATION_LEN];
        let ts = tai64n(core::time::Duration::from_secs(1_700_000_000));
        let state =
            create_initiation(&alice, &bob_at_alice, &mut OsRng, 11, ts, &mut init).unwrap();

        let msg = Initiation::new_checked(&init[..]).unwrap();
        let start = start_initiation(&bob, &msg).unwrap();
        assert_eq!(start.initiator, alice.public);
        let (got_ts, rstate) = finish_initiation(start, &alice_at_bob, &msg).unwrap();
        assert_eq!(got_ts, ts);

        let mut resp = [0u8; wire::RESPONSE_LEN];
        let bob_keys = create_response(rstate, &alice_at_bob, &mut OsRng, 22, &mut resp).unwrap();
        let msg = Response::new_checked(&resp[..]).unwrap();
        let alice_keys = consume_response(&state, &alice, &bob_at_alice, &msg).unwrap();

        assert_eq!(*alice_keys.send, *bob_keys.recv);
        assert_eq!(*alice_keys.recv, *bob_keys.send);
        assert_eq!((alice_keys.local_index, alice_keys.remote_index), (11, 22));
        assert_eq!((bob_keys.local_index, bob_keys.remote_index), (22, 11));
    }

    #[test]
    fn a_different_preshared_key_fails_the_response() {
        let (alice, bob) = pair();
        let bob_at_alice = PeerSecrets::new(&alice, bob.public, PresharedKey::from_bytes([1; 32]));
        let alice_at_bob = PeerSecrets::new(&bob, alice.public, PresharedKey::from_bytes([2; 32]));
        let mut init = [0u8; wire::INITIATION_LEN];
        let state =
            create_initiation(&alice, &bob_at_alice, &mut OsRng, 1, [0; 12], &mut init).unwrap();
        let msg = Initiation::new_checked(&init[..]).unwrap();
        let start = start_initiation(&bob, &msg).unwrap();
        let (_, rstate) = finish_initiation(start, &alice_at_bob, &msg).unwrap();
        let mut resp = [0u8; wire::RESPONSE_LEN];
        create_response(rstate, &alice_at_bob, &mut OsRng, 2, &mut resp).unwrap();
        let msg = Response::new_checked(&resp[..]).unwrap();
        assert_eq!(
            consume_response(&state, &alice, &bob_at_alice, &msg).err(),
            Some(HandshakeError::Decrypt)
        );
    }

    #[test]
    fn an_initiation_for_someone_else_does_not_decrypt() {
        let (alice, bob) = pair();
        let carol = Identity::new(PrivateKey::from_bytes([9; 32]));
        let bob_at_alice = PeerSecrets::new(&alice, bob.public, PresharedKey::default());
        let mut init = [0u8; wire::INITIATION_LEN];
        create_initiation(&alice, &bob_at_alice, &mut OsRng, 1, [0; 12], &mut init).unwrap();
        let msg = Initiation::new_checked(&init[..]).unwrap();
        assert!(start_initiation(&carol, &msg).is_err());
    }

    #[test]
    fn timestamps_order_with_time_and_hide_fine_resolution() {
        use core::time::Duration;
        let a = tai64n(Duration::new(1_700_000_000, 1_000));
        let b = tai64n(Duration::new(1_700_000_000, 2_000));
        let c = tai64n(Duration::new(1_700_000_000, 20_000_000));
        let d = tai64n(Duration::new(1_700_000_001, 0));
        assert_eq!(a, b);
        assert!(a < c && c < d);
    }
}
