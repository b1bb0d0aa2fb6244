//! What the benchmark programs (interop_bench, wan_bench) share: the
//! underpass binary under test, processes pinned to a CPU and killed when
//! dropped, shell commands, and iperf3's throughput.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

/// A child killed when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_on_cpu1(program: &Path, args: &[&str], log: &Path) -> Kill {
    Kill(
        Command::new("taskset")
            .args(["-c", "1"])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn"),
    )
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Exits with the reason where a benchmark against the interop peer
/// cannot run (not root, a tool missing); returns the binary under test
/// ([`underpass_binary`]).
pub fn ready_for_interop() -> PathBuf {
    if let Some(why) = crate::interop::unavailable() {
        eprintln!("cannot run: {why}");
        std::process::exit(1);
    }
    assert!(
        sh("command -v iperf3").status.success(),
        "install iperf3 (apt-get install iperf3)"
    );
    underpass_binary()
}

/// The binary under test: `UNDERPASS_BIN` if set (another build, for an
/// A/B), else a fresh release build beside this program, which
/// [`crate::binary`] then uses too.
pub fn underpass_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("UNDERPASS_BIN") {
        return PathBuf::from(bin);
    }
    let status = Command::new(cargo())
        .args(["build", "--release", "--quiet", "-p", "underpass"])
        .status()
        .expect("cargo");
    assert!(status.success());
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("underpass");
    std::env::set_var("UNDERPASS_BIN", &bin);
    bin
}

/// One iperf3 measurement, its client on CPU 1.
pub struct Iperf<'a> {
    pub streams: u32,
    pub seconds: u32,
    /// The server sends (`-R`): a download.
    pub reverse: bool,
    /// The TCP congestion control of both ends (`-C`; iperf3 passes it to
    /// the server), else the system's default.
    pub congestion: Option<&'a str>,
}

impl Iperf<'_> {
    /// Mbit/s and bytes received from `host:port`, or why there is no
    /// result (a tunnel that wedged: iperf3 is killed 25 s after the
    /// measurement should have ended).
    pub fn run(&self, host: &str, port: u16) -> Result<(f64, f64), String> {
        let mut c = Command::new("timeout");
        c.arg((self.seconds + 25).to_string())
            .args(["taskset", "-c", "1", "iperf3", "-c", host, "-p"])
            .arg(port.to_string())
            .args(["-t", &self.seconds.to_string(), "-J"])
            .args(["-P", &self.streams.to_string()]);
        if self.reverse {
            c.arg("-R");
        }
        if let Some(algorithm) = self.congestion {
            c.args(["-C", algorithm]);
        }
        let out = c.output().expect("iperf3");
        let json = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default();
        let sum = &json["end"]["sum_received"];
        match (sum["bits_per_second"].as_f64(), sum["bytes"].as_f64()) {
            (Some(bits), Some(bytes)) => Ok((bits / 1e6, bytes)),
            _ => Err(json["error"]
                .as_str()
                .unwrap_or("no result (hung?)")
                .to_string()),
        }
    }
}
