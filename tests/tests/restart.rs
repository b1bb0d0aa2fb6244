//! The gateway restarts and forgets every session: the client must notice
//! by itself that what it sends goes unanswered and handshake again, soon
//! enough that a new connection through it works a few seconds after the
//! gateway is back, not after the whitepaper's 15 s of silence.

use std::time::{Duration, Instant};

use underpass_core::timers::KEEPALIVE_TIMEOUT;
use underpass_tests::http_server::HttpServer;
use underpass_tests::impair::Impairment;
use underpass_tests::*;

/// Stops the pair's gateway and starts a new one with the same config (same
/// keys, same port); returns once it listens.
fn restart_gateway(pair: &mut Pair) {
    pair.gateway.terminate();
    let config = pair.scratch.path("gateway.conf");
    let mut gateway = Process::start(
        "gateway-again",
        &pair.scratch,
        &["gateway", "--config", config.to_str().unwrap()],
    );
    gateway.wait_for_log("gateway listening", Duration::from_secs(20));
    pair.gateway = gateway;
}

/// Opens new connections through the SOCKS proxy, one curl at a time with
/// a short `--max-time`, until one fetches `url`; returns how long that
/// took from now and how many tries. Fails after `limit`.
fn first_new_connection(pair: &Pair, url: &str, limit: Duration) -> (Duration, u32) {
    let socks = pair.socks.to_string();
    let start = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        // 2 s: the first try outlives TCP's first SYN retransmission (1 s).
        let out = curl(&["--max-time", "2", "--socks5", &socks, url]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hello underpass\n");
            return (start.elapsed(), tries);
        }
        assert!(
            start.elapsed() < limit,
            "no new connection worked within {limit:?} of the gateway's restart:\n{}",
            pair.client.log()
        );
    }
}

/// Restarts the gateway and measures when a new connection works; asserts
/// it took less than `bound`.
fn recovers_within(name: &str, impair: Option<Impairment>, bound: Duration) {
    let server = HttpServer::start();
    let mut pair = Pair::start(
        name,
        PairOptions {
            impair: impair.map(|i| (i, 16)),
            ..Default::default()
        },
    );
    let url = server.url("/hello");
    let socks = pair.socks.to_string();
    assert_eq!(
        curl_text(&curl(&["--socks5", &socks, &url])),
        "hello underpass\n"
    );
    // Not a wait for anything: the scenario is a tunnel that has been
    // quiet for a while when the gateway restarts. By now whichever side
    // received data last has answered it with a keepalive (Keepalive-
    // Timeout later), so no timer from that connection still runs, and
    // the handshake is older than Rekey-Timeout (a gateway that restarts
    // sooner after one is handshaked again only once Rekey-Timeout is up:
    // one initiation per Rekey-Timeout).
    std::thread::sleep(KEEPALIVE_TIMEOUT + Duration::from_secs(1));
    restart_gateway(&mut pair);
    // Long enough to see how long the whitepaper's timers alone take.
    let (took, tries) = first_new_connection(&pair, &url, Duration::from_secs(60));
    let relay = pair
        .relay
        .as_ref()
        .map(|r| format!("; client->gateway {}; gateway->client {}", r.up, r.down))
        .unwrap_or_default();
    println!(
        "{name}: a new connection worked {took:?} after the new gateway listened \
         ({tries} tries){relay}"
    );
    assert!(
        took < bound,
        "a new connection took {took:?} after the gateway restarted (bound {bound:?}):\n{}",
        pair.client.log()
    );
    // And the tunnel carries data again, intact.
    pair.download_checked(&server, 1024 * 1024, 16, &[]);
}

#[test]
fn a_new_connection_works_within_3_s_of_the_gateway_restarting() {
    recovers_within("restart-clean", None, Duration::from_secs(3));
}

/// 5% of datagrams lost each way. A lost initiation or response costs a
/// Rekey-Timeout (5 s, plus up to a third of a second of jitter) before
/// the next one; a handshake fails about one time in ten here, two in a
/// row about one in a hundred. 14 s leaves room for two lost handshakes
/// (0.95 + 2 x 5.33 s) and a lost segment or two of the new connection
/// (1 s each), and is still below the 15 s of silence after which the
/// whitepaper's timer alone starts a handshake.
#[test]
fn a_new_connection_works_within_14_s_of_the_gateway_restarting_over_a_lossy_path() {
    let loss = Impairment {
        loss: 0.05,
        ..Impairment::default()
    };
    recovers_within("restart-lossy", Some(loss), Duration::from_secs(14));
}
