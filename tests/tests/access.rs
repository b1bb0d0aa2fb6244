//! Who gets through and how much: credentials on every SOCKS5 method and
//! HTTP path, connection limits with clean refusals, clients that stall,
//! and secrets kept out of the logs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::socks::{self, dial};
use underpass_tests::{curl, curl_text, free_port, wait_tcp, Pair, PairOptions};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse-7f3a";

/// Everything the server sends until it closes (bounded by the timeout).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server neither answered nor closed: {e} (got {got:?})"),
        }
    }
}

fn user_pass(user: &str, password: &str) -> Vec<u8> {
    let mut m = vec![1, user.len() as u8];
    m.extend_from_slice(user.as_bytes());
    m.push(password.len() as u8);
    m.extend_from_slice(password.as_bytes());
    m
}

fn auth_pair(name: &str, log: Option<&'static str>) -> (Pair, SocketAddr, SocketAddr) {
    let (su, hu) = (free_port(), free_port());
    let extra = format!(
        "\n[Socks5]\nBindAddress = 127.0.0.1:{su}\nUsername = {USER}\nPassword = {PASSWORD}\n\n\
         [http]\nBindAddress = 127.0.0.1:{hu}\nUsername = {USER}\nPassword = {PASSWORD}\n"
    );
    let pair = Pair::start(
        name,
        PairOptions {
            extra_client: extra,
            log,
            ..Default::default()
        },
    );
    let (socks, http) = (
        SocketAddr::from(([127, 0, 0, 1], su)),
        SocketAddr::from(([127, 0, 0, 1], hu)),
    );
    wait_tcp(socks, Duration::from_secs(5));
    wait_tcp(http, Duration::from_secs(5));
    (pair, socks, http)
}

#[test]
fn with_credentials_no_socks_method_or_http_path_passes_without_them() {
    let server = HttpServer::start();
    let (_pair, socks, http) = auth_pair("access", None);
    let target = server.addr;

    for command in [1u8, 2, 3] {
        // Offering only "no authentication": no acceptable method, closed.
        let mut s = dial(socks);
        s.write_all(&[5, 1, 0]).unwrap();
        let _ = s.write_all(&socks::request(command, target));
        assert_eq!(
            read_to_close(&mut s),
            [5, 0xff],
            "command {command}, no auth"
        );

        // Wrong password, then the request anyway: a failure status and
        // nothing else, whatever follows.
        let mut s = dial(socks);
        s.write_all(&[5, 1, 2]).unwrap();
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply, [5, 2], "user/password chosen");
        let mut message = user_pass(USER, "wrong");
        message.extend_from_slice(&socks::request(command, target));
        let _ = s.write_all(&message);
        let got = read_to_close(&mut s);
        assert_eq!(got.len(), 2, "command {command}: {got:?}");
        assert_eq!(got[0], 1);
        assert_ne!(got[1], 0, "command {command}: wrong password accepted");

        // Empty user and password.
        let mut s = dial(socks);
        s.write_all(&[5, 1, 2]).unwrap();
        s.read_exact(&mut reply).unwrap();
        let _ = s.write_all(&[1, 0, 0]);
        let got = read_to_close(&mut s);
        assert!(got.len() == 2 && got[1] != 0, "empty credentials: {got:?}");
    }

    // Every HTTP form a proxy sees, without and with bad credentials.
    let bad_auth = [
        None,
        Some("Basic YWxpY2U6d3Jvbmc="), // alice:wrong
        Some("Bearer whatever"),
        Some("Basic !!!not-base64"),
        Some("Basic YWxpY2U="), // alice, no colon
    ];
    let heads = [
        format!("GET http://{target}/hello HTTP/1.1\r\nHost: {target}\r\n"),
        format!("HEAD http://{target}/hello HTTP/1.1\r\nHost: {target}\r\n"),
        format!("POST http://{target}/sink HTTP/1.1\r\nHost: {target}\r\nContent-Length: 3\r\n"),
        format!("PUT http://{target}/sink HTTP/1.1\r\nHost: {target}\r\nContent-Length: 3\r\n"),
        format!("DELETE http://{target}/x HTTP/1.1\r\nHost: {target}\r\n"),
        format!("OPTIONS http://{target}/ HTTP/1.1\r\nHost: {target}\r\n"),
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"),
        format!("GET /hello HTTP/1.1\r\nHost: {target}\r\n"),
        format!("GET http://{target}/hello HTTP/1.0\r\n"),
    ];
    for head in &heads {
        for auth in bad_auth {
            let mut request = head.clone();
            if let Some(a) = auth {
                request.push_str(&format!("Proxy-Authorization: {a}\r\n"));
            }
            request.push_str("Connection: close\r\n\r\n");
            if head.contains("Content-Length") {
                request.push_str("abc");
            }
            let mut s = dial(http);
            s.write_all(request.as_bytes()).unwrap();
            let got = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
            let first = head.lines().next().unwrap();
            assert!(
                got.starts_with("HTTP/1.1 407") || got.starts_with("HTTP/1.0 407"),
                "{first} with {auth:?}: {got:?}"
            );
            assert!(
                got.to_ascii_lowercase()
                    .contains("proxy-authenticate: basic"),
                "{first}: no challenge in {got:?}"
            );
        }
    }
    assert_eq!(
        server.connections.load(Ordering::Relaxed),
        0,
        "a request without credentials reached the server"
    );
}

#[test]
fn at_the_connection_limit_socks_and_http_refuse_cleanly_and_recover() {
    let server = HttpServer::start();
    let pair = Pair::start(
        "limit",
        PairOptions {
            client_args: vec!["--max-connections".into(), "2".into()],
            ..Default::default()
        },
    );
    // Two tunnel connections held open through SOCKS.
    let hold = |pair: &Pair| socks::connect(pair.socks, server.addr);
    let (first, ok1) = hold(&pair);
    let (_second, ok2) = hold(&pair);
    assert_eq!((ok1, ok2), (0, 0), "the first two connect");

    // The third: SOCKS "general failure", HTTP 503, and the client lives.
    let (_third, refused) = hold(&pair);
    assert_eq!(refused, 1, "SOCKS reply at the limit");
    let url = server.url("/hello");
    let out = curl(&[
        "-x",
        &format!("http://{}", pair.http),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");

    // One closes: there is room again (the stack frees it on its next turn).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = curl(&["--socks5", &pair.socks.to_string(), &url]);
        if out.status.success() {
            assert_eq!(curl_text(&out), "hello underpass\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        pair.client.log().contains("connection limit reached"),
        "the limit was not logged:\n{}",
        pair.client.log()
    );
}

#[test]
fn a_gateway_refuses_connections_past_its_per_client_limit() {
    let server = HttpServer::start();
    let pair = Pair::start(
        "gateway-limit",
        PairOptions {
            gateway_args: vec!["--max-connections-per-client".into(), "1".into()],
            ..Default::default()
        },
    );
    let open = |pair: &Pair| socks::connect(pair.socks, server.addr);
    let (_held, ok) = open(&pair);
    assert_eq!(ok, 0);
    let (_, refused) = open(&pair);
    assert_eq!(
        refused, 5,
        "SOCKS 'connection refused' from the gateway's limit"
    );
}

#[test]
fn clients_that_stall_are_dropped_after_the_handshake_timeouts() {
    let server = HttpServer::start();
    let pair = Pair::start("stall", PairOptions::default());
    let started = Instant::now();
    // A partial SOCKS greeting; a partial HTTP head; nothing at all.
    let mut socks = dial(pair.socks);
    socks.write_all(&[5]).unwrap();
    let mut http = dial(pair.http);
    http.write_all(b"GET http://example.com/ HTTP/1.1\r\nHost: exa")
        .unwrap();
    let mut silent = dial(pair.http);

    // Meanwhile everyone else is served.
    let url = server.url("/hello");
    assert_eq!(
        curl_text(&curl(&["--socks5", &pair.socks.to_string(), &url])),
        "hello underpass\n"
    );

    read_to_close(&mut socks);
    let socks_after = started.elapsed();
    let http_got = read_to_close(&mut http);
    let http_after = started.elapsed();
    read_to_close(&mut silent);
    let silent_after = started.elapsed();
    // 10 s for SOCKS (greeting, auth, request), 30 s for an HTTP head.
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&socks_after),
        "stalled SOCKS client dropped after {socks_after:?}"
    );
    assert!(
        (Duration::from_secs(29)..Duration::from_secs(40)).contains(&http_after),
        "stalled HTTP client dropped after {http_after:?}"
    );
    assert!(
        silent_after < Duration::from_secs(40),
        "a silent HTTP client was kept {silent_after:?}"
    );
    let text = String::from_utf8_lossy(&http_got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer to a stalled head: {text:?}"
    );
}

#[test]
fn no_secret_reaches_the_logs_even_at_trace_level() {
    let server = HttpServer::start();
    let (pair, socks, http) = auth_pair("secrets", Some("trace"));
    let url = server.url("/hello");
    // A good and a bad attempt on each proxy.
    assert_eq!(
        curl_text(&curl(&[
            "--socks5",
            &format!("{USER}:{PASSWORD}@{socks}"),
            &url
        ])),
        "hello underpass\n"
    );
    assert_eq!(
        curl_text(&curl(&[
            "-x",
            &format!("http://{http}"),
            "-U",
            &format!("{USER}:{PASSWORD}"),
            &url
        ])),
        "hello underpass\n"
    );
    let typo = "correct-horse-7f3b";
    let _ = curl(&["--socks5", &format!("{USER}:{typo}@{socks}"), &url]);
    let _ = curl(&[
        "-x",
        &format!("http://{http}"),
        "-U",
        &format!("{USER}:{typo}"),
        &url,
    ]);

    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let secrets = [
        ("client private key", pair.client_keys.private.clone()),
        ("gateway private key", pair.gateway_keys.private.clone()),
        ("password", PASSWORD.to_string()),
        ("mistyped password", typo.to_string()),
        (
            "Basic credentials",
            b64.encode(format!("{USER}:{PASSWORD}")),
        ),
        (
            "mistyped Basic credentials",
            b64.encode(format!("{USER}:{typo}")),
        ),
    ];
    let logs = [
        ("client", pair.client.log()),
        ("gateway", pair.gateway.log()),
    ];
    for (who, log) in &logs {
        assert!(
            log.contains("DEBUG"),
            "{who}'s log has no debug lines; is RUST_LOG=trace applied?\n{log}"
        );
        for (what, secret) in &secrets {
            assert!(
                !log.contains(secret.as_str()),
                "the {what} is in the {who} log"
            );
        }
    }
}
