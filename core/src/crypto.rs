//! The primitives of the WireGuard whitepaper, section 5.4, under their
//! paper names: HASH, MAC, HMAC, KDF, AEAD and XAEAD.
//!
//! The handshake uses the pure-Rust AEAD (small messages, rare). The data path
//! does not come through here: [`crate::session`] uses ring directly.

use blake2::digest::{FixedOutput, KeyInit, Mac as _, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Tag, XChaCha20Poly1305, XNonce};
use hmac::SimpleHmac;
use zeroize::Zeroizing;

pub(crate) const KEY_LEN: usize = 32;

pub(crate) type Key = Zeroizing<[u8; KEY_LEN]>;

/// The AEAD refused a ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthFailed;

/// HASH(parts[0] || parts[1] || ...): BLAKE2s-256.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for part in parts {
        Digest::update(&mut h, part);
    }
    h.finalize().into()
}

/// MAC(key, input): keyed BLAKE2s with a 16-byte output. Keys are 32 bytes
/// (MAC1, cookies) or 16 (MAC2 keyed by a cookie); BLAKE2s binds the key's
/// length, so a short key must not be padded.
pub(crate) fn mac(key: &[u8], input: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
        .expect("keys of at most 32 bytes are within BLAKE2s's limit");
    Update::update(&mut m, input);
    m.finalize_fixed().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    let mut m = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    for part in parts {
        Update::update(&mut m, part);
    }
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// KDF1(key, input): the first output of HKDF over HMAC-BLAKE2s.
pub(crate) fn kdf1(key: &[u8; 32], input: &[u8]) -> Key {
    let prk = hmac(key, &[input]);
    hmac(&*prk, &[&[1]])
}

/// KDF2(key, input): the first two outputs.
pub(crate) fn kdf2(key: &[u8; 32], input: &[u8]) -> (Key, Key) {
    let prk = hmac(key, &[input]);
    let t1 = hmac(&*prk, &[&[1]]);
    let t2 = hmac(&*prk, &[&*t1, &[2]]);
    (t1, t2)
}

/// KDF3(key, input): the first three outputs.
pub(crate) fn kdf3(key: &[u8; 32], input: &[u8]) -> (Key, Key, Key) {
    let prk = hmac(key, &[input]);
    let t1 = hmac(&*prk, &[&[1]]);
    let t2 = hmac(&*prk, &[&*t1, &[2]]);
    let t3 = hmac(&*prk, &[&*t2, &[3]]);
    (t1, t2, t3)
}

fn nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// AEAD(key, counter, plain, aad): ChaCha20-Poly1305, encrypted in place;
/// the tag is written to `tag_out`.
pub(crate) fn aead_seal(
    key: &[u8; 32],
    counter: u64,
    in_out: &mut [u8],
    aad: &[u8],
    tag_out: &mut [u8],
) {
    let cipher = ChaCha20Poly1305::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached(&nonce(counter), aad, in_out)
        .expect("handshake messages are far below the AEAD's length limit");
    tag_out.copy_from_slice(&tag);
}

/// Opens what [`aead_seal`] sealed, in place.
pub(crate) fn aead_open(
    key: &[u8; 32],
    counter: u64,
    in_out: &mut [u8],
    aad: &[u8],
    tag: &[u8],
) -> Result<(), AuthFailed> {
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_in_place_detached(&nonce(counter), aad, in_out, Tag::from_slice(tag))
        .map_err(|_| AuthFailed)
}

/// XAEAD(key, nonce, plain, aad): XChaCha20-Poly1305, for cookie replies.
pub(crate) fn xaead_seal(
    key: &[u8; 32],
    nonce: &[u8; 24],
    in_out: &mut [u8],
    aad: &[u8],
    tag_out: &mut [u8],
) {
    let cipher = XChaCha20Poly1305::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, in_out)
        .expect("a cookie is far below the AEAD's length limit");
    tag_out.copy_from_slice(&tag);
}

pub(crate) fn xaead_open(
    key: &[u8; 32],
    nonce: &[u8; 24],
    in_out: &mut [u8],
    aad: &[u8],
    tag: &[u8],
) -> Result<(), AuthFailed> {
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, in_out, Tag::from_slice(tag))
        .map_err(|_| AuthFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hash_of_the_construction_name_is_the_known_initial_chaining_key() {
        // The value every WireGuard implementation starts its handshake from.
        let ck = hash(&[b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"]);
        assert_eq!(
            hex(&ck),
            "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
        );
    }

    #[test]
    fn hmac_blake2s_matches_rfc2104_construction() {
        // HMAC over BLAKE2s (block 64) computed by hand from the definition.
        let key = [0x0bu8; 32];
        let data = b"Hi There";
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for i in 0..32 {
            ipad[i] ^= key[i];
            opad[i] ^= key[i];
        }
        let inner = hash(&[&ipad, data]);
        let expected = hash(&[&opad, &inner]);
        assert_eq!(*hmac(&key, &[data]), expected);
    }

    #[test]
    fn aead_round_trips_and_refuses_tampering() {
        let key = [9u8; 32];
        let mut msg = *b"attack at dawn";
        let mut tag = [0u8; 16];
        aead_seal(&key, 7, &mut msg, b"ad", &mut tag);
        let mut copy = msg;
        aead_open(&key, 7, &mut copy, b"ad", &tag).unwrap();
        assert_eq!(&copy, b"attack at dawn");
        let mut copy = msg;
        assert_eq!(aead_open(&key, 8, &mut copy, b"ad", &tag), Err(AuthFailed));
        let mut copy = msg;
        copy[0] ^= 1;
        assert_eq!(aead_open(&key, 7, &mut copy, b"ad", &tag), Err(AuthFailed));
    }
}
