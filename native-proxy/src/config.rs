//! The configuration users write: wg-quick plus wireproxy's sections, so a
//! wireproxy config runs unchanged.
//!
//! Before core parses the text, two wireproxy features are applied line by
//! line, each line remembering where it came from: `WGConfig = path` at the
//! top imports a wg-quick file, and a value `$NAME` or `${NAME}` comes from
//! the environment (`$$` at the start of a value is a literal `$`). Values
//! are read by core's lexer (`lex_line`), as wireproxy reads them. Every error
//! names the file, the line and the key, and never quotes a value that may
//! be a secret. What each role makes of the sections is the `wireproxy`
//! module's.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use underpass_core::config::{Config, Section};

pub use crate::tls::TlsFiles;

mod source;
#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
mod wireproxy;

use source::{assemble, read, Source};
pub use source::{exposure_warning, read_capped};
pub use wireproxy::{FoundSection, ResolveStrategy};

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub wg: Config,
    pub socks5: Vec<ProxyListener>,
    pub http: Vec<ProxyListener>,
    pub tcp_client_tunnels: Vec<TcpClientTunnel>,
    pub tcp_server_tunnels: Vec<TcpServerTunnel>,
    pub udp_proxy_tunnels: Vec<UdpProxyTunnel>,
    pub stdio_tunnels: Vec<StdioTunnel>,
    pub sni: Vec<SniProxy>,
    pub gateway: GatewaySection,
    /// `[Resolve] ResolveStrategy`: which address family of a name is
    /// tried first.
    pub resolve: ResolveStrategy,
    /// Every section, where it is: the checks by role look at them.
    pub found: Vec<FoundSection>,
    /// Formatted `FILE:LINE: message`.
    pub warnings: Vec<String>,
    /// Environment variables whose values the config took as a key or a
    /// password (`PrivateKey = $WG_KEY`): `exec` keeps them from the
    /// command.
    pub secret_vars: Vec<String>,
}

/// A `[Socks5]` or `[http]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyListener {
    pub bind: SocketAddr,
    pub auth: Option<Credentials>,
    /// `[http] CertFile`/`KeyFile`: the proxy speaks HTTPS.
    pub tls: Option<TlsFiles>,
}

/// An `[SNI]` section: a transparent TLS proxy. Each connection goes to
/// the name its ClientHello asks for, on `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniProxy {
    pub bind: SocketAddr,
    /// `TargetPort`, 443 unless set (wireproxy has no such key and always
    /// uses 443).
    pub port: u16,
    pub line: usize,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// Whether a client gave these credentials. Both halves are compared
    /// in constant time, and both always, so timing tells an attacker
    /// neither which half was wrong nor how much of it matched.
    pub fn matches(&self, username: impl AsRef<[u8]>, password: impl AsRef<[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        let user = self.username.as_bytes().ct_eq(username.as_ref());
        let pass = self.password.as_bytes().ct_eq(password.as_ref());
        (user & pass).into()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where a forward goes: a host name or address literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpClientTunnel {
    pub bind: SocketAddr,
    pub target: Target,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpServerTunnel {
    pub listen_port: u16,
    pub target: Target,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpProxyTunnel {
    pub bind: SocketAddr,
    pub target: Target,
    /// `None`: never (`InactivityTimeout = 0`, as in wireproxy).
    pub inactivity_timeout: Option<Duration>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioTunnel {
    pub target: Target,
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySection {
    /// `None`: not configured; the gateway applies its default.
    pub allowed_destinations: Option<Vec<IpNet>>,
    /// `PeerToPeer = true`: a peer's packets to another peer's tunnel
    /// address are forwarded to it (off by default: peers sharing a
    /// gateway need not know each other).
    pub peer_to_peer: bool,
}

/// A configuration that could not be loaded. Displays as
/// `FILE:LINE: KEY: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

const DEFAULT_UDP_INACTIVITY: Duration = Duration::from_secs(180);
const SECTIONS: &str = "Interface, Peer, Socks5, http, TCPClientTunnel, TCPServerTunnel, UDPProxyTunnel, STDIOTunnel, SNI, Resolve, Gateway";

impl ProxyConfig {
    /// A config the program wrote itself (quickstart, the relay's demo):
    /// no files around it, no `$VAR`; an error is a usage error.
    pub fn generated(text: &str, name: &str) -> Result<ProxyConfig, crate::Failure> {
        Self::from_text(text, name, Path::new("."), &|_| None).map_err(crate::Failure::usage)
    }

    /// Reads `path`, follows `WGConfig =`, expands `$VAR`, parses, checks.
    pub fn load(path: &Path) -> Result<ProxyConfig, LoadError> {
        let text = read(path).map_err(|e| LoadError {
            file: path.to_path_buf(),
            line: 0,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Self::from_text(&text, &path.display().to_string(), base, &|name| {
            std::env::var(name).ok()
        })?;
        // Only a file has a mode: text from stdin or the environment is
        // not checked (its imports are).
        cfg.warnings.extend(exposure_warning(path, &text));
        Ok(cfg)
    }

    /// The same from text in memory (stdin, an environment variable);
    /// `name` stands for the file in messages.
    pub fn from_text(
        text: &str,
        name: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProxyConfig, LoadError> {
        let source = assemble(text, Path::new(name), base_dir, env)?;
        let wg = Config::parse(&source.text).map_err(|e| {
            let mut err = source.error(e.line, e.key.as_deref(), e.kind.to_string());
            if e.line == 0 {
                err.file = PathBuf::from(name);
            }
            err
        })?;
        let mut cfg = ProxyConfig {
            warnings: wg
                .warnings
                .iter()
                .map(|w| {
                    let (file, line) = source.origin(w.line);
                    format!("{}:{line}: {}", file.display(), w.message)
                })
                .collect(),
            secret_vars: source.secret_vars.clone(),
            wg: wg.clone(),
            socks5: Vec::new(),
            http: Vec::new(),
            tcp_client_tunnels: Vec::new(),
            tcp_server_tunnels: Vec::new(),
            udp_proxy_tunnels: Vec::new(),
            stdio_tunnels: Vec::new(),
            sni: Vec::new(),
            gateway: GatewaySection::default(),
            resolve: ResolveStrategy::default(),
            found: wireproxy::found_sections(&wg, &source),
        };
        cfg.warnings.extend(source.exposed.iter().cloned());
        let mut gateway_line = None;
        for section in &wg.sections {
            let s = Reader {
                section,
                source: &source,
            };
            match section.name.to_ascii_lowercase().as_str() {
                "socks5" | "http" => {
                    let is_http = section.name.eq_ignore_ascii_case("http");
                    if is_http {
                        s.only(&["BindAddress", "Username", "Password", "CertFile", "KeyFile"])?;
                    } else {
                        s.only(&["BindAddress", "Username", "Password"])?;
                    }
                    let listener = ProxyListener {
                        bind: s.bind()?,
                        auth: s.credentials()?,
                        tls: if is_http {
                            s.tls_files(base_dir)?
                        } else {
                            None
                        },
                    };
                    if listener.auth.is_none() && !listener.bind.ip().is_loopback() {
                        let (file, line) = source.origin(section.line);
                        cfg.warnings.push(format!(
                            "{}:{line}: open proxy on {} without Username/Password: anyone who can reach it can use the tunnel",
                            file.display(),
                            listener.bind
                        ));
                    }
                    if section.name.eq_ignore_ascii_case("socks5") {
                        cfg.socks5.push(listener);
                    } else {
                        cfg.http.push(listener);
                    }
                }
                "tcpclienttunnel" => {
                    s.only(&["BindAddress", "Target"])?;
                    cfg.tcp_client_tunnels.push(TcpClientTunnel {
                        bind: s.bind()?,
                        target: s.target()?,
                        line: source.origin(section.line).1,
                    });
                }
                "tcpservertunnel" => {
                    s.only(&["ListenPort", "Target"])?;
                    cfg.tcp_server_tunnels.push(TcpServerTunnel {
                        listen_port: s.number("ListenPort", 1, 65535)? as u16,
                        target: s.target()?,
                        line: source.origin(section.line).1,
                    });
                }
                "udpproxytunnel" => {
                    s.only(&["BindAddress", "Target", "InactivityTimeout"])?;
                    let timeout = match s.optional("InactivityTimeout") {
                        Some(_) => match s.number("InactivityTimeout", 0, 86_400)? {
                            0 => None,
                            seconds => Some(Duration::from_secs(seconds)),
                        },
                        None => Some(DEFAULT_UDP_INACTIVITY),
                    };
                    cfg.udp_proxy_tunnels.push(UdpProxyTunnel {
                        bind: s.bind()?,
                        target: s.target()?,
                        inactivity_timeout: timeout,
                        line: source.origin(section.line).1,
                    });
                }
                "sni" => {
                    s.only(&["BindAddress", "TargetPort"])?;
                    let bind = s.bind()?;
                    if !bind.ip().is_loopback() {
                        let (file, line) = source.origin(section.line);
                        cfg.warnings.push(format!(
                            "{}:{line}: [SNI] on {bind} has no credentials (TLS cannot carry them): anyone who can reach it can reach any TLS service through the tunnel",
                            file.display()
                        ));
                    }
                    cfg.sni.push(SniProxy {
                        bind,
                        port: match s.optional("TargetPort") {
                            Some(_) => s.number("TargetPort", 1, 65535)? as u16,
                            None => 443,
                        },
                        line: source.origin(section.line).1,
                    });
                }
                "stdiotunnel" => {
                    s.only(&["Target"])?;
                    cfg.stdio_tunnels.push(StdioTunnel {
                        target: s.target()?,
                        line: source.origin(section.line).1,
                    });
                }
                "resolve" => cfg.resolve = wireproxy::resolve_section(&s)?,
                "gateway" => {
                    if let Some(first) = gateway_line {
                        return Err(source.error(
                            section.line,
                            None,
                            format!("a second [Gateway] section (the first is on line {first})"),
                        ));
                    }
                    gateway_line = Some(source.origin(section.line).1);
                    s.only(&["AllowedDestinations", "PeerToPeer"])?;
                    cfg.gateway.peer_to_peer = s.boolean("PeerToPeer")?;
                    let mut nets = Vec::new();
                    let mut listed = false;
                    for entry in section.get_all("AllowedDestinations") {
                        listed = true;
                        for item in entry
                            .value
                            .split(',')
                            .map(str::trim)
                            .filter(|v| !v.is_empty())
                        {
                            let net = item
                                .parse::<IpNet>()
                                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                                .map_err(|_| {
                                    source.error(
                                        entry.line,
                                        Some("AllowedDestinations"),
                                        format!("`{}` is not a network; expected e.g. 10.0.0.0/8 or 0.0.0.0/0", shown(item)),
                                    )
                                })?;
                            nets.push(net.trunc());
                        }
                    }
                    if listed {
                        cfg.gateway.allowed_destinations = Some(nets);
                    }
                }
                _ => {
                    return Err(source.error(
                        section.line,
                        None,
                        format!(
                            "unknown section [{}]; expected one of: {SECTIONS}",
                            shown(&section.name)
                        ),
                    ))
                }
            }
        }
        // Core's wireguard-level config without the sections we consumed.
        cfg.wg.sections.clear();
        Ok(cfg)
    }
}

fn shown(value: &str) -> String {
    match value.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

/// Reads one proxy section, with errors pointing into the source.
struct Reader<'a> {
    section: &'a Section,
    source: &'a Source,
}

impl Reader<'_> {
    fn err(&self, line: usize, key: &str, message: impl Into<String>) -> LoadError {
        self.source.error(line, Some(key), message)
    }

    /// Refuses keys this section does not have.
    fn only(&self, valid: &[&str]) -> Result<(), LoadError> {
        for e in &self.section.entries {
            if !valid.iter().any(|k| k.eq_ignore_ascii_case(&e.key)) {
                return Err(self.err(
                    e.line,
                    &e.key,
                    format!(
                        "unknown key in [{}]; expected one of: {}",
                        self.section.name,
                        valid.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn optional(&self, key: &str) -> Option<&underpass_core::config::Entry> {
        self.section.get(key)
    }

    fn required(&self, key: &str) -> Result<&underpass_core::config::Entry, LoadError> {
        self.section.get(key).ok_or_else(|| {
            self.source.error(
                self.section.line,
                None,
                format!("[{}] needs {key}", self.section.name),
            )
        })
    }

    fn bind(&self) -> Result<SocketAddr, LoadError> {
        let e = self.required("BindAddress")?;
        parse_bind(&e.value).ok_or_else(|| {
            self.err(
                e.line,
                "BindAddress",
                format!(
                    "`{}` is not an address and port; expected e.g. 127.0.0.1:1080, [::1]:1080 or :1080 (every address)",
                    shown(&e.value)
                ),
            )
        })
    }

    fn target(&self) -> Result<Target, LoadError> {
        let e = self.required("Target")?;
        parse_target(&e.value).ok_or_else(|| {
            self.err(
                e.line,
                "Target",
                format!("`{}` is not host:port; expected e.g. 10.0.0.5:22, [fd00::5]:22 or db.internal:5432", shown(&e.value)),
            )
        })
    }

    fn number(&self, key: &str, min: u64, max: u64) -> Result<u64, LoadError> {
        let e = self.required(key)?;
        match e.value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(
                e.line,
                key,
                format!(
                    "`{}` is out of range; expected a whole number from {min} to {max}",
                    shown(&e.value)
                ),
            )),
        }
    }

    /// `CertFile` and `KeyFile` of an `[http]` section (relative to the
    /// config's directory, as `WGConfig`), read and checked now: a bad
    /// file is a config error naming it.
    fn tls_files(&self, base_dir: &Path) -> Result<Option<TlsFiles>, LoadError> {
        let (cert, key) = match (self.optional("CertFile"), self.optional("KeyFile")) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(e), None) | (None, Some(e)) => {
                return Err(self.err(
                    e.line,
                    &e.key,
                    "CertFile and KeyFile go together; give both (an HTTPS proxy) or neither",
                ))
            }
        };
        let files = TlsFiles {
            cert: base_dir.join(&cert.value),
            key: base_dir.join(&key.value),
        };
        crate::tls::server_config(&files).map_err(|e| {
            let line = if e.key == "CertFile" {
                cert.line
            } else {
                key.line
            };
            self.err(line, e.key, e.message)
        })?;
        Ok(Some(files))
    }

    /// An optional yes-or-no key; absent is no.
    fn boolean(&self, key: &str) -> Result<bool, LoadError> {
        let Some(e) = self.optional(key) else {
            return Ok(false);
        };
        match e.value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(self.err(
                e.line,
                key,
                format!(
                    "`{}` is not a yes or no; expected true or false",
                    shown(&e.value)
                ),
            )),
        }
    }

    fn credentials(&self) -> Result<Option<Credentials>, LoadError> {
        match (self.optional("Username"), self.optional("Password")) {
            (None, None) => Ok(None),
            (Some(u), Some(p)) => Ok(Some(Credentials {
                username: u.value.clone(),
                password: p.value.clone(),
            })),
            (Some(e), None) | (None, Some(e)) => Err(self.err(
                e.line,
                &e.key,
                "Username and Password go together; give both or neither",
            )),
        }
    }
}

/// `ip:port`, `[v6]:port`, `localhost:port` (127.0.0.1), or `:port`:
/// every address, IPv4 and IPv6 (as Go, and so wireproxy, reads it).
pub(crate) fn parse_bind(value: &str) -> Option<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(addr);
    }
    if let Some(port) = value.strip_prefix(':') {
        let port = port.parse::<u16>().ok()?;
        return Some(SocketAddr::new(
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            port,
        ));
    }
    let (host, port) = value.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    host.eq_ignore_ascii_case("localhost")
        .then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

fn parse_target(value: &str) -> Option<Target> {
    let (host, port) = value.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    (host.parse::<IpAddr>().is_ok() || valid_name).then(|| Target {
        host: host.to_string(),
        port,
    })
}
