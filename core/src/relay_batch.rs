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
//!
//! WebTransport uploads use the same framing on one QUIC stream: batches
//! written one after another, read back by [`StreamSplitter`].

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

/// Splits a byte stream of batches back into datagrams: WebTransport
/// uploads write batches on one QUIC stream, and a stream is read in
/// pieces that need not end where a write or a datagram ends. The framing
/// is a message's, repeated; a datagram must fit a message on its own, so
/// at most one datagram's bytes wait here between reads.
#[derive(Debug, Default)]
pub struct StreamSplitter {
    /// The start of a datagram (or of its length) that a read cut.
    partial: Vec<u8>,
    /// Bytes of the stream taken so far, for saying where a fault is.
    offset: usize,
}

impl StreamSplitter {
    /// Nothing read yet.
    pub fn new() -> Self {
        StreamSplitter::default()
    }

    /// Hands each datagram that `chunk` completes to `f`, in order, and
    /// keeps a cut one for the next chunk; returns how many. After an
    /// error the stream is not a batch stream: the caller drops it.
    pub fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(&[u8])) -> Result<usize, Malformed> {
        let mut rest = chunk;
        let mut count = 0;
        if !self.partial.is_empty() {
            let need = PREFIX.saturating_sub(self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..need]);
            rest = &rest[need..];
            let Some(len) = self.datagram_len(&self.partial)? else {
                return Ok(0);
            };
            let need = (PREFIX + len - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..need]);
            rest = &rest[need..];
            if self.partial.len() < PREFIX + len {
                return Ok(0);
            }
            f(&self.partial[PREFIX..]);
            count += 1;
            self.offset = self.offset.saturating_add(self.partial.len());
            self.partial.clear();
        }
        while let Some(len) = self.datagram_len(rest)? {
            let Some(datagram) = rest.get(PREFIX..PREFIX + len) else {
                break;
            };
            f(datagram);
            count += 1;
            self.offset = self.offset.saturating_add(PREFIX + len);
            rest = &rest[PREFIX + len..];
        }
        self.partial.extend_from_slice(rest);
        Ok(count)
    }

    /// The stream ended: an error when it ended inside a datagram.
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(Malformed::Truncated { at: self.offset })
        }
    }

    /// The length behind the prefix at the start of `bytes`, if it is
    /// all there; an error for a length no message could hold.
    fn datagram_len(&self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        let [hi, lo, ..] = bytes else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if len == 0 {
            return Err(Malformed::ZeroLength { at: self.offset });
        }
        if PREFIX + len > MAX_MESSAGE {
            return Err(Malformed::TooLarge { len: PREFIX + len });
        }
        Ok(Some(len))
    }
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

    fn split_stream(stream: &[u8], cuts: &[usize]) -> Result<Vec<Vec<u8>>, Malformed> {
        let mut s = StreamSplitter::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            let cut = cut.clamp(at, stream.len());
            s.feed(&stream[at..cut], |d| out.push(d.to_vec()))?;
            at = cut;
        }
        s.finish()?;
        Ok(out)
    }

    #[test]
    fn a_stream_is_split_wherever_its_reads_end() {
        let m = batch(&[b"abc", b"d", b"efgh"]);
        let want = vec![b"abc".to_vec(), b"d".to_vec(), b"efgh".to_vec()];
        for a in 0..=m.len() {
            for b in a..=m.len() {
                assert_eq!(split_stream(&m, &[a, b]).unwrap(), want, "cut at {a}, {b}");
            }
        }
    }

    #[test]
    fn a_malformed_stream_is_refused() {
        assert_eq!(
            split_stream(&[0, 1, 9, 0, 0, 7], &[]),
            Err(Malformed::ZeroLength { at: 3 })
        );
        // Cut inside the prefix, then found to be zero.
        assert_eq!(
            split_stream(&[0, 1, 9, 0, 0, 7], &[4]),
            Err(Malformed::ZeroLength { at: 3 })
        );
        assert_eq!(
            split_stream(&[0, 1, 9, 0, 5, 1], &[]),
            Err(Malformed::Truncated { at: 3 })
        );
        // A datagram that fits no message: refused at its prefix, before
        // anything of it is held.
        assert_eq!(
            split_stream(&[0xff, 0xff, 1], &[1]),
            Err(Malformed::TooLarge {
                len: 0xffff + PREFIX
            })
        );
        let mut s = StreamSplitter::new();
        assert_eq!(s.feed(&[0xff, 0xfe], |_| {}), Ok(0));
        assert!(s.finish().is_err());
    }

    /// `datagrams` batched into messages, each as full as it may be.
    fn batched(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut b = Batcher::new();
        let mut messages = Vec::new();
        for d in datagrams {
            if !b.push(d) {
                messages.push(b.take());
                assert!(b.push(d), "an empty batch takes a datagram");
            }
        }
        messages.push(b.take());
        messages
    }

    proptest! {
        #[test]
        fn what_is_batched_is_split_back(
            datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3000), 1..60)
        ) {
            let messages = batched(&datagrams);
            let mut back = Vec::new();
            for m in &messages {
                prop_assert!(m.len() <= MAX_MESSAGE);
                back.extend(split(m).unwrap().into_iter().map(<[u8]>::to_vec));
            }
            prop_assert_eq!(back, datagrams);
        }

        #[test]
        fn a_stream_of_batches_is_split_back(
            datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3000), 1..40),
            cuts in prop::collection::vec(0usize..200_000, 0..20)
        ) {
            let stream = batched(&datagrams).concat();
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(split_stream(&stream, &cuts).unwrap(), datagrams);
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
