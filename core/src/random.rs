//! Where randomness comes from in the sans-IO crates: always from the
//! caller, one way. Cryptographic choices (keys, ephemerals, session
//! indices, cookie secrets, timer jitter) draw from a
//! [`CryptoRngCore`] the caller passes in: [`Node`](crate::Node) keeps a
//! boxed one, one-shot functions ([`PrivateKey::generate`](crate::PrivateKey::generate))
//! borrow one. The host gives the operating system's generator (`OsRng`,
//! which is `crypto.getRandomValues` in a browser); a test gives a seeded
//! one.
//!
//! Choices that need unpredictability but not key strength (hash seeds,
//! local ports, DNS ids, smoltcp's initial sequence numbers) come from one
//! `u64` seed, drawn from that same generator with [`seed_from`] and split
//! with [`SeedSequence`], so a test can replay a run from one number.

pub use rand_core::CryptoRngCore;

/// A seed for the non-cryptographic choices, drawn from `rng`.
pub fn seed_from(rng: &mut dyn CryptoRngCore) -> u64 {
    rng.next_u64()
}

/// Independent-looking numbers from one seed (SplitMix64): each part of a
/// state machine that needs a seed takes the next one, so they do not
/// share (and leak) each other's.
#[derive(Debug, Clone)]
pub struct SeedSequence(u64);

impl SeedSequence {
    /// The sequence that `seed` starts.
    pub fn new(seed: u64) -> Self {
        SeedSequence(seed)
    }

    /// The next number of the sequence.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_replays_from_its_seed_and_its_numbers_differ() {
        let (mut a, mut b) = (SeedSequence::new(7), SeedSequence::new(7));
        let first: Vec<u64> = (0..4).map(|_| a.next()).collect();
        assert_eq!(first, (0..4).map(|_| b.next()).collect::<Vec<_>>());
        let mut sorted = first.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{first:?}");
        assert_ne!(SeedSequence::new(8).next(), first[0]);
    }
}
