//! Every mode raises its soft limit on open files to the hard limit at
//! start (systemd's soft 1,024 is a few hundred flows), and `exec` gives
//! the command the limit it was started with.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use underpass_tests::{binary, free_port, keys, output_within, start_gateway, Scratch, CLIENT_IP};

const SOFT: u64 = 256;
const HARD: u64 = 4096;

/// The soft and hard limits on open files in a `/proc/PID/limits` text.
fn open_files(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Why the test cannot run here, if it cannot: the test's own hard limit
/// must allow the one it starts the binary with.
fn unavailable() -> Option<String> {
    let own = std::fs::read_to_string("/proc/self/limits").ok()?;
    let (_, hard) = open_files(&own)?;
    if hard < HARD {
        return Some(format!(
            "the hard limit on open files is {hard}, below {HARD}"
        ));
    }
    let prlimit = Command::new("prlimit").arg("--version").output();
    if !prlimit.is_ok_and(|o| o.status.success()) {
        return Some("prlimit (util-linux) is not installed".into());
    }
    None
}

/// `underpass ARGS` with open files limited to SOFT:HARD; killed on drop.
struct Limited(Child);

impl Limited {
    fn start(args: &[&str]) -> Limited {
        let child = Command::new("prlimit")
            .arg(format!("--nofile={SOFT}:{HARD}"))
            .arg("--")
            .arg(binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prlimit runs");
        Limited(child)
    }

    /// Waits (bounded) until the soft limit is the hard one.
    fn wait_raised(&mut self, mode: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = None;
        loop {
            assert!(
                matches!(self.0.try_wait(), Ok(None)),
                "{mode} exited: {:?}",
                self.0.try_wait()
            );
            let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.0.id()))
                .unwrap_or_default();
            seen = open_files(&limits).or(seen);
            if seen == Some((HARD, HARD)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: open files (soft, hard) still {seen:?}, want ({HARD}, {HARD})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_mode_raises_its_open_file_limit_and_exec_gives_the_command_the_old_one() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let scratch = Scratch::new("open-files");
    let client = keys();
    let (_gateway, gateway_port, gateway_keys) = start_gateway(&scratch, &client.public, "", None);
    let client_config = scratch.write(
        "client.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{gateway_port}\nAllowedIPs = 0.0.0.0/0\n",
            client.private, gateway_keys.public
        ),
    );
    let client_config = client_config.to_str().unwrap();
    let gateway_config = scratch.path("gateway.conf");
    // The gateway's config again, on a port of its own.
    let second_gateway = scratch.write(
        "gateway2.conf",
        &std::fs::read_to_string(&gateway_config).unwrap().replace(
            &format!("ListenPort = {gateway_port}"),
            &format!("ListenPort = {}", free_port()),
        ),
    );
    let port = || format!("127.0.0.1:{}", free_port());
    let modes: [(&str, Vec<String>); 4] = [
        (
            "gateway",
            vec![
                "gateway".into(),
                "--config".into(),
                second_gateway.to_str().unwrap().into(),
            ],
        ),
        (
            "client",
            vec![
                "--config".into(),
                client_config.into(),
                "--socks5".into(),
                port(),
            ],
        ),
        (
            "relay",
            vec![
                "relay".into(),
                "--listen".into(),
                port(),
                "--upstream".into(),
                "127.0.0.1:9".into(),
            ],
        ),
        (
            "quickstart",
            vec![
                "quickstart".into(),
                "--socks5".into(),
                port(),
                "--http".into(),
                port(),
            ],
        ),
    ];
    for (mode, args) in &modes {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Limited::start(&args).wait_raised(mode);
    }

    // exec: raised for itself (its parent, to the command), the starting
    // limit for the command.
    let mut exec = Command::new("prlimit");
    exec.arg(format!("--nofile={SOFT}:{HARD}"))
        .arg("--")
        .arg(binary())
        .args(["exec", "--config", client_config, "--"])
        .args([
            "sh",
            "-c",
            "grep 'Max open files' /proc/$PPID/limits; ulimit -Sn",
        ]);
    let out = output_within(exec, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exec failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let parent = lines.next().and_then(open_files);
    assert_eq!(parent, Some((HARD, HARD)), "exec's own limit: {text}");
    assert_eq!(
        lines.next().map(str::trim),
        Some(SOFT.to_string().as_str()),
        "the command's soft limit: {text}"
    );
}
