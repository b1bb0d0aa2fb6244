//! The wg-quick configuration format, read and written.
//!
//! `[Interface]` and `[Peer]` are parsed and checked here; any other section
//! (wireproxy's `[Socks5]`, `[http]`, `[TCPClientTunnel]`, ...) is kept
//! verbatim, in file order, for the layers above. Every error names the line
//! and the key and says what was expected, and never quotes a secret.
//!
//! Section names and keys are case-insensitive, as in wg(8). A `#` starts a
//! comment at the beginning of a line or after whitespace, so a password
//! such as `pa#ss` survives.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::keys::{KeyError, PresharedKey, PrivateKey, PublicKey};

#[cfg(test)]
mod tests;

/// A parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub interface: Interface,
    pub peers: Vec<PeerConfig>,
    /// Sections this module does not know, in file order.
    pub sections: Vec<Section>,
    /// Things accepted but worth telling the user about.
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub private_key: PrivateKey,
    /// The tunnel addresses, with their prefixes.
    pub addresses: Vec<IpNet>,
    /// DNS servers to use through the tunnel.
    pub dns: Vec<IpAddr>,
    /// DNS search domains (non-address entries of `DNS =`).
    pub dns_search: Vec<String>,
    pub mtu: Option<u16>,
    pub listen_port: Option<u16>,
    /// Line of the `[Interface]` header.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<Endpoint>,
    pub allowed_ips: Vec<IpNet>,
    /// Seconds; `None` when off.
    pub persistent_keepalive: Option<u16>,
    /// Line of the `[Peer]` header.
    pub line: usize,
}

/// Where a peer is: an address, or a host name the I/O layer resolves
/// (and resolves again when handshakes stop being answered).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

/// A section kept for the layers above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name as written, without brackets.
    pub name: String,
    pub line: usize,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A configuration that could not be read. Displays as
/// `line N: Key: what is wrong, what was expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub key: Option<String>,
    pub kind: ConfigErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("no [Interface] section; a config needs one, with at least a PrivateKey")]
    NoInterface,
    #[error(
        "a second [Interface] section (the first is on line {first}); a config has exactly one"
    )]
    DuplicateInterface { first: usize },
    #[error("[{section}] has no {key}, which it needs")]
    MissingKey {
        section: &'static str,
        key: &'static str,
    },
    #[error("a setting before any section; expected a header such as [Interface] first")]
    OutsideSection,
    #[error("malformed section header; expected a name in brackets, like [Peer]")]
    MalformedHeader,
    #[error("expected `Key = value`")]
    MissingEquals,
    #[error("the value is empty")]
    EmptyValue,
    #[error("unknown key in [{section}]; expected one of: {}", valid.join(", "))]
    UnknownKey {
        section: &'static str,
        valid: &'static [&'static str],
    },
    #[error("given twice in one section (first on line {first})")]
    DuplicateKey { first: usize },
    #[error("{0}; expected a 32-byte key in base64 (44 characters, as `wg genkey` prints)")]
    Key(KeyError),
    #[error("`{0}` is not an address with an optional prefix length; expected e.g. 10.0.0.2/32 or fd00::2/128")]
    Address(String),
    #[error("`{0}` is not a network; expected e.g. 10.0.0.0/24, 0.0.0.0/0 or ::/0")]
    Network(String),
    #[error("`{0}` is neither an IP address nor a DNS search domain")]
    Dns(String),
    #[error("`{0}` is not an endpoint; expected host:port, e.g. 203.0.113.1:51820, [2001:db8::1]:51820 or vpn.example.com:51820")]
    Endpoint(String),
    #[error("`{value}` is out of range; expected a whole number from {min} to {max}")]
    Number { value: String, min: u32, max: u32 },
    #[error("`{0}` is not a number of seconds; expected 1 to 65535, or off")]
    Keepalive(String),
    #[error("this peer's PublicKey is already used by the peer on line {first}")]
    DuplicatePeer { first: usize },
    #[error("this is the interface's own public key; a peer must be another machine")]
    OwnKey,
}

const INTERFACE_KEYS: &[&str] = &["PrivateKey", "Address", "DNS", "MTU", "ListenPort"];
const PEER_KEYS: &[&str] = &[
    "PublicKey",
    "PresharedKey",
    "Endpoint",
    "AllowedIPs",
    "PersistentKeepalive",
];
/// wg-quick keys that configure the host, which a userspace client does
/// not touch.
const HOST_ONLY_KEYS: &[&str] = &[
    "Table",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
    "SaveConfig",
    "FwMark",
];

/// Quotes a value in an error, shortened.
fn shown(value: &str) -> String {
    const MAX: usize = 40;
    match value.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

enum Line<'a> {
    Header(&'a str),
    Setting(&'a str, &'a str),
}

fn lex(text: &str) -> impl Iterator<Item = (usize, Result<Line<'_>, ConfigErrorKind>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().enumerate().filter_map(|(i, raw)| {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            return None;
        }
        let lexed = if let Some(rest) = line.strip_prefix('[') {
            match rest.strip_suffix(']').map(str::trim) {
                Some(name) if !name.is_empty() && !name.contains(['[', ']']) => {
                    Ok(Line::Header(name))
                }
                _ => Err(ConfigErrorKind::MalformedHeader),
            }
        } else {
            match line.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    Ok(Line::Setting(key.trim(), value.trim()))
                }
                _ => Err(ConfigErrorKind::MissingEquals),
            }
        };
        Some((i + 1, lexed))
    })
}

/// Case-insensitive lookup of `key` in `keys`, returning the canonical
/// spelling.
fn canonical(key: &str, keys: &'static [&'static str]) -> Option<&'static str> {
    keys.iter().copied().find(|k| k.eq_ignore_ascii_case(key))
}

/// Settings of one known section, with the line of each single-valued key.
struct Seen {
    keys: Vec<(&'static str, usize)>,
}

impl Seen {
    fn once(&mut self, key: &'static str, line: usize) -> Result<(), ConfigError> {
        if let Some(&(_, first)) = self.keys.iter().find(|(k, _)| *k == key) {
            return Err(ConfigError {
                line,
                key: Some(key.into()),
                kind: ConfigErrorKind::DuplicateKey { first },
            });
        }
        self.keys.push((key, line));
        Ok(())
    }
}

fn number(value: &str, min: u32, max: u32) -> Result<u32, ConfigErrorKind> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigErrorKind::Number {
            value: shown(value),
            min,
            max,
        }),
    }
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl FromStr for Endpoint {
    type Err = ConfigErrorKind;

    fn from_str(s: &str) -> Result<Self, ConfigErrorKind> {
        let bad = || ConfigErrorKind::Endpoint(shown(s));
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Endpoint::Addr(addr));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if host.contains(':') || !is_dns_name(host.trim_end_matches('.')) {
            return Err(bad());
        }
        Ok(Endpoint::Host {
            host: host.to_ascii_lowercase(),
            port,
        })
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

fn address(value: &str) -> Result<IpNet, ConfigErrorKind> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| ConfigErrorKind::Address(shown(value)))
}

struct InterfaceBuilder {
    line: usize,
    seen: Seen,
    private_key: Option<PrivateKey>,
    addresses: Vec<IpNet>,
    dns: Vec<IpAddr>,
    dns_search: Vec<String>,
    mtu: Option<u16>,
    listen_port: Option<u16>,
}

struct PeerBuilder {
    line: usize,
    seen: Seen,
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    endpoint: Option<Endpoint>,
    allowed_ips: Vec<IpNet>,
    persistent_keepalive: Option<u16>,
}

enum Current {
    Interface,
    Peer(PeerBuilder),
    Other(Section),
}

impl Config {
    /// Parses wg-quick text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut interface: Option<InterfaceBuilder> = None;
        let mut peers: Vec<PeerConfig> = Vec::new();
        let mut sections = Vec::new();
        let mut warnings = Vec::new();
        let mut current: Option<Current> = None;

        fn close(
            current: Option<Current>,
            peers: &mut Vec<PeerConfig>,
            sections: &mut Vec<Section>,
        ) -> Result<(), ConfigError> {
            match current {
                Some(Current::Peer(p)) => {
                    let public_key = p.public_key.ok_or(ConfigError {
                        line: p.line,
                        key: None,
                        kind: ConfigErrorKind::MissingKey {
                            section: "Peer",
                            key: "PublicKey",
                        },
                    })?;
                    if let Some(first) = peers.iter().find(|q| q.public_key == public_key) {
                        return Err(ConfigError {
                            line: p.line,
                            key: Some("PublicKey".into()),
                            kind: ConfigErrorKind::DuplicatePeer { first: first.line },
                        });
                    }
                    peers.push(PeerConfig {
                        public_key,
                        preshared_key: p.preshared_key,
                        endpoint: p.endpoint,
                        allowed_ips: p.allowed_ips,
                        persistent_keepalive: p.persistent_keepalive,
                        line: p.line,
                    });
                }
                Some(Current::Other(section)) => sections.push(section),
                Some(Current::Interface) | None => {}
            }
            Ok(())
        }

        for (line, lexed) in lex(text) {
            let at = |kind| ConfigError {
                line,
                key: None,
                kind,
            };
            match lexed.map_err(at)? {
                Line::Header(name) => {
                    close(current.take(), &mut peers, &mut sections)?;
                    current = Some(if name.eq_ignore_ascii_case("Interface") {
                        if let Some(first) = &interface {
                            return Err(at(ConfigErrorKind::DuplicateInterface {
                                first: first.line,
                            }));
                        }
                        interface = Some(InterfaceBuilder {
                            line,
                            seen: Seen { keys: Vec::new() },
                            private_key: None,
                            addresses: Vec::new(),
                            dns: Vec::new(),
                            dns_search: Vec::new(),
                            mtu: None,
                            listen_port: None,
                        });
                        Current::Interface
                    } else if name.eq_ignore_ascii_case("Peer") {
                        Current::Peer(PeerBuilder {
                            line,
                            seen: Seen { keys: Vec::new() },
                            public_key: None,
                            preshared_key: None,
                            endpoint: None,
                            allowed_ips: Vec::new(),
                            persistent_keepalive: None,
                        })
                    } else {
                        Current::Other(Section {
                            name: name.to_string(),
                            line,
                            entries: Vec::new(),
                        })
                    });
                }
                Line::Setting(key, value) => match current.as_mut() {
                    None => return Err(at(ConfigErrorKind::OutsideSection)),
                    Some(Current::Other(section)) => section.entries.push(Entry {
                        key: key.to_string(),
                        value: value.to_string(),
                        line,
                    }),
                    Some(Current::Interface) => {
                        let iface = interface.as_mut().expect("set with Current::Interface");
                        interface_setting(iface, key, value, line, &mut warnings)?;
                    }
                    Some(Current::Peer(peer)) => {
                        peer_setting(peer, key, value, line, &mut warnings)?
                    }
                },
            }
        }
        close(current.take(), &mut peers, &mut sections)?;

        let iface = interface.ok_or(ConfigError {
            line: 0,
            key: None,
            kind: ConfigErrorKind::NoInterface,
        })?;
        let private_key = iface.private_key.ok_or(ConfigError {
            line: iface.line,
            key: None,
            kind: ConfigErrorKind::MissingKey {
                section: "Interface",
                key: "PrivateKey",
            },
        })?;
        let own = private_key.public_key();
        if let Some(p) = peers.iter().find(|p| p.public_key == own) {
            return Err(ConfigError {
                line: p.line,
                key: Some("PublicKey".into()),
                kind: ConfigErrorKind::OwnKey,
            });
        }
        Ok(Config {
            interface: Interface {
                private_key,
                addresses: iface.addresses,
                dns: iface.dns,
                dns_search: iface.dns_search,
                mtu: iface.mtu,
                listen_port: iface.listen_port,
                line: iface.line,
            },
            peers,
            sections,
            warnings,
        })
    }

    /// The configuration as wg-quick text, private key included: this is
    /// an explicit export, never something to log.
    pub fn to_wg_quick(&self) -> String {
        use fmt::Write as _;
        let mut out = String::new();
        let i = &self.interface;
        out.push_str("[Interface]\n");
        let _ = writeln!(out, "PrivateKey = {}", i.private_key.to_base64());
        if !i.addresses.is_empty() {
            let _ = writeln!(out, "Address = {}", join(&i.addresses));
        }
        if !i.dns.is_empty() || !i.dns_search.is_empty() {
            let all: Vec<String> = i
                .dns
                .iter()
                .map(ToString::to_string)
                .chain(i.dns_search.iter().cloned())
                .collect();
            let _ = writeln!(out, "DNS = {}", all.join(", "));
        }
        if let Some(mtu) = i.mtu {
            let _ = writeln!(out, "MTU = {mtu}");
        }
        if let Some(port) = i.listen_port {
            let _ = writeln!(out, "ListenPort = {port}");
        }
        for p in &self.peers {
            out.push_str("\n[Peer]\n");
            let _ = writeln!(out, "PublicKey = {}", p.public_key);
            if let Some(psk) = &p.preshared_key {
                let _ = writeln!(out, "PresharedKey = {}", psk.to_base64());
            }
            if let Some(endpoint) = &p.endpoint {
                let _ = writeln!(out, "Endpoint = {endpoint}");
            }
            if !p.allowed_ips.is_empty() {
                let _ = writeln!(out, "AllowedIPs = {}", join(&p.allowed_ips));
            }
            if let Some(k) = p.persistent_keepalive {
                let _ = writeln!(out, "PersistentKeepalive = {k}");
            }
        }
        for s in &self.sections {
            let _ = write!(out, "\n[{}]\n", s.name);
            for e in &s.entries {
                let _ = writeln!(out, "{} = {}", e.key, e.value);
            }
        }
        out
    }

    /// Sections named `name` (case-insensitive), in file order.
    pub fn sections_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections
            .iter()
            .filter(move |s| s.name.eq_ignore_ascii_case(name))
    }
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn host_only(key: &str, line: usize, warnings: &mut Vec<Warning>) -> bool {
    match canonical(key, HOST_ONLY_KEYS) {
        Some(k) => {
            warnings.push(Warning {
                line,
                message: format!("{k} is ignored: it configures the host, and underpass changes nothing on the host"),
            });
            true
        }
        None => false,
    }
}

fn interface_setting(
    iface: &mut InterfaceBuilder,
    key: &str,
    value: &str,
    line: usize,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let Some(canon) = canonical(key, INTERFACE_KEYS) else {
        if host_only(key, line, warnings) {
            return Ok(());
        }
        return Err(ConfigError {
            line,
            key: Some(key.to_string()),
            kind: ConfigErrorKind::UnknownKey {
                section: "Interface",
                valid: INTERFACE_KEYS,
            },
        });
    };
    let err = |kind| ConfigError {
        line,
        key: Some(canon.to_string()),
        kind,
    };
    if value.is_empty() {
        return Err(err(ConfigErrorKind::EmptyValue));
    }
    match canon {
        "PrivateKey" => {
            iface.seen.once(canon, line)?;
            iface.private_key = Some(value.parse().map_err(|e| err(ConfigErrorKind::Key(e)))?);
        }
        "Address" => {
            for item in list(value) {
                iface.addresses.push(address(item).map_err(err)?);
            }
        }
        "DNS" => {
            for item in list(value) {
                match item.parse::<IpAddr>() {
                    Ok(ip) => iface.dns.push(ip),
                    Err(_) if is_dns_name(item.trim_end_matches('.')) => {
                        iface.dns_search.push(item.to_string())
                    }
                    Err(_) => return Err(err(ConfigErrorKind::Dns(shown(item)))),
                }
            }
        }
        "MTU" => {
            iface.seen.once(canon, line)?;
            iface.mtu = Some(number(value, 576, 65535).map_err(err)? as u16);
        }
        "ListenPort" => {
            iface.seen.once(canon, line)?;
            iface.listen_port = Some(number(value, 0, 65535).map_err(err)? as u16);
        }
        _ => unreachable!("every canonical key is handled"),
    }
    Ok(())
}

fn peer_setting(
    peer: &mut PeerBuilder,
    key: &str,
    value: &str,
    line: usize,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let Some(canon) = canonical(key, PEER_KEYS) else {
        if host_only(key, line, warnings) {
            return Ok(());
        }
        return Err(ConfigError {
            line,
            key: Some(key.to_string()),
            kind: ConfigErrorKind::UnknownKey {
                section: "Peer",
                valid: PEER_KEYS,
            },
        });
    };
    let err = |kind| ConfigError {
        line,
        key: Some(canon.to_string()),
        kind,
    };
    if value.is_empty() {
        return Err(err(ConfigErrorKind::EmptyValue));
    }
    match canon {
        "PublicKey" => {
            peer.seen.once(canon, line)?;
            peer.public_key = Some(value.parse().map_err(|e| err(ConfigErrorKind::Key(e)))?);
        }
        "PresharedKey" => {
            peer.seen.once(canon, line)?;
            peer.preshared_key = Some(value.parse().map_err(|e| err(ConfigErrorKind::Key(e)))?);
        }
        "Endpoint" => {
            peer.seen.once(canon, line)?;
            peer.endpoint = Some(value.parse().map_err(err)?);
        }
        "AllowedIPs" => {
            for item in list(value) {
                let net: IpNet = item
                    .parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| err(ConfigErrorKind::Network(shown(item))))?;
                if net.trunc() != net {
                    warnings.push(Warning {
                        line,
                        message: format!(
                            "AllowedIPs: {net} has host bits set; using {}",
                            net.trunc()
                        ),
                    });
                }
                peer.allowed_ips.push(net.trunc());
            }
        }
        "PersistentKeepalive" => {
            peer.seen.once(canon, line)?;
            peer.persistent_keepalive = if value.eq_ignore_ascii_case("off") {
                None
            } else {
                match value.parse::<u16>() {
                    Ok(0) => None,
                    Ok(n) => Some(n),
                    Err(_) => return Err(err(ConfigErrorKind::Keepalive(shown(value)))),
                }
            };
        }
        _ => unreachable!("every canonical key is handled"),
    }
    Ok(())
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
    /// The last value of `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.key.eq_ignore_ascii_case(key))
    }
}
