//! What the stack keeps per TCP connection beside smoltcp's socket: the
//! handshake's options and round trip, our [`Sender`] and [`Receiver`],
//! and the sequence-number repair of [`crate::ack_seq`]. Every segment of
//! the connection passes through here, both ways, parsed once.

use std::time::Duration;

use underpass_core::Instant;

use crate::device::Queues;
use crate::memory::Budget;
use crate::reassembly::{Reassembly, Verdict};
use crate::receiver::Receiver;
use crate::segment::{before, Segment, ACK, RST, SYN};
use crate::sender::{Outbound, Sender};
use crate::tcp::ConnId;

/// What a SYN (ours or the peer's) said.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syn {
    pub isn: u32,
    pub scale: Option<u8>,
    pub mss: Option<u16>,
    pub sack: bool,
    /// When it was sent or seen, and whether it was sent more than once
    /// (then it cannot time the round trip).
    pub at: Instant,
    pub repeated: bool,
}

impl Syn {
    pub fn of(seg: &Segment, now: Instant) -> Syn {
        Syn {
            isn: seg.seq,
            scale: seg.options.window_scale,
            mss: seg.options.mss,
            sack: seg.options.sack_permitted,
            at: now,
            repeated: false,
        }
    }
}

/// How a connection's windows are set up (from the stack's options).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The largest IP packet.
    pub mtu: usize,
    /// The receive window a connection starts with, and its largest.
    pub initial_window: usize,
    pub max_window: usize,
    /// Our congestion controller (none: only the peer's window limits
    /// smoltcp).
    pub congestion: Option<crate::sender::Algorithm>,
}

pub(crate) struct Flow {
    pub conn: ConnId,
    pub snd_max: crate::ack_seq::SndMax,
    ours: Option<Syn>,
    theirs: Option<Syn>,
    pub sender: Option<Sender>,
    pub receiver: Option<Receiver>,
    reassembly: Option<Reassembly>,
    /// The acknowledgment and window field of our latest segment, which a
    /// retransmission carries too.
    last_ack: Option<(u32, u16)>,
    /// The highest acknowledgment from the peer, and the window field we
    /// showed smoltcp with it: what a segment that waited for a hole is
    /// given (smoltcp drops a segment whose ACK is behind one it saw).
    peer_ack: Option<(u32, u16)>,
    /// The handshake could not be followed (the peer's SYN was not seen):
    /// smoltcp's own congestion control runs instead.
    pub unmanaged: bool,
    /// What the application may queue for sending (written, not yet
    /// acknowledged).
    send_allowance: usize,
    /// What this connection counts for in the memory budget (its receive
    /// window and send allowance when last counted).
    pub claimed: usize,
}

impl Flow {
    pub fn new(conn: ConnId, theirs: Option<Syn>) -> Flow {
        Flow {
            conn,
            snd_max: None,
            ours: None,
            theirs,
            sender: None,
            receiver: None,
            reassembly: None,
            last_ack: None,
            peer_ack: None,
            unmanaged: false,
            send_allowance: crate::memory::MIN_SEND_ALLOWANCE,
            claimed: 0,
        }
    }

    /// The handshake's round trip: our SYN to their SYN-ACK, or our SYN-ACK
    /// to their ACK.
    fn handshake_rtt(&self, now: Instant) -> Option<Duration> {
        let ours = self.ours?;
        (!ours.repeated).then(|| now.saturating_duration_since(ours.at))
    }

    /// Both SYNs are known: make the sender and receiver.
    fn establish(&mut self, limits: &Limits, now: Instant) {
        if self.sender.is_some() || self.unmanaged {
            return;
        }
        let (Some(ours), Some(theirs)) = (self.ours, self.theirs) else {
            return;
        };
        let (our_scale, peer_scale) = match (ours.scale, theirs.scale) {
            (Some(o), Some(t)) => (o, t),
            _ => (0, 0),
        };
        let rtt = self.handshake_rtt(now);
        let mss = mss(limits.mtu, theirs.mss);
        let mut sender = Sender::new(
            ours.isn.wrapping_add(1),
            mss,
            peer_scale,
            theirs.sack,
            rtt,
            limits.congestion.unwrap_or(crate::sender::Algorithm::Cubic),
            now,
        );
        if limits.congestion.is_none() {
            sender.disable_congestion_control();
        }
        self.sender = Some(sender);
        self.reassembly = Some(Reassembly::new(theirs.isn.wrapping_add(1)));
        self.receiver = Some(Receiver::new(
            our_scale,
            mss,
            limits.initial_window,
            limits.max_window,
            now,
        ));
    }

    /// A segment from the peer: the sender learns from its ACK and cuts
    /// the window smoltcp sees; data past a hole waits (see
    /// [`Reassembly`]); what smoltcp is to read goes to `device`.
    pub fn on_inbound(
        &mut self,
        seg: &Segment,
        bytes: &[u8],
        limits: &Limits,
        now: Instant,
        device: &mut Queues,
    ) {
        let mut packet = device.copy_rx(bytes);
        if seg.has(SYN) {
            if self.theirs.is_none() {
                self.theirs = Some(Syn::of(seg, now));
            }
            if seg.has(ACK) {
                // Their SYN-ACK: the round trip from our SYN.
                self.establish(limits, now);
            }
            return device.push_rx_owned(packet);
        }
        if seg.has(RST) || !seg.has(ACK) {
            return device.push_rx_owned(packet);
        }
        if self.sender.is_none() {
            self.establish(limits, now);
        }
        if let Some(sender) = self.sender.as_mut() {
            let window = sender.on_ack(seg, now, &mut |p| device.recycle_tx(p));
            crate::segment::set_window(&mut packet, seg.offset, window);
            match self.peer_ack {
                Some((ack, w)) if before(seg.ack, ack) => {
                    // Reordered: an ACK behind one smoltcp saw would make
                    // it drop the segment's data too.
                    crate::segment::set_ack(&mut packet, seg.offset, ack);
                    crate::segment::set_window(&mut packet, seg.offset, w);
                }
                _ => self.peer_ack = Some((seg.ack, window)),
            }
        }
        let Some(reassembly) = self.reassembly.as_mut() else {
            return device.push_rx_owned(packet);
        };
        let edge = self.receiver.as_ref().and_then(Receiver::edge);
        let peer_ack = self.peer_ack;
        let mut released = Vec::new();
        match reassembly.on_segment(seg, packet, edge, &mut |p| released.push(p)) {
            Verdict::Pass(p) => device.push_rx_owned(p),
            Verdict::Dropped(p) => device.recycle_rx(p),
            Verdict::Held => {
                // smoltcp still hears the ACK and window now.
                let bare = device.tx_buffer();
                let held = reassembly.rcv_nxt();
                let bare = crate::segment::headers_only(bytes, seg.offset, held, bare);
                let mut bare = bare;
                if let Some((ack, w)) = peer_ack {
                    crate::segment::set_ack(&mut bare, seg.offset, ack);
                    crate::segment::set_window(&mut bare, seg.offset, w);
                }
                device.push_rx_owned(bare);
            }
        }
        for mut p in released {
            if let (Some((ack, w)), Some(s)) = (peer_ack, Segment::parse(&p)) {
                crate::segment::set_ack(&mut p, s.offset, ack);
                crate::segment::set_window(&mut p, s.offset, w);
            }
            device.push_rx_owned(p);
        }
    }

    /// A segment smoltcp wrote for the peer: the receiver sets its window,
    /// a pure ACK carries the SACK blocks of what is held, the sender
    /// keeps new data. Returns what to do with the packet.
    pub fn on_outbound(
        &mut self,
        seg: &Segment,
        mut packet: Vec<u8>,
        now: Instant,
        limits: &Limits,
        budget: &mut Budget,
        connections: usize,
    ) -> Outbound {
        if seg.has(SYN) {
            match self.ours.as_mut() {
                Some(ours) if ours.isn == seg.seq => ours.repeated = true,
                _ => self.ours = Some(Syn::of(seg, now)),
            }
            return Outbound::Pass(packet);
        }
        if seg.has(ACK) && !seg.has(RST) {
            let rtt = self
                .sender
                .as_ref()
                .map_or(Duration::from_millis(100), |s| s.rtt().srtt());
            if let Some(r) = self.receiver.as_mut() {
                if let Some(share) = budget.share(connections) {
                    r.shrink_to(share.max(limits.initial_window));
                }
                let room = budget.room(r.target());
                let field = r.window_field(seg.ack, seg.window, rtt, now, room);
                crate::segment::set_window(&mut packet, seg.offset, field);
                self.last_ack = Some((seg.ack, field));
                self.recount(budget);
            }
            if let Some(re) = self.reassembly.as_mut() {
                re.ack_due = false;
                if seg.is_pure_ack() && re.has_blocks() {
                    let (ack, window) = self.last_ack.expect("set above");
                    let sack = re.sack();
                    // The sequence number as sent (ack_seq may have moved it).
                    let at = seg.offset + 4;
                    let seq = u32::from_be_bytes([
                        packet[at],
                        packet[at + 1],
                        packet[at + 2],
                        packet[at + 3],
                    ]);
                    packet = crate::segment::ack_packet(
                        seg.src, seg.dst, seq, ack, window, sack, packet,
                    );
                }
            }
        }
        match self.sender.as_mut() {
            Some(sender) => sender.on_segment_out(seg, packet, now),
            None => Outbound::Pass(packet),
        }
    }

    /// Sends what the sender has due, and the ACK that held data asks for
    /// if smoltcp sent none (`tuple` is (ours, theirs)).
    /// `queued` is what the application wrote that smoltcp has not sent
    /// yet (the sender's rate samples need to know).
    pub fn transmit(
        &mut self,
        now: Instant,
        tuple: (std::net::SocketAddr, std::net::SocketAddr),
        queued: usize,
        device: &mut Queues,
        send: &mut impl FnMut(&[u8]),
    ) {
        if let Some(s) = self.sender.as_mut() {
            s.transmit(now, self.last_ack, queued, send);
        }
        if let (Some(re), Some((ack, window)), Some(seq)) =
            (self.reassembly.as_mut(), self.last_ack, self.snd_max)
        {
            let mut ack_with = |sack| {
                let p = crate::segment::ack_packet(
                    tuple.0,
                    tuple.1,
                    seq,
                    ack,
                    window,
                    sack,
                    device.tx_buffer(),
                );
                send(&p);
                device.recycle_tx(p);
            };
            if re.ack_due {
                re.ack_due = false;
                ack_with(re.sack());
            }
            for sack in re.take_extra() {
                ack_with(sack);
            }
        }
    }

    pub fn poll_at(&self) -> Option<Instant> {
        self.sender.as_ref().and_then(Sender::poll_at)
    }

    pub fn on_timeout(&mut self, now: Instant) {
        if let Some(s) = self.sender.as_mut() {
            s.on_timeout(now);
        }
    }

    pub fn is_active(&self) -> bool {
        self.sender.as_ref().is_some_and(Sender::is_active)
            || self
                .reassembly
                .as_ref()
                .is_some_and(|r| r.ack_due || r.has_extra())
    }

    /// What the connection may come to hold: its receive window and what
    /// the application may queue to send.
    fn claim(&self) -> usize {
        self.receiver.as_ref().map_or(0, Receiver::target) + self.send_allowance
    }

    /// Brings the budget up to date with this connection's claim.
    fn recount(&mut self, budget: &mut Budget) {
        let claim = self.claim();
        budget.update(self.claimed, claim);
        self.claimed = claim;
    }

    /// What the application may have queued for sending: twice the
    /// congestion window (so the next round trip's data is ready), at
    /// least a little, at most the buffer, as the budget allows.
    pub fn send_allowance(&mut self, buffer: usize, budget: &mut Budget) -> usize {
        let cwnd = self.sender.as_ref().map_or(0, Sender::cwnd);
        let want = (2 * cwnd).clamp(crate::memory::MIN_SEND_ALLOWANCE, buffer.max(1));
        if want > self.send_allowance {
            self.send_allowance = want.min(budget.room(self.send_allowance));
            self.recount(budget);
        }
        self.send_allowance
    }

    /// The connection's buffers emptied after a transfer: its claims go
    /// back to where a new connection's start.
    pub fn quiet(&mut self, receive: bool, send: bool, limits: &Limits, budget: &mut Budget) {
        if let (true, Some(r)) = (receive, self.receiver.as_mut()) {
            r.reset(limits.initial_window);
        }
        if send {
            self.send_allowance = crate::memory::MIN_SEND_ALLOWANCE;
        }
        self.recount(budget);
    }

    /// Segments the sender sent again, and its timeouts, so far.
    pub fn retransmitted(&self) -> u64 {
        self.sender.as_ref().map_or(0, |s| s.retransmitted)
    }

    pub fn timeouts(&self) -> u64 {
        self.sender.as_ref().map_or(0, |s| s.timeouts)
    }

    /// The receive window the connection is allowed.
    pub fn window(&self) -> usize {
        self.receiver.as_ref().map_or(usize::MAX, Receiver::target)
    }

    /// Bytes sent and not yet acknowledged, as the sender counts them.
    pub fn outstanding(&self) -> usize {
        self.sender.as_ref().map_or(0, Sender::outstanding)
    }

    /// The application read `n` bytes.
    pub fn on_read(&mut self, n: usize) {
        if let Some(r) = self.receiver.as_mut() {
            r.on_read(n);
        }
    }

    /// Every packet held (sent and not acknowledged, or received past a
    /// hole), for recycling when the connection goes.
    pub fn drain(&mut self, device: &mut Queues) {
        for p in self.sender.iter_mut().flat_map(Sender::drain) {
            device.recycle_tx(p);
        }
        for p in self.reassembly.iter_mut().flat_map(Reassembly::drain) {
            device.recycle_rx(p);
        }
    }
}

/// The payload we may put in a segment: our MTU less the headers, or less
/// if the peer asked (536 when it did not say, RFC 9293).
fn mss(mtu: usize, theirs: Option<u16>) -> usize {
    (mtu.saturating_sub(40))
        .min(usize::from(theirs.unwrap_or(536)))
        .max(64)
}

/// SYNs seen before smoltcp made their connection, by (their end, our
/// end). Bounded: a flood of SYNs pushes out the oldest, whose connections
/// (if any come of them) then run on smoltcp's own congestion control.
pub(crate) struct SynStash {
    syns: crate::stack::AddrMap<(std::net::SocketAddr, std::net::SocketAddr), Syn>,
    order: std::collections::VecDeque<(std::net::SocketAddr, std::net::SocketAddr)>,
}

/// SYNs remembered at most.
const MAX_STASHED_SYNS: usize = 4096;

impl SynStash {
    pub fn new(hasher: foldhash::fast::FixedState) -> SynStash {
        SynStash {
            syns: crate::stack::AddrMap::with_hasher(hasher),
            order: Default::default(),
        }
    }

    pub fn insert(&mut self, key: (std::net::SocketAddr, std::net::SocketAddr), syn: Syn) {
        if self.syns.insert(key, syn).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > MAX_STASHED_SYNS {
            if let Some(old) = self.order.pop_front() {
                self.syns.remove(&old);
            }
        }
    }

    pub fn take(&mut self, key: &(std::net::SocketAddr, std::net::SocketAddr)) -> Option<Syn> {
        let syn = self.syns.remove(key)?;
        if self.order.len() > 2 * self.syns.len() + 64 {
            let syns = &self.syns;
            self.order.retain(|k| syns.contains_key(k));
        }
        Some(syn)
    }
}
