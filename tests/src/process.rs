//! The `underpass` binary (or any program) as a test starts it: killed
//! when dropped, its stderr kept in a file so a failure can show it, and
//! bounded waits for what it prints.

#![allow(unsafe_code)]

use super::*;

/// A running underpass process, killed when dropped; its stderr is kept in
/// a file so a failure can show it.
pub struct Process {
    child: Child,
    log: PathBuf,
    pub name: String,
}

impl Process {
    pub fn start(name: &str, scratch: &Scratch, args: &[&str]) -> Process {
        Self::start_on(None, name, scratch, args)
    }

    /// Starts the binary pinned to one CPU (for benchmarks).
    pub fn start_on(cpu: Option<u32>, name: &str, scratch: &Scratch, args: &[&str]) -> Process {
        Self::start_logged(cpu, name, scratch, args, None)
    }

    /// [`Process::start_on`] with a `RUST_LOG` of its own (else the test's,
    /// else `info`).
    pub fn start_logged(
        cpu: Option<u32>,
        name: &str,
        scratch: &Scratch,
        args: &[&str],
        rust_log: Option<&str>,
    ) -> Process {
        let log = scratch.path(&format!("{name}.log"));
        let err = std::fs::File::create(&log).unwrap();
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = command
            .args(args)
            .env(
                "RUST_LOG",
                rust_log
                    .map(str::to_string)
                    .or_else(|| std::env::var("RUST_LOG").ok())
                    .unwrap_or_else(|| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process {
            child,
            log,
            name: name.into(),
        }
    }

    /// Starts the binary with at most `nofile` open files (soft and hard
    /// limit, so it cannot raise them), as on a host where 1,024 is the
    /// limit.
    pub fn start_with_fd_limit(
        nofile: u64,
        name: &str,
        scratch: &Scratch,
        args: &[&str],
    ) -> Process {
        use std::os::unix::process::CommandExt;
        let log = scratch.path(&format!("{name}.log"));
        let err = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(binary());
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        // SAFETY: runs between fork and exec and calls only setrlimit,
        // which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile as libc::rlim_t,
                    rlim_max: nofile as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process {
            child,
            log,
            name: name.into(),
        }
    }

    /// The process id (for /proc).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory now and at its peak, KiB (`VmRSS`, `VmHWM`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Its open file descriptors now (`/proc/PID/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }

    /// Waits until the log contains `needle`; fails with the log.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {needle:?} within {limit:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} ignored SIGTERM:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn unsafe_kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
    }
}
