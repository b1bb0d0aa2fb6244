//! Faults, restarts, roaming and floods, client and gateway as separate
//! processes: what a user would notice is bytes lost, a proxy that hangs,
//! or a gateway that stops answering.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::impair::Impairment;
use underpass_tests::*;

#[test]
fn transfers_through_loss_duplication_and_reordering_arrive_intact() {
    let server = HttpServer::start();
    let pair = Pair::start(
        "lossy",
        PairOptions {
            impair: Some((Impairment::lossy(0.02), 1)),
            ..Default::default()
        },
    );
    // Small: smoltcp recovers from loss slowly (RELIABILITY.md has the
    // figures for 64 MiB); here the point is that every byte arrives.
    let len = 1024 * 1024;
    let started = Instant::now();
    pair.download_checked(&server, len, 5, &[]);
    let down = started.elapsed();
    let started = Instant::now();
    pair.upload_checked(&server, len, 6);
    let relay = pair.relay.as_ref().unwrap();
    println!(
        "1 MiB at 2% loss: down {down:?}, up {:?}; client->gateway {}; gateway->client {}",
        started.elapsed(),
        relay.up,
        relay.down
    );
    // The link really was bad both ways.
    assert!(relay.up.lost.load(Ordering::Relaxed) > 0);
    assert!(relay.down.lost.load(Ordering::Relaxed) > 5);
    assert!(relay.down.duplicated.load(Ordering::Relaxed) > 0);
}

#[test]
fn the_client_recovers_by_itself_after_the_gateway_restarts() {
    let server = HttpServer::start();
    let mut pair = Pair::start("restart", PairOptions::default());
    let url = server.url("/hello");
    let socks = pair.socks.to_string();
    assert_eq!(
        curl_text(&curl(&["--socks5", &socks, &url])),
        "hello underpass\n"
    );
    pair.gateway.terminate();
    let config = pair.scratch.path("gateway.conf");
    let mut gateway = Process::start(
        "gateway-again",
        &pair.scratch,
        &["gateway", "--config", config.to_str().unwrap()],
    );
    gateway.wait_for_log("gateway listening", Duration::from_secs(20));
    pair.gateway = gateway;
    // The gateway lost every session; the client finds out by itself
    // (data sent, nothing back: a new handshake, as the whitepaper says).
    let restarted = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let out = curl(&["--max-time", "2", "--socks5", &socks, &url]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hello underpass\n");
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(45),
            "no new connection worked within 45 s of the gateway's restart:\n{}",
            pair.client.log()
        );
    }
    println!(
        "new connections work {:?} after the gateway restarted ({attempts} attempts)",
        restarted.elapsed()
    );
    pair.download_checked(&server, 1024 * 1024, 8, &[]);
}

#[test]
fn a_tcp_connection_survives_the_clients_source_port_changing() {
    let server = HttpServer::start();
    let pair = Pair::start(
        "rebind",
        PairOptions {
            // A bottleneck keeps the transfer crossing the tunnel for
            // seconds: 24 MiB at 48 Mbit/s, about 4 s. (A reader held back
            // by curl's --limit-rate did not: the kernel's socket buffer in
            // front of curl grows to tcp_rmem's maximum, 32 MiB on some
            // hosts, and took the whole file in the first second.)
            impair: Some((
                Impairment::path(Duration::from_millis(2), 0.0, Some(48.0)),
                2,
            )),
            ..Default::default()
        },
    );
    let relay = pair.relay.as_ref().unwrap();
    let old_port = relay.source_port();
    std::thread::scope(|s| {
        let transfer = s.spawn(|| {
            pair.download_checked(&server, 24 * 1024 * 1024, 9, &[]);
        });
        // Rebind once the transfer is well under way (a quarter of it).
        let started = Instant::now();
        while relay.down.received.load(Ordering::Relaxed) < 4000 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the transfer did not get going within 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = relay.down.received.load(Ordering::Relaxed);
        relay.rebind();
        assert_ne!(relay.source_port(), old_port);
        transfer
            .join()
            .expect("the transfer survived the rebinding");
        // The gateway followed: it sent to the new port.
        let after = relay.down.received.load(Ordering::Relaxed);
        assert!(
            after > before + 100,
            "only {} datagrams came back after the rebinding: the transfer was over before it",
            after - before
        );
    });
    let log = pair.gateway.log();
    assert!(
        log.contains(&format!("127.0.0.1:{}", relay.source_port())),
        "the gateway did not log the new endpoint:\n{log}"
    );
}

/// A session outlives Rekey-After-Time (120 s) with a download in flight:
/// the client starts a new handshake while data flows, and not a byte is
/// lost at the switch. Takes about 2.5 minutes, so it runs by hand:
/// `cargo test -p underpass-tests --test reliability -- --ignored`.
#[test]
#[ignore]
fn a_download_survives_the_rekey_after_two_minutes() {
    let server = HttpServer::start();
    let pair = Pair::start("rekey-soak", PairOptions::default());
    // 175 s worth at curl's 200k (204,800 B/s, in bursts that run ahead)
    // spans the rekey with margin.
    let rate = 204_800u64;
    let len = rate * 175;
    let started = Instant::now();
    pair.download_checked(
        &server,
        len,
        61,
        &["--limit-rate", "200k", "--max-time", "400"],
    );
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(125),
        "finished before the rekey: {took:?}"
    );
    let handshakes = |log: &str| log.matches("handshake completed").count();
    let (client, gateway) = (pair.client.log(), pair.gateway.log());
    assert!(
        handshakes(&client) >= 2,
        "the client never rekeyed in {took:?}:\n{client}"
    );
    assert!(
        handshakes(&gateway) >= 2,
        "the gateway saw no rekey:\n{gateway}"
    );
    eprintln!(
        "{len} bytes intact in {took:?}; handshakes: client {}, gateway {}",
        handshakes(&client),
        handshakes(&gateway)
    );
}
