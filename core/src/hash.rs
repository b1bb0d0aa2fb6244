//! The one hasher of the sans-IO crates (core and userspace-stack):
//! foldhash, hashbrown's own default. SipHash (std's default) defends a
//! table against keys chosen by an attacker at several times the cost on
//! the per-packet path; foldhash with a secret seed gives the same defence
//! cheaply, and without a seed is fine where the keys are our own.
//!
//! - Keys this program chooses (session indices, configured networks, the
//!   endpoints of peers that authenticated): [`FastMap::default()`], a
//!   fixed seed.
//! - Keys a remote chooses (source addresses, the flows a peer opens):
//!   [`seeded`] with a seed from the caller's randomness (see
//!   [`crate::random`]), so a remote cannot aim its keys at one bucket.

use std::collections::{HashMap, HashSet};

pub use foldhash::fast::FixedState;

/// A map hashed with foldhash; see the module doc for which seed to use.
pub type FastMap<K, V> = HashMap<K, V, FixedState>;
/// A set hashed with foldhash; see the module doc for which seed to use.
pub type FastSet<K> = HashSet<K, FixedState>;

/// The hasher for a table whose keys a remote chooses: `seed` must come
/// from the caller's randomness and be kept from the remote.
pub fn seeded(seed: u64) -> FixedState {
    FixedState::with_seed(seed)
}
