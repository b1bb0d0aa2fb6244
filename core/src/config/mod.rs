//! The wg-quick configuration format, read and written, without I/O: the
//! caller reads the file and passes its text.
//!
//! `[Interface]` and `[Peer]` are parsed and checked here. Any other section
//! (wireproxy's `[Socks5]`, `[http]`, `[TCPClientTunnel]`, ...) is kept as
//! written, in file order, for the layers above to check.
//!
//! Section names and keys are case-insensitive. Values are read as
//! wireproxy's INI library reads them (see [`ini_value`]): a `#` or `;`
//! starts a comment wherever it is (as a `#` does in wg(8)), unless the
//! value is in backquotes; quotes around a value are removed. A line
//! starting with `;` is a comment too. In a wireproxy section a comment
//! glued to a value (`Password = pa#ss`) is taken as wireproxy takes it,
//! with a warning. A leading byte order mark and CRLF line ends are
//! accepted.
//!
//! Every error names the line (and the key, when there is one) and says
//! what was expected. No error or warning ever contains the text of a
//! private or preshared key.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::keys::{PresharedKey, PrivateKey, PublicKey};

mod error;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use error::*;
pub use error::{ConfigError, ConfigErrorKind, EndpointError, SectionKind};
pub use lex::{ini_quoted, ini_value, lex_line, numbered_lines, Line};
use parse::*;

/// The tunnel MTU when the config sets none: wg-quick's choice for a
/// 1,500-byte link (1,500 less 80 bytes of IPv6, UDP and WireGuard
/// headers). The one home of this number: the node, the stack and the
/// hosts take it from here.
pub const DEFAULT_MTU: u16 = 1420;

/// A parsed configuration.
///
/// Equality compares what the configuration means: line numbers and
/// warnings record where things were found and are not compared, so
/// `Config::parse(&c.to_wg_quick()) == Ok(c)` holds for a parsed `c`.
#[derive(Debug, Clone, Eq)]
pub struct Config {
    /// The `[Interface]` section.
    pub interface: Interface,
    /// The `[Peer]` sections, in file order.
    pub peers: Vec<PeerConfig>,
    /// Sections this module does not know, in file order.
    pub sections: Vec<Section>,
    /// Things accepted but worth telling the user about, by line.
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, Eq)]
/// The `[Interface]` section: who this node is and how its tunnel is set up.
pub struct Interface {
    /// `PrivateKey`: this node's identity.
    pub private_key: PrivateKey,
    /// The tunnel's own addresses, with their prefixes.
    pub addresses: Vec<IpNet>,
    /// DNS servers to use through the tunnel.
    pub dns: Vec<IpAddr>,
    /// Search domains: the entries of `DNS =` that are names, as in wg-quick.
    pub dns_search: Vec<String>,
    /// `None`: [`DEFAULT_MTU`].
    pub mtu: Option<u16>,
    /// `ListenPort`; `None`: any free port.
    pub listen_port: Option<u16>,
    /// wireproxy's `CheckAlive`: addresses to ping through the tunnel to
    /// tell whether it works.
    pub check_alive: Vec<IpAddr>,
    /// wireproxy's `CheckAliveInterval`, seconds; `None`: the default.
    pub check_alive_interval: Option<u16>,
    /// Line of the `[Interface]` header.
    pub line: usize,
}

#[derive(Debug, Clone, Eq)]
/// A `[Peer]` section: who the node talks to and what it routes there.
pub struct PeerConfig {
    /// `PublicKey`: who the peer is.
    pub public_key: PublicKey,
    /// `PresharedKey`: mixed into every handshake with the peer.
    pub preshared_key: Option<PresharedKey>,
    /// `Endpoint`; `None`: the peer dials us first.
    pub endpoint: Option<Endpoint>,
    /// `AllowedIPs`: what is routed to the peer and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds; `None` when 0 or off.
    pub persistent_keepalive: Option<u16>,
    /// Line of the `[Peer]` header.
    pub line: usize,
}

/// Where a peer is: an address, or a host name for the I/O layer to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An address, used as it is.
    Addr(SocketAddr),
    /// A host name for the I/O layer to resolve, and the port.
    Host {
        /// As written.
        host: String,
        /// The port.
        port: u16,
    },
}

/// A section this module does not know, kept for the layers above.
#[derive(Debug, Clone, Eq)]
pub struct Section {
    /// The name as written, without the brackets.
    pub name: String,
    /// Line of the header.
    pub line: usize,
    /// Its `Key = Value` lines, in order.
    pub entries: Vec<Entry>,
}

/// One `Key = Value` line of a [`Section`]: key and value as written, less
/// the whitespace around them (and a comment after whitespace).
#[derive(Clone, Eq)]
pub struct Entry {
    /// As written, trimmed.
    pub key: String,
    /// As the lexer reads it: comment and quotes taken off.
    pub value: String,
    /// 1-based.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// Something accepted but worth telling the user about.
pub struct Warning {
    /// 1-based.
    pub line: usize,
    /// What to tell; never holds a secret.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(addr) => write!(f, "{addr}"),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Endpoint {
    /// The port, whichever form the endpoint has.
    pub fn port(&self) -> u16 {
        match self {
            Endpoint::Addr(addr) => addr.port(),
            Endpoint::Host { port, .. } => *port,
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        parse_endpoint(s)
    }
}

/// Reads `IPv4:port`, `[IPv6]:port` or `host:port`; port 0 is refused.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, EndpointError> {
    let s = text.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(EndpointError::Port(shown(s)));
        }
        return Ok(Endpoint::Addr(addr));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(EndpointError::Host(shown(s)));
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(EndpointError::Host(shown(s)));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err(EndpointError::NoPort(shown(s)));
        };
        (inside, port)
    } else {
        match s.rsplit_once(':') {
            None => return Err(EndpointError::NoPort(shown(s))),
            Some((host, _)) if host.contains(':') => {
                let v6 = s.parse::<Ipv6Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok();
                return Err(if v6 {
                    EndpointError::Ipv6NeedsBrackets(shown(s))
                } else {
                    EndpointError::Host(shown(s))
                });
            }
            Some(split) => split,
        }
    };
    let Some(port) = parse_u16(port).filter(|&p| p != 0) else {
        return Err(EndpointError::Port(shown(s)));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        Ok(Endpoint::Addr(SocketAddr::new(ip, port)))
    } else if is_domain(host) {
        Ok(Endpoint::Host {
            host: host.to_string(),
            port,
        })
    } else {
        Err(EndpointError::Host(shown(s)))
    }
}

impl Interface {
    /// The public key peers know this interface by.
    pub fn public_key(&self) -> PublicKey {
        self.private_key.public_key()
    }
}

impl PeerConfig {
    /// The node's view of this peer, with the endpoint as resolved by the
    /// caller (a host name needs resolving; an address passes through).
    pub fn options(&self, endpoint: Option<SocketAddr>) -> crate::PeerOptions {
        crate::PeerOptions {
            public_key: self.public_key,
            preshared_key: self.preshared_key.clone(),
            endpoint,
            allowed_ips: self.allowed_ips.clone(),
            persistent_keepalive: self
                .persistent_keepalive
                .map(|s| core::time::Duration::from_secs(u64::from(s))),
        }
    }
}

impl Section {
    /// The last entry for `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
    }

    /// Every entry for `key` (case-insensitive), in file order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.key.eq_ignore_ascii_case(key))
    }
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.interface == other.interface
            && self.peers == other.peers
            && self.sections == other.sections
    }
}

impl PartialEq for Interface {
    fn eq(&self, o: &Self) -> bool {
        self.private_key == o.private_key
            && self.addresses == o.addresses
            && self.dns == o.dns
            && self.dns_search == o.dns_search
            && self.mtu == o.mtu
            && self.listen_port == o.listen_port
            && self.check_alive == o.check_alive
            && self.check_alive_interval == o.check_alive_interval
    }
}

impl PartialEq for PeerConfig {
    fn eq(&self, o: &Self) -> bool {
        self.public_key == o.public_key
            && self.preshared_key == o.preshared_key
            && self.endpoint == o.endpoint
            && self.allowed_ips == o.allowed_ips
            && self.persistent_keepalive == o.persistent_keepalive
    }
}

impl PartialEq for Section {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.entries == o.entries
    }
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key && self.value == o.value
    }
}

/// Values of keys that look secret (`Password`, `PrivateKey`, `Token`...)
/// are not shown.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.to_ascii_lowercase();
        let secret = ["pass", "secret", "key", "token"]
            .iter()
            .any(|w| key.contains(w));
        let mut d = f.debug_struct("Entry");
        d.field("key", &self.key);
        if secret {
            d.field("value", &format_args!("<redacted>"));
        } else {
            d.field("value", &self.value);
        }
        d.field("line", &self.line).finish()
    }
}

impl Config {
    /// Reads wg-quick text. The first problem found is returned.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut parser = Parser::default();
        for (n, line) in numbered_lines(text) {
            parser.line(n, line)?;
        }
        parser.finish()
    }

    /// The configuration as wg-quick text: `[Interface]`, the peers, then
    /// the other sections in order. It includes the private key.
    ///
    /// It reads back to an equal `Config` when this one could have come from
    /// [`Config::parse`]; hand-built values (a section named `Peer`, an entry
    /// value with a line break, a keepalive of `Some(0)`...) may not.
    pub fn to_wg_quick(&self) -> String {
        let mut out = String::from("[Interface]\n");
        let i = &self.interface;
        setting(&mut out, "PrivateKey", i.private_key.to_base64());
        if let Some(port) = i.listen_port {
            setting(&mut out, "ListenPort", port);
        }
        if !i.addresses.is_empty() {
            setting(&mut out, "Address", join(&i.addresses));
        }
        if !i.dns.is_empty() || !i.dns_search.is_empty() {
            let servers = i.dns.iter().map(ToString::to_string);
            let all: Vec<String> = servers.chain(i.dns_search.iter().cloned()).collect();
            setting(&mut out, "DNS", all.join(", "));
        }
        if let Some(mtu) = i.mtu {
            setting(&mut out, "MTU", mtu);
        }
        if !i.check_alive.is_empty() {
            let all: Vec<String> = i.check_alive.iter().map(ToString::to_string).collect();
            setting(&mut out, "CheckAlive", all.join(", "));
        }
        if let Some(seconds) = i.check_alive_interval {
            setting(&mut out, "CheckAliveInterval", seconds);
        }
        for peer in &self.peers {
            out.push_str("\n[Peer]\n");
            setting(&mut out, "PublicKey", peer.public_key.to_base64());
            if let Some(psk) = &peer.preshared_key {
                setting(&mut out, "PresharedKey", psk.to_base64());
            }
            if let Some(endpoint) = &peer.endpoint {
                setting(&mut out, "Endpoint", endpoint);
            }
            if !peer.allowed_ips.is_empty() {
                setting(&mut out, "AllowedIPs", join(&peer.allowed_ips));
            }
            if let Some(seconds) = peer.persistent_keepalive {
                setting(&mut out, "PersistentKeepalive", seconds);
            }
        }
        for section in &self.sections {
            let _ = write!(out, "\n[{}]\n", section.name);
            for entry in &section.entries {
                setting(&mut out, &entry.key, ini_quoted(&entry.value));
            }
        }
        out
    }

    /// The kept sections named `name` (case-insensitive), in file order.
    pub fn sections_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections
            .iter()
            .filter(move |s| s.name.eq_ignore_ascii_case(name))
    }
}

fn setting(out: &mut String, key: &str, value: impl fmt::Display) {
    let _ = writeln!(out, "{key} = {value}");
}

fn join(nets: &[IpNet]) -> String {
    let texts: Vec<String> = nets.iter().map(ToString::to_string).collect();
    texts.join(", ")
}
