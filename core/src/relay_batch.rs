//! The relay's batching subprotocol: many WireGuard datagrams in one
//! WebSocket message, so that a browser pays its cost per message once per
//! batch instead of once per datagram.
//!
//! A page asks for it with `Sec-WebSocket-Protocol: underpass.batch.v1`;
//! when the relay picks it, every binary message in both directions is a
//! run of datagrams, each behind its length as two bytes, big-endian:
//!
//! ```text
//! | len (u16 BE) | datagram (len bytes) | len | datagram | ...
//! ```
//!
//! A message is at most [`MAX_MESSAGE`] bytes and holds at least one
//! datagram; no datagram is empty. Anything else is malformed, and the
//! whole message is refused before any of it is used. Without the
//! subprotocol a message is one datagram, as it always was.

/// The `Sec-WebSocket-Protocol` value that selects batching.
pub const PROTOCOL: &str = "underpass.batch.v1";

/// The largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Bytes of the length before each datagram.
pub const PREFIX: usize = 2;

/// Why a message is not a batch of datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the fields: the message's length, or the offset at fault
pub enum Malformed {
    /// No datagram at all.
    Empty,
    /// Larger than [`MAX_MESSAGE`].
    TooLarge { len: usize },
    /// The message ends inside a length prefix or inside a datagram.
    Truncated { at: usize },
    /// A length prefix of zero.
    ZeroLength { at: usize },
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Empty => write!(f, "an empty batch"),
            Malformed::TooLarge { len } => {
                write!(f, "a batch of {len} bytes (at most {MAX_MESSAGE})")
            }
            Malformed::Truncated { at } => {
                write!(f, "a batch cut short in the datagram at byte {at}")
            }
            Malformed::ZeroLength { at } => {
                write!(f, "a datagram of length zero at byte {at}")
            }
        }
    }
}

impl std::error::Error for Malformed {}

/// Checks a whole message and returns its datagrams; nothing of a
/// malformed message is returned.
pub fn split(message: &[u8]) -> Result<Vec<&[u8]>, Malformed> {
    let mut out = Vec::new();
    for_each(message, |d| out.push(d))?;
    Ok(out)
}

/// Checks a whole message, then hands each datagram to `f` in order; `f`
/// is not called for a malformed message.
pub fn for_each<'a>(message: &'a [u8], mut f: impl FnMut(&'a [u8])) -> Result<usize, Malformed> {
    let count = check(message)?;
    let mut rest = message;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let (datagram, after) = tail.split_at(len);
        f(datagram);
        rest = after;
    }
    Ok(count)
}

/// The number of datagrams in `message`, or why it is malformed.
fn check(message: &[u8]) -> Result<usize, Malformed> {
    if message.len() > MAX_MESSAGE {
        return Err(Malformed::TooLarge { len: message.len() });
    }
    if message.is_empty() {
        return Err(Malformed::Empty);
    }
    let mut at = 0;
    let mut count = 0;
    while at < message.len() {
        let Some(prefix) = message.get(at..at + PREFIX) else {
            return Err(Malformed::Truncated { at });
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len == 0 {
            return Err(Malformed::ZeroLength { at });
        }
        if message.len() - at - PREFIX < len {
            return Err(Malformed::Truncated { at });
        }
        at += PREFIX + len;
        count += 1;
    }
    Ok(count)
}

/// Builds outgoing messages: datagrams are appended until the next would
/// not fit, and the caller sends what is there.
#[derive(Debug, Default)]
pub struct Batcher {
    buf: Vec<u8>,
    count: usize,
}

impl Batcher {
    /// An empty message, with room for [`MAX_MESSAGE`] bytes.
    pub fn new() -> Self {
        Batcher {
            buf: Vec::with_capacity(MAX_MESSAGE),
            count: 0,
        }
    }

    /// Whether `len` more bytes of datagram fit in the message.
    pub fn fits(&self, len: usize) -> bool {
        self.buf.len() + PREFIX + len <= MAX_MESSAGE
    }

    /// Appends `datagram`; false (and nothing appended) when it does not
    /// fit: take the message first. A datagram that fits no message
    /// (empty, or over [`MAX_MESSAGE`] - [`PREFIX`]) is never appended.
    pub fn push(&mut self, datagram: &[u8]) -> bool {
        if datagram.is_empty() || !self.fits(datagram.len()) {
            return false;
        }
        // `fits` bounds the length by MAX_MESSAGE, which is below 2^16 + 2.
        let len = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(datagram);
        self.count += 1;
        true
    }

    /// Room for a datagram of `len` bytes written in place by `write`
    /// (which returns how many it wrote, at most `len`); false when it
    /// does not fit or `write` wrote nothing.
    pub fn push_with(&mut self, len: usize, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if len == 0 || !self.fits(len) {
            return false;
        }
        let start = self.buf.len();
        self.buf.resize(start + PREFIX + len, 0);
        let written = write(&mut self.buf[start + PREFIX..]).min(len);
        if written == 0 {
            self.buf.truncate(start);
            return false;
        }
        self.buf.truncate(start + PREFIX + written);
        let prefix = u16::try_from(written).unwrap_or(u16::MAX).to_be_bytes();
        self.buf[start..start + PREFIX].copy_from_slice(&prefix);
        self.count += 1;
        true
    }

    /// Whether no datagram was added since the last take or clear.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagrams in the message so far.
    pub fn len_datagrams(&self) -> usize {
        self.count
    }

    /// The message so far, leaving the batcher empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.count = 0;
        std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_MESSAGE))
    }

    /// The message so far, without taking it (for a caller that copies it
    /// out and then calls [`Batcher::clear`]).
    pub fn message(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets the message so far, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(datagrams: &[&[u8]]) -> Vec<u8> {
        let mut b = Batcher::new();
        for d in datagrams {
            assert!(b.push(d));
        }
        b.take()
    }

    #[test]
    fn a_batch_is_length_prefixed_datagrams() {
        let m = batch(&[b"abc", b"d"]);
        assert_eq!(m, [0, 3, b'a', b'b', b'c', 0, 1, b'd']);
        assert_eq!(split(&m).unwrap(), [&b"abc"[..], &b"d"[..]]);
    }

    #[test]
    fn malformed_batches_are_refused_whole() {
        assert_eq!(split(&[]), Err(Malformed::Empty));
        assert_eq!(split(&[0]), Err(Malformed::Truncated { at: 0 }));
        assert_eq!(split(&[0, 3, 1, 2]), Err(Malformed::Truncated { at: 0 }));
        assert_eq!(
            split(&[0, 1, 9, 0, 5, 1]),
            Err(Malformed::Truncated { at: 3 })
        );
        assert_eq!(
            split(&[0, 1, 9, 0, 0]),
            Err(Malformed::ZeroLength { at: 3 })
        );
        assert_eq!(split(&[0, 1, 9, 0]), Err(Malformed::Truncated { at: 3 }));
        let big = vec![1u8; MAX_MESSAGE + 1];
        assert_eq!(
            split(&big),
            Err(Malformed::TooLarge {
                len: MAX_MESSAGE + 1
            })
        );
        let mut called = false;
        assert!(for_each(&[0, 1, 9, 0, 0], |_| called = true).is_err());
        assert!(!called, "a datagram of a malformed batch was handed out");
    }

    #[test]
    fn a_full_batch_refuses_more_and_stays_within_the_bound() {
        let mut b = Batcher::new();
        let d = [7u8; 1452];
        let mut n = 0;
        while b.push(&d) {
            n += 1;
        }
        assert_eq!(n, MAX_MESSAGE / (1452 + PREFIX));
        assert!(b.message().len() <= MAX_MESSAGE);
        assert!(!b.push(&[]), "an empty datagram was batched");
        let mut one = Batcher::new();
        assert!(one.push(&vec![1u8; MAX_MESSAGE - PREFIX]));
        assert!(!Batcher::new().push(&vec![1u8; MAX_MESSAGE - PREFIX + 1]));
        assert_eq!(split(&one.take()).unwrap()[0].len(), MAX_MESSAGE - PREFIX);
    }

    #[test]
    fn push_with_writes_in_place_and_records_what_was_written() {
        let mut b = Batcher::new();
        assert!(b.push_with(100, |buf| {
            buf[..3].copy_from_slice(b"xyz");
            3
        }));
        assert!(!b.push_with(100, |_| 0));
        assert_eq!(split(b.message()).unwrap(), [&b"xyz"[..]]);
    }

    proptest! {
        #[test]
        fn what_is_batched_is_split_back(
            datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3000), 1..60)
        ) {
            let mut b = Batcher::new();
            let mut messages = Vec::new();
            for d in &datagrams {
                if !b.push(d) {
                    messages.push(b.take());
                    prop_assert!(b.push(d));
                }
            }
            messages.push(b.take());
            let mut back = Vec::new();
            for m in &messages {
                prop_assert!(m.len() <= MAX_MESSAGE);
                back.extend(split(m).unwrap().into_iter().map(<[u8]>::to_vec));
            }
            prop_assert_eq!(back, datagrams);
        }

        #[test]
        fn any_bytes_split_or_refuse_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
            if let Ok(parts) = split(&bytes) {
                let total: usize = parts.iter().map(|p| p.len() + PREFIX).sum();
                prop_assert_eq!(total, bytes.len());
                prop_assert!(parts.iter().all(|p| !p.is_empty()));
            }
        }

        #[test]
        fn a_cut_batch_is_refused(
            datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..500), 1..10),
            cut in any::<prop::sample::Index>()
        ) {
            let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
            let m = batch(&refs);
            let at = cut.index(m.len() - 1) + 1;
            // Cutting at a datagram's end leaves a valid, shorter batch.
            let ends: Vec<usize> = refs.iter().scan(0, |s, d| { *s += PREFIX + d.len(); Some(*s) }).collect();
            let r = split(&m[..at]);
            prop_assert_eq!(r.is_ok(), ends.contains(&at));
        }
    }
}
