//! A handshake flood against the gateway, alone in its test binary so
//! that the load it makes does not slow other tests down.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::*;

/// A valid initiation from `from` to `to`, as a WireGuard client would
/// send it.
fn initiation(from: &str, to: &str) -> Vec<u8> {
    use underpass_core::{Instant as T, Node, NodeOptions, PeerOptions};
    let mut peer = PeerOptions::new(to.parse().unwrap());
    peer.endpoint = Some("127.0.0.1:9".parse().unwrap());
    peer.allowed_ips = vec!["0.0.0.0/0".parse().unwrap()];
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut node = Node::new(
        from.parse().unwrap(),
        NodeOptions::default(),
        Box::new(rand::rngs::OsRng),
        T::ZERO,
        wall,
    );
    node.add_peer(peer, T::ZERO).unwrap();
    let packet = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 50, 0, 2, 10, 50, 0, 1,
    ];
    node.handle_ip_packet(T::ZERO, &packet).unwrap();
    let t = node.poll_transmit(1).expect("an initiation");
    assert_eq!(t.contents[0], 1);
    t.contents.to_vec()
}

#[test]
fn a_handshake_flood_leaves_the_real_peer_served() {
    let server = HttpServer::start();
    let mut pair = Pair::start("flood", PairOptions::default());
    let gateway: SocketAddr = ([127, 0, 0, 1], pair.gateway_port).into();
    let stranger = keys();
    // Valid MAC1 from a key the gateway does not know; the real client's
    // key with a broken MAC1; and noise shaped like an initiation.
    let unknown = initiation(&stranger.private, &pair.gateway_keys.public);
    let mut bad_mac = initiation(&pair.client_keys.private, &pair.gateway_keys.public);
    bad_mac[120] ^= 0xff;
    let mut noise = vec![1u8, 0, 0, 0];
    noise.extend(content(3, 144));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, cookies) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooder = {
        let (stop, sent, cookies) = (stop.clone(), sent.clone(), cookies.clone());
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                for m in [&unknown, &bad_mac, &noise] {
                    if socket.send_to(m, gateway).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                while let Ok(n) = socket.recv(&mut buf) {
                    if n == 64 && buf[0] == 3 {
                        cookies.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    let socks = pair.socks.to_string();
    let hello = || {
        let out = curl(&[
            "--max-time",
            "30",
            "--socks5",
            &socks,
            &server.url("/hello"),
        ]);
        assert_eq!(curl_text(&out), "hello underpass\n");
    };
    // The established session keeps working...
    for _ in 0..5 {
        hello();
    }
    pair.download_checked(&server, 2 * 1024 * 1024, 10, &[]);
    // ...and so does a new handshake: the client restarts mid-flood.
    pair.client.terminate();
    let config = pair.client_config.to_str().unwrap().to_string();
    let mut client = Process::start("client-again", &pair.scratch, &["--config", &config]);
    let handshake = Instant::now();
    client.wait_for_log("handshake completed", Duration::from_secs(30));
    let handshake = handshake.elapsed();
    pair.client = client;
    wait_tcp(pair.socks, Duration::from_secs(10));
    hello();
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    let (sent, cookies) = (
        sent.load(Ordering::Relaxed),
        cookies.load(Ordering::Relaxed),
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "flood: {sent} datagrams in {secs:.1} s ({:.0}/s), {cookies} cookie replies; a new handshake took {handshake:?}",
        sent as f64 / secs
    );
    // Under load the gateway answered valid-MAC1 initiations with cookies
    // instead of doing Diffie-Hellman for them.
    assert!(cookies > 0, "no cookie reply under a flood of {sent}");
}
