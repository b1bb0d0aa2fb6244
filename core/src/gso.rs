//! The send queue between the node and the UDP socket, shaped for GSO.
//!
//! With UDP generic segmentation offload one `sendmsg` carries many
//! datagrams to one destination: all `segment_size` long but the last, which
//! may be shorter. The node encrypts straight into this queue; the event
//! loop drains it front to back.
//!
//! Order is the order of writing. A datagram joins the newest batch of its
//! (source, destination) pair while that batch is open (every datagram in it
//! so far is exactly `segment_size` long), is no longer than `segment_size`,
//! and the batch stays within the kernel's limits; a shorter datagram closes
//! its batch as the last segment. Anything else starts a new batch at the
//! back. Flushing larger segments first would keep a packet train's short
//! tail last, but it reorders a TCP flow whose segments have mixed sizes, so
//! this queue never reorders datagrams to one destination.
//!
//! Nothing is dropped for back-pressure: when the socket is not writable
//! the caller leaves the queue alone and watches [`GsoQueue::len_bytes`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// Largest UDP payload in one send over IPv4 (65,535 - 20 - 8).
pub const MAX_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload in one send over IPv6 without jumbograms (65,535 - 8).
pub const MAX_PAYLOAD_V6: usize = 65_527;
/// Spare batch buffers kept for reuse.
const SPARE_BUFFERS: usize = 32;

/// Datagrams for one send: all `segment_size` long but the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Local address to send from; `None` lets the kernel choose.
    pub src: Option<IpAddr>,
    /// Where the datagrams go.
    pub dst: SocketAddr,
    /// Length of each datagram but the last, which may be shorter: the `segment_size` of a GSO send.
    pub segment_size: usize,
    /// The datagrams, back to back.
    pub contents: &'a [u8],
}

impl Transmit<'_> {
    /// How many datagrams `contents` holds.
    pub fn segments(&self) -> usize {
        self.contents.len().div_ceil(self.segment_size.max(1))
    }
}

type Pair = (Option<IpAddr>, SocketAddr);

struct Batch {
    pair: Pair,
    segment_size: usize,
    /// Allocated once at full size and reused: bytes past `used` are stale,
    /// and every datagram overwrites all of its own bytes, so pushing
    /// never has to zero memory first.
    buf: Vec<u8>,
    used: usize,
    /// Bytes at the front already sent.
    sent: usize,
    /// Datagrams in `buf`, sent or not.
    count: usize,
    /// No short datagram yet: equal ones may still join.
    open: bool,
}

impl Batch {
    fn unsent_datagrams(&self) -> usize {
        (self.used - self.sent).div_ceil(self.segment_size)
    }
}

/// Encrypted datagrams waiting for the socket, batched for GSO.
pub struct GsoQueue {
    batches: VecDeque<Batch>,
    /// Sequence number of `batches[0]`; numbers survive pops from the front.
    front_seq: u64,
    /// Each pair's newest batch, by sequence number. Looked up for every
    /// datagram, so not SipHash; the keys are endpoints of peers that
    /// authenticated, so an unseeded hash is safe here.
    newest: crate::hash::FastMap<Pair, u64>,
    max_segments: usize,
    bytes: usize,
    datagrams: usize,
    spare: Vec<Vec<u8>>,
}

impl Default for GsoQueue {
    fn default() -> Self {
        Self::new()
    }
}

fn payload_limit(dst: &SocketAddr) -> usize {
    if dst.is_ipv4() {
        MAX_PAYLOAD_V4
    } else {
        MAX_PAYLOAD_V6
    }
}

impl GsoQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::with_max_segments(MAX_SEGMENTS)
    }

    /// A queue whose batches hold at most `max_segments` datagrams.
    pub fn with_max_segments(max_segments: usize) -> Self {
        GsoQueue {
            batches: VecDeque::new(),
            front_seq: 0,
            newest: crate::hash::FastMap::default(),
            max_segments: max_segments.clamp(1, MAX_SEGMENTS),
            bytes: 0,
            datagrams: 0,
            spare: Vec::new(),
        }
    }

    /// Appends a datagram of `len` bytes and returns it to be filled in
    /// place, so the encryptor seals straight into the batch. A datagram
    /// longer than the payload limit still gets a batch of its own: the
    /// kernel refuses it, loudly, rather than this queue dropping it quietly.
    pub fn push_with_len(&mut self, src: Option<IpAddr>, dst: SocketAddr, len: usize) -> &mut [u8] {
        debug_assert!(len > 0, "empty datagrams are not sent");
        let pair = (src, dst);
        self.bytes += len;
        self.datagrams += 1;
        if let Some(i) = self.joinable(pair, len) {
            let batch = &mut self.batches[i];
            let at = batch.used;
            batch.used += len;
            batch.count += 1;
            batch.open = len == batch.segment_size;
            return &mut batch.buf[at..at + len];
        }
        let size = payload_limit(&dst).max(len);
        let buf = match self.spare.pop() {
            Some(buf) if buf.len() >= size => buf,
            _ => vec![0; size],
        };
        let seq = self.front_seq + self.batches.len() as u64;
        self.newest.insert(pair, seq);
        self.batches.push_back(Batch {
            pair,
            segment_size: len,
            buf,
            used: len,
            sent: 0,
            count: 1,
            open: true,
        });
        &mut self.batches.back_mut().expect("just pushed").buf[..len]
    }

    /// Index of the batch a datagram of `len` bytes to `pair` may join.
    fn joinable(&self, pair: Pair, len: usize) -> Option<usize> {
        // The common case, one destination at a time, needs no map: the
        // newest batch of the pair is the last one.
        let i = match self.batches.back() {
            Some(back) if back.pair == pair => self.batches.len() - 1,
            _ => {
                let seq = *self.newest.get(&pair)?;
                usize::try_from(seq.checked_sub(self.front_seq)?).ok()?
            }
        };
        let batch = self.batches.get(i)?;
        let fits = batch.open
            && len <= batch.segment_size
            && batch.count < self.max_segments
            && batch.used + len <= payload_limit(&pair.1);
        fits.then_some(i)
    }

    /// Appends a copy of `datagram`.
    pub fn push(&mut self, src: Option<IpAddr>, dst: SocketAddr, datagram: &[u8]) {
        self.push_with_len(src, dst, datagram.len())
            .copy_from_slice(datagram);
    }

    /// The front batch, at most `max_segments` of its datagrams (the socket
    /// may offer fewer segments than the batch holds, or none: then 1).
    pub fn peek(&self, max_segments: usize) -> Option<Transmit<'_>> {
        let batch = self.batches.front()?;
        let take = max_segments.max(1) * batch.segment_size;
        let end = (batch.sent + take).min(batch.used);
        Some(Transmit {
            src: batch.pair.0,
            dst: batch.pair.1,
            segment_size: batch.segment_size,
            contents: &batch.buf[batch.sent..end],
        })
    }

    /// Removes the first `segments` datagrams of the front batch, which
    /// were sent.
    pub fn pop(&mut self, segments: usize) {
        let Some(batch) = self.batches.front_mut() else {
            return;
        };
        let segments = segments.min(batch.unsent_datagrams());
        let end = (batch.sent + segments * batch.segment_size).min(batch.used);
        self.bytes -= end - batch.sent;
        self.datagrams -= segments;
        batch.sent = end;
        if batch.sent == batch.used {
            let batch = self.batches.pop_front().expect("front exists");
            self.front_seq += 1;
            self.recycle(batch.buf);
            if self.batches.is_empty() {
                self.newest.clear();
            }
        }
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        }
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Datagrams not yet sent.
    pub fn len_datagrams(&self) -> usize {
        self.datagrams
    }

    /// Bytes not yet sent.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Drops everything queued (the socket is gone).
    pub fn clear(&mut self) {
        while let Some(batch) = self.batches.pop_front() {
            self.front_seq += 1;
            self.recycle(batch.buf);
        }
        self.newest.clear();
        self.bytes = 0;
        self.datagrams = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A datagram whose bytes say which one it is.
    fn datagram(id: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| id.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }

    /// Drains the queue: (dst, segment_size, datagrams) per transmit.
    fn drain(q: &mut GsoQueue, max: usize) -> Vec<(SocketAddr, usize, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        while let Some(t) = q.peek(max) {
            let datagrams = t
                .contents
                .chunks(t.segment_size)
                .map(<[u8]>::to_vec)
                .collect();
            out.push((t.dst, t.segment_size, datagrams));
            let n = t.segments();
            q.pop(n);
        }
        assert_eq!((q.len_bytes(), q.len_datagrams()), (0, 0));
        out
    }

    #[test]
    fn a_4500_byte_transfer_at_1252_bytes_is_one_send_with_the_short_one_last() {
        let mut q = GsoQueue::new();
        let dst = addr("192.0.2.1:51820");
        let written: Vec<_> = [1252, 1252, 1252, 744]
            .iter()
            .enumerate()
            .map(|(i, &len)| datagram(i as u8, len))
            .collect();
        for d in &written {
            q.push(None, dst, d);
        }
        let sends = drain(&mut q, 64);
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].1, 1252);
        assert_eq!(sends[0].2, written);
    }

    #[test]
    fn mixed_sizes_to_one_destination_leave_in_the_order_written() {
        let mut q = GsoQueue::new();
        let dst = addr("192.0.2.1:51820");
        let written: Vec<_> = [1228, 834, 1031, 1228, 1228, 637]
            .iter()
            .enumerate()
            .map(|(i, &len)| datagram(i as u8, len))
            .collect();
        for d in &written {
            q.push(None, dst, d);
        }
        let sent: Vec<Vec<u8>> = drain(&mut q, 64).into_iter().flat_map(|s| s.2).collect();
        assert_eq!(sent, written);
    }

    #[test]
    fn interleaved_destinations_keep_their_own_order_and_share_batches() {
        let mut q = GsoQueue::new();
        let (a, b) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        q.push(None, a, &datagram(1, 100));
        q.push(None, b, &datagram(2, 100));
        q.push(None, a, &datagram(3, 100));
        q.push(None, b, &datagram(4, 50));
        q.push(None, b, &datagram(5, 100));
        let sends = drain(&mut q, 64);
        assert_eq!(sends.len(), 3);
        assert_eq!(
            (sends[0].0, sends[0].2.clone()),
            (a, vec![datagram(1, 100), datagram(3, 100)])
        );
        assert_eq!(
            (sends[1].0, sends[1].2.clone()),
            (b, vec![datagram(2, 100), datagram(4, 50)])
        );
        assert_eq!(
            (sends[2].0, sends[2].2.clone()),
            (b, vec![datagram(5, 100)])
        );
    }

    #[test]
    fn a_longer_datagram_opens_a_batch_and_a_shorter_one_closes_it() {
        let mut q = GsoQueue::new();
        let dst = addr("[2001:db8::1]:51820");
        for len in [500, 500, 600, 600, 300, 300] {
            q.push(None, dst, &datagram(0, len));
        }
        let shape: Vec<(usize, usize)> =
            drain(&mut q, 64).iter().map(|s| (s.1, s.2.len())).collect();
        assert_eq!(shape, [(500, 2), (600, 3), (300, 1)]);
    }

    #[test]
    fn an_older_open_batch_is_never_joined_again() {
        let mut q = GsoQueue::new();
        let (a, b) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        q.push(None, a, &datagram(1, 500));
        q.push(None, a, &datagram(2, 600));
        q.push(None, b, &datagram(3, 500));
        q.push(None, a, &datagram(4, 500));
        let to_a: Vec<Vec<u8>> = drain(&mut q, 64)
            .into_iter()
            .filter(|s| s.0 == a)
            .flat_map(|s| s.2)
            .collect();
        assert_eq!(to_a, [datagram(1, 500), datagram(2, 600), datagram(4, 500)]);
    }

    #[test]
    fn batches_respect_the_segment_and_payload_limits() {
        let mut q = GsoQueue::new();
        let v4 = addr("192.0.2.1:1");
        for _ in 0..100 {
            q.push(None, v4, &[0; 1420]);
        }
        let counts: Vec<usize> = drain(&mut q, 64).iter().map(|s| s.2.len()).collect();
        assert_eq!(
            counts,
            [46, 46, 8],
            "46 x 1,420 = 65,320 <= 65,507 < 47 x 1,420"
        );

        let v6 = addr("[2001:db8::1]:1");
        for _ in 0..200 {
            q.push(None, v6, &[0; 100]);
        }
        let counts: Vec<usize> = drain(&mut q, 64).iter().map(|s| s.2.len()).collect();
        assert_eq!(counts, [64, 64, 64, 8], "never more than 64 segments");

        let mut q = GsoQueue::with_max_segments(4);
        for _ in 0..10 {
            q.push(None, v4, &[0; 10]);
        }
        let counts: Vec<usize> = drain(&mut q, 64).iter().map(|s| s.2.len()).collect();
        assert_eq!(counts, [4, 4, 2]);
    }

    #[test]
    fn a_socket_without_gso_takes_one_datagram_at_a_time() {
        let mut q = GsoQueue::new();
        let dst = addr("192.0.2.1:1");
        for i in 0..3 {
            q.push(None, dst, &datagram(i, 200));
        }
        let t = q.peek(1).unwrap();
        assert_eq!((t.segments(), t.contents), (1, &datagram(0, 200)[..]));
        q.pop(1);
        // The rest stays at the front, and the open batch still grows.
        q.push(None, dst, &datagram(3, 200));
        assert_eq!(q.len_datagrams(), 3);
        let sends = drain(&mut q, 64);
        assert_eq!(sends.len(), 1);
        assert_eq!(
            sends[0].2,
            vec![datagram(1, 200), datagram(2, 200), datagram(3, 200)]
        );
    }

    #[test]
    fn different_sources_are_different_batches() {
        let mut q = GsoQueue::new();
        let dst = addr("192.0.2.1:1");
        q.push(Some("10.0.0.1".parse().unwrap()), dst, &[1; 10]);
        q.push(Some("10.0.0.2".parse().unwrap()), dst, &[2; 10]);
        q.push(None, dst, &[3; 10]);
        assert_eq!(drain(&mut q, 64).len(), 3);
    }

    proptest! {
        #[test]
        fn per_destination_order_and_limits_hold(
            ops in proptest::collection::vec((0usize..3, 1usize..1500, any::<bool>(), 1usize..=64), 1..300),
        ) {
            let dsts = [addr("192.0.2.1:1"), addr("192.0.2.2:2"), addr("[2001:db8::3]:3")];
            let mut q = GsoQueue::new();
            let mut written: [Vec<Vec<u8>>; 3] = Default::default();
            let mut sent: [Vec<Vec<u8>>; 3] = Default::default();
            let mut n = 0u8;
            let flush = |q: &mut GsoQueue, max: usize, sent: &mut [Vec<Vec<u8>>; 3], all: bool| -> Result<(), TestCaseError> {
                while let Some(t) = q.peek(max) {
                    let limit = if t.dst.is_ipv4() { MAX_PAYLOAD_V4 } else { MAX_PAYLOAD_V6 };
                    prop_assert!(t.segments() <= max.min(MAX_SEGMENTS));
                    prop_assert!(t.contents.len() <= limit);
                    let chunks: Vec<&[u8]> = t.contents.chunks(t.segment_size).collect();
                    for c in &chunks[..chunks.len() - 1] {
                        prop_assert_eq!(c.len(), t.segment_size);
                    }
                    let d = dsts.iter().position(|x| *x == t.dst).unwrap();
                    sent[d].extend(chunks.iter().map(|c| c.to_vec()));
                    let k = t.segments();
                    q.pop(k);
                    if !all { break; }
                }
                Ok(())
            };
            for (d, len, do_flush, max) in ops {
                n = n.wrapping_add(1);
                let dg = datagram(n, len);
                q.push(None, dsts[d], &dg);
                written[d].push(dg);
                let expected_bytes: usize = written.iter().flatten().map(Vec::len).sum::<usize>()
                    - sent.iter().flatten().map(Vec::len).sum::<usize>();
                prop_assert_eq!(q.len_bytes(), expected_bytes);
                if do_flush {
                    flush(&mut q, max, &mut sent, false)?;
                }
            }
            flush(&mut q, 64, &mut sent, true)?;
            prop_assert_eq!(sent, written);
            prop_assert_eq!(q.len_datagrams(), 0);
        }
    }
}
