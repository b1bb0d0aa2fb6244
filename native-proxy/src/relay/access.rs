//! Who may use `/relay` and `/demo`: the token, and pages of the relay's
//! own origin or of an `--allow-origin`.
//!
//! Without these checks any web page can use the relay: a WebSocket is not
//! subject to the same-origin policy (the browser only sends `Origin`),
//! and a page that rebinds its own DNS name to the relay's address reads
//! `/demo` as if it were its own. The rebound page's requests still carry
//! its name in `Host`, so `Host` must be a name the relay knows as its
//! own: an IP literal, `localhost`, or the host of an `--allow-origin`.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::log_limit::LogLimit;

/// What a page puts in the query of `/relay` or `/demo`.
#[derive(Debug, Default)]
pub struct Query {
    pub endpoint: Option<String>,
    pub token: Option<String>,
    /// WebTransport only: how the page wants its downloads
    /// (`underpass.batch.v1`: on a stream; absent: as QUIC datagrams).
    pub download: Option<String>,
}

/// A page origin, `scheme://host:port`, compared without case and with
/// the scheme's default port filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `http://host[:port]` or `https://...` (an `Origin` header, or
    /// an `--allow-origin` value, which may end in `/`).
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad =
            || format!("{text:?} is not an origin (http://HOST[:PORT] or https://HOST[:PORT])");
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_host(rest).ok_or_else(bad)?;
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        Ok(Origin {
            scheme,
            host: normal_host(host),
            port: port.unwrap_or(default_port),
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{host}:{}", self.scheme, self.port)
    }
}

/// `host[:port]` (IPv6 in brackets) into the host and the port.
fn split_host(text: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// The host name of a `Host` header value (`name[:port]`, IPv6 without
/// brackets), normalised; `None` when it is not one.
pub fn host_name(text: &str) -> Option<String> {
    split_host(text).map(|(name, _)| normal_host(name))
}

/// Lower case, without the trailing dot of a fully qualified name.
fn normal_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Printable, short, for logs and refusals: header values are the
/// client's.
pub fn shown(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(100)
        .collect()
}

/// Why a request was refused; its response and log line never contain
/// the token.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` is a name the relay does not know as its own.
    Host(String),
    /// The page's origin is neither the relay's nor allowed.
    Origin(String),
    /// A query parameter named twice: a proxy in front might check one
    /// and the relay use the other.
    Repeated(&'static str),
    Token,
}

impl Refusal {
    pub fn response(&self) -> Response {
        let (status, text) = match self {
            Refusal::Host(host) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Host {host} is not a name of this relay; if it is, start the relay with --allow-origin http(s)://{host}\n"
                ),
            ),
            Refusal::Origin(origin) => (
                StatusCode::FORBIDDEN,
                format!(
                    "a page from {origin} may not use this relay; to allow it, start the relay with --allow-origin {origin}\n"
                ),
            ),
            Refusal::Repeated(name) => (
                StatusCode::BAD_REQUEST,
                format!("the query names {name} more than once\n"),
            ),
            Refusal::Token => (
                StatusCode::UNAUTHORIZED,
                "wrong or missing token (?token=)\n".to_string(),
            ),
        };
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response()
    }

    fn reason(&self) -> String {
        match self {
            Refusal::Host(host) => format!("Host {host} is not a name of this relay"),
            Refusal::Origin(origin) => format!("Origin {origin} is not allowed"),
            Refusal::Repeated(name) => format!("{name} given more than once"),
            Refusal::Token => "wrong or missing token".into(),
        }
    }
}

/// The relay's rules for `/relay` and `/demo`.
pub struct Access {
    token: Option<String>,
    origins: Vec<Origin>,
    log: LogLimit,
}

impl Access {
    pub fn new(token: Option<String>, origins: Vec<Origin>) -> Access {
        Access {
            token: token.filter(|t| !t.is_empty()),
            origins,
            log: LogLimit::default(),
        }
    }

    /// Everything a request to `path` must pass before it is answered:
    /// `Host`, `Origin`, the query, the token. A refusal is logged (at
    /// most every 10 s); its `response` is the answer.
    pub fn check(
        &self,
        path: &str,
        client: SocketAddr,
        headers: &HeaderMap,
        raw_query: Option<&str>,
    ) -> Result<Query, Refusal> {
        let result = self
            .page(headers)
            .and_then(|()| parse_query(raw_query))
            .and_then(|q| self.token(q.token.as_deref()).map(|()| q));
        result.inspect_err(|refusal| {
            if let Some(more) = self.log.pass() {
                tracing::info!(
                    %client,
                    more_since_last = more,
                    "relay: refused {path}: {}",
                    refusal.reason()
                );
            }
        })
    }

    /// `Host` must be one of the relay's names; `Origin`, when a browser
    /// sends one, the relay's own (the same as `Host`) or an allowed one.
    fn page(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = match headers.get(header::HOST) {
            None => None,
            Some(v) => {
                let text = v.to_str().map_err(|_| Refusal::Host("?".into()))?;
                let (name, port) = split_host(text).ok_or_else(|| Refusal::Host(shown(text)))?;
                if !self.is_own_name(name) {
                    return Err(Refusal::Host(shown(text)));
                }
                Some((normal_host(name), port))
            }
        };
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let text = origin.to_str().map_err(|_| Refusal::Origin("?".into()))?;
        let origin = Origin::parse(text).map_err(|_| Refusal::Origin(shown(text)))?;
        if self.origins.contains(&origin) {
            return Ok(());
        }
        let same = host.is_some_and(|(name, port)| {
            let default = if origin.scheme == "https" { 443 } else { 80 };
            name == origin.host && port.unwrap_or(default) == origin.port
        });
        if same {
            Ok(())
        } else {
            Err(Refusal::Origin(shown(text)))
        }
    }

    /// An IP literal (no DNS name to rebind), `localhost` (browsers keep it
    /// on loopback) or the host of an `--allow-origin`.
    fn is_own_name(&self, name: &str) -> bool {
        let name = normal_host(name);
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || self.origins.iter().any(|o| o.host == name)
    }

    fn token(&self, given: Option<&str>) -> Result<(), Refusal> {
        match &self.token {
            None => Ok(()),
            // Constant time: timing says nothing about how much matched.
            Some(t) if given.is_some_and(|g| g.as_bytes().ct_eq(t.as_bytes()).into()) => Ok(()),
            Some(_) => Err(Refusal::Token),
        }
    }
}

/// Reads `endpoint`, `token` and `download` from the raw query string;
/// any of them named twice is refused.
pub fn parse_query(raw: Option<&str>) -> Result<Query, Refusal> {
    let mut q = Query::default();
    for pair in raw.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (slot, name) = match key {
            "endpoint" => (&mut q.endpoint, "endpoint"),
            "token" => (&mut q.token, "token"),
            "download" => (&mut q.download, "download"),
            _ => continue,
        };
        if slot.is_some() {
            return Err(Refusal::Repeated(name));
        }
        *slot = Some(percent_decode(value));
    }
    Ok(q)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn access(origins: &[&str]) -> Access {
        Access::new(
            None,
            origins.iter().map(|o| Origin::parse(o).unwrap()).collect(),
        )
    }

    #[test]
    fn queries_decode_and_refuse_repeats() {
        let q = parse_query(Some("endpoint=127.0.0.1%3A51820&token=a%2Bb+c&x=1")).unwrap();
        assert_eq!(q.endpoint.as_deref(), Some("127.0.0.1:51820"));
        assert_eq!(q.token.as_deref(), Some("a+b c"));
        assert!(q.download.is_none());
        let q = parse_query(Some("download=underpass.batch.v1&endpoint=e")).unwrap();
        assert_eq!(q.download.as_deref(), Some("underpass.batch.v1"));
        assert_eq!(
            parse_query(Some("download=a&download=a")).unwrap_err(),
            Refusal::Repeated("download")
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%E2%9C%93"), "\u{2713}");
        assert!(parse_query(None).unwrap().endpoint.is_none());
        assert_eq!(
            parse_query(Some("token=a&token=b")).unwrap_err(),
            Refusal::Repeated("token")
        );
        assert_eq!(
            parse_query(Some("token=a&endpoint=x&token")).unwrap_err(),
            Refusal::Repeated("token")
        );
        assert_eq!(
            parse_query(Some("endpoint=a&endpoint=a")).unwrap_err(),
            Refusal::Repeated("endpoint")
        );
    }

    #[test]
    fn tokens_compare_whole() {
        let a = Access::new(Some("secret".into()), vec![]);
        assert!(a.token(Some("secret")).is_ok());
        assert_eq!(a.token(Some("secreT")), Err(Refusal::Token));
        assert_eq!(a.token(Some("secret2")), Err(Refusal::Token));
        assert_eq!(a.token(Some("secre")), Err(Refusal::Token));
        assert_eq!(a.token(None), Err(Refusal::Token));
        assert!(Access::new(Some(String::new()), vec![]).token(None).is_ok());
    }

    #[test]
    fn the_relays_own_pages_pass() {
        let a = access(&[]);
        for (host, origin) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("localhost:8080", "http://localhost:8080"),
            ("[::1]:8080", "http://[::1]:8080"),
            ("192.0.2.1", "http://192.0.2.1"),
            ("192.0.2.1", "https://192.0.2.1:443"),
        ] {
            let h = headers(&[("host", host), ("origin", origin)]);
            assert_eq!(a.page(&h), Ok(()), "{host} {origin}");
        }
        // Tools send no Origin.
        assert_eq!(a.page(&headers(&[("host", "127.0.0.1:8080")])), Ok(()));
        assert_eq!(a.page(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn other_pages_and_rebound_names_are_refused() {
        let a = access(&["https://app.example"]);
        // Another site's page opening the relay.
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(matches!(a.page(&h), Err(Refusal::Origin(_))));
        // Same host, other port: another origin.
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:9090"),
        ]);
        assert!(matches!(a.page(&h), Err(Refusal::Origin(_))));
        let h = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(matches!(a.page(&h), Err(Refusal::Origin(_))));
        // DNS rebinding: the page's own name, same origin.
        let h = headers(&[
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ]);
        assert!(matches!(a.page(&h), Err(Refusal::Host(_))));
        assert!(matches!(
            a.page(&headers(&[("host", "evil.example:8080")])),
            Err(Refusal::Host(_))
        ));
        // An allowed origin, and the allowed name as Host.
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://APP.example"),
        ]);
        assert_eq!(a.page(&h), Ok(()));
        let h = headers(&[("host", "app.example"), ("origin", "https://app.example")]);
        assert_eq!(a.page(&h), Ok(()));
    }

    #[test]
    fn origins_parse() {
        let o = Origin::parse("HTTPS://Relay.Example/").unwrap();
        assert_eq!(o.to_string(), "https://relay.example:443");
        assert_eq!(
            Origin::parse("http://[::1]:8080").unwrap().to_string(),
            "http://[::1]:8080"
        );
        for bad in [
            "relay.example",
            "ftp://x",
            "http://",
            "http://a/b",
            "http://a:99999",
            "null",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }
}
