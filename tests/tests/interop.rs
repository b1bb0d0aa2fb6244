//! underpass against wireguard-go, an implementation we did not write: as
//! its client, and as the gateway it dials. Each test builds its own
//! network namespace. They need root, so they are ignored unless asked for
//! (`-- --ignored`, which ./test.sh does as root); asked for where they
//! cannot run, they fail with the reason.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use underpass_tests::interop::Peer;
use underpass_tests::*;

fn ok_body(out: &std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// An underpass client of `peer` with SOCKS5 and HTTP listeners.
struct Client {
    process: Process,
    socks: SocketAddr,
    http: SocketAddr,
}

fn client(peer: &Peer, peer_extra: &str, extra: &str) -> Client {
    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = peer.dir.write(
        "client.conf",
        &peer.client_config(
            peer_extra,
            &format!("[Socks5]\nBindAddress = {socks}\n\n[http]\nBindAddress = {http}\n{extra}"),
        ),
    );
    let mut process = Process::start("underpass", &peer.dir, &["--config", cfg.to_str().unwrap()]);
    process.wait_for_log("handshake completed", Duration::from_secs(20));
    wait_tcp(socks, Duration::from_secs(5));
    Client {
        process,
        socks,
        http,
    }
}

#[test]
#[ignore = "needs root, wireguard-go and /dev/net/tun: ./test.sh runs it as root"]
fn underpass_fetches_files_through_wireguard_go_with_its_dns() {
    let peer = Peer::start("wg-files");
    let c = client(&peer, "", "");
    // files.test exists only in the DNS server behind wireguard-go.
    let url = "http://files.test:8000/big.bin";
    for args in [
        vec!["--socks5-hostname", &c.socks.to_string()],
        vec!["-x", &format!("http://{}", c.http)],
    ] {
        let file = peer.dir.path("got.bin");
        let mut a: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        a.extend(["-o", file.to_str().unwrap(), url]);
        ok_body(&curl(&a));
        assert_eq!(
            Checksum::of_file(&file),
            (peer.file_checksum, peer.file_len),
            "via {args:?}"
        );
    }
    let out = curl(&[
        "--socks5-hostname",
        &c.socks.to_string(),
        "http://missing.test:8000/",
    ]);
    assert!(
        !out.status.success(),
        "a name the peer's DNS does not know fails"
    );
    drop(c);
}

#[test]
#[ignore = "needs root, wireguard-go and /dev/net/tun: ./test.sh runs it as root"]
fn udp_associate_reaches_the_echo_behind_wireguard_go() {
    let peer = Peer::start("wg-udp");
    let c = client(&peer, "", "");
    let mut control = TcpStream::connect(c.socks).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    control.write_all(&[5, 1, 0]).unwrap();
    let mut r = [0u8; 2];
    control.read_exact(&mut r).unwrap();
    control.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut r = [0u8; 10];
    control.read_exact(&mut r).unwrap();
    assert_eq!(r[1], 0, "UDP ASSOCIATE succeeded");
    let relay = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[8], r[9]])));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let ip: std::net::Ipv4Addr = peer.tunnel_ip().parse().unwrap();
    let mut datagram = vec![0, 0, 0, 1];
    datagram.extend_from_slice(&ip.octets());
    datagram.extend_from_slice(&7u16.to_be_bytes());
    datagram.extend_from_slice(b"echo me, wireguard-go");
    let mut got = None;
    for _ in 0..5 {
        udp.send_to(&datagram, relay).unwrap();
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = udp.recv_from(&mut buf) {
            got = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(got.expect("an echo within 5 tries"), datagram);
    drop(c);
}

#[test]
#[ignore = "needs root, wireguard-go and /dev/net/tun: ./test.sh runs it as root"]
fn a_tcp_client_tunnel_reaches_the_echo_behind_wireguard_go() {
    let peer = Peer::start("wg-forward");
    let port = free_port();
    let c = client(
        &peer,
        "",
        &format!(
            "\n[TCPClientTunnel]\nBindAddress = 127.0.0.1:{port}\nTarget = {}:7\n",
            peer.tunnel_ip()
        ),
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let message = content(3, 100_000);
    s.write_all(&message).unwrap();
    let mut back = vec![0u8; message.len()];
    s.read_exact(&mut back).unwrap();
    assert!(back == message, "the echo came back intact");
    drop(c);
}

#[test]
#[ignore = "needs root, wireguard-go and /dev/net/tun: ./test.sh runs it as root"]
fn a_large_upload_through_wireguard_go_arrives_intact() {
    let peer = Peer::start("wg-upload");
    let c = client(&peer, "", "");
    let echo = SocketAddr::new(peer.tunnel_ip().parse().unwrap(), 7);
    let (mut s, code) = underpass_tests::socks::connect(c.socks, echo);
    assert_eq!(code, 0, "SOCKS5 CONNECT to the echo succeeded");
    // Write and read at once: the echo sends back as it receives, so a
    // writer that never reads would stall on full windows.
    const LEN: u64 = 16 << 20;
    let mut writer = s.try_clone().unwrap();
    let upload = std::thread::spawn(move || {
        stream_content(9, LEN, |chunk| writer.write_all(chunk).unwrap());
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Checksum::default();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match s.read(&mut buf) {
            // A signal to this process (a child ended): read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap_or_else(|e| {
                panic!(
                    "reading the echo after {got} bytes: {e}\n{}",
                    c.process.log()
                )
            }),
        };
        if n == 0 {
            break;
        }
        back.update(&buf[..n]);
        got += n as u64;
    }
    upload.join().unwrap();
    assert_eq!(got, LEN, "every byte came back");
    assert_eq!(back.value(), content_checksum(9, LEN), "and intact");
}

#[test]
#[ignore = "needs root, wireguard-go and /dev/net/tun: ./test.sh runs it as root"]
fn both_ways_through_wireguard_go_over_a_lossy_long_path_arrive_intact() {
    // Linux sends to our receiver (holes, SACK, reassembly) and ours to
    // Linux's, over 40 ms with 1% loss each way and a 100 Mbit/s
    // bottleneck: each direction must keep moving and arrive intact.
    let peer = Peer::start("wg-lossy");
    let path =
        underpass_tests::impair::Impairment::path(Duration::from_millis(40), 0.01, Some(100.0));
    let relay = underpass_tests::impair::ImpairRelay::start(peer.endpoint(), path, 7);
    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = peer.dir.write(
        "lossy.conf",
        &peer.client_config_via(
            &peer.client,
            2,
            relay.addr,
            "",
            &format!("[Socks5]\nBindAddress = {socks}\n"),
        ),
    );
    let mut process = Process::start("underpass", &peer.dir, &["--config", cfg.to_str().unwrap()]);
    process.wait_for_log("handshake completed", Duration::from_secs(20));
    wait_tcp(socks, Duration::from_secs(5));
    let echo = SocketAddr::new(peer.tunnel_ip().parse().unwrap(), 7);
    let (mut s, code) = underpass_tests::socks::connect(socks, echo);
    assert_eq!(code, 0, "SOCKS5 CONNECT to the echo succeeded");
    // A stall shows as a read that waits this long for anything.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    const LEN: u64 = 4 << 20;
    let mut writer = s.try_clone().unwrap();
    let upload = std::thread::spawn(move || {
        stream_content(11, LEN, |chunk| writer.write_all(chunk).unwrap());
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let start = Instant::now();
    let (mut back, mut got, mut buf) = (Checksum::default(), 0u64, vec![0u8; 1 << 16]);
    loop {
        let n = s.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "the echo stopped after {got} of {LEN} bytes ({e}); relay up {}, down {}\n{}",
                relay.up,
                relay.down,
                process.log()
            )
        });
        if n == 0 {
            break;
        }
        back.update(&buf[..n]);
        got += n as u64;
    }
    upload.join().unwrap();
    assert_eq!(got, LEN, "every byte came back");
    assert_eq!(back.value(), content_checksum(11, LEN), "and intact");
    eprintln!(
        "4 MiB each way in {:?}; relay up {}, down {}",
        start.elapsed(),
        relay.up,
        relay.down
    );
}

#[test]
#[ignore = "needs root, wireguard-go and /dev/net/tun: ./test.sh runs it as root"]
fn traffic_resumes_after_wireguard_go_restarts() {
    let peer = Peer::start("wg-restart");
    let c = client(&peer, "", "");
    let url = format!("http://{}:8000/big.bin", peer.tunnel_ip());
    ok_body(&curl(&[
        "--socks5",
        &c.socks.to_string(),
        "-o",
        "/dev/null",
        &url,
    ]));
    peer.restart_wireguard_go();
    // wireguard-go forgot the session: the client notices that its SYN
    // goes unanswered and handshakes again within a second, or, as here,
    // where its last handshake is less than Rekey-Timeout old, when that
    // time is up (one initiation per Rekey-Timeout): about 6 s measured
    // (RELIABILITY.md), where Keepalive-Timeout + Rekey-Timeout alone took
    // 16 s.
    let start = Instant::now();
    loop {
        let out = curl(&[
            "--max-time",
            "3",
            "--socks5",
            &c.socks.to_string(),
            "-o",
            "/dev/null",
            &url,
        ]);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "no traffic 12 s after the restart:\n{}",
            c.process.log()
        );
    }
    eprintln!("traffic resumed {:?} after the restart", start.elapsed());
}

#[test]
#[ignore = "needs root, wireguard-go and /dev/net/tun: ./test.sh runs it as root"]
fn persistent_keepalive_is_seen_on_the_wire() {
    let peer = Peer::start("wg-keepalive");
    let c = client(&peer, "PersistentKeepalive = 1", "");
    // Capture, inside the namespace, what the client sends while idle:
    // keepalives are transport messages of 32 bytes.
    let out = peer.exec(&[
        "timeout",
        "4",
        "tcpdump",
        "-l",
        "-n",
        "-i",
        &format!("upp{}", peer.id),
        "udp and dst port 51820 and src host",
        &format!("10.201.{}.1", peer.id),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let keepalives = text.lines().filter(|l| l.ends_with("length 32")).count();
    assert!(
        (2..=6).contains(&keepalives),
        "{keepalives} keepalives in 4 s:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(c);
}

#[test]
#[ignore = "needs root, wireguard-go and /dev/net/tun: ./test.sh runs it as root"]
fn wireguard_go_dials_the_underpass_gateway_and_reaches_the_host() {
    let peer = Peer::start("wg-reverse");
    let id = peer.id;
    let (gateway, wg_client) = (keys(), keys());
    let port = free_port();
    let cfg = peer.dir.write(
        "gateway.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.203.{id}.1/32\nListenPort = {port}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.203.{id}.2/32\n\n[Gateway]\nAllowedDestinations = 10.204.{id}.0/24\n",
            gateway.private, wg_client.public
        ),
    );
    let mut gw = Process::start(
        "gateway",
        &peer.dir,
        &["gateway", "--config", cfg.to_str().unwrap()],
    );
    gw.wait_for_log("gateway listening", Duration::from_secs(10));
    peer.start_client(
        &wg_client,
        &gateway.public,
        format!("10.201.{id}.1:{port}").parse().unwrap(),
    );
    // A server on the host, at an address the namespace reaches only
    // through the tunnel.
    let server = http_server::HttpServer::start_on(format!("10.204.{id}.1:0").parse().unwrap());
    let url = format!("http://{}/bytes/1000000?seed=4", server.addr);
    let start = Instant::now();
    let out = loop {
        let out = peer.exec(&["curl", "--silent", "--show-error", "--max-time", "10", &url]);
        if out.status.success() || start.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        out.status.success(),
        "curl in the namespace: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    assert_eq!(
        Checksum::of(&out.stdout),
        Checksum::of(&content(4, 1_000_000))
    );
    // And the other way: wireguard-go's side uploads to the host.
    const UP: u64 = 4 << 20;
    let file = peer.dir.path("up.bin");
    let sum = write_content(&file, 5, UP);
    let out = peer.exec(&[
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        "-T",
        file.to_str().unwrap(),
        &format!("http://{}/sink", server.addr),
    ]);
    assert!(
        out.status.success(),
        "upload from the namespace: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{UP} {sum}"),
        "the server received the upload intact"
    );
    assert!(gw.log().contains("handshake completed"));
}
