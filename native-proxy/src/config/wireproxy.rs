//! What wireproxy's configs mean beyond wg-quick's (`[Resolve]`, `$$`, a
//! peer without `AllowedIPs`), and which sections each role serves, so a
//! section that would do nothing is refused or warned about, not ignored.

use super::*;

/// `[Resolve] ResolveStrategy`: which family of a name's addresses is tried
/// first (the other one is still tried after it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResolveStrategy {
    /// wireproxy's default: IPv4 first when the tunnel has only IPv4
    /// addresses, IPv6 first when it has an IPv6 one.
    #[default]
    Auto,
    Ipv4,
    Ipv6,
}

impl ResolveStrategy {
    /// Whether IPv6 addresses go first on a tunnel with `addresses`.
    pub fn prefers_v6(self, addresses: &[IpNet]) -> bool {
        match self {
            ResolveStrategy::Ipv4 => false,
            ResolveStrategy::Ipv6 => true,
            ResolveStrategy::Auto => addresses.iter().any(|a| a.addr().is_ipv6()),
        }
    }

    /// Puts `ips` in the order to try them, keeping the resolver's order
    /// within each family.
    pub fn order(self, addresses: &[IpNet], ips: &mut [IpAddr]) {
        let v6_first = self.prefers_v6(addresses);
        ips.sort_by_key(|ip| ip.is_ipv6() != v6_first);
    }
}

/// A section header, where it is (for messages and the checks by role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSection {
    /// As written, without brackets.
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for FoundSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// `[Interface]`, each `[Peer]` and every other section, in that order.
pub(super) fn found_sections(wg: &Config, source: &Source) -> Vec<FoundSection> {
    let at = |name: &str, line: usize| {
        let (file, line) = source.origin(line);
        FoundSection {
            name: name.to_string(),
            file,
            line,
        }
    };
    let mut found = vec![at("Interface", wg.interface.line)];
    found.extend(wg.peers.iter().map(|p| at("Peer", p.line)));
    found.extend(wg.sections.iter().map(|s| at(&s.name, s.line)));
    found
}

pub(super) fn resolve_section(s: &Reader) -> Result<ResolveStrategy, LoadError> {
    s.only(&["ResolveStrategy"])?;
    let Some(e) = s.optional("ResolveStrategy") else {
        return Ok(ResolveStrategy::Auto);
    };
    match e.value.to_ascii_lowercase().as_str() {
        "auto" => Ok(ResolveStrategy::Auto),
        "ipv4" => Ok(ResolveStrategy::Ipv4),
        "ipv6" => Ok(ResolveStrategy::Ipv6),
        _ => Err(s.err(
            e.line,
            "ResolveStrategy",
            format!(
                "`{}` is not a strategy; expected auto, ipv4 or ipv6",
                shown(&e.value)
            ),
        )),
    }
}

/// wireproxy's escape: a value starting with `$$` is that text with the
/// first `$$` made a `$`, not a variable.
pub(super) fn dollar_literal(value: &str) -> Option<String> {
    value
        .starts_with("$$")
        .then(|| value.replacen("$$", "$", 1))
}

/// Sections only a client serves: a gateway refuses them.
const CLIENT_SECTIONS: [&str; 7] = [
    "Socks5",
    "http",
    "SNI",
    "TCPClientTunnel",
    "TCPServerTunnel",
    "UDPProxyTunnel",
    "STDIOTunnel",
];

impl ProxyConfig {
    fn found_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a FoundSection> + 'a {
        self.found
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
    }

    /// What a client makes of the config: a peer without `AllowedIPs` gets
    /// all traffic (0.0.0.0/0 and ::/0), as in wireproxy; a `[Gateway]`
    /// section is warned about, since only a gateway reads it.
    pub fn for_client(&mut self) {
        let mut bare = Vec::new();
        let peers: Vec<FoundSection> = self.found_named("Peer").cloned().collect();
        for (peer, at) in self.wg.peers.iter_mut().zip(&peers) {
            if peer.allowed_ips.is_empty() {
                peer.allowed_ips = vec![
                    IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("a valid prefix"),
                    IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
                        .expect("a valid prefix"),
                ];
                bare.push(at.clone());
            }
        }
        for at in &bare {
            self.warnings.push(format!(
                "{at}: [Peer] has no AllowedIPs: all traffic goes to it (0.0.0.0/0, ::/0), as in wireproxy"
            ));
        }
        if let [.., last] = &bare[..] {
            if bare.len() > 1 {
                self.warnings.push(format!(
                    "{last}: several peers have no AllowedIPs: all traffic goes to the last of them, this one"
                ));
            }
        }
        let gateways: Vec<String> = self.found_named("Gateway").map(|f| f.to_string()).collect();
        for at in gateways {
            self.warnings.push(format!(
                "{at}: [Gateway] is read by `underpass gateway` only; the client ignores it"
            ));
        }
    }

    /// What a gateway makes of the config: a section it would not serve
    /// (a proxy, a forward) is an error naming it; client-only settings
    /// are warned about.
    pub fn for_gateway(&mut self) -> Result<(), LoadError> {
        for f in &self.found {
            if let Some(name) = CLIENT_SECTIONS
                .iter()
                .find(|n| n.eq_ignore_ascii_case(&f.name))
            {
                return Err(LoadError {
                    file: f.file.clone(),
                    line: f.line,
                    key: None,
                    message: format!(
                        "[{name}] is a client's section, which `underpass gateway` does not serve; \
                         run it with `underpass --config FILE` (a client), or remove it from the gateway's config"
                    ),
                });
            }
        }
        let mut warnings = Vec::new();
        for at in self.found_named("Resolve") {
            warnings.push(format!(
                "{at}: [Resolve] is for a client; the gateway ignores it (it resolves names on its host)"
            ));
        }
        if !self.wg.interface.check_alive.is_empty() {
            if let Some(at) = self.found_named("Interface").next() {
                warnings.push(format!(
                    "{at}: CheckAlive is for a client (its /readyz); the gateway ignores it"
                ));
            }
        }
        let peers = self.found_named("Peer");
        for (peer, at) in self.wg.peers.iter().zip(peers) {
            if peer.allowed_ips.is_empty() {
                warnings.push(format!(
                    "{at}: [Peer] has no AllowedIPs: the gateway accepts nothing from it and sends it nothing; \
                     give its tunnel address, e.g. AllowedIPs = 10.0.0.2/32"
                ));
            }
        }
        self.warnings.extend(warnings);
        Ok(())
    }
}
