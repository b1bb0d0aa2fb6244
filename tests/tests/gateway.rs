//! What a gateway lets through, and what a client can make it hold: UDP
//! flows are capped and expire, an IPv4-mapped address is judged as the
//! IPv4 address it is, the host's own addresses stay private (also ones
//! that appear later), and the tunnel's subnets never go to the host's
//! network.
//!
//! The tests about the host's addresses run in a network namespace of
//! their own, where they can add addresses and routes: root only, so
//! ignored unless asked for (./test.sh asks, as root).

// libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::{
    curl, curl_text, free_port, keys, socks, wait_tcp, Keys, Pair, PairOptions, Process, Scratch,
};

/// A UDP echo server on `ip`.
fn udp_echo(ip: &str) -> SocketAddr {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A SOCKS5 UDP association: the control connection (the association
/// Sends `payload` to `dst` through the relay until the echo comes back
/// (UDP may lose the first while the path warms up); bounded.
fn echo_through(udp: &UdpSocket, relay: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
    let datagram = socks::datagram(dst, payload);
    let mut buf = [0u8; 2048];
    for _ in 0..5 {
        udp.send_to(&datagram, relay).unwrap();
        while let Ok((n, _)) = udp.recv_from(&mut buf) {
            if buf[..n] == datagram[..] {
                return true;
            }
        }
    }
    false
}

#[test]
fn a_udp_spray_is_capped_per_client_expires_and_leaves_tcp_working() {
    let server = HttpServer::start();
    let echo = udp_echo("127.0.0.1");
    let pair = Pair::start("udp-spray", PairOptions::default());
    let (_control, relay) = socks::udp_associate(pair.socks, "0.0.0.0:0".parse().unwrap());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        echo_through(&udp, relay, echo, b"before"),
        "a UDP echo before the spray"
    );
    let (fds_before, (rss_before, _)) = (pair.gateway.open_fds(), pair.gateway.rss_kib());

    // One datagram to each of up to 6,000 destinations (127.X.Y.Z:9,
    // where nothing listens), until the gateway says it refused some.
    let started = Instant::now();
    let mut sent = 0u32;
    let limit_logged = |p: &Pair| p.gateway.log().contains("UDP flow limit reached");
    while sent < 6000 && !limit_logged(&pair) {
        for _ in 0..100 {
            let dst = SocketAddr::from((
                [127, 1 + (sent >> 16) as u8, (sent >> 8) as u8, sent as u8],
                9,
            ));
            udp.send_to(&socks::datagram(dst, b"spray"), relay).unwrap();
            sent += 1;
        }
        // Paced, so that the client's relay socket does not overflow.
        std::thread::sleep(Duration::from_millis(10));
    }
    let (fds_after, (rss_after, _)) = (pair.gateway.open_fds(), pair.gateway.rss_kib());
    println!(
        "spray: {sent} destinations in {:?}; gateway fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB",
        started.elapsed()
    );
    assert!(
        limit_logged(&pair),
        "no refusal logged after {sent} destinations (fds {fds_before} -> {fds_after}):\n{}",
        pair.gateway.log()
    );
    let lines = pair.gateway.log().matches("UDP flow limit reached").count();
    assert!(
        lines <= 2,
        "{lines} log lines for one spray: not rate-limited"
    );
    // The default --max-udp-flows-per-client is 1,024: a host socket each.
    assert!(
        fds_after <= fds_before + 1024 + 32,
        "the gateway holds {fds_after} descriptors after the spray ({fds_before} before)"
    );
    assert!(
        rss_after <= rss_before + 48 * 1024,
        "the gateway's RSS grew from {rss_before} to {rss_after} KiB"
    );

    // The flow that was there keeps working, and so does TCP.
    assert!(
        echo_through(&udp, relay, echo, b"during"),
        "the existing UDP flow stopped working"
    );
    assert_eq!(
        curl_text(&curl(&[
            "--socks5",
            &pair.socks.to_string(),
            &server.url("/hello")
        ])),
        "hello underpass\n"
    );

    // The unanswered flows go after 30 s, and a new destination works.
    let deadline = Instant::now() + Duration::from_secs(50);
    while pair.gateway.open_fds() > fds_before + 8 {
        assert!(
            Instant::now() < deadline,
            "the sprayed flows still hold {} descriptors ({fds_before} before) after {:?}",
            pair.gateway.open_fds(),
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "spray: back to {} descriptors after {:?}",
        pair.gateway.open_fds(),
        started.elapsed()
    );
    let other = udp_echo("127.0.0.1");
    assert!(
        echo_through(&udp, relay, other, b"after"),
        "no room for a new UDP flow after the spray expired"
    );
}

/// A gateway and a client set up by hand; processes before the scratch
/// directory, so they can still show their logs.
struct Custom {
    gateway: Process,
    _client: Process,
    socks: SocketAddr,
    http: SocketAddr,
    _scratch: Scratch,
}

/// A gateway on `gateway_addresses` whose one client has
/// `client_addresses` (also its AllowedIPs there), with `gateway_tail`
/// appended to the gateway's config; the client routes everything to it.
fn custom_pair(
    name: &str,
    gateway_addresses: &str,
    client_addresses: &str,
    gateway_tail: &str,
) -> Custom {
    let scratch = Scratch::new(name);
    let (g, c): (Keys, Keys) = (keys(), keys());
    let port = free_port();
    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gcfg = scratch.write(
        "gateway.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {gateway_addresses}\nListenPort = {port}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {client_addresses}\n{gateway_tail}",
            g.private, c.public
        ),
    );
    let ccfg = scratch.write(
        "client.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {client_addresses}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{port}\nAllowedIPs = 0.0.0.0/0, ::/0\n\n\
             [Socks5]\nBindAddress = {socks}\n\n[http]\nBindAddress = {http}\n",
            c.private, g.public
        ),
    );
    let mut gateway = Process::start(
        "gateway",
        &scratch,
        &["gateway", "--config", gcfg.to_str().unwrap()],
    );
    gateway.wait_for_log("gateway listening", Duration::from_secs(20));
    let mut client = Process::start("client", &scratch, &["--config", ccfg.to_str().unwrap()]);
    client.wait_for_log("handshake completed", Duration::from_secs(20));
    wait_tcp(socks, Duration::from_secs(10));
    Custom {
        gateway,
        _client: client,
        socks,
        http,
        _scratch: scratch,
    }
}

/// curl through the SOCKS proxy: the body, or the error.
fn fetch(socks: SocketAddr, url: &str) -> Result<String, String> {
    let out = curl(&["--max-time", "20", "--socks5", &socks.to_string(), url]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn an_ipv4_mapped_destination_is_judged_as_the_ipv4_address() {
    let server = HttpServer::start();
    let pair = custom_pair(
        "mapped",
        "10.72.0.1/32, fd72::1/128",
        "10.72.0.2/32, fd72::2/128",
        "\n[Gateway]\nAllowedDestinations = 10.0.0.0/8, ::/0\n",
    );
    let port = server.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/hello"),
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
        format!("http://[::ffff:7f00:1]:{port}/hello"),
    ] {
        // The gateway answers "administratively prohibited": SOCKS5
        // reply 2 (not allowed by ruleset), HTTP 403; not "refused".
        let got = fetch(pair.socks, &url);
        assert!(
            got.as_ref().is_err_and(|e| e.contains("(2)")),
            "{url}: {got:?} (want SOCKS reply 2, not allowed by ruleset)"
        );
        let out = curl(
            &[
                "--max-time",
                "20",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
            ]
            .into_iter()
            .chain([format!("http://{}", pair.http).as_str(), url.as_str()])
            .collect::<Vec<_>>(),
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "403",
            "{url} through the HTTP proxy"
        );
    }
    // (A closed port the policy allows still gets reply 5: proxy.rs.)
    assert_eq!(
        server.connections.load(Ordering::Relaxed),
        0,
        "a mapped address reached the loopback server"
    );
    assert!(
        pair.gateway
            .log()
            .contains("outside [Gateway] AllowedDestinations"),
        "the refusal is not logged:\n{}",
        pair.gateway.log()
    );
}

/// Moves the calling thread (and so the processes and threads it starts)
/// into a new network namespace with loopback up; why not, if it cannot.
fn own_network_namespace() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: a network namespace needs it".into());
    }
    // SAFETY: unshare affects only this thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    ip(&["link", "set", "lo", "up"]);
    Ok(())
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip is installed");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the binary before the namespace exists (cargo may want the
/// network for nothing, but better not to find out).
fn binary_ready() -> PathBuf {
    underpass_tests::binary()
}

#[test]
#[ignore = "needs root (a network namespace of its own): ./test.sh runs it as root"]
fn the_default_gateway_refuses_the_hosts_own_addresses_also_new_ones() {
    binary_ready();
    if let Err(why) = own_network_namespace() {
        panic!("cannot run: {why}");
    }
    // An address of an interface, as a LAN or public one; and a network
    // routed to this host that is not one of its addresses, standing for
    // other machines on the LAN.
    ip(&["addr", "add", "198.18.0.1/32", "dev", "lo"]);
    ip(&["route", "add", "local", "198.19.0.0/24", "dev", "lo"]);
    let server = HttpServer::start_on("0.0.0.0:0".parse().unwrap());
    let port = server.addr.port();
    let url = |host: &str| format!("http://{host}:{port}/hello");
    assert!(
        TcpStream::connect(("198.18.0.1", port)).is_ok(),
        "the server answers on the host's address"
    );
    let pair = custom_pair("host-addresses", "10.73.0.1/32", "10.73.0.2/32", "");

    assert_eq!(
        fetch(pair.socks, &url("198.19.0.5")).as_deref(),
        Ok("hello underpass\n"),
        "the rest of the network is reachable"
    );
    let got = fetch(pair.socks, &url("198.18.0.1"));
    assert!(
        got.as_ref().is_err_and(|e| e.contains("(2)")),
        "the host's own address: {got:?}"
    );
    assert!(
        pair.gateway
            .log()
            .contains("an address of the gateway host itself"),
        "{}",
        pair.gateway.log()
    );

    // An address that appears while the gateway runs is refused as soon
    // as the kernel announces it (a periodic re-read alone would take up
    // to a minute).
    ip(&["addr", "add", "198.18.0.2/32", "dev", "lo"]);
    let added = Instant::now();
    loop {
        match fetch(pair.socks, &url("198.18.0.2")) {
            Err(e) if e.contains("(2)") => break, // not allowed by ruleset
            got => assert!(
                added.elapsed() < Duration::from_secs(5),
                "the new address is still reachable {:?} after it appeared: {got:?}",
                added.elapsed()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "a new host address was refused {:?} after it appeared",
        added.elapsed()
    );
    assert_eq!(
        server.connections.load(Ordering::Relaxed),
        2,
        "only the check above and the LAN request reached the server"
    );
}

#[test]
#[ignore = "needs root (a network namespace of its own): ./test.sh runs it as root"]
fn flows_to_the_tunnels_subnets_never_reach_the_hosts_network() {
    binary_ready();
    if let Err(why) = own_network_namespace() {
        panic!("cannot run: {why}");
    }
    // On the host's network, servers at addresses of the tunnel's subnets:
    // the gateway's /24 and the network a second peer routes.
    ip(&["route", "add", "local", "10.74.0.0/24", "dev", "lo"]);
    ip(&["route", "add", "local", "10.75.0.0/16", "dev", "lo"]);
    ip(&["route", "add", "local", "198.19.0.0/24", "dev", "lo"]);
    let server = HttpServer::start_on("0.0.0.0:0".parse().unwrap());
    let port = server.addr.port();
    let other_peer = keys();
    let pair = custom_pair(
        "tunnel-subnets",
        "10.74.0.1/24",
        "10.74.0.2/32",
        &format!(
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.74.0.3/32, 10.75.0.0/16\n\n\
             [Gateway]\nAllowedDestinations = 0.0.0.0/0\n",
            other_peer.public
        ),
    );
    assert_eq!(
        fetch(pair.socks, &format!("http://198.19.0.5:{port}/hello")).as_deref(),
        Ok("hello underpass\n"),
        "an address outside the tunnel is reachable"
    );
    for host in ["10.74.0.3", "10.74.0.77", "10.75.1.1"] {
        let got = fetch(pair.socks, &format!("http://{host}:{port}/hello"));
        assert!(
            got.as_ref().is_err_and(|e| e.contains("(2)")),
            "{host}: {got:?}"
        );
    }
    assert_eq!(
        server.connections.load(Ordering::Relaxed),
        1,
        "a flow for the tunnel went to the host's network"
    );
    assert!(
        pair.gateway.log().contains("an address of the tunnel"),
        "{}",
        pair.gateway.log()
    );
}
