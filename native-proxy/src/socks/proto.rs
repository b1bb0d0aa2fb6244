//! The SOCKS5 wire format (RFC 1928) and username/password
//! authentication (RFC 1929), as pure functions over bytes.
//!
//! Parsers are incremental: `Ok(None)` means "need more bytes",
//! `Ok(Some((value, used)))` a whole message, `Err` bytes that can never
//! become valid. Nothing here panics or allocates more than 255 bytes per
//! field, whatever the input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const VERSION: u8 = 5;

/// What an incremental parser says: a message and the bytes it used, more
/// bytes needed (`None`), or bytes that can never become a message.
pub type Parsed<T> = Result<Option<(T, usize)>, ProtoError>;
const USER_PASS_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    NoAuth = 0x00,
    UserPass = 0x02,
    NoAcceptable = 0xff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect = 1,
    Bind = 2,
    UdpAssociate = 3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl Address {
    pub fn port(&self) -> u16 {
        match self {
            Address::Ip(a) => a.port(),
            Address::Domain(_, p) => *p,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(a) => write!(f, "{a}"),
            Address::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub address: Address,
}

#[derive(Clone, PartialEq, Eq)]
pub struct UserPass {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for UserPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPass")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Every reply code of RFC 1928, the unused ones too.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    pub frag: u8,
    pub address: Address,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("not SOCKS version 5 (version byte {0})")]
    WrongVersion(u8),
    #[error("the greeting offers no methods")]
    NoMethods,
    #[error("unsupported command {0}")]
    UnsupportedCommand(u8),
    #[error("unsupported address type {0}")]
    UnsupportedAddressType(u8),
    #[error("invalid domain name")]
    BadDomain,
    #[error("username/password subnegotiation version {0}, expected 1")]
    BadUserPassVersion(u8),
    #[error("username or password is not UTF-8")]
    NotUtf8,
    #[error("fragmented UDP datagram (FRAG {0}) is not supported")]
    Fragmented(u8),
    #[error("message too short")]
    Truncated,
    #[error("message too long")]
    TooLong,
}

impl ProtoError {
    /// The reply a server sends for this error.
    pub fn reply(&self) -> Reply {
        match self {
            ProtoError::UnsupportedCommand(_) => Reply::CommandNotSupported,
            ProtoError::UnsupportedAddressType(_) => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }
}

fn version(buf: &[u8]) -> Result<Option<()>, ProtoError> {
    match buf.first() {
        None => Ok(None),
        Some(&VERSION) => Ok(Some(())),
        Some(&v) => Err(ProtoError::WrongVersion(v)),
    }
}

/// VER NMETHODS METHODS...
pub fn parse_greeting(buf: &[u8]) -> Parsed<Greeting> {
    if version(buf)?.is_none() || buf.len() < 2 {
        return Ok(None);
    }
    let n = usize::from(buf[1]);
    if n == 0 {
        return Err(ProtoError::NoMethods);
    }
    match buf.get(2..2 + n) {
        Some(methods) => Ok(Some((
            Greeting {
                methods: methods.to_vec(),
            },
            2 + n,
        ))),
        None => Ok(None),
    }
}

pub fn method_selection(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// VER=1 ULEN UNAME PLEN PASSWD (RFC 1929).
pub fn parse_user_pass(buf: &[u8]) -> Parsed<UserPass> {
    match buf.first() {
        None => return Ok(None),
        Some(&USER_PASS_VERSION) => {}
        Some(&v) => return Err(ProtoError::BadUserPassVersion(v)),
    }
    let Some(&ulen) = buf.get(1) else {
        return Ok(None);
    };
    let ulen = usize::from(ulen);
    let Some(&plen) = buf.get(2 + ulen) else {
        return Ok(None);
    };
    let plen = usize::from(plen);
    let end = 3 + ulen + plen;
    if buf.len() < end {
        return Ok(None);
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| ProtoError::NotUtf8);
    Ok(Some((
        UserPass {
            username: text(&buf[2..2 + ulen])?,
            password: text(&buf[3 + ulen..end])?,
        },
        end,
    )))
}

pub fn user_pass_status(ok: bool) -> [u8; 2] {
    [USER_PASS_VERSION, if ok { 0 } else { 1 }]
}

/// ATYP ADDR PORT at the start of `buf`: the address and its length.
fn parse_address(buf: &[u8]) -> Parsed<Address> {
    let Some(&atyp) = buf.first() else {
        return Ok(None);
    };
    let (len, addr_len) = match atyp {
        1 => (1 + 4 + 2, 4),
        4 => (1 + 16 + 2, 16),
        3 => {
            let Some(&n) = buf.get(1) else {
                return Ok(None);
            };
            if n == 0 {
                return Err(ProtoError::BadDomain);
            }
            (2 + usize::from(n) + 2, usize::from(n))
        }
        other => return Err(ProtoError::UnsupportedAddressType(other)),
    };
    if buf.len() < len {
        return Ok(None);
    }
    let port = u16::from_be_bytes([buf[len - 2], buf[len - 1]]);
    let address = match atyp {
        1 => {
            let o: [u8; 4] = buf[1..5].try_into().map_err(|_| ProtoError::Truncated)?;
            Address::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        4 => {
            let o: [u8; 16] = buf[1..17].try_into().map_err(|_| ProtoError::Truncated)?;
            Address::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => {
            let name =
                std::str::from_utf8(&buf[2..2 + addr_len]).map_err(|_| ProtoError::BadDomain)?;
            let plausible = name.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
            });
            if !plausible {
                return Err(ProtoError::BadDomain);
            }
            Address::Domain(name.to_string(), port)
        }
    };
    Ok(Some((address, len)))
}

fn encode_address(address: &Address, out: &mut Vec<u8>) {
    match address {
        Address::Ip(SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
        }
        Address::Ip(SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
        Address::Domain(name, _) => {
            let name = &name.as_bytes()[..name.len().min(255)];
            out.push(3);
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(&address.port().to_be_bytes());
}

/// VER CMD RSV ATYP DST.ADDR DST.PORT. An unknown command is reported
/// only once the whole request has arrived, so the server can answer it
/// and close cleanly. RSV is not checked (clients are not all careful).
pub fn parse_request(buf: &[u8]) -> Parsed<Request> {
    if version(buf)?.is_none() || buf.len() < 4 {
        return Ok(None);
    }
    let Some((address, len)) = parse_address(&buf[3..])? else {
        return Ok(None);
    };
    let command = match buf[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        other => return Err(ProtoError::UnsupportedCommand(other)),
    };
    Ok(Some((Request { command, address }, 3 + len)))
}

/// VER REP RSV ATYP BND.ADDR BND.PORT
pub fn encode_reply(reply: Reply, bound: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, reply as u8, 0]);
    encode_address(&Address::Ip(bound), out);
}

/// RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA, a whole datagram. RSV is not
/// checked; FRAG other than 0 is refused (fragments are optional).
pub fn parse_udp(datagram: &[u8]) -> Result<(UdpHeader, &[u8]), ProtoError> {
    if datagram.len() < 4 {
        return Err(ProtoError::Truncated);
    }
    let frag = datagram[2];
    if frag != 0 {
        return Err(ProtoError::Fragmented(frag));
    }
    let (address, len) = parse_address(&datagram[3..])?.ok_or(ProtoError::Truncated)?;
    Ok((UdpHeader { frag, address }, &datagram[3 + len..]))
}

pub fn encode_udp_header(address: &Address, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    encode_address(address, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every strict prefix needs more bytes; the whole gives `expected`.
    fn incremental<T: PartialEq + fmt::Debug>(
        bytes: &[u8],
        parse: fn(&[u8]) -> Parsed<T>,
        expected: T,
    ) {
        for split in 0..bytes.len() {
            assert_eq!(parse(&bytes[..split]), Ok(None), "prefix of {split} bytes");
        }
        let mut extra = bytes.to_vec();
        extra.extend_from_slice(b"trailing");
        assert_eq!(parse(&extra), Ok(Some((expected, bytes.len()))));
    }

    #[test]
    fn curls_greetings_parse() {
        incremental(&[5, 1, 0], parse_greeting, Greeting { methods: vec![0] });
        incremental(
            &[5, 2, 0, 2],
            parse_greeting,
            Greeting {
                methods: vec![0, 2],
            },
        );
        assert_eq!(parse_greeting(&[5, 0]), Err(ProtoError::NoMethods));
        assert_eq!(method_selection(Method::UserPass as u8), [5, 2]);
    }

    #[test]
    fn socks4_and_garbage_are_refused_at_the_first_byte() {
        assert_eq!(parse_greeting(&[4]), Err(ProtoError::WrongVersion(4)));
        assert_eq!(
            parse_greeting(&[0x16, 3, 1]),
            Err(ProtoError::WrongVersion(0x16))
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1"),
            Err(ProtoError::WrongVersion(b'G'))
        );
    }

    #[test]
    fn user_pass_parses_and_hides_the_password() {
        let bytes = [1, 5, b'a', b'l', b'i', b'c', b'e', 3, b'p', b'w', b'!'];
        let expected = UserPass {
            username: "alice".into(),
            password: "pw!".into(),
        };
        incremental(&bytes, parse_user_pass, expected.clone());
        assert!(!format!("{expected:?}").contains("pw!"));
        assert_eq!(
            parse_user_pass(&[5, 1]),
            Err(ProtoError::BadUserPassVersion(5))
        );
        assert_eq!(parse_user_pass(&[1, 1, 0xff, 0]), Err(ProtoError::NotUtf8));
        assert_eq!(user_pass_status(false), [1, 1]);
    }

    #[test]
    fn requests_of_every_address_type() {
        let v4 = [5, 1, 0, 1, 10, 0, 0, 1, 0, 80];
        incremental(
            &v4,
            parse_request,
            Request {
                command: Command::Connect,
                address: Address::Ip("10.0.0.1:80".parse().unwrap()),
            },
        );
        let mut v6 = vec![5, 3, 0, 4];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[1, 187]);
        incremental(
            &v6,
            parse_request,
            Request {
                command: Command::UdpAssociate,
                address: Address::Ip("[2001:db8::1]:443".parse().unwrap()),
            },
        );
        let mut name = vec![5, 1, 0, 3, 11];
        name.extend_from_slice(b"example.com");
        name.extend_from_slice(&[0, 80]);
        incremental(
            &name,
            parse_request,
            Request {
                command: Command::Connect,
                address: Address::Domain("example.com".into(), 80),
            },
        );
    }

    #[test]
    fn bad_requests_name_their_reply_code() {
        let e = parse_request(&[5, 9, 0, 1, 127, 0, 0, 1, 0, 80]).unwrap_err();
        assert_eq!(
            (e, e.reply()),
            (
                ProtoError::UnsupportedCommand(9),
                Reply::CommandNotSupported
            )
        );
        assert_eq!(
            parse_request(&[5, 9, 0, 1, 127]),
            Ok(None),
            "the whole request first"
        );
        let e = parse_request(&[5, 1, 0, 7, 1, 2]).unwrap_err();
        assert_eq!(
            (e, e.reply()),
            (
                ProtoError::UnsupportedAddressType(7),
                Reply::AddressTypeNotSupported
            )
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(ProtoError::BadDomain)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 2, b'a', 0, 0, 80]),
            Err(ProtoError::BadDomain)
        );
    }

    #[test]
    fn replies_and_udp_headers_encode() {
        let mut out = Vec::new();
        encode_reply(
            Reply::ConnectionRefused,
            "0.0.0.0:0".parse().unwrap(),
            &mut out,
        );
        assert_eq!(out, [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
        for address in [
            Address::Ip("192.0.2.1:53".parse().unwrap()),
            Address::Ip("[::1]:53".parse().unwrap()),
            Address::Domain("dns.example".into(), 53),
        ] {
            let mut d = Vec::new();
            encode_udp_header(&address, &mut d);
            d.extend_from_slice(b"payload");
            let (h, payload) = parse_udp(&d).unwrap();
            assert_eq!((h.frag, h.address, payload), (0, address, &b"payload"[..]));
        }
        assert_eq!(
            parse_udp(&[0, 0, 1, 1, 1, 2, 3, 4, 0, 53]),
            Err(ProtoError::Fragmented(1))
        );
        assert_eq!(parse_udp(&[0, 0, 0, 1, 1]), Err(ProtoError::Truncated));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_or_overrun(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, n))) = parse_greeting(&bytes) { prop_assert!(n <= bytes.len()); }
            if let Ok(Some((_, n))) = parse_user_pass(&bytes) { prop_assert!(n <= bytes.len()); }
            if let Ok(Some((_, n))) = parse_request(&bytes) { prop_assert!(n <= bytes.len()); }
            let _ = parse_udp(&bytes);
        }
    }
}
