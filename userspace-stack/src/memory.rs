//! The memory of TCP connections' buffers: what a connection holds, when
//! it gives it back, and a budget for all connections together.
//!
//! A socket's buffers are sized for the largest window it may reach
//! (16 MiB each way by default). Natively they are fresh pages from the
//! kernel (the binary sets glibc's mmap threshold low), which cost nothing
//! until written: an idle connection holds the few pages its requests
//! touched. A transfer writes its way through the ring, and those pages
//! would stay for the life of the connection; so once a buffer is empty
//! after a transfer, its pages go back to the kernel
//! ([`Buffer::release`]), and while a connection's window is much smaller
//! than its ring, the pages behind the data are given back as it moves on
//! ([`Buffer::release_range`]).
//!
//! What a connection may hold at most is its *claim*: the receive window
//! it advertises and the bytes the application may queue for sending.
//! Claims come out of a process-wide budget ([`Budget`]); at the budget,
//! windows stop growing (nothing is dropped), and a connection that drains
//! gives its claim back.

use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use underpass_core::Instant;

use crate::stack::Stack;

type Tuple = (std::net::SocketAddr, std::net::SocketAddr);

/// Which of a connection's buffers emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Receive,
    Send,
}

/// What a read that emptied a buffer did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    No,
    /// Its pages went back at once (memory is short).
    Now,
    /// Its pages go back if it stays empty.
    Later,
}

/// A buffer that emptied after a transfer, and since when.
#[derive(Debug)]
pub(crate) struct Drained {
    conn: crate::ConnId,
    tuple: Tuple,
    side: Side,
    since: Instant,
}

/// A buffer that held this much since its pages were last given back is
/// worth giving back when it empties (an interactive connection keeps its
/// few pages: giving them back costs page faults at the next request).
const RELEASE_AFTER: usize = 256 << 10;
/// Pages behind the data go back in runs of at least this much.
const BEHIND_RUN: usize = 1 << 20;
/// Pages behind the data go back while the connection's window is at most
/// this fraction of its ring (else the ring is all in use anyway).
const BEHIND_WHEN: usize = 4;
/// A buffer that emptied gives its pages back once it stayed empty this
/// long (a pause in a transfer, not a reader keeping up).
const DRAINED_FOR: Duration = Duration::from_millis(200);
/// What the application may always queue for sending, whatever the budget.
pub(crate) const MIN_SEND_ALLOWANCE: usize = 256 << 10;

/// Pages of the size the kernel maps (4 KiB on the platforms we run on;
/// a larger page only means less is released).
const PAGE: usize = 4096;

/// Where a socket buffer's bytes are, so its pages can be given back. Its
/// owner (smoltcp's socket) must outlive every call: a `Buffer` lives in
/// the connection record, which goes before the socket does.
#[derive(Debug)]
pub(crate) struct Buffer {
    addr: usize,
    len: usize,
    /// How much of it is resident, at most: bytes written through it
    /// since its pages were last given back, up to its size.
    resident: usize,
}

impl Buffer {
    /// A zeroed buffer of `len` bytes and its record.
    pub fn new(len: usize) -> (Vec<u8>, Buffer) {
        let mut bytes = vec![0u8; len];
        let addr = bytes.as_mut_ptr() as usize;
        (
            bytes,
            Buffer {
                addr,
                len,
                resident: 0,
            },
        )
    }

    /// The pages that lie wholly inside `[start, start + len)` of the
    /// buffer.
    fn pages(&self, start: usize, len: usize) -> Option<(usize, usize)> {
        let from = (self.addr + start).next_multiple_of(PAGE);
        let to = (self.addr + (start + len).min(self.len)) / PAGE * PAGE;
        if to > from {
            Some((from, to - from))
        } else {
            None
        }
    }

    /// `n` more bytes were written through the buffer; returns how much
    /// its resident estimate grew.
    fn wrote(&mut self, n: usize) -> usize {
        let before = self.resident;
        self.resident = (self.resident + n).min(self.len);
        self.resident - before
    }

    /// Gives every page of the buffer back: call only when the buffer
    /// holds nothing its owner will read (its ring is empty). Later writes
    /// get fresh zeroed pages. Returns the bytes given back (estimated).
    pub fn release(&mut self) -> usize {
        self.release_range(0, self.len)
    }

    /// Gives back the pages inside `[start, start + len)`: call only for
    /// bytes the owner has consumed and will write before reading again.
    /// Returns the bytes given back (estimated).
    pub fn release_range(&mut self, start: usize, len: usize) -> usize {
        if let Some((addr, len)) = self.pages(start, len) {
            give_back(addr, len);
        }
        let freed = len.min(self.resident);
        self.resident -= freed;
        freed
    }

    /// The offset of `p` in the buffer, if it points into it.
    pub fn offset_of(&self, p: *const u8) -> Option<usize> {
        let p = p as usize;
        (p >= self.addr && p < self.addr + self.len).then(|| p - self.addr)
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(unix)]
#[allow(unsafe_code)] // madvise
fn give_back(addr: usize, len: usize) {
    // SAFETY: the range is whole pages inside a live allocation of ours
    // whose bytes there are not needed (the callers' contract); after
    // MADV_DONTNEED a private anonymous page reads as zeros, and a page
    // of any other mapping reads back its original contents: either way
    // no memory outside the range is touched and nothing is unmapped.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED);
    }
}

#[cfg(not(unix))]
fn give_back(_addr: usize, _len: usize) {
    // A browser's memory cannot be given back; the budget still applies.
}

/// A TCP socket's two buffers, and how far their pages were given back.
#[derive(Debug)]
pub(crate) struct Buffers {
    rx: Buffer,
    tx: Buffer,
    /// Received bytes the application consumed whose pages are still
    /// held: one contiguous run, (offset, length).
    rx_behind: Option<(usize, usize)>,
    /// The send buffer's pages before this offset went back (it is where
    /// acknowledged data began to be given back).
    tx_released: usize,
}

impl Buffers {
    pub fn new(rx: Buffer, tx: Buffer) -> Buffers {
        Buffers {
            rx,
            tx,
            rx_behind: None,
            tx_released: 0,
        }
    }
}

impl Stack {
    /// The application consumed `n` received bytes at `at` of connection
    /// `handle`'s buffer (`window` is what the connection may receive).
    /// Whether it emptied a buffer that held a transfer, which then gives
    /// its pages back: at once when the budget is short, else if it stays
    /// empty ([`Stack::release_drained`]). When the budget runs short, a
    /// ring much larger than the window also gives back what was consumed
    /// as it goes.
    pub(crate) fn after_read(
        &mut self,
        handle: SocketHandle,
        at: *const u8,
        n: usize,
        window: usize,
    ) -> Drain {
        let empty = self.sockets.get::<tcp::Socket>(handle).recv_queue() == 0;
        let (Some(b), budget) = (self.buffers.get_mut(&handle), &mut self.budget) else {
            return Drain::No;
        };
        budget.resident += b.rx.wrote(n);
        if empty && b.rx.resident >= RELEASE_AFTER {
            if budget.short() {
                // Memory is short: at once (smoltcp holds no data out of
                // order; the flow's reassembly gives it only what is in
                // order).
                budget.resident -= b.rx.release();
                b.rx_behind = None;
                return Drain::Now;
            }
            return Drain::Later;
        }
        if !budget.short() || window.saturating_mul(BEHIND_WHEN) > b.rx.len() {
            return Drain::No;
        }
        let Some(offset) = b.rx.offset_of(at) else {
            return Drain::No;
        };
        b.rx_behind = match b.rx_behind {
            Some((start, len)) if start + len == offset => Some((start, len + n)),
            Some((start, len)) => {
                budget.resident -= b.rx.release_range(start, len);
                Some((offset, n))
            }
            None => Some((offset, n)),
        };
        if let Some((start, len)) = b.rx_behind.filter(|(_, len)| *len >= BEHIND_RUN) {
            // Consumed, and what the peer may send (the window) lies far
            // ahead on the ring: nothing there is read before it is
            // written again.
            budget.resident -= b.rx.release_range(start, len);
            b.rx_behind = None;
        }
        Drain::No
    }

    /// The application wrote `n` bytes at `at` of connection `handle`'s
    /// send buffer (`allowance` is what it may queue): when the budget runs
    /// short, acknowledged data behind it on a large ring gives its pages
    /// back.
    pub(crate) fn after_write(
        &mut self,
        handle: SocketHandle,
        at: *const u8,
        n: usize,
        allowance: usize,
    ) {
        let queued = self.sockets.get::<tcp::Socket>(handle).send_queue();
        let (Some(b), budget) = (self.buffers.get_mut(&handle), &mut self.budget) else {
            return;
        };
        budget.resident += b.tx.wrote(n);
        let (Some(write), cap) = (b.tx.offset_of(at), b.tx.len()) else {
            return;
        };
        if queued == n {
            // smoltcp starts an emptied ring over at its beginning.
            b.tx_released = 0;
        }
        if !budget.short() || allowance.saturating_mul(BEHIND_WHEN) > cap {
            return;
        }
        // Unacknowledged data runs from `acked` to the end of this write.
        let acked = (write + n + cap - queued) % cap;
        let behind = (acked + cap - b.tx_released) % cap;
        if behind >= BEHIND_RUN {
            let start = b.tx_released;
            let first = behind.min(cap - start);
            budget.resident -= b.tx.release_range(start, first);
            budget.resident -= b.tx.release_range(0, behind - first);
            b.tx_released = acked;
        }
    }

    /// Buffers that emptied after a transfer and stayed empty for
    /// [`DRAINED_FOR`] give their pages back, and their connection's window
    /// and send allowance go back to a new connection's. Not at once: a
    /// fast reader empties its buffer many times a second in one transfer,
    /// and each release cost the next writes a page fault per page (and
    /// the window its growth): a third of loopback throughput.
    pub(crate) fn release_drained(&mut self, now: Instant) {
        if self.drained.is_empty() {
            return;
        }
        let limits = self.limits();
        let mut drained = std::mem::take(&mut self.drained);
        drained.retain(|d| {
            if now < d.since + DRAINED_FOR {
                return true;
            }
            let Some(handle) = self.conns.get(d.conn.0).map(|c| c.handle) else {
                return false;
            };
            let released = match d.side {
                Side::Receive => self.release_rx(handle),
                Side::Send => self.send_idle(handle),
            };
            if released {
                if let Some(flow) = self.by_tuple.get_mut(&d.tuple) {
                    let rx = d.side == Side::Receive;
                    flow.quiet(rx, !rx, &limits, &mut self.budget);
                }
            }
            false
        });
        // Buffers that emptied while this ran are in `self.drained` again.
        drained.append(&mut self.drained);
        self.drained = drained;
    }

    /// When [`Stack::release_drained`] next has something to do.
    pub(crate) fn drained_timeout(&self) -> Option<Instant> {
        self.drained.iter().map(|d| d.since + DRAINED_FOR).min()
    }

    /// Remembers that a buffer of `conn` emptied after a transfer.
    pub(crate) fn note_drained(&mut self, conn: crate::ConnId, tuple: Tuple, side: Side) {
        if !self
            .drained
            .iter()
            .any(|d| d.conn == conn && d.side == side)
        {
            self.drained.push(Drained {
                conn,
                tuple,
                side,
                since: self.now,
            });
        }
    }

    /// Connection `handle`'s receive buffer, if still empty and it held a
    /// transfer, gives its pages back.
    fn release_rx(&mut self, handle: SocketHandle) -> bool {
        if self.sockets.get::<tcp::Socket>(handle).recv_queue() != 0 {
            return false;
        }
        match self.buffers.get_mut(&handle) {
            Some(b) if b.rx.resident >= RELEASE_AFTER => {
                // smoltcp holds no data out of order (the flow's
                // reassembly gives it only what is in order).
                self.budget.resident -= b.rx.release();
                b.rx_behind = None;
                true
            }
            _ => false,
        }
    }

    /// Connection `handle` has nothing left to send or acknowledge: a send
    /// buffer that held a transfer gives its pages back.
    pub(crate) fn send_idle(&mut self, handle: SocketHandle) -> bool {
        if self.sockets.get::<tcp::Socket>(handle).send_queue() != 0 {
            return false;
        }
        match self.buffers.get_mut(&handle) {
            Some(b) if b.tx.resident >= RELEASE_AFTER => {
                self.budget.resident -= b.tx.release();
                b.tx_released = 0;
                true
            }
            _ => false,
        }
    }

    /// A socket's buffers go: so does what they counted for.
    pub(crate) fn forget_buffers(&mut self, handle: SocketHandle) {
        if let Some(b) = self.buffers.remove(&handle) {
            self.budget.resident -= (b.rx.resident + b.tx.resident).min(self.budget.resident);
        }
    }
}

/// The budget for all connections' buffers: what they hold (resident,
/// estimated from what was written through them) and what they may come
/// to hold (their claims: receive windows and send allowances).
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    claimed: usize,
    pub resident: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            claimed: 0,
            resident: 0,
        }
    }

    /// What a claim of `current` bytes may grow to now.
    pub fn room(&self, current: usize) -> usize {
        current + self.limit.saturating_sub(self.claimed)
    }

    /// A claim changed from `old` to `new` bytes.
    pub fn update(&mut self, old: usize, new: usize) {
        self.claimed = self.claimed - old.min(self.claimed) + new;
    }

    /// Past half the budget resident: rings give back pages behind their
    /// data as it moves (page faults are the price, so not before).
    pub fn short(&self) -> bool {
        self.resident > self.limit / 2
    }

    /// Over the budget in claims: a connection above its share should
    /// shrink back to it.
    pub fn share(&self, connections: usize) -> Option<usize> {
        (self.claimed > self.limit).then(|| self.limit / connections.max(1))
    }

    pub fn claimed(&self) -> usize {
        self.claimed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_pages_inside_the_range_are_given_back() {
        let b = Buffer {
            addr: 10 * PAGE + 100,
            len: 5 * PAGE,
            resident: 0,
        };
        // The first partial page and the last partial page stay.
        assert_eq!(b.pages(0, b.len), Some((11 * PAGE, 4 * PAGE)));
        assert_eq!(b.pages(PAGE, 100), None, "less than a page");
        assert_eq!(
            b.pages(3 * PAGE, 10 * PAGE),
            Some((14 * PAGE, PAGE)),
            "clamped"
        );
        assert_eq!(b.offset_of((10 * PAGE + 150) as *const u8), Some(50));
        assert_eq!(b.offset_of((15 * PAGE + 100) as *const u8), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)] // mincore
    fn released_pages_leave_the_resident_set_and_read_as_zeros() {
        let len = 64 * PAGE;
        let (mut bytes, mut b) = Buffer::new(len);
        bytes.fill(7);
        let resident = |bytes: &[u8]| {
            let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
            let pages = (bytes.as_ptr() as usize + bytes.len() - start) / PAGE;
            let mut vec = vec![0u8; pages];
            // SAFETY: the range is inside `bytes`, `vec` has a byte per page.
            let r = unsafe {
                libc::mincore(start as *mut libc::c_void, pages * PAGE, vec.as_mut_ptr())
            };
            assert_eq!(r, 0);
            vec.iter().filter(|&&v| v & 1 == 1).count()
        };
        assert!(resident(&bytes) >= 62);
        b.release();
        assert!(resident(&bytes) <= 2, "given back");
        assert!(bytes[PAGE * 2..PAGE * 60].iter().all(|&x| x == 0));
    }
}
