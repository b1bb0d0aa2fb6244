//! SOCKS4 and SOCKS4a on the SOCKS port, with curl: old clients get the
//! same tunnel, and a port that asks SOCKS5 clients for a password turns
//! them away (SOCKS4 cannot carry one).

use std::time::Duration;

use underpass_tests::http_server::HttpServer;
use underpass_tests::*;

#[test]
fn socks4_and_socks4a_fetch_through_the_tunnel() {
    let server = HttpServer::start();
    let pair = Pair::start("socks4", PairOptions::default());
    let socks = pair.socks.to_string();
    // SOCKS4: curl resolves, the proxy gets an address.
    let by_address = curl(&["--socks4", &socks, &server.url("/hello")]);
    assert_eq!(curl_text(&by_address), "hello underpass\n");
    // SOCKS4a: the name goes to the proxy, resolved by the gateway.
    let url = format!("http://localhost:{}/hello", server.addr.port());
    assert_eq!(
        curl_text(&curl(&["--socks4a", &socks, &url])),
        "hello underpass\n"
    );
}

#[test]
fn socks4_is_refused_where_a_password_is_required() {
    let server = HttpServer::start();
    let port = free_port();
    let extra = format!(
        "\n[Socks5]\nBindAddress = 127.0.0.1:{port}\nUsername = alice\nPassword = s3cret\n"
    );
    let mut pair = Pair::start(
        "socks4-auth",
        PairOptions {
            extra_client: extra,
            ..Default::default()
        },
    );
    wait_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(5));
    let out = curl(&[
        "--socks4",
        &format!("127.0.0.1:{port}"),
        &server.url("/hello"),
    ]);
    assert!(
        !out.status.success(),
        "SOCKS4 got through a password-protected port"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rejected") || err.contains("failed") || err.contains("91"),
        "curl should report the refusal: {err}"
    );
    pair.client
        .wait_for_log("SOCKS4 client refused", Duration::from_secs(5));
    // SOCKS5 with the password still works there.
    assert_eq!(
        curl_text(&curl(&[
            "--socks5",
            &format!("alice:s3cret@127.0.0.1:{port}"),
            &server.url("/hello")
        ])),
        "hello underpass\n"
    );
}
