//! Which destinations a gateway connects to. A destination is judged as
//! the host would reach it: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
//! is the IPv4 address it maps, so no rule can be passed by writing an
//! address the other way. Then, in order:
//!
//! 1. the gateway's own tunnel address is refused (it serves DNS only);
//! 2. the tunnel's subnets (the gateway's `Address` networks, its peers'
//!    `AllowedIPs`) are never looked for on the host's network, whatever
//!    `AllowedDestinations` says: those addresses belong to peers. With
//!    `PeerToPeer = true` a packet to another peer's address is routed to
//!    that peer instead (the engine's hub, `underpass_stack::PeerToPeer`), if `AllowedDestinations` (when
//!    given) lists it; it never reaches these rules;
//! 3. with `[Gateway] AllowedDestinations`, what it lists is allowed;
//! 4. without it, everything but the host itself: its loopback and
//!    link-local addresses, and every address of its interfaces (kept
//!    current, see `host_addrs`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use underpass_stack::{Policy, Protocol};

use super::host_addrs::HostAddrs;
use super::Defaults;
use crate::config::ProxyConfig;

/// Why a destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    OwnTunnelAddress,
    TunnelSubnet,
    NotListed,
    HostPrivate,
    HostAddress,
}

impl Refusal {
    fn why(self) -> &'static str {
        match self {
            Refusal::OwnTunnelAddress => "the gateway's own tunnel address serves only DNS",
            Refusal::TunnelSubnet => {
                "an address of the tunnel (the gateway's Address network or a peer's AllowedIPs), not of the host's network; \
                 peers reach each other only with [Gateway] PeerToPeer = true (and AllowedDestinations listing them)"
            }
            Refusal::NotListed => "outside [Gateway] AllowedDestinations",
            Refusal::HostPrivate => {
                "the gateway host's own loopback or link-local (set [Gateway] AllowedDestinations to allow it)"
            }
            Refusal::HostAddress => {
                "an address of the gateway host itself (set [Gateway] AllowedDestinations to allow it)"
            }
        }
    }
}

/// The rules, from the config.
pub struct Destinations {
    own: Vec<IpAddr>,
    tunnel: Vec<IpNet>,
    allowed: Option<Vec<IpNet>>,
    peer_to_peer: bool,
    defaults: Defaults,
    /// The host's addresses, where the default policy needs them.
    host: Option<HostAddrs>,
}

/// Networks no default gateway forwards to.
fn private_to_host(ip: IpAddr) -> bool {
    let blocked: [IpNet; 4] = [
        "127.0.0.0/8".parse().expect("literal"),
        "169.254.0.0/16".parse().expect("literal"),
        "::1/128".parse().expect("literal"),
        "fe80::/10".parse().expect("literal"),
    ];
    blocked.iter().any(|n| n.contains(&ip)) || ip.is_unspecified() || ip.is_multicast()
}

impl Destinations {
    /// The rules of `cfg`; `host` is the host's addresses (needed when
    /// [`Destinations::needs_host_addrs`]).
    pub fn new(cfg: &ProxyConfig, defaults: Defaults, host: Option<HostAddrs>) -> Destinations {
        let iface = &cfg.wg.interface;
        let mut tunnel: Vec<IpNet> = iface.addresses.iter().map(IpNet::trunc).collect();
        for peer in &cfg.wg.peers {
            for net in &peer.allowed_ips {
                if net.prefix_len() == 0 {
                    // Taken at its word it would make every destination a
                    // peer's and the gateway useless.
                    tracing::warn!(
                        "line {}: a gateway's peer with AllowedIPs = {net} may send from any address; \
                         give it its own tunnel addresses (e.g. 10.0.0.2/32)",
                        peer.line
                    );
                    continue;
                }
                tunnel.push(net.trunc());
            }
        }
        Destinations {
            own: iface.addresses.iter().map(IpNet::addr).collect(),
            tunnel,
            allowed: cfg.gateway.allowed_destinations.clone(),
            peer_to_peer: cfg.gateway.peer_to_peer,
            defaults,
            host,
        }
    }

    /// Whether the rules refuse the host's own addresses (the default
    /// policy), so they must be read and kept current.
    pub fn needs_host_addrs(cfg: &ProxyConfig, defaults: Defaults) -> bool {
        cfg.gateway.allowed_destinations.is_none() && defaults == Defaults::Public
    }

    /// Allows `ip`, or says why not.
    pub fn judge(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if self.own.contains(&ip) {
            return Err(Refusal::OwnTunnelAddress);
        }
        if self.tunnel.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::TunnelSubnet);
        }
        match (&self.allowed, self.defaults) {
            (Some(nets), _) if nets.iter().any(|n| n.contains(&ip)) => Ok(()),
            (Some(_), _) => Err(Refusal::NotListed),
            (None, Defaults::Everything) => Ok(()),
            (None, Defaults::Public) if private_to_host(ip) => Err(Refusal::HostPrivate),
            (None, Defaults::Public) if self.host.as_ref().is_some_and(|h| h.contains(ip)) => {
                Err(Refusal::HostAddress)
            }
            (None, Defaults::Public) => Ok(()),
        }
    }

    /// Whether a packet from one peer to `ip`, an address another peer's
    /// AllowedIPs hold, is routed to it: with `PeerToPeer = true`, within
    /// the tunnel's subnets (never through a peer's 0.0.0.0/0), not to the
    /// gateway's own address, and listed when `AllowedDestinations` is.
    pub fn peer_to_peer_allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.peer_to_peer
            && !self.own.contains(&ip)
            && self.tunnel.iter().any(|n| n.contains(&ip))
            && self
                .allowed
                .as_ref()
                .is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)))
    }

    /// [`Destinations::peer_to_peer_allows`] for the engine, `None` when
    /// `PeerToPeer` is off.
    pub fn peer_to_peer(&self) -> Option<underpass_stack::PeerToPeer> {
        if !self.peer_to_peer {
            return None;
        }
        let rules = Destinations {
            own: self.own.clone(),
            tunnel: self.tunnel.clone(),
            allowed: self.allowed.clone(),
            peer_to_peer: true,
            defaults: self.defaults,
            host: None,
        };
        Some(Box::new(move |ip| rules.peer_to_peer_allows(ip)))
    }

    /// The accept-any policy. Refusals are logged, but at most once a
    /// second (with how many more there were): a client retrying must not
    /// flood the log.
    pub fn into_policy(self) -> Policy {
        let mut last_logged: Option<Instant> = None;
        let mut unlogged = 0u64;
        Box::new(move |proto: Protocol, dst: SocketAddr| {
            let Err(refusal) = self.judge(dst.ip()) else {
                return true;
            };
            let now = Instant::now();
            if last_logged.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                tracing::info!(?proto, %dst, more_since_last = unlogged, "refused a flow: {}", refusal.why());
                last_logged = Some(now);
                unlogged = 0;
            } else {
                unlogged += 1;
            }
            false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(gateway: &str, defaults: Defaults, host: &[&str]) -> Destinations {
        let text = format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.9.0.1/24, fd09::1/64\nListenPort = 51820\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.9.0.2/32, 10.99.0.0/16\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0\n{gateway}",
            key(),
            key(),
            key()
        );
        let cfg = crate::config::ProxyConfig::generated(&text, "test").unwrap();
        let host = HostAddrs::from_list(host.iter().map(|a| a.parse().unwrap()).collect());
        Destinations::new(&cfg, defaults, Some(host))
    }

    fn key() -> String {
        underpass_core::PrivateKey::generate(&mut rand::rngs::OsRng)
            .public_key()
            .to_base64()
    }

    fn judge(d: &Destinations, ip: &str) -> Result<(), Refusal> {
        d.judge(ip.parse().unwrap())
    }

    #[test]
    fn an_ipv4_mapped_address_is_judged_as_the_ipv4_address() {
        let d = rules(
            "[Gateway]\nAllowedDestinations = 10.0.0.0/8, ::/0\n",
            Defaults::Public,
            &[],
        );
        assert_eq!(judge(&d, "127.0.0.2"), Err(Refusal::NotListed));
        assert_eq!(judge(&d, "::ffff:127.0.0.2"), Err(Refusal::NotListed));
        assert_eq!(judge(&d, "::ffff:10.1.2.3"), Ok(()));
        assert_eq!(judge(&d, "2001:db8::1"), Ok(()));
        let d = rules("", Defaults::Public, &[]);
        assert_eq!(judge(&d, "::ffff:127.0.0.1"), Err(Refusal::HostPrivate));
        assert_eq!(judge(&d, "::ffff:10.9.0.1"), Err(Refusal::OwnTunnelAddress));
        assert_eq!(judge(&d, "::ffff:10.9.0.7"), Err(Refusal::TunnelSubnet));
    }

    #[test]
    fn the_tunnels_subnets_are_refused_even_when_listed() {
        let d = rules(
            "[Gateway]\nAllowedDestinations = 0.0.0.0/0, ::/0\n",
            Defaults::Public,
            &[],
        );
        // Another address of the gateway's /24, a peer's address and its
        // routed network, the IPv6 /64.
        for ip in ["10.9.0.3", "10.9.0.2", "10.99.5.5", "fd09::77"] {
            assert_eq!(judge(&d, ip), Err(Refusal::TunnelSubnet), "{ip}");
        }
        assert_eq!(judge(&d, "10.9.1.1"), Ok(()));
        // A peer's 0.0.0.0/0 does not make every address the tunnel's.
        assert_eq!(judge(&d, "198.51.100.1"), Ok(()));
        let everything = rules("", Defaults::Everything, &[]);
        assert_eq!(judge(&everything, "10.9.0.3"), Err(Refusal::TunnelSubnet));
        assert_eq!(judge(&everything, "127.0.0.1"), Ok(()));
    }

    #[test]
    fn peers_reach_each_other_only_when_asked_and_within_allowed_destinations() {
        let off = rules(
            "[Gateway]\nAllowedDestinations = 0.0.0.0/0\n",
            Defaults::Public,
            &[],
        );
        assert!(off.peer_to_peer().is_none());
        assert!(!off.peer_to_peer_allows("10.9.0.2".parse().unwrap()));
        let on = rules("[Gateway]\nPeerToPeer = true\n", Defaults::Public, &[]);
        for ip in ["10.9.0.2", "10.99.5.5", "::ffff:10.9.0.2"] {
            assert!(on.peer_to_peer_allows(ip.parse().unwrap()), "{ip}");
        }
        // The gateway's own address, and anything only a peer's 0.0.0.0/0
        // would hold.
        for ip in ["10.9.0.1", "198.51.100.1"] {
            assert!(!on.peer_to_peer_allows(ip.parse().unwrap()), "{ip}");
        }
        let listed = rules(
            "[Gateway]\nPeerToPeer = true\nAllowedDestinations = 10.99.0.0/16\n",
            Defaults::Public,
            &[],
        );
        assert!(listed.peer_to_peer_allows("10.99.5.5".parse().unwrap()));
        assert!(!listed.peer_to_peer_allows("10.9.0.2".parse().unwrap()));
    }

    #[test]
    fn the_default_policy_refuses_the_hosts_own_addresses() {
        let d = rules(
            "",
            Defaults::Public,
            &["192.0.2.2", "2001:db8::2", "127.0.0.1"],
        );
        assert_eq!(judge(&d, "192.0.2.2"), Err(Refusal::HostAddress));
        assert_eq!(judge(&d, "::ffff:192.0.2.2"), Err(Refusal::HostAddress));
        assert_eq!(judge(&d, "2001:db8::2"), Err(Refusal::HostAddress));
        assert_eq!(judge(&d, "192.0.2.3"), Ok(()), "the LAN stays reachable");
        // A list is taken at its word.
        let listed = rules(
            "[Gateway]\nAllowedDestinations = 192.0.2.0/24\n",
            Defaults::Public,
            &["192.0.2.2"],
        );
        assert_eq!(judge(&listed, "192.0.2.2"), Ok(()));
    }
}
