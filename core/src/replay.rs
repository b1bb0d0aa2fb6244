//! Anti-replay for received transport messages (whitepaper section 5.4.6,
//! using the ring-of-blocks bitmap of RFC 6479).
//!
//! Counters arrive out of order, so each must be accepted at most once while
//! late ones are still allowed up to a bound. History is a ring of 128 `u64`
//! blocks (8192 bits). Moving the window forward zeroes whole blocks rather
//! than shifting bits, so a jump costs at most 128 stores however far it goes.
//! The block holding the highest counter is still filling, so only the 127
//! blocks behind it are full history: [`ReplayWindow::WINDOW`] = 127 * 64.
//!
//! Acceptance rule, exactly: a counter `c` is accepted iff it has not been
//! marked before and either nothing has been marked yet, `c > highest`, or
//! `highest - c < WINDOW` (i.e. `c + WINDOW > highest` without overflow).
//!
//! [`ReplayWindow::check`] changes nothing, so the session can refuse replays
//! before decrypting; it calls [`ReplayWindow::mark`] only once the message
//! authenticated, so forged counters never move the window. Limits on the
//! counter's magnitude (REJECT-AFTER-MESSAGES) are the session's business.

const BLOCKS: usize = 128;
const BITS: u64 = u64::BITS as u64;

/// Which counters of one session's receive side have been seen.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    ring: [u64; BLOCKS],
    highest: Option<u64>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// Ring slot and bit mask of `counter`.
fn slot(counter: u64) -> (usize, u64) {
    (
        (counter / BITS % BLOCKS as u64) as usize,
        1 << (counter % BITS),
    )
}

impl ReplayWindow {
    /// How far behind the highest marked counter a counter is still
    /// accepted: those with `highest - c < WINDOW`.
    pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BITS;

    /// A window that has seen nothing.
    pub fn new() -> Self {
        ReplayWindow {
            ring: [0; BLOCKS],
            highest: None,
        }
    }

    /// Whether `counter` would be accepted: not marked yet and not too old.
    /// Changes nothing.
    pub fn check(&self, counter: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if counter > h => true,
            Some(h) if h - counter >= Self::WINDOW => false,
            Some(_) => {
                let (i, bit) = slot(counter);
                self.ring[i] & bit == 0
            }
        }
    }

    /// Records `counter` as received, moving the window forward if it is the
    /// new highest. Returns false, changing nothing, if [`check`](Self::check)
    /// would refuse it.
    pub fn mark(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if self.highest.is_none_or(|h| counter > h) {
            if let Some(h) = self.highest {
                // Zero the blocks entered: after the old highest's block, up
                // to the new one's; a jump past the whole ring zeroes it all.
                let old_block = h / BITS;
                let ahead = (counter / BITS - old_block).min(BLOCKS as u64);
                for k in 1..=ahead {
                    self.ring[((old_block + k) % BLOCKS as u64) as usize] = 0;
                }
            }
            self.highest = Some(counter);
        }
        let (i, bit) = slot(counter);
        self.ring[i] |= bit;
        true
    }

    /// The highest counter marked so far.
    #[cfg(test)]
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const W: u64 = ReplayWindow::WINDOW;

    #[test]
    fn in_order_once_each_starting_at_zero() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.highest(), None);
        for c in 0..3 * W {
            assert!(w.check(c) && w.mark(c), "{c}");
            assert!(!w.check(c) && !w.mark(c), "replay of {c}");
        }
        assert_eq!(w.highest(), Some(3 * W - 1));
        assert_eq!(W, 8128);
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::new();
        assert!(w.mark(100));
        assert!(w.check(0));
        assert!(w.check(0), "check does not mark");
        assert!(w.mark(0));
        assert!(w.mark(63) && w.mark(64) && w.mark(99));
        assert!(!w.mark(0) && !w.mark(63) && !w.mark(64) && !w.mark(99));
        assert_eq!(w.highest(), Some(100));
    }

    #[test]
    fn window_edge_and_too_old() {
        for h in [W, W + 1, W + 63, W + 64, 5 * W + 17] {
            let mut w = ReplayWindow::new();
            assert!(w.mark(h));
            assert!(!w.check(h - W), "exactly WINDOW behind {h}");
            assert!(!w.mark(h - W));
            assert!(!w.check(0), "far too old");
            assert!(w.mark(h - W + 1), "just inside, behind {h}");
            assert!(!w.mark(h - W + 1));
        }
    }

    #[test]
    fn jumps_clear_stale_history() {
        for jump in [1, 63, 64, 65, 127 * 64, 128 * 64, 129 * 64, 1 << 40] {
            let mut w = ReplayWindow::new();
            for c in 0..=W {
                w.mark(c);
            }
            let top = W + jump;
            assert!(w.mark(top));
            for c in top.saturating_sub(W - 1)..top {
                assert_eq!(w.check(c), c > W, "jump {jump}, counter {c}");
            }
        }
    }

    #[test]
    fn counters_near_u64_max() {
        let mut w = ReplayWindow::new();
        assert!(w.mark(u64::MAX - 70));
        assert!(w.mark(u64::MAX));
        assert!(!w.mark(u64::MAX));
        assert!(w.mark(u64::MAX - 1));
        assert!(!w.mark(u64::MAX - 70));
        assert!(w.check(u64::MAX - W + 1) && !w.check(u64::MAX - W));
        assert!(!w.check(0));
        assert_eq!(w.highest(), Some(u64::MAX));
    }

    proptest! {
        #[test]
        fn matches_a_naive_model(
            steps in proptest::collection::vec((0u8..20, any::<u64>(), any::<bool>()), 1..400),
        ) {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut highest: Option<u64> = None;
            for (kind, x, authentic) in steps {
                let h = highest.unwrap_or(0);
                let c = match kind {
                    0..=5 => h.saturating_add(x % 130),
                    6..=12 => h.saturating_sub(x % (W + 130)),
                    13..=16 => h.saturating_add(x % 300 * 64),
                    17 | 18 => h.saturating_add(x % (1 << 50)),
                    _ => u64::MAX - x % 200,
                };
                let fresh = !seen.contains(&c)
                    && highest.is_none_or(|h| c > h || h - c < W);
                prop_assert_eq!(w.check(c), fresh, "{}", c);
                if authentic {
                    prop_assert_eq!(w.mark(c), fresh, "{}", c);
                    if fresh {
                        seen.insert(c);
                        highest = Some(highest.map_or(c, |h| h.max(c)));
                    }
                }
                prop_assert_eq!(w.highest(), highest);
            }
        }
    }
}
