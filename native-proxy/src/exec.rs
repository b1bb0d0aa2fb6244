//! `underpass exec -- COMMAND`: the tunnel up for the length of one
//! command, for CI jobs without root. The command finds the proxies in the
//! usual environment variables and the config's forwards on loopback; its
//! exit status becomes ours.

// Unsafe only for libc calls, each block with its SAFETY comment.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::Command;

use crate::accept::ListenerKind;
use crate::cli::ExecArgs;
use crate::client::{load_config, Client};
use crate::config::{Credentials, ProxyConfig, ProxyListener};
use crate::config_source::{ENV_FILE, ENV_TEXT};
use crate::Failure;

/// The shell's statuses for a command that cannot be run.
const EXIT_NOT_EXECUTABLE: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;

/// Signals passed on to the command; the tunnel stays up until the command
/// has exited, whatever it does with them.
#[cfg(unix)]
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Runs the command through the tunnel; returns its exit status.
pub async fn run(args: ExecArgs) -> Result<u8, Failure> {
    let cfg = load_config(args.config.as_deref())?;
    if !cfg.stdio_tunnels.is_empty() {
        return Err(Failure::usage(
            "exec cannot serve a [STDIOTunnel]: stdin and stdout belong to the command",
        ));
    }
    // Our own proxies, on ports nobody chose, with credentials only the
    // command knows: other users of a shared runner cannot use them.
    let auth = (!args.no_proxy_auth).then(random_credentials);
    let ours = ProxyListener {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        auth: auth.clone(),
        tls: None,
    };
    let socks5: Vec<_> = std::iter::once(ours.clone())
        .chain(cfg.socks5.iter().cloned())
        .collect();
    let http: Vec<_> = std::iter::once(ours)
        .chain(cfg.http.iter().cloned())
        .collect();
    let client = Client::start(&cfg, &socks5, &http, &(&args.common).into()).await?;
    let running = client.launch(&cfg).await?;
    if let Err(f) = running
        .wait_for_handshakes(Duration::from_secs(args.handshake_timeout))
        .await
    {
        running.stop().await;
        return Err(f);
    }
    let first = |kind: ListenerKind| {
        running
            .listening
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.addr)
            .expect("exec binds its own proxies first")
    };
    let env = proxy_env(
        first(ListenerKind::Socks5),
        first(ListenerKind::Http),
        auth.as_ref(),
        std::env::var("NO_PROXY")
            .or_else(|_| std::env::var("no_proxy"))
            .ok(),
    );
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| Failure::usage("exec needs a command after --"))?;
    tracing::debug!(command = ?args.command, "starting the command");
    let mut command = Command::new(program);
    command.args(rest).envs(env);
    crate::setup::restore_fd_limit_for(&mut command);
    for name in withheld(&cfg) {
        command.env_remove(name);
    }
    let spawned = command.spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            running.stop().await;
            return Err(spawn_failure(program, e));
        }
    };
    let status = wait_forwarding_signals(child).await;
    running.stop().await;
    status.map(exit_code).map_err(Failure::runtime)
}

/// A command that could not start, with the shell's status: 127 when it
/// is nowhere, 126 when it is there but cannot run. A PATH entry we may
/// not search makes execvp say "permission denied" for a command that
/// simply does not exist; that is still 127.
fn spawn_failure(program: &std::ffi::OsStr, e: std::io::Error) -> Failure {
    let name = program.to_string_lossy();
    let anywhere = || {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).exists()))
    };
    let missing = match e.kind() {
        std::io::ErrorKind::NotFound => true,
        std::io::ErrorKind::PermissionDenied => !name.contains('/') && !anywhere(),
        _ => false,
    };
    if missing {
        Failure {
            status: EXIT_NOT_FOUND,
            message: format!("cannot run {name}: command not found"),
        }
    } else {
        Failure {
            status: EXIT_NOT_EXECUTABLE,
            message: format!("cannot run {name}: {e}"),
        }
    }
}

/// The variables the command must not inherit: the config itself (its
/// private key) or its path, and the variables the config took a key or
/// password from. The command reaches the tunnel through the proxies;
/// it has no use for the secrets behind them.
fn withheld(cfg: &ProxyConfig) -> Vec<&str> {
    let mut names = vec![ENV_TEXT, ENV_FILE];
    names.extend(cfg.secret_vars.iter().map(String::as_str));
    names
}

fn random_credentials() -> Credentials {
    use rand::RngCore;
    let mut secret = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    Credentials {
        username: "underpass".into(),
        password: secret.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// The variables proxy-aware tools read, in both the upper- and the
/// lower-case spelling (curl reads only `http_proxy` in lower case), and
/// `NODE_USE_ENV_PROXY=1`: Node.js (24 and later) reads the proxy
/// variables only when it is set.
pub fn proxy_env(
    socks: SocketAddr,
    http: SocketAddr,
    auth: Option<&Credentials>,
    no_proxy: Option<String>,
) -> Vec<(String, OsString)> {
    let userinfo = auth.map_or(String::new(), |c| format!("{}:{}@", c.username, c.password));
    let all = format!("socks5h://{userinfo}{socks}");
    let http = format!("http://{userinfo}{http}");
    let mut no_proxy: Vec<String> = no_proxy
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for local in ["localhost", "127.0.0.1", "::1"] {
        if !no_proxy.iter().any(|s| s == local) {
            no_proxy.push(local.into());
        }
    }
    let no_proxy = no_proxy.join(",");
    let mut env = Vec::new();
    for (name, value) in [
        ("ALL_PROXY", &all),
        ("HTTP_PROXY", &http),
        ("HTTPS_PROXY", &http),
        ("NO_PROXY", &no_proxy),
    ] {
        env.push((name.to_string(), value.into()));
        env.push((name.to_ascii_lowercase(), value.into()));
    }
    env.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
    env
}

/// Waits for the command, passing on the signals we get meanwhile.
async fn wait_forwarding_signals(mut child: tokio::process::Child) -> std::io::Result<ExitStatus> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for sig in FORWARDED {
            let mut stream = signal(SignalKind::from_raw(sig))?;
            let tx = tx.clone();
            tokio::task::spawn_local(async move {
                while stream.recv().await.is_some() && tx.send(sig).is_ok() {}
            });
        }
        loop {
            tokio::select! {
                status = child.wait() => return status,
                Some(sig) = rx.recv() => {
                    if let Some(pid) = child.id() {
                        tracing::debug!(signal = sig, "passing the signal to the command");
                        // SAFETY: kill(2) on the pid of our child, which has
                        // not been reaped yet (wait() has not returned).
                        unsafe {
                            libc::kill(pid as libc::pid_t, sig);
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    child.wait().await
}

/// The command's status as ours: its code, or 128 + the signal that
/// killed it, as shells report it.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return code as u8;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128u8.wrapping_add(sig as u8);
        }
    }
    crate::EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(env: &'a [(String, OsString)], name: &str) -> &'a str {
        env.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str())
            .unwrap_or_else(|| panic!("{name} not set"))
    }

    #[test]
    fn proxies_in_both_spellings_with_credentials() {
        let auth = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let env = proxy_env(
            "127.0.0.1:1080".parse().unwrap(),
            "127.0.0.1:8118".parse().unwrap(),
            Some(&auth),
            None,
        );
        assert_eq!(get(&env, "ALL_PROXY"), "socks5h://u:p@127.0.0.1:1080");
        assert_eq!(get(&env, "all_proxy"), "socks5h://u:p@127.0.0.1:1080");
        assert_eq!(get(&env, "http_proxy"), "http://u:p@127.0.0.1:8118");
        assert_eq!(get(&env, "HTTPS_PROXY"), "http://u:p@127.0.0.1:8118");
        assert_eq!(get(&env, "no_proxy"), "localhost,127.0.0.1,::1");
        assert_eq!(get(&env, "NODE_USE_ENV_PROXY"), "1");
    }

    #[test]
    fn no_proxy_is_kept_and_extended_once() {
        let env = proxy_env(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            None,
            Some(".internal, localhost".into()),
        );
        assert_eq!(get(&env, "NO_PROXY"), ".internal,localhost,127.0.0.1,::1");
        assert_eq!(get(&env, "ALL_PROXY"), "socks5h://127.0.0.1:1");
    }

    #[test]
    fn a_signal_death_is_128_plus_the_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
