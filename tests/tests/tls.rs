//! TLS in front of the tunnel, as wireproxy configs ask for it: the HTTPS
//! proxy (`[http] CertFile`/`KeyFile`) and the transparent TLS proxy
//! (`[SNI]`), with curl. Certificates are made per test with openssl.

// libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::*;

/// A self-signed certificate for `localhost` and 127.0.0.1 (curl trusts
/// it given as the CA): `(cert.pem, key.pem)` in `scratch`.
fn certificate(scratch: &Scratch) -> (PathBuf, PathBuf) {
    let (cert, key) = (scratch.path("cert.pem"), scratch.path("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (the test command installs it)");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// An `[http]` section for an HTTPS proxy with these files.
fn https_proxy_section(port: u16, cert: &Path, key: &Path) -> String {
    format!(
        "\n[http]\nBindAddress = 127.0.0.1:{port}\nCertFile = {}\nKeyFile = {}\n",
        cert.display(),
        key.display()
    )
}

#[test]
fn the_https_proxy_forwards_and_tunnels_over_tls() {
    let server = HttpServer::start();
    let scratch = Scratch::new("https-proxy-cert");
    let (cert, key) = certificate(&scratch);
    let port = free_port();
    let pair = Pair::start(
        "https-proxy",
        PairOptions {
            extra_client: https_proxy_section(port, &cert, &key),
            ..Default::default()
        },
    );
    wait_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(5));
    let proxy = format!("https://localhost:{port}");
    let ca = cert.to_str().unwrap();
    let url = server.url("/hello");
    // An absolute-form request, then a CONNECT tunnel (-p), both inside
    // TLS to the proxy.
    for extra in [&[][..], &["-p"][..]] {
        let mut args = vec!["--proxy", &proxy, "--proxy-cacert", ca];
        args.extend_from_slice(extra);
        args.push(&url);
        assert_eq!(curl_text(&curl(&args)), "hello underpass\n", "{extra:?}");
    }
    // Plain HTTP to it gets nowhere.
    let plain = curl(&["--proxy", &format!("http://127.0.0.1:{port}"), &url]);
    assert!(!plain.status.success(), "plain HTTP passed the HTTPS proxy");
    // A client that does not trust the certificate stops there.
    let untrusted = curl(&["--proxy", &proxy, &url]);
    assert!(!untrusted.status.success());
    drop(pair);
}

#[test]
fn bad_certificate_or_key_files_are_config_errors_naming_the_file() {
    let scratch = Scratch::new("https-proxy-bad-files");
    certificate(&scratch);
    let other = Scratch::new("https-proxy-other-key");
    let (_, other_key) = certificate(&other);
    std::fs::copy(&other_key, scratch.path("other-key.pem")).unwrap();
    scratch.write("garbage.pem", "not a certificate\n");
    let k = keys();
    let wg = format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.9.0.2/32\n\n[Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:9\nAllowedIPs = 10.9.0.0/24\n\n[http]\nBindAddress = 127.0.0.1:{}\n",
        k.private,
        keys().public,
        free_port()
    );
    for (name, files, blamed, says) in [
        (
            "missing",
            "CertFile = nowhere.pem\nKeyFile = key.pem\n",
            "CertFile",
            "nowhere.pem",
        ),
        (
            "garbage",
            "CertFile = garbage.pem\nKeyFile = key.pem\n",
            "CertFile",
            "garbage.pem",
        ),
        (
            "key-garbage",
            "CertFile = cert.pem\nKeyFile = garbage.pem\n",
            "KeyFile",
            "garbage.pem",
        ),
        (
            "mismatch",
            "CertFile = cert.pem\nKeyFile = other-key.pem\n",
            "KeyFile",
            "other-key.pem",
        ),
        ("alone", "CertFile = cert.pem\n", "CertFile", "go together"),
    ] {
        let config = scratch.write(&format!("{name}.conf"), &format!("{wg}{files}"));
        let out = run(&["--config", config.to_str().unwrap(), "--check"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.conf:")) && err.contains(blamed) && err.contains(says),
            "{name}: the error should name the config line, {blamed} and {says}: {err}"
        );
        assert!(!err.contains(&k.private), "the private key was printed");
    }
}

#[test]
fn stalled_tls_handshakes_count_as_negotiating() {
    let server = HttpServer::start();
    let scratch = Scratch::new("https-stall-cert");
    let (cert, key) = certificate(&scratch);
    let port = free_port();
    let pair = Pair::start(
        "https-stall",
        PairOptions {
            extra_client: https_proxy_section(port, &cert, &key),
            client_args: vec!["--max-negotiating".into(), "2".into()],
            ..Default::default()
        },
    );
    // Bound before the handshake Pair::start waited for.
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let proxy = format!("https://localhost:{port}");
    let ca = cert.to_str().unwrap();
    let url = server.url("/hello");
    let fetch = || {
        curl(&[
            "--max-time",
            "5",
            "--proxy",
            &proxy,
            "--proxy-cacert",
            ca,
            &url,
        ])
    };
    // Clients that connect and never say a word, one more each time a
    // newcomer still gets in: the pool is shared with the SOCKS and HTTP
    // ports, whose readiness probes may hold slots for a moment, and a
    // silent client refused meanwhile is closed and holds none.
    let mut stalled: Vec<TcpStream> = Vec::new();
    loop {
        if !fetch().status.success() {
            break;
        }
        assert!(
            stalled.len() < 10,
            "a client got in while {} handshakes were pending:\n{}",
            stalled.len(),
            pair.client.log()
        );
        stalled.push(TcpStream::connect(addr).unwrap());
    }
    assert!(
        pair.client
            .log()
            .contains("still negotiating (--max-negotiating)"),
        "the refusal was not logged:\n{}",
        pair.client.log()
    );
    // Stalled clients leave: there is room again.
    loop {
        assert!(
            stalled.pop().is_some(),
            "no room with every stalled client gone"
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let out = fetch();
            if out.status.success() {
                assert_eq!(curl_text(&out), "hello underpass\n");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if Instant::now() < deadline {
            break;
        }
    }
    // A silent client that gets a slot is closed when its handshake time
    // (10 s) runs out, not before.
    let mut late = TcpStream::connect(addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let got = late.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(got, Ok(0) | Err(_))
            && waited >= Duration::from_secs(8)
            && waited < Duration::from_secs(15),
        "a silent client was closed after {waited:?} ({got:?}); the handshake limit is 10 s"
    );
    let _ = late.write_all(b"x");
}

/// `openssl s_server` serving the files of `dir` over TLS (HTTP/1.0,
/// `-WWW`); killed when dropped.
struct TlsServer(std::process::Child);

impl TlsServer {
    fn start(dir: &Path, addr: SocketAddr, cert: &Path, key: &Path) -> TlsServer {
        let child = Command::new("openssl")
            .current_dir(dir)
            .args(["s_server", "-quiet", "-WWW", "-accept", &addr.to_string()])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl is installed");
        wait_tcp(addr, Duration::from_secs(10));
        TlsServer(child)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An `[SNI]` client (`target_port`: its `TargetPort`, none for 443) in
/// front of a TLS server on 127.0.0.1 at that port behind the gateway;
/// fetches a file by name through it, then checks the refusals.
fn sni_round_trip(name: &str, target_port: Option<u16>) {
    let files = Scratch::new(&format!("{name}-server"));
    let (cert, key) = certificate(&files);
    files.write("hello.txt", "hello over TLS\n");
    let target = SocketAddr::from(([127, 0, 0, 1], target_port.unwrap_or(443)));
    let _server = TlsServer::start(&files.0, target, &cert, &key);
    let sni = free_port();
    let port_line = target_port.map_or(String::new(), |p| format!("TargetPort = {p}\n"));
    let mut pair = Pair::start(
        name,
        PairOptions {
            extra_client: format!("\n[SNI]\nBindAddress = 127.0.0.1:{sni}\n{port_line}"),
            ..Default::default()
        },
    );
    let listen = SocketAddr::from(([127, 0, 0, 1], sni));
    wait_tcp(listen, Duration::from_secs(5));
    let ca = cert.to_str().unwrap();
    // The client's name for the service leads to the SNI listener; the
    // gateway resolves it ("localhost": 127.0.0.1, where the server is).
    let resolve = format!("localhost:{sni}:127.0.0.1");
    let url = format!("https://localhost:{sni}/hello.txt");
    let out = curl(&["--cacert", ca, "--resolve", &resolve, &url]);
    // The certificate checks out: the handshake went end to end untouched.
    assert_eq!(curl_text(&out), "hello over TLS\n");

    // No name in the ClientHello (curl sends none for an address).
    let out = curl(&[
        "--cacert",
        ca,
        &format!("https://127.0.0.1:{sni}/hello.txt"),
    ]);
    assert!(
        !out.status.success(),
        "a ClientHello without a name got through"
    );
    pair.client
        .wait_for_log("ClientHello names no host", Duration::from_secs(5));

    // Not TLS at all.
    let mut plain = TcpStream::connect(listen).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(plain.read(&mut buf), Ok(0) | Err(_)),
        "plain HTTP got an answer"
    );
    pair.client
        .wait_for_log("not a TLS ClientHello", Duration::from_secs(5));
}

#[test]
fn the_sni_proxy_connects_to_the_name_the_client_asks_for_through_the_tunnel() {
    // A port of its own (TargetPort): 443 needs root, see below.
    sni_round_trip("sni", Some(free_port()));
}

#[test]
#[ignore = "needs root (a network namespace of its own): ./test.sh runs it as root"]
fn the_sni_proxy_goes_to_port_443_as_wireproxy_does() {
    // Port 443 of 127.0.0.1 in a network namespace of the test's own,
    // where nothing else can hold it.
    let _ = underpass_tests::binary();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("cannot run: not root (a network namespace needs it)");
    }
    // SAFETY: unshare affects only this thread's namespaces, and the
    // processes it starts.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        panic!(
            "cannot run: unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip is installed");
    assert!(up.success(), "ip link set lo up");
    sni_round_trip("sni-443", None);
}
