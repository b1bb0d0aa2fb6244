//! One peer: its handshake, its sessions (current, previous, next), the
//! packets waiting for a session, and the timers of the whitepaper
//! (section 6) as deadlines that the node polls, plus one of ours: a
//! handshake when what a live peer answers at once goes unanswered
//! ([`crate::timers::UNANSWERED_MIN`]).
//!
//! Everything the peers share (our identity, the outgoing queue, the
//! randomness, the index table, the events) comes in as [`Shared`].

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::cookie::CookieState;
use crate::handshake::{self, InitiatorState, PeerSecrets, SessionKeys, Timestamp};
use crate::ip::expects_answer;
use crate::node::{Event, PeerId, SendError, Shared};
use crate::session::{padded_len, Session};
use crate::time::Instant;
use crate::timers::*;
use crate::wire::{self, DATA_OVERHEAD};
use crate::PublicKey;

/// Which of a peer's sessions an index belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Previous,
    Next,
}

/// What a peer knows and counts; see [`crate::Node::peer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Who the peer is.
    pub public_key: PublicKey,
    /// Where its datagrams go now; `None` until it is known.
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed, on the caller's clock.
    pub last_handshake: Option<Instant>,
    /// Plaintext bytes sent and received (keepalives count zero).
    pub tx_bytes: u64,
    /// Plaintext bytes received.
    pub rx_bytes: u64,
    /// Handshakes completed with the peer, in either role.
    pub handshakes_completed: u64,
    /// Whether a session can carry data right now.
    pub has_session: bool,
}

pub(crate) struct Peer {
    pub id: PeerId,
    pub secrets: PeerSecrets,
    pub cookie: CookieState,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<Duration>,

    /// Our initiation in flight, if any.
    pending: Option<InitiatorState>,
    pub current: Option<Session>,
    pub previous: Option<Session>,
    /// A session we answered as responder; it becomes current when the
    /// initiator first uses it, which confirms it.
    pub next: Option<Session>,

    /// Packets waiting for a session, oldest first.
    staged: VecDeque<Vec<u8>>,

    /// Greatest initiation timestamp accepted (replay protection).
    pub last_timestamp: Option<Timestamp>,
    pub last_initiation_received: Option<Instant>,
    last_initiation_sent: Option<Instant>,
    /// Start of the current run of handshake attempts.
    attempts_since: Option<Instant>,
    sent_last_minute_handshake: bool,

    retransmit_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    another_keepalive: bool,
    new_handshake_at: Option<Instant>,
    zero_keys_at: Option<Instant>,
    persistent_at: Option<Instant>,

    /// The last handshake's round trip: our initiation to its response, or
    /// our response to the initiator's first message.
    rtt: Option<Duration>,
    /// The first data sent since anything authenticated came back.
    data_unanswered_since: Option<Instant>,
    /// Likewise for a packet a live peer answers within a round trip
    /// ([`expects_answer`]).
    awaiting_answer_since: Option<Instant>,
    /// When silence after such a packet starts a handshake (see
    /// [`Peer::unanswered_timeout`]).
    unanswered_at: Option<Instant>,
    /// The handshake in flight was started by that silence.
    unanswered_handshake: bool,
    /// Such a handshake completed and still no data came back: the peer
    /// is up and has our session but does not answer (a destination
    /// behind it that drops SYNs, say). Silence alone starts no more
    /// handshakes until data arrives; the whitepaper's timer still runs.
    handshake_did_not_help: bool,

    pub last_handshake: Option<Instant>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub handshakes_completed: u64,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| d <= now)
}

impl Peer {
    pub fn new(
        id: PeerId,
        secrets: PeerSecrets,
        endpoint: Option<SocketAddr>,
        persistent_keepalive: Option<Duration>,
        now: Instant,
    ) -> Self {
        Peer {
            id,
            cookie: CookieState::new(&secrets.public),
            secrets,
            endpoint,
            persistent_keepalive,
            pending: None,
            current: None,
            previous: None,
            next: None,
            staged: VecDeque::new(),
            last_timestamp: None,
            last_initiation_received: None,
            last_initiation_sent: None,
            attempts_since: None,
            sent_last_minute_handshake: false,
            retransmit_at: None,
            keepalive_at: None,
            another_keepalive: false,
            new_handshake_at: None,
            zero_keys_at: None,
            // A peer with a persistent keepalive and an endpoint is brought
            // up at once, as wg does when the interface comes up.
            persistent_at: persistent_keepalive.and(endpoint).map(|_| now),
            rtt: None,
            data_unanswered_since: None,
            awaiting_answer_since: None,
            unanswered_at: None,
            unanswered_handshake: false,
            handshake_did_not_help: false,
            last_handshake: None,
            tx_bytes: 0,
            rx_bytes: 0,
            handshakes_completed: 0,
        }
    }

    pub fn info(&self, now: Instant) -> PeerInfo {
        PeerInfo {
            public_key: self.secrets.public,
            endpoint: self.endpoint,
            last_handshake: self.last_handshake,
            tx_bytes: self.tx_bytes,
            rx_bytes: self.rx_bytes,
            handshakes_completed: self.handshakes_completed,
            has_session: self.current.as_ref().is_some_and(|s| s.can_send(now)),
        }
    }

    pub fn session_mut(&mut self, slot: Slot) -> Option<&mut Session> {
        match slot {
            Slot::Current => self.current.as_mut(),
            Slot::Previous => self.previous.as_mut(),
            Slot::Next => self.next.as_mut(),
        }
    }

    /// Which session or handshake the local index `index` names.
    pub fn slot_of(&self, index: u32) -> Option<Slot> {
        [
            (Slot::Current, &self.current),
            (Slot::Previous, &self.previous),
            (Slot::Next, &self.next),
        ]
        .into_iter()
        .find(|(_, s)| s.as_ref().is_some_and(|s| s.local_index == index))
        .map(|(slot, _)| slot)
    }

    pub fn pending_index(&self) -> Option<u32> {
        self.pending.as_ref().map(|p| p.local_index)
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        [
            self.retransmit_at,
            self.keepalive_at,
            self.new_handshake_at,
            self.zero_keys_at,
            self.persistent_at,
            self.unanswered_at,
        ]
        .into_iter()
        .fold(None, earliest)
    }

    // ---- sending -------------------------------------------------------

    /// Sends an IP packet (or, if empty, a keepalive) to this peer: at once
    /// on a usable session, else it waits for the handshake this starts.
    pub fn send(&mut self, sh: &mut Shared, packet: &[u8], now: Instant) -> Result<(), SendError> {
        if self.endpoint.is_none() {
            return Err(SendError::NoEndpoint);
        }
        if self.staged.is_empty() && self.current.as_ref().is_some_and(|s| s.can_send(now)) {
            self.encrypt(sh, packet, now);
            self.keep_key_fresh_sending(sh, now);
            return Ok(());
        }
        self.stage(sh, packet);
        self.send_staged(sh, now);
        Ok(())
    }

    fn stage(&mut self, sh: &mut Shared, packet: &[u8]) {
        if self.staged.len() >= sh.options.max_staged_packets {
            if let Some(old) = self.staged.pop_front() {
                sh.recycle(old);
                sh.stats.staged_dropped += 1;
            }
        }
        let mut buf = sh.buffer();
        buf.extend_from_slice(packet);
        self.staged.push_back(buf);
    }

    fn send_staged(&mut self, sh: &mut Shared, now: Instant) {
        if !self.current.as_ref().is_some_and(|s| s.can_send(now)) {
            self.initiate(sh, now, false);
            return;
        }
        while let Some(packet) = self.staged.pop_front() {
            self.encrypt(sh, &packet, now);
            sh.recycle(packet);
        }
        self.keep_key_fresh_sending(sh, now);
    }

    pub fn send_keepalive(&mut self, sh: &mut Shared, now: Instant) {
        if self.endpoint.is_none() {
            return;
        }
        if self.staged.is_empty() {
            self.stage(sh, &[]);
        }
        self.send_staged(sh, now);
    }

    /// Encrypts one packet on the current session straight into the queue.
    fn encrypt(&mut self, sh: &mut Shared, packet: &[u8], now: Instant) {
        let (Some(session), Some(endpoint)) = (self.current.as_mut(), self.endpoint) else {
            return;
        };
        let len = DATA_OVERHEAD + padded_len(packet.len(), sh.options.mtu);
        let out = sh.gso.push_with_len(None, endpoint, len);
        session.encrypt(packet, out);
        self.tx_bytes += packet.len() as u64;
        sh.stats.packets_sent += 1;
        self.authenticated_sent(now);
        if packet.is_empty() {
            return;
        }
        if self.new_handshake_at.is_none() {
            // If nothing comes back for a while, the session may be dead.
            self.new_handshake_at = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + sh.jitter());
            self.data_unanswered_since.get_or_insert(now);
        }
        if self.unanswered_at.is_none()
            && self.pending.is_none()
            && !self.handshake_did_not_help
            && expects_answer(packet)
        {
            // A live peer answers this within a round trip or so; if it
            // does not, it may have restarted and forgotten the session,
            // and the whitepaper's timer would wait 15 s to find out.
            self.awaiting_answer_since = Some(now);
            self.unanswered_at =
                Some(now + self.unanswered_timeout() + sh.jitter_up_to(UNANSWERED_JITTER));
        }
    }

    /// How long a packet that a live peer answers may go unanswered before
    /// a new handshake: a few round trips, at least [`UNANSWERED_MIN`].
    fn unanswered_timeout(&self) -> Duration {
        let rtts = self.rtt.unwrap_or_default() * UNANSWERED_RTTS;
        rtts.max(UNANSWERED_MIN)
    }

    fn keep_key_fresh_sending(&mut self, sh: &mut Shared, now: Instant) {
        let Some(s) = &self.current else { return };
        if s.initiator && (s.sent() >= REKEY_AFTER_MESSAGES || s.age(now) >= REKEY_AFTER_TIME) {
            self.initiate(sh, now, false);
        }
    }

    /// Starts (or, with `retry`, repeats) a handshake as initiator. Says
    /// whether an initiation went out: without `retry`, at most one does
    /// per Rekey-Timeout.
    pub fn initiate(&mut self, sh: &mut Shared, now: Instant, retry: bool) -> bool {
        let Some(endpoint) = self.endpoint else {
            return false;
        };
        if !retry {
            if self
                .last_initiation_sent
                .is_some_and(|last| now.saturating_duration_since(last) < REKEY_TIMEOUT)
            {
                return false;
            }
            self.attempts_since = Some(now);
        }
        if let Some(old) = self.pending.take() {
            sh.indices.remove(&old.local_index);
        }
        let index = sh.new_index(self.id);
        let timestamp = handshake::tai64n(sh.wall_clock(now));
        let mut message = [0u8; wire::INITIATION_LEN];
        let Ok(state) = handshake::create_initiation(
            &sh.identity,
            &self.secrets,
            &mut *sh.rng,
            index,
            timestamp,
            &mut message,
        ) else {
            // A low-order public key: no handshake with it can succeed.
            sh.indices.remove(&index);
            return false;
        };
        self.cookie.seal(&mut message, now);
        sh.gso.push(None, endpoint, &message);
        sh.stats.handshakes_initiated += 1;
        tracing::debug!(peer = %self.secrets.public.short(), %endpoint, retry, "handshake initiation sent");
        self.pending = Some(state);
        self.last_initiation_sent = Some(now);
        self.retransmit_at = Some(now + REKEY_TIMEOUT + sh.jitter());
        self.authenticated_sent(now);
        true
    }

    /// Writes our response to an initiation that authenticated, and holds
    /// the new session as `next` until the initiator confirms it.
    pub fn respond(
        &mut self,
        sh: &mut Shared,
        state: handshake::ResponderState,
        from: SocketAddr,
        now: Instant,
    ) {
        // Their initiation replaces ours: only one handshake runs per pair.
        if let Some(old) = self.pending.take() {
            sh.indices.remove(&old.local_index);
        }
        let index = sh.new_index(self.id);
        let mut message = [0u8; wire::RESPONSE_LEN];
        let keys = match handshake::create_response(
            state,
            &self.secrets,
            &mut *sh.rng,
            index,
            &mut message,
        ) {
            Ok(keys) => keys,
            Err(_) => {
                sh.indices.remove(&index);
                return;
            }
        };
        self.set_endpoint(sh, from);
        self.cookie.seal(&mut message, now);
        sh.gso.push(None, from, &message);
        let session = Session::new(&keys, now);
        self.replace(sh, Slot::Next, Some(session));
        self.replace(sh, Slot::Previous, None);
        self.last_initiation_sent = Some(now);
        self.session_derived(now);
        self.authenticated_received(now);
        self.authenticated_sent(now);
    }

    /// The response to our initiation authenticated: the new session is
    /// current at once.
    pub fn complete_as_initiator(
        &mut self,
        sh: &mut Shared,
        keys: SessionKeys,
        from: SocketAddr,
        now: Instant,
    ) {
        self.pending = None;
        if let Some(sent) = self.last_initiation_sent {
            self.rtt = Some(now.saturating_duration_since(sent).min(REKEY_TIMEOUT));
        }
        self.set_endpoint(sh, from);
        let session = Session::new(&keys, now);
        match self.next.take() {
            Some(next) => {
                let old_current = self.current.take();
                self.replace(sh, Slot::Previous, Some(next));
                if let Some(s) = old_current {
                    sh.indices.remove(&s.local_index);
                }
            }
            None => {
                let old_current = self.current.take();
                self.replace(sh, Slot::Previous, old_current);
            }
        }
        self.current = Some(session);
        self.handshake_completed(sh, now, true);
        self.session_derived(now);
        self.authenticated_received(now);
        // Confirm the session to the responder: with data if any waits,
        // else with a keepalive.
        self.send_keepalive(sh, now);
    }

    /// Takes the state of the initiation a response answers.
    pub fn take_pending(&mut self, index: u32) -> Option<InitiatorState> {
        if self.pending_index() == Some(index) {
            self.pending.take()
        } else {
            None
        }
    }

    pub fn restore_pending(&mut self, state: InitiatorState) {
        self.pending = Some(state);
    }

    fn replace(&mut self, sh: &mut Shared, slot: Slot, session: Option<Session>) {
        let place = match slot {
            Slot::Current => &mut self.current,
            Slot::Previous => &mut self.previous,
            Slot::Next => &mut self.next,
        };
        if let Some(old) = core::mem::replace(place, session) {
            sh.indices.remove(&old.local_index);
        }
    }

    // ---- receiving -----------------------------------------------------

    /// A transport message authenticated on `slot`. Returns nothing; the
    /// caller hands the plaintext up.
    pub fn received_data(
        &mut self,
        sh: &mut Shared,
        slot: Slot,
        from: SocketAddr,
        len: usize,
        now: Instant,
    ) {
        if slot == Slot::Next {
            // The initiator used the session we answered with: confirmed.
            if let Some(next) = &self.next {
                self.rtt = Some(next.age(now).min(REKEY_TIMEOUT));
            }
            let next = self.next.take();
            let old_current = self.current.take();
            self.replace(sh, Slot::Previous, old_current);
            self.current = next;
            self.handshake_completed(sh, now, false);
            self.send_staged(sh, now);
        }
        self.set_endpoint(sh, from);
        self.rx_bytes += len as u64;
        self.authenticated_received(now);
        if len > 0 {
            self.handshake_did_not_help = false;
            if self.keepalive_at.is_none() {
                self.keepalive_at = Some(now + KEEPALIVE_TIMEOUT);
            } else {
                self.another_keepalive = true;
            }
        }
        // keep_key_fresh_receiving: the initiator rekeys before the session
        // dies even if it only receives.
        if let Some(s) = &self.current {
            if s.initiator
                && !self.sent_last_minute_handshake
                && s.age(now) >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
            {
                self.sent_last_minute_handshake = true;
                self.initiate(sh, now, false);
            }
        }
    }

    pub fn set_endpoint(&mut self, sh: &mut Shared, from: SocketAddr) {
        if self.endpoint != Some(from) {
            self.endpoint = Some(from);
            sh.events.push_back(Event::EndpointChanged {
                peer: self.id,
                endpoint: from,
            });
        }
    }

    // ---- timers --------------------------------------------------------

    fn handshake_completed(&mut self, sh: &mut Shared, now: Instant, initiator: bool) {
        self.retransmit_at = None;
        self.attempts_since = None;
        self.sent_last_minute_handshake = false;
        if core::mem::take(&mut self.unanswered_handshake) {
            // Data that comes back clears this again.
            self.handshake_did_not_help = true;
        }
        self.last_handshake = Some(now);
        self.handshakes_completed += 1;
        sh.stats.handshakes_completed += 1;
        tracing::debug!(peer = %self.secrets.public.short(), initiator, "handshake completed");
        sh.events
            .push_back(Event::HandshakeCompleted { peer: self.id });
    }

    fn session_derived(&mut self, now: Instant) {
        self.zero_keys_at = Some(now + ZERO_KEYS_AFTER);
    }

    fn authenticated_sent(&mut self, now: Instant) {
        self.keepalive_at = None;
        self.another_keepalive = false;
        self.persistent_keepalive_traversal(now);
    }

    fn authenticated_received(&mut self, now: Instant) {
        self.new_handshake_at = None;
        self.data_unanswered_since = None;
        self.unanswered_at = None;
        self.awaiting_answer_since = None;
        self.persistent_keepalive_traversal(now);
    }

    fn persistent_keepalive_traversal(&mut self, now: Instant) {
        if let Some(interval) = self.persistent_keepalive {
            self.persistent_at = Some(now + interval);
        }
    }

    pub fn handle_timeout(&mut self, sh: &mut Shared, now: Instant) {
        if due(self.retransmit_at, now) {
            self.retransmit_at = None;
            let started = self.attempts_since.unwrap_or(now);
            if now.saturating_duration_since(started) >= REKEY_ATTEMPT_TIME {
                self.give_up(sh, now);
            } else {
                self.initiate(sh, now, true);
            }
        }
        if due(self.keepalive_at, now) {
            self.keepalive_at = None;
            let another = core::mem::take(&mut self.another_keepalive);
            self.send_keepalive(sh, now);
            if another {
                self.keepalive_at = Some(now + KEEPALIVE_TIMEOUT);
            }
        }
        if due(self.new_handshake_at, now) {
            self.new_handshake_at = None;
            if self.initiate(sh, now, false) {
                let since = self.data_unanswered_since.unwrap_or(now);
                self.no_reply(sh, now.saturating_duration_since(since));
            }
        }
        if due(self.unanswered_at, now) {
            self.unanswered_at = None;
            self.handshake_on_silence(sh, now);
        }
        if due(self.zero_keys_at, now) {
            self.zero_keys_at = None;
            self.zero_keys(sh);
        }
        if due(self.persistent_at, now) {
            self.persistent_at = None;
            self.send_keepalive(sh, now);
            // Sending resets it; without an endpoint nothing was sent.
            if self.persistent_at.is_none() {
                self.persistent_keepalive_traversal(now);
            }
        }
    }

    /// A packet that a live peer answers within a round trip went
    /// unanswered for a few: start a handshake now rather than after the
    /// whitepaper's 15 s, within its limit of one per Rekey-Timeout.
    fn handshake_on_silence(&mut self, sh: &mut Shared, now: Instant) {
        if self.pending.is_some() {
            // A handshake is in flight and retries by itself.
            return;
        }
        if let Some(last) = self.last_initiation_sent {
            let allowed = last + REKEY_TIMEOUT;
            if now < allowed {
                self.unanswered_at = Some(allowed + sh.jitter());
                return;
            }
        }
        if self.initiate(sh, now, false) {
            self.unanswered_handshake = true;
            let since = self.awaiting_answer_since.unwrap_or(now);
            self.no_reply(sh, now.saturating_duration_since(since));
        }
    }

    fn no_reply(&mut self, sh: &mut Shared, waited: Duration) {
        tracing::debug!(peer = %self.secrets.public.short(), ?waited, "no reply to data: new handshake");
        sh.events.push_back(Event::NoReply {
            peer: self.id,
            waited,
        });
    }

    fn give_up(&mut self, sh: &mut Shared, now: Instant) {
        tracing::debug!(peer = %self.secrets.public.short(), "handshake did not complete within Rekey-Attempt-Time");
        if let Some(p) = self.pending.take() {
            sh.indices.remove(&p.local_index);
        }
        self.attempts_since = None;
        self.unanswered_handshake = false;
        self.keepalive_at = None;
        for packet in self.staged.drain(..) {
            sh.stats.staged_dropped += 1;
            sh.recycle(packet);
        }
        if self.zero_keys_at.is_none() {
            self.zero_keys_at = Some(now + ZERO_KEYS_AFTER);
        }
        sh.events
            .push_back(Event::HandshakeTimedOut { peer: self.id });
    }

    fn zero_keys(&mut self, sh: &mut Shared) {
        let had_session = self.current.is_some() || self.previous.is_some() || self.next.is_some();
        for slot in [Slot::Current, Slot::Previous, Slot::Next] {
            self.replace(sh, slot, None);
        }
        if let Some(p) = self.pending.take() {
            sh.indices.remove(&p.local_index);
        }
        for packet in self.staged.drain(..) {
            sh.recycle(packet);
        }
        if had_session {
            sh.events.push_back(Event::SessionExpired { peer: self.id });
        }
    }

    /// Frees every index this peer holds (the peer is being removed).
    pub fn release(&mut self, sh: &mut Shared) {
        self.zero_keys(sh);
    }
}
