//! README's walkthrough, run as written: the steps of `docs/walkthrough.sh` (which `readme_walkthrough.rs`
//! holds equal to the README's blocks) on four "hosts" (a registry and three nodes), each a network namespace
//! on one underlay bridge plus a mount namespace of its own in which `/etc`, `/var` and `/root` are overlays
//! (writes land in the test's scratch directory, never on this machine's files) and `/run` is empty (no
//! systemd, so the steps take their non-systemd branch; private WireGuard sockets, so every node's interface
//! can be `sdwan0`). The test generates the private CA with the walkthrough's own `ca` step, copies the CA
//! and the enrollment token to the nodes as an operator would, stands in for k3s's API port, and asserts what
//! the walkthrough promises: the cluster active, three enrolled peers with handshakes, the VIP answering from
//! the bootstrap server and then, after `$S move`, from node-b. Everything is removed on drop, also when the
//! test fails (processes by PID, namespaces, scratch directory).

use std::io::{self, ErrorKind};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sdwan_lab::cmd;
use sdwan_lab::netns::{run_in, spawn_in};
use sdwan_lab::process::ProcId;
use sdwan_lab::walkthrough::repo_root;

use crate::common::{require_root, slot, unique_name};

/// The VIP of the walkthrough's cluster (the first address of its VIP pool).
const VIP: &str = "fd00:5d:f::1";

/// How often the test looks again.
const POLL: Duration = Duration::from_millis(100);

/// A host of the walkthrough: its label, underlay address and, for nodes, the step's variables.
struct HostSpec {
    label: &'static str,
    addr: &'static str,
    vars: &'static [(&'static str, &'static str)],
}

const HOSTS: [HostSpec; 4] = [
    HostSpec {
        label: "reg",
        addr: "198.51.100.10",
        vars: &[],
    },
    HostSpec {
        label: "n1",
        addr: "198.51.100.11",
        vars: &[
            ("NAME", "node-a"),
            ("ENDPOINT", "198.51.100.11:51820"),
            ("ROLE", "server"),
            ("BOOTSTRAP", "true"),
        ],
    },
    HostSpec {
        label: "n2",
        addr: "198.51.100.12",
        vars: &[
            ("NAME", "node-b"),
            ("ENDPOINT", "198.51.100.12:51820"),
            ("ROLE", "server"),
            ("BOOTSTRAP", "false"),
        ],
    },
    HostSpec {
        label: "n3",
        addr: "198.51.100.13",
        vars: &[
            ("NAME", "node-c"),
            ("ENDPOINT", "198.51.100.13:51820"),
            ("ROLE", "agent"),
            ("BOOTSTRAP", "false"),
        ],
    },
];
const REG: usize = 0;
const N1: usize = 1;
const N2: usize = 2;
const N3: usize = 3;

/// The walkthrough's world: namespaces, mount namespaces, k3s stand-ins; all removed on drop.
struct World {
    name: String,
    scratch: PathBuf,
    bin_dir: PathBuf,
    /// Host labels whose namespaces exist.
    netns: Vec<String>,
    /// Mount-namespace files that are bound (persistent mount namespaces).
    mounts: Vec<PathBuf>,
    /// Whether the scratch directory is a tmpfs of its own (overlayfs needs an upper directory on a file
    /// system that is not itself an overlay, which a container's /tmp may be).
    scratch_mounted: bool,
    /// Whether `scratch/mnt` is bound onto itself (private propagation).
    mnt_bound: bool,
    stop: Arc<AtomicBool>,
    listeners: Vec<JoinHandle<io::Result<()>>>,
}

impl World {
    fn new(name: &str) -> World {
        let bin_dir = cmd::sdwand_bin()
            .unwrap_or_else(|e| panic!("{e}"))
            .parent()
            .expect("a directory")
            .to_owned();
        World {
            name: name.to_owned(),
            scratch: std::env::temp_dir().join(format!("sdwan-walkthrough-{name}")),
            bin_dir,
            netns: Vec::new(),
            mounts: Vec::new(),
            scratch_mounted: false,
            mnt_bound: false,
            stop: Arc::new(AtomicBool::new(false)),
            listeners: Vec::new(),
        }
    }

    fn ns(&self, host: usize) -> String {
        format!("{}-{}", self.name, HOSTS[host].label)
    }

    fn mnt(&self, host: usize) -> PathBuf {
        self.scratch.join("mnt").join(HOSTS[host].label)
    }

    /// The host's view of `path` (an absolute path under /etc, /var or /root) as written so far: the
    /// overlay's upper directory.
    fn upper(&self, host: usize, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        let (top, rest) = rel.split_once('/').unwrap_or((rel, ""));
        self.scratch
            .join(HOSTS[host].label)
            .join(format!("{top}-up"))
            .join(rest)
    }

    /// The underlay: a bridge in `NAME-hub`, each host's `eth0` on it; then each host's mount namespace.
    fn build(&mut self) {
        let hub = format!("{}-hub", self.name);
        cmd::ip(&["netns", "add", &hub]).unwrap();
        self.netns.push("hub".into());
        cmd::ip_in(&hub, &["link", "add", "br0", "type", "bridge"]).unwrap();
        cmd::ip_in(&hub, &["link", "set", "br0", "up"]).unwrap();
        std::fs::create_dir_all(&self.scratch).unwrap();
        sh(&format!("mount -t tmpfs -o mode=700 tmpfs {}", self.scratch.display()));
        self.scratch_mounted = true;
        let mnt = self.scratch.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        sh(&format!(
            "mount --bind {m} {m} && mount --make-private {m}",
            m = mnt.display()
        ));
        self.mnt_bound = true;
        for (i, host) in HOSTS.iter().enumerate() {
            let ns = self.ns(i);
            cmd::ip(&["netns", "add", &ns]).unwrap();
            self.netns.push(host.label.into());
            let (veth, peer) = (
                format!("{}{}", self.name, host.label),
                format!("{}{}b", self.name, host.label),
            );
            cmd::ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]).unwrap();
            cmd::ip(&["link", "set", &veth, "netns", &ns]).unwrap();
            cmd::ip(&["link", "set", &peer, "netns", &hub]).unwrap();
            cmd::ip_in(&hub, &["link", "set", &peer, "master", "br0", "up"]).unwrap();
            cmd::ip_in(&ns, &["link", "set", &veth, "name", "eth0"]).unwrap();
            cmd::ip_in(&ns, &["addr", "add", &format!("{}/24", host.addr), "dev", "eth0"]).unwrap();
            cmd::ip_in(&ns, &["link", "set", "eth0", "up"]).unwrap();
            cmd::ip_in(&ns, &["link", "set", "lo", "up"]).unwrap();

            let dir = self.scratch.join(host.label);
            let mut mounts = String::new();
            for top in ["etc", "var", "root"] {
                let (up, work) = (dir.join(format!("{top}-up")), dir.join(format!("{top}-work")));
                std::fs::create_dir_all(&up).unwrap();
                std::fs::create_dir_all(&work).unwrap();
                mounts.push_str(&format!(
                    "mount -t overlay overlay -o lowerdir=/{top},upperdir={},workdir={} /{top} && ",
                    up.display(),
                    work.display()
                ));
            }
            let file = self.mnt(i);
            std::fs::write(&file, "").unwrap();
            sh(&format!(
                "nsenter --net=/run/netns/{ns} unshare --mount={f} --propagation private sh -c '{mounts}\
                 mount -t tmpfs -o mode=755 tmpfs /run && mount -t sysfs sysfs /sys && \
                 echo \"198.51.100.10 registry.example.net\" >>/etc/hosts'",
                f = file.display()
            ));
            self.mounts.push(file);
        }
    }

    /// A command inside `host`'s network and mount namespaces, from the checkout, with the built binaries
    /// first on PATH.
    fn command(&self, host: usize, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.mnt(host).display()))
            .arg(format!("--net=/run/netns/{}", self.ns(host)))
            .arg(format!("--wd={}", repo_root().display()))
            .arg("--")
            .args(argv)
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.bin_dir.display()),
            )
            .env("HOME", "/root");
        c
    }

    /// Runs the walkthrough's `step` on `host` (`docs/walkthrough.sh STEP`); panics with its output when it
    /// fails. Returns its stdout.
    fn step(&self, host: usize, step: &str) -> String {
        let mut c = self.command(host, &["bash", "docs/walkthrough.sh", step]);
        c.envs(HOSTS[host].vars.iter().copied());
        let out = cmd::output(&mut c).unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "walkthrough step {step:?} on {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            HOSTS[host].label,
            out.status
        );
        stdout
    }

    /// Runs a shell command on `host`; `Err` with its stderr when it fails.
    fn sh_on(&self, host: usize, script: &str) -> Result<String, String> {
        cmd::run(&mut self.command(host, &["sh", "-c", script])).map_err(|e| e.to_string())
    }

    /// The operator's copy from the registry's host to a node (`scp`): `from` on the registry, `to` with
    /// `mode` on node `host`.
    fn copy(&self, from: &str, host: usize, to: &str, mode: &str) {
        let data = self.sh_on(REG, &format!("cat {from}")).unwrap();
        let mut c = self.command(host, &["install", "-D", "-m", mode, "/dev/stdin", to]);
        cmd::run_stdin(&mut c, &data).unwrap();
    }

    /// k3s's API port on `host` ([::1]:6443), accepting connections, until the world is dropped.
    fn k3s_stand_in(&mut self, host: usize) {
        let stop = self.stop.clone();
        let listener = spawn_in(&self.ns(host), move || {
            let l = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 6443)))?;
            l.set_nonblocking(true)?;
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .unwrap();
        self.listeners.push(listener);
    }

    /// The walkthrough's `S` on the registry's host, with `args`.
    fn registry_cli(&self, args: &str) -> Result<String, String> {
        self.sh_on(
            REG,
            &format!(
                "sdwanctl registry --url https://registry.example.net:7443 --ca-file /etc/sdwan-registry/ca.pem \
                 --token-file /root/acme.token {args}"
            ),
        )
    }

    /// Whether `host`'s `sdwan0` carries the VIP (the ground truth of who holds it).
    fn holds_vip(&self, host: usize) -> bool {
        cmd::ip_in(&self.ns(host), &["-6", "addr", "show", "dev", "sdwan0"]).is_ok_and(|o| o.contains(VIP))
    }

    /// The peers of `host`'s `sdwan0` with a handshake (`wg show sdwan0 latest-handshakes`).
    fn handshakes(&self, host: usize) -> usize {
        self.sh_on(host, "wg show sdwan0 latest-handshakes").map_or(0, |o| {
            o.lines()
                .filter(|l| l.split_whitespace().nth(1).is_some_and(|t| t != "0"))
                .count()
        })
    }

    /// The tail of every log the steps started, for a failing test.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, host) in HOSTS.iter().enumerate() {
            for log in ["/var/log/sdwan-registry.log", "/var/log/sdwand.log"] {
                if let Ok(text) = std::fs::read_to_string(self.upper(i, log)) {
                    let lines: Vec<&str> = text.lines().collect();
                    out.push_str(&format!("--- {} {log}\n", host.label));
                    for l in &lines[lines.len().saturating_sub(30)..] {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    fn wait(&self, what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
        if let Err(e) = sdwan_lab::wait_until(timeout, POLL, cond) {
            panic!("{what}: {e}\n{}", self.logs());
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.stop.store(true, Ordering::Relaxed);
        for l in self.listeners.drain(..) {
            let _ = l.join();
        }
        // Every process in the hosts' namespaces was started by this test (the steps' daemons, wireguard-go).
        let procs: Vec<ProcId> = self
            .netns
            .iter()
            .filter_map(|label| cmd::netns_pids(&format!("{}-{label}", self.name)).ok())
            .flatten()
            .filter_map(ProcId::of)
            .collect();
        for p in &procs {
            let _ = p.signal(libc::SIGTERM);
        }
        for p in &procs {
            if !p.wait_gone(Duration::from_secs(5)) {
                let _ = p.stop(libc::SIGKILL, Duration::from_secs(2));
            }
        }
        for file in self.mounts.drain(..) {
            let _ = Command::new("umount").arg(&file).status();
        }
        if self.mnt_bound {
            let _ = Command::new("umount").arg(self.scratch.join("mnt")).status();
        }
        if self.scratch_mounted {
            let _ = Command::new("umount").arg(&self.scratch).status();
        }
        for label in self.netns.drain(..) {
            let _ = cmd::ip(&["netns", "del", &format!("{}-{label}", self.name)]);
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Runs `script` with `sh -c` on this machine; panics with its stderr when it fails.
fn sh(script: &str) {
    cmd::run(Command::new("sh").args(["-c", script])).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn walkthrough_runs_as_written() {
    require_root();
    for tool in ["openssl", "curl", "jq", "nsenter", "unshare", "wg"] {
        assert!(
            cmd::which(tool).is_some(),
            "{tool} is not installed (scripts/install-deps installs it)"
        );
    }
    let _slot = slot();
    let mut w = World::new(&unique_name("wk"));
    w.build();

    // 1-3: the CA, the registry, a network and an enrollment token, on the registry's host.
    w.step(REG, "ca");
    w.step(REG, "registry");
    let reg = SocketAddr::from(([198, 51, 100, 10], 7443));
    w.wait("the registry listens", Duration::from_secs(10), || {
        run_in(&w.ns(REG), "connect", move || {
            TcpStream::connect_timeout(&reg, Duration::from_millis(200)).map(drop)
        })
        .is_ok()
    });
    w.step(REG, "network");
    for node in [N1, N2, N3] {
        w.copy("/etc/sdwan-registry/ca.pem", node, "/etc/sdwand/registry-ca.pem", "644");
        w.copy("/root/enrollment-token", node, "/etc/sdwand/enrollment-token", "600");
    }

    // 4: the bootstrap server, the cluster active, then the joining server and the agent.
    w.k3s_stand_in(N1);
    w.k3s_stand_in(N2);
    w.step(N1, "node");
    w.wait("the cluster is active", Duration::from_secs(20), || {
        w.registry_cli("clusters").is_ok_and(|o| o.contains(" active "))
    });
    w.step(N2, "node");
    w.step(N3, "node");
    for node in [N1, N2, N3] {
        w.wait(
            &format!("{} has handshakes with both others", HOSTS[node].label),
            Duration::from_secs(20),
            || w.handshakes(node) == 2,
        );
    }
    w.wait("the VIP answers node-c", Duration::from_secs(10), || {
        w.sh_on(N3, &format!("ping -c 1 -W 1 {VIP}")).is_ok()
    });
    assert!(w.holds_vip(N1), "the bootstrap server does not hold the VIP");
    let drop_in = |node: usize| {
        std::fs::read_to_string(w.upper(node, "/etc/rancher/k3s/config.yaml.d/50-sdwand.yaml")).unwrap_or_default()
    };
    assert!(
        drop_in(N1).contains("cluster-init: true"),
        "node-a's drop-in:\n{}",
        drop_in(N1)
    );
    assert!(
        drop_in(N3).contains(&format!("server: \"https://[{VIP}]:6443\"")),
        "node-c's drop-in:\n{}",
        drop_in(N3)
    );

    // 5: what the operator sees, and the manual move to node-b once the holder sees it as a live, healthy
    // standby (before that the holder refuses the move, and says so).
    w.wait(
        "node-a sees node-b as a live, healthy standby",
        Duration::from_secs(10),
        || {
            w.sh_on(N1, "sdwanctl vip list").is_ok_and(|o| {
                o.lines().any(|l| {
                    let t: Vec<&str> = l.split_whitespace().collect();
                    t.len() > 5 && t[1] == "node-b" && t[3..6] == ["standby", "yes", "yes"]
                })
            })
        },
    );
    let watched = w.step(REG, "watch");
    for expected in ["node-a", "node-b", "node-c", " active ", VIP] {
        assert!(watched.contains(expected), "`watch` shows no {expected:?}:\n{watched}");
    }
    w.wait(
        &format!("node-b holds the VIP after the move; `watch` said:\n{watched}"),
        Duration::from_secs(10),
        || w.holds_vip(N2) && !w.holds_vip(N1),
    );
    let checked = w.step(N3, "check");
    for expected in ["node-a", "node-b", VIP, " 0% packet loss"] {
        assert!(checked.contains(expected), "`check` shows no {expected:?}:\n{checked}");
    }
    assert!(
        Path::new(&w.upper(N1, "/var/lib/sdwand/registry/identity.json")).exists(),
        "node-a kept no enrollment identity"
    );
}
