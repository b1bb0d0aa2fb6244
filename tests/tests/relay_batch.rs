//! `underpass relay`'s batching subprotocol (`underpass.batch.v1`): many
//! length-prefixed datagrams per WebSocket message both ways, one per
//! message for a page that asks for none (or a relay that declines),
//! malformed batches refused, and a batch's cost bounded by its size.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};
use underpass_tests::relay::*;

const BATCH: &str = "underpass.batch.v1";

/// A WebSocket asking for the subprotocols `protocols` (comma-separated);
/// also what the relay picked.
fn open_asking(
    relay: &Relay,
    query: &str,
    protocols: &str,
) -> (WebSocket<TcpStream>, Option<String>) {
    let url = format!("ws://{}/relay?{query}", relay.addr);
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let stream = TcpStream::connect(relay.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, response) = tungstenite::client(request, stream)
        .unwrap_or_else(|e| panic!("WebSocket to {url} asking for {protocols}: {e}"));
    let picked = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, picked)
}

/// The batching subprotocol's framing, written out here independently of
/// the relay's code: a big-endian u16 length before each datagram.
fn batch_of(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        out.extend_from_slice(&u16::try_from(d.len()).unwrap().to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn unbatch(mut message: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !message.is_empty() {
        assert!(message.len() >= 2, "a batch ends inside a length prefix");
        let len = usize::from(u16::from_be_bytes([message[0], message[1]]));
        assert!(
            len > 0 && message.len() >= 2 + len,
            "a malformed batch from the relay"
        );
        out.push(message[2..2 + len].to_vec());
        message = &message[2 + len..];
    }
    out
}

/// Datagram `i` of a test run: mixed sizes (runs of equal ones for GSO,
/// a short one now and then), content that names it.
fn numbered_datagram(i: usize) -> Vec<u8> {
    let len = if i % 7 == 6 { 100 + i % 50 } else { 1452 };
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[test]
fn batched_messages_carry_many_datagrams_both_ways_intact() {
    let (peer, peer_addr) = udp_peer();
    let r = relay("relay-batch", &["--upstream", &peer_addr]);
    let (mut ws, picked) = open_asking(&r, "", BATCH);
    assert_eq!(
        picked.as_deref(),
        Some(BATCH),
        "the relay did not pick batching"
    );

    // Page to upstream: 3 messages of 40 datagrams each (one at a time:
    // the test's socket has a default-sized buffer).
    let sent: Vec<Vec<u8>> = (0..120).map(numbered_datagram).collect();
    let mut buf = vec![0u8; 65_536];
    let mut from = None;
    for (c, chunk) in sent.chunks(40).enumerate() {
        ws.send(Message::binary(batch_of(chunk))).unwrap();
        for (i, want) in chunk.iter().enumerate() {
            let (n, f) = peer.recv_from(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "the upstream got {i} of the {} datagrams of batch {c}: {e}",
                    chunk.len()
                )
            });
            assert_eq!(
                &buf[..n],
                &want[..],
                "datagram {i} of batch {c} changed on the way up"
            );
            from = Some(f);
        }
    }

    // Upstream to page: a burst, read back out of batches.
    let replies: Vec<Vec<u8>> = (1000..1300).map(numbered_datagram).collect();
    for d in &replies {
        peer.send_to(d, from.unwrap()).unwrap();
    }
    let mut got = Vec::new();
    let mut messages = 0;
    while got.len() < replies.len() {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                assert!(b.len() <= 64 * 1024, "a message of {} bytes", b.len());
                messages += 1;
                got.extend(unbatch(&b));
            }
            Ok(_) => continue,
            Err(e) => panic!(
                "{} of {} datagrams came back, then: {e}",
                got.len(),
                replies.len()
            ),
        }
    }
    assert_eq!(got.len(), replies.len());
    for (i, (g, w)) in got.iter().zip(&replies).enumerate() {
        assert_eq!(g, w, "datagram {i} changed on the way down");
    }
    println!("{} datagrams came in {messages} messages", replies.len());
}

#[test]
fn a_batch_of_tiny_datagrams_costs_the_relay_no_more_than_its_size() {
    let (peer, peer_addr) = udp_peer();
    let r = relay("relay-tiny", &["--upstream", &peer_addr]);
    let (mut ws, _) = open_asking(&r, "", BATCH);
    // Sizes 1, 2, 1, 2, ...: every datagram ends a GSO run, the worst case
    // for a sender that gives each run a buffer of its own.
    let tiny: Vec<Vec<u8>> = (0..18_000u32)
        .map(|i| vec![(i % 251) as u8; 1 + (i % 2) as usize])
        .collect();
    let message = batch_of(&tiny);
    assert!(message.len() <= 64 * 1024);
    let (_, peak_before) = r.process.rss_kib();
    for _ in 0..10 {
        ws.send(Message::binary(message.clone())).unwrap();
    }
    // The first ones arrive in order (later ones may overflow this
    // socket's buffer: that is the test's socket, not the relay).
    let mut buf = [0u8; 64];
    for (i, want) in tiny.iter().take(100).enumerate() {
        let (n, _) = peer.recv_from(&mut buf).expect("the upstream got nothing");
        assert_eq!(&buf[..n], &want[..], "tiny datagram {i}");
    }
    // Drain the rest (until the relay has sent everything), then the
    // connection still carries a last, marked datagram.
    peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while peer.recv_from(&mut buf).is_ok() {
        assert!(Instant::now() < deadline, "the relay kept sending for 60 s");
    }
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let marker = b"after the tiny ones".to_vec();
    ws.send(Message::binary(batch_of(std::slice::from_ref(&marker))))
        .unwrap();
    let (n, _) = peer.recv_from(&mut buf).expect("the marker never arrived");
    assert_eq!(&buf[..n], &marker[..]);
    let (_, peak) = r.process.rss_kib();
    assert!(
        peak < peak_before + 32 * 1024,
        "the relay's peak memory grew from {peak_before} KiB to {peak} KiB for 640 KiB of batches"
    );
}

/// The subprotocol the relay picks when a page asks for `protocols`, from
/// the raw upgrade response (a client library would refuse the answer
/// "none", which a browser accepts and then sends one datagram per
/// message).
fn picked_protocol(relay: &Relay, protocols: &str) -> Option<String> {
    let mut s = TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /relay HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {protocols}\r\n\r\n",
        relay.addr
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-protocol")
            .then(|| value.trim().to_string())
    })
}

#[test]
fn a_page_that_asks_for_no_batching_gets_one_datagram_per_message() {
    let (peer, peer_addr) = udp_peer();
    let r = relay("relay-plain", &["--upstream", &peer_addr]);
    assert_eq!(picked_protocol(&r, "something.else"), None);
    assert_eq!(
        picked_protocol(&r, &format!("something.else, {BATCH}")).as_deref(),
        Some(BATCH)
    );
    let mut ws = open(&r, "");
    // A message that would parse as a batch goes out whole, as one datagram.
    let looks_like_a_batch = batch_of(&[vec![1, 2, 3], vec![4]]);
    ws.send(Message::binary(looks_like_a_batch.clone()))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = peer.recv_from(&mut buf).expect("no datagram upstream");
    assert_eq!(&buf[..n], &looks_like_a_batch[..]);
    for i in 0..50 {
        peer.send_to(&numbered_datagram(i), from).unwrap();
    }
    for i in 0..50 {
        match ws.read().unwrap() {
            Message::Binary(b) => assert_eq!(&b[..], &numbered_datagram(i)[..], "datagram {i}"),
            m => panic!("expected datagram {i} as a binary message, got {m:?}"),
        }
    }
    // A relay told not to batch declines it (the page then falls back).
    let r = relay("relay-no-batch", &["--upstream", &peer_addr, "--no-batch"]);
    assert_eq!(
        picked_protocol(&r, BATCH),
        None,
        "--no-batch picked batching"
    );
}

#[test]
fn malformed_batches_close_the_connection_and_send_nothing() {
    let (peer, peer_addr) = udp_peer();
    let r = relay("relay-malformed", &["--upstream", &peer_addr]);
    let good = batch_of(&[vec![5u8; 200]]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("a truncated prefix", [good.clone(), vec![0]].concat()),
        ("a zero length", [good.clone(), vec![0, 0]].concat()),
        (
            "a truncated datagram",
            [good.clone(), vec![0, 10, 1, 2]].concat(),
        ),
        ("an empty message", Vec::new()),
    ];
    for (what, message) in cases {
        let (mut ws, _) = open_asking(&r, "", BATCH);
        ws.send(Message::binary(message)).unwrap();
        assert_eq!(
            close_code(&mut ws),
            Some(CloseCode::Invalid),
            "{what}: the connection should close with 1007"
        );
    }
    let (mut ws, _) = open_asking(&r, "", BATCH);
    let _ = ws.send(Message::binary(vec![0u8; 64 * 1024 + 1]));
    let code = close_code(&mut ws);
    assert!(
        matches!(code, Some(CloseCode::Size) | None),
        "an oversize batch should end the connection, got {code:?}"
    );
    peer.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 70_000];
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "part of a malformed batch went out"
    );
    let log = r.process.log();
    assert!(
        log.contains("malformed batch") && log.contains("zero"),
        "the refusals are logged:\n{log}"
    );
    // The relay serves the next page as before.
    let (mut ws, _) = open_asking(&r, "", BATCH);
    ws.send(Message::binary(good)).unwrap();
    peer.set_nonblocking(false).unwrap();
    let (n, _) = peer
        .recv_from(&mut buf)
        .expect("no datagram after the refusals");
    assert_eq!(&buf[..n], &[5u8; 200][..]);
}
