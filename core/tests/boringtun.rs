//! Interop with boringtun, the reference implementation, in both roles.
//!
//! boringtun reads the real clock inside; core's side runs on a simulated
//! one. Everything here is in-process: datagrams are handed across by hand.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use support::*;
use underpass_core::timers::REKEY_AFTER_TIME;
use underpass_core::{Event, Instant, Node, NodeOptions, Received};

const CORE_ADDR: &str = "192.0.2.1:51820";
const BT_ADDR: &str = "192.0.2.2:51820";
const CORE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const BT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

struct Pair {
    core: Node,
    bt: Tunn,
    now: Instant,
    core_addr: SocketAddr,
    buf: Vec<u8>,
}

fn pair(core_options: NodeOptions, bt_limiter: Option<u64>) -> Pair {
    let core_key = key(1);
    let bt_secret = x25519::StaticSecret::from([2u8; 32]);
    let bt_public = x25519::PublicKey::from(&bt_secret);
    let mut core = node(core_key.clone(), 7, core_options);
    core.add_peer(
        peer(
            underpass_core::PublicKey::from_bytes(bt_public.to_bytes()),
            Some(BT_ADDR.parse().unwrap()),
            &["10.0.0.2/32"],
        ),
        Instant::ZERO,
    )
    .unwrap();
    let core_public = x25519::PublicKey::from(*core_key.public_key().as_bytes());
    let limiter = bt_limiter.map(|limit| Arc::new(RateLimiter::new(&bt_public, limit)));
    let bt = Tunn::new(bt_secret, core_public, None, None, 1, limiter);
    Pair {
        core,
        bt,
        now: Instant::ZERO,
        core_addr: CORE_ADDR.parse().unwrap(),
        buf: vec![0u8; 65536],
    }
}

impl Pair {
    /// Moves everything core queued into boringtun; returns the IP packets
    /// boringtun delivered. boringtun's answers go back into core.
    fn core_to_bt(&mut self) -> Vec<Vec<u8>> {
        let mut delivered = Vec::new();
        for (dst, datagram) in drain(&mut self.core) {
            assert_eq!(dst, BT_ADDR.parse::<SocketAddr>().unwrap());
            let mut answers = Vec::new();
            match self
                .bt
                .decapsulate(Some(self.core_addr.ip()), &datagram, &mut self.buf)
            {
                TunnResult::WriteToNetwork(d) => {
                    answers.push(d.to_vec());
                    // boringtun wants to be asked again until it is done.
                    while let TunnResult::WriteToNetwork(d) =
                        self.bt.decapsulate(None, &[], &mut self.buf)
                    {
                        answers.push(d.to_vec());
                    }
                }
                TunnResult::WriteToTunnelV4(p, _) => delivered.push(p.to_vec()),
                TunnResult::WriteToTunnelV6(p, _) => delivered.push(p.to_vec()),
                TunnResult::Done => {}
                TunnResult::Err(e) => panic!("boringtun refused core's datagram: {e:?}"),
            }
            for answer in answers {
                self.bt_to_core(answer);
            }
        }
        delivered
    }

    /// Hands one boringtun datagram to core; returns the packet, if any.
    fn bt_to_core(&mut self, mut datagram: Vec<u8>) -> Option<Vec<u8>> {
        let from: SocketAddr = BT_ADDR.parse().unwrap();
        match self.core.handle_datagram(self.now, from, &mut datagram) {
            Ok(Received::Packet { packet, .. }) => Some(packet.to_vec()),
            Ok(_) => None,
            Err(e) => panic!("core refused boringtun's datagram: {e}"),
        }
    }

    fn bt_send(&mut self, packet: &[u8]) -> Vec<u8> {
        match self.bt.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("boringtun did not encrypt: {other:?}"),
        }
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.core.poll_event()).collect()
    }
}

fn packet(n: usize, from: Ipv4Addr, to: Ipv4Addr) -> Vec<u8> {
    let payload: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
    ipv4_udp(from, to, &payload)
}

#[test]
fn core_initiates_and_data_flows_both_ways_with_boringtun() {
    let mut p = pair(NodeOptions::default(), None);
    let first = packet(1000, CORE_IP, BT_IP);
    p.core.handle_ip_packet(p.now, &first).unwrap();
    // Initiation out, response back, then the staged packet goes out.
    let delivered = p.core_to_bt();
    assert!(
        delivered.is_empty(),
        "nothing before the handshake completes"
    );
    assert!(p.events().contains(&Event::HandshakeCompleted {
        peer: only_peer(&p.core)
    }));
    let delivered = p.core_to_bt();
    assert_eq!(delivered, vec![first], "the staged packet arrives intact");

    for size in [0, 1, 15, 16, 17, 500, 1392] {
        let out = packet(size, CORE_IP, BT_IP);
        p.core.handle_ip_packet(p.now, &out).unwrap();
        assert_eq!(p.core_to_bt(), vec![out]);
        let back = packet(size, BT_IP, CORE_IP);
        let datagram = p.bt_send(&back);
        assert_eq!(p.bt_to_core(datagram), Some(back));
    }
}

#[test]
fn boringtun_initiates_and_core_answers() {
    let mut p = pair(NodeOptions::default(), None);
    let init = match p.bt.format_handshake_initiation(&mut p.buf, false) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!(p.bt_to_core(init), None);
    // core answers; boringtun completes and confirms with a keepalive,
    // which promotes core's session from next to current.
    p.core_to_bt();
    assert!(p.events().contains(&Event::HandshakeCompleted {
        peer: only_peer(&p.core)
    }));

    let back = packet(700, BT_IP, CORE_IP);
    let datagram = p.bt_send(&back);
    assert_eq!(p.bt_to_core(datagram), Some(back));
    let out = packet(1200, CORE_IP, BT_IP);
    p.core.handle_ip_packet(p.now, &out).unwrap();
    assert_eq!(p.core_to_bt(), vec![out]);
}

#[test]
fn core_rekeys_after_rekey_after_time_and_boringtun_follows() {
    let mut p = pair(NodeOptions::default(), None);
    p.core
        .handle_ip_packet(p.now, &packet(10, CORE_IP, BT_IP))
        .unwrap();
    p.core_to_bt();
    p.core_to_bt();
    let id = only_peer(&p.core);
    assert_eq!(p.core.peer(id, p.now).unwrap().handshakes_completed, 1);

    // Keep the session alive past Rekey-After-Time on core's clock.
    let mut rekeyed_at = None;
    for step in 1..=30 {
        p.now = Instant::ZERO + Duration::from_secs(5 * step);
        p.core.handle_timeout(p.now);
        let out = packet(100, CORE_IP, BT_IP);
        p.core.handle_ip_packet(p.now, &out).unwrap();
        let delivered = p.core_to_bt();
        assert!(
            delivered.contains(&out),
            "data keeps flowing at {:?}",
            p.now
        );
        let back = packet(50, BT_IP, CORE_IP);
        let datagram = p.bt_send(&back);
        assert_eq!(p.bt_to_core(datagram), Some(back));
        if rekeyed_at.is_none() && p.core.peer(id, p.now).unwrap().handshakes_completed == 2 {
            rekeyed_at = Some(p.now);
        }
    }
    let rekeyed_at = rekeyed_at.expect("a second handshake completed");
    assert!(rekeyed_at.since_epoch() >= REKEY_AFTER_TIME);
    assert!(rekeyed_at.since_epoch() <= REKEY_AFTER_TIME + Duration::from_secs(10));
}

#[test]
fn core_gets_a_cookie_from_a_loaded_boringtun_and_retries_with_mac2() {
    let mut p = pair(NodeOptions::default(), Some(0));
    let first = packet(64, CORE_IP, BT_IP);
    p.core.handle_ip_packet(p.now, &first).unwrap();
    // The initiation is answered with a cookie reply, not a response.
    assert!(p.core_to_bt().is_empty());
    assert!(p.events().is_empty(), "no handshake yet");
    // After Rekey-Timeout core retries, now with MAC2; boringtun answers.
    p.now = Instant::ZERO + Duration::from_secs(6);
    p.core.handle_timeout(p.now);
    p.core_to_bt();
    assert!(p.events().contains(&Event::HandshakeCompleted {
        peer: only_peer(&p.core)
    }));
    assert_eq!(p.core_to_bt(), vec![first]);
}

#[test]
fn a_loaded_core_sends_boringtun_a_cookie_and_accepts_its_retry() {
    let options = NodeOptions {
        under_load_threshold: 0,
        ..NodeOptions::default()
    };
    let mut p = pair(options, None);
    let init = match p.bt.format_handshake_initiation(&mut p.buf, false) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    let mut init_copy = init.clone();
    let from: SocketAddr = BT_ADDR.parse().unwrap();
    assert_eq!(
        p.core.handle_datagram(p.now, from, &mut init_copy),
        Ok(Received::CookieSent)
    );
    assert_eq!(p.core.stats().cookies_sent, 1);
    // boringtun takes the cookie...
    for (_, reply) in drain(&mut p.core) {
        assert!(matches!(
            p.bt.decapsulate(Some(IpAddr::from([192, 0, 2, 1])), &reply, &mut p.buf),
            TunnResult::Done
        ));
    }
    // ...and its next initiation carries a valid MAC2.
    let retry = match p.bt.format_handshake_initiation(&mut p.buf, true) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    p.now += Duration::from_millis(100);
    assert!(matches!(
        p.core.handle_datagram(p.now, from, &mut retry.clone()),
        Ok(Received::Handshake { .. })
    ));
    p.core_to_bt();
    let back = packet(300, BT_IP, CORE_IP);
    let datagram = p.bt_send(&back);
    assert_eq!(p.bt_to_core(datagram), Some(back));
}
