//! The gateway host's own addresses (every interface's, LAN and public
//! ones included), kept current, so the default policy can refuse them:
//! a service bound to 0.0.0.0 and kept private by a firewall must not be
//! reachable through the tunnel.
//!
//! Read with getifaddrs at start; on Linux read again whenever the kernel
//! announces an address change (an rtnetlink subscription, which needs no
//! privilege), so an address that appears (DHCP, a new bridge) is refused
//! within milliseconds; and everywhere read again every minute, in case
//! the announcements stop (their socket overran, or there is none).

// Unsafe only for libc calls, each block with its SAFETY comment.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the addresses are read again without an announcement.
const REREAD: Duration = Duration::from_secs(60);

/// The host's addresses, shared between the policy and the watcher.
#[derive(Clone, Default)]
pub struct HostAddrs(Arc<RwLock<Vec<IpAddr>>>);

impl HostAddrs {
    /// Reads the addresses now.
    pub fn read() -> io::Result<HostAddrs> {
        Ok(HostAddrs(Arc::new(RwLock::new(interface_addrs()?))))
    }

    /// A fixed list (tests).
    #[cfg(test)]
    pub fn from_list(addrs: Vec<IpAddr>) -> HostAddrs {
        HostAddrs(Arc::new(RwLock::new(addrs)))
    }

    /// Whether `ip` is one of the host's addresses (`ip` unmapped).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
    }

    fn refresh(&self) {
        match interface_addrs() {
            Ok(now) => {
                let mut addrs = self.0.write().unwrap_or_else(|e| e.into_inner());
                if *addrs != now {
                    tracing::debug!(addresses = ?now, "the host's addresses changed");
                    *addrs = now;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the host's addresses again"),
        }
    }

    /// Keeps the addresses current until the task is dropped.
    pub async fn watch(self) {
        let mut announcements = announcements();
        if announcements.is_none() {
            tracing::debug!("no address announcements; reading the host's addresses every minute");
        }
        let mut every = tokio::time::interval(REREAD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            match announcements.as_mut() {
                Some(a) => {
                    tokio::select! {
                        changed = a.changed() => {
                            if let Err(e) = changed {
                                tracing::debug!(error = %e, "address announcements ended");
                                announcements = None;
                            }
                        }
                        _ = every.tick() => {}
                    }
                }
                None => {
                    every.tick().await;
                }
            }
            self.refresh();
        }
    }
}

/// Every address of every interface, by getifaddrs.
fn interface_addrs() -> io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, which
        // stays valid until freeifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points to a sockaddr whose family
        // says which sockaddr_* it is.
        let ip = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(addrs)
}

#[cfg(target_os = "linux")]
use linux::announcements;

#[cfg(not(target_os = "linux"))]
fn announcements() -> Option<Announcements> {
    None
}

#[cfg(not(target_os = "linux"))]
enum Announcements {}

#[cfg(not(target_os = "linux"))]
impl Announcements {
    async fn changed(&mut self) -> io::Result<()> {
        match *self {}
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// An rtnetlink socket subscribed to address changes.
    pub struct Announcements(AsyncFd<OwnedFd>);

    pub fn announcements() -> Option<Announcements> {
        match subscribe() {
            Ok(fd) => Some(Announcements(fd)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot subscribe to address changes");
                None
            }
        }
    }

    fn subscribe() -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields that matter
        // are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: `addr` is a sockaddr_nl of the size given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns `fd`, so it stays open and the same
        // for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
    }

    impl Announcements {
        /// Waits for announcements and reads them all; what they say does
        /// not matter, only that something changed. An overrun (ENOBUFS)
        /// means changes were missed: that is a change too.
        pub async fn changed(&mut self) -> io::Result<()> {
            let mut buf = [0u8; 8192];
            loop {
                let mut guard = self.0.readable().await?;
                let mut got = false;
                loop {
                    // SAFETY: reads into `buf`, of the length given.
                    let n = unsafe {
                        libc::recv(
                            self.0.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if n > 0 {
                        got = true;
                        continue;
                    }
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        Some(libc::ENOBUFS) => got = true,
                        Some(libc::EINTR) => {}
                        _ => return Err(e),
                    }
                }
                if got {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_address_is_among_the_hosts() {
        let addrs = HostAddrs::read().expect("getifaddrs works");
        assert!(
            addrs.contains(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{:?}",
            addrs.0.read().unwrap()
        );
    }
}
