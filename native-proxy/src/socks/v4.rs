//! The SOCKS4 and SOCKS4a wire format, as pure functions over bytes: old
//! clients (and tools that only speak it) on the same port as SOCKS5.
//!
//! A request is `VN=4 CD DSTPORT DSTIP USERID NUL`; SOCKS4a marks a host
//! name with `DSTIP = 0.0.0.x` (x not 0) and sends the name, NUL-ended,
//! after the user id. Fields are capped at 255 bytes, so a client that
//! never sends the NUL is refused, not buffered for ever.

use std::net::{Ipv4Addr, SocketAddr};

use super::proto::{Address, Command, Parsed, ProtoError};

pub const VERSION: u8 = 4;
/// The longest user id or host name accepted, without its NUL.
const MAX_FIELD: usize = 255;

/// The reply codes of SOCKS4 (its reply's second byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Granted = 90,
    /// Rejected or failed: the only failure code a client without identd
    /// gets.
    Rejected = 91,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub address: Address,
}

/// A NUL-ended field at the start of `buf`: its bytes and the length used
/// (the NUL included).
fn field(buf: &[u8]) -> Parsed<&[u8]> {
    match buf.iter().take(MAX_FIELD + 1).position(|&b| b == 0) {
        Some(end) => Ok(Some((&buf[..end], end + 1))),
        None if buf.len() > MAX_FIELD => Err(ProtoError::TooLong),
        None => Ok(None),
    }
}

/// A SOCKS4 or SOCKS4a request. The user id is read and ignored: SOCKS4
/// has no password, so it proves nothing.
pub fn parse_request(buf: &[u8]) -> Parsed<Request> {
    match buf.first() {
        None => return Ok(None),
        Some(&VERSION) => {}
        Some(&v) => return Err(ProtoError::WrongVersion(v)),
    }
    if buf.len() < 8 {
        return Ok(None);
    }
    let port = u16::from_be_bytes([buf[2], buf[3]]);
    let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
    let Some((_user, user_len)) = field(&buf[8..])? else {
        return Ok(None);
    };
    let mut used = 8 + user_len;
    let [a, b, c, d] = ip.octets();
    let address = if a == 0 && b == 0 && c == 0 && d != 0 {
        let Some((name, name_len)) = field(&buf[used..])? else {
            return Ok(None);
        };
        used += name_len;
        let plausible = !name.is_empty()
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !plausible {
            return Err(ProtoError::BadDomain);
        }
        // Checked ASCII above.
        Address::Domain(String::from_utf8_lossy(name).into_owned(), port)
    } else {
        Address::Ip(SocketAddr::new(ip.into(), port))
    };
    let command = match buf[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        other => return Err(ProtoError::UnsupportedCommand(other)),
    };
    Ok(Some((Request { command, address }, used)))
}

/// `VN=0 CD DSTPORT DSTIP`: the address is the bound one when granted
/// (IPv4 only; zeros otherwise, which clients ignore).
pub fn encode_reply(reply: Reply, bound: SocketAddr) -> [u8; 8] {
    let (port, ip) = match bound {
        SocketAddr::V4(a) => (a.port(), a.ip().octets()),
        SocketAddr::V6(_) => (0, [0; 4]),
    };
    let p = port.to_be_bytes();
    [0, reply as u8, p[0], p[1], ip[0], ip[1], ip[2], ip[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(bytes: &[u8]) -> Request {
        for split in 0..bytes.len() {
            assert_eq!(
                parse_request(&bytes[..split]),
                Ok(None),
                "prefix of {split} bytes"
            );
        }
        let mut extra = bytes.to_vec();
        extra.extend_from_slice(b"early data");
        let (request, used) = parse_request(&extra).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        request
    }

    #[test]
    fn socks4_connect_to_an_address() {
        let r = whole(&[4, 1, 0, 80, 10, 0, 0, 5, b'b', b'o', b'b', 0]);
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.address, Address::Ip("10.0.0.5:80".parse().unwrap()));
    }

    #[test]
    fn socks4a_connect_to_a_name_with_an_empty_user_id() {
        let mut bytes = vec![4, 1, 0x01, 0xbb, 0, 0, 0, 1, 0];
        bytes.extend_from_slice(b"db.internal\0");
        let r = whole(&bytes);
        assert_eq!(r.address, Address::Domain("db.internal".into(), 443));
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(parse_request(&[5, 1, 0]), Err(ProtoError::WrongVersion(5)));
        assert_eq!(
            parse_request(&[4, 9, 0, 80, 10, 0, 0, 5, 0]),
            Err(ProtoError::UnsupportedCommand(9))
        );
        let mut name = vec![4, 1, 0, 80, 0, 0, 0, 9, 0];
        name.extend_from_slice(b"bad name\0");
        assert_eq!(parse_request(&name), Err(ProtoError::BadDomain));
        // SOCKS4a with an empty name.
        let empty = [4, 1, 0, 80, 0, 0, 0, 9, 0, 0];
        assert_eq!(parse_request(&empty), Err(ProtoError::BadDomain));
        // A user id that never ends.
        let mut endless = vec![4, 1, 0, 80, 10, 0, 0, 5];
        endless.extend(std::iter::repeat_n(b'a', 300));
        assert_eq!(parse_request(&endless), Err(ProtoError::TooLong));
    }

    #[test]
    fn replies_encode() {
        assert_eq!(
            encode_reply(Reply::Granted, "10.0.0.2:4000".parse().unwrap()),
            [0, 90, 0x0f, 0xa0, 10, 0, 0, 2]
        );
        assert_eq!(
            encode_reply(Reply::Rejected, "[::1]:1".parse().unwrap()),
            [0, 91, 0, 0, 0, 0, 0, 0]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut with_version = bytes.clone();
            with_version.insert(0, VERSION);
            for b in [&bytes, &with_version] {
                if let Ok(Some((_, used))) = parse_request(b) {
                    prop_assert!(used <= b.len());
                }
            }
        }
    }
}
