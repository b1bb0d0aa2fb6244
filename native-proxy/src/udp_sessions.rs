//! The one UDP session table: UDP has no connections, so whoever relays
//! it (a `[UDPProxyTunnel]` for its local clients, the gateway for each
//! destination's tunnel clients) keeps a session per client address,
//! remembers when each was last active, forgets the idle ones and keeps
//! their number bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Sessions by client address, each with the time it was last active.
pub struct UdpSessions<S> {
    by_client: HashMap<SocketAddr, (S, Instant)>,
    max: usize,
}

impl<S> UdpSessions<S> {
    /// A table that holds `max` sessions at most (at least one).
    pub fn new(max: usize) -> Self {
        UdpSessions {
            by_client: HashMap::new(),
            max: max.max(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// The session of `client`, marked active at `now`.
    pub fn touch(&mut self, client: SocketAddr, now: Instant) -> Option<&mut S> {
        let (session, last) = self.by_client.get_mut(&client)?;
        *last = now;
        Some(session)
    }

    /// Adds `client`'s session, active at `now`. When the table is full,
    /// the session quiet the longest makes room and is returned, for the
    /// caller to log (it is dropped with the returned value).
    pub fn insert(
        &mut self,
        client: SocketAddr,
        session: S,
        now: Instant,
    ) -> (&mut S, Option<(SocketAddr, S)>) {
        let mut evicted = None;
        if !self.by_client.contains_key(&client) && self.by_client.len() >= self.max {
            let quietest = self.by_client.iter().min_by_key(|(_, (_, last))| *last);
            if let Some(old) = quietest.map(|(addr, _)| *addr) {
                evicted = self.by_client.remove(&old).map(|(s, _)| (old, s));
            }
        }
        self.by_client.insert(client, (session, now));
        let session = &mut self.by_client.get_mut(&client).expect("just inserted").0;
        (session, evicted)
    }

    /// Keeps the sessions for which `keep(client, session, last_active)`
    /// says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&SocketAddr, &mut S, Instant) -> bool) {
        self.by_client
            .retain(|client, (session, last)| keep(client, session, *last));
    }

    /// Every session with its client and when it was last active.
    pub fn iter(&self) -> impl Iterator<Item = (&SocketAddr, &S, Instant)> {
        self.by_client
            .iter()
            .map(|(client, (session, last))| (client, session, *last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_full_table_forgets_the_session_quiet_the_longest() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut table = UdpSessions::new(2);
        assert!(table.insert(addr(1), "one", at(0)).1.is_none());
        assert!(table.insert(addr(2), "two", at(1)).1.is_none());
        assert_eq!(table.touch(addr(1), at(2)).copied(), Some("one"));
        let (_, evicted) = table.insert(addr(3), "three", at(3));
        assert_eq!(evicted, Some((addr(2), "two")));
        assert_eq!(table.iter().count(), 2);
        assert!(table.touch(addr(2), at(4)).is_none());
        // Replacing a client's own session evicts nobody.
        assert!(table.insert(addr(3), "again", at(5)).1.is_none());
        table.retain(|_, _, last| last >= at(4));
        let left: Vec<_> = table.iter().map(|(a, s, _)| (*a, *s)).collect();
        assert_eq!(left, [(addr(3), "again")]);
    }
}
