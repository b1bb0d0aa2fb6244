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
    /// Bytes written through the buffer since its pages were last given
    /// back (how much of it is resident, at most).
    pub through: usize,
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
                through: 0,
            },
        )
    }

    /// The pages that lie wholly inside `[start, start + len)` of the
    /// buffer.
    fn pages(&self, start: usize, len: usize) -> Option<(usize, usize)> {
        let from = (self.addr + start).next_multiple_of(PAGE);
        let to = (self.addr + (start + len).min(self.len)) / PAGE * PAGE;
        (to > from).then_some((from, to - from))
    }

    /// Gives every page of the buffer back: call only when the buffer
    /// holds nothing its owner will read (its ring is empty). Later writes
    /// get fresh zeroed pages.
    pub fn release(&mut self) {
        self.release_range(0, self.len);
        self.through = 0;
    }

    /// Gives back the pages inside `[start, start + len)`: call only for
    /// bytes the owner has consumed and will write before reading again.
    pub fn release_range(&self, start: usize, len: usize) {
        if let Some((addr, len)) = self.pages(start, len) {
            give_back(addr, len);
        }
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

/// The budget for all connections' claims.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    claimed: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget { limit, claimed: 0 }
    }

    /// What a claim of `current` bytes may grow to now.
    pub fn room(&self, current: usize) -> usize {
        current + self.limit.saturating_sub(self.claimed)
    }

    /// A claim changed from `old` to `new` bytes.
    pub fn update(&mut self, old: usize, new: usize) {
        self.claimed = self.claimed - old.min(self.claimed) + new;
    }

    pub fn claimed(&self) -> usize {
        self.claimed
    }

    pub fn limit(&self) -> usize {
        self.limit
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
            through: 0,
        };
        // The first partial page and the last partial page stay.
        assert_eq!(b.pages(0, b.len), Some((11 * PAGE, 4 * PAGE)));
        assert_eq!(b.pages(PAGE, 100), None, "less than a page");
        assert_eq!(b.pages(4 * PAGE, 10 * PAGE), Some((14 * PAGE, PAGE)), "clamped");
        assert_eq!(b.offset_of((10 * PAGE + 150) as *const u8), Some(50));
        assert_eq!(b.offset_of((15 * PAGE + 100) as *const u8), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_leave_the_resident_set_and_read_as_zeros() {
        let len = 64 * PAGE;
        let (mut bytes, mut b) = Buffer::new(len);
        bytes.fill(7);
        let resident = |bytes: &[u8]| {
            let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
            let pages = (bytes.as_ptr() as usize + bytes.len() - start) / PAGE;
            let mut vec = vec![0u8; pages];
            // SAFETY: the range is inside `bytes`, `vec` has a byte per page.
            let r = unsafe { libc::mincore(start as *mut libc::c_void, pages * PAGE, vec.as_mut_ptr()) };
            assert_eq!(r, 0);
            vec.iter().filter(|&&v| v & 1 == 1).count()
        };
        assert!(resident(&bytes) >= 62);
        b.release();
        assert!(resident(&bytes) <= 2, "given back");
        assert!(bytes[PAGE * 2..PAGE * 60].iter().all(|&x| x == 0));
    }
}
