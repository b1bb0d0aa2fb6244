//! Throughput and connect-to-first-byte latency through the SOCKS5 proxy,
//! for `underpass quickstart` and for a client and a gateway in separate
//! processes. Run by hand (not in CI):
//!
//!     cargo run --release -p underpass-tests --bin proxy_bench
//!     UNDERPASS_BIN=/tmp/old/underpass cargo run ...   # another build
//!
//! It builds the release binary, starts a local HTTP server, and drives
//! curl. Separate processes are pinned: gateway (and the HTTP server) on
//! CPU 0, client (and curl) on CPU 1. Quickstart is one process with two
//! threads and is not pinned.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use underpass_tests::http_server::HttpServer;
use underpass_tests::*;

const LEN: u64 = 1 << 30;
const LATENCY_RUNS: usize = 50;

fn curl_figure(args: &[&str], what: &str) -> f64 {
    let mut command = Command::new("taskset");
    command.args([
        "-c",
        "1",
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "300",
        "-w",
        what,
    ]);
    let out = command.args(args).output().expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number from curl -w")
}

fn measure(name: &str, socks: SocketAddr, server: &HttpServer, upload: &std::path::Path) {
    let proxy = socks.to_string();
    let down = curl_figure(
        &[
            "--socks5",
            &proxy,
            "-o",
            "/dev/null",
            &server.url(&format!("/fast/{LEN}")),
        ],
        "%{speed_download}",
    );
    let up = curl_figure(
        &[
            "--socks5",
            &proxy,
            "-T",
            upload.to_str().unwrap(),
            "-o",
            "/dev/null",
            &server.url("/discard"),
        ],
        "%{speed_upload}",
    );
    let mut latencies: Vec<f64> = (0..LATENCY_RUNS)
        .map(|_| {
            curl_figure(
                &["--socks5", &proxy, "-o", "/dev/null", &server.url("/hello")],
                "%{time_starttransfer}",
            )
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let median = latencies[LATENCY_RUNS / 2] * 1e3;
    let p90 = latencies[LATENCY_RUNS * 9 / 10] * 1e3;
    println!(
        "{name:<34} {:>9.0} {:>9.0} {:>10.2} {:>8.2}",
        down * 8.0 / 1e6,
        up * 8.0 / 1e6,
        median,
        p90
    );
}

fn main() {
    // UNDERPASS_BIN set: that binary (A/B comparisons); else a fresh build.
    if std::env::var_os("UNDERPASS_BIN").is_none() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "-p", "underpass"])
            .status()
            .expect("cargo");
        assert!(status.success());
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().join("underpass");
        std::env::set_var("UNDERPASS_BIN", &bin);
    }

    let server = HttpServer::start();
    let scratch = Scratch::new("bench");
    let upload = scratch.path("upload.bin");
    std::fs::write(&upload, vec![0x5au8; LEN as usize]).unwrap();

    println!("SOCKS5 through the tunnel, 1 GiB each way, curl; latency = curl's time to first byte over {LATENCY_RUNS} runs");
    println!(
        "{:<34} {:>9} {:>9} {:>10} {:>8}",
        "", "down Mb/s", "up Mb/s", "ttfb p50 ms", "p90 ms"
    );

    let pair = Pair::start(
        "bench-pair",
        PairOptions {
            gateway_cpu: Some(0),
            client_cpu: Some(1),
            ..Default::default()
        },
    );
    measure("client + gateway processes", pair.socks, &server, &upload);
    drop(pair);

    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut quick = Process::start(
        "quickstart",
        &scratch,
        &[
            "quickstart",
            "--socks5",
            &socks.to_string(),
            "--http",
            &http.to_string(),
        ],
    );
    quick.wait_for_log("handshake completed", Duration::from_secs(20));
    measure("quickstart (one process)", socks, &server, &upload);

    // The ceiling: curl straight to the server.
    let down = curl_figure(
        &["-o", "/dev/null", &server.url(&format!("/fast/{LEN}"))],
        "%{speed_download}",
    );
    println!(
        "{:<34} {:>9.0}",
        "no tunnel (loopback ceiling)",
        down * 8.0 / 1e6
    );
}
