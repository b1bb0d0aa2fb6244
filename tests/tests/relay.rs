//! `underpass relay`: WebSocket frames to UDP, only to its upstreams, with
//! its token, frame and connection limits, and the demo's static files.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};
use underpass_tests::*;

struct Relay {
    _scratch: Scratch,
    _process: Process,
    addr: SocketAddr,
}

fn relay(name: &str, args: &[&str]) -> Relay {
    let scratch = Scratch::new(name);
    std::fs::create_dir_all(scratch.path("www/pkg")).unwrap();
    std::fs::write(
        scratch.path("www/index.html"),
        "<!doctype html><title>t</title>",
    )
    .unwrap();
    std::fs::write(scratch.path("www/pkg/m.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = addr.to_string();
    let root = scratch.path("www");
    let mut all = vec![
        "relay",
        "--listen",
        &listen,
        "--web-root",
        root.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let mut process = Process::start("relay", &scratch, &all);
    process.wait_for_log("relay on", Duration::from_secs(20));
    Relay {
        _scratch: scratch,
        _process: process,
        addr,
    }
}

/// A UDP socket standing in for a WireGuard endpoint.
fn udp_peer() -> (UdpSocket, String) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let a = s.local_addr().unwrap().to_string();
    (s, a)
}

fn open(relay: &Relay, query: &str) -> WebSocket<TcpStream> {
    let url = format!("ws://{}/relay?{query}", relay.addr);
    let stream = TcpStream::connect(relay.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, _) = tungstenite::client(url.as_str(), stream)
        .unwrap_or_else(|e| panic!("WebSocket to {url}: {e}"));
    ws
}

/// The close code the relay ends with (reading past data frames).
fn close_code(ws: &mut WebSocket<TcpStream>) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn datagrams_go_to_the_named_upstream_and_come_back() {
    let (peer, peer_addr) = udp_peer();
    let (other, other_addr) = udp_peer();
    let r = relay(
        "relay-upstream",
        &["--upstream", &peer_addr, "--upstream", &other_addr],
    );
    let mut ws = open(&r, &format!("endpoint={}", peer_addr.replace(':', "%3A")));
    let datagram: Vec<u8> = (0..1452u32).map(|i| (i * 7) as u8).collect();
    ws.send(Message::binary(datagram.clone())).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("the upstream got no datagram");
    assert_eq!(&buf[..n], &datagram[..], "the datagram changed on the way");
    peer.send_to(b"reply datagram", from).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], b"reply datagram"),
        m => panic!("expected the reply as a binary frame, got {m:?}"),
    }
    // The second upstream is reachable by naming it.
    let mut ws2 = open(&r, &format!("endpoint={other_addr}"));
    ws2.send(Message::binary(b"to the other".to_vec())).unwrap();
    let (n, _) = other.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"to the other");
}

#[test]
fn a_page_cannot_pick_an_address_outside_the_upstreams() {
    let (_peer, peer_addr) = udp_peer();
    let (victim, victim_addr) = udp_peer();
    let r = relay("relay-forbidden", &["--upstream", &peer_addr]);
    let mut ws = open(&r, &format!("endpoint={victim_addr}"));
    let _ = ws.send(Message::binary(b"attack".to_vec()));
    assert_eq!(close_code(&mut ws), Some(CloseCode::Library(4403)));
    victim.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        victim.recv_from(&mut buf).is_err(),
        "the relay sent a datagram to an address it was not configured with"
    );
    // Not by a host name that resolves elsewhere either.
    let mut ws = open(&r, "endpoint=localhost%3A9");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Library(4403)));
}

#[test]
fn the_token_is_enforced() {
    let (peer, peer_addr) = udp_peer();
    let r = relay(
        "relay-token",
        &["--upstream", &peer_addr, "--token", "s3cret+/="],
    );
    let mut ws = open(&r, "");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Library(4401)));
    let mut ws = open(&r, "token=wrong");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Library(4401)));
    let mut ws = open(&r, "token=s3cret%2B%2F%3D");
    ws.send(Message::binary(b"with the token".to_vec()))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = peer
        .recv_from(&mut buf)
        .expect("nothing arrived with the right token");
    assert_eq!(&buf[..n], b"with the token");
}

#[test]
fn oversize_and_text_frames_close_the_connection() {
    let (peer, peer_addr) = udp_peer();
    let r = relay("relay-frames", &["--upstream", &peer_addr]);
    let mut ws = open(&r, "");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(close_code(&mut ws), Some(CloseCode::Unsupported));

    let mut ws = open(&r, "");
    let _ = ws.send(Message::binary(vec![0u8; 64 * 1024 + 1]));
    let code = close_code(&mut ws);
    assert!(
        matches!(code, Some(CloseCode::Size) | None),
        "an oversize frame should end the connection, got {code:?}"
    );
    peer.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 70_000];
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "part of the oversize frame went out"
    );
}

#[test]
fn connections_per_client_are_limited() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay(
        "relay-limit",
        &["--upstream", &peer_addr, "--max-per-client", "2"],
    );
    let mut a = open(&r, "");
    let mut b = open(&r, "");
    a.send(Message::binary(b"x".to_vec())).unwrap();
    b.send(Message::binary(b"x".to_vec())).unwrap();
    let mut c = open(&r, "");
    assert_eq!(close_code(&mut c), Some(CloseCode::Library(4429)));
    // Closing one makes room again (the relay notices at once).
    a.close(None).unwrap();
    while a.read().is_ok() {}
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut d = open(&r, "");
        d.send(Message::binary(b"y".to_vec())).unwrap();
        d.get_mut()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match d.read() {
            Ok(Message::Close(Some(f))) if f.code == CloseCode::Library(4429) => assert!(
                std::time::Instant::now() < deadline,
                "a closed connection still counts against the limit"
            ),
            // Admitted: the read timed out waiting for a datagram.
            _ => break,
        }
    }
}

#[test]
fn serves_the_demo_files_with_their_types() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay("relay-static", &["--upstream", &peer_addr]);
    let head = |path: &str| {
        let out = curl(&[
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("http://{}{path}", r.addr),
        ]);
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let wasm = head("/pkg/m.wasm");
    assert!(wasm.starts_with("http/1.1 200"), "{wasm}");
    assert!(wasm.contains("content-type: application/wasm"), "{wasm}");
    let index = head("/");
    assert!(index.contains("content-type: text/html"), "{index}");
    let escape = head("/..%2f..%2f..%2fetc/passwd");
    assert!(!escape.starts_with("http/1.1 200"), "{escape}");
    assert!(
        head("/demo").starts_with("http/1.1 404"),
        "no demo without --demo"
    );
}

#[test]
fn a_relay_without_upstreams_is_a_usage_error() {
    let out = run(&["relay", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream"));
    let out = run(&["relay", "--upstream", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST:PORT"));
}
