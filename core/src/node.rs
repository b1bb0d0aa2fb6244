//! The node: every peer of one WireGuard interface, cryptokey routing
//! between them, and the sans-IO surface the event loop drives.
//!
//! The loop feeds datagrams ([`Node::handle_datagram`]), IP packets
//! ([`Node::handle_ip_packet`]) and time ([`Node::handle_timeout`]) in,
//! and takes datagrams ([`Node::poll_transmit`]) and [`Event`]s out.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;

use ipnet::IpNet;
use rand_core::CryptoRngCore;

use crate::allowed_ips::AllowedIps;
use crate::cookie::CookieChecker;
use crate::gso::{GsoQueue, Transmit};
use crate::handshake::{self, Identity, PeerSecrets};
use crate::hash::FastMap;
use crate::ip::IpHeader;
use crate::peer::{Peer, PeerInfo};
use crate::rate_limit::RateLimiter;
pub use crate::report::{DatagramError, Event, NodeStats, Received, SendError};
use crate::session::DataError;
use crate::time::Instant;
use crate::timers::{INITIATIONS_MIN_INTERVAL, REKEY_TIMEOUT_JITTER};
use crate::wire::{self, CookieReply, Data, Initiation, MessageType, Response};
use crate::{PresharedKey, PrivateKey, PublicKey};

/// A peer of this node. Ids are not reused after a peer is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// How a peer is set up.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Who the peer is.
    pub public_key: PublicKey,
    /// Mixed into every handshake with the peer.
    pub preshared_key: Option<PresharedKey>,
    /// Where to send; `None` for a peer that only ever dials us. The node
    /// follows a peer that roams.
    pub endpoint: Option<SocketAddr>,
    /// Networks this peer may send from and we route to it.
    pub allowed_ips: Vec<IpNet>,
    /// How often to send a keepalive when nothing else was sent; `None`: never.
    pub persistent_keepalive: Option<Duration>,
}

impl PeerOptions {
    /// A peer with no endpoint, no allowed IPs, no keepalive.
    pub fn new(public_key: PublicKey) -> Self {
        PeerOptions {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        }
    }
}

/// Knobs of the whole node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The tunnel MTU: IP packets are padded up to it, never past it.
    pub mtu: usize,
    /// Handshake messages per second above which the node is under load
    /// and answers with cookies instead of doing Diffie-Hellman.
    pub under_load_threshold: u32,
    /// Packets kept per peer while its handshake is in flight; the oldest
    /// goes first when full.
    pub max_staged_packets: usize,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            mtu: usize::from(crate::DEFAULT_MTU),
            under_load_threshold: 128,
            max_staged_packets: 128,
        }
    }
}

/// What every peer uses; split from the peers so both can be borrowed.
pub(crate) struct Shared {
    pub identity: Identity,
    pub gso: GsoQueue,
    pub rng: Box<dyn CryptoRngCore + Send>,
    /// Our local indices: which peer each session or handshake belongs to.
    pub indices: FastMap<u32, PeerId>,
    pub events: VecDeque<Event>,
    pub options: NodeOptions,
    pub stats: NodeStats,
    /// Wall-clock time at the caller's epoch, for handshake timestamps.
    wall_at_epoch: Duration,
    spare: Vec<Vec<u8>>,
}

impl Shared {
    pub fn new_index(&mut self, peer: PeerId) -> u32 {
        loop {
            let index = self.rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = self.indices.entry(index) {
                e.insert(peer);
                return index;
            }
        }
    }

    pub fn jitter(&mut self) -> Duration {
        self.jitter_up_to(REKEY_TIMEOUT_JITTER)
    }

    pub fn jitter_up_to(&mut self, max: Duration) -> Duration {
        let max = max.as_micros() as u32;
        Duration::from_micros(u64::from(self.rng.next_u32() % max))
    }

    pub fn wall_clock(&self, now: Instant) -> Duration {
        self.wall_at_epoch + now.since_epoch()
    }

    /// A packet buffer from the pool.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < 256 {
            buf.clear();
            self.spare.push(buf);
        }
    }
}

/// A WireGuard interface, sans-IO.
pub struct Node {
    shared: Shared,
    peers: Vec<Option<Peer>>,
    by_key: FastMap<PublicKey, PeerId>,
    routes: AllowedIps<PeerId>,
    checker: CookieChecker,
    limiter: RateLimiter,
    load_window: (Instant, u32),
    under_load_until: Option<Instant>,
}

/// Why a peer could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is
pub enum PeerError {
    #[error("peer {0} is already configured")]
    Duplicate(PublicKey),
    #[error("peer {0} is this node's own key")]
    OwnKey(PublicKey),
    #[error("peer {0} has a key that cannot do Diffie-Hellman (low-order point)")]
    WeakKey(PublicKey),
}

impl Node {
    /// A node with no peers. `now` is on the caller's monotonic clock;
    /// `wall_clock` is the time since the Unix epoch at that instant
    /// (handshake timestamps must increase across restarts, so they come
    /// from the wall clock). `rng` must be cryptographically secure.
    pub fn new(
        private_key: PrivateKey,
        options: NodeOptions,
        mut rng: Box<dyn CryptoRngCore + Send>,
        now: Instant,
        wall_clock: Duration,
    ) -> Self {
        let identity = Identity::new(private_key);
        let limiter = RateLimiter::new(crate::random::seed_from(&mut *rng));
        Node {
            checker: CookieChecker::new(&identity.public),
            shared: Shared {
                identity,
                gso: GsoQueue::new(),
                rng,
                indices: FastMap::default(),
                events: VecDeque::new(),
                options,
                stats: NodeStats::default(),
                wall_at_epoch: wall_clock.saturating_sub(now.since_epoch()),
                spare: Vec::new(),
            },
            peers: Vec::new(),
            by_key: FastMap::default(),
            routes: AllowedIps::new(),
            limiter,
            load_window: (now, 0),
            under_load_until: None,
        }
    }

    /// This node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.shared.identity.public
    }

    /// Adds a peer; its routes are its allowed IPs from now on.
    pub fn add_peer(&mut self, options: PeerOptions, now: Instant) -> Result<PeerId, PeerError> {
        let key = options.public_key;
        if key == self.shared.identity.public {
            return Err(PeerError::OwnKey(key));
        }
        if self.by_key.contains_key(&key) {
            return Err(PeerError::Duplicate(key));
        }
        let secrets = PeerSecrets::new(
            &self.shared.identity,
            key,
            options.preshared_key.unwrap_or_default(),
        );
        if secrets.is_weak() {
            return Err(PeerError::WeakKey(key));
        }
        let id = PeerId(self.peers.len() as u32);
        for net in &options.allowed_ips {
            self.routes.insert(*net, id);
        }
        self.peers.push(Some(Peer::new(
            id,
            secrets,
            options.endpoint,
            options.persistent_keepalive.filter(|d| !d.is_zero()),
            now,
        )));
        self.by_key.insert(key, id);
        Ok(id)
    }

    /// Removes a peer: its sessions end, its routes go.
    pub fn remove_peer(&mut self, id: PeerId) {
        if let Some(mut peer) = self.peers.get_mut(id.0 as usize).and_then(Option::take) {
            peer.release(&mut self.shared);
            self.by_key.remove(&peer.secrets.public);
            self.routes.retain(|_, p| *p != id);
        }
    }

    /// The peer an IP packet to `ip` would go to (cryptokey routing).
    pub fn route(&self, ip: std::net::IpAddr) -> Option<PeerId> {
        self.routes.longest_match(ip).copied()
    }

    /// The id of the peer with `key`, if it is configured.
    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// Every peer's id.
    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.iter().flatten().map(|p| p.id)
    }

    /// What the peer knows and counts at `now`; `None` for an unknown id.
    pub fn peer(&self, id: PeerId, now: Instant) -> Option<PeerInfo> {
        self.peer_ref(id).map(|p| p.info(now))
    }

    /// Points a peer at a new endpoint (a re-resolved host name, say).
    pub fn set_endpoint(&mut self, id: PeerId, endpoint: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) {
            peer.set_endpoint(&mut self.shared, endpoint);
        }
    }

    /// Starts a handshake with `id` unless a session is usable or one was
    /// started within Rekey-Timeout. For bringing a tunnel up eagerly.
    pub fn connect(&mut self, id: PeerId, now: Instant) {
        if let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) {
            if !peer.info(now).has_session {
                peer.initiate(&mut self.shared, now, false);
            }
        }
    }

    /// The node's counters.
    pub fn stats(&self) -> &NodeStats {
        &self.shared.stats
    }

    fn peer_ref(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(id.0 as usize).and_then(Option::as_ref)
    }

    // ---- outbound ------------------------------------------------------

    /// Routes an IP packet to the peer whose allowed IPs hold its
    /// destination and encrypts it into the transmit queue (or holds it
    /// while a handshake runs). Call [`Node::poll_transmit`] after a batch.
    pub fn handle_ip_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), SendError> {
        let header = IpHeader::parse(packet).ok_or(SendError::NotIp)?;
        let Some(&id) = self.routes.longest_match(header.dst) else {
            self.shared.stats.no_route += 1;
            return Err(SendError::NoRoute);
        };
        let peer = self.peers[id.0 as usize]
            .as_mut()
            .expect("routes only name live peers");
        peer.send(&mut self.shared, &packet[..header.len], now)
    }

    /// The next datagrams to send: at most `max_segments` datagrams of the
    /// front batch, all to one destination. Hand them to the socket, then
    /// call [`Node::advance_transmit`] with `transmit.segments()`. If the
    /// socket is not writable, leave the queue as it is and come back when
    /// it is: nothing is dropped for back-pressure.
    pub fn poll_transmit(&self, max_segments: usize) -> Option<Transmit<'_>> {
        self.shared.gso.peek(max_segments)
    }

    /// Drops the first `segments` datagrams of the front batch, which the
    /// caller has sent.
    pub fn advance_transmit(&mut self, segments: usize) {
        self.shared.gso.pop(segments);
    }

    /// Bytes waiting in the transmit queue. The caller stops feeding IP
    /// packets when this grows past what it wants to buffer.
    pub fn pending_transmit_bytes(&self) -> usize {
        self.shared.gso.len_bytes()
    }

    // ---- inbound -------------------------------------------------------

    /// Handles one datagram from `from`. A transport message is decrypted
    /// in place and the IP packet returned as a slice of `datagram`;
    /// handshake answers go to the transmit queue. Anything else is
    /// refused with a reason, and counted.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, DatagramError> {
        let result = match wire::message_type(datagram) {
            Ok(MessageType::Data) => self.handle_data(now, from, datagram),
            Ok(MessageType::Initiation) => self.handle_initiation(now, from, datagram),
            Ok(MessageType::Response) => self.handle_response(now, from, datagram),
            Ok(MessageType::CookieReply) => self.handle_cookie_reply(now, datagram),
            Err(_) => Err(DatagramError::Malformed),
        };
        if let Err(reason) = result {
            self.shared.stats.dropped[reason as usize] += 1;
        }
        result
    }

    fn handle_data<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, DatagramError> {
        let message = Data::new_checked(&*datagram).map_err(|_| DatagramError::Malformed)?;
        let (index, counter) = (message.receiver(), message.counter());
        let id = *self
            .shared
            .indices
            .get(&index)
            .ok_or(DatagramError::UnknownIndex)?;
        let peer = self.peers[id.0 as usize]
            .as_mut()
            .ok_or(DatagramError::UnknownIndex)?;
        let slot = peer.slot_of(index).ok_or(DatagramError::UnknownIndex)?;
        let session = peer.session_mut(slot).expect("slot_of found it");
        let plain = session
            .decrypt(counter, datagram, now)
            .map_err(|e| match e {
                DataError::Expired => DatagramError::SessionExpired,
                DataError::Replayed => DatagramError::Replayed,
                DataError::Decrypt => DatagramError::DecryptFailed,
            })?;
        let len = if plain.is_empty() {
            0
        } else {
            match IpHeader::parse(plain) {
                Some(h) if self.routes.longest_match(h.src) == Some(&id) => h.len,
                Some(_) => {
                    // Authenticated, so the session is alive; but the packet
                    // claims a source this peer may not use.
                    peer.received_data(&mut self.shared, slot, from, 0, now);
                    return Err(DatagramError::DisallowedSource);
                }
                None => {
                    peer.received_data(&mut self.shared, slot, from, 0, now);
                    return Err(DatagramError::NotIp);
                }
            }
        };
        peer.received_data(&mut self.shared, slot, from, len, now);
        self.shared.stats.packets_received += 1;
        if len == 0 {
            Ok(Received::Keepalive { peer: id })
        } else {
            Ok(Received::Packet {
                peer: id,
                packet: &mut plain[..len],
            })
        }
    }

    /// MAC checks and load control shared by initiations and responses.
    /// `Ok(false)` means a cookie reply was sent instead.
    fn admit_handshake(
        &mut self,
        now: Instant,
        from: SocketAddr,
        message: &[u8],
    ) -> Result<bool, DatagramError> {
        if !self.checker.verify_mac1(message) {
            return Err(DatagramError::InvalidMac1);
        }
        if !self.under_load(now) {
            return Ok(true);
        }
        if !self.checker.verify_mac2(message, from, now) {
            let mut reply = [0u8; wire::COOKIE_REPLY_LEN];
            self.checker
                .create_reply(message, from, now, &mut *self.shared.rng, &mut reply);
            self.shared.gso.push(None, from, &reply);
            self.shared.stats.cookies_sent += 1;
            return Ok(false);
        }
        if !self.limiter.allow(from.ip(), now) {
            return Err(DatagramError::RateLimited);
        }
        Ok(true)
    }

    /// Counts a handshake message and says whether we are under load:
    /// more than the threshold within a second puts us there for a second.
    fn under_load(&mut self, now: Instant) -> bool {
        let (start, count) = &mut self.load_window;
        if now.saturating_duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.shared.options.under_load_threshold {
            self.under_load_until = Some(now + Duration::from_secs(1));
        }
        self.under_load_until.is_some_and(|until| now < until)
    }

    fn handle_initiation<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, DatagramError> {
        if !self.admit_handshake(now, from, datagram)? {
            return Ok(Received::CookieSent);
        }
        let message = Initiation::new_checked(&*datagram).map_err(|_| DatagramError::Malformed)?;
        let start = handshake::start_initiation(&self.shared.identity, &message)
            .map_err(|_| DatagramError::HandshakeFailed)?;
        let id = *self
            .by_key
            .get(&start.initiator)
            .ok_or(DatagramError::UnknownPeer)?;
        let peer = self.peers[id.0 as usize]
            .as_mut()
            .ok_or(DatagramError::UnknownPeer)?;
        let (timestamp, state) = handshake::finish_initiation(start, &peer.secrets, &message)
            .map_err(|_| DatagramError::HandshakeFailed)?;
        if peer.last_timestamp.is_some_and(|last| timestamp <= last) {
            return Err(DatagramError::ReplayedInitiation);
        }
        if peer
            .last_initiation_received
            .is_some_and(|last| now.saturating_duration_since(last) < INITIATIONS_MIN_INTERVAL)
        {
            return Err(DatagramError::InitiationFlood);
        }
        peer.last_timestamp = Some(timestamp);
        peer.last_initiation_received = Some(now);
        tracing::debug!(peer = %peer.secrets.public.short(), %from, "handshake initiation received");
        peer.respond(&mut self.shared, state, from, now);
        Ok(Received::Handshake { peer: id })
    }

    fn handle_response<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, DatagramError> {
        if !self.admit_handshake(now, from, datagram)? {
            return Ok(Received::CookieSent);
        }
        let message = Response::new_checked(&*datagram).map_err(|_| DatagramError::Malformed)?;
        let index = message.receiver();
        let id = *self
            .shared
            .indices
            .get(&index)
            .ok_or(DatagramError::UnknownIndex)?;
        let peer = self.peers[id.0 as usize]
            .as_mut()
            .ok_or(DatagramError::UnknownIndex)?;
        let state = peer
            .take_pending(index)
            .ok_or(DatagramError::UnknownIndex)?;
        match handshake::consume_response(&state, &self.shared.identity, &peer.secrets, &message) {
            Ok(keys) => {
                peer.complete_as_initiator(&mut self.shared, keys, from, now);
                Ok(Received::Handshake { peer: id })
            }
            Err(_) => {
                // A forged response must not cancel the real handshake.
                peer.restore_pending(state);
                Err(DatagramError::HandshakeFailed)
            }
        }
    }

    fn handle_cookie_reply<'a>(
        &mut self,
        now: Instant,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, DatagramError> {
        let message = CookieReply::new_checked(&*datagram).map_err(|_| DatagramError::Malformed)?;
        let id = *self
            .shared
            .indices
            .get(&message.receiver())
            .ok_or(DatagramError::UnknownIndex)?;
        let peer = self.peers[id.0 as usize]
            .as_mut()
            .ok_or(DatagramError::UnknownIndex)?;
        peer.cookie
            .consume_reply(&message, now)
            .map_err(|_| DatagramError::InvalidCookieReply)?;
        tracing::debug!(peer = %peer.secrets.public.short(), "cookie reply: the peer is under load");
        Ok(Received::Handshake { peer: id })
    }

    // ---- time ----------------------------------------------------------

    /// Runs every timer that is due. Call it when [`Node::poll_timeout`]'s
    /// instant has come (calling it early is harmless), then poll
    /// transmits and events.
    pub fn handle_timeout(&mut self, now: Instant) {
        for peer in self.peers.iter_mut().flatten() {
            if peer.next_timeout().is_some_and(|t| t <= now) {
                peer.handle_timeout(&mut self.shared, now);
            }
        }
    }

    /// When [`Node::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flatten()
            .filter_map(Peer::next_timeout)
            .min()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.shared.events.pop_front()
    }
}
