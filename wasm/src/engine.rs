//! The browser's engine: one WireGuard node and its userspace stack, fed
//! by a transport to the relay (see `transport`) and driven by JS
//! timers. The page is single-threaded, so the engine is shared through
//! `Rc<RefCell<..>>`; nothing holds the borrow across an await, and work
//! is batched: every input marks the engine dirty and one turn, on the next
//! microtask, handles all of it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use underpass_core::{Event, Instant, Node, PeerId, Received};
use underpass_stack::Stack;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::transport::{Inbound, Transport};

/// The address the node believes its peer is at. The relay, not the page,
/// decides where datagrams go; this is only a label (TEST-NET-1).
pub const RELAY_LABEL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 51820);
/// Inbound frames kept while the engine is busy; past this they are
/// dropped, as a full UDP socket would.
const MAX_INBOUND: usize = 8192;
/// Frames handled per turn before the page gets the thread back.
const FRAMES_PER_TURN: usize = 1024;
/// Bytes the WebSocket may buffer before the stack must wait.
const MAX_WS_BUFFERED: u32 = 4 << 20;
/// Encrypted bytes waiting for the WebSocket before the stack must wait.
const MAX_PENDING_TRANSMIT: usize = 4 << 20;
/// How soon to look again when the WebSocket is full (it has no writable
/// event).
const WS_RETRY: Duration = Duration::from_millis(4);

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &js_sys::Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Milliseconds on the page's monotonic clock.
pub fn monotonic_ms() -> f64 {
    performance_now()
}

/// A promise that resolves after `ms` milliseconds.
pub async fn sleep(ms: f64) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

#[derive(Default, Clone, Copy)]
pub struct Counters {
    pub tx_datagrams: u64,
    pub rx_datagrams: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Milliseconds spent in turns: the engine's share of the page's time.
    pub turn_ms: f64,
}

pub struct Engine {
    pub node: Node,
    pub stack: Stack,
    pub peer: PeerId,
    pub transport: Box<dyn Transport>,
    /// `performance.now()` when the engine was made: the stack's epoch.
    epoch_ms: f64,
    inbound: VecDeque<Vec<u8>>,
    scheduled: bool,
    timer: Option<(Instant, JsValue)>,
    waiters: Vec<Waker>,
    /// Why the tunnel is gone, once it is.
    pub closed: Option<String>,
    pub counters: Counters,
    pub handshake_started: Option<Instant>,
    pub handshake_rtt: Option<Duration>,
    timer_hook: Option<Closure<dyn FnMut()>>,
    /// Turns run as a task of their own, posted to this channel, so the
    /// WebSocket messages already queued are all read first and handled in
    /// one turn (a microtask would run after each message).
    turns: web_sys::MessageChannel,
    turn_hook: Option<Closure<dyn FnMut(JsValue)>>,
}

/// The handle everything in the crate holds.
pub type Shared = Rc<RefCell<Engine>>;

impl Engine {
    /// Wires `transport` (already open) to a new engine.
    pub fn start(
        node: Node,
        stack: Stack,
        peer: PeerId,
        transport: Box<dyn Transport>,
        epoch_ms: f64,
    ) -> Result<Shared, String> {
        let turns = web_sys::MessageChannel::new()
            .map_err(|_| "this page has no MessageChannel, which the tunnel needs".to_string())?;
        let shared = Rc::new(RefCell::new(Engine {
            node,
            stack,
            peer,
            transport,
            epoch_ms,
            inbound: VecDeque::new(),
            scheduled: false,
            timer: None,
            waiters: Vec::new(),
            closed: None,
            counters: Counters::default(),
            handshake_started: None,
            handshake_rtt: None,
            timer_hook: None,
            turns,
            turn_hook: None,
        }));
        let weak = Rc::downgrade(&shared);
        let sink = Box::new({
            let weak = weak.clone();
            move |inbound: Inbound| {
                let Some(shared) = weak.upgrade() else { return };
                let Ok(mut e) = shared.try_borrow_mut() else {
                    return;
                };
                match inbound {
                    Inbound::Datagrams(datagrams) => {
                        let room = MAX_INBOUND.saturating_sub(e.inbound.len());
                        e.inbound.extend(datagrams.into_iter().take(room));
                        e.schedule();
                    }
                    Inbound::Closed(why) => e.shut(why),
                }
            }
        });
        shared.borrow_mut().transport.listen(sink);
        let turn_hook = Closure::<dyn FnMut(JsValue)>::new({
            let weak = weak.clone();
            move |_| {
                if let Some(shared) = weak.upgrade() {
                    let started = monotonic_ms();
                    let mut e = shared.borrow_mut();
                    e.turn();
                    e.counters.turn_ms += monotonic_ms() - started;
                }
            }
        });
        let timer_hook = Closure::<dyn FnMut()>::new(move || {
            if let Some(shared) = weak.upgrade() {
                let mut e = shared.borrow_mut();
                e.timer = None;
                e.schedule();
            }
        });
        {
            let mut e = shared.borrow_mut();
            e.timer_hook = Some(timer_hook);
            e.turns
                .port1()
                .set_onmessage(Some(turn_hook.as_ref().unchecked_ref()));
            e.turn_hook = Some(turn_hook);
        }
        Ok(shared)
    }

    pub fn now(&self) -> Instant {
        let ms = (monotonic_ms() - self.epoch_ms).max(0.0);
        Instant::from_duration(Duration::from_secs_f64(ms / 1000.0))
    }

    /// Something changed: run a turn once the tasks already queued (more
    /// WebSocket messages, most likely) have run.
    pub fn schedule(&mut self) {
        if self.scheduled || self.closed.is_some() {
            return;
        }
        self.scheduled = true;
        let _ = self.turns.port2().post_message(&JsValue::UNDEFINED);
    }

    /// Wakes `waker` at the next handshake or when the tunnel closes.
    pub fn wait_for_change(&mut self, waker: &Waker) {
        if !self.waiters.iter().any(|w| w.will_wake(waker)) {
            self.waiters.push(waker.clone());
        }
    }

    /// Wakes everything waiting on the engine, to look again.
    pub fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    pub fn has_session(&self) -> bool {
        let now = self.now();
        self.node
            .peer(self.peer, now)
            .is_some_and(|p| p.has_session)
    }

    /// Starts the first handshake.
    pub fn connect(&mut self) {
        let now = self.now();
        self.handshake_started = Some(now);
        self.node.connect(self.peer, now);
        self.schedule();
    }

    /// Ends the tunnel: every waiting read, write and handshake fails with
    /// `why`.
    pub fn shut(&mut self, why: String) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(why);
        self.transport.close();
        if let Some((_, id)) = self.timer.take() {
            clear_timeout(&id);
        }
        self.wake_waiters();
    }

    /// One turn: inbound frames, timers, the stack, encryption, sending.
    fn turn(&mut self) {
        self.scheduled = false;
        if self.closed.is_some() {
            return;
        }
        let now = self.now();
        for _ in 0..FRAMES_PER_TURN {
            let Some(mut frame) = self.inbound.pop_front() else {
                break;
            };
            self.counters.rx_datagrams += 1;
            self.counters.rx_bytes += frame.len() as u64;
            if let Ok(Received::Packet { packet, .. }) =
                self.node.handle_datagram(now, RELAY_LABEL, &mut frame)
            {
                self.stack.receive(now, packet);
            }
        }
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        self.stack.poll(now);
        loop {
            if self.node.pending_transmit_bytes() >= MAX_PENDING_TRANSMIT {
                break;
            }
            let node = &mut self.node;
            self.stack.drain_outbound(|packet| {
                let _ = node.handle_ip_packet(now, packet);
            });
            if !self.stack.outbound_full() {
                break;
            }
            self.stack.poll(now);
        }
        let blocked = !self.flush();
        self.events(now);
        if !self.inbound.is_empty() {
            self.schedule();
        }
        let mut next = [self.node.poll_timeout(), self.stack.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if blocked {
            let retry = now + WS_RETRY;
            next = Some(next.map_or(retry, |n| n.min(retry)));
        }
        if let Some(at) = next {
            self.arm_timer(now, at);
        }
    }

    /// Hands the node's datagrams to the transport (one message when it
    /// batches); false when it is full.
    fn flush(&mut self) -> bool {
        let ready = loop {
            if self.transport.buffered() > MAX_WS_BUFFERED {
                break false;
            }
            let Some(t) = self.node.poll_transmit(64) else {
                break true;
            };
            let segments = t.segments();
            let mut failed = false;
            for datagram in t.contents.chunks(t.segment_size) {
                if self.transport.push(datagram).is_err() {
                    failed = true;
                    break;
                }
                self.counters.tx_datagrams += 1;
                self.counters.tx_bytes += datagram.len() as u64;
            }
            self.node.advance_transmit(segments);
            if failed {
                break true;
            }
        };
        let _ = self.transport.flush();
        ready
    }

    fn events(&mut self, now: Instant) {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::HandshakeCompleted { .. } => {
                    if let Some(start) = self.handshake_started.take() {
                        self.handshake_rtt = Some(now.saturating_duration_since(start));
                    }
                    self.wake_waiters();
                }
                Event::HandshakeTimedOut { .. } => self.wake_waiters(),
                _ => {}
            }
        }
    }

    fn arm_timer(&mut self, now: Instant, at: Instant) {
        if let Some((armed, id)) = &self.timer {
            if *armed <= at {
                return;
            }
            clear_timeout(id);
        }
        let Some(hook) = &self.timer_hook else { return };
        let ms = at.saturating_duration_since(now).as_secs_f64() * 1000.0;
        let id = set_timeout(hook.as_ref().unchecked_ref(), ms.ceil());
        self.timer = Some((at, id));
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shut("the tunnel was dropped".into());
    }
}
