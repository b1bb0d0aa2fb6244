//! The real binary, client and gateway as separate processes over loopback
//! UDP, used the way users use it: with curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use underpass_tests::http_server::HttpServer;
use underpass_tests::*;

#[test]
fn socks5_with_a_host_name_resolves_through_the_tunnel() {
    let server = HttpServer::start();
    let pair = Pair::start("socks-hostname", PairOptions::default());
    // "localhost" is resolved by the gateway (the client's DNS server), not here.
    let url = format!("http://localhost:{}/hello", server.addr.port());
    let out = curl(&["--socks5-hostname", &pair.socks.to_string(), &url]);
    assert_eq!(curl_text(&out), "hello underpass\n");
}

#[test]
fn socks5_with_an_address_and_http_proxy_both_forms_fetch_intact_bytes() {
    let server = HttpServer::start();
    let pair = Pair::start("forms", PairOptions::default());
    let len = 3 * 1024 * 1024 + 17;
    let expected = Checksum::of(&content(7, len));
    let url = server.url(&format!("/bytes/{len}?seed=7"));
    for args in [
        vec!["--socks5".to_string(), pair.socks.to_string()],
        vec!["-x".to_string(), format!("http://{}", pair.http)],
        vec![
            "-p".to_string(),
            "-x".to_string(),
            format!("http://{}", pair.http),
        ],
    ] {
        let file = pair.scratch.path("out.bin");
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(["-o", file.to_str().unwrap(), &url]);
        curl_text(&curl(&a));
        assert_eq!(
            Checksum::of_file(&file),
            (expected, len as u64),
            "via {args:?}"
        );
    }
}

#[test]
fn credentials_are_required_when_configured() {
    let server = HttpServer::start();
    let (su, hu) = (free_port(), free_port());
    let extra = format!(
        "\n[Socks5]\nBindAddress = 127.0.0.1:{su}\nUsername = alice\nPassword = s3cret\n\n\
         [http]\nBindAddress = 127.0.0.1:{hu}\nUsername = alice\nPassword = s3cret\n"
    );
    let _pair = Pair::start(
        "auth",
        PairOptions {
            extra_client: extra,
            ..Default::default()
        },
    );
    wait_tcp(([127, 0, 0, 1], su).into(), Duration::from_secs(5));
    let url = server.url("/hello");
    // SOCKS5: right credentials pass; wrong or none are refused.
    assert_eq!(
        curl_text(&curl(&[
            "--socks5",
            &format!("alice:s3cret@127.0.0.1:{su}"),
            &url
        ])),
        "hello underpass\n"
    );
    for proxy in [
        format!("alice:wrong@127.0.0.1:{su}"),
        format!("127.0.0.1:{su}"),
    ] {
        let out = curl(&["--socks5", &proxy, &url]);
        assert!(!out.status.success(), "{proxy} should be refused");
    }
    // HTTP: 407 without or with wrong credentials, for requests and CONNECT.
    let http = format!("http://127.0.0.1:{hu}");
    assert_eq!(
        curl_text(&curl(&["-x", &http, "-U", "alice:s3cret", &url])),
        "hello underpass\n"
    );
    assert_eq!(
        curl_text(&curl(&["-p", "-x", &http, "-U", "alice:s3cret", &url])),
        "hello underpass\n"
    );
    for extra in [&[][..], &["-U", "alice:nope"][..]] {
        let mut args = vec!["-x", &http, "-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = curl(&args);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "407", "{extra:?}");
    }
}

#[test]
fn a_socks_client_that_sends_before_the_replies_loses_nothing() {
    // Greeting, CONNECT and the HTTP request in one write, as clients that
    // skip the round trips do: the request must reach the server.
    let server = HttpServer::start();
    let pair = Pair::start("socks-early", PairOptions::default());
    let len = 200_000u64;
    let port = server.addr.port().to_be_bytes();
    let mut bytes = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, port[0], port[1]];
    bytes.extend_from_slice(
        format!("GET /bytes/{len}?seed=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let mut s = TcpStream::connect(pair.socks).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&bytes).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .expect("the whole answer within 20 s");
    assert_eq!(&reply[..2], &[5, 0], "method reply");
    assert_eq!(&reply[2..4], &[5, 0], "CONNECT reply");
    let http = &reply[12..];
    let head_end = http
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head")
        + 4;
    assert!(
        http.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&http[..head_end])
    );
    let body = &http[head_end..];
    assert_eq!(body.len() as u64, len);
    assert_eq!(Checksum::of(body), content_checksum(3, len));
}

#[test]
fn two_hundred_parallel_transfers_all_arrive_intact() {
    let server = HttpServer::start();
    let pair = Pair::start("parallel", PairOptions::default());
    let n = 200;
    let len = 200 * 1024;
    let mut args = vec![
        "--parallel".to_string(),
        "--parallel-max".into(),
        n.to_string(),
        "--socks5-hostname".into(),
        pair.socks.to_string(),
    ];
    for i in 0..n {
        args.push("-o".into());
        args.push(pair.scratch.path(&format!("p{i}")).to_str().unwrap().into());
        args.push(format!(
            "http://localhost:{}/bytes/{len}?seed={i}",
            server.addr.port()
        ));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    curl_text(&curl(&a));
    for i in 0..n {
        let got = Checksum::of_file(&pair.scratch.path(&format!("p{i}")));
        assert_eq!(
            got,
            (Checksum::of(&content(i as u64, len)), len as u64),
            "transfer {i}"
        );
    }
}

#[test]
fn two_hundred_fifty_six_mib_each_way_arrive_intact() {
    let server = HttpServer::start();
    let pair = Pair::start("bulk", PairOptions::default());
    let len: u64 = 256 * 1024 * 1024;
    pair.download_checked(&server, len, 99, &[]);
    // Upload, the server checks what it got.
    pair.upload_checked(&server, len, 99);
}

#[test]
fn chunked_uploads_pass_the_http_proxy() {
    let server = HttpServer::start();
    let pair = Pair::start("chunked", PairOptions::default());
    let file = pair.scratch.path("up.bin");
    let expected = write_content(&file, 5, 5_000_000);
    let out = curl_text(&curl(&[
        "-x",
        &format!("http://{}", pair.http),
        "-H",
        "Transfer-Encoding: chunked",
        "-T",
        file.to_str().unwrap(),
        &server.url("/sink"),
    ]));
    assert_eq!(out, format!("5000000 {expected}\n"));
}

#[test]
fn a_tcp_client_tunnel_forwards_a_local_port() {
    let server = HttpServer::start();
    let port = free_port();
    let extra = format!(
        "\n[TCPClientTunnel]\nBindAddress = 127.0.0.1:{port}\nTarget = localhost:{}\n",
        server.addr.port()
    );
    let _pair = Pair::start(
        "client-tunnel",
        PairOptions {
            extra_client: extra,
            ..Default::default()
        },
    );
    let out = curl(&[&format!("http://127.0.0.1:{port}/hello")]);
    assert_eq!(curl_text(&out), "hello underpass\n");
}

#[test]
fn a_tcp_server_tunnel_serves_a_tunnel_port_from_a_local_target() {
    // Two clients peered directly: B's TCPClientTunnel reaches A's tunnel
    // port, which A's TCPServerTunnel forwards to a local server.
    let server = HttpServer::start();
    let scratch = Scratch::new("server-tunnel");
    let (a, b) = (keys(), keys());
    let a_port = free_port();
    let b_local = free_port();
    let a_cfg = scratch.write(
        "a.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.60.0.1/32\nListenPort = {a_port}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.60.0.2/32\n\n\
             [TCPServerTunnel]\nListenPort = 8080\nTarget = 127.0.0.1:{}\n",
            a.private,
            b.public,
            server.addr.port()
        ),
    );
    let b_cfg = scratch.write(
        "b.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.60.0.2/32\n\n[Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{a_port}\nAllowedIPs = 10.60.0.1/32\n\n\
             [TCPClientTunnel]\nBindAddress = 127.0.0.1:{b_local}\nTarget = 10.60.0.1:8080\n",
            b.private, a.public
        ),
    );
    let mut pa = Process::start("a", &scratch, &["--config", a_cfg.to_str().unwrap()]);
    pa.wait_for_log("tcp-server-tunnel", Duration::from_secs(10));
    let mut pb = Process::start("b", &scratch, &["--config", b_cfg.to_str().unwrap()]);
    pb.wait_for_log("handshake completed", Duration::from_secs(20));
    let out = curl(&[&format!("http://127.0.0.1:{b_local}/hello")]);
    assert_eq!(curl_text(&out), "hello underpass\n");
}

/// A UDP echo server on loopback.
fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

#[test]
fn udp_associate_round_trips_a_datagram() {
    let echo = udp_echo();
    let pair = Pair::start("udp-associate", PairOptions::default());
    // The control connection keeps the association open.
    let (_control, relay) = socks::udp_associate(pair.socks, "0.0.0.0:0".parse().unwrap());
    assert_eq!(
        relay.ip(),
        pair.socks.ip(),
        "the relay is on the listener's address"
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut datagram = vec![0, 0, 0, 1, 127, 0, 0, 1];
    datagram.extend_from_slice(&echo.port().to_be_bytes());
    datagram.extend_from_slice(b"ping through the tunnel");
    // UDP may lose the first datagram while the path warms up: retry, bounded.
    let mut got = None;
    for _ in 0..5 {
        udp.send_to(&datagram, relay).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, _)) = udp.recv_from(&mut buf) {
            got = Some(buf[..n].to_vec());
            break;
        }
    }
    let got = got.expect("an answer through the relay within 5 tries");
    assert_eq!(
        &got[..10],
        &datagram[..10],
        "the reply names the echo server"
    );
    assert_eq!(&got[10..], b"ping through the tunnel");
}

#[test]
fn garbage_gets_an_error_reply_and_the_next_client_is_served() {
    let server = HttpServer::start();
    let pair = Pair::start("garbage", PairOptions::default());
    // SOCKS5: a TLS ClientHello and an HTTP request get "no acceptable
    // methods" and a close (SOCKS4 is served: see socks4.rs).
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        &b"GET / HTTP/1.1\r\n\r\n"[..],
    ] {
        let mut s = TcpStream::connect(pair.socks).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(garbage).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert_eq!(reply, [5, 0xff], "SOCKS5 refusal for {garbage:?}");
    }
    // An unknown SOCKS5 command gets "command not supported".
    let mut s = TcpStream::connect(pair.socks).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[5, 1, 0, 5, 9, 0, 1, 127, 0, 0, 1, 0, 80])
        .unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert_eq!(&reply[..4], &[5, 0, 5, 7]);
    // HTTP: garbage gets a 400.
    let mut s = TcpStream::connect(pair.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00 nonsense\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // And everyone else is still served.
    assert_eq!(
        curl_text(&curl(&[
            "--socks5",
            &pair.socks.to_string(),
            &server.url("/hello")
        ])),
        "hello underpass\n"
    );
    assert_eq!(
        curl_text(&curl(&[
            "-x",
            &format!("http://{}", pair.http),
            &server.url("/hello")
        ])),
        "hello underpass\n"
    );
}

#[test]
fn unreachable_and_refused_destinations_get_the_right_answers() {
    let pair = Pair::start("refusals", PairOptions::default());
    let closed = free_port();
    // Refused by the destination: SOCKS5 reply 5, which curl reports as 97.
    let out = curl(&[
        "--socks5",
        &pair.socks.to_string(),
        &format!("http://127.0.0.1:{closed}/"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(5)"),
        "SOCKS5 reply 5, connection refused: {err}"
    );
    // A name that does not exist: 502 from the HTTP proxy.
    let out = curl(&[
        "-x",
        &format!("http://{}", pair.http),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://no-such-host.invalid/",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
}

#[test]
fn a_config_error_exits_2_and_names_file_line_and_key() {
    let scratch = Scratch::new("bad-config");
    let path = scratch.write(
        "bad.conf",
        "[Interface]\nPrivateKey = not-a-key\nAddress = 10.0.0.2/32\n",
    );
    let out = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf:2") && err.contains("PrivateKey"),
        "{err}"
    );
    assert!(
        !err.contains("not-a-key"),
        "the key's text is never printed: {err}"
    );
    let out = run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_says_config_ok_and_genkey_pubkey_agree() {
    let scratch = Scratch::new("check");
    let k = keys();
    let path = scratch.write(
        "ok.conf",
        &format!("[Interface]\nPrivateKey = {}\nAddress = 10.0.0.2/32\n\n[Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:1\nAllowedIPs = 0.0.0.0/0\n", k.private, keys().public),
    );
    let out = run(&["--config", path.to_str().unwrap(), "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config OK\n");
    let private = run(&["genkey"]);
    let private = String::from_utf8(private.stdout).unwrap();
    let mut child = std::process::Command::new(binary())
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let public = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let expected = private
        .trim()
        .parse::<underpass_core::PrivateKey>()
        .unwrap()
        .public_key()
        .to_base64();
    assert_eq!(public.trim(), expected);
}

#[test]
fn a_busy_listen_address_is_an_error_at_start() {
    let scratch = Scratch::new("busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let k = keys();
    let path = scratch.write(
        "c.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.2/32\n\n[Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:1\nAllowedIPs = 0.0.0.0/0\n\n[Socks5]\nBindAddress = {}\n",
            k.private,
            keys().public,
            taken.local_addr().unwrap()
        ),
    );
    let out = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut pair = Pair::start("sigterm", PairOptions::default());
    let status = pair.client.terminate();
    assert!(
        status.success(),
        "client exit: {status}\n{}",
        pair.client.log()
    );
    let status = pair.gateway.terminate();
    assert!(status.success(), "gateway exit: {status}");
}

#[test]
fn a_udp_proxy_tunnel_relays_datagrams_both_ways() {
    let echo = udp_echo();
    let port = free_port();
    let extra = format!("\n[UDPProxyTunnel]\nBindAddress = 127.0.0.1:{port}\nTarget = 127.0.0.1:{}\nInactivityTimeout = 30\n", echo.port());
    let _pair = Pair::start(
        "udp-proxy",
        PairOptions {
            extra_client: extra,
            ..Default::default()
        },
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = None;
    for i in 0..5u8 {
        udp.send_to(&[i; 100], ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 200];
        if let Ok((n, _)) = udp.recv_from(&mut buf) {
            got = Some(buf[..n].to_vec());
            break;
        }
    }
    let got = got.expect("an echo through the UDP forward within 5 tries");
    assert_eq!(got.len(), 100);
}

#[test]
fn a_stdio_tunnel_pipes_stdin_and_stdout_to_the_target() {
    let server = HttpServer::start();
    let scratch = Scratch::new("stdio");
    let (g, c) = (keys(), keys());
    let gport = free_port();
    let gcfg = scratch.write(
        "g.conf",
        &format!("[Interface]\nPrivateKey = {}\nAddress = 10.70.0.1/32\nListenPort = {gport}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.70.0.2/32\n\n[Gateway]\nAllowedDestinations = 127.0.0.0/8\n", g.private, c.public),
    );
    let ccfg = scratch.write(
        "c.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.70.0.2/32\n\n[Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{gport}\nAllowedIPs = 0.0.0.0/0\n\n[STDIOTunnel]\nTarget = 127.0.0.1:{}\n",
            c.private,
            g.public,
            server.addr.port()
        ),
    );
    let mut gateway = Process::start(
        "gateway",
        &scratch,
        &["gateway", "--config", gcfg.to_str().unwrap()],
    );
    gateway.wait_for_log("gateway listening", Duration::from_secs(10));
    let mut child = std::process::Command::new(binary())
        .args(["--config", ccfg.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // stdin is closed now; the tunnel ends when the server closes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the stdio tunnel ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("HTTP/1.1 200 OK") && stdout.ends_with("hello underpass\n"),
        "{stdout}"
    );
    assert!(out.status.success());
}

#[test]
fn the_default_gateway_keeps_its_own_loopback_private() {
    let server = HttpServer::start();
    let scratch = Scratch::new("allowlist");
    let (g, c) = (keys(), keys());
    let gport = free_port();
    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gcfg = scratch.write(
        "g.conf",
        &format!("[Interface]\nPrivateKey = {}\nAddress = 10.71.0.1/32\nListenPort = {gport}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.71.0.2/32\n", g.private, c.public),
    );
    let ccfg = scratch.write(
        "c.conf",
        &format!("[Interface]\nPrivateKey = {}\nAddress = 10.71.0.2/32\n\n[Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{gport}\nAllowedIPs = 0.0.0.0/0\n\n[Socks5]\nBindAddress = {socks}\n", c.private, g.public),
    );
    let mut gateway = Process::start(
        "gateway",
        &scratch,
        &[
            "gateway",
            "--config",
            gcfg.to_str().unwrap(),
            "--metrics",
            &format!("127.0.0.1:{}", free_port()),
        ],
    );
    gateway.wait_for_log("gateway listening", Duration::from_secs(10));
    let mut client = Process::start("client", &scratch, &["--config", ccfg.to_str().unwrap()]);
    client.wait_for_log("handshake completed", Duration::from_secs(20));
    wait_tcp(socks, Duration::from_secs(5));
    let out = curl(&["--socks5", &socks.to_string(), &server.url("/hello")]);
    assert!(
        !out.status.success(),
        "loopback is not a default destination"
    );
    // Refused by the gateway's policy: reply 2, not allowed by ruleset.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(2)"),
        "not allowed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the gateway says why.
    gateway.wait_for_log("refused a flow", Duration::from_secs(5));
    assert!(
        gateway.log().contains(&server.addr.to_string()),
        "the refusal names the destination:\n{}",
        gateway.log()
    );
}

#[test]
fn metrics_and_pcap_show_the_traffic() {
    let server = HttpServer::start();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let scratch = Scratch::new("metrics-pcap");
    let pcap = scratch.path("inner.pcap");
    let pair = Pair::start(
        "metrics",
        PairOptions {
            client_args: vec![
                "--metrics".into(),
                metrics.to_string(),
                "--pcap".into(),
                pcap.to_str().unwrap().into(),
            ],
            ..Default::default()
        },
    );
    wait_tcp(metrics, Duration::from_secs(5));
    assert_eq!(
        curl_text(&curl(&[
            "--socks5",
            &pair.socks.to_string(),
            &server.url("/hello")
        ])),
        "hello underpass\n"
    );
    let text = curl_text(&curl(&[&format!("http://{metrics}/metrics")]));
    assert!(text.contains("underpass_handshakes_total 1"), "{text}");
    let connections: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("underpass_proxy_connections_total "))
        .and_then(|v| v.parse().ok())
        .expect("a connection counter");
    assert!(connections >= 1, "{text}");
    assert!(
        text.contains("underpass_datagrams_dropped_total{reason=\"invalid_mac1\"} 0"),
        "{text}"
    );
    assert_eq!(
        curl_text(&curl(&[&format!("http://{metrics}/healthz")])),
        "ok\n"
    );
    // SIGTERM flushes the capture: a pcap header and the packets.
    let mut pair = pair;
    assert!(pair.client.terminate().success());
    let bytes = std::fs::read(&pcap).unwrap();
    assert!(bytes.len() > 24 + 10 * 16, "{} bytes captured", bytes.len());
    assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes());
}

/// A UDP echo server on loopback that also keeps every payload it got.
fn recording_udp_echo() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            log.lock().unwrap().push(buf[..n].to_vec());
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    (addr, seen)
}

/// Sends `payload` to `echo` through `relay` from `from` until the echo
/// comes back (5 tries of 2 s: the path may lose the first datagram).
fn echo_through_relay(from: &UdpSocket, relay: SocketAddr, echo: SocketAddr, payload: &[u8]) {
    from.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let datagram = socks::datagram(echo, payload);
    for _ in 0..5 {
        from.send_to(&datagram, relay).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, _)) = from.recv_from(&mut buf) {
            assert_eq!(&buf[10..n], payload, "the echo of what was sent");
            return;
        }
    }
    panic!(
        "the association's own client ({}) got no answer through the relay in 5 tries",
        from.local_addr().unwrap()
    );
}

/// Nothing arrives on `socket` for a second (it was not answered).
fn nothing_arrives(socket: &UdpSocket, who: &str) {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((n, _)) = socket.recv_from(&mut buf) {
        panic!("{who} got an answer through the relay: {:?}", &buf[..n]);
    }
}

#[test]
fn a_udp_association_takes_datagrams_only_from_the_client_that_asked() {
    let (echo, seen) = recording_udp_echo();
    let pair = Pair::start("udp-impostor", PairOptions::default());

    // The client asks without naming its address; another loopback
    // address sends to the relay first.
    let (_control, relay) = socks::udp_associate(pair.socks, "0.0.0.0:0".parse().unwrap());
    let impostor = UdpSocket::bind("127.0.0.9:0").unwrap();
    impostor
        .send_to(&socks::datagram(echo, b"from 127.0.0.9"), relay)
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo_through_relay(&client, relay, echo, b"from the client");
    nothing_arrives(&impostor, "a socket on 127.0.0.9");

    // The client names its port (not its address): another port of the
    // same host that sends first is not the client.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let named = SocketAddr::from(([0, 0, 0, 0], client.local_addr().unwrap().port()));
    let (_control, relay) = socks::udp_associate(pair.socks, named);
    let neighbour = UdpSocket::bind("127.0.0.1:0").unwrap();
    neighbour
        .send_to(&socks::datagram(echo, b"from another port"), relay)
        .unwrap();
    echo_through_relay(&client, relay, echo, b"from the named port");
    nothing_arrives(&neighbour, "another port of the client's host");

    let seen = seen.lock().unwrap();
    for intruder in [&b"from 127.0.0.9"[..], b"from another port"] {
        assert!(
            !seen.iter().any(|d| d == intruder),
            "{:?} went through the tunnel",
            String::from_utf8_lossy(intruder)
        );
    }
}

#[test]
fn the_http_proxy_gives_the_origin_the_targets_host() {
    let server = HttpServer::start();
    let pair = Pair::start("http-host", PairOptions::default());
    let proxy = format!("http://{}", pair.http);
    let url = server.url("/host");
    // The client's own Host names somewhere else: the origin must see the
    // host the request went to (RFC 9112 section 3.2.2).
    let out = curl(&["-x", &proxy, "-H", "Host: somewhere-else.example", &url]);
    assert_eq!(curl_text(&out), server.addr.to_string());
    // HTTP/1.0 with no Host at all: the proxy writes one.
    assert_eq!(http10_body(pair.http, &url), server.addr.to_string());
}

#[test]
fn the_http_proxy_brackets_an_ipv6_target_in_the_host_it_writes() {
    // Client and gateway with IPv6 tunnel addresses, an origin on [::1].
    let server = HttpServer::start_on("[::1]:0".parse().unwrap());
    let scratch = Scratch::new("http-host-v6");
    let (c, g) = (keys(), keys());
    let port = free_port();
    let gateway_conf = scratch.write(
        "gateway.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {GATEWAY_IP}/32, fd00:50::1/128\nListenPort = {port}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {CLIENT_IP}/32, fd00:50::2/128\n\n\
             [Gateway]\nAllowedDestinations = ::1/128\n",
            g.private, c.public
        ),
    );
    let mut gateway = Process::start(
        "gateway",
        &scratch,
        &["gateway", "--config", gateway_conf.to_str().unwrap()],
    );
    gateway.wait_for_log("gateway listening", Duration::from_secs(20));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let client_conf = scratch.write(
        "client.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32, fd00:50::2/128\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{port}\nAllowedIPs = 0.0.0.0/0, ::/0\n\n\
             [http]\nBindAddress = {http}\n",
            c.private, g.public
        ),
    );
    let mut client = Process::start(
        "client",
        &scratch,
        &["--config", client_conf.to_str().unwrap()],
    );
    client.wait_for_log("handshake completed", Duration::from_secs(20));
    wait_tcp(http, Duration::from_secs(10));
    let url = server.url("/host");
    assert!(url.starts_with("http://[::1]:"), "{url}");
    let expected = format!("[::1]:{}", server.addr.port());
    // HTTP/1.0 with no Host: the one the proxy writes has the brackets.
    assert_eq!(http10_body(http, &url), expected);
    // A client's Host is replaced by the same.
    let out = curl(&[
        "-x",
        &format!("http://{http}"),
        "-H",
        "Host: somewhere-else.example",
        &url,
    ]);
    assert_eq!(curl_text(&out), expected);
}

/// The body of the answer to `GET url HTTP/1.0` (no Host) through the
/// HTTP proxy at `proxy`.
fn http10_body(proxy: SocketAddr, url: &str) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {url} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") => body.to_string(),
        _ => panic!("not an HTTP answer: {reply:?}"),
    }
}
