//! `underpass relay`: WebSocket frames to UDP (batches: relay_batch.rs),
//! only to its upstreams, with its token, frame and connection limits, and the demo's
//! static files;
//! only for its own pages (and allowed origins); connections counted and
//! timed from their first byte; `--demo` kept to loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;
use underpass_tests::relay::*;
use underpass_tests::*;

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
fn the_token_is_checked_before_the_upgrade() {
    let (peer, peer_addr) = udp_peer();
    let r = relay(
        "relay-token",
        &["--upstream", &peer_addr, "--token", "s3cret+/="],
    );
    // No WebSocket at all without the token: 401, not 101 and a close.
    assert_eq!(handshake(&r, "", &[]).err(), Some(401), "no token");
    assert_eq!(
        handshake(&r, "token=wrong", &[]).err(),
        Some(401),
        "wrong token"
    );
    // Named twice, a proxy in front and the relay could read different ones.
    assert_eq!(
        handshake(&r, "token=wrong&token=s3cret%2B%2F%3D", &[]).err(),
        Some(400),
        "a repeated token parameter"
    );
    assert_eq!(
        handshake(&r, "token=s3cret%2B%2F%3D&token=s3cret%2B%2F%3D", &[]).err(),
        Some(400),
        "a repeated token parameter, both right"
    );
    let mut ws = open(&r, "token=s3cret%2B%2F%3D");
    ws.send(Message::binary(b"with the token".to_vec()))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = peer
        .recv_from(&mut buf)
        .expect("nothing arrived with the right token");
    assert_eq!(&buf[..n], b"with the token");
    assert!(
        !r.process.log().contains("s3cret"),
        "the token reached the log:\n{}",
        r.process.log()
    );
}

#[test]
fn the_token_can_come_from_a_file() {
    let (peer, peer_addr) = udp_peer();
    let scratch = Scratch::new("relay-token-file");
    let file = scratch.write("token", "from-a-file\n");
    let r = relay(
        "relay-token-file",
        &[
            "--upstream",
            &peer_addr,
            "--token-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(handshake(&r, "token=wrong", &[]).err(), Some(401));
    let mut ws = open(&r, "token=from-a-file");
    ws.send(Message::binary(b"x".to_vec())).unwrap();
    let mut buf = [0u8; 8];
    assert!(
        peer.recv_from(&mut buf).is_ok(),
        "the file's token was refused"
    );
    // The command line shows the file, not the token.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", r.process.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("from-a-file"));

    let missing = scratch.path("missing");
    let out = run(&[
        "relay",
        "--upstream",
        &peer_addr,
        "--token-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(missing.to_str().unwrap()),
        "the error names the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "relay",
        "--upstream",
        &peer_addr,
        "--token",
        "t",
        "--token-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "two tokens are a usage error");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("from-a-file"));
}

#[test]
fn pages_from_other_origins_and_rebound_names_are_refused() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay("relay-origin", &["--upstream", &peer_addr]);
    // The relay's own page, by IP and as localhost.
    let own = format!("http://{}", r.addr);
    assert!(
        handshake(&r, "", &[("Origin", &own)]).is_ok(),
        "its own page"
    );
    let localhost = format!("localhost:{}", r.addr.port());
    let localhost_origin = format!("http://{localhost}");
    assert!(
        handshake(
            &r,
            "",
            &[("Host", &localhost), ("Origin", &localhost_origin)]
        )
        .is_ok(),
        "its own page as localhost"
    );
    // Another site's page: WebSockets cross origins, so the relay must say no.
    assert_eq!(
        handshake(&r, "", &[("Origin", "http://evil.example")]).err(),
        Some(403),
        "another origin"
    );
    // DNS rebinding: the page's own name now points at the relay, so the
    // request is same-origin to the browser; only Host gives it away.
    let rebound = format!("evil.example:{}", r.addr.port());
    let rebound_origin = format!("http://{rebound}");
    assert_eq!(
        handshake(&r, "", &[("Host", &rebound), ("Origin", &rebound_origin)]).err(),
        Some(403),
        "a rebound name"
    );
    // Static files are for anyone.
    assert_eq!(http_status(&r, "/", &["Origin: http://evil.example"]), 200);

    // --allow-origin lets another site's pages in, and its name as Host.
    let allowing = relay(
        "relay-allow-origin",
        &[
            "--upstream",
            &peer_addr,
            "--allow-origin",
            "https://app.example",
        ],
    );
    assert!(
        handshake(&allowing, "", &[("Origin", "https://app.example")]).is_ok(),
        "an --allow-origin page"
    );
    assert!(
        handshake(
            &allowing,
            "",
            &[("Host", "app.example"), ("Origin", "https://app.example")]
        )
        .is_ok(),
        "the allowed name as Host"
    );
    assert_eq!(
        handshake(&allowing, "", &[("Origin", "http://evil.example")]).err(),
        Some(403)
    );
}

#[test]
fn the_demo_needs_the_token_and_the_relays_own_pages() {
    let r = relay("relay-demo-access", &["--demo", "--token", "demo-token"]);
    assert_eq!(
        http_status(&r, "/demo", &[]),
        401,
        "/demo without the token"
    );
    assert_eq!(http_status(&r, "/demo?token=nope", &[]), 401);
    assert_eq!(http_status(&r, "/demo?token=demo-token", &[]), 200);
    let own = format!("Origin: http://{}", r.addr);
    assert_eq!(http_status(&r, "/demo?token=demo-token", &[&own]), 200);
    assert_eq!(
        http_status(
            &r,
            "/demo?token=demo-token",
            &["Origin: http://evil.example"]
        ),
        403,
        "/demo for another site's page"
    );
    let rebound = format!("Host: evil.example:{}", r.addr.port());
    assert_eq!(
        http_status(&r, "/demo?token=demo-token", &[&rebound]),
        403,
        "/demo through a rebound name"
    );
    // Without --token, still only for the relay's own pages.
    let open_relay = relay("relay-demo-open", &["--demo"]);
    assert_eq!(http_status(&open_relay, "/demo", &[]), 200);
    let rebound = format!("Host: evil.example:{}", open_relay.addr.port());
    assert_eq!(http_status(&open_relay, "/demo", &[&rebound]), 403);
}

/// The local address a UDP port is bound to, from /proc/net/udp{,6}
/// (what `ss -uln` shows).
fn udp_bound(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let Some(local) = line.split_whitespace().nth(1) else {
                continue;
            };
            let Some((ip, p)) = local.split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port) {
                found.push(format!("{table} {ip}"));
            }
        }
    }
    found
}

#[test]
fn the_demo_gateway_is_on_loopback_and_reaches_only_its_services() {
    let r = relay("relay-demo-reach", &["--demo"]);
    let body = curl_text(&curl(&[&format!("http://{}/demo", r.addr)]));
    let demo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let config = demo["config"].as_str().unwrap();
    let endpoint: SocketAddr = config
        .lines()
        .find_map(|l| l.strip_prefix("Endpoint = "))
        .unwrap()
        .parse()
        .unwrap();
    // A WireGuard client with the handed-out config, straight to the gateway.
    let scratch = Scratch::new("relay-demo-client");
    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = scratch.write(
        "client.conf",
        &format!("{config}\n[Socks5]\nBindAddress = {socks}\n"),
    );
    let mut client = Process::start("client", &scratch, &["--config", path.to_str().unwrap()]);
    client.wait_for_log("handshake completed", Duration::from_secs(20));
    wait_tcp(socks, Duration::from_secs(10));
    let echo: SocketAddr = demo["echo"].as_str().unwrap().parse().unwrap();
    let (mut s, reply) = socks::connect(socks, echo);
    assert_eq!(reply, 0, "the demo's echo is reachable");
    s.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    // Any other service of the host's loopback is not.
    let server = underpass_tests::http_server::HttpServer::start();
    let (_s, other) = socks::connect(socks, server.addr);
    assert_ne!(
        other, 0,
        "the demo gateway reached another loopback service"
    );
    assert_eq!(
        server
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the other service saw a connection"
    );
    let (_s, reply) = socks::connect(socks, r.addr);
    assert_ne!(reply, 0, "the demo gateway reached the relay's own port");
    println!(
        "SOCKS replies through the demo gateway: other service {other}, the relay's port {reply}"
    );
    assert_eq!(
        udp_bound(endpoint.port()),
        vec!["/proc/net/udp 0100007F".to_string()],
        "the demo gateway's UDP port is bound to 127.0.0.1 only"
    );
}

/// Writes half a request head and returns how long the relay took to
/// close the connection (`None`: still open after `limit`).
fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

const PARTIAL_HEAD: &[u8] = b"GET /relay HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webso";

#[test]
fn slow_request_heads_are_closed_within_the_header_timeout() {
    let (_peer, peer_addr) = udp_peer();
    // The default: 10 s.
    let r = relay("relay-slow-head", &["--upstream", &peer_addr]);
    let mut partial = TcpStream::connect(r.addr).unwrap();
    partial.write_all(PARTIAL_HEAD).unwrap();
    let mut silent = TcpStream::connect(r.addr).unwrap();
    let partial_closed = time_to_close(&mut partial, Duration::from_secs(20));
    let silent_closed = time_to_close(&mut silent, Duration::from_secs(1));
    let partial_closed = partial_closed.expect("half a request head still open after 20 s");
    assert!(
        partial_closed >= Duration::from_secs(9),
        "closed after {partial_closed:?}, before the 10 s timeout"
    );
    assert!(
        silent_closed.is_some(),
        "a connection that sent nothing outlived one that sent half a head"
    );
    println!(
        "half a request head closed after {:.1} s (--header-timeout 10)",
        partial_closed.as_secs_f64()
    );
    // Meanwhile and after, a page connects.
    let mut ws = open(&r, "");
    ws.send(Message::binary(b"x".to_vec())).unwrap();
}

#[test]
fn pending_connections_count_against_the_per_client_limit() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay(
        "relay-pending",
        &["--upstream", &peer_addr, "--max-per-client", "4"],
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(r.addr).unwrap();
        s.write_all(PARTIAL_HEAD).unwrap();
        held.push(s);
    }
    // The fifth from the same address is answered at once, not left hanging.
    let mut fifth = TcpStream::connect(r.addr).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = fifth.write_all(PARTIAL_HEAD);
    let mut answer = String::new();
    let _ = fifth.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "the fifth pending connection got {answer:?}"
    );
    // Another client is served meanwhile.
    let out = curl(&[
        "--interface",
        "127.0.0.2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/", r.addr),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        r.process.log().contains("--max-per-client"),
        "the refusal is logged:\n{}",
        r.process.log()
    );
    drop(held);
}

#[test]
fn a_relay_at_a_1024_descriptor_limit_answers_1100_pending_connections() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay_with(
        "relay-fd-limit",
        &[
            "--upstream",
            &peer_addr,
            "--max-connections",
            "1024",
            "--max-per-client",
            "2000",
        ],
        Some(1024),
    );
    let start = Instant::now();
    let mut conns = Vec::new();
    let mut opened = Vec::new();
    for i in 0..1100 {
        let mut s = TcpStream::connect_timeout(&r.addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.write_all(PARTIAL_HEAD).unwrap();
        s.set_nonblocking(true).unwrap();
        conns.push(s);
        opened.push(start.elapsed());
    }
    let all_open = start.elapsed();
    // Each must end: refused at once with a 503, or closed at the header
    // timeout (10 s). None may be left hanging.
    let deadline = start + Duration::from_secs(30);
    let mut answers: Vec<Vec<u8>> = vec![Vec::new(); conns.len()];
    let mut ended: Vec<Option<Duration>> = vec![None; conns.len()];
    let mut buf = [0u8; 512];
    loop {
        for (i, c) in conns.iter_mut().enumerate() {
            if ended[i].is_some() {
                continue;
            }
            loop {
                match c.read(&mut buf) {
                    Ok(0) => ended[i] = Some(start.elapsed()),
                    Ok(n) => {
                        answers[i].extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => ended[i] = Some(start.elapsed()),
                }
                break;
            }
        }
        let open = ended.iter().filter(|e| e.is_none()).count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of 1,100 pending connections neither refused nor closed after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // How long each lived, from its connect.
    let lived = |i: usize| ended[i].unwrap() - opened[i];
    let refused: Vec<Duration> = (0..conns.len())
        .filter(|&i| answers[i].starts_with(b"HTTP/1.1 503"))
        .map(lived)
        .collect();
    let timed_out: Vec<Duration> = (0..conns.len())
        .filter(|&i| answers[i].is_empty())
        .map(lived)
        .collect();
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    let min = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    println!(
        "1,100 pending connections at a 1,024-descriptor limit (opened in {:.1} s): {} held, each closed {:.1}-{:.1} s after its connect; {} refused with 503",
        all_open.as_secs_f64(),
        timed_out.len(),
        min(&timed_out).as_secs_f64(),
        max(&timed_out).as_secs_f64(),
        refused.len(),
    );
    assert_eq!(
        refused.len() + timed_out.len(),
        1100,
        "every connection is either refused or timed out"
    );
    assert!(!refused.is_empty() && !timed_out.is_empty());
    assert!(
        min(&timed_out) >= Duration::from_secs(9),
        "pending connections closed before the header timeout"
    );
    assert!(
        r.process.log().contains("serving at most"),
        "the relay says it lowered --max-connections to its descriptors:\n{}",
        r.process.log()
    );
    // And it serves again.
    let mut ws = open(&r, "");
    ws.send(Message::binary(b"x".to_vec())).unwrap();
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
    assert_eq!(
        handshake(&r, "", &[]).err(),
        Some(503),
        "a third connection"
    );
    // Closing one makes room again (the relay notices at once).
    a.close(None).unwrap();
    while a.read().is_ok() {}
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(status) = handshake(&r, "", &[]) {
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "a closed connection still counts against the limit"
        );
        std::thread::sleep(Duration::from_millis(20));
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
fn the_web_root_serves_no_dotfiles_and_no_symlinks_out_of_it() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay("relay-web-root", &["--upstream", &peer_addr]);
    let www = r.scratch.path("www");
    std::fs::create_dir_all(www.join(".git")).unwrap();
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join(".env"), "SECRET=1").unwrap();
    std::fs::write(www.join(".git/config"), "[core]").unwrap();
    std::fs::write(www.join("sub/.htpasswd"), "user:hash").unwrap();
    std::fs::write(www.join("sub/page.html"), "<p>page</p>").unwrap();
    std::fs::write(r.scratch.path("outside.txt"), "not for the web").unwrap();
    std::os::unix::fs::symlink(r.scratch.path("outside.txt"), www.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", www.join("etc")).unwrap();
    std::os::unix::fs::symlink(www.join("index.html"), www.join("alias.html")).unwrap();
    for path in [
        "/.env",
        "/.git/config",
        "/%2egit/config",
        "/sub/.htpasswd",
        "/leak.txt",
        "/etc/hostname",
    ] {
        assert_eq!(http_status(&r, path, &[]), 404, "{path} was served");
    }
    // What is meant to be served still is, a symlink inside the root too.
    for path in [
        "/",
        "/index.html",
        "/sub/page.html",
        "/alias.html",
        "/pkg/m.wasm",
    ] {
        assert_eq!(http_status(&r, path, &[]), 200, "{path}");
    }
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

/// The congestion controller of the socket the relay accepted from
/// `client`, once `ss` shows that socket.
fn accepted_congestion(relay: SocketAddr, client: SocketAddr) -> String {
    let filter = format!(
        "( sport = :{} and dport = :{} )",
        relay.port(),
        client.port()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("ss")
            .args(["-tinH", "state", "established", &filter])
            .output()
            .expect("ss (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let words: Vec<&str> = text.split_whitespace().collect();
        if let Some(name) = ["bbr", "cubic", "reno"]
            .into_iter()
            .find(|n| words.contains(n))
        {
            return name.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "ss shows no congestion controller for the accepted connection: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn websockets_are_sent_with_the_congestion_controller_asked_for() {
    // Ask for the one the system does not use, so the flag shows.
    let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .expect("the system's congestion controller")
        .trim()
        .to_string();
    let wanted = if system == "bbr" { "cubic" } else { "bbr" };
    let mut r = relay(
        "relay-congestion",
        &["--upstream", "127.0.0.1:9", "--congestion", wanted],
    );
    let client = TcpStream::connect(r.addr).unwrap();
    let got = accepted_congestion(r.addr, client.local_addr().unwrap());
    if got != wanted {
        // The kernel may refuse (bbr not loaded, not allowed): then the
        // relay said so, and kept the system's.
        r.process.wait_for_log(
            "WebSockets keep the system's congestion controller",
            Duration::from_secs(5),
        );
        assert_eq!(got, system, "neither {wanted:?} nor the system's");
    }
}
