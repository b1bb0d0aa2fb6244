//! A SOCKS5 client small enough to see every byte: the tests that check
//! replies and refusals speak the protocol themselves rather than through
//! curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A SOCKS5 request for `command` (1 CONNECT, 2 BIND, 3 UDP ASSOCIATE) to
/// `target`.
pub fn request(command: u8, target: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = target else {
        panic!("IPv4 targets only")
    };
    let mut r = vec![5, command, 0, 1];
    r.extend_from_slice(&v4.ip().octets());
    r.extend_from_slice(&v4.port().to_be_bytes());
    r
}

/// A TCP connection to `addr` whose reads give up after 45 s.
pub fn dial(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
    s
}

/// A SOCKS5 CONNECT without authentication; the stream and the reply code.
pub fn connect(socks: SocketAddr, target: SocketAddr) -> (TcpStream, u8) {
    let mut s = dial(socks);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut r = [0u8; 2];
    s.read_exact(&mut r).unwrap();
    s.write_all(&request(1, target)).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    (s, reply[1])
}

/// A UDP ASSOCIATE naming `named` (IPv4; `0.0.0.0:0` for "any") as the
/// client's UDP address: the control connection (the association lives
/// as long as it) and the relay's address.
pub fn udp_associate(socks: SocketAddr, named: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut control = TcpStream::connect(socks).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    control.write_all(&[5, 1, 0]).unwrap();
    let mut reply = [0u8; 2];
    control.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [5, 0]);
    control.write_all(&request(3, named)).unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..4], &[5, 0, 0, 1], "UDP ASSOCIATE succeeded");
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    (control, relay)
}

/// `payload` to `target` (IPv4) in a SOCKS5 UDP header.
pub fn datagram(target: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(v4) = target else {
        panic!("IPv4 targets only")
    };
    let mut d = vec![0, 0, 0, 1];
    d.extend_from_slice(&v4.ip().octets());
    d.extend_from_slice(&v4.port().to_be_bytes());
    d.extend_from_slice(payload);
    d
}
