//! Per-source limits on handshake messages while a node is under load.
//!
//! Under load, a valid MAC2 proves a sender owns its address, but one owner
//! could still flood us; each source (an IPv4 address, or an IPv6 /64, since
//! one host commonly holds a whole /64) gets a token bucket.

use core::time::Duration;
use std::net::IpAddr;

use crate::hash::FastMap;
use crate::time::Instant;

/// Handshake messages per second one source may send while under load.
const PER_SECOND: u32 = 20;
/// How many it may send at once.
const BURST: u32 = 5;
/// Sources remembered at most; past this, idle ones are forgotten and then
/// everyone new is refused until room frees up.
const MAX_SOURCES: usize = 16_384;

const COST: Duration = Duration::from_nanos(1_000_000_000 / PER_SECOND as u64);

pub(crate) struct RateLimiter {
    /// Keyed by source addresses, which a remote chooses: seeded.
    buckets: FastMap<u128, (Duration, Instant)>,
}

fn source_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
    }
}

impl RateLimiter {
    /// `seed` comes from the caller's randomness (see [`crate::hash`]).
    pub fn new(seed: u64) -> Self {
        RateLimiter {
            buckets: FastMap::with_hasher(crate::hash::seeded(seed)),
        }
    }

    /// Whether one more handshake message from `ip` may be processed now.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let max = COST * BURST;
        let key = source_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_SOURCES {
            self.buckets
                .retain(|_, (tokens, last)| *tokens + now.saturating_duration_since(*last) < max);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(key).or_insert((max, now));
        *tokens = (*tokens + now.saturating_duration_since(*last)).min(max);
        *last = now;
        if *tokens >= COST {
            *tokens -= COST;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut limiter = RateLimiter::new(1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::from_secs(1);
        assert_eq!(
            (0..10).filter(|_| limiter.allow(a, t)).count(),
            BURST as usize
        );
        assert!(limiter.allow(b, t), "sources are limited separately");
        assert!(!limiter.allow(a, t + COST / 2));
        assert!(limiter.allow(a, t + COST));
    }

    #[test]
    fn one_ipv6_slash64_is_one_source() {
        let mut limiter = RateLimiter::new(1);
        let t = Instant::from_secs(1);
        for i in 0..BURST {
            let ip: IpAddr = format!("2001:db8::{i}").parse().unwrap();
            assert!(limiter.allow(ip, t));
        }
        assert!(!limiter.allow("2001:db8::ffff".parse().unwrap(), t));
        assert!(limiter.allow("2001:db8:0:1::1".parse().unwrap(), t));
    }
}
