//! Two core nodes on a simulated network and clock: the timers of the
//! whitepaper, and delivery under loss, duplication and reordering.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use support::sim::*;
use underpass_core::timers::*;
use underpass_core::{DatagramError, Event, Instant, NodeOptions};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn first_packet_waits_for_the_handshake_then_arrives() {
    let mut sim = Sim::new(1, CLEAN, NodeOptions::default());
    sim.send(A, &numbered(A, 1, 100)).unwrap();
    sim.run_for(secs(1));
    assert_eq!(sim.hosts[B].delivered.len(), 1);
    assert_eq!(id_of(&sim.hosts[B].delivered[0]), 1);
    assert_eq!(sim.handshakes(A).len(), 1);
    // B's session is confirmed by the staged packet itself.
    assert_eq!(sim.handshakes(B).len(), 1);
    sim.send(B, &numbered(B, 2, 100)).unwrap();
    sim.run_for(secs(1));
    assert_eq!(
        sim.hosts[A]
            .delivered
            .iter()
            .map(|p| id_of(p))
            .collect::<Vec<_>>(),
        [2]
    );
}

#[test]
fn the_initiator_rekeys_every_rekey_after_time_without_losing_data() {
    let mut sim = Sim::new(2, CLEAN, NodeOptions::default());
    let mut id = 0;
    // A packet each way every second for ten minutes (B, which has no
    // endpoint for A, starts once A has dialled it).
    sim.send(A, &numbered(A, 0, 200)).unwrap();
    sim.run_for(secs(1));
    for _ in 0..600 {
        id += 1;
        sim.send(A, &numbered(A, id, 200)).unwrap();
        sim.send(B, &numbered(B, id, 200)).unwrap();
        sim.run_for(secs(1));
    }
    id += 1;
    assert_eq!(
        sim.hosts[B].delivered.len(),
        id as usize,
        "every packet A sent arrived"
    );
    assert_eq!(
        sim.hosts[A].delivered.len(),
        id as usize - 1,
        "every packet B sent arrived"
    );
    let times = sim.handshakes(A);
    assert!(times.len() >= 5, "rekeyed about every 120 s: {times:?}");
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= REKEY_AFTER_TIME && gap <= REKEY_AFTER_TIME + secs(2),
            "rekey gap {gap:?}"
        );
    }
}

#[test]
fn a_session_lives_for_hours_across_many_rekeys() {
    let mut sim = Sim::new(3, CLEAN, NodeOptions::default());
    let hours = 3;
    let mut id = 0;
    sim.send(A, &numbered(A, 0, 64)).unwrap();
    sim.run_for(secs(1));
    for _ in 0..(hours * 3600 / 7) {
        id += 1;
        sim.send(A, &numbered(A, id, 64)).unwrap();
        sim.send(B, &numbered(B, id, 64)).unwrap();
        sim.run_for(secs(7));
    }
    assert_eq!(sim.hosts[B].delivered.len(), id as usize + 1);
    assert_eq!(sim.hosts[A].delivered.len(), id as usize);
    let rekeys = sim.handshakes(A).len() as u64;
    assert!(
        rekeys >= hours * 3600 / 125,
        "{rekeys} handshakes in {hours} h"
    );
    assert!(sim.hosts[A]
        .events
        .iter()
        .all(|(_, e)| !matches!(e, Event::HandshakeTimedOut { .. })));
}

#[test]
fn a_receiver_that_sends_nothing_answers_with_a_keepalive() {
    let mut sim = Sim::new(4, CLEAN, NodeOptions::default());
    sim.send(A, &numbered(A, 1, 100)).unwrap();
    sim.run_for(secs(1));
    let before = sim.sent[B].len();
    sim.send(A, &numbered(A, 2, 100)).unwrap();
    sim.run_for(KEEPALIVE_TIMEOUT - secs(1));
    assert_eq!(sim.sent[B].len(), before, "nothing yet");
    sim.run_for(secs(2));
    let after: Vec<_> = sim.sent[B][before..].to_vec();
    assert_eq!(after.len(), 1, "one keepalive");
    assert_eq!(after[0].1, 32, "a keepalive is an empty transport message");
}

#[test]
fn silence_after_sending_data_triggers_a_new_handshake() {
    let mut sim = Sim::new(5, CLEAN, NodeOptions::default());
    sim.send(A, &numbered(A, 1, 100)).unwrap();
    sim.run_for(secs(1));
    sim.send(B, &numbered(B, 1, 100)).unwrap();
    sim.run_for(secs(1));
    // B goes dark; A keeps sending and hears nothing back. Datagrams of a
    // one-way UDP flow expect no answer, so only the whitepaper's timer
    // applies (for a SYN, see a_restarted_responder_is_handshaked_again...).
    sim.up[B] = false;
    let t0 = sim.now;
    sim.send(A, &numbered(A, 2, 100)).unwrap();
    sim.run_for(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + secs(1));
    let initiations: Vec<_> = sim.sent[A]
        .iter()
        .filter(|(t, len)| *t > t0 && *len == 148)
        .collect();
    assert!(!initiations.is_empty(), "A started a new handshake");
    let first = initiations[0].0 - t0;
    assert!(
        first >= KEEPALIVE_TIMEOUT + REKEY_TIMEOUT,
        "not before 15 s: {first:?}"
    );
}

#[test]
fn an_unanswered_handshake_is_retried_then_given_up_after_rekey_attempt_time() {
    let mut sim = Sim::new(6, CLEAN, NodeOptions::default());
    sim.up[B] = false;
    sim.send(A, &numbered(A, 1, 100)).unwrap();
    sim.run_for(secs(200));
    let initiations: Vec<Instant> = sim.sent[A]
        .iter()
        .filter(|(_, l)| *l == 148)
        .map(|(t, _)| *t)
        .collect();
    // One every Rekey-Timeout (+ jitter) for Rekey-Attempt-Time.
    assert!(
        (16..=19).contains(&initiations.len()),
        "{} initiations",
        initiations.len()
    );
    for w in initiations.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= REKEY_TIMEOUT && gap < REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER,
            "gap {gap:?}"
        );
    }
    let gave_up = sim.hosts[A]
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::HandshakeTimedOut { .. }))
        .expect("A gave up")
        .0;
    assert!(gave_up.since_epoch() >= REKEY_ATTEMPT_TIME);
    assert!(gave_up.since_epoch() < REKEY_ATTEMPT_TIME + REKEY_TIMEOUT + secs(1));
    assert!(*initiations.last().unwrap() < gave_up);
    assert!(
        sim.hosts[A].node.stats().staged_dropped >= 1,
        "the waiting packet was dropped"
    );
}

#[test]
fn persistent_keepalive_goes_out_on_an_idle_link() {
    let mut sim = Sim::with_keepalive(7, CLEAN, NodeOptions::default(), Some(secs(25)));
    // Nothing is sent by anyone, yet A brings the tunnel up at once...
    sim.run_for(secs(1));
    assert_eq!(sim.handshakes(A).len(), 1);
    // ...and keeps it alive every 25 s.
    let t0 = sim.now;
    sim.run_for(secs(100));
    let keepalives = sim.sent[A]
        .iter()
        .filter(|(t, len)| *t > t0 && *len == 32)
        .count();
    assert!(
        (3..=5).contains(&keepalives),
        "{keepalives} keepalives in 100 s"
    );
}

#[test]
fn keys_are_zeroed_after_three_reject_after_times_of_silence() {
    let mut sim = Sim::new(8, CLEAN, NodeOptions::default());
    sim.send(A, &numbered(A, 1, 100)).unwrap();
    sim.run_for(secs(1));
    sim.run_for(ZERO_KEYS_AFTER + secs(30));
    for n in [A, B] {
        assert!(
            sim.hosts[n]
                .events
                .iter()
                .any(|(_, e)| matches!(e, Event::SessionExpired { .. })),
            "node {n} zeroed its keys"
        );
        assert!(
            !sim.hosts[n]
                .node
                .peer(sim.peer_of(n), sim.now)
                .unwrap()
                .has_session
        );
    }
    // A new packet brings the tunnel back.
    sim.send(A, &numbered(A, 2, 100)).unwrap();
    sim.run_for(secs(1));
    assert_eq!(sim.hosts[B].delivered.len(), 2);
}

#[test]
fn the_responder_follows_a_roaming_initiator() {
    let mut sim = Sim::new(9, CLEAN, NodeOptions::default());
    sim.send(A, &numbered(A, 1, 100)).unwrap();
    sim.run_for(secs(1));
    let new_addr = "198.51.100.9:61000".parse().unwrap();
    sim.rebind(A, new_addr);
    sim.send(A, &numbered(A, 2, 100)).unwrap();
    sim.run_for(secs(1));
    let b_peer = sim.peer_of(B);
    assert_eq!(
        sim.hosts[B].node.peer(b_peer, sim.now).unwrap().endpoint,
        Some(new_addr)
    );
    assert!(sim.hosts[B].events.iter().any(|(_, e)| *e
        == Event::EndpointChanged {
            peer: b_peer,
            endpoint: new_addr
        }));
    sim.send(B, &numbered(B, 3, 100)).unwrap();
    sim.run_for(secs(1));
    assert_eq!(
        sim.hosts[A]
            .delivered
            .iter()
            .map(|p| id_of(p))
            .collect::<Vec<_>>(),
        [3]
    );
}

#[test]
fn a_replayed_initiation_is_refused() {
    let mut sim = Sim::new(10, CLEAN, NodeOptions::default());
    let peer = sim.peer_of(A);
    let now = sim.now;
    sim.hosts[A].node.connect(peer, now);
    let init: Vec<u8> = sim.hosts[A]
        .node
        .poll_transmit(1)
        .unwrap()
        .contents
        .to_vec();
    sim.hosts[A].node.advance_transmit(1);
    let from = sim.addrs[A];
    let now = sim.now;
    assert!(sim.hosts[B]
        .node
        .handle_datagram(now, from, &mut init.clone())
        .is_ok());
    let later = sim.now + secs(1);
    assert_eq!(
        sim.hosts[B]
            .node
            .handle_datagram(later, from, &mut init.clone()),
        Err(DatagramError::ReplayedInitiation)
    );
    assert_eq!(
        sim.hosts[B]
            .node
            .stats()
            .dropped(DatagramError::ReplayedInitiation),
        1
    );
}

#[test]
fn a_packet_with_a_source_outside_allowed_ips_is_dropped() {
    let mut sim = Sim::new(11, CLEAN, NodeOptions::default());
    sim.send(A, &numbered(A, 1, 100)).unwrap();
    sim.run_for(secs(1));
    // A routes to B, but claims a source B does not allow for A.
    let spoofed = support::ipv4_udp([10, 9, 9, 9].into(), [10, 0, 0, 2].into(), b"spoofed!");
    sim.send(A, &spoofed).unwrap();
    sim.run_for(secs(1));
    assert_eq!(sim.hosts[B].delivered.len(), 1);
    assert_eq!(
        sim.hosts[B]
            .node
            .stats()
            .dropped(DatagramError::DisallowedSource),
        1
    );
}

#[test]
fn a_node_under_load_makes_its_peer_prove_its_address_first() {
    let options = NodeOptions {
        under_load_threshold: 0,
        ..NodeOptions::default()
    };
    let mut sim = Sim::with_options(12, CLEAN, [NodeOptions::default(), options], None);
    sim.send(A, &numbered(A, 1, 100)).unwrap();
    sim.run_for(secs(1));
    assert!(
        sim.hosts[B].delivered.is_empty(),
        "first initiation answered with a cookie"
    );
    assert_eq!(sim.hosts[B].node.stats().cookies_sent, 1);
    sim.run_for(REKEY_TIMEOUT + secs(1));
    assert_eq!(
        sim.hosts[B].delivered.len(),
        1,
        "the retry carried MAC2 and went through"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_packet_arrives_at_most_once_on_a_bad_link(
        seed in any::<u64>(),
        loss in 0.0f64..0.3,
        duplicate in 0.0f64..0.3,
        jitter_ms in 0u64..200,
        count in 1u64..300,
    ) {
        let link = Link { delay: Duration::from_millis(20), jitter: Duration::from_millis(jitter_ms), loss, duplicate, bottleneck: None };
        let mut sim = Sim::new(seed, link, NodeOptions::default());
        let mut sent_by_b = 0;
        for id in 0..count {
            sim.send(A, &numbered(A, id, 300)).unwrap();
            // B can answer only once A's handshake reached it.
            if sim.send(B, &numbered(B, id, 300)).is_ok() {
                sent_by_b += 1;
            }
            sim.run_for(Duration::from_millis(50));
        }
        sim.run_for(secs(5));
        for n in [A, B] {
            let mut seen = HashSet::new();
            for p in &sim.hosts[n].delivered {
                prop_assert!(seen.insert(id_of(p)), "packet {} delivered twice", id_of(p));
            }
            if loss == 0.0 {
                // Only packets that waited for the first handshake can be
                // dropped, and only past the staging limit.
                let sent = if n == B { count } else { sent_by_b };
                prop_assert!(seen.len() as u64 >= sent.min(128), "{} of {} arrived", seen.len(), sent);
            }
        }
        // Every duplicated transport message was caught by the replay
        // window: one copy in, the other counted as replayed.
        for n in [A, B] {
            prop_assert_eq!(sim.hosts[n].node.stats().dropped(DatagramError::Replayed), sim.duplicated_data[n]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_counted(
        datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..50),
    ) {
        let mut sim = Sim::new(13, CLEAN, NodeOptions::default());
        sim.send(A, &numbered(A, 1, 10)).unwrap();
        sim.run_for(secs(1));
        let from = sim.addrs[A];
        let before = sim.hosts[B].node.stats().dropped_total();
        let mut refused = 0;
        for mut d in datagrams.clone() {
            let now = sim.now;
            if sim.hosts[B].node.handle_datagram(now, from, &mut d).is_err() {
                refused += 1;
            }
        }
        prop_assert_eq!(sim.hosts[B].node.stats().dropped_total() - before, refused);
        prop_assert_eq!(refused, datagrams.len() as u64, "random bytes never authenticate");
    }

    #[test]
    fn mutated_real_messages_never_panic(
        seed in any::<u64>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        truncate in any::<prop::sample::Index>(),
        do_truncate in any::<bool>(),
    ) {
        // Capture real messages of every kind, then corrupt them.
        let options = NodeOptions { under_load_threshold: 0, ..NodeOptions::default() };
        let mut sim = Sim::new(seed, CLEAN, options);
        sim.send(A, &numbered(A, 1, 50)).unwrap();
        sim.run_for(secs(10));
        sim.send(B, &numbered(B, 2, 50)).unwrap();
        let peer = sim.peer_of(A);
        let now = sim.now;
        sim.hosts[A].node.connect(peer, now);
        let mut captured = Vec::new();
        for n in [A, B] {
            while let Some(t) = sim.hosts[n].node.poll_transmit(64) {
                captured.extend(t.contents.chunks(t.segment_size).map(<[u8]>::to_vec));
                let k = t.segments();
                sim.hosts[n].node.advance_transmit(k);
            }
        }
        for mut m in captured {
            if m.is_empty() { continue; }
            for (i, x) in &flips {
                let at = i.index(m.len());
                m[at] ^= x | 1;
            }
            if do_truncate {
                m.truncate(truncate.index(m.len() + 1));
            }
            for n in [A, B] {
                let from = sim.addrs[1 - n];
                let now = sim.now;
                let _ = sim.hosts[n].node.handle_datagram(now, from, &mut m.clone());
            }
        }
    }
}

// ---- a peer that stops answering (issue 16) --------------------------

/// Handshake initiations node `n` put on the wire after `since`.
fn initiations(sim: &Sim, n: usize, since: Instant) -> Vec<Instant> {
    sim.sent[n]
        .iter()
        .filter(|(t, len)| *t > since && *len == 148)
        .map(|(t, _)| *t)
        .collect()
}

fn no_replies(sim: &Sim, n: usize) -> Vec<(Instant, Duration)> {
    sim.hosts[n]
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::NoReply { waited, .. } => Some((*t, *waited)),
            _ => None,
        })
        .collect()
}

/// A up and talking to B, each having answered the other.
fn talking(seed: u64) -> Sim {
    talking_over(seed, CLEAN)
}

fn talking_over(seed: u64, link: Link) -> Sim {
    let mut sim = Sim::new(seed, link, NodeOptions::default());
    sim.send(A, &tcp(A, 1, SYN, 0)).unwrap();
    sim.run_for(secs(1));
    sim.send(B, &tcp(B, 1, SYN | ACK, 0)).unwrap();
    sim.run_for(secs(1));
    sim.send(A, &tcp(A, 2, ACK, 0)).unwrap();
    sim.run_for(secs(5));
    assert_eq!(sim.handshakes(A).len(), 1);
    sim
}

#[test]
fn a_restarted_responder_is_handshaked_again_within_a_second() {
    let mut sim = talking(20);
    sim.restart(B);
    let delivered = sim.hosts[B].delivered.len();
    // A new connection: its SYN goes out on the session B forgot, and TCP
    // sends it again after its initial timeout of 1 s.
    let t0 = sim.now;
    sim.send(A, &tcp(A, 3, SYN, 0)).unwrap();
    sim.run_for(secs(1));
    sim.send(A, &tcp(A, 3, SYN, 0)).unwrap();
    sim.run_for(secs(1));
    let sent = initiations(&sim, A, t0);
    assert_eq!(sent.len(), 1, "one initiation: {sent:?}");
    let after = sent[0] - t0;
    assert!(
        after >= UNANSWERED_MIN && after < UNANSWERED_MIN + UNANSWERED_JITTER,
        "initiation {after:?} after the unanswered SYN"
    );
    let done = sim.handshakes(A);
    assert!(
        done.last().is_some_and(|t| *t - t0 < secs(1)),
        "handshake completed before the SYN was sent again: {done:?}"
    );
    // The retransmitted SYN rode the new session and reached the new B.
    assert_eq!(sim.hosts[B].delivered[delivered..], [tcp(A, 3, SYN, 0)]);
    let events = no_replies(&sim, A);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, after);
}

#[test]
fn on_a_long_path_silence_waits_a_few_round_trips() {
    // 300 ms round trips: four of them are more than the floor.
    let link = Link {
        delay: Duration::from_millis(150),
        ..CLEAN
    };
    let mut sim = talking_over(24, link);
    sim.restart(B);
    let t0 = sim.now;
    sim.send(A, &tcp(A, 3, SYN, 0)).unwrap();
    sim.run_for(secs(3));
    let sent = initiations(&sim, A, t0);
    let rtts = Duration::from_millis(300) * UNANSWERED_RTTS;
    assert!(rtts > UNANSWERED_MIN);
    assert!(
        sent[0] - t0 >= rtts && sent[0] - t0 < rtts + UNANSWERED_JITTER,
        "initiation {:?} after the SYN",
        sent[0] - t0
    );
}

#[test]
fn a_peer_that_answers_is_not_handshaked_again() {
    let mut sim = talking(21);
    let t0 = sim.now;
    // Well under Rekey-After-Time, which would rekey in any case.
    for i in 0..20u64 {
        // A request, answered a delayed ACK later, then a bare ACK that
        // nothing answers.
        sim.send(A, &tcp(A, 100 + i, PSH | ACK, 200)).unwrap();
        sim.run_for(Duration::from_millis(200));
        sim.send(B, &tcp(B, 100 + i, PSH | ACK, 1000)).unwrap();
        sim.run_for(Duration::from_millis(10));
        sim.send(A, &tcp(A, 100 + i, ACK, 0)).unwrap();
        sim.run_for(Duration::from_millis(800));
        // A DNS query answered slowly (a cold resolver).
        sim.send(A, &dns_query(A, 200 + i)).unwrap();
        sim.run_for(Duration::from_millis(500));
        sim.send(B, &numbered(B, 200 + i, 100)).unwrap();
        sim.run_for(Duration::from_millis(500));
        // A one-way flow: B sends nothing back but its keepalives.
        for _ in 0..2 {
            sim.send(A, &numbered(A, 300 + i, 500)).unwrap();
            sim.run_for(Duration::from_millis(1000));
        }
    }
    assert!(sim.now - t0 < REKEY_AFTER_TIME - secs(20));
    assert_eq!(initiations(&sim, A, t0), [], "no new handshake");
    assert_eq!(no_replies(&sim, A), []);
    assert_eq!(sim.handshakes(A).len(), 1);
}

#[test]
fn a_dead_peer_gets_at_most_one_initiation_per_rekey_timeout() {
    let mut sim = talking(22);
    sim.restart(B);
    sim.up[B] = false;
    // An application that keeps trying: a segment every 250 ms for 60 s.
    let t0 = sim.now;
    for i in 0..240 {
        sim.send(A, &tcp(A, 400 + i, PSH | ACK, 100)).unwrap();
        sim.run_for(Duration::from_millis(250));
    }
    let sent = initiations(&sim, A, t0);
    assert!(
        sent[0] - t0 < UNANSWERED_MIN + UNANSWERED_JITTER,
        "first initiation {:?} after the silence began",
        sent[0] - t0
    );
    for w in sent.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= REKEY_TIMEOUT && gap < REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER,
            "gap {gap:?} in {sent:?}"
        );
    }
    assert!(
        (11..=12).contains(&sent.len()),
        "{} initiations in 60 s",
        sent.len()
    );
}

#[test]
fn a_peer_that_answers_handshakes_but_not_data_gets_one_early_handshake() {
    // B is up and has the session, but what A sends goes to a host behind
    // B that never answers: SYNs again and again.
    let mut sim = talking(23);
    let t0 = sim.now;
    for _ in 0..60 {
        sim.send(A, &tcp(A, 500, SYN, 0)).unwrap();
        sim.run_for(secs(1));
    }
    let early: Vec<_> = no_replies(&sim, A);
    assert_eq!(early.len(), 1, "one handshake on silence: {early:?}");
    assert!(early[0].1 < secs(1));
    assert_eq!(sim.handshakes(A).len(), 2);
    assert!(
        sim.sent[B].iter().any(|(t, len)| *t > t0 && *len == 32),
        "B kept the session alive with keepalives"
    );
    // Once data comes back, silence after a SYN counts again.
    sim.send(B, &tcp(B, 501, PSH | ACK, 100)).unwrap();
    sim.run_for(secs(1));
    sim.up[B] = false;
    sim.send(A, &tcp(A, 502, SYN, 0)).unwrap();
    sim.run_for(REKEY_TIMEOUT + secs(1));
    assert_eq!(no_replies(&sim, A).len(), 2);
}
