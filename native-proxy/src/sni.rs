//! The transparent TLS proxy (`[SNI]`, as wireproxy has it): a client
//! that believes it talks to `NAME:443` (its DNS, or `/etc/hosts`, points
//! the name here) is connected to NAME, resolved through the tunnel's DNS,
//! on port 443 (`TargetPort` otherwise) through the tunnel.
//!
//! The name is read from the ClientHello's server_name extension; nothing
//! is decrypted and every byte, the ClientHello included, passes
//! untouched. Reading the ClientHello counts as negotiating
//! ([`crate::accept::Negotiations`]), takes [`HELLO_TIMEOUT`] at most and
//! [`MAX_HELLO`] bytes at most; a client without a name or not speaking
//! TLS is closed with a log line.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::{accept, Negotiating, Negotiations};
use crate::splice::splice_host;
use crate::tunnel::Tunnel;

/// How long a client may take to send its whole ClientHello (wireproxy
/// allows 5 s too).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes read looking for the name: a ClientHello is a few
/// hundred bytes, some KiB with post-quantum key shares.
pub const MAX_HELLO: usize = 32 * 1024;
/// The largest TLS record (2^14) plus what encryption may add; a record
/// header claiming more is not TLS.
const MAX_RECORD: usize = 16384 + 2048;
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a whole ClientHello yet.
    NeedMore,
    /// The name the client asks for, lower case, without a final dot.
    Name(String),
    /// A ClientHello without a (valid) host name.
    NoName,
    /// Not a TLS ClientHello.
    NotTls,
}

/// Reads big-endian fields from a slice; `None` past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A field with a 1- or 2-byte length in front.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The server name in the TLS records at the start of `buf`. The
/// ClientHello may span several records; only handshake records are
/// expected before it ends.
pub fn client_hello_name(buf: &[u8]) -> Hello {
    let mut handshake = Vec::new();
    let mut records = Cursor(buf);
    loop {
        let Some(header) = records.take(5) else {
            // Refuse at the first byte what can never be a handshake.
            return match records.0.first() {
                Some(&t) if t != HANDSHAKE => Hello::NotTls,
                _ if records.0.len() >= 2 && records.0[1] != 3 => Hello::NotTls,
                _ => Hello::NeedMore,
            };
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if header[0] != HANDSHAKE || header[1] != 3 || len == 0 || len > MAX_RECORD {
            return Hello::NotTls;
        }
        let Some(body) = records.take(len) else {
            return Hello::NeedMore;
        };
        handshake.extend_from_slice(body);
        let mut message = Cursor(&handshake);
        let (Some(kind), Some(l)) = (message.u8(), message.take(3)) else {
            continue;
        };
        if kind != CLIENT_HELLO {
            return Hello::NotTls;
        }
        let hello_len = (usize::from(l[0]) << 16) | (usize::from(l[1]) << 8) | usize::from(l[2]);
        if hello_len > MAX_HELLO {
            return Hello::NotTls;
        }
        if let Some(hello) = message.take(hello_len) {
            return server_name(hello);
        }
    }
}

/// The host name in a whole ClientHello body.
fn server_name(hello: &[u8]) -> Hello {
    let mut c = Cursor(hello);
    // legacy_version, random, session id, cipher suites, compression.
    let fields = c
        .take(2 + 32)
        .and_then(|_| c.vec8())
        .and_then(|_| c.vec16());
    if fields.and_then(|_| c.vec8()).is_none() {
        return Hello::NotTls;
    }
    let Some(extensions) = c.vec16() else {
        // No extensions at all: no name.
        return Hello::NoName;
    };
    let mut e = Cursor(extensions);
    while let (Some(kind), Some(data)) = (e.u16(), e.vec16()) {
        if kind != SERVER_NAME {
            continue;
        }
        let mut list = Cursor(data);
        let Some(names) = list.vec16() else {
            return Hello::NoName;
        };
        let mut names = Cursor(names);
        while let (Some(name_type), Some(name)) = (names.u8(), names.vec16()) {
            if name_type == HOST_NAME {
                return valid_host(name).map_or(Hello::NoName, Hello::Name);
            }
        }
        return Hello::NoName;
    }
    Hello::NoName
}

/// A DNS host name (letters, digits, `-`, `_`, dots between labels of 63
/// bytes at most), lower-cased; not an address literal.
fn valid_host(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    let name = String::from_utf8(name.to_ascii_lowercase()).ok()?;
    (ok && name.parse::<std::net::IpAddr>().is_err()).then_some(name)
}

/// Serves `[SNI]` on `listener`, to port `port` of each name.
pub async fn serve(listener: TcpListener, tunnel: Tunnel, port: u16, negotiations: Negotiations) {
    loop {
        let (stream, peer) = accept(&listener, &tunnel, "SNI proxy").await;
        let Some(slot) = negotiations.enter("SNI proxy") else {
            tunnel
                .metrics()
                .proxy_refused
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let tunnel = tunnel.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = handle(stream, peer, &tunnel, port, slot).await {
                tracing::debug!(%peer, error = %e, "SNI proxy connection ended");
            }
        });
    }
}

/// Reads until the ClientHello names a host (or cannot).
async fn read_hello(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Hello> {
    let mut chunk = [0u8; 4096];
    loop {
        match client_hello_name(buf) {
            Hello::NeedMore if buf.len() >= MAX_HELLO => return Ok(Hello::NotTls),
            Hello::NeedMore => {}
            done => return Ok(done),
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    tunnel: &Tunnel,
    port: u16,
    slot: Negotiating,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut stream, &mut buf)).await {
        Ok(r) => r?,
        Err(_) => {
            tracing::info!(%peer, "SNI proxy: no ClientHello within {} s; closed", HELLO_TIMEOUT.as_secs());
            return Ok(());
        }
    };
    drop(slot);
    let name = match hello {
        Hello::Name(name) => name,
        Hello::NoName => {
            tracing::info!(%peer, "SNI proxy: the ClientHello names no host (server_name); closed");
            refused(tunnel);
            return Ok(());
        }
        Hello::NotTls | Hello::NeedMore => {
            tracing::info!(%peer, "SNI proxy: not a TLS ClientHello; closed");
            refused(tunnel);
            return Ok(());
        }
    };
    let mut remote = match tunnel.connect_host(&name, port).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%peer, host = %name, port, error = %e, "SNI proxy: cannot connect");
            refused(tunnel);
            return Ok(());
        }
    };
    tracing::debug!(%peer, host = %name, port, "SNI proxy");
    splice_host(&mut stream, &mut remote, &buf)
        .await
        .map(|_| ())
}

fn refused(tunnel: &Tunnel) {
    tunnel
        .metrics()
        .proxy_refused
        .fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ClientHello body with these extensions.
    fn hello_body(extensions: &[u8]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[7; 32]); // random
        b.push(0); // session id
        b.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        b.extend_from_slice(&[1, 0]); // null compression
        b.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        b.extend_from_slice(extensions);
        b
    }

    fn sni_extension(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![HOST_NAME];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        let mut e = vec![0, 0];
        e.extend_from_slice(&(list.len() as u16).to_be_bytes());
        e.extend_from_slice(&list);
        e
    }

    /// The handshake message in records of at most `per_record` bytes.
    fn records(body: &[u8], per_record: usize) -> Vec<u8> {
        let mut message = vec![CLIENT_HELLO, 0];
        message.extend_from_slice(&(body.len() as u16).to_be_bytes());
        message.extend_from_slice(body);
        let mut out = Vec::new();
        for chunk in message.chunks(per_record) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn the_name_is_found_whatever_the_split() {
        // Another extension first (supported_groups), then the name.
        let mut ext = vec![0, 10, 0, 4, 0, 2, 0, 29];
        ext.extend(sni_extension(b"Internal.Example.COM."));
        let body = hello_body(&ext);
        for per_record in [16384, 40, 7] {
            let bytes = records(&body, per_record);
            for split in 0..bytes.len() {
                assert_eq!(client_hello_name(&bytes[..split]), Hello::NeedMore);
            }
            assert_eq!(
                client_hello_name(&bytes),
                Hello::Name("internal.example.com".into()),
                "records of {per_record}"
            );
        }
    }

    #[test]
    fn no_name_or_no_tls_is_told_apart() {
        assert_eq!(
            client_hello_name(&records(&hello_body(&[]), 100)),
            Hello::NoName
        );
        for bad in [&b"bad name"[..], b"10.0.0.1", b"", b"a..b"] {
            let bytes = records(&hello_body(&sni_extension(bad)), 16384);
            assert_eq!(client_hello_name(&bytes), Hello::NoName, "{bad:?}");
        }
        assert_eq!(client_hello_name(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(client_hello_name(b"G"), Hello::NotTls);
        assert_eq!(client_hello_name(&[22, 9]), Hello::NotTls);
        // A ServerHello is no ClientHello.
        let mut server = records(&hello_body(&[]), 16384);
        server[5] = 2;
        assert_eq!(client_hello_name(&server), Hello::NotTls);
        // A record past the largest TLS allows.
        assert_eq!(client_hello_name(&[22, 3, 1, 0xff, 0xff]), Hello::NotTls);
    }

    #[test]
    fn real_client_hellos_name_their_host() {
        // Recorded from curl and openssl s_client (fuzz/corpus/tls_hello).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tls_hello");
        let mut found: Vec<Hello> = std::fs::read_dir(dir)
            .unwrap()
            .map(|f| client_hello_name(&std::fs::read(f.unwrap().path()).unwrap()))
            .collect();
        found.sort_by_key(|h| format!("{h:?}"));
        assert_eq!(
            found,
            [
                Hello::Name("db.internal".into()),
                Hello::Name("example.com".into()),
                Hello::NoName
            ]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut bytes = vec![HANDSHAKE, 3, 1, 1, 0x80, CLIENT_HELLO, 0, 1, 0x7c];
            bytes.extend_from_slice(&tail);
            let _ = client_hello_name(&bytes);
            let _ = client_hello_name(&tail);
        }
    }
}
