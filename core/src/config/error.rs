//! What can be wrong with a configuration, and the words messages use.

use std::fmt;

use crate::keys::KeyError;

/// A configuration that could not be read. Displays as
/// `line N: Key: what is wrong; what was expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// 1-based; 0 when the problem is the text as a whole.
    pub line: usize,
    /// The key as it is properly spelled, or as written when unknown (not
    /// set when an unknown key looks as if it could be a secret).
    pub key: Option<String>,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

/// [`SectionKind::Interface`] or [`SectionKind::Peer`], for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// `[Interface]`.
    Interface,
    /// `[Peer]`.
    Peer,
}

/// What is wrong. Each message ends with what was expected; values are
/// quoted shortened (see [`ConfigError`]), secrets never.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant's #[error] message says what it is
pub enum ConfigErrorKind {
    /// No `[Interface]` header anywhere (line 0).
    #[error("no [Interface] section; expected one, with at least PrivateKey = <key>")]
    NoInterface,
    /// A second `[Interface]` header.
    #[error(
        "a second [Interface] section (the first is at line {first_line}); expected exactly one"
    )]
    DuplicateInterface { first_line: usize },
    /// A line starting with `[` that is not `[Name]`; the text, shortened.
    #[error(
        "`{0}` is not a section header; expected a name in brackets, alone on its line, \
         such as [Peer]"
    )]
    MalformedHeader(String),
    /// A setting above the first section header.
    #[error("setting outside any section; expected it below an [Interface] or [Peer] header")]
    OutsideSection,
    /// A line that is neither a header, a comment, nor `Key = Value`.
    #[error(
        "neither a setting nor a section header; expected Key = Value, [Section] or a # comment"
    )]
    NotKeyValue,
    /// A key `[Interface]` or `[Peer]` does not have, maybe with a guess.
    #[error("not a key of {section}; {}", key_hint(*.section, *.suggestion))]
    UnknownKey {
        section: SectionKind,
        suggestion: Option<&'static str>,
    },
    /// A key of the other section, such as `Endpoint` in `[Interface]`.
    #[error("belongs in {belongs_in}, not {section}; expected it in the {belongs_in} section")]
    WrongSection {
        section: SectionKind,
        belongs_in: SectionKind,
    },
    /// `Key =` with nothing after it.
    #[error("empty value; expected {expected}")]
    EmptyValue { expected: &'static str },
    /// A key that takes one value, given a second time in its section.
    #[error("given a second time (first at line {first_line}); expected once per section")]
    Repeated { first_line: usize },
    #[error("missing from [Interface]; expected the interface's private key, {KEY}")]
    MissingPrivateKey,
    #[error("missing from [Peer]; expected the peer's public key, {KEY}")]
    MissingPublicKey,
    /// A key's text is not a key (the text itself is never kept).
    #[error("{0}, expected {KEY}")]
    Key(KeyError),
    #[error("`{0}` is not an IP address; expected {ADDRESS}")]
    Address(String),
    #[error("`{0}` is neither an IP address nor a domain name; expected {DNS}")]
    Dns(String),
    #[error("`{0}` is not a usable MTU; expected {MTU}")]
    Mtu(String),
    #[error("`{0}` is not an IP address; expected {CHECK_ALIVE}")]
    CheckAlive(String),
    #[error("`{0}` is not an interval; expected {CHECK_ALIVE_INTERVAL}")]
    CheckAliveInterval(String),
    /// `CheckAliveInterval` with no `CheckAlive` to use it (wireproxy
    /// refuses it too).
    #[error("set, but there is no CheckAlive; expected CheckAlive = <address to ping> with it")]
    IntervalWithoutCheckAlive,
    #[error("`{0}` is not a port; expected {PORT}")]
    ListenPort(String),
    #[error("`{0}` is not a network; expected {ALLOWED_IPS}")]
    AllowedIp(String),
    #[error("{0}")]
    Endpoint(EndpointError),
    #[error("`{0}` is not an interval; expected {KEEPALIVE}")]
    Keepalive(String),
    /// Two peers with one public key; the line of the first's header.
    #[error("the same public key as the [Peer] at line {first_line}; expected each peer once")]
    DuplicatePeer { first_line: usize },
    /// A peer whose public key is the interface's own.
    #[error(
        "this is the interface's own public key (derived from its PrivateKey); expected the \
         other side's public key"
    )]
    OwnPublicKey,
}

/// Why an endpoint was refused; each carries the text, shortened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is
pub enum EndpointError {
    #[error("`{0}` has no port; expected {ENDPOINT}")]
    NoPort(String),
    #[error("`{0}`: the port is not a number from 1 to 65535; expected {ENDPOINT}")]
    Port(String),
    #[error(
        "`{0}`: not an IP address or a host name (letters, digits, hyphens and dots, up to \
         253 characters); expected {ENDPOINT}"
    )]
    Host(String),
    #[error("`{0}`: an IPv6 address needs brackets around it; expected e.g. [2001:db8::1]:51820")]
    Ipv6NeedsBrackets(String),
}

pub(super) const KEY: &str = "a 32-byte key in base64 (44 characters)";
pub(super) const ADDRESS: &str = "addresses such as 10.0.0.2/32 or fd00::2/128, comma-separated";
pub(super) const DNS: &str =
    "DNS server addresses such as 1.1.1.1 or 2606:4700:4700::1111, or search \
                   domains such as corp.example, comma-separated";
pub(super) const MTU: &str = "a number from 576 (the smallest packet IPv4 must carry) to 65535";
pub(super) const PORT: &str = "a UDP port from 0 to 65535 (0 picks a free one)";
pub(super) const ENDPOINT: &str =
    "host:port such as 203.0.113.1:51820, [2001:db8::1]:51820 or vpn.example.com:51820";
pub(super) const ALLOWED_IPS: &str =
    "networks such as 0.0.0.0/0, 10.0.0.0/24 or fd00::/64, comma-separated";
pub(super) const CHECK_ALIVE: &str =
    "addresses to ping through the tunnel, such as 10.0.0.1 or fd00::1, comma-separated";
pub(super) const CHECK_ALIVE_INTERVAL: &str = "seconds between pings, from 1 to 65535";
pub(super) const KEEPALIVE: &str = "seconds from 1 to 65535, or 0 or off for none";

/// The keys of `[Interface]` and `[Peer]`, as spelled, and what each takes.
pub(super) const KEYS: [(&str, SectionKind, &str); 12] = [
    ("PrivateKey", SectionKind::Interface, KEY),
    ("Address", SectionKind::Interface, ADDRESS),
    ("DNS", SectionKind::Interface, DNS),
    ("MTU", SectionKind::Interface, MTU),
    ("ListenPort", SectionKind::Interface, PORT),
    ("CheckAlive", SectionKind::Interface, CHECK_ALIVE),
    (
        "CheckAliveInterval",
        SectionKind::Interface,
        CHECK_ALIVE_INTERVAL,
    ),
    ("PublicKey", SectionKind::Peer, KEY),
    ("PresharedKey", SectionKind::Peer, KEY),
    ("Endpoint", SectionKind::Peer, ENDPOINT),
    ("AllowedIPs", SectionKind::Peer, ALLOWED_IPS),
    ("PersistentKeepalive", SectionKind::Peer, KEEPALIVE),
];

/// wg-quick `[Interface]` keys a userspace client accepts and ignores.
pub(super) const IGNORED: &str = "Table PreUp PostUp PreDown PostDown SaveConfig FwMark";

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::Interface => "[Interface]",
            SectionKind::Peer => "[Peer]",
        })
    }
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

/// "did you mean X? expected one of ...", for [`ConfigErrorKind::UnknownKey`].
pub(super) fn key_hint(section: SectionKind, suggestion: Option<&str>) -> String {
    let guess = suggestion
        .map(|k| format!("did you mean {k}? "))
        .unwrap_or_default();
    let own: Vec<_> = KEYS
        .iter()
        .filter(|k| k.1 == section)
        .map(|k| k.0)
        .collect();
    let ignored = match section {
        SectionKind::Interface => {
            format!(" ({} are accepted and ignored)", IGNORED.replace(' ', ", "))
        }
        SectionKind::Peer => String::new(),
    };
    format!("{guess}expected one of {}{ignored}", own.join(", "))
}
