//! Who gets through and how much: credentials on every SOCKS5 method and
//! HTTP path, connection limits with clean refusals, clients that stall,
//! and secrets kept out of the logs.

// libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

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

#[test]
fn a_config_holding_a_key_that_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    use underpass_tests::{binary, keys, run, Process, Scratch};
    let scratch = Scratch::new("config-mode");
    let k = keys();
    let text = format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.2/32\nListenPort = {}\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:1\nAllowedIPs = 0.0.0.0/0\n",
        k.private,
        free_port(),
        keys().public
    );
    let path = scratch.write("wg.conf", &text);
    let chmod = |mode: u32| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let p = path.to_str().unwrap();
    let fix = format!("chmod 600 {p}");
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // --check warns, for the client and the gateway, and still passes.
    for (mode, args) in [
        (0o644, vec!["--config", p, "--check"]),
        (0o640, vec!["gateway", "--config", p, "--check"]),
    ] {
        chmod(mode);
        let out = run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "config OK\n");
        let err = stderr(&out);
        assert!(
            err.contains(&fix) && err.contains("readable by group or others"),
            "{args:?} at {mode:o} did not say what to run: {err}"
        );
        assert!(
            !err.contains(&k.private),
            "the key is in the warning: {err}"
        );
    }
    // So does starting with it.
    chmod(0o604);
    let socks = format!("127.0.0.1:{}", free_port());
    let mut client = Process::start("client", &scratch, &["--config", p, "--socks5", &socks]);
    client.wait_for_log(&fix, Duration::from_secs(20));
    drop(client);

    // Private to its owner: nothing to say.
    chmod(0o600);
    let out = run(&["--config", p, "--check"]);
    assert!(
        out.status.success() && !stderr(&out).contains("chmod"),
        "{}",
        stderr(&out)
    );

    // Text from stdin or UNDERPASS_CONFIG has no mode: never warned about.
    let mut child = std::process::Command::new(binary())
        .args(["--config", "-", "--check"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && !stderr(&out).contains("chmod"),
        "{}",
        stderr(&out)
    );
    let out = std::process::Command::new(binary())
        .arg("--check")
        .env("UNDERPASS_CONFIG", &text)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success() && !stderr(&out).contains("chmod"),
        "{}",
        stderr(&out)
    );
}

/// Sends `request` (a GET of `/hello`) on `s` and reads until the answer's
/// body has come: a kept connection still works.
fn hello_over(s: &mut TcpStream, request: &str) {
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("hello underpass\n") {
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "closed before the answer: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer ({e}): {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

/// A SOCKS5 CONNECT to `server` and an HTTP proxy connection that has
/// been used once, both kept open: clients that got through.
fn established(pair: &Pair, server: &HttpServer) -> (TcpStream, TcpStream, String) {
    let (mut tunnel, code) = socks::connect(pair.socks, server.addr);
    assert_eq!(code, 0, "SOCKS CONNECT");
    hello_over(&mut tunnel, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let via_proxy = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.url("/hello"),
        server.addr
    );
    let mut proxied = dial(pair.http);
    hello_over(&mut proxied, &via_proxy);
    (tunnel, proxied, via_proxy)
}

/// A SOCKS5 client that greeted and got its method, then stalls before its
/// request: negotiating, and known to have been accepted.
fn stalled_socks(socks: SocketAddr) -> TcpStream {
    let mut s = dial(socks);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [5, 0]);
    s
}

/// An HTTP client whose only request was not a proxy request (answered
/// 400): still negotiating, and known to have been accepted.
fn stalled_http(http: SocketAddr) -> TcpStream {
    let mut s = dial(http);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    s
}

/// What a new SOCKS5 client and a new HTTP client get now: the bytes
/// after a greeting, and the HTTP answer; `None` when there was neither an
/// answer nor a close within 5 s.
fn newcomers(pair: &Pair, server: &HttpServer) -> (Option<Vec<u8>>, Option<String>) {
    let limit = Some(Duration::from_secs(5));
    let mut s = TcpStream::connect(pair.socks).unwrap();
    s.set_read_timeout(limit).unwrap();
    let _ = s.write_all(&[5, 1, 0]);
    let mut socks_got = Vec::new();
    let socks = match s.read_to_end(&mut socks_got) {
        Err(e) if e.kind() != std::io::ErrorKind::ConnectionReset => None,
        _ => Some(socks_got),
    };
    let mut h = TcpStream::connect(pair.http).unwrap();
    h.set_read_timeout(limit).unwrap();
    let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", server.url("/hello"));
    let _ = h.write_all(request.as_bytes());
    let mut http_got = Vec::new();
    let mut buf = [0u8; 4096];
    let http = loop {
        match h.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => http_got.extend_from_slice(&buf[..n]),
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        }
        if String::from_utf8_lossy(&http_got).contains("hello underpass\n") {
            break true;
        }
    };
    let http = http.then(|| String::from_utf8_lossy(&http_got).into_owned());
    (socks, http)
}

/// [`newcomers`], which must have been answered or closed.
fn answered(got: (Option<Vec<u8>>, Option<String>)) -> (Vec<u8>, String) {
    (
        got.0
            .expect("a new SOCKS client was neither answered nor closed within 5 s"),
        got.1
            .expect("a new HTTP client got no complete answer within 5 s"),
    )
}

#[test]
fn past_the_negotiating_cap_newcomers_are_refused_and_established_clients_keep_working() {
    let server = HttpServer::start();
    let pair = Pair::start(
        "negotiating-cap",
        PairOptions {
            client_args: vec!["--max-negotiating".into(), "20".into()],
            ..Default::default()
        },
    );
    let (mut tunnel, mut proxied, via_proxy) = established(&pair, &server);
    // 20 negotiating: 10 on each proxy, all accepted.
    let mut stalled_s: Vec<_> = (0..10).map(|_| stalled_socks(pair.socks)).collect();
    let _stalled_h: Vec<_> = (0..10).map(|_| stalled_http(pair.http)).collect();

    // The 21st: SOCKS5 closes at once, HTTP answers 503.
    let (socks_got, http_got) = answered(newcomers(&pair, &server));
    assert!(
        socks_got.is_empty(),
        "SOCKS answered past the cap: {socks_got:?}"
    );
    assert!(
        http_got.starts_with("HTTP/1.1 503") && http_got.contains("Retry-After: 1"),
        "HTTP past the cap: {http_got:?}"
    );
    // Those that got through before are served as ever.
    hello_over(&mut tunnel, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    hello_over(&mut proxied, &via_proxy);
    assert!(
        pair.client
            .log()
            .contains("still negotiating (--max-negotiating)"),
        "the refusal was not logged:\n{}",
        pair.client.log()
    );

    // One gives up: there is room for the next.
    drop(stalled_s.pop());
    let url = server.url("/hello");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = curl(&["--max-time", "5", "--socks5", &pair.socks.to_string(), &url]);
        if out.status.success() {
            assert_eq!(curl_text(&out), "hello underpass\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a negotiating client left: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Raises this process's soft limit on open files to the hard one (the
/// slowloris test holds over a thousand sockets).
fn raise_own_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

#[test]
fn slowloris_at_a_1024_descriptor_limit_leaves_the_proxies_answering() {
    const SLOW: usize = 1100;
    let own = raise_own_fd_limit();
    if own < SLOW as u64 + 200 {
        eprintln!("skipped: this process may open only {own} files");
        return;
    }
    let server = HttpServer::start();
    let forward = free_port();
    let pair = Pair::start(
        "slowloris",
        PairOptions {
            extra_client: format!(
                "\n[TCPClientTunnel]\nBindAddress = 127.0.0.1:{forward}\nTarget = {}\n",
                server.addr
            ),
            ..Default::default()
        },
    );
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pair.client.id().to_string(), "--nofile=1024:1024"])
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(status.success(), "prlimit failed");
    let (mut tunnel, mut proxied, via_proxy) = established(&pair, &server);

    // 1,100 clients that connect and say nothing, half on each proxy.
    let started = Instant::now();
    let _slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let to = if i % 2 == 0 { pair.socks } else { pair.http };
            TcpStream::connect(to).unwrap_or_else(|e| panic!("slow client {i}: {e}"))
        })
        .collect();

    // Newcomers get a clear refusal at once, not a hang...
    let asked = Instant::now();
    let got = newcomers(&pair, &server);
    eprintln!(
        "{SLOW} slow clients opened in {:?}; then a new SOCKS client got {:?} and a new HTTP client {:?}, in {:?} for both; the client holds {} descriptors",
        asked - started,
        got.0,
        got.1.as_deref().map(|h| h.lines().next().unwrap_or("")),
        asked.elapsed(),
        pair.client.open_fds()
    );
    let (socks_got, http_got) = answered(got);
    assert!(
        socks_got.is_empty(),
        "SOCKS answered past the cap: {socks_got:?}"
    );
    assert!(http_got.starts_with("HTTP/1.1 503"), "HTTP: {http_got:?}");
    // ...clients that got through are served, and a forward still takes
    // new clients: descriptors are left for them.
    hello_over(&mut tunnel, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    hello_over(&mut proxied, &via_proxy);
    let mut f = dial(([127, 0, 0, 1], forward).into());
    hello_over(&mut f, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}: the slow clients' own timeouts may have freed the way",
        started.elapsed()
    );
}

#[test]
fn an_http_client_sending_only_refused_requests_is_dropped_after_the_negotiation_timeout() {
    let pair = Pair::start("refused-only", PairOptions::default());
    let started = Instant::now();
    let mut s = dial(pair.http);
    // A request the proxy does not serve every 5 s, each answered 400 in
    // time: hyper's timeout for one head never fires.
    let refusal = b"CONNECT host:port\n";
    'client: loop {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "still connected after {:?}",
            started.elapsed()
        );
        if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
            break;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(refusal) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break 'client,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            got.starts_with(b"HTTP/1.1 400"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    let after = started.elapsed();
    assert!(
        (Duration::from_secs(29)..Duration::from_secs(40)).contains(&after),
        "dropped after {after:?}"
    );
}
