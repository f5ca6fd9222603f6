//! Containers on the SD-WAN (issue 10 item 4, use case 8) with real Docker: the lab's registry gives each of
//! two nodes a /28 of the pod pool 198.51.100.0/24; each node runs its own `containerd` and `dockerd`
//! (Debian's docker.io) in its namespace, with every root, state directory, socket and PID file under the
//! lab's state directory; `sdwanctl docker-network` puts a bridge network on each node's share. Then:
//!
//! - `--print` shows the network and the DOCKER-USER rules, and running it twice keeps the network;
//! - with Docker's usual `FORWARD` policy (`DROP`, which Docker sets when it enables forwarding itself), a
//!   container on p1 pings the container on p2 by address and fetches a file from its HTTP server, which
//!   sees the client's own address (no NAT between the shares);
//! - the server's published port answers on p2's overlay address from p1 (docker-proxy);
//! - counters on both underlay links see WireGuard UDP and never a container address.
//!
//! The image is built locally from Debian's busybox-static (`docker import`): no registry pull. Everything
//! the test starts is stopped by PID, and its mounts and files removed, also when it fails.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ipnet::Ipv4Net;
use sdwan_lab::layout::LISTEN_PORT;
use sdwan_lab::process::ProcId;
use sdwan_lab::{Background, Lab, Layout, UpOptions};
use sdwand::control::docker::gateway_v4;
use sdwand::control::DaemonStatus;
use sdwand::vocab::PodPool;

use crate::common::{lab_with, unique_name, POLL};

/// The pod pool of the lab's network, and each node's share length.
const POOL: &str = "198.51.100.0/24";
const SHARE_LEN: u8 = 28;
/// The locally built image.
const IMAGE: &str = "sdwan-lab-busybox:local";
/// What the container on p2 serves.
const PAGE: &str = "hello from a container on p2\n";

/// Fails the test, clearly, unless the Docker tools and a static busybox are installed.
fn require_docker() -> PathBuf {
    for tool in ["docker", "dockerd", "containerd", "nsenter", "iptables", "tar"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is not installed: the Docker test needs Debian's docker.io and busybox-static (scripts/install-deps)"
        );
    }
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox is not installed: the Docker test's image is Debian's busybox-static (scripts/install-deps)")
}

/// One node's Docker: its directory under the lab's state directory and the daemons.
struct NodeDocker {
    dir: PathBuf,
    host: String,
    containerd: Option<Background>,
    dockerd: Option<Background>,
}

/// Every node's Docker; stopped and removed on drop (also when the test fails). Declared after the lab, so
/// it is dropped before the lab goes down.
struct Dockers(Vec<NodeDocker>);

impl Drop for Dockers {
    fn drop(&mut self) {
        for node in &mut self.0 {
            node.stop();
        }
    }
}

impl NodeDocker {
    /// Starts containerd and dockerd in peer `i`'s namespace (in the test's mount namespace: `ip netns exec`
    /// remounts /sys, which hides the cgroup hierarchy from runc), and waits until dockerd answers.
    fn start(lab: &mut Lab, i: usize, dockers: &mut Dockers) {
        let dir = lab.layout().peer_dir(i).join("docker");
        fs::create_dir_all(&dir).unwrap();
        let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        fs::write(dir.join("containerd.toml"), "").unwrap();
        fs::write(dir.join("daemon.json"), "{}\n").unwrap();
        let mnt = format!("--mount=/proc/{}/ns/mnt", std::process::id());
        dockers.0.push(NodeDocker {
            dir: dir.clone(),
            host: format!("unix://{}", p("docker.sock")),
            containerd: None,
            dockerd: None,
        });
        let node = dockers.0.last_mut().unwrap();
        let containerd = lab
            .spawn_in(
                i,
                &[
                    "nsenter",
                    &mnt,
                    "--",
                    "containerd",
                    "--config",
                    &p("containerd.toml"),
                    "--root",
                    &p("containerd-root"),
                    "--state",
                    &p("containerd-state"),
                    "--address",
                    &p("containerd.sock"),
                ],
            )
            .unwrap();
        node.containerd = Some(containerd);
        let up = sdwan_lab::wait_until(Duration::from_secs(20), POLL, || dir.join("containerd.sock").exists());
        assert!(up.is_ok(), "p{i}'s containerd did not open its socket\n{}", node.logs());
        let dockerd = lab
            .spawn_in(
                i,
                &[
                    "nsenter",
                    &mnt,
                    "--",
                    "dockerd",
                    "--config-file",
                    &p("daemon.json"),
                    "--containerd",
                    &p("containerd.sock"),
                    "--data-root",
                    &p("data"),
                    "--exec-root",
                    &p("exec"),
                    "--pidfile",
                    &p("dockerd.pid"),
                    "-H",
                    &node.host,
                    "--bridge",
                    "none",
                ],
            )
            .unwrap();
        node.dockerd = Some(dockerd);
        let up = sdwan_lab::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            node.docker(&["version"]).status.success()
        });
        assert!(up.is_ok(), "p{i}'s dockerd did not answer\n{}", node.logs());
    }

    /// Runs the docker CLI against this node's daemon.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("30")
            .arg("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .output()
            .expect("running docker")
    }

    /// Like [`NodeDocker::docker`]; panics with stderr on failure, returns stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The daemons' log tails, for failure messages.
    fn logs(&self) -> String {
        let tail = |b: &Option<Background>| b.as_ref().map(|b| tail_of(&b.stderr_so_far(), 15)).unwrap_or_default();
        format!(
            "containerd:\n{}\ndockerd:\n{}",
            tail(&self.containerd),
            tail(&self.dockerd)
        )
    }

    /// Removes the containers, stops dockerd and containerd by PID (and any shim or container process of
    /// this containerd still there), unmounts what they left mounted under the directory and removes it.
    fn stop(&mut self) {
        if self.dockerd.is_some() {
            let ids = String::from_utf8_lossy(&self.docker(&["ps", "-aq"]).stdout).into_owned();
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        if let Some(d) = self.dockerd.take() {
            stop(&d, Duration::from_secs(10));
        }
        // Container processes and their shims left behind: the shim is the parent of each init.pid.
        let socket = self.dir.join("containerd.sock");
        for pid_file in files_named(&self.dir.join("containerd-state"), "init.pid") {
            let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let shim = parent_of(pid).filter(|&ppid| {
                fs::read(format!("/proc/{ppid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(socket.to_str().unwrap_or("-")))
            });
            for pid in std::iter::once(pid).chain(shim) {
                if let Some(id) = ProcId::of(pid) {
                    let _ = id.stop(libc::SIGKILL, Duration::from_secs(2));
                }
            }
        }
        if let Some(c) = self.containerd.take() {
            stop(&c, Duration::from_secs(5));
        }
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Stops a background daemon: SIGTERM, `grace` to exit, then SIGKILL (the handle's drop reaps it).
fn stop(process: &Background, grace: Duration) {
    if let Some(id) = ProcId::of(process.pid()) {
        let _ = id.stop(libc::SIGTERM, grace);
    }
}

/// The parent PID of `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}

/// Every file called `name` under `dir` (bounded depth: containerd's task directories are 3 deep).
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut level = vec![dir.to_path_buf()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for d in level {
            for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() && !path.is_symlink() {
                    next.push(path);
                } else if entry.file_name() == name {
                    found.push(path);
                }
            }
        }
        level = next;
    }
    found
}

/// The last `n` lines of `text`.
fn tail_of(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A root filesystem of busybox (with the applets the test uses) and the page p2 serves, as a tarball.
fn build_image_tar(lab: &Lab, busybox: &Path) -> PathBuf {
    let root = lab.layout().state_dir().join("docker-image");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("www")).unwrap();
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ping", "nc", "httpd", "sleep", "printf"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("www/hello"), PAGE).unwrap();
    let tar = lab.layout().state_dir().join("docker-image.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot build the image tarball");
    tar
}

/// `sdwanctl --json status` on peer `i`.
fn status(lab: &Lab, i: usize) -> Option<DaemonStatus> {
    let out = lab.sdwanctl(i, &["--json", "status"]).ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Peer `i`'s IPv4 pod share, from its daemon's status.
fn share(status: &DaemonStatus) -> Option<Ipv4Net> {
    status.workload.as_ref()?.pods().find_map(|p| match p {
        ipnet::IpNet::V4(n) => Some(n),
        ipnet::IpNet::V6(_) => None,
    })
}

/// `sdwanctl docker-network ARGS` run in peer `i`'s namespace (iptables must act there).
fn docker_network(lab: &Lab, i: usize, args: &[&str]) -> Output {
    let bin = sdwan_lab::cmd::sdwanctl_bin().unwrap();
    let socket = lab.layout().control_socket(i);
    let mut argv = vec![
        bin.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
        "docker-network",
    ];
    argv.extend(args);
    lab.exec(i, &argv).unwrap()
}

/// Counters on peer `i`'s underlay link: `pods` counts any packet from or to the pod pool, `wg`
/// WireGuard's UDP.
fn add_capture(lab: &Lab, i: usize) {
    let u = lab.layout().underlay_if(i);
    let rules = format!(
        "table inet dkcap {{
    counter pods {{}}
    counter wg {{}}
    chain out {{
        type filter hook postrouting priority 300; policy accept;
        oifname \"{u}\" ip saddr {POOL} counter name pods
        oifname \"{u}\" ip daddr {POOL} counter name pods
        oifname \"{u}\" udp sport {LISTEN_PORT} counter name wg
    }}
    chain in {{
        type filter hook prerouting priority -300; policy accept;
        iifname \"{u}\" ip saddr {POOL} counter name pods
        iifname \"{u}\" ip daddr {POOL} counter name pods
        iifname \"{u}\" udp dport {LISTEN_PORT} counter name wg
    }}
}}
"
    );
    let path = lab.layout().peer_dir(i).join("dkcap.nft");
    fs::write(&path, rules).unwrap();
    lab.exec_ok(i, &["nft", "-f", path.to_str().unwrap()]).unwrap();
}

/// The packets counted by `counter` of peer `i`'s capture table.
fn captured(lab: &Lab, i: usize, counter: &str) -> u64 {
    let out = lab
        .exec_ok(i, &["nft", "list", "counter", "inet", "dkcap", counter])
        .unwrap();
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "packets").expect("a packets field");
    words[at + 1].parse().expect("a packet count")
}

#[test]
fn containers_on_two_nodes_reach_each_other_by_address_over_the_overlay() {
    let busybox = require_docker();
    let mut opts = UpOptions::new(&unique_name("dk"), 2);
    opts.pod_pools = vec![PodPool {
        prefix: POOL.parse().unwrap(),
        node_len: SHARE_LEN,
    }];
    let mut lab = lab_with(opts);

    // Each node knows its share, and routes the other's through its interface.
    let mut shares = Vec::new();
    for i in 1..=2 {
        let got = sdwan_lab::wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            status(&lab, i).as_ref().and_then(share).is_some()
        });
        assert!(
            got.is_ok(),
            "p{i}'s status never showed a pod share\n{}",
            lab.log_tail(i, 20)
        );
        shares.push(status(&lab, i).as_ref().and_then(share).unwrap());
    }
    assert_ne!(shares[0], shares[1]);
    for (i, other) in [(1, shares[1]), (2, shares[0])] {
        let wg = lab.wg_if(i).unwrap();
        let routed = sdwan_lab::wait_until(Duration::from_secs(20), POLL, || {
            lab.exec_ok(i, &["ip", "-4", "route", "show", "dev", &wg])
                .is_ok_and(|r| r.contains(&format!("{other} proto 200")))
        });
        assert!(routed.is_ok(), "p{i} does not route {other}\n{}", lab.log_tail(i, 20));
    }

    let tar = build_image_tar(&lab, &busybox);
    let mut dockers = Dockers(Vec::new());
    for i in 1..=2 {
        NodeDocker::start(&mut lab, i, &mut dockers);
        dockers.0[i - 1].docker_ok(&["import", tar.to_str().unwrap(), IMAGE]);
        // Docker's policy when it enables forwarding itself (here sdwand enabled it first).
        lab.exec_ok(i, &["iptables", "-P", "FORWARD", "DROP"]).unwrap();
    }

    let printed = docker_network(&lab, 1, &["--print"]);
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let wg1 = lab.wg_if(1).unwrap();
    assert!(
        text.contains(&format!("--subnet {} --gateway {}", shares[0], gateway_v4(shares[0]))),
        "{text}"
    );
    assert!(text.contains("enable_ip_masquerade=false"), "{text}");
    assert!(
        text.contains(&format!("iptables -I DOCKER-USER -i {wg1} -o sdwan-docker -j ACCEPT")),
        "{text}"
    );
    assert!(
        !dockers.0[0].docker_ok(&["network", "ls"]).contains("sdwan"),
        "--print created the network"
    );
    for i in 1..=2 {
        let host = dockers.0[i - 1].host.clone();
        for run in ["created network", "already exists"] {
            let out = docker_network(&lab, i, &["--docker-host", &host]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(run),
                "sdwanctl docker-network on p{i}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let wg = lab.wg_if(i).unwrap();
        let rules = lab.exec_ok(i, &["iptables", "-S", "DOCKER-USER"]).unwrap();
        assert_eq!(
            rules.matches(&format!("-i {wg} -o sdwan-docker -j ACCEPT")).count(),
            1,
            "p{i}: {rules}"
        );
    }

    // A web server on p2's share, a client on p1's.
    let server_ip = std::net::Ipv4Addr::from(u32::from(gateway_v4(shares[1])) + 1).to_string();
    dockers.0[1].docker_ok(&[
        "run",
        "-d",
        "--name",
        "dk-server",
        "--network",
        "sdwan",
        "--ip",
        &server_ip,
        "-p",
        "8081:8080",
        IMAGE,
        "/bin/httpd",
        "-f",
        "-vv",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    dockers.0[0].docker_ok(&[
        "run",
        "-d",
        "--name",
        "dk-client",
        "--network",
        "sdwan",
        IMAGE,
        "/bin/sleep",
        "600",
    ]);
    let client_ip = dockers.0[0]
        .docker_ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "dk-client",
        ])
        .trim()
        .to_owned();
    assert!(
        shares[0].contains(&client_ip.parse::<std::net::Ipv4Addr>().unwrap()),
        "the client's address {client_ip} is not in p1's share {}",
        shares[0]
    );

    for i in 1..=2 {
        add_capture(&lab, i);
    }
    let wg_before: Vec<u64> = (1..=2).map(|i| captured(&lab, i, "wg")).collect();

    let client = &dockers.0[0];
    let reached = sdwan_lab::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        client
            .docker(&["exec", "dk-client", "ping", "-c", "1", "-W", "1", &server_ip])
            .status
            .success()
    });
    assert!(
        reached.is_ok(),
        "the container on p1 cannot ping the one on p2 at {server_ip}\np1 iptables:\n{}",
        lab.exec_ok(1, &["iptables", "-S"]).unwrap_or_default()
    );
    let out = client.docker_ok(&["exec", "dk-client", "ping", "-c", "3", "-W", "2", &server_ip]);
    assert!(out.contains("3 packets received"), "{out}");
    let url = format!("http://{server_ip}:8080/hello");
    // busybox-static's wget crashes without the NSS modules a static glibc loads: plain HTTP over nc.
    let request = format!("printf 'GET /hello HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {server_ip} 8080");
    let fetched = client.docker(&["exec", "dk-client", "sh", "-c", &request]);
    let page = String::from_utf8_lossy(&fetched.stdout);
    let log = dockers.0[1].docker(&["logs", "dk-server"]);
    let log = String::from_utf8_lossy(&log.stderr).into_owned() + &String::from_utf8_lossy(&log.stdout);
    assert!(
        fetched.status.success(),
        "the container on p1 cannot fetch {url}: {}\nserver log:\n{log}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(page.starts_with("HTTP/1.") && page.ends_with(PAGE), "{page}");
    // The server saw the client's own address: no NAT between the shares.
    assert!(log.contains(&client_ip), "the server did not see {client_ip}:\n{log}");
    // A published port stays on p2's own addresses, its overlay /128 included (docker-proxy on [::]).
    let published = format!("http://[{}]:8081/hello", Layout::overlay_addr(2));
    let fetched = lab.exec(1, &["curl", "-sS", "-m", "5", "-g", &published]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout),
        PAGE,
        "p1 cannot fetch {published}: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );

    for i in 1..=2 {
        assert_eq!(
            captured(&lab, i, "pods"),
            0,
            "a container address crossed p{i}'s underlay link"
        );
        assert!(
            captured(&lab, i, "wg") > wg_before[i - 1],
            "no WireGuard UDP counted on p{i}'s underlay: the capture sees nothing"
        );
    }
    drop(dockers);
}
