//! Entry points for the fuzz targets in `fuzz/` and for the replay of
//! their corpus in the tests: each takes any bytes and must return
//! without panicking, whatever they are.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use rand::SeedableRng;
use underpass_core::{Instant, Node, NodeOptions, PeerOptions, PrivateKey, Received};

use crate::config::{Credentials, ProxyConfig};
use crate::http_proxy;
use crate::socks::proto;

/// Splits fuzz input into datagrams: a length byte, then that many bytes.
fn datagrams(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = data.split_first()?;
        let n = usize::from(len).min(rest.len());
        let (d, rest) = rest.split_at(n);
        data = rest;
        Some(d)
    })
}

fn node(seed: u8, peer: &PrivateKey, endpoint: Option<SocketAddr>) -> Node {
    let mut options = PeerOptions::new(peer.public_key());
    options.endpoint = endpoint;
    options.allowed_ips = vec!["0.0.0.0/0".parse().unwrap()];
    let mut node = Node::new(
        PrivateKey::from_bytes([seed; 32]),
        NodeOptions::default(),
        Box::new(rand::rngs::StdRng::seed_from_u64(u64::from(seed))),
        Instant::ZERO,
        Duration::from_secs(1_700_000_000),
    );
    node.add_peer(options, Instant::ZERO)
        .expect("a fixed, valid key");
    node
}

/// A responder holding a confirmed session, and a real transport message
/// of that session.
struct Responder {
    node: Node,
    peer_addr: SocketAddr,
    real_data: Vec<u8>,
    now: Instant,
}

impl Responder {
    /// A real handshake and one data packet. Costly (Diffie-Hellman under
    /// coverage instrumentation), so done once per thread: inputs cannot
    /// forge MACs or AEAD tags, so they change little state but the clock
    /// and the load counters.
    fn new() -> Responder {
        let a_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let b_addr: SocketAddr = "192.0.2.2:51820".parse().unwrap();
        let (a_key, b_key) = (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        );
        let mut a = node(1, &b_key, Some(b_addr));
        let mut b = node(2, &a_key, None);
        let now = Instant::ZERO;
        let packet = [
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let _ = a.handle_ip_packet(now, &packet);
        let mut real_data = Vec::new();
        for _ in 0..3 {
            while let Some(t) = a.poll_transmit(1) {
                let mut d = t.contents.to_vec();
                a.advance_transmit(1);
                if d.first() == Some(&4) {
                    real_data = d.clone();
                }
                let _ = b.handle_datagram(now, a_addr, &mut d);
            }
            while let Some(t) = b.poll_transmit(1) {
                let mut d = t.contents.to_vec();
                b.advance_transmit(1);
                let _ = a.handle_datagram(now, b_addr, &mut d);
            }
        }
        assert!(real_data.len() >= 16, "the handshake completed");
        Responder {
            node: b,
            peer_addr: a_addr,
            real_data,
            now,
        }
    }
}

thread_local! {
    static RESPONDER: std::cell::RefCell<Responder> = std::cell::RefCell::new(Responder::new());
}

/// WireGuard datagrams from the peer's address to a responder with an
/// established session: handshake messages, cookie replies and transport
/// data. Datagrams whose first byte is 4 are also spliced onto a real
/// transport header, so session lookup and the replay window see them.
pub fn wire(data: &[u8]) {
    RESPONDER.with_borrow_mut(|r| {
        for d in datagrams(data) {
            r.now += Duration::from_millis(1);
            let (now, from) = (r.now, r.peer_addr);
            let mut bytes = d.to_vec();
            feed(&mut r.node, now, from, &mut bytes);
            if d.first() == Some(&4) {
                let mut spliced = r.real_data[..16].to_vec();
                spliced.extend_from_slice(&d[1..]);
                feed(&mut r.node, now, from, &mut spliced);
            }
            r.node.handle_timeout(now);
            while r.node.poll_transmit(64).is_some() {
                r.node.advance_transmit(64);
            }
        }
    });
}

fn feed(node: &mut Node, now: Instant, from: SocketAddr, bytes: &mut [u8]) {
    if let Ok(Received::Packet { packet, .. }) = node.handle_datagram(now, from, bytes) {
        // What comes out must be what the header says it is.
        assert!(
            packet.len() >= 20,
            "a delivered packet shorter than an IP header"
        );
    }
}

/// The SOCKS5 parsers, in the order the server runs them, and the UDP
/// relay's header parser.
pub fn socks(data: &[u8]) {
    let mut rest = data;
    if let Ok(Some((_, used))) = proto::parse_greeting(rest) {
        rest = &rest[used..];
        if let Ok(Some((_, used))) = proto::parse_user_pass(rest) {
            rest = &rest[used..];
        }
        if let Ok(Some((request, used))) = proto::parse_request(rest) {
            assert!(used <= rest.len());
            let mut out = Vec::new();
            proto::encode_udp_header(&request.address, &mut out);
            let (header, payload) = proto::parse_udp(&out).expect("our own header parses");
            assert_eq!(header.address, request.address);
            assert!(payload.is_empty());
        }
    }
    let _ = proto::parse_request(data);
    let _ = proto::parse_user_pass(data);
    let _ = proto::parse_udp(data);
    if let Ok(Some((_, used))) = crate::socks::v4::parse_request(data) {
        assert!(used <= data.len());
    }
}

/// The start of a TLS connection, as the SNI proxy reads it: a host name
/// found is a valid one.
pub fn tls_hello(data: &[u8]) {
    if let crate::sni::Hello::Name(name) = crate::sni::client_hello_name(data) {
        assert!(!name.is_empty() && name.len() <= 253 && name.is_ascii());
    }
}

/// An HTTP request head as hyper would parse it, then the proxy's routing
/// and credential check on it.
pub fn http_request(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), path.parse::<Uri>()) else {
        return;
    };
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    let creds = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    let open = http_proxy::route(&method, &uri, &map, None);
    let closed = http_proxy::route(&method, &uri, &map, Some(&creds));
    // Credentials can only take away, never grant.
    if open.is_err() {
        assert!(closed.is_err(), "credentials let through what was refused");
    }
}

/// The config reader: wg-quick, wireproxy's sections, `$VAR`s.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "FUZZ").then(|| "value".to_string());
    if let Err(e) = ProxyConfig::from_text(text, "fuzz.conf", Path::new("/nonexistent"), &env) {
        let _ = e.to_string();
    }
}
