//! The four WireGuard messages as typed views over byte buffers.
//!
//! `new_checked` validates the length once, so no accessor can panic
//! afterwards; the byte ranges are named in each message's `field` module.
//! Multi-byte integers are little-endian, as every implementation writes them.

use core::ops::Range;

/// Why bytes are not a WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the smallest message, or not the exact size of its type.
    Length,
    /// The type byte is not 1..=4, or a reserved byte is not zero.
    Type,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The first byte of every WireGuard message.
pub enum MessageType {
    /// Handshake initiation.
    Initiation = 1,
    /// Handshake response.
    Response = 2,
    /// Cookie reply, sent under load.
    CookieReply = 3,
    /// Transport data.
    Data = 4,
}

/// Length of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Length of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header of a transport data message: type, receiver index, counter.
pub const DATA_HEADER_LEN: usize = 16;
/// A transport message with an empty payload: a keepalive.
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;
/// What a transport data message adds to its (padded) payload.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// Reads the type of a datagram and checks its length against the type.
pub fn message_type(bytes: &[u8]) -> Result<MessageType, WireError> {
    if bytes.len() < 4 {
        return Err(WireError::Length);
    }
    if bytes[1..4] != [0, 0, 0] {
        return Err(WireError::Type);
    }
    let (ty, ok) = match bytes[0] {
        1 => (MessageType::Initiation, bytes.len() == INITIATION_LEN),
        2 => (MessageType::Response, bytes.len() == RESPONSE_LEN),
        3 => (MessageType::CookieReply, bytes.len() == COOKIE_REPLY_LEN),
        4 => (MessageType::Data, bytes.len() >= DATA_MIN_LEN),
        _ => return Err(WireError::Type),
    };
    if ok {
        Ok(ty)
    } else {
        Err(WireError::Length)
    }
}

fn read_u32(bytes: &[u8], at: Range<usize>) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at]);
    u32::from_le_bytes(b)
}

fn array<const N: usize>(bytes: &[u8], at: Range<usize>) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&bytes[at]);
    b
}

macro_rules! view {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $len_ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps `buffer` after checking its type and length.
            pub fn new_checked(buffer: T) -> Result<Self, WireError> {
                if message_type(buffer.as_ref())? != $ty {
                    return Err(WireError::Type);
                }
                Ok($name { buffer })
            }

            /// Wraps `buffer` to write a message into; its length must be right.
            pub fn new_unchecked(buffer: T) -> Self {
                debug_assert!(($len_ok)(buffer.as_ref().len()));
                $name { buffer }
            }

            /// The whole message.
            pub fn as_bytes(&self) -> &[u8] {
                self.buffer.as_ref()
            }

            /// The buffer back.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Writes the type byte and the reserved zeros.
            pub fn set_header(&mut self) {
                let b = self.buffer.as_mut();
                b[..4].copy_from_slice(&[$ty as u8, 0, 0, 0]);
            }

            /// The whole message, to write.
            pub fn as_bytes_mut(&mut self) -> &mut [u8] {
                self.buffer.as_mut()
            }
        }
    };
}

/// Byte ranges of a handshake initiation's fields, named as in the whitepaper.
#[allow(missing_docs)] // the whitepaper's field names
pub mod initiation {
    use core::ops::Range;
    pub const SENDER: Range<usize> = 4..8;
    pub const EPHEMERAL: Range<usize> = 8..40;
    pub const STATIC: Range<usize> = 40..88;
    pub const TIMESTAMP: Range<usize> = 88..116;
    pub const MAC1: Range<usize> = 116..132;
    pub const MAC2: Range<usize> = 132..148;
}

/// Byte ranges of a handshake response's fields, named as in the whitepaper.
#[allow(missing_docs)] // the whitepaper's field names
pub mod response {
    use core::ops::Range;
    pub const SENDER: Range<usize> = 4..8;
    pub const RECEIVER: Range<usize> = 8..12;
    pub const EPHEMERAL: Range<usize> = 12..44;
    pub const EMPTY: Range<usize> = 44..60;
    pub const MAC1: Range<usize> = 60..76;
    pub const MAC2: Range<usize> = 76..92;
}

/// Byte ranges of a cookie reply's fields, named as in the whitepaper.
#[allow(missing_docs)] // the whitepaper's field names
pub mod cookie_reply {
    use core::ops::Range;
    pub const RECEIVER: Range<usize> = 4..8;
    pub const NONCE: Range<usize> = 8..32;
    pub const COOKIE: Range<usize> = 32..64;
}

/// Byte ranges of a transport data header's fields, named as in the whitepaper.
#[allow(missing_docs)] // the whitepaper's field names
pub mod data {
    use core::ops::Range;
    pub const RECEIVER: Range<usize> = 4..8;
    pub const COUNTER: Range<usize> = 8..16;
}

view!(
    /// Handshake initiation (type 1, 148 bytes).
    Initiation,
    MessageType::Initiation,
    |n| n == INITIATION_LEN
);
view!(
    /// Handshake response (type 2, 92 bytes).
    Response,
    MessageType::Response,
    |n| n == RESPONSE_LEN
);
view!(
    /// Cookie reply (type 3, 64 bytes).
    CookieReply,
    MessageType::CookieReply,
    |n| n == COOKIE_REPLY_LEN
);
view!(
    /// Transport data (type 4, 32 bytes or more; 32 is a keepalive).
    Data,
    MessageType::Data,
    |n| n >= DATA_MIN_LEN
);

impl<T: AsRef<[u8]>> Initiation<T> {
    /// The initiator's session index.
    pub fn sender(&self) -> u32 {
        read_u32(self.as_bytes(), initiation::SENDER)
    }
    /// The initiator's ephemeral public key.
    pub fn ephemeral(&self) -> [u8; 32] {
        array(self.as_bytes(), initiation::EPHEMERAL)
    }
}

impl<T: AsRef<[u8]>> Response<T> {
    /// The responder's session index.
    pub fn sender(&self) -> u32 {
        read_u32(self.as_bytes(), response::SENDER)
    }
    /// The initiator's session index, which this answers.
    pub fn receiver(&self) -> u32 {
        read_u32(self.as_bytes(), response::RECEIVER)
    }
    /// The responder's ephemeral public key.
    pub fn ephemeral(&self) -> [u8; 32] {
        array(self.as_bytes(), response::EPHEMERAL)
    }
}

impl<T: AsRef<[u8]>> CookieReply<T> {
    /// The session index of the message this answers.
    pub fn receiver(&self) -> u32 {
        read_u32(self.as_bytes(), cookie_reply::RECEIVER)
    }
    /// The nonce of the encrypted cookie.
    pub fn nonce(&self) -> [u8; 24] {
        array(self.as_bytes(), cookie_reply::NONCE)
    }
    /// The encrypted cookie and its tag.
    pub fn encrypted_cookie(&self) -> [u8; 32] {
        array(self.as_bytes(), cookie_reply::COOKIE)
    }
}

impl<T: AsRef<[u8]>> Data<T> {
    /// The receiver's session index.
    pub fn receiver(&self) -> u32 {
        read_u32(self.as_bytes(), data::RECEIVER)
    }
    /// The message's counter (its nonce).
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(array(self.as_bytes(), data::COUNTER))
    }
    /// Encrypted payload followed by the tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.as_bytes()[DATA_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Data<T> {
    /// Sets the receiver's session index.
    pub fn set_receiver(&mut self, index: u32) {
        self.as_bytes_mut()[data::RECEIVER].copy_from_slice(&index.to_le_bytes());
    }
    /// Sets the counter.
    pub fn set_counter(&mut self, counter: u64) {
        self.as_bytes_mut()[data::COUNTER].copy_from_slice(&counter.to_le_bytes());
    }
}

/// The two MAC fields close every handshake message: `mac1` covers all bytes
/// before it, `mac2` all bytes before itself (mac1 included).
pub(crate) fn mac_offsets(message: &[u8]) -> (usize, usize) {
    let len = message.len();
    (len - 32, len - 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_per_type() {
        assert_eq!(message_type(&[]), Err(WireError::Length));
        assert_eq!(message_type(&[1, 0, 0, 0]), Err(WireError::Length));
        assert_eq!(message_type(&[1; 148]), Err(WireError::Type));
        let mut init = [0u8; 148];
        init[0] = 1;
        assert_eq!(message_type(&init), Ok(MessageType::Initiation));
        assert_eq!(message_type(&init[..147]), Err(WireError::Length));
        let mut data = [0u8; 31];
        data[0] = 4;
        assert_eq!(message_type(&data), Err(WireError::Length));
        let data = [4u8, 0, 0, 0]
            .iter()
            .copied()
            .chain([0; 28])
            .collect::<Vec<_>>();
        assert_eq!(message_type(&data), Ok(MessageType::Data));
        let mut other = [0u8; 64];
        other[0] = 5;
        assert_eq!(message_type(&other), Err(WireError::Type));
    }

    #[test]
    fn data_fields_round_trip() {
        let mut buf = [0u8; 40];
        let mut msg = Data::new_unchecked(&mut buf[..]);
        msg.set_header();
        msg.set_receiver(0xdead_beef);
        msg.set_counter(u64::MAX - 1);
        let msg = Data::new_checked(&buf[..]).unwrap();
        assert_eq!(msg.receiver(), 0xdead_beef);
        assert_eq!(msg.counter(), u64::MAX - 1);
        assert_eq!(msg.ciphertext().len(), 24);
    }
}
