//! The line-by-line reader behind [`Config::parse`](super::Config::parse).

use super::*;

#[derive(Default)]
pub(super) struct Parser {
    current: Option<Current>,
    interface: Option<InterfaceDraft>,
    peers: Vec<PeerDraft>,
    sections: Vec<Section>,
    warnings: Vec<Warning>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Current {
    Known(SectionKind),
    Other,
}

/// Which single-valued keys a section has had, and on which line.
type Seen = Vec<(&'static str, usize)>;

#[derive(Default)]
pub(super) struct InterfaceDraft {
    line: usize,
    seen: Seen,
    private_key: Option<PrivateKey>,
    addresses: Vec<IpNet>,
    dns: Vec<IpAddr>,
    dns_search: Vec<String>,
    mtu: Option<u16>,
    listen_port: Option<u16>,
    check_alive: Vec<IpAddr>,
    check_alive_interval: Option<u16>,
}

#[derive(Default)]
pub(super) struct PeerDraft {
    line: usize,
    seen: Seen,
    public_key: Option<(PublicKey, usize)>,
    preshared_key: Option<PresharedKey>,
    endpoint: Option<Endpoint>,
    allowed_ips: Vec<IpNet>,
    persistent_keepalive: Option<u16>,
}

pub(super) fn at(line: usize, kind: ConfigErrorKind) -> ConfigError {
    let key = None;
    ConfigError { line, key, kind }
}

pub(super) fn error(line: usize, key: &str, kind: ConfigErrorKind) -> ConfigError {
    let key = Some(key.to_string());
    ConfigError { line, key, kind }
}

impl Parser {
    pub(super) fn line(&mut self, n: usize, raw: &str) -> Result<(), ConfigError> {
        let (key, value, glued) = match lex_line(raw).map_err(|kind| at(n, kind))? {
            Line::Nothing => return Ok(()),
            Line::Header(name) => return self.header(n, name),
            Line::Setting { key, value, glued } => (key, value, glued),
        };
        match (self.current, self.sections.last_mut()) {
            (Some(Current::Known(section)), _) => self.setting(n, section, key, &value),
            (Some(Current::Other), Some(section)) => {
                if let Some(mark) = glued {
                    let message = glued_comment_message(key, mark);
                    self.warnings.push(Warning { line: n, message });
                }
                section.entries.push(Entry {
                    key: key.to_string(),
                    value,
                    line: n,
                });
                Ok(())
            }
            _ => Err(at(n, ConfigErrorKind::OutsideSection)),
        }
    }

    fn header(&mut self, n: usize, name: &str) -> Result<(), ConfigError> {
        if name.eq_ignore_ascii_case("Interface") {
            if let Some(first) = &self.interface {
                let first_line = first.line;
                return Err(at(n, ConfigErrorKind::DuplicateInterface { first_line }));
            }
            let line = n;
            self.interface = Some(InterfaceDraft {
                line,
                ..Default::default()
            });
            self.current = Some(Current::Known(SectionKind::Interface));
        } else if name.eq_ignore_ascii_case("Peer") {
            self.peers.push(PeerDraft {
                line: n,
                ..Default::default()
            });
            self.current = Some(Current::Known(SectionKind::Peer));
        } else {
            let (name, entries) = (name.to_string(), Vec::new());
            self.sections.push(Section {
                name,
                line: n,
                entries,
            });
            self.current = Some(Current::Other);
        }
        Ok(())
    }

    /// A `Key = Value` line in `[Interface]` or `[Peer]`.
    fn setting(
        &mut self,
        n: usize,
        section: SectionKind,
        written: &str,
        value: &str,
    ) -> Result<(), ConfigError> {
        let known = KEYS.iter().find(|k| k.0.eq_ignore_ascii_case(written));
        let ignored = IGNORED.split(' ').find(|k| k.eq_ignore_ascii_case(written));
        let (key, expected) = match (known, ignored) {
            (Some(&(key, home, expected)), _) if home == section => (key, expected),
            (Some(&(key, belongs_in, _)), _) => {
                let kind = ConfigErrorKind::WrongSection {
                    section,
                    belongs_in,
                };
                return Err(error(n, key, kind));
            }
            (None, Some(key)) if section == SectionKind::Interface => {
                let message = ignored_message(key);
                self.warnings.push(Warning { line: n, message });
                return Ok(());
            }
            (None, Some(key)) => {
                let belongs_in = SectionKind::Interface;
                let kind = ConfigErrorKind::WrongSection {
                    section,
                    belongs_in,
                };
                return Err(error(n, key, kind));
            }
            (None, None) => return Err(unknown_key(n, section, written)),
        };
        let err = |kind| error(n, key, kind);
        let items = value.split(',').map(str::trim).filter(|s| !s.is_empty());
        if items.clone().next().is_none() {
            return Err(err(ConfigErrorKind::EmptyValue { expected }));
        }
        let seen = match section {
            SectionKind::Interface => self.interface.as_mut().map(|i| &mut i.seen),
            SectionKind::Peer => self.peers.last_mut().map(|p| &mut p.seen),
        };
        let Some(seen) = seen else {
            return Err(err(ConfigErrorKind::OutsideSection));
        };
        if !matches!(key, "Address" | "DNS" | "AllowedIPs" | "CheckAlive") {
            if let Some(&(_, first_line)) = seen.iter().find(|s| s.0 == key) {
                return Err(err(ConfigErrorKind::Repeated { first_line }));
            }
            seen.push((key, n));
        }
        let number = |kind: fn(String) -> ConfigErrorKind| {
            parse_u16(value).ok_or_else(|| err(kind(shown(value))))
        };
        let secret = |e| err(ConfigErrorKind::Key(e));
        if let (SectionKind::Interface, Some(i)) = (section, self.interface.as_mut()) {
            match key {
                "PrivateKey" => i.private_key = Some(value.parse().map_err(secret)?),
                "Address" => {
                    for item in items {
                        let bad = || err(ConfigErrorKind::Address(shown(item)));
                        i.addresses.push(parse_net(item).ok_or_else(bad)?);
                    }
                }
                "DNS" => {
                    for item in items {
                        if let Ok(ip) = item.parse() {
                            i.dns.push(ip);
                        } else if is_domain(item) {
                            i.dns_search.push(item.to_string());
                        } else {
                            return Err(err(ConfigErrorKind::Dns(shown(item))));
                        }
                    }
                }
                "CheckAlive" => {
                    for item in items {
                        let bad = || err(ConfigErrorKind::CheckAlive(shown(item)));
                        i.check_alive.push(item.parse().map_err(|_| bad())?);
                    }
                }
                "CheckAliveInterval" => match number(ConfigErrorKind::CheckAliveInterval)? {
                    0 => return Err(err(ConfigErrorKind::CheckAliveInterval(shown(value)))),
                    seconds => i.check_alive_interval = Some(seconds),
                },
                "MTU" => match number(ConfigErrorKind::Mtu)? {
                    mtu @ 576.. => i.mtu = Some(mtu),
                    _ => return Err(err(ConfigErrorKind::Mtu(shown(value)))),
                },
                _ => i.listen_port = Some(number(ConfigErrorKind::ListenPort)?),
            }
        } else if let Some(p) = self.peers.last_mut() {
            match key {
                "PublicKey" => p.public_key = Some((value.parse().map_err(secret)?, n)),
                "PresharedKey" => p.preshared_key = Some(value.parse().map_err(secret)?),
                "Endpoint" => {
                    let bad = |e| err(ConfigErrorKind::Endpoint(e));
                    p.endpoint = Some(parse_endpoint(value).map_err(bad)?);
                }
                "AllowedIPs" => {
                    for item in items {
                        let bad = || err(ConfigErrorKind::AllowedIp(shown(item)));
                        let net = parse_net(item).ok_or_else(bad)?;
                        let network = net.trunc();
                        if network != net {
                            let message =
                                format!("AllowedIPs: {net} has host bits set; using {network}");
                            self.warnings.push(Warning { line: n, message });
                        }
                        p.allowed_ips.push(network);
                    }
                }
                _ if value.eq_ignore_ascii_case("off") => p.persistent_keepalive = None,
                _ => {
                    let seconds = number(ConfigErrorKind::Keepalive)?;
                    p.persistent_keepalive = Some(seconds).filter(|&s| s != 0);
                }
            }
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Config, ConfigError> {
        let Some(draft) = self.interface else {
            return Err(at(0, ConfigErrorKind::NoInterface));
        };
        let Some(private_key) = draft.private_key else {
            let kind = ConfigErrorKind::MissingPrivateKey;
            return Err(error(draft.line, "PrivateKey", kind));
        };
        let mtu_line = draft.seen.iter().find(|s| s.0 == "MTU").map(|s| s.1);
        let has_v6 = draft.addresses.iter().any(|a| matches!(a, IpNet::V6(_)));
        if let (Some(mtu @ ..1280), Some(line), true) = (draft.mtu, mtu_line, has_v6) {
            let message = format!(
                "MTU {mtu} is below 1280, the smallest IPv6 allows; IPv6 through the tunnel \
                 will not work"
            );
            self.warnings.push(Warning { line, message });
        }
        let interval_line = draft.seen.iter().find(|s| s.0 == "CheckAliveInterval");
        if let (Some(&(_, line)), true) = (interval_line, draft.check_alive.is_empty()) {
            let kind = ConfigErrorKind::IntervalWithoutCheckAlive;
            return Err(error(line, "CheckAliveInterval", kind));
        }
        let own = private_key.public_key();
        let mut first_with_key = BTreeMap::new();
        let mut peers = Vec::with_capacity(self.peers.len());
        for p in self.peers {
            let Some((public_key, key_line)) = p.public_key else {
                let kind = ConfigErrorKind::MissingPublicKey;
                return Err(error(p.line, "PublicKey", kind));
            };
            if public_key == own {
                let kind = ConfigErrorKind::OwnPublicKey;
                return Err(error(key_line, "PublicKey", kind));
            }
            if let Some(&first_line) = first_with_key.get(&public_key) {
                let kind = ConfigErrorKind::DuplicatePeer { first_line };
                return Err(error(key_line, "PublicKey", kind));
            }
            first_with_key.insert(public_key, p.line);
            peers.push(PeerConfig {
                public_key,
                preshared_key: p.preshared_key,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips,
                persistent_keepalive: p.persistent_keepalive,
                line: p.line,
            });
        }
        self.warnings.sort_by_key(|w| w.line);
        let interface = Interface {
            private_key,
            addresses: draft.addresses,
            dns: draft.dns,
            dns_search: draft.dns_search,
            mtu: draft.mtu,
            listen_port: draft.listen_port,
            check_alive: draft.check_alive,
            check_alive_interval: draft.check_alive_interval,
            line: draft.line,
        };
        let (sections, warnings) = (self.sections, self.warnings);
        Ok(Config {
            interface,
            peers,
            sections,
            warnings,
        })
    }
}

pub(super) fn ignored_message(key: &str) -> String {
    let why = match key {
        "Table" => "sets up the system's routing, underpass does not touch it",
        "SaveConfig" => "writes the config back on shutdown, underpass does not",
        "FwMark" => "marks packets for the system's firewall, underpass does not",
        _ => "runs commands, underpass does not",
    };
    format!("ignored: {key} {why}")
}

/// The error for a key neither section has. The key is named only when it
/// looks like a key name: a pasted secret (`<base64>=`) must not be echoed.
pub(super) fn unknown_key(n: usize, section: SectionKind, written: &str) -> ConfigError {
    let printable = written.len() <= 32
        && (written.bytes()).all(|b| b.is_ascii_alphanumeric() || b"_-. ".contains(&b));
    let own = KEYS.iter().filter(|k| k.1 == section).map(|k| k.0);
    let ignored = IGNORED
        .split(' ')
        .filter(|_| section == SectionKind::Interface);
    let suggestion = (own.chain(ignored))
        .map(|name| (distance(name, written), name))
        .filter(|&(d, _)| printable && d <= 2)
        .min()
        .map(|(_, name)| name);
    let kind = ConfigErrorKind::UnknownKey {
        section,
        suggestion,
    };
    let key = printable.then(|| written.to_string());
    ConfigError { line: n, key, kind }
}

/// Edit distance, ignoring ASCII case.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<u8> = b.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().map(|c| c.to_ascii_lowercase()).enumerate() {
        let mut row = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let replace = previous[j] + usize::from(ca != cb);
            row.push(replace.min(previous[j + 1] + 1).min(row[j] + 1));
        }
        previous = row;
    }
    previous[b.len()]
}

pub(super) fn glued_comment_message(key: &str, mark: char) -> String {
    format!(
        "{}: `{mark}` starts a comment, as in wireproxy, so the value ends before it; \
         to keep the `{mark}`, write the value in backquotes: {} = `...`",
        shown(key),
        shown(key)
    )
}

/// A value for an error message: at most 40 characters, control characters
/// escaped. Never used for secrets, and in case one was pasted where it does
/// not belong, anything with a long base64-like run is not shown at all.
pub(super) fn shown(value: &str) -> String {
    let mut run = 0;
    for b in value.bytes() {
        run = if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' {
            run + 1
        } else {
            0
        };
        if run >= 40 {
            return "<not shown: looks like a key>".to_string();
        }
    }
    let mut out = String::new();
    for c in value.chars().take(40) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if value.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

pub(super) fn parse_u16(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

/// `10.0.0.2/24`, or a bare address as a host route (/32 or /128).
pub(super) fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens,
/// up to 253 characters, not ending in a number (so `10.0.0.300` is a
/// mistyped address, not a name). One trailing dot is allowed.
pub(super) fn is_domain(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let last_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    name.len() <= 253 && name.split('.').all(label_ok) && !last_numeric
}
