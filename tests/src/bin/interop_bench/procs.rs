//! The processes around the measurement: the HTTP origin, onetun, and
//! the packet capture behind `--steps` (shell commands and pinned clients
//! are in the library's `bench`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use underpass_tests::bench::{cargo, sh, Kill};
use underpass_tests::Scratch;

use crate::measure::ttfb;

/// Starts this program as an HTTP origin on `addr`, on CPU 0, inside the
/// namespace `netns` if given.
pub fn origin(netns: Option<&str>, addr: &str) -> Kill {
    let exe = std::env::current_exe().unwrap();
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "taskset", "-c", "0"]);
            c
        }
        None => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]);
            c
        }
    };
    Kill(
        c.arg(exe)
            .args(["--origin", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("origin"),
    )
}

/// Python's http.server on 127.0.0.1:`port`, serving `dir`, on CPU 0.
pub fn python_origin(port: u16, dir: &Path) -> Kill {
    Kill(
        Command::new("taskset")
            .args(["-c", "0", "python3", "-m", "http.server"])
            .args([&port.to_string(), "--bind", "127.0.0.1"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// onetun from crates.io, installed once into target/bench-tools.
pub fn onetun() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tools");
    let bin = root.join("bin/onetun");
    if !bin.exists() {
        eprintln!(
            "installing onetun from crates.io into {} ...",
            root.display()
        );
        let ok = Command::new(cargo())
            .args(["install", "--quiet", "onetun", "--root"])
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cargo install onetun failed");
    }
    bin
}

/// Time to first byte through the SOCKS5 port `socks`, step by step: 50
/// requests captured on loopback and on the WireGuard port, and the
/// report of tests/interop/ttfb_steps.py.
pub fn ttfb_steps(socks: u16, url: &str, dir: &Scratch) -> String {
    let cap = dir.path("steps.pcap");
    let mut dump = Command::new("tcpdump")
        .args(["-i", "any", "-n", "-U", "-w"])
        .arg(&cap)
        .arg(format!("udp port 51820 or tcp port {socks}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    // It says "listening on" once it captures.
    let mut err = std::io::BufReader::new(dump.stderr.take().unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap_or(0) > 0
        && !line.contains("listening on")
    {
        line.clear();
    }
    ttfb(&["--socks5", &format!("127.0.0.1:{socks}"), url]);
    let _ = Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status();
    let _ = dump.wait();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/ttfb_steps.py");
    let out = sh(&format!(
        "tcpdump -r {} -n -tt 2>/dev/null | python3 {} {socks}",
        cap.display(),
        script.display()
    ));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
