//! The `--metrics` server: `/healthz` on a client is healthy while its
//! last handshake is younger than a session lives (180 s,
//! Reject-After-Time) and unhealthy after, whether or not anything happens
//! in the tunnel meanwhile; the server itself times out request heads and
//! counts its connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use underpass_tests::*;

/// The status and body of `/healthz`.
fn healthz(metrics: SocketAddr) -> (u16, String) {
    let out = curl(&["-w", "\n%{http_code}", &format!("http://{metrics}/healthz")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    (
        status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "no /healthz answer: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        body.to_string(),
    )
}

/// The health limit in metrics.rs: a session older than this carries no
/// data.
const HANDSHAKE_AGE_LIMIT: Duration = Duration::from_secs(180);

#[test]
fn healthz_turns_unhealthy_once_the_gateway_is_gone_on_an_idle_client() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut pair = Pair::start(
        "health",
        PairOptions {
            client_args: vec!["--metrics".into(), metrics.to_string()],
            ..Default::default()
        },
    );
    // Pair::start returns once the client logged its handshake: the age
    // counts from at most this moment.
    let handshake = Instant::now();
    wait_tcp(metrics, Duration::from_secs(5));
    assert_eq!(healthz(metrics), (200, "ok\n".to_string()));
    // The gateway dies; the client has nothing to send (no keepalive, no
    // traffic), so its loop has no reason to turn.
    assert!(pair.gateway.terminate().success());
    let limit = HANDSHAKE_AGE_LIMIT + Duration::from_secs(20);
    let turned = loop {
        let (status, body) = healthz(metrics);
        if status == 503 {
            assert_eq!(body, "no recent handshake\n");
            break handshake.elapsed();
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            handshake.elapsed() < limit,
            "/healthz still says ok {:?} after the last handshake (the limit is {HANDSHAKE_AGE_LIMIT:?})",
            handshake.elapsed()
        );
        // A probe a second, as a health checker would.
        std::thread::sleep(Duration::from_secs(1));
    };
    println!(
        "/healthz turned 503 {:.1} s after the last handshake (limit {} s)",
        turned.as_secs_f64(),
        HANDSHAKE_AGE_LIMIT.as_secs()
    );
    assert!(
        turned + Duration::from_secs(5) >= HANDSHAKE_AGE_LIMIT,
        "/healthz turned unhealthy after {turned:?}, before the limit"
    );
}

#[test]
fn the_metrics_server_closes_slow_heads_and_limits_connections() {
    let scratch = Scratch::new("metrics-server");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_gateway, _, _) = start_gateway_with(
        &scratch,
        &keys().public,
        "",
        None,
        &["--metrics", &metrics.to_string()],
        None,
    );
    wait_tcp(metrics, Duration::from_secs(5));
    let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/pl";
    let start = Instant::now();
    let mut pending: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(metrics).unwrap();
            s.write_all(head).unwrap();
            s
        })
        .collect();
    // The 17th from one client is answered at once.
    let mut extra = TcpStream::connect(metrics).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "the 17th pending connection got {answer:?}"
    );
    // The 16 are closed at the header timeout (10 s).
    let first = &mut pending[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    match first.read(&mut buf) {
        Ok(0) | Err(_) if start.elapsed() < Duration::from_secs(20) => {}
        other => panic!(
            "half a request head to /metrics still open after {:?}: {other:?}",
            start.elapsed()
        ),
    }
    let closed = start.elapsed();
    assert!(
        closed >= Duration::from_secs(9),
        "closed after {closed:?}, before the 10 s timeout"
    );
    println!(
        "/metrics: 17th pending connection refused with 503; half a head closed after {:.1} s",
        closed.as_secs_f64()
    );
    drop(pending);
    // And it answers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = curl(&[&format!("http://{metrics}/healthz")]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz does not answer after the slow clients left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
