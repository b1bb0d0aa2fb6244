//! The browser's driver of the tunnel's [`Engine`] (the same sans-IO
//! engine the native client runs), fed by a transport to the relay (see
//! `transport`) and driven by JS timers. The page is single-threaded, so the engine is shared through
//! `Rc<RefCell<..>>`; nothing holds the borrow across an await, and work
//! is batched: every input marks the engine dirty and one turn, on the next
//! microtask, handles all of it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use underpass_core::{Event, Instant, PeerId};
use underpass_stack::{Engine, EngineEvent, Stack};
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

/// The engine and what joins it to the page: the transport, the timer,
/// the tasks waiting for a handshake.
pub struct Driver {
    engine: Engine,
    peer: PeerId,
    transport: Box<dyn Transport>,
    /// Milliseconds spent in turns: the engine's share of the page's time.
    turn_ms: f64,
    /// `performance.now()` when the engine was made: the stack's epoch.
    epoch_ms: f64,
    inbound: VecDeque<Vec<u8>>,
    scheduled: bool,
    /// The stack took in what arrived; the rest of the turn runs in the
    /// next task, after the tasks that woke.
    ingested: bool,
    timer: Option<(Instant, JsValue)>,
    waiters: Vec<Waker>,
    /// Why the tunnel is gone, once it is.
    pub closed: Option<String>,
    timer_hook: Option<Closure<dyn FnMut()>>,
    /// Turns run as a task of their own, posted to this channel, so the
    /// WebSocket messages already queued are all read first and handled in
    /// one turn (a microtask would run after each message).
    turns: web_sys::MessageChannel,
    turn_hook: Option<Closure<dyn FnMut(JsValue)>>,
}

/// The handle everything in the crate holds.
pub type Shared = Rc<RefCell<Driver>>;

impl Driver {
    /// Wires `transport` (already open) to `engine`, which talks to `peer`.
    pub fn start(
        engine: Engine,
        peer: PeerId,
        transport: Box<dyn Transport>,
        epoch_ms: f64,
    ) -> Result<Shared, String> {
        let turns = web_sys::MessageChannel::new()
            .map_err(|_| "this page has no MessageChannel, which the tunnel needs".to_string())?;
        let shared = Rc::new(RefCell::new(Driver {
            engine,
            peer,
            transport,
            turn_ms: 0.0,
            epoch_ms,
            inbound: VecDeque::new(),
            scheduled: false,
            ingested: false,
            timer: None,
            waiters: Vec::new(),
            closed: None,
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
                    e.turn_ms += monotonic_ms() - started;
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

    /// The engine, to read its state.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The stack, to change it: a turn is scheduled, so what changed
    /// (data written, a window opened, a close) leaves soon.
    pub fn stack(&mut self) -> &mut Stack {
        self.schedule();
        self.engine.stack_mut()
    }

    /// The transport to the relay, for its figures.
    pub fn transport(&self) -> &dyn Transport {
        self.transport.as_ref()
    }

    /// Milliseconds the engine's turns took so far.
    pub fn turn_ms(&self) -> f64 {
        self.turn_ms
    }

    /// The peer the relay forwards to.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    pub fn has_session(&self) -> bool {
        self.engine.has_session(self.peer, self.now())
    }

    /// Starts the first handshake.
    pub fn connect(&mut self) {
        let now = self.now();
        self.engine.connect(self.peer, now);
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

    /// One turn, in two tasks when datagrams arrived: first the stack
    /// takes them in, then (once the tasks they woke have read and
    /// written, as in the native loop, so a reply leaves with the ACK of
    /// what it answers) the engine's turn, sending and events.
    fn turn(&mut self) {
        self.scheduled = false;
        if self.closed.is_some() {
            return;
        }
        let now = self.now();
        if !self.ingested && !self.inbound.is_empty() {
            for _ in 0..FRAMES_PER_TURN {
                let Some(mut frame) = self.inbound.pop_front() else {
                    break;
                };
                self.engine.handle_datagram(now, RELAY_LABEL, &mut frame);
            }
            self.engine.process_ingress(now);
            self.ingested = true;
            // A task of its own: the woken futures run first (microtasks).
            self.schedule();
            return;
        }
        self.ingested = false;
        self.engine.handle_timeout(now);
        let blocked = !self.flush();
        self.events();
        if !self.inbound.is_empty() {
            self.schedule();
        }
        let mut next = self.engine.poll_timeout();
        if blocked {
            let retry = now + WS_RETRY;
            next = Some(next.map_or(retry, |n| n.min(retry)));
        }
        if let Some(at) = next {
            self.arm_timer(now, at);
        }
    }

    /// Hands the engine's datagrams to the transport (one message when it
    /// batches); false when it is full.
    fn flush(&mut self) -> bool {
        let ready = loop {
            if self.transport.buffered() > MAX_WS_BUFFERED {
                break false;
            }
            let Some(t) = self.engine.poll_transmit(64) else {
                break true;
            };
            let segments = t.segments();
            let mut sent = 0;
            for datagram in t.contents.chunks(t.segment_size) {
                if self.transport.push(datagram).is_err() {
                    break;
                }
                sent += 1;
            }
            self.engine.advance_transmit(sent);
            if sent < segments {
                // The transport is closing: what it did not take is lost,
                // as on a UDP socket that went away.
                self.engine.discard_transmit(segments - sent);
                break true;
            }
        };
        let _ = self.transport.flush();
        ready
    }

    fn events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            // The relay, not the page, resolves the peer's endpoint; a
            // browser tunnel accepts no flows: only handshakes matter.
            if let EngineEvent::Node(
                Event::HandshakeCompleted { .. } | Event::HandshakeTimedOut { .. },
            ) = event
            {
                self.wake_waiters();
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

impl Drop for Driver {
    fn drop(&mut self) {
        self.shut("the tunnel was dropped".into());
    }
}
