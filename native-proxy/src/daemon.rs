//! `-d`/`--daemon`, wireproxy's flag: the client goes on in the background
//! and the command returns. The command returns once the listeners are up,
//! or with the child's own error and exit status when they could not come
//! up, so a config error or a port in use is not lost with the logs, which
//! go nowhere afterwards (as wireproxy's do; a service manager keeps them).

// Unsafe only for libc calls, each block with its SAFETY comment.
#![allow(unsafe_code)]

use std::sync::Mutex;

use crate::Failure;

/// The child's end of the pipe its parent waits on.
#[cfg(unix)]
static STARTED: Mutex<Option<std::os::fd::OwnedFd>> = Mutex::new(None);

/// Forks: the parent waits for [`started`] (or the child's exit) and exits;
/// the child returns, in a new session, and goes on. Must be called
/// before any thread exists (before the runtime).
#[cfg(unix)]
pub fn detach() -> Result<(), Failure> {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array it is given.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(Failure::runtime(format!(
            "--daemon: cannot make a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both were just opened and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process has one thread here (see above), so the child
    // is a full copy of it.
    match unsafe { libc::fork() } {
        -1 => Err(Failure::runtime(format!(
            "--daemon: cannot fork: {}",
            std::io::Error::last_os_error()
        ))),
        0 => {
            drop(read);
            // SAFETY: setsid takes no arguments; it fails only for a
            // process group leader, which a fresh child is not.
            unsafe { libc::setsid() };
            *STARTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(write);
            Ok(())
        }
        child => {
            drop(write);
            let mut said = Vec::new();
            let _ = std::fs::File::from(read).take(16).read_to_end(&mut said);
            if said == b"started" {
                eprintln!("underpass: running in the background as process {child}");
                std::process::exit(0);
            }
            let mut status = 0;
            // SAFETY: waits for our own child, writing its status.
            unsafe { libc::waitpid(child, &mut status, 0) };
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                crate::EXIT_FAILURE.into()
            };
            std::process::exit(if code == 0 { 1 } else { code });
        }
    }
}

#[cfg(not(unix))]
pub fn detach() -> Result<(), Failure> {
    Err(Failure::usage("--daemon is supported on Unix only"))
}

/// In a detached child: stdin, stdout and stderr become /dev/null, and the
/// parent is told that everything is up. Does nothing otherwise.
pub fn started() {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let Some(pipe) = STARTED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            for fd in 0..3 {
                // SAFETY: dup2 onto the standard descriptors, which stay
                // open (now on /dev/null).
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
        let _ = std::fs::File::from(pipe).write_all(b"started");
    }
}
