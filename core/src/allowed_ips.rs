//! Cryptokey routing: which peer owns an address, by longest prefix match.
//!
//! Every peer has a set of networks (its AllowedIPs). An outbound packet goes
//! to the peer owning the longest network that contains its destination; a
//! decrypted inbound packet is kept only if the longest network containing its
//! *source* belongs to the peer it came from.
//!
//! # Why this layout
//!
//! Each address family keeps the distinct prefix lengths in use, longest
//! first, and one hash map per length from the masked network address (a
//! `u32` or `u128`) to its value. A lookup masks the address once per length
//! and probes that length's map, stopping at the first hit, so it costs one
//! probe per distinct length *present*, not per bit. Real WireGuard tables use
//! very few lengths (a /32 or /128 per client, perhaps a /24 and a /0), so a
//! lookup is one to three probes with no allocation and no pointer chasing.
//! A binary trie would bound the work by the address width instead (up to 128
//! dependent loads for IPv6), which is slower for the tables that occur and
//! only wins with dozens of distinct lengths.
//!
//! The maps use [`FastMap`]: keys are configured networks, not chosen by
//! whoever sends packets; a packet only picks which keys are probed, which
//! it cannot use to lengthen collision chains.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are plain IPv6 addresses
//! here: they match IPv6 networks only, never IPv4 ones, as on the wire.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::hash::FastMap;

type Map<K, V> = FastMap<K, V>;

/// An address as an integer: `u32` for IPv4, `u128` for IPv6.
trait Bits: Copy + Eq + Hash {
    /// Keeps the first `len` bits; lengths past the width keep everything.
    fn mask(self, len: u8) -> Self;
}

impl Bits for u32 {
    fn mask(self, len: u8) -> u32 {
        self & u32::MAX
            .checked_shl(32u32.saturating_sub(len.into()))
            .unwrap_or(0)
    }
}

impl Bits for u128 {
    fn mask(self, len: u8) -> u128 {
        self & u128::MAX
            .checked_shl(128u32.saturating_sub(len.into()))
            .unwrap_or(0)
    }
}

/// One address family's table.
#[derive(Clone)]
struct Family<A, V> {
    /// Distinct prefix lengths in use, longest first; no map is empty.
    by_len: Vec<(u8, Map<A, V>)>,
}

impl<A: Bits, V> Family<A, V> {
    fn new() -> Self {
        Family { by_len: Vec::new() }
    }

    /// Position of `len` in the descending list, or where it would go.
    fn find(&self, len: u8) -> Result<usize, usize> {
        self.by_len.binary_search_by(|(l, _)| len.cmp(l))
    }

    fn insert(&mut self, addr: A, len: u8, value: V) -> Option<V> {
        let key = addr.mask(len);
        match self.find(len) {
            Ok(i) => self.by_len[i].1.insert(key, value),
            Err(i) => {
                let mut map = Map::default();
                map.insert(key, value);
                self.by_len.insert(i, (len, map));
                None
            }
        }
    }

    fn remove(&mut self, addr: A, len: u8) -> Option<V> {
        let i = self.find(len).ok()?;
        let old = self.by_len[i].1.remove(&addr.mask(len));
        if self.by_len[i].1.is_empty() {
            self.by_len.remove(i);
        }
        old
    }

    fn retain(&mut self, mut keep: impl FnMut(A, u8, &V) -> bool) {
        for (len, map) in &mut self.by_len {
            let len = *len;
            map.retain(|a, v| keep(*a, len, v));
        }
        self.by_len.retain(|(_, map)| !map.is_empty());
    }

    fn longest_match(&self, addr: A) -> Option<&V> {
        self.by_len
            .iter()
            .find_map(|(len, map)| map.get(&addr.mask(*len)))
    }

    fn iter(&self) -> impl Iterator<Item = (A, u8, &V)> + '_ {
        self.by_len
            .iter()
            .flat_map(|(len, map)| map.iter().map(move |(a, v)| (*a, *len, v)))
    }

    fn len(&self) -> usize {
        self.by_len.iter().map(|(_, map)| map.len()).sum()
    }
}

fn net4(addr: u32, len: u8) -> Option<IpNet> {
    Ipv4Net::new(Ipv4Addr::from(addr), len).ok().map(IpNet::V4)
}

fn net6(addr: u128, len: u8) -> Option<IpNet> {
    Ipv6Net::new(Ipv6Addr::from(addr), len).ok().map(IpNet::V6)
}

/// A longest-prefix-match table from IPv4 and IPv6 networks to values
/// (in a node, to peers).
#[derive(Clone)]
pub struct AllowedIps<V> {
    v4: Family<u32, V>,
    v6: Family<u128, V>,
}

impl<V> Default for AllowedIps<V> {
    fn default() -> Self {
        AllowedIps {
            v4: Family::new(),
            v6: Family::new(),
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for AllowedIps<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> AllowedIps<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `net` to `value`, host bits masked off (`10.1.2.3/16` is
    /// `10.1.0.0/16`). Returns the value `net` had, which is replaced: this
    /// is how a network moves from one peer to another.
    pub fn insert(&mut self, net: IpNet, value: V) -> Option<V> {
        match net {
            IpNet::V4(n) => self.v4.insert(n.addr().into(), n.prefix_len(), value),
            IpNet::V6(n) => self.v6.insert(n.addr().into(), n.prefix_len(), value),
        }
    }

    /// Removes `net` (host bits masked off) and returns its value.
    pub fn remove(&mut self, net: IpNet) -> Option<V> {
        match net {
            IpNet::V4(n) => self.v4.remove(n.addr().into(), n.prefix_len()),
            IpNet::V6(n) => self.v6.remove(n.addr().into(), n.prefix_len()),
        }
    }

    /// Keeps only the entries for which `keep` returns true, e.g. to drop
    /// all of a removed peer's networks.
    pub fn retain(&mut self, mut keep: impl FnMut(&IpNet, &V) -> bool) {
        self.v4
            .retain(|a, len, v| net4(a, len).is_none_or(|n| keep(&n, v)));
        self.v6
            .retain(|a, len, v| net6(a, len).is_none_or(|n| keep(&n, v)));
    }

    /// The value of the longest network containing `addr`, if any. Does not
    /// allocate; one hash probe per distinct prefix length in `addr`'s family.
    pub fn longest_match(&self, addr: IpAddr) -> Option<&V> {
        match addr {
            IpAddr::V4(a) => self.v4.longest_match(a.into()),
            IpAddr::V6(a) => self.v6.longest_match(a.into()),
        }
    }

    /// All entries, networks masked: IPv4 then IPv6, longer prefixes first,
    /// otherwise in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> + '_ {
        let v4 = self
            .v4
            .iter()
            .filter_map(|(a, l, v)| Some((net4(a, l)?, v)));
        let v6 = self
            .v6
            .iter()
            .filter_map(|(a, l, v)| Some((net6(a, l)?, v)));
        v4.chain(v6)
    }

    /// Number of networks in the table.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the table has no networks.
    pub fn is_empty(&self) -> bool {
        self.v4.by_len.is_empty() && self.v6.by_len.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longer_prefixes_win_over_shorter_and_the_default_route() {
        let mut t = AllowedIps::new();
        assert_eq!(t.longest_match(ip("10.0.0.1")), None);
        t.insert(net("0.0.0.0/0"), "default");
        assert_eq!(t.longest_match(ip("10.0.0.1")), Some(&"default"));
        t.insert(net("10.0.0.0/24"), "lan");
        t.insert(net("10.0.0.7/32"), "host");
        assert_eq!(t.longest_match(ip("10.0.0.7")), Some(&"host"));
        assert_eq!(t.longest_match(ip("10.0.0.8")), Some(&"lan"));
        assert_eq!(t.longest_match(ip("10.0.1.7")), Some(&"default"));
        assert_eq!(t.longest_match(ip("255.255.255.255")), Some(&"default"));
        assert_eq!(t.longest_match(ip("::")), None, "IPv4 routes skip IPv6");
    }

    #[test]
    fn ipv6_prefixes_and_mapped_addresses() {
        let mut t = AllowedIps::new();
        t.insert(net("fd00::/64"), 64);
        t.insert(net("fd00::2/128"), 128);
        t.insert(net("10.0.0.0/8"), 4);
        assert_eq!(t.longest_match(ip("fd01::3")), None);
        t.insert(net("::/0"), 0);
        assert_eq!(t.longest_match(ip("fd00::2")), Some(&128));
        assert_eq!(t.longest_match(ip("fd00::3")), Some(&64));
        assert_eq!(t.longest_match(ip("fd00:0:0:1::2")), Some(&0));
        assert_eq!(t.longest_match(ip("::ffff:10.0.0.1")), Some(&0));
        assert_eq!(t.longest_match(ip("10.0.0.1")), Some(&4));
    }

    #[test]
    fn insert_replaces_and_masks_host_bits() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.1.2.3/16"), 'a'), None);
        assert_eq!(t.insert(net("10.1.0.0/16"), 'b'), Some('a'));
        assert_eq!(t.insert(net("fd00::1/0"), 'c'), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.longest_match(ip("10.1.255.255")), Some(&'b'));
        let mut all: Vec<_> = t.iter().map(|(n, v)| (n, *v)).collect();
        all.sort();
        assert_eq!(all, [(net("10.1.0.0/16"), 'b'), (net("::/0"), 'c')]);
        assert_eq!(format!("{t:?}"), r#"{10.1.0.0/16: 'b', ::/0: 'c'}"#);
    }

    #[test]
    fn remove_and_retain() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.1.0.0/16"), 2);
        t.insert(net("fd00::/8"), 2);
        t.insert(net("::/0"), 1);
        assert_eq!(t.remove(net("10.1.9.9/16")), Some(2), "masked too");
        assert_eq!(t.remove(net("10.1.0.0/16")), None);
        assert_eq!(t.remove(net("10.0.0.0/9")), None);
        assert_eq!(t.longest_match(ip("10.1.0.1")), Some(&1));
        t.retain(|_, v| *v != 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.longest_match(ip("10.1.0.1")), None);
        assert_eq!(t.longest_match(ip("fd00::1")), Some(&2));
        assert_eq!(t.longest_match(ip("fe00::1")), None);
        t.retain(|n, _| n.prefix_len() != 8);
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
    }

    /// Networks whose addresses share most leading bits, so that random
    /// networks nest and overlap instead of never meeting.
    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
                let a = (0x0a00_0000 | (hi << 16)) ^ (lo & 0x0f0f);
                net4(a, len).unwrap()
            }),
            (0u128..4, any::<u16>(), 0u8..=128).prop_map(|(hi, lo, len)| {
                let a = ((0xfd00u128 << 112) | (hi << 64)) ^ u128::from(lo);
                net6(a, len).unwrap()
            }),
        ]
    }

    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            arb_net().prop_map(|n| n.addr()),
            any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
            any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_a_linear_scan(
            ops in proptest::collection::vec((arb_net(), any::<bool>()), 0..60),
            probes in proptest::collection::vec(arb_addr(), 1..60),
        ) {
            let mut t = AllowedIps::new();
            let mut naive: Vec<(IpNet, usize)> = Vec::new();
            for (i, (n, add)) in ops.into_iter().enumerate() {
                let old = naive.iter().position(|(m, _)| *m == n.trunc());
                let old = old.map(|j| naive.remove(j).1);
                if add {
                    naive.push((n.trunc(), i));
                    prop_assert_eq!(t.insert(n, i), old);
                } else {
                    prop_assert_eq!(t.remove(n), old);
                }
            }
            prop_assert_eq!(t.len(), naive.len());
            for p in probes {
                let expected = naive
                    .iter()
                    .filter(|(n, _)| n.contains(&p))
                    .max_by_key(|(n, _)| n.prefix_len())
                    .map(|(_, v)| v);
                prop_assert_eq!(t.longest_match(p), expected, "{}", p);
            }
            let mut listed: Vec<_> = t.iter().map(|(n, v)| (n, *v)).collect();
            listed.sort();
            naive.sort();
            prop_assert_eq!(listed, naive);
        }
    }
}
