//! `underpass relay`'s WebTransport side: WireGuard datagrams as QUIC
//! datagrams to its upstreams and back, intact and none dropped for a
//! full buffer; the same token and upstream rules as its WebSockets; the
//! certificate hash a page trusts published at `/webtransport`; uploads
//! batched on a stream, and a stream that breaks the framing ends the
//! session; downloads batched on a stream for a page that asks.

use std::net::UdpSocket;
use std::time::Duration;

use underpass_core::relay_batch::{self, Batcher, StreamSplitter};
use underpass_tests::relay::*;
use underpass_tests::*;
use wtransport::error::ConnectionError;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, SendStream};

/// `GET /webtransport?query`: the HTTP status and the body.
fn info(relay: &Relay, query: &str) -> (u16, String) {
    let out = curl(&[
        "--write-out",
        "\n%{http_code}",
        &format!("http://{}/webtransport?{query}", relay.addr),
    ]);
    let text = curl_text(&out);
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

/// The session URL and the certificate hash the relay publishes.
fn published(relay: &Relay, query: &str) -> (String, Sha256Digest) {
    let (status, body) = info(relay, query);
    assert_eq!(status, 200, "/webtransport answered {status}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["uploadStream"],
        relay_batch::PROTOCOL,
        "the relay does not offer the upload stream: {body}"
    );
    assert_eq!(
        json["downloadStream"],
        relay_batch::PROTOCOL,
        "the relay does not offer the download stream: {body}"
    );
    let url = json["url"].as_str().unwrap().to_string();
    (url, first_hash(&json))
}

/// The first certificate hash of a `/webtransport` answer.
fn first_hash(json: &serde_json::Value) -> Sha256Digest {
    let hex = json["certificateHashes"][0].as_str().unwrap();
    assert_eq!(hex.len(), 64, "a SHA-256 in hex: {hex}");
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    Sha256Digest::new(bytes)
}

/// The client's QUIC runs on worker threads, so the test may block on
/// its UDP peer meanwhile.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A session to `url` trusting only `hash`, as a page passing
/// `serverCertificateHashes` does: the connection, or why there is none.
async fn connect(url: &str, hash: &Sha256Digest) -> Result<Connection, String> {
    // Room for a burst in the client's own socket: the relay's burst test
    // is about the relay's queue, not a kernel buffer the test is slow to
    // empty on a loaded machine (103 of 120 arrived once, with 208 KiB).
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    large_buffers(&socket);
    // wtransport checks as Chromium does: the hash, ECDSA, valid for at
    // most 14 days.
    let config = ClientConfig::builder()
        .with_bind_socket(socket)
        .with_server_certificate_hashes([hash.clone()])
        .build();
    let endpoint = Endpoint::client(config).map_err(|e| e.to_string())?;
    let connecting = endpoint.connect(url);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

async fn receive(conn: &Connection) -> Vec<u8> {
    let d = tokio::time::timeout(Duration::from_secs(10), conn.receive_datagram())
        .await
        .expect("no datagram from the relay within 10 s")
        .expect("the session ended");
    d.payload().to_vec()
}

#[test]
fn datagrams_cross_webtransport_to_the_upstream_and_back_intact() {
    let (peer, peer_addr) = udp_peer();
    let r = relay("wt-datagrams", &["--upstream", &peer_addr]);
    let (url, hash) = published(&r, "");
    assert_eq!(url, format!("https://{}/relay", r.addr));
    runtime().block_on(async {
        let conn = connect(&format!("{url}?endpoint={peer_addr}"), &hash)
            .await
            .expect("a session with the published hash");
        // One at a time, both ways: every byte as sent.
        let mut buf = [0u8; 2048];
        for i in 0..50u32 {
            let datagram = content(u64::from(i), 1100 + i as usize);
            conn.send_datagram(&datagram).unwrap();
            let (n, from) = peer
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} did not reach the upstream: {e}"));
            assert_eq!(&buf[..n], &datagram[..], "datagram {i} changed on the way");
            let reply = content(1000 + u64::from(i), 1000);
            peer.send_to(&reply, from).unwrap();
            assert_eq!(receive(&conn).await, reply, "reply {i} changed on the way");
        }
        // A burst from the upstream, faster than QUIC's congestion window
        // lets out at first: the relay waits for room instead of dropping
        // what it queued.
        let from = {
            conn.send_datagram(b"where are you").unwrap();
            peer.recv_from(&mut buf).unwrap().1
        };
        // 120 KB: ten times QUIC's initial window.
        const BURST: usize = 120;
        let drops_before = udp_receive_buffer_drops();
        let mut sent = Checksum::default();
        for i in 0..BURST {
            let d = content(5000 + i as u64, 1000);
            sent.update(&d);
            peer.send_to(&d, from).unwrap();
        }
        let mut got = Checksum::default();
        for i in 0..BURST {
            let d = tokio::time::timeout(Duration::from_secs(10), conn.receive_datagram())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "only {i} of {BURST} datagrams of a burst arrived; the kernel dropped \
                         {} for a full socket buffer meanwhile (any process)",
                        udp_receive_buffer_drops() - drops_before
                    )
                })
                .unwrap();
            got.update(&d.payload());
        }
        assert_eq!(got.value(), sent.value(), "the burst arrived changed");
    });
}

async fn upload_stream(conn: &Connection) -> SendStream {
    conn.open_uni()
        .await
        .expect("a stream")
        .await
        .expect("the stream opened")
}

/// How the relay ended the session: its close code and reason.
async fn closed_with(conn: &Connection) -> (u32, String) {
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the relay kept the session open");
    match closed {
        ConnectionError::ApplicationClosed(close) => (
            close.code().into_inner() as u32,
            String::from_utf8_lossy(close.reason()).into_owned(),
        ),
        other => panic!("the session ended otherwise: {other}"),
    }
}

#[test]
fn an_upload_stream_carries_batches_to_the_upstream_intact_and_in_order() {
    let (peer, peer_addr) = udp_peer();
    let r = relay("wt-stream", &["--upstream", &peer_addr]);
    let (url, hash) = published(&r, "");
    let datagrams: Vec<Vec<u8>> = (0..300u64)
        .map(|i| content(i, 1 + (i as usize * 37) % 1400))
        .collect();
    // Batches as a page writes them (64 KiB at most), with how many
    // datagrams the stream holds at the end of each.
    let mut batches: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut batcher = Batcher::new();
    for (i, d) in datagrams.iter().enumerate() {
        if !batcher.push(d) {
            let batch = batcher.take();
            assert!(batch.len() <= relay_batch::MAX_MESSAGE);
            batches.push((batch, i));
            assert!(batcher.push(d));
        }
    }
    batches.push((batcher.take(), datagrams.len()));
    assert!(batches.len() > 2, "the datagrams fit too few batches");
    runtime().block_on(async {
        let conn = connect(&format!("{url}?endpoint={peer_addr}"), &hash)
            .await
            .expect("a session");
        let mut stream = upload_stream(&conn).await;
        let (received, mut progress) = tokio::sync::mpsc::unbounded_channel();
        let upstream = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 2048];
            for (i, want) in datagrams.iter().enumerate() {
                let (n, _) = peer
                    .recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("datagram {i} did not reach the upstream: {e}"));
                assert_eq!(
                    &buf[..n],
                    &want[..],
                    "datagram {i} changed or came out of order"
                );
                let _ = received.send(i + 1);
            }
        });
        for (batch, through) in &batches {
            // Writes that end anywhere, inside prefixes and datagrams too.
            for piece in batch.chunks(997) {
                stream
                    .write_all(piece)
                    .await
                    .expect("the relay took the write");
            }
            // One batch at a time: the test's socket buffer holds one
            // batch's datagrams, not all of them.
            while let Some(got) = progress.recv().await {
                if got >= *through {
                    break;
                }
            }
        }
        upstream
            .await
            .expect("every datagram arrived intact, in order");
    });
}

#[test]
fn a_malformed_upload_stream_ends_the_session_with_a_reason() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay("wt-malformed", &["--upstream", &peer_addr]);
    let (url, hash) = published(&r, "");
    runtime().block_on(async {
        let cases: [(&str, &[u8], bool, &str); 3] = [
            // A datagram of length zero, after a good one.
            (
                "a zero length",
                &[0, 1, 9, 0, 0, 7],
                false,
                "length zero at byte 3",
            ),
            // Longer than any batch may hold: refused at its length,
            // before the relay waits for (or holds) its bytes.
            (
                "an oversized length",
                &[0xff, 0xff, 1, 2, 3],
                false,
                "at most 65536",
            ),
            // A stream ended inside a datagram.
            ("a stream cut short", &[0, 5, 1, 2], true, "cut short"),
        ];
        for (what, bytes, finish, expected) in cases {
            let conn = connect(&format!("{url}?endpoint={peer_addr}"), &hash)
                .await
                .unwrap();
            let mut stream = upload_stream(&conn).await;
            let _ = stream.write_all(bytes).await;
            if finish {
                let _ = stream.finish().await;
            }
            let (code, reason) = closed_with(&conn).await;
            assert_eq!(code, 4400, "{what}");
            assert!(reason.contains(expected), "{what}: {reason}");
        }
        // The relay is still there for the next page.
        let conn = connect(&format!("{url}?endpoint={peer_addr}"), &hash)
            .await
            .expect("a session after the malformed ones");
        drop(conn);
    });
    assert!(r
        .process
        .log()
        .contains("malformed WebTransport upload stream"));
    assert!(!r.process.log().contains("panicked"));
}

/// A datagram to the upstream and its answer back, over `conn`.
async fn round_trip(conn: &Connection, peer: &UdpSocket, what: &str) {
    let datagram = content(what.len() as u64, 900);
    conn.send_datagram(&datagram).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = peer
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: nothing reached the upstream: {e}"));
    assert_eq!(&buf[..n], &datagram[..], "{what}: changed on the way");
    peer.send_to(what.as_bytes(), from).unwrap();
    assert_eq!(receive(conn).await, what.as_bytes(), "{what}: the answer");
}

#[test]
fn a_renewed_certificate_serves_new_sessions_and_old_ones_go_on() {
    let (peer, peer_addr) = udp_peer();
    let r = relay(
        "wt-renew",
        &["--upstream", &peer_addr, "--webtransport-renew", "2"],
    );
    let (url, first) = published(&r, "");
    let url = format!("{url}?endpoint={peer_addr}");
    runtime().block_on(async {
        let old = connect(&url, &first)
            .await
            .expect("a session with the first hash");
        round_trip(&old, &peer, "before the renewal").await;
        // The hash pages fetch changes (bounded: the relay renews every 2 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while published(&r, "").1 == first {
            assert!(
                std::time::Instant::now() < deadline,
                "the published hash did not change in 30 s; relay log:\n{}",
                r.process.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            r.process.log().contains("WebTransport certificate renewed"),
            "no log line for the renewal"
        );
        // New sessions get the new certificate: the old hash is refused...
        assert!(
            connect(&url, &first).await.is_err(),
            "a new session still trusted the replaced certificate"
        );
        // ...and the hash published now is taken (retried: it may be
        // renewed again between the fetch and the connect).
        let mut fresh = None;
        for _ in 0..5 {
            if let Ok(conn) = connect(&url, &published(&r, "").1).await {
                fresh = Some(conn);
                break;
            }
        }
        let fresh = fresh.expect("no session with the newly published hash");
        round_trip(&fresh, &peer, "a session after the renewal").await;
        // The session opened before goes on under its certificate.
        round_trip(&old, &peer, "the first session after the renewal").await;
    });
}

#[test]
fn a_relay_without_the_upload_stream_does_not_offer_it() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay(
        "wt-no-stream",
        &["--upstream", &peer_addr, "--no-webtransport-stream"],
    );
    let (status, body) = info(&r, "");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json["uploadStream"].is_null(), "{body}");
    assert!(json["downloadStream"].is_null(), "{body}");
}

#[test]
fn a_download_stream_carries_the_upstreams_datagrams_intact_and_in_order() {
    let (peer, peer_addr) = udp_peer();
    let r = relay("wt-download", &["--upstream", &peer_addr]);
    let (url, hash) = published(&r, "");
    let url = format!("{url}?endpoint={peer_addr}&download=underpass.batch.v1");
    // Every size from 1 byte to a full WireGuard datagram, and over the
    // ~1,200 bytes a QUIC datagram could carry.
    let datagrams: Vec<Vec<u8>> = (0..600u64)
        .map(|i| content(i, 1 + (i as usize * 37) % 1452))
        .collect();
    runtime().block_on(async {
        let conn = connect(&url, &hash).await.expect("a session");
        let mut stream = tokio::time::timeout(Duration::from_secs(10), conn.accept_uni())
            .await
            .expect("no download stream within 10 s")
            .expect("the relay opened a stream");
        // The upstream learns where the session's socket is.
        conn.send_datagram(b"here").unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let (_, from) = peer.recv_from(&mut buf).unwrap();
        let mut splitter = StreamSplitter::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let (mut sent, mut received) = (Checksum::default(), Checksum::default());
        // In groups the relay's socket buffer holds, each read back before
        // the next is sent.
        for group in datagrams.chunks(100) {
            for d in group {
                sent.update(d);
                peer.send_to(d, from).unwrap();
            }
            let want = got.len() + group.len();
            while got.len() < want {
                let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("only {} of {want} datagrams arrived", got.len()))
                    .expect("the stream read")
                    .expect("the stream went on");
                splitter
                    .feed(&buf[..n], |d| {
                        received.update(d);
                        got.push(d.to_vec());
                    })
                    .expect("the stream is in the batch framing");
            }
        }
        assert_eq!(received.value(), sent.value(), "the datagrams changed");
        for (i, (got, want)) in got.iter().zip(&datagrams).enumerate() {
            assert_eq!(got, want, "datagram {i} changed or came out of order");
        }
        assert_eq!(got.len(), datagrams.len(), "more than were sent");
    });
}

#[test]
fn a_download_other_than_the_batch_framing_is_refused() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay("wt-download-bad", &["--upstream", &peer_addr]);
    let (url, hash) = published(&r, "");
    runtime().block_on(async {
        for download in [
            "datagrams",
            "underpass.batch.v2",
            "",
            "underpass.batch.v1&download=underpass.batch.v1",
        ] {
            let refused = connect(
                &format!("{url}?endpoint={peer_addr}&download={download}"),
                &hash,
            )
            .await;
            assert!(refused.is_err(), "a session with download={download:?}");
        }
        connect(
            &format!("{url}?endpoint={peer_addr}&download=underpass.batch.v1"),
            &hash,
        )
        .await
        .expect("a session with the download stream");
    });
    assert!(r.process.log().contains("a download it does not offer"));
    // A relay that does not offer it refuses a page that asks anyway.
    let r = relay(
        "wt-download-off",
        &["--upstream", &peer_addr, "--no-webtransport-stream"],
    );
    let (status, body) = info(&r, "");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = json["url"].as_str().unwrap();
    let hash = first_hash(&json);
    runtime().block_on(async {
        let refused = connect(
            &format!("{url}?endpoint={peer_addr}&download=underpass.batch.v1"),
            &hash,
        )
        .await;
        assert!(
            refused.is_err(),
            "a download stream the relay does not offer"
        );
        connect(&format!("{url}?endpoint={peer_addr}"), &hash)
            .await
            .expect("a session in datagrams");
    });
}

#[test]
fn webtransport_needs_the_token_and_an_upstream() {
    let (peer, peer_addr) = udp_peer();
    let (victim, victim_addr) = udp_peer();
    let r = relay(
        "wt-token",
        &["--upstream", &peer_addr, "--token", "s3cret+/="],
    );
    // The hash is behind the token too.
    assert_eq!(info(&r, "").0, 401);
    let (url, hash) = published(&r, "token=s3cret%2B%2F%3D");
    runtime().block_on(async {
        for query in ["", "token=wrong", "token=wrong&token=s3cret%2B%2F%3D"] {
            let refused = connect(&format!("{url}?{query}"), &hash).await;
            assert!(refused.is_err(), "a session with {query:?}");
        }
        let refused = connect(
            &format!("{url}?token=s3cret%2B%2F%3D&endpoint={victim_addr}"),
            &hash,
        )
        .await;
        assert!(refused.is_err(), "a session to an address not an upstream");
        // A wrong certificate hash is no session either.
        let wrong = Sha256Digest::new([7; 32]);
        assert!(connect(&format!("{url}?token=s3cret%2B%2F%3D"), &wrong)
            .await
            .is_err());
        let conn = connect(&format!("{url}?token=s3cret%2B%2F%3D"), &hash)
            .await
            .expect("a session with the token");
        conn.send_datagram(b"with the token").unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = peer.recv_from(&mut buf).expect("nothing arrived");
        assert_eq!(&buf[..n], b"with the token");
    });
    victim.set_nonblocking(true).unwrap();
    assert!(
        victim.recv_from(&mut [0u8; 64]).is_err(),
        "the relay sent to an address it was not configured with"
    );
    assert!(!r.process.log().contains("s3cret"), "the token was logged");
}

#[test]
fn without_webtransport_the_relay_says_so_and_binds_no_udp() {
    let (_peer, peer_addr) = udp_peer();
    let r = relay("wt-off", &["--upstream", &peer_addr, "--no-webtransport"]);
    assert_eq!(info(&r, "").0, 404);
    // Its UDP port is free: nothing listens there.
    UdpSocket::bind(r.addr).expect("the relay bound its UDP port without WebTransport");
}
