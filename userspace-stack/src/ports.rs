//! Ephemeral ports for outbound connections and sockets.

use underpass_core::hash::FastSet;

/// The IANA dynamic range, as most systems use.
const FIRST: u16 = 49152;
const COUNT: u32 = 65536 - FIRST as u32;

/// Hands out local ports from the dynamic range, round-robin from a random
/// start, so a port just released is the last to be reused (late segments
/// of an old connection do not land in a new one).
pub(crate) struct Ports {
    next: u32,
    used: FastSet<u16>,
}

impl Ports {
    pub fn new(seed: u64) -> Self {
        Ports {
            next: (seed % u64::from(COUNT)) as u32,
            used: FastSet::default(),
        }
    }

    pub fn allocate(&mut self) -> Option<u16> {
        for _ in 0..COUNT {
            let port = FIRST + (self.next % COUNT) as u16;
            self.next = (self.next + 1) % COUNT;
            if self.used.insert(port) {
                return Some(port);
            }
        }
        None
    }

    /// Marks a specific port used (a listener); false if it already was.
    pub fn claim(&mut self, port: u16) -> bool {
        self.used.insert(port)
    }

    pub fn in_use(&self, port: u16) -> bool {
        self.used.contains(&port)
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ports_do_not_collide_and_come_back_after_release() {
        let mut p = Ports::new(7);
        let mut seen = HashSet::new();
        for _ in 0..COUNT {
            assert!(seen.insert(p.allocate().unwrap()));
        }
        assert_eq!(p.allocate(), None, "all in use");
        let some = *seen.iter().next().unwrap();
        p.release(some);
        assert_eq!(p.allocate(), Some(some));
        assert!(!p.claim(some));
    }
}
