//! ICMP echo through the tunnel: the gateway's stack answers pings to its
//! own addresses only, and the client notes when a target answered.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::*;
use underpass_stack::{EchoError, MAX_ECHO_TARGETS};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_ping_to_the_gateways_address_is_answered_over_ipv4_and_ipv6() {
    let mut net = Net::new(1, CLEAN);
    net.handshake();
    for target in [ip("10.0.0.2"), ip("fd00::2")] {
        assert_eq!(net.stack(CLIENT).echo_answered(target), None);
        let before = net.stack(CLIENT).echo_replies();
        net.stack(CLIENT).ping(target).unwrap();
        net.run_until(Duration::from_secs(2), "the echo reply", |net| {
            net.stack(CLIENT).echo_answered(target).is_some()
        });
        assert_eq!(net.stack(CLIENT).echo_replies(), before + 1);
    }
}

#[test]
fn the_gateway_does_not_answer_for_addresses_it_only_forwards_to() {
    let mut net = Net::new(2, CLEAN);
    net.handshake();
    net.stack(CLIENT).ping(ip("192.0.2.77")).unwrap();
    for _ in 0..20 {
        net.step(Duration::from_millis(100));
    }
    assert_eq!(net.stack(CLIENT).echo_answered(ip("192.0.2.77")), None);
    assert_eq!(net.stack(CLIENT).echo_replies(), 0);
}

#[test]
fn targets_are_bounded_and_need_an_address_of_their_family() {
    let mut net = Net::with(3, CLEAN, |o| o.addresses.truncate(1), |_| {});
    assert_eq!(
        net.stack(CLIENT).ping(ip("fd00::2")),
        Err(EchoError::NoSourceAddress)
    );
    for i in 0..MAX_ECHO_TARGETS {
        let target = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
        net.stack(CLIENT).ping(target).unwrap();
        net.carry(CLIENT);
    }
    assert_eq!(
        net.stack(CLIENT).ping(ip("10.2.0.1")),
        Err(EchoError::TooManyTargets)
    );
}
