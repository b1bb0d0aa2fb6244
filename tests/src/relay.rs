//! `underpass relay` as the relay tests start it, and the WebSocket and
//! HTTP clients they talk to it with.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::{curl, free_port, Process, Scratch};

/// The web demo's directory: the page, its wasm package, its node tools.
pub fn web_demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web-demo")
}

/// The arguments of an `underpass relay` that serves the web demo at
/// `listen` and relays to `upstream` for pages holding `token`, as the
/// browser tests and benchmark start it; callers add their options.
pub fn demo_relay_args(listen: SocketAddr, upstream: &str, token: &str) -> Vec<String> {
    let root = web_demo();
    [
        "relay",
        "--listen",
        &listen.to_string(),
        "--upstream",
        upstream,
        "--web-root",
        &root.to_string_lossy(),
        "--token",
        token,
    ]
    .map(String::from)
    .to_vec()
}

/// A running `underpass relay` serving a scratch web root.
pub struct Relay {
    pub scratch: Scratch,
    pub process: Process,
    pub addr: SocketAddr,
}

/// Starts `underpass relay` on a free port with `args` added.
pub fn relay(name: &str, args: &[&str]) -> Relay {
    relay_with(name, args, None)
}

/// [`relay`], with at most `nofile` open files if given.
pub fn relay_with(name: &str, args: &[&str], nofile: Option<u64>) -> Relay {
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
    let mut process = match nofile {
        Some(n) => Process::start_with_fd_limit(n, "relay", &scratch, &all),
        None => Process::start("relay", &scratch, &all),
    };
    process.wait_for_log("relay on", Duration::from_secs(20));
    Relay {
        scratch,
        process,
        addr,
    }
}

/// A UDP socket standing in for a WireGuard endpoint.
pub fn udp_peer() -> (UdpSocket, String) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let a = s.local_addr().unwrap().to_string();
    (s, a)
}

/// A WebSocket to `/relay?query` (the handshake must succeed).
pub fn open(relay: &Relay, query: &str) -> WebSocket<TcpStream> {
    let url = format!("ws://{}/relay?{query}", relay.addr);
    let stream = TcpStream::connect(relay.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, _) = tungstenite::client(url.as_str(), stream)
        .unwrap_or_else(|e| panic!("WebSocket to {url}: {e}"));
    ws
}

/// The WebSocket handshake to `/relay?query` with `headers` added (or
/// replaced, for `Host`): the socket, or the HTTP status of the refusal.
pub fn handshake(
    relay: &Relay,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Result<WebSocket<TcpStream>, u16> {
    let url = format!("ws://{}/relay?{query}", relay.addr);
    let mut request = url.as_str().into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let stream = TcpStream::connect(relay.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match tungstenite::client(request, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("WebSocket to {url}: {e}"),
    }
}

/// The status of `GET path` with extra `headers` (`Name: value`), by curl.
pub fn http_status(relay: &Relay, path: &str, headers: &[&str]) -> u16 {
    let url = format!("http://{}{path}", relay.addr);
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    args.push(&url);
    let out = curl(&args);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "no status for {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The close code the relay ends with (reading past data frames).
pub fn close_code(ws: &mut WebSocket<TcpStream>) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}
