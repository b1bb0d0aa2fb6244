//! The web demo in Debian's chromium: a gateway, the relay serving
//! web-demo/ and forwarding to it, a local HTTP server with known content
//! and a TCP echo; web-demo/test/e2e.mjs drives the page (playwright-core)
//! and checks what a person would see.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use underpass_tests::http_server::HttpServer;
use underpass_tests::relay::{demo_relay_args, web_demo};
use underpass_tests::*;

/// What the test needs that `./test.sh` provides; a clear failure if not.
fn check_prerequisites() {
    let dir = web_demo();
    let missing: Vec<&str> = [
        (
            "pkg/underpass_wasm_bg.wasm",
            "the wasm build (web-demo/build.sh)",
        ),
        (
            "node_modules/playwright-core",
            "playwright-core (npm ci in web-demo)",
        ),
    ]
    .iter()
    .filter(|(path, _)| !dir.join(path).exists())
    .map(|(_, what)| *what)
    .collect();
    assert!(
        missing.is_empty(),
        "missing {}: ./test.sh installs and builds them",
        missing.join(", ")
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "no /usr/bin/chromium: ./test.sh installs Debian's chromium"
    );
}

fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Content for the 64 MiB each way.
const BIG: u64 = 64 << 20;
const BIG_SEED: u64 = 19;

/// What the relay offers.
#[derive(Clone, Copy, PartialEq)]
enum Offer {
    /// Everything: batching, WebTransport and its streams.
    All,
    /// WebTransport without the upload and download streams (a relay from
    /// before them): every datagram one QUIC datagram.
    WebTransportDatagrams,
    /// WebTransport under a certificate the browser does not trust (from
    /// --cert, no hash published): the session is refused.
    UntrustedCertificate,
    /// No WebTransport and no batching (a relay from before either).
    PlainWebSocket,
}

/// The page's query string (what it passes to `Tunnel.connect`) and the
/// transport e2e.mjs must then see in `t.stats()` and on the page.
struct Page {
    query: &'static str,
    transport: &'static str,
}

/// A relay that offers everything and a page that asks for nothing: the
/// batched WebSocket, the fastest transport in Chromium.
#[test]
fn the_page_uses_a_batched_websocket_by_default() {
    let page = Page {
        query: "",
        transport: "websocket-batched",
    };
    the_page_works_in_chromium("browser", Offer::All, page);
}

#[test]
fn the_page_connects_fetches_echoes_and_benchmarks_over_webtransport_when_it_asks() {
    let page = Page {
        query: "?transport=prefer-webtransport",
        transport: "webtransport-stream",
    };
    the_page_works_in_chromium("browser-wt", Offer::All, page);
}

#[test]
fn the_page_downloads_in_quic_datagrams_when_it_asks() {
    let page = Page {
        query: "?transport=webtransport&webtransportDownload=datagrams",
        transport: "webtransport-datagrams-down",
    };
    the_page_works_in_chromium("browser-wt-datagrams-down", Offer::All, page);
}

#[test]
fn the_page_uses_quic_datagrams_both_ways_with_a_relay_without_the_streams() {
    let page = Page {
        query: "?transport=webtransport",
        transport: "webtransport-datagrams",
    };
    the_page_works_in_chromium("browser-wt-datagrams", Offer::WebTransportDatagrams, page);
}

#[test]
fn the_page_falls_back_to_the_websocket_when_webtransport_is_refused() {
    let page = Page {
        query: "?transport=prefer-webtransport",
        transport: "websocket-batched",
    };
    the_page_works_in_chromium("browser-wt-refused", Offer::UntrustedCertificate, page);
}

/// A relay that declines batching and has no WebTransport (as one from
/// before both), and a page that would prefer WebTransport: the page
/// falls back to one datagram per message and everything still works.
#[test]
fn the_page_falls_back_to_one_datagram_per_message() {
    let page = Page {
        query: "?transport=prefer-webtransport",
        transport: "websocket-plain",
    };
    the_page_works_in_chromium("browser-plain", Offer::PlainWebSocket, page);
}

/// A self-signed certificate valid for a year: fine for TLS, but no
/// browser takes it without a CA, nor by hash (over 14 days).
fn untrusted_certificate(scratch: &Scratch) -> (String, String) {
    let cert = scratch.path("relay-cert.pem");
    let key = scratch.path("relay-key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "365", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
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
    (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    )
}

fn the_page_works_in_chromium(name: &str, offer: Offer, page: Page) {
    check_prerequisites();
    let scratch = Scratch::new(name);
    let c = keys();
    let (gateway, gateway_port, g) = start_gateway(&scratch, &c.public, "", None);
    let client_config = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\nDNS = {GATEWAY_IP}\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{gateway_port}\nAllowedIPs = 0.0.0.0/0\n",
        c.private, g.public
    );
    let relay_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let upstream = format!("127.0.0.1:{gateway_port}");
    let root = web_demo();
    let base = demo_relay_args(relay_addr, &upstream, "page-token");
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    let (cert, key) = untrusted_certificate(&scratch);
    match offer {
        Offer::All => {}
        Offer::WebTransportDatagrams => args.push("--no-webtransport-stream"),
        Offer::UntrustedCertificate => args.extend(["--cert", &cert, "--key", &key]),
        Offer::PlainWebSocket => args.extend(["--no-webtransport", "--no-batch"]),
    }
    let mut relay = Process::start("relay", &scratch, &args);
    relay.wait_for_log("relay on", Duration::from_secs(20));
    let server = HttpServer::start();
    let echo = echo_server();
    let closed = free_port();

    let out = Command::new("timeout")
        .arg("600")
        .arg("node")
        .arg(root.join("test/e2e.mjs"))
        .current_dir(&root)
        .env("PAGE_URL", format!("http://{relay_addr}/{}", page.query))
        .env("CONFIG", &client_config)
        .env("TOKEN", "page-token")
        .env("FETCH_URL", server.url("/bytes/1048583?seed=11"))
        .env("CLOSED_URL", format!("http://127.0.0.1:{closed}/"))
        .env("ECHO", echo.to_string())
        .env("BENCH_URL", server.url(&format!("/fast/{}", 64 << 20)))
        .env("OUT_DIR", &scratch.0)
        .env(
            "BIG_URL",
            server.url(&format!("/bytes/{BIG}?seed={BIG_SEED}")),
        )
        .env("SINK_URL", server.url("/sink"))
        .env(
            "SINK_WANT",
            format!("{BIG} {}", content_checksum(BIG_SEED, BIG)),
        )
        .env("TRANSPORT", page.transport)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    let _ = std::fs::copy(scratch.path("web-demo.png"), &shot);
    println!("{stdout}\nscreenshot: {}", shot.display());
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\n---- gateway ----\n{}\n---- relay ----\n{}",
        out.status,
        gateway.log(),
        relay.log()
    );
    assert!(stdout.contains("\"handshakes\":"), "{stdout}");
}
