//! Name resolution through the tunnel, against a small DNS responder on the
//! gateway's stack.

mod support;

use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use simple_dns::rdata::{RData, A, AAAA, CNAME, SOA};
use simple_dns::{Name, Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
use support::*;
use underpass_stack::{DnsError, UdpId};

/// Answers like a small authoritative server for `.test`.
struct Responder {
    socket: UdpId,
    queries: usize,
}

impl Responder {
    fn new(net: &mut Net) -> Responder {
        let socket = net.stack(GATEWAY).udp_bind(Some(53)).unwrap();
        Responder { socket, queries: 0 }
    }

    fn serve(&mut self, net: &mut Net) {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = net.stack(GATEWAY).udp_recv_from(self.socket, &mut buf) {
            self.queries += 1;
            let query = Packet::parse(&buf[..n]).unwrap();
            let q = &query.questions[0];
            let name = q.qname.to_string();
            let mut reply = Packet::new_reply(query.id());
            reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
            reply.questions.push(q.clone());
            let rr = |name: &str, ttl, rdata| {
                ResourceRecord::new(
                    Name::new_unchecked(name).into_owned(),
                    CLASS::IN,
                    ttl,
                    rdata,
                )
            };
            let want = |t: TYPE| q.qtype == QTYPE::TYPE(t);
            match name.as_str() {
                "slow.test" => continue,
                "missing.test" => {
                    *reply.rcode_mut() = RCODE::NameError;
                    reply.name_servers.push(rr(
                        "test",
                        3600,
                        RData::SOA(SOA {
                            mname: Name::new_unchecked("ns.test"),
                            rname: Name::new_unchecked("admin.test"),
                            serial: 1,
                            refresh: 60,
                            retry: 60,
                            expire: 60,
                            minimum: 60,
                        }),
                    ));
                }
                "alias.test" => {
                    reply.answers.push(rr(
                        "alias.test",
                        300,
                        RData::CNAME(CNAME(Name::new_unchecked("host.test"))),
                    ));
                    if want(TYPE::A) {
                        reply.answers.push(rr(
                            "host.test",
                            300,
                            RData::A(A {
                                address: 0x0a010203,
                            }),
                        ));
                    }
                }
                "host.test" | "v4only.test" => {
                    if want(TYPE::A) {
                        reply.answers.push(rr(
                            &name,
                            5,
                            RData::A(A {
                                address: 0x0a010203,
                            }),
                        ));
                    }
                    if want(TYPE::AAAA) && name == "host.test" {
                        reply.answers.push(rr(
                            &name,
                            5,
                            RData::AAAA(AAAA {
                                address: 0xfd00_0000_0000_0000_0000_0000_0000_1234,
                            }),
                        ));
                    }
                }
                _ => *reply.rcode_mut() = RCODE::Refused,
            }
            let bytes = reply.build_bytes_vec().unwrap();
            net.stack(GATEWAY)
                .udp_send_to(self.socket, &bytes, from)
                .unwrap();
        }
    }
}

/// Resolves `name` from the client; returns the result and how long it took.
fn resolve(
    net: &mut Net,
    dns: &mut Responder,
    name: &str,
) -> (Result<Vec<IpAddr>, DnsError>, Duration) {
    let start = net.now;
    let id = net.stack(CLIENT).dns_resolve(name).unwrap();
    let w = waker();
    let mut result = None;
    net.run_until(Duration::from_secs(30), name, |net| {
        dns.serve(net);
        if let Poll::Ready(r) = net
            .stack(CLIENT)
            .poll_resolve(&mut Context::from_waker(&w), id)
        {
            result = Some(r);
        }
        result.is_some()
    });
    (result.unwrap(), net.now - start)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn a_and_aaaa_answers_come_back_and_are_cached_for_their_ttl() {
    let mut net = Net::new(1, CLEAN);
    let mut dns = Responder::new(&mut net);
    let (r, _) = resolve(&mut net, &mut dns, "host.test");
    assert_eq!(r, Ok(ips(&["10.1.2.3", "fd00::1234"])));
    assert_eq!(dns.queries, 2, "A and AAAA");
    let (r, took) = resolve(&mut net, &mut dns, "HOST.test.");
    assert_eq!(r, Ok(ips(&["10.1.2.3", "fd00::1234"])));
    assert_eq!(
        (dns.queries, took),
        (2, Duration::ZERO),
        "answered from the cache"
    );
    net.run_until(Duration::from_secs(10), "the TTL to pass", |net| {
        net.now > underpass_core::Instant::from_secs(6)
    });
    let (r, _) = resolve(&mut net, &mut dns, "host.test");
    assert!(r.is_ok());
    assert_eq!(dns.queries, 4, "asked again after the 5 s TTL");
}

#[test]
fn cnames_are_followed() {
    let mut net = Net::new(2, CLEAN);
    let mut dns = Responder::new(&mut net);
    let (r, _) = resolve(&mut net, &mut dns, "alias.test");
    assert_eq!(r, Ok(ips(&["10.1.2.3"])));
}

#[test]
fn nxdomain_is_reported_at_once_not_as_a_timeout() {
    let mut net = Net::new(3, CLEAN);
    let mut dns = Responder::new(&mut net);
    let (r, took) = resolve(&mut net, &mut dns, "missing.test");
    assert_eq!(r, Err(DnsError::NxDomain));
    assert!(took < Duration::from_millis(100), "{took:?}");
    let (r, took) = resolve(&mut net, &mut dns, "missing.test");
    assert_eq!(
        (r, took),
        (Err(DnsError::NxDomain), Duration::ZERO),
        "negative answers are cached"
    );
}

#[test]
fn a_silent_server_times_out_after_the_retries() {
    let mut net = Net::new(4, CLEAN);
    let mut dns = Responder::new(&mut net);
    let (r, took) = resolve(&mut net, &mut dns, "slow.test");
    assert_eq!(r, Err(DnsError::Timeout));
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(7),
        "{took:?}"
    );
    assert_eq!(dns.queries, 6, "three attempts for each of A and AAAA");
}

#[test]
fn a_name_with_only_an_ipv4_address_resolves_without_waiting() {
    let mut net = Net::new(5, CLEAN);
    let mut dns = Responder::new(&mut net);
    let (r, took) = resolve(&mut net, &mut dns, "v4only.test");
    assert_eq!(r, Ok(ips(&["10.1.2.3"])));
    assert!(took < Duration::from_millis(100));
}

#[test]
fn literals_and_bad_names_need_no_server() {
    let mut net = Net::new(6, CLEAN);
    let mut dns = Responder::new(&mut net);
    let (r, took) = resolve(&mut net, &mut dns, "192.0.2.9");
    assert_eq!((r, took), (Ok(ips(&["192.0.2.9"])), Duration::ZERO));
    let (r, _) = resolve(&mut net, &mut dns, "[2001:db8::1]");
    assert_eq!(r, Ok(ips(&["2001:db8::1"])));
    assert_eq!(
        net.stack(CLIENT).dns_resolve("bad name!"),
        Err(DnsError::InvalidName)
    );
    assert_eq!(
        net.stack(CLIENT).dns_resolve(&"a".repeat(300)),
        Err(DnsError::InvalidName)
    );
    assert_eq!(dns.queries, 0);
}
