//! A wireguard-go peer in a network namespace (tests/interop/netns.sh), with
//! servers behind it on its tunnel address: HTTP on 8000 serving `www/`,
//! TCP and UDP echo on 7, DNS on 53 (`files.test`). Needs root: the tests
//! that use it are `#[ignore]`d (./test.sh runs them as root); asked for
//! where the harness cannot run, `Peer::start` fails saying why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::bench::{sh, Kill};
use crate::{keys, write_content, Keys, Scratch};

/// Namespace numbers; each test gets its own, so tests run in parallel.
static NEXT_ID: AtomicU8 = AtomicU8::new(40);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/netns.sh")
}

/// Why the interop harness cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: network namespaces and TUN devices need it".into());
    }
    for tool in ["wireguard-go", "wg", "ip", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed (./test.sh installs it)"));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    None
}

pub struct Peer {
    pub id: u8,
    pub dir: Scratch,
    /// wireguard-go's public key.
    pub public: String,
    /// The key pair the underpass client uses.
    pub client: Keys,
    /// Bytes of `www/big.bin` and their checksum.
    pub file_len: u64,
    pub file_checksum: u64,
}

impl Peer {
    /// A namespace with wireguard-go and its servers; fails the test,
    /// saying why, where that cannot run (a test that was asked for and
    /// did not run must not pass).
    pub fn start(name: &str) -> Peer {
        if let Some(why) = unavailable() {
            panic!("cannot run: {why}");
        }
        Self::start_with(name, &[], None).expect("the harness is available")
    }

    /// As [`Peer::start`], with more peers for wireguard-go (public key,
    /// last octet of its address 10.202.ID.x) and optionally everything
    /// pinned to one CPU.
    pub fn start_with(name: &str, extra_peers: &[(String, u8)], cpu: Option<u32>) -> Option<Peer> {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return None;
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let dir = Scratch::new(name);
        let peer = keys();
        let client = keys();
        std::fs::write(dir.path("peer.key"), &peer.private).unwrap();
        let mut peers = format!("{} 10.202.{id}.2/32\n", client.public);
        for (public, host) in extra_peers {
            peers.push_str(&format!("{public} 10.202.{id}.{host}/32\n"));
        }
        std::fs::write(dir.path("peers"), peers).unwrap();
        std::fs::create_dir_all(dir.path("www")).unwrap();
        let file_len = 8 * 1024 * 1024 + 11;
        let file_checksum = write_content(&dir.path("www/big.bin"), u64::from(id), file_len);
        let _ = run_script(&["down", &id.to_string()]);
        let mut up = Command::new("bash");
        up.arg(script())
            .args(["up", &id.to_string(), dir.0.to_str().unwrap()]);
        if let Some(cpu) = cpu {
            up.env("PIN_CPU", cpu.to_string());
        }
        let out = up.output().expect("bash");
        assert!(
            out.status.success(),
            "netns.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Peer {
            id,
            dir,
            public: peer.public,
            client,
            file_len,
            file_checksum,
        })
    }

    /// wireguard-go's tunnel address, where the servers listen.
    pub fn tunnel_ip(&self) -> String {
        format!("10.202.{}.1", self.id)
    }

    pub fn endpoint(&self) -> SocketAddr {
        format!("10.201.{}.2:51820", self.id).parse().unwrap()
    }

    /// A client config for underpass against this peer: `peer_extra` goes
    /// into its [Peer] section, `extra` after it.
    pub fn client_config(&self, peer_extra: &str, extra: &str) -> String {
        self.client_config_as(&self.client, 2, peer_extra, extra)
    }

    /// [`Peer::client_config`] for another of the peer's clients: `keys`,
    /// address 10.202.ID.`host` (as given to [`Peer::start_with`]).
    pub fn client_config_as(&self, keys: &Keys, host: u8, peer_extra: &str, extra: &str) -> String {
        self.client_config_via(keys, host, self.endpoint(), peer_extra, extra)
    }

    /// [`Peer::client_config_as`] reaching the peer at `endpoint` (a
    /// relay in front of it).
    pub fn client_config_via(
        &self,
        keys: &Keys,
        host: u8,
        endpoint: SocketAddr,
        peer_extra: &str,
        extra: &str,
    ) -> String {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.202.{id}.{host}/32\nDNS = 10.202.{id}.1\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {endpoint}\nAllowedIPs = 10.202.{id}.0/24\n{peer_extra}\n{extra}",
            keys.private,
            self.public,
            id = self.id
        )
    }

    pub fn restart_wireguard_go(&self) {
        let out = run_script(&[
            "restart-wg",
            &self.id.to_string(),
            self.dir.0.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a wireguard-go client in the namespace dialling `endpoint`
    /// (an underpass gateway) with the key pair `keys`; it routes
    /// 10.204.ID.0/24 through the tunnel, and the host owns 10.204.ID.1.
    pub fn start_client(&self, keys: &Keys, gateway_public: &str, endpoint: SocketAddr) {
        std::fs::write(self.dir.path("client.key"), &keys.private).unwrap();
        std::fs::write(self.dir.path("client.peer"), gateway_public).unwrap();
        std::fs::write(self.dir.path("client.endpoint"), endpoint.to_string()).unwrap();
        let out = run_script(&["client", &self.id.to_string(), self.dir.0.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The network namespace's name.
    pub fn netns(&self) -> String {
        format!("underpass-{}", self.id)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns()])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

fn run_script(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash")
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = run_script(&["down", &self.id.to_string(), self.dir.0.to_str().unwrap()]);
    }
}

/// The reference client: wireguard-go on a TUN in the host namespace (on
/// CPU 1), as the peer's client 10.202.ID.`host` (a key pair given to
/// [`Peer::start_with`]), with kernel TCP to the peer's tunnel address;
/// taken down when dropped.
pub struct ReferenceClient {
    interface: String,
    /// Its wireguard-go process.
    pub pid: Option<u32>,
    wireguard_go: Kill,
}

impl ReferenceClient {
    /// Dials `endpoint`: the peer's, or a relay in front of it.
    pub fn start(peer: &Peer, keys: &Keys, host: u8, endpoint: SocketAddr) -> ReferenceClient {
        Self::start_on(peer, keys, host, endpoint, 1)
    }

    /// [`ReferenceClient::start`] with its wireguard-go on `cpu`.
    pub fn start_on(
        peer: &Peer,
        keys: &Keys,
        host: u8,
        endpoint: SocketAddr,
        cpu: u32,
    ) -> ReferenceClient {
        let (id, server_ip) = (peer.id, peer.tunnel_ip());
        let interface = format!("wgr{id}");
        std::fs::write(peer.dir.path("ref.key"), &keys.private).unwrap();
        let setup = format!(
            "wg set {interface} private-key {} peer {} endpoint {endpoint} allowed-ips {server_ip}/32 && \
             ip addr add 10.202.{id}.{host}/32 dev {interface} && ip link set {interface} mtu {mtu} up && ip route replace {server_ip}/32 dev {interface}",
            peer.dir.path("ref.key").display(),
            peer.public,
            mtu = underpass_core::DEFAULT_MTU,
        );
        let wireguard_go = Kill(
            Command::new("taskset")
                .args(["-c", &cpu.to_string(), "wireguard-go", "-f", &interface])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("wireguard-go"),
        );
        // Its TUN device appears once it runs.
        let started = Instant::now();
        while !sh(&format!("ip link show {interface}")).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "wireguard-go made no {interface} in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(sh(&setup).status.success(), "reference wireguard-go");
        // taskset runs wireguard-go in its own process: the same pid.
        let pid = Some(wireguard_go.0.id());
        ReferenceClient {
            interface,
            pid,
            wireguard_go,
        }
    }
}

impl Drop for ReferenceClient {
    fn drop(&mut self) {
        let _ = self.wireguard_go.0.kill();
        let _ = self.wireguard_go.0.wait();
        let _ = sh(&format!("ip link del {} 2>/dev/null", self.interface));
    }
}
