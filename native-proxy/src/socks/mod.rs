//! The SOCKS5 server (RFC 1928, RFC 1929): CONNECT and UDP ASSOCIATE
//! through the tunnel; SOCKS4 and SOCKS4a CONNECT on the same port, told
//! apart by the first byte.
//!
//! Every failure gets its reply code and a clean close; a client that
//! stalls during the negotiation is dropped after [`HANDSHAKE_TIMEOUT`],
//! and one that comes while too many are negotiating
//! ([`crate::accept::Negotiations`]) is closed unanswered.

pub mod proto;
pub mod v4;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::accept::{accept, Negotiating, Negotiations};
use crate::config::Credentials;
use crate::splice::splice_host;
use crate::tunnel::{ConnectError, Tunnel, TunnelUdp};
use proto::{Address, Command, ProtoError, Reply};

/// How long a client may take to greet, authenticate and ask.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    tunnel: Tunnel,
    auth: Option<Rc<Credentials>>,
    negotiations: Negotiations,
) {
    loop {
        let (stream, peer) = accept(&listener, &tunnel, "SOCKS5").await;
        let Some(slot) = negotiations.enter("SOCKS5") else {
            // SOCKS5 has no reply before the greeting: closed unanswered.
            refused(&tunnel);
            continue;
        };
        let (tunnel, auth) = (tunnel.clone(), auth.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = handle(stream, &tunnel, auth.as_deref(), slot).await {
                tracing::debug!(%peer, error = %e, "SOCKS5 connection ended");
            }
        });
    }
}

/// Reads from `stream` until `parse` has a whole message.
async fn read_message<T>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> proto::Parsed<T>,
) -> io::Result<Result<T, ProtoError>> {
    loop {
        match parse(buf) {
            Ok(Some((value, used))) => {
                buf.drain(..used);
                return Ok(Ok(value));
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        if buf.len() > 1024 {
            return Ok(Err(ProtoError::TooLong));
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Which SOCKS a client speaks: its replies differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V4,
    V5,
}

/// A request read, and the SOCKS it came in.
struct Asked {
    flavor: Flavor,
    request: proto::Request,
}

async fn reply(stream: &mut TcpStream, reply: Reply, bound: SocketAddr) -> io::Result<()> {
    answer(stream, Flavor::V5, reply, bound).await
}

/// Sends `reply` in the client's SOCKS; SOCKS4 has one failure code (91)
/// for all of SOCKS5's.
async fn answer(
    stream: &mut TcpStream,
    flavor: Flavor,
    reply: Reply,
    bound: SocketAddr,
) -> io::Result<()> {
    match flavor {
        Flavor::V5 => {
            let mut out = Vec::with_capacity(22);
            proto::encode_reply(reply, bound, &mut out);
            stream.write_all(&out).await
        }
        Flavor::V4 => {
            let code = if reply == Reply::Succeeded {
                v4::Reply::Granted
            } else {
                v4::Reply::Rejected
            };
            stream.write_all(&v4::encode_reply(code, bound)).await
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Negotiates (holding `slot` until the request is read), then serves
/// one request.
async fn handle(
    mut stream: TcpStream,
    tunnel: &Tunnel,
    auth: Option<&Credentials>,
    slot: Negotiating,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let request = tokio::time::timeout(HANDSHAKE_TIMEOUT, negotiate(&mut stream, &mut buf, auth))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "negotiation took too long"))??;
    drop(slot);
    let Some(Asked { flavor, request }) = request else {
        refused(tunnel);
        return Ok(());
    };
    match request.command {
        // Bytes a client sent after its request without waiting for our
        // reply go through once the connection is up.
        Command::Connect => connect(stream, flavor, tunnel, request.address, &buf).await,
        Command::UdpAssociate => associate(stream, tunnel, request.address).await,
        Command::Bind => {
            answer(
                &mut stream,
                flavor,
                Reply::CommandNotSupported,
                unspecified(),
            )
            .await?;
            refused(tunnel);
            Ok(())
        }
    }
}

fn refused(tunnel: &Tunnel) {
    tunnel
        .metrics()
        .proxy_refused
        .fetch_add(1, Ordering::Relaxed);
}

/// Greeting, authentication and request; `None` once a refusal was sent.
async fn negotiate(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    auth: Option<&Credentials>,
) -> io::Result<Option<Asked>> {
    if buf.is_empty() {
        let mut first = [0u8; 512];
        let n = stream.read(&mut first).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&first[..n]);
    }
    if buf[0] == v4::VERSION {
        return negotiate_v4(stream, buf, auth).await;
    }
    let greeting = match read_message(stream, buf, proto::parse_greeting).await? {
        Ok(g) => g,
        Err(e) => {
            // Not SOCKS (HTTP, garbage): a SOCKS5 "no
            // acceptable method" is the only answer the protocol has.
            tracing::debug!(error = %e, "not a SOCKS5 greeting");
            stream
                .write_all(&proto::method_selection(proto::Method::NoAcceptable as u8))
                .await?;
            return Ok(None);
        }
    };
    let wanted = if auth.is_some() {
        proto::Method::UserPass
    } else {
        proto::Method::NoAuth
    } as u8;
    if !greeting.methods.contains(&wanted) {
        stream
            .write_all(&proto::method_selection(proto::Method::NoAcceptable as u8))
            .await?;
        return Ok(None);
    }
    stream.write_all(&proto::method_selection(wanted)).await?;
    if let Some(creds) = auth {
        let ok = match read_message(stream, buf, proto::parse_user_pass).await? {
            Ok(up) => creds.matches(&up.username, &up.password),
            Err(_) => false,
        };
        stream.write_all(&proto::user_pass_status(ok)).await?;
        if !ok {
            tracing::info!(peer = ?stream.peer_addr().ok(), "SOCKS5 authentication failed");
            return Ok(None);
        }
    }
    match read_message(stream, buf, proto::parse_request).await? {
        Ok(request) => Ok(Some(Asked {
            flavor: Flavor::V5,
            request,
        })),
        Err(e) => {
            reply(stream, e.reply(), unspecified()).await?;
            Ok(None)
        }
    }
}

/// A SOCKS4 or 4a request. SOCKS4 carries no password: where the section
/// asks for one, it is refused (91) and logged.
async fn negotiate_v4(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    auth: Option<&Credentials>,
) -> io::Result<Option<Asked>> {
    let request = match read_message(stream, buf, v4::parse_request).await? {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "bad SOCKS4 request");
            answer(stream, Flavor::V4, Reply::GeneralFailure, unspecified()).await?;
            return Ok(None);
        }
    };
    if auth.is_some() {
        tracing::info!(
            peer = ?stream.peer_addr().ok(),
            "SOCKS4 client refused: this SOCKS port requires a username and password, which only SOCKS5 carries"
        );
        answer(stream, Flavor::V4, Reply::NotAllowed, unspecified()).await?;
        return Ok(None);
    }
    Ok(Some(Asked {
        flavor: Flavor::V4,
        request: proto::Request {
            command: request.command,
            address: request.address,
        },
    }))
}

/// The reply code for a failed connect.
fn connect_reply(e: &ConnectError) -> Reply {
    match e {
        ConnectError::Dns(_) => Reply::HostUnreachable,
        ConnectError::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
                Reply::ConnectionRefused
            }
            io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
            // The gateway's policy ("administratively prohibited").
            io::ErrorKind::PermissionDenied => Reply::NotAllowed,
            io::ErrorKind::TimedOut | io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
            _ => Reply::GeneralFailure,
        },
    }
}

async fn connect(
    mut stream: TcpStream,
    flavor: Flavor,
    tunnel: &Tunnel,
    address: Address,
    early: &[u8],
) -> io::Result<()> {
    let target = match &address {
        Address::Ip(addr) => tunnel.connect(*addr).await.map_err(ConnectError::Io),
        Address::Domain(host, port) => tunnel.connect_host(host, *port).await,
    };
    let mut remote = match target {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%address, error = %e, "SOCKS CONNECT failed");
            answer(&mut stream, flavor, connect_reply(&e), unspecified()).await?;
            refused(tunnel);
            return Ok(());
        }
    };
    let bound = tunnel
        .tcp_endpoints(remote.id())
        .map(|(local, _)| local)
        .unwrap_or_else(|_| unspecified());
    answer(&mut stream, flavor, Reply::Succeeded, bound).await?;
    tracing::debug!(%address, ?flavor, "SOCKS CONNECT");
    splice_host(&mut stream, &mut remote, early)
        .await
        .map(|_| ())
}

/// Which datagrams on a relay socket belong to the association: those
/// from the control connection's IP (any other host, or another loopback
/// address, could otherwise take the association by sending first), and
/// from the port the client named in its request when it named one.
#[derive(Debug, Clone, Copy)]
struct Sender {
    ip: IpAddr,
    port: Option<u16>,
}

impl Sender {
    fn new(control_peer: IpAddr, requested: &Address) -> Sender {
        let port = match requested {
            Address::Ip(a) if a.port() != 0 => Some(a.port()),
            _ => None,
        };
        Sender {
            ip: control_peer.to_canonical(),
            port,
        }
    }

    fn admits(&self, src: SocketAddr) -> bool {
        src.ip().to_canonical() == self.ip && self.port.is_none_or(|p| p == src.port())
    }
}

/// UDP ASSOCIATE: a relay socket on the listener's address, answering only
/// the client that asked, alive as long as the control connection.
async fn associate(mut control: TcpStream, tunnel: &Tunnel, requested: Address) -> io::Result<()> {
    let local_ip = control.local_addr()?.ip();
    let sender = Sender::new(control.peer_addr()?.ip(), &requested);
    let relay = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let inner = match tunnel.udp_bind() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "no tunnel UDP socket");
            reply(&mut control, Reply::GeneralFailure, unspecified()).await?;
            return Ok(());
        }
    };
    reply(&mut control, Reply::Succeeded, relay.local_addr()?).await?;
    // Where answers go: the first admitted sender's address. The client
    // sends from one socket; a second one on its host that was not named
    // cannot take over.
    let mut client: Option<SocketAddr> = None;
    let relay = Rc::new(relay);
    let mut from_client = vec![0u8; 65536];
    let mut from_tunnel = vec![0u8; 65536];
    let mut control_buf = [0u8; 64];
    loop {
        tokio::select! {
            r = control.read(&mut control_buf) => {
                if matches!(r, Ok(0) | Err(_)) {
                    return Ok(());
                }
            }
            r = relay.recv_from(&mut from_client) => {
                let (n, src) = r?;
                if !sender.admits(src) {
                    tracing::debug!(%src, "UDP datagram from outside the association dropped");
                    continue;
                }
                match client {
                    Some(c) if c != src => continue,
                    None => client = Some(src),
                    _ => {}
                }
                forward_out(tunnel, &inner, &from_client[..n]).await;
            }
            r = inner.recv_from(&mut from_tunnel) => {
                let Ok((n, from)) = r else { return Ok(()) };
                if let Some(c) = client {
                    let mut datagram = Vec::with_capacity(n + 22);
                    proto::encode_udp_header(&Address::Ip(from), &mut datagram);
                    datagram.extend_from_slice(&from_tunnel[..n]);
                    let _ = relay.send_to(&datagram, c).await;
                }
            }
        }
    }
}

/// Sends one client datagram into the tunnel.
async fn forward_out(tunnel: &Tunnel, inner: &TunnelUdp, datagram: &[u8]) {
    let Ok((header, payload)) = proto::parse_udp(datagram) else {
        return; // malformed or fragmented: dropped, as RFC 1928 allows
    };
    let dst = match header.address {
        Address::Ip(a) => a,
        Address::Domain(host, port) => match tunnel.resolve(&host).await {
            Ok(ips) => match ips.first() {
                Some(ip) => SocketAddr::new(*ip, port),
                None => return,
            },
            Err(_) => return,
        },
    };
    if let Err(e) = inner.send_to(payload, dst).await {
        tracing::debug!(%dst, error = %e, "UDP datagram not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_refusal_by_the_gateways_policy_is_reply_2_a_closed_port_5() {
        let reply = |kind| connect_reply(&ConnectError::Io(io::Error::new(kind, "x")));
        assert_eq!(reply(io::ErrorKind::PermissionDenied), Reply::NotAllowed);
        assert_eq!(
            reply(io::ErrorKind::ConnectionRefused),
            Reply::ConnectionRefused
        );
    }

    #[test]
    fn a_udp_association_admits_only_the_control_ip_and_the_named_port() {
        let control: IpAddr = "127.0.0.1".parse().unwrap();
        let any = Sender::new(control, &Address::Ip(addr("0.0.0.0:0")));
        assert!(any.admits(addr("127.0.0.1:5000")));
        assert!(
            !any.admits(addr("127.0.0.9:5000")),
            "another loopback address"
        );
        assert!(!any.admits(addr("[::1]:5000")));
        assert!(
            any.admits(addr("[::ffff:127.0.0.1]:5000")),
            "the same IP, v4-mapped"
        );

        let named = Sender::new(control, &Address::Ip(addr("0.0.0.0:4000")));
        assert!(named.admits(addr("127.0.0.1:4000")));
        assert!(!named.admits(addr("127.0.0.1:4001")), "not the port named");

        // The IP named in the request does not widen the association.
        let elsewhere = Sender::new(control, &Address::Ip(addr("192.0.2.7:4000")));
        assert!(!elsewhere.admits(addr("192.0.2.7:4000")));
        assert!(elsewhere.admits(addr("127.0.0.1:4000")));
    }
}
