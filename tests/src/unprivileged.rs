//! Running the binary as a user without root, as a CI runner does: when
//! the tests run as root, a system user `underpass-ci` is created (once)
//! and commands run as it through `setpriv`; otherwise they run as the
//! current user, who is already unprivileged.

// libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::binary;

const USER: &str = "underpass-ci";

/// How to run a command unprivileged.
pub struct Unprivileged {
    /// `Some(user)` when commands are wrapped in `setpriv` as that user.
    pub user: Option<&'static str>,
    /// A copy of the binary the user can execute (the build's target dir
    /// may sit in a home directory only root can enter).
    pub binary: PathBuf,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The shared setup; panics with the reason when the user cannot be made.
pub fn get() -> &'static Unprivileged {
    static SETUP: OnceLock<Unprivileged> = OnceLock::new();
    SETUP.get_or_init(|| {
        if !is_root() {
            eprintln!("running the client as the current user (not root: already unprivileged)");
            return Unprivileged {
                user: None,
                binary: binary(),
            };
        }
        let exists = Command::new("id")
            .arg(USER)
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    USER,
                ])
                .output()
                .expect("useradd (package passwd) is installed");
            // A concurrent test process may have created it meanwhile.
            let exists_now = Command::new("id")
                .arg(USER)
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                out.status.success() || exists_now,
                "useradd {USER} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Unprivileged {
            user: Some(USER),
            binary: shared_copy(),
        }
    })
}

/// A world-executable copy of the binary in the temp dir, one per build
/// (named by size and mtime), made atomically so test processes can race.
fn shared_copy() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let original = binary();
    let meta = std::fs::metadata(&original).expect("the binary exists");
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join("underpass-unprivileged");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(format!("underpass-{}-{mtime}", meta.len()));
    if !copy.exists() {
        let partial = dir.join(format!("partial-{}", std::process::id()));
        std::fs::copy(&original, &partial).expect("copying the binary for the unprivileged user");
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&partial, &copy).unwrap();
    }
    copy
}

impl Unprivileged {
    /// `underpass ARGS...` as the unprivileged user.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match self.user {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={user}"),
                    &format!("--regid={user}"),
                    "--init-groups",
                    "--",
                ])
                .arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        c.args(args);
        c
    }
}
