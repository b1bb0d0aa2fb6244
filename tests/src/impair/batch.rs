//! Many datagrams per system call, so the relay is never the narrowest
//! part of the path it emulates: `recvmmsg` and `sendmmsg` over buffers
//! reused from call to call, a wait precise to microseconds (`ppoll`),
//! and the socket and thread settings the relay wants. Linux only.

// libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Room for the largest UDP payload, so nothing is ever truncated.
const SLOT: usize = 65536;

/// What `recvmmsg` filled in: up to [`BATCH`] datagrams and their sources.
pub struct RecvBatch {
    /// BATCH slots of SLOT bytes; the kernel touches only what it writes.
    slots: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    /// Room for the SO_TIMESTAMPNS and SO_RXQ_OVFL messages of each.
    control: Vec<[u64; 8]>,
    headers: Vec<libc::mmsghdr>,
    count: usize,
}

/// An address, a header and an iovec to fill in later.
fn blank() -> (libc::sockaddr_storage, libc::mmsghdr, libc::iovec) {
    // SAFETY: all-zero is a valid value of these plain C structs (null
    // pointers, zero lengths).
    unsafe { (zeroed(), zeroed(), zeroed()) }
}

impl Default for RecvBatch {
    fn default() -> Self {
        let (name, header, iovec) = blank();
        RecvBatch {
            slots: vec![0; BATCH * SLOT],
            names: vec![name; BATCH],
            iovecs: vec![iovec; BATCH],
            control: vec![[0; 8]; BATCH],
            headers: vec![header; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Takes what is waiting on `socket`, up to [`BATCH`] datagrams,
    /// without blocking; `Ok(0)` when nothing is.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.slots[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&raw mut self.names[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.control[i].as_mut_ptr().cast();
            h.msg_controllen = size_of::<[u64; 8]>();
            h.msg_flags = 0;
        }
        // SAFETY: every header points into buffers owned by self, which
        // outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        self.count = n as usize;
        Ok(self.count)
    }

    /// Datagram `i` of the last [`RecvBatch::recv`].
    pub fn datagram(&self, i: usize) -> Datagram<'_> {
        assert!(i < self.count);
        let len = self.headers[i].msg_len as usize;
        let arrived = self.control::<libc::timespec>(i, libc::SO_TIMESTAMPNS);
        Datagram {
            bytes: &self.slots[i * SLOT..][..len],
            from: from_raw(&self.names[i]),
            arrived: arrived
                .map(|t| SystemTime::UNIX_EPOCH + Duration::new(t.tv_sec as u64, t.tv_nsec as u32)),
        }
    }

    /// How many datagrams the socket's kernel queue had dropped for want
    /// of room, as of the last datagram received (its SO_RXQ_OVFL
    /// counter), if the socket reports it ([`tune`] asks it to).
    pub fn overflowed(&self) -> Option<u32> {
        self.control::<u32>(self.count.checked_sub(1)?, libc::SO_RXQ_OVFL)
    }

    /// The SOL_SOCKET control message `kind` of datagram `i`, if it came.
    fn control<T: Copy>(&self, i: usize, kind: libc::c_int) -> Option<T> {
        let h = &self.headers[i].msg_hdr;
        // SAFETY: the header and its control buffer are as recvmmsg left
        // them; CMSG_* walk only within msg_controllen, and a message of
        // this level and type carries a T.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == kind {
                    return Some(libc::CMSG_DATA(c).cast::<T>().read_unaligned());
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }
}

/// One datagram received: its bytes, its source, and when the kernel
/// took it in (SO_TIMESTAMPNS, if the socket asked for it), which is
/// when it arrived however late the relay read it.
pub struct Datagram<'a> {
    pub bytes: &'a [u8],
    pub from: Option<SocketAddr>,
    pub arrived: Option<SystemTime>,
}

/// Headers for `sendmmsg`, reused from call to call.
pub struct SendBatch {
    name: libc::sockaddr_storage,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Default for SendBatch {
    fn default() -> Self {
        let (name, header, iovec) = blank();
        SendBatch {
            name,
            iovecs: vec![iovec; BATCH],
            headers: vec![header; BATCH],
        }
    }
}

impl SendBatch {
    /// Sends `datagrams` in order to `to` (`None`: the socket's connected
    /// peer), [`BATCH`] per call, blocking while the socket buffer is
    /// full. Returns how many the kernel took: one it refuses (a port
    /// unreachable reported late, say) is skipped, as a network would.
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        socket: &UdpSocket,
        to: Option<SocketAddr>,
        datagrams: &[B],
    ) -> usize {
        let name_len = to.map_or(0, |to| to_raw(to, &mut self.name));
        let mut sent = 0;
        let mut next = 0;
        while next < datagrams.len() {
            let chunk = &datagrams[next..datagrams.len().min(next + BATCH)];
            for (i, d) in chunk.iter().enumerate() {
                let d = d.as_ref();
                self.iovecs[i] = libc::iovec {
                    iov_base: d.as_ptr().cast_mut().cast(),
                    iov_len: d.len(),
                };
                let h = &mut self.headers[i].msg_hdr;
                h.msg_name = if name_len == 0 {
                    std::ptr::null_mut()
                } else {
                    (&raw mut self.name).cast()
                };
                h.msg_namelen = name_len;
                h.msg_iov = &raw mut self.iovecs[i];
                h.msg_iovlen = 1;
            }
            // SAFETY: the headers point at `datagrams` and at self, both
            // alive for the call; the kernel only reads the iovecs.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    chunk.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    next += 1;
                }
                continue;
            }
            sent += n as usize;
            next += n as usize;
        }
        sent
    }
}

/// Sleeps until one of `sockets` has a datagram or `timeout` has passed,
/// to the microsecond (with [`pin_thread`]'s timer slack).
pub fn wait_readable(sockets: &[&UdpSocket], timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid pollfds, a valid timespec, no signal mask.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// Socket buffers as large as allowed (past `rmem_max` when root); the
/// kernel's drop counter on every datagram (SO_RXQ_OVFL), so a relay that
/// fell behind is seen rather than taken for the path's loss; and each
/// datagram's arrival time (SO_TIMESTAMPNS), so the path's clock starts
/// when it came, not when the relay got round to reading it.
pub fn tune(socket: &UdpSocket) {
    crate::large_buffers(socket);
    crate::set_socket_option(socket, libc::SO_RXQ_OVFL, 1);
    crate::set_socket_option(socket, libc::SO_TIMESTAMPNS, 1);
}

/// Makes the calling thread's timers fire within a microsecond of when
/// they were asked for rather than the default 50 µs slack, and pins it
/// to `cpu` if given.
pub fn pin_thread(cpu: Option<usize>) {
    // SAFETY: plain calls on the current thread with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
        if let Some(cpu) = cpu {
            let mut set: libc::cpu_set_t = zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Puts the calling thread ahead of every ordinary one (SCHED_FIFO, the
/// lowest real-time priority), where allowed (root): whatever else the
/// machine runs then waits for it, as it would for a network. The kernel
/// keeps 5% of each CPU for the others (sched_rt_runtime_us).
pub fn realtime_thread() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: the current thread, a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// The calling thread's id, for its CPU time in /proc.
pub fn thread_id() -> u32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// CPU seconds (user + system) thread `tid` of this process has used.
pub fn thread_cpu_seconds(tid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // utime and stime are the 12th and 13th fields after the name.
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum::<f64>()
        / 100.0
}

fn from_raw(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// Writes `addr` into `s`; returns its length.
fn to_raw(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    // SAFETY: sockaddr_storage is large and aligned enough for either.
    unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let out = (s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                *out = zeroed();
                (*out).sin_family = libc::AF_INET as libc::sa_family_t;
                (*out).sin_port = a.port().to_be();
                (*out).sin_addr.s_addr = u32::from(*a.ip()).to_be();
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let out = (s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                *out = zeroed();
                (*out).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*out).sin6_port = a.port().to_be();
                (*out).sin6_addr.s6_addr = a.ip().octets();
                (*out).sin6_flowinfo = a.flowinfo();
                (*out).sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}
