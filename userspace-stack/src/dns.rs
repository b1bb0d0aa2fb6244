//! Name resolution through the tunnel's DNS servers (the config's `DNS =`),
//! so names resolve where the tunnel leads and nothing leaks to the local
//! resolver.
//!
//! A and AAAA are asked at once; answers are cached for their TTL (refusals
//! too, for the SOA's negative TTL); each question is retried on the next
//! server after a timeout. Failures say what happened: a name that does not
//! exist is not a server that did not answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use underpass_core::hash::FastMap;
use underpass_core::random::SeedSequence;

use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QTYPE, RCODE, TYPE};
use underpass_core::Instant;

use crate::slots::{Key, Slots};
use crate::stack::Stack;
use crate::udp::UdpId;

/// A resolution in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryId(Key);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// Why a name did not resolve.
#[allow(missing_docs)] // each variant's #[error] message says what it is
pub enum DnsError {
    #[error("no such name (NXDOMAIN)")]
    NxDomain,
    #[error("the name has no address records")]
    NoRecords,
    #[error("no answer from the DNS servers")]
    Timeout,
    #[error("the DNS server failed: {0}")]
    ServerFailure(String),
    #[error("no DNS servers are configured for the tunnel")]
    NoServers,
    #[error("not a valid host name")]
    InvalidName,
    #[error("no such query")]
    InvalidHandle,
}

/// How long one attempt waits for an answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per question, rotating through the servers.
const ATTEMPTS: u32 = 3;
/// Once one family has answered with addresses, how long the other one
/// still gets.
const SECOND_FAMILY_GRACE: Duration = Duration::from_millis(250);
/// Cache bounds.
const MAX_CACHED: usize = 4096;
const MIN_TTL: u32 = 1;
const MAX_TTL: u32 = 24 * 3600;
const DEFAULT_NEGATIVE_TTL: u32 = 30;
const MAX_NEGATIVE_TTL: u32 = 300;
/// Queries in flight at most.
const MAX_QUERIES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn qtype(self) -> TYPE {
        match self {
            Family::V4 => TYPE::A,
            Family::V6 => TYPE::AAAA,
        }
    }
}

type Answer = Result<Vec<IpAddr>, DnsError>;

enum Lookup {
    Pending {
        txid: u16,
        server: usize,
        attempt: u32,
        deadline: Instant,
    },
    Done(Answer),
}

struct Query {
    name: String,
    v4: Lookup,
    v6: Lookup,
    waker: Option<Waker>,
}

impl Query {
    fn lookup_mut(&mut self, family: Family) -> &mut Lookup {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn result(&self, prefer_v6: bool) -> Option<Answer> {
        let (Lookup::Done(a), Lookup::Done(b)) = (&self.v4, &self.v6) else {
            return None;
        };
        let (first, second) = if prefer_v6 { (b, a) } else { (a, b) };
        let mut addrs: Vec<IpAddr> = Vec::new();
        for list in [first, second].into_iter().flatten() {
            addrs.extend(list);
        }
        if !addrs.is_empty() {
            return Some(Ok(addrs));
        }
        let errors = [a.as_ref().err(), b.as_ref().err()];
        let worst = if errors.contains(&Some(&DnsError::NxDomain)) {
            DnsError::NxDomain
        } else if let Some(e) = errors
            .iter()
            .flatten()
            .find(|e| matches!(e, DnsError::ServerFailure(_)))
        {
            (*e).clone()
        } else if errors.contains(&Some(&DnsError::Timeout)) {
            DnsError::Timeout
        } else {
            DnsError::NoRecords
        };
        Some(Err(worst))
    }
}

pub(crate) struct Resolver {
    servers: Vec<IpAddr>,
    socket: Option<UdpId>,
    rng: SeedSequence,
    queries: Slots<Query>,
    /// Transaction id to the query and family it asks for.
    in_flight: FastMap<u16, (QueryId, Family)>,
    cache: FastMap<(String, Family), (Answer, Instant)>,
}

impl Resolver {
    pub fn new(servers: Vec<IpAddr>, seed: u64) -> Self {
        Resolver {
            servers,
            socket: None,
            rng: SeedSequence::new(seed),
            queries: Slots::default(),
            in_flight: FastMap::default(),
            cache: FastMap::default(),
        }
    }

    fn new_txid(&mut self) -> u16 {
        loop {
            let id = self.rng.next() as u16;
            if !self.in_flight.contains_key(&id) {
                return id;
            }
        }
    }
}

fn normalise(name: &str) -> Result<String, DnsError> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(name)
    } else {
        Err(DnsError::InvalidName)
    }
}

fn query_bytes(txid: u16, name: &str, family: Family) -> Option<Vec<u8>> {
    let mut packet = Packet::new_query(txid);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        Name::new(name).ok()?,
        QTYPE::TYPE(family.qtype()),
        simple_dns::QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().ok()
}

/// What a response says about its question.
fn read_answer(packet: &Packet<'_>, name: &str, family: Family) -> (Answer, u32) {
    let rcode = packet.rcode();
    let negative_ttl = || {
        packet
            .name_servers
            .iter()
            .find_map(|rr| match &rr.rdata {
                RData::SOA(soa) => Some(soa.minimum.min(rr.ttl)),
                _ => None,
            })
            .unwrap_or(DEFAULT_NEGATIVE_TTL)
            .min(MAX_NEGATIVE_TTL)
    };
    match rcode {
        RCODE::NoError => {}
        RCODE::NameError => return (Err(DnsError::NxDomain), negative_ttl()),
        other => return (Err(DnsError::ServerFailure(format!("{other:?}"))), 0),
    }
    // Follow CNAMEs from the question name, within the answer section.
    let mut names = vec![name.to_string()];
    let mut changed = true;
    while changed && names.len() < 16 {
        changed = false;
        for rr in &packet.answers {
            if let RData::CNAME(target) = &rr.rdata {
                let owner = rr.name.to_string().to_ascii_lowercase();
                let target = target.0.to_string().to_ascii_lowercase();
                if names.contains(&owner) && !names.contains(&target) {
                    names.push(target);
                    changed = true;
                }
            }
        }
    }
    let mut addrs = Vec::new();
    let mut ttl = MAX_TTL;
    for rr in &packet.answers {
        if !names.contains(&rr.name.to_string().to_ascii_lowercase()) {
            continue;
        }
        let addr = match (&rr.rdata, family) {
            (RData::A(a), Family::V4) => IpAddr::V4(Ipv4Addr::from(a.address)),
            (RData::AAAA(a), Family::V6) => IpAddr::V6(Ipv6Addr::from(a.address)),
            _ => continue,
        };
        ttl = ttl.min(rr.ttl);
        addrs.push(addr);
    }
    if addrs.is_empty() {
        (Err(DnsError::NoRecords), negative_ttl())
    } else {
        (Ok(addrs), ttl.max(MIN_TTL))
    }
}

impl Stack {
    pub(crate) fn dns_open(&mut self) {
        if !self.dns.servers.is_empty() {
            self.dns.socket = self.udp_bind(None).ok();
        }
    }

    /// The servers names are resolved with.
    pub fn dns_servers(&self) -> &[IpAddr] {
        &self.dns.servers
    }

    /// Starts resolving `name` (A and AAAA) through the tunnel. An address
    /// literal or a cached name completes at once.
    pub fn dns_resolve(&mut self, name: &str) -> Result<QueryId, DnsError> {
        let now = self.now;
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            let (v4, v6) = match ip {
                IpAddr::V4(_) => (Ok(vec![ip]), Ok(vec![])),
                IpAddr::V6(_) => (Ok(vec![]), Ok(vec![ip])),
            };
            return Ok(QueryId(self.dns.queries.insert(Query {
                name: name.to_string(),
                v4: Lookup::Done(v4),
                v6: Lookup::Done(v6),
                waker: None,
            })));
        }
        let name = normalise(name)?;
        let Some(socket) = self.dns.socket else {
            return Err(DnsError::NoServers);
        };
        if self.dns.queries.len() >= MAX_QUERIES {
            return Err(DnsError::ServerFailure("too many queries in flight".into()));
        }
        let id = QueryId(self.dns.queries.insert(Query {
            name: name.clone(),
            v4: Lookup::Done(Ok(vec![])),
            v6: Lookup::Done(Ok(vec![])),
            waker: None,
        }));
        for family in [Family::V4, Family::V6] {
            let cached = self
                .dns
                .cache
                .get(&(name.clone(), family))
                .filter(|(_, expires)| *expires > now)
                .map(|(answer, _)| answer.clone());
            let lookup = match cached {
                Some(answer) => Lookup::Done(answer),
                None => self.dns_ask(socket, id, &name, family, 0, 0),
            };
            *self
                .dns
                .queries
                .get_mut(id.0)
                .expect("just made")
                .lookup_mut(family) = lookup;
        }
        Ok(id)
    }

    /// Sends one question; returns the lookup state for it.
    fn dns_ask(
        &mut self,
        socket: UdpId,
        id: QueryId,
        name: &str,
        family: Family,
        server: usize,
        attempt: u32,
    ) -> Lookup {
        let txid = self.dns.new_txid();
        let server = server % self.dns.servers.len();
        let dst = SocketAddr::new(self.dns.servers[server], 53);
        let Some(bytes) = query_bytes(txid, name, family) else {
            return Lookup::Done(Err(DnsError::InvalidName));
        };
        if let Err(e) = self.udp_send_to(socket, &bytes, dst) {
            tracing::debug!(%dst, error = %e, "DNS query not sent; will retry");
        }
        self.dns.in_flight.insert(txid, (id, family));
        Lookup::Pending {
            txid,
            server,
            attempt,
            deadline: self.now + ATTEMPT_TIMEOUT,
        }
    }

    /// Ready with the addresses (preferred family first) or why there are
    /// none. The query is finished once this returns `Ready`.
    pub fn poll_resolve(
        &mut self,
        cx: &mut Context<'_>,
        id: QueryId,
    ) -> Poll<Result<Vec<IpAddr>, DnsError>> {
        let prefer_v6 = self.options.addresses.iter().any(|n| n.addr().is_ipv6())
            && !self.options.addresses.iter().any(|n| n.addr().is_ipv4());
        let Some(query) = self.dns.queries.get_mut(id.0) else {
            return Poll::Ready(Err(DnsError::InvalidHandle));
        };
        match query.result(prefer_v6) {
            Some(result) => {
                self.dns_cancel(id);
                Poll::Ready(result)
            }
            None => {
                query.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Forgets a query (its answers still fill the cache).
    pub fn dns_cancel(&mut self, id: QueryId) {
        if let Some(query) = self.dns.queries.remove(id.0) {
            for lookup in [query.v4, query.v6] {
                if let Lookup::Pending { txid, .. } = lookup {
                    self.dns.in_flight.remove(&txid);
                }
            }
        }
    }

    pub(crate) fn dns_timeout(&self) -> Option<Instant> {
        self.dns
            .queries
            .iter()
            .flat_map(|(_, q)| [&q.v4, &q.v6])
            .filter_map(|l| match l {
                Lookup::Pending { deadline, .. } => Some(*deadline),
                Lookup::Done(_) => None,
            })
            .min()
    }

    /// Reads answers, retries what timed out, wakes finished queries.
    pub(crate) fn dns_poll(&mut self, now: Instant) {
        let Some(socket) = self.dns.socket else {
            return;
        };
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = self.udp_recv_from(socket, &mut buf) {
            self.dns_answer(&buf[..n], from, now);
        }
        let ids: Vec<Key> = self.dns.queries.iter().map(|(k, _)| k).collect();
        for key in ids {
            let id = QueryId(key);
            for family in [Family::V4, Family::V6] {
                let query = self.dns.queries.get_mut(key).expect("listed");
                let name = query.name.clone();
                let Lookup::Pending {
                    txid,
                    server,
                    attempt,
                    deadline,
                } = *query.lookup_mut(family)
                else {
                    continue;
                };
                if deadline > now {
                    continue;
                }
                self.dns.in_flight.remove(&txid);
                let other_has_addresses = match family {
                    Family::V4 => matches!(&query.v6, Lookup::Done(Ok(a)) if !a.is_empty()),
                    Family::V6 => matches!(&query.v4, Lookup::Done(Ok(a)) if !a.is_empty()),
                };
                let next = if attempt + 1 >= ATTEMPTS || other_has_addresses {
                    Lookup::Done(Err(DnsError::Timeout))
                } else {
                    self.dns_ask(socket, id, &name, family, server + 1, attempt + 1)
                };
                let query = self.dns.queries.get_mut(key).expect("listed");
                *query.lookup_mut(family) = next;
                if query.result(false).is_some() {
                    if let Some(w) = query.waker.take() {
                        w.wake();
                    }
                }
            }
        }
    }

    fn dns_answer(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        let Ok(packet) = Packet::parse(bytes) else {
            return;
        };
        let Some(&(id, family)) = self.dns.in_flight.get(&packet.id()) else {
            return;
        };
        let Some(query) = self.dns.queries.get_mut(id.0) else {
            return;
        };
        let Lookup::Pending { server, .. } = *query.lookup_mut(family) else {
            return;
        };
        // Only the server asked may answer, and only the question asked.
        let asked = packet.questions.first().is_some_and(|q| {
            q.qname.to_string().eq_ignore_ascii_case(&query.name)
                && q.qtype == QTYPE::TYPE(family.qtype())
        });
        if from != SocketAddr::new(self.dns.servers[server], 53)
            || !asked
            || !packet.has_flags(PacketFlag::RESPONSE)
        {
            return;
        }
        self.dns.in_flight.remove(&packet.id());
        let (answer, ttl) = read_answer(&packet, &query.name, family);
        let name = query.name.clone();
        *query.lookup_mut(family) = Lookup::Done(answer.clone());
        // The other family gets a short grace once this one has addresses.
        if matches!(&answer, Ok(a) if !a.is_empty()) {
            let other = match family {
                Family::V4 => &mut query.v6,
                Family::V6 => &mut query.v4,
            };
            if let Lookup::Pending { deadline, .. } = other {
                *deadline = (*deadline).min(now + SECOND_FAMILY_GRACE);
            }
        }
        if query.result(false).is_some() {
            if let Some(w) = query.waker.take() {
                w.wake();
            }
        }
        if ttl > 0 && !matches!(answer, Err(DnsError::ServerFailure(_))) {
            if self.dns.cache.len() >= MAX_CACHED {
                self.dns.cache.retain(|_, (_, expires)| *expires > now);
                if self.dns.cache.len() >= MAX_CACHED {
                    self.dns.cache.clear();
                }
            }
            let expires = now + Duration::from_secs(u64::from(ttl));
            self.dns.cache.insert((name, family), (answer, expires));
        }
    }
}
