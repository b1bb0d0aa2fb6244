//! The gateway's DNS service: A and AAAA questions sent to its tunnel
//! address, answered by resolving on the gateway's host.
//!
//! Anything else (other types, several questions, malformed queries) gets
//! the protocol's refusal rather than silence, so clients fail fast.

use std::net::IpAddr;

use simple_dns::rdata::{RData, A, AAAA};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};

/// Seconds clients may cache an answer.
const TTL: u32 = 60;

/// What the host's resolver said.
enum Lookup {
    Found(Vec<IpAddr>),
    NoSuchName,
    Failed,
}

async fn lookup(name: &str) -> Lookup {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(addrs) => Lookup::Found(addrs.map(|a| a.ip()).collect()),
        Err(e) => {
            // getaddrinfo's EAI_NONAME / EAI_NODATA, as std words them.
            let text = e.to_string();
            if text.contains("not known") || text.contains("No address associated") {
                Lookup::NoSuchName
            } else {
                Lookup::Failed
            }
        }
    }
}

/// The reply to one query, or `None` if it is not even a DNS query.
pub async fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let packet = Packet::parse(query).ok()?;
    if packet.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    let [question] = packet.questions.as_slice() else {
        *reply.rcode_mut() = RCODE::FormatError;
        return reply.build_bytes_vec().ok();
    };
    reply.questions.push(question.clone());
    let want_v4 = question.qtype == QTYPE::TYPE(TYPE::A);
    let want_v6 = question.qtype == QTYPE::TYPE(TYPE::AAAA);
    if !want_v4 && !want_v6 {
        *reply.rcode_mut() = RCODE::NotImplemented;
        return reply.build_bytes_vec().ok();
    }
    let name = question.qname.to_string();
    match lookup(&name).await {
        Lookup::Found(ips) => {
            for ip in ips {
                let rdata = match ip {
                    IpAddr::V4(v4) if want_v4 => RData::A(A::from(v4)),
                    IpAddr::V6(v6) if want_v6 => RData::AAAA(AAAA::from(v6)),
                    _ => continue,
                };
                reply.answers.push(ResourceRecord::new(
                    question.qname.clone(),
                    CLASS::IN,
                    TTL,
                    rdata,
                ));
            }
        }
        Lookup::NoSuchName => *reply.rcode_mut() = RCODE::NameError,
        Lookup::Failed => *reply.rcode_mut() = RCODE::ServerFailure,
    }
    reply.build_bytes_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question};

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut q = Packet::new_query(4242);
        q.set_flags(PacketFlag::RECURSION_DESIRED);
        q.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        q.build_bytes_vec().unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn localhost_resolves_and_nonsense_does_not() {
        let reply = answer(&query("localhost", TYPE::A)).await.unwrap();
        let reply = Packet::parse(&reply).unwrap();
        assert_eq!(reply.id(), 4242);
        assert_eq!(reply.rcode(), RCODE::NoError);
        assert!(reply
            .answers
            .iter()
            .any(|rr| matches!(&rr.rdata, RData::A(a) if a.address == 0x7f00_0001)));

        let reply = answer(&query("no-such-name.invalid", TYPE::A))
            .await
            .unwrap();
        assert_eq!(Packet::parse(&reply).unwrap().rcode(), RCODE::NameError);

        let reply = answer(&query("localhost", TYPE::MX)).await.unwrap();
        assert_eq!(
            Packet::parse(&reply).unwrap().rcode(),
            RCODE::NotImplemented
        );

        assert!(answer(b"\x00\x01garbage").await.is_none());
    }
}
