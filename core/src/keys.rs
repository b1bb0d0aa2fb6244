//! WireGuard keys: Curve25519 static keys and the optional preshared key.
//!
//! Secrets are zeroed on drop and never printed: their `Debug` is redacted, and
//! the only way to get a private key's text is [`PrivateKey::to_base64`], which
//! `genkey` calls on purpose.

use core::fmt;
use core::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why a key's text was refused. It never contains the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not valid base64")]
    /// Not base64.
    Base64,
    #[error("decodes to {0} bytes, a key has 32")]
    /// Decodes to this many bytes, not 32.
    Length(usize),
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    // A 32-byte key is 44 base64 characters; refuse anything much longer
    // before decoding so no large buffer is made from hostile input.
    if text.len() > 64 {
        return Err(KeyError::Length(text.len() * 3 / 4));
    }
    let mut bytes = BASE64.decode(text).map_err(|_| KeyError::Base64)?;
    let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()));
    bytes.zeroize();
    key
}

/// A peer's identity on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// The key's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as wg(8) writes it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The first characters of the base64 form: enough to tell peers apart
    /// in a log line.
    pub fn short(&self) -> ShortKey {
        ShortKey(*self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PublicKey)
    }
}

/// See [`PublicKey::short`].
#[derive(Clone, Copy)]
pub struct ShortKey(PublicKey);

impl fmt::Display for ShortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_base64();
        write!(f, "{}…", &text[..8])
    }
}

/// A static Curve25519 private key.
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A new random key from `rng`, which must be cryptographically secure.
    pub fn generate(rng: &mut dyn CryptoRngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        key
    }

    /// Any 32 bytes are a valid key (they are clamped when used).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The public key that goes with this private one.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The key's text, for `genkey`. Nothing else should call this.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_bytes())
    }

    pub(crate) fn as_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.0
    }

    /// The key's 32 bytes; keep them secret.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(redacted)")
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut bytes = decode32(s)?;
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for PrivateKey {}

/// The optional symmetric key mixed into the handshake (post-quantum
/// hedge). All zeros when a peer has none, as the protocol says.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    /// The key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PresharedKey(bytes)
    }

    /// A new random key from `rng`, which must be cryptographically secure.
    pub fn generate(rng: &mut dyn CryptoRngCore) -> Self {
        let mut key = PresharedKey([0; 32]);
        rng.fill_bytes(&mut key.0);
        key
    }

    /// The key's 32 bytes; keep them secret.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key's text, for writing a config back out.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(redacted)")
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PresharedKey)
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for PresharedKey {}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 section 6.1: Alice's key pair.
    const ALICE_PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const ALICE_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

    #[test]
    fn public_key_derivation_matches_rfc7748() {
        let private: PrivateKey = ALICE_PRIVATE.parse().unwrap();
        assert_eq!(private.public_key().to_base64(), ALICE_PUBLIC);
        assert_eq!(private.to_base64(), ALICE_PRIVATE);
    }

    #[test]
    fn bad_key_text_is_refused_without_echoing_it() {
        assert_eq!("not base64!".parse::<PublicKey>(), Err(KeyError::Base64));
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::Length(3)));
        let long = "A".repeat(500);
        assert!(long.parse::<PrivateKey>().is_err());
        let err = "c2VjcmV0".parse::<PrivateKey>().unwrap_err().to_string();
        assert!(!err.contains("c2VjcmV0"));
    }

    #[test]
    fn secrets_do_not_print() {
        let private: PrivateKey = ALICE_PRIVATE.parse().unwrap();
        assert_eq!(format!("{private:?}"), "PrivateKey(redacted)");
        let psk = PresharedKey::from_bytes([7; 32]);
        assert!(!format!("{psk:?}").contains('7'));
    }
}
