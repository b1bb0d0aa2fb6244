//! Per-packet cost of the data path: core's Node against boringtun's Tunn,
//! in the same run, on one thread.
//!
//!     taskset -c 1 cargo bench -p underpass-core --bench data_path
//!
//! Encrypt is IP packet in, datagram out (core: into its GSO queue, drained
//! every 64 packets without sending; boringtun: into a caller buffer). Decrypt is
//! datagram in, IP packet out; each side gets a fresh copy of every datagram
//! (core decrypts in place, boringtun into a second buffer).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as Clock};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use underpass_core::{Instant, Node, NodeOptions, PeerOptions, PrivateKey, Received};
use underpass_sim::{Link, Sim};

const PACKET: usize = 1420;
const BATCH: usize = 1024;
/// Packets between two flushes of core's send queue.
const FLUSH: usize = 64;
const ROUNDS: usize = 200;

fn ip_packet(len: usize, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| i as u8).collect();
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

struct CorePair {
    a: Node,
    b: Node,
    a_addr: SocketAddr,
}

fn core_pair() -> CorePair {
    let (ka, kb) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let a_addr: SocketAddr = "192.0.2.1:1".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.2:2".parse().unwrap();
    let wall = Duration::from_secs(1_764_000_000);
    let rng = |s| Box::new(ChaCha8Rng::seed_from_u64(s));
    let mut a = Node::new(
        ka.clone(),
        NodeOptions::default(),
        rng(1),
        Instant::ZERO,
        wall,
    );
    let mut b = Node::new(
        kb.clone(),
        NodeOptions::default(),
        rng(2),
        Instant::ZERO,
        wall,
    );
    let mut pa = PeerOptions::new(kb.public_key());
    pa.endpoint = Some(b_addr);
    pa.allowed_ips = vec!["10.0.0.2/32".parse().unwrap()];
    a.add_peer(pa, Instant::ZERO).unwrap();
    let mut pb = PeerOptions::new(ka.public_key());
    pb.allowed_ips = vec!["10.0.0.1/32".parse().unwrap()];
    b.add_peer(pb, Instant::ZERO).unwrap();
    // Handshake (initiation, response, keepalive) on the tests' network,
    // without delay.
    a.connect(underpass_core::PeerId(0), Instant::ZERO);
    let mut sim = Sim::new([a, b], [a_addr, b_addr], Link::delay(Duration::ZERO), 1);
    sim.run_until(Instant::ZERO);
    let [a, b] = sim.hosts;
    let pair = CorePair { a, b, a_addr };
    assert!(
        pair.a
            .peer(underpass_core::PeerId(0), Instant::ZERO)
            .unwrap()
            .has_session
    );
    pair
}

/// Encrypts one batch with core, flushing the queue every `FLUSH`
/// packets as the event loop does after each batch from the stack; keeps
/// the datagrams when asked.
fn core_encrypt(a: &mut Node, packet: &[u8], mut keep: Option<&mut Vec<Vec<u8>>>) {
    for _ in 0..BATCH / FLUSH {
        for _ in 0..FLUSH {
            a.handle_ip_packet(Instant::ZERO, packet).unwrap();
        }
        while let Some(t) = a.poll_transmit(64) {
            match keep.as_deref_mut() {
                Some(out) => out.extend(t.contents.chunks(t.segment_size).map(<[u8]>::to_vec)),
                None => {
                    black_box(t.contents);
                }
            }
            let n = t.segments();
            a.advance_transmit(n);
        }
    }
}

fn bench_core(packet: &[u8]) -> (Duration, Duration) {
    let mut p = core_pair();
    let (mut enc, mut dec) = (Duration::ZERO, Duration::ZERO);
    let mut datagrams = Vec::with_capacity(BATCH);
    let mut work = vec![0u8; 2048];
    for round in 0..ROUNDS {
        let t = Clock::now();
        core_encrypt(&mut p.a, packet, None);
        if round > 0 {
            enc += t.elapsed();
        }
        datagrams.clear();
        core_encrypt(&mut p.a, packet, Some(&mut datagrams));
        let t = Clock::now();
        for d in &datagrams {
            let work = &mut work[..d.len()];
            work.copy_from_slice(d);
            match p.b.handle_datagram(Instant::ZERO, p.a_addr, work) {
                Ok(Received::Packet { packet, .. }) => {
                    black_box(packet);
                }
                other => panic!("core refused its own datagram: {other:?}"),
            }
        }
        if round > 0 {
            dec += t.elapsed();
        }
    }
    (enc, dec)
}

fn bench_boringtun(packet: &[u8]) -> (Duration, Duration) {
    let sa = x25519::StaticSecret::from([1u8; 32]);
    let sb = x25519::StaticSecret::from([2u8; 32]);
    let (pa, pb) = (x25519::PublicKey::from(&sa), x25519::PublicKey::from(&sb));
    let mut a = Tunn::new(sa, pb, None, None, 1, None);
    let mut b = Tunn::new(sb, pa, None, None, 2, None);
    let mut buf = vec![0u8; 2048];
    let mut buf2 = vec![0u8; 2048];
    let init = match a.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => panic!("no initiation"),
    };
    let resp = match b.decapsulate(None, &init, &mut buf) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => panic!("no response"),
    };
    let keepalive = match a.decapsulate(None, &resp, &mut buf) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => panic!("no keepalive"),
    };
    assert!(matches!(
        b.decapsulate(None, &keepalive, &mut buf),
        TunnResult::Done
    ));

    let (mut enc, mut dec) = (Duration::ZERO, Duration::ZERO);
    let mut datagrams: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    for round in 0..ROUNDS {
        let t = Clock::now();
        for _ in 0..BATCH {
            match a.encapsulate(packet, &mut buf) {
                TunnResult::WriteToNetwork(d) => {
                    black_box(d);
                }
                _ => panic!("boringtun did not encrypt"),
            }
        }
        if round > 0 {
            enc += t.elapsed();
        }
        datagrams.clear();
        for _ in 0..BATCH {
            match a.encapsulate(packet, &mut buf) {
                TunnResult::WriteToNetwork(d) => datagrams.push(d.to_vec()),
                _ => panic!("boringtun did not encrypt"),
            }
        }
        let t = Clock::now();
        for d in &datagrams {
            let work = &mut buf2[..d.len()];
            work.copy_from_slice(d);
            match b.decapsulate(None, work, &mut buf) {
                TunnResult::WriteToTunnelV4(p, _) => {
                    black_box(p);
                }
                _ => panic!("boringtun refused its own datagram"),
            }
        }
        if round > 0 {
            dec += t.elapsed();
        }
    }
    (enc, dec)
}

fn rate(d: Duration) -> (f64, f64) {
    let packets = (BATCH * (ROUNDS - 1)) as f64;
    let pps = packets / d.as_secs_f64();
    (pps, pps * PACKET as f64 * 8.0 / 1e9)
}

fn main() {
    let packet = ip_packet(
        PACKET,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
    );
    // Warm up both, then measure alternately so drift hits both alike.
    bench_core(&packet);
    bench_boringtun(&packet);
    let mut core = (Duration::ZERO, Duration::ZERO);
    let mut bt = (Duration::ZERO, Duration::ZERO);
    for _ in 0..3 {
        let c = bench_core(&packet);
        let b = bench_boringtun(&packet);
        core = (core.0 + c.0, core.1 + c.1);
        bt = (bt.0 + b.0, bt.1 + b.1);
    }
    let three = |d: Duration| d / 3;
    println!(
        "data path, {PACKET}-byte IP packets, one thread, {} packets per figure",
        BATCH * (ROUNDS - 1)
    );
    println!(
        "{:<22} {:>12} {:>10} {:>12} {:>10} {:>8}",
        "", "core pkt/s", "Gbit/s", "boringtun", "Gbit/s", "ratio"
    );
    for (name, c, b) in [
        ("encrypt", three(core.0), three(bt.0)),
        ("decrypt", three(core.1), three(bt.1)),
        (
            "encrypt+decrypt",
            three(core.0 + core.1),
            three(bt.0 + bt.1),
        ),
    ] {
        let (cp, cg) = rate(c);
        let (bp, bg) = rate(b);
        println!(
            "{name:<22} {cp:>12.0} {cg:>10.2} {bp:>12.0} {bg:>10.2} {:>8.2}",
            cp / bp
        );
    }
}
