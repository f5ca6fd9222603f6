//! In-process tests of the whole daemon: `sdwand::daemon::run` inside the test process, with Debian's
//! `wireguard-go` as the userspace backend. The middle layer between the unit tests and the netns suite.
//!
//! - start, reload (a member added), status and stop, with a static configuration;
//! - a registry view: a registry served in the test process, a member enrolled and removed through its API,
//!   the peer and its /128 following on the daemon's interface;
//! - a refused enrollment: the control socket answers meanwhile with the problem, and a fixed token file
//!   ends it without a restart;
//! - a VIP move: two daemons in two namespaces joined by a veth pair; the holder's graceful stop hands the
//!   VIP over to the other candidate.
//!
//! Each daemon runs on its own thread, moved into a fresh network namespace with `unshare(CLONE_NEWNET)`
//! (threads and processes that thread starts inherit the namespace, so the runtime's workers and
//! `wireguard-go` live there too; commands for another thread's namespace run through `nsenter`). The UAPI
//! socket directory /var/run/wireguard is shared by every namespace, so interface names are unique per
//! test process and per test. The tests need root and are skipped, with a message, without it. Every wait
//! polls with a deadline; interfaces and daemons are removed and stopped on failure too (drop guards).

use std::future::Future;
use std::io;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sdwand::control::{self, DaemonStatus, Request, Response};
use sdwand::daemon::Trigger;
use tokio::time::{sleep, timeout, Instant};

/// How long any one wait may take.
const DEADLINE: Duration = Duration::from_secs(20);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

const P2_KEY: &str = "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=";
const P3_KEY: &str = "QFSSgsfyIsfbZ9y4P+UyFbxPLAkw8yM6I65WBhg5rg0=";

/// Removes the interface when dropped, so a failed test leaves no `wireguard-go` behind (it exits when
/// its TUN device goes). Runs on the test thread, inside the namespace.
struct RemoveLink(String);

impl Drop for RemoveLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Whether the tests can run: they need root (CAP_NET_ADMIN in a new network namespace); says so when not.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: the in-process daemon tests need root (CAP_NET_ADMIN in a new network namespace)");
    }
    root
}

/// An interface name unique on the machine: `sd`, the test's two-letter `tag`, the process id.
fn unique_ifname(tag: &str) -> String {
    format!("sd{tag}{}", std::process::id() % 1_000_000)
}

/// Runs `test` with a unique interface name (see [`unique_ifname`]) on a new thread inside a new, private
/// network namespace, on a multi-thread runtime (the daemon calls `block_in_place`). Returns false
/// (skipped) without root.
fn in_netns<F, Fut>(tag: &str, test: F) -> bool
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !is_root() {
        return false;
    }
    let ifname = unique_ifname(tag);
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
        let _cleanup = RemoveLink(ifname.clone());
        ip(&["link", "set", "lo", "up"]);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        runtime.block_on(test(ifname));
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
    true
}

/// Runs a command to completion; its stdout, or None when it fails.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS`; panics when it fails.
fn ip(args: &[&str]) -> String {
    output("ip", args).unwrap_or_else(|| panic!("ip {} failed", args.join(" ")))
}

/// Polls `probe` until it answers `Some`, or panics with `what` at the deadline.
async fn wait_for<T, Fut>(what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(POLL).await;
    }
}

/// The configuration text: this node at fd00:5d::1 on `ifname`, with the members given as
/// (name, key, last address group).
fn config(dir: &Path, ifname: &str, members: &[(&str, &str, u16)]) -> String {
    let mut text = base_config(
        dir,
        ifname,
        51899,
        "address = \"fd00:5d::1\"\noverlay_prefix = \"fd00:5d::/64\"\n",
        &format!("{}", dir.display()),
    );
    for (name, key, n) in members {
        text.push_str(&member(name, key, *n));
    }
    text
}

/// The `[interface]` (listening on `listen_port`, with the lines `addressing` after `mtu`), `[backend]`
/// and `[daemon]` (state in `state_dir`) sections every test's daemon shares.
fn base_config(dir: &Path, ifname: &str, listen_port: u16, addressing: &str, state_dir: &str) -> String {
    let dir = dir.display();
    format!(
        r#"[interface]
name = "{ifname}"
private_key_file = "{dir}/private.key"
listen_port = {listen_port}
mtu = 1420
{addressing}persistent_keepalive = 25

[backend]
kind = "userspace"
userspace_path = "/usr/bin/wireguard-go"

[daemon]
state_dir = "{state_dir}"
metrics_listen = "127.0.0.1:0"
resync_interval = "1s"
teardown_on_exit = true
control_socket = "{dir}/sdwand.sock"
"#
    )
}

/// A `[[members]]` entry: `name` with `key` at fd00:5d::`n`, its endpoint 192.0.2.`n`:51820.
fn member(name: &str, key: &str, n: impl std::fmt::Display) -> String {
    format!(
        "\n[[members]]\nname = \"{name}\"\npublic_key = \"{key}\"\nendpoint = \"192.0.2.{n}:51820\"\naddress = \"fd00:5d::{n}\"\n"
    )
}

/// The daemon's status answer once it reports ready.
async fn ready_status(socket: &Path) -> Box<DaemonStatus> {
    wait_for("the daemon to report ready", || async {
        match control::call(socket, &Request::Status).await {
            Ok(Response::Status(status)) if status.ready => Some(status),
            _ => None,
        }
    })
    .await
}

#[test]
fn the_daemon_starts_reloads_answers_and_stops_in_process() {
    // Before any thread of this test exists: keep wireguard-control from spawning an implementation.
    std::env::set_var(sdwand::wg::IMPLICIT_SPAWN_VAR, sdwand::wg::IMPLICIT_SPAWN_BLOCKED);
    in_netns("in", |ifname| async move {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path: PathBuf = dir.path().join("sdwand.toml");
        let socket = dir.path().join("sdwand.sock");
        std::fs::write(&path, config(dir.path(), &ifname, &[("p2", P2_KEY, 2)])).expect("writing the config");
        let (triggers, rx) = tokio::sync::mpsc::channel(4);
        let mut daemon = tokio::spawn(sdwand::daemon::run(path.clone(), rx));

        // It starts: the control socket answers, the interface and its address exist.
        let status = ready_status(&socket).await;
        assert_eq!(status.interface, ifname);
        assert_eq!(status.address, "fd00:5d::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(status.backend, "userspace");
        assert_eq!(status.peers.len(), 1, "{status:?}");
        let addresses = ip(&["-6", "addr", "show", "dev", &ifname]);
        assert!(addresses.contains("fd00:5d::1/128"), "{addresses}");

        // A reload with a member added puts its peer on the device.
        let two = [("p2", P2_KEY, 2), ("p3", P3_KEY, 3)];
        std::fs::write(&path, config(dir.path(), &ifname, &two)).expect("rewriting the config");
        triggers.send(Trigger::Reload).await.expect("the daemon takes triggers");
        wait_for("the reloaded peer on the device", || {
            let peers = output("wg", &["show", &ifname, "peers"]).unwrap_or_default();
            async move { (peers.contains(P3_KEY) && peers.contains(P2_KEY)).then_some(()) }
        })
        .await;
        let status = ready_status(&socket).await;
        assert_eq!(status.peers.len(), 2, "{status:?}");

        // A stop request ends it and the interface goes (teardown_on_exit = true).
        triggers
            .send(Trigger::Stop("test"))
            .await
            .expect("the daemon takes triggers");
        let ended = timeout(DEADLINE, &mut daemon).await;
        let result = ended
            .expect("the daemon stops within the deadline")
            .expect("the daemon task did not panic");
        result.expect("the daemon exits cleanly");
        wait_for("the interface to be removed", || {
            let gone = output("ip", &["link", "show", &ifname]).is_none();
            async move { gone.then_some(()) }
        })
        .await;
    });
}

/// The registry server in the test process (the `sdwan-registry` crate, a dev-dependency): every use of
/// the registry's code is here.
mod registry {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use sdwan_registry::api;
    use sdwan_registry::service;
    use sdwan_registry::store::sqlite::{SqliteOptions, SqliteStore};
    use sdwan_registry::store::Store;
    use serde_json::{json, Value};

    /// A registry served over plain HTTP on `[::1]` of the calling thread's namespace until dropped, with
    /// one account, one network and an enrollment token for it.
    pub struct Registry {
        addr: SocketAddr,
        admin: String,
        /// The network's enrollment token.
        pub enrollment: String,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    /// A member enrolled through the API.
    pub struct Enrolled {
        /// Its peer id.
        pub id: String,
        /// The overlay address the registry assigned.
        pub address: String,
    }

    impl Registry {
        /// Starts it with the network `overlay` (VIP pool `pool`), its state in a temporary directory.
        pub async fn start(overlay: &str, pool: &str) -> Registry {
            // reqwest is built without a crypto provider; sdwand installs ring (see `sdwand::client::http`).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store: Arc<dyn Store> =
                Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("the registry store"));
            let account = store
                .write(|tx| service::create_account(tx, "acme", 1))
                .await
                .expect("an account");
            let listener = tokio::net::TcpListener::bind("[::1]:0").await.expect("binding [::1]:0");
            let addr = listener.local_addr().expect("the listening address");
            let router = api::router(store);
            let task = tokio::spawn(async move {
                axum::serve(listener, router).await.expect("serving the registry");
            });
            let mut registry = Registry {
                addr,
                admin: account.admin_token,
                enrollment: String::new(),
                task,
                _dir: dir,
            };
            let admin = registry.admin.clone();
            let network = registry
                .call(
                    reqwest::Method::POST,
                    "/v1/networks",
                    &admin,
                    Some(json!({"name": "lab", "overlay_prefix": overlay, "vip_pool": pool})),
                )
                .await;
            let id = network["id"].as_str().expect("the network id");
            let token = registry
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/networks/{id}/enrollment-tokens"),
                    &admin,
                    Some(json!({})),
                )
                .await;
            registry.enrollment = token["token"].as_str().expect("the enrollment token").to_owned();
            registry
        }

        /// Its base URL.
        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Enrolls `name` with `public_key`, nothing else.
        pub async fn enroll(&self, name: &str, public_key: &str) -> Enrolled {
            let answer = self
                .call(
                    reqwest::Method::POST,
                    "/v1/peers/enroll",
                    &self.enrollment,
                    Some(json!({"name": name, "public_key": public_key})),
                )
                .await;
            Enrolled {
                id: answer["peer_id"].as_str().expect("peer_id").to_owned(),
                address: answer["address"].as_str().expect("address").to_owned(),
            }
        }

        /// Removes the peer `id` (an admin's `DELETE /v1/peers/{id}`).
        pub async fn remove(&self, id: &str) {
            self.call(reqwest::Method::DELETE, &format!("/v1/peers/{id}"), &self.admin, None)
                .await;
        }

        /// One API call that must succeed; its JSON answer (`Null` without a body).
        async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Value {
            let mut request = reqwest::Client::new()
                .request(method, format!("{}{path}", self.url()))
                .bearer_auth(token);
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let response = request.send().await.expect("a registry answer");
            let status = response.status();
            let bytes = response.bytes().await.expect("the answer's body");
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert!(status.is_success(), "{path}: {status} {value}");
            value
        }
    }

    impl Drop for Registry {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}

/// The configuration text of a daemon that enrolls as `n1` with the registry at `url`.
fn registry_config(dir: &Path, ifname: &str, url: &str) -> String {
    let mut text = base_config(dir, ifname, 51899, "", &format!("{}/state", dir.display()));
    text.push_str(&format!(
        r#"
[registry]
url = "{url}"
insecure = true
enrollment_token_file = "{}/token"
name = "n1"
"#,
        dir.display()
    ));
    text
}

/// Writes `text` to `path` with mode 0600 (token and key files).
fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[test]
fn a_registry_member_comes_and_goes_on_the_interface_in_process() {
    std::env::set_var(sdwand::wg::IMPLICIT_SPAWN_VAR, sdwand::wg::IMPLICIT_SPAWN_BLOCKED);
    in_netns("rg", |ifname| async move {
        let registry = registry::Registry::start("fd00:5e::/64", "fd00:5e::ffff:0/112").await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("sdwand.toml");
        let socket = dir.path().join("sdwand.sock");
        write_private(&dir.path().join("token"), &format!("{}\n", registry.enrollment));
        std::fs::write(&path, registry_config(dir.path(), &ifname, &registry.url())).expect("writing the config");
        let (triggers, rx) = tokio::sync::mpsc::channel(4);
        let mut daemon = tokio::spawn(sdwand::daemon::run(path, rx));

        // It enrolls and comes up with the address the registry assigned, alone in the view.
        let status = ready_status(&socket).await;
        assert_eq!(status.interface, ifname);
        assert!(
            "fd00:5e::/64"
                .parse::<ipnet::Ipv6Net>()
                .unwrap()
                .contains(&status.address),
            "{status:?}"
        );
        assert!(status.peers.is_empty(), "{status:?}");

        // A member enrolled through the API becomes a peer with its /128, routed to the interface.
        let key = wireguard_control::Key::generate_private().get_public().to_base64();
        let member = registry.enroll("n2", &key).await;
        let allowed = format!("{}/128", member.address);
        wait_for("the enrolled member's peer and /128 on the device", || {
            let dump = output("wg", &["show", &ifname, "allowed-ips"]).unwrap_or_default();
            let found = dump
                .lines()
                .any(|line| line.starts_with(&key) && line.split_whitespace().any(|ip| ip == allowed));
            async move { found.then_some(()) }
        })
        .await;
        let route = ip(&["-6", "route", "get", &member.address]);
        assert!(route.contains(&format!("dev {ifname}")), "{route}");
        let status = ready_status(&socket).await;
        assert_eq!(status.peers.len(), 1, "{status:?}");
        assert_eq!(status.peers[0].name, "n2", "{status:?}");

        // Removed through the API, it leaves the device.
        registry.remove(&member.id).await;
        wait_for("the removed member's peer to leave the device", || {
            let gone = !output("wg", &["show", &ifname, "peers"])
                .unwrap_or_default()
                .contains(&key);
            async move { gone.then_some(()) }
        })
        .await;

        triggers
            .send(Trigger::Stop("test"))
            .await
            .expect("the daemon takes triggers");
        let ended = timeout(DEADLINE, &mut daemon).await;
        let result = ended
            .expect("the daemon stops within the deadline")
            .expect("the daemon task did not panic");
        result.expect("the daemon exits cleanly");
    });
}

#[test]
fn a_refused_enrollment_shows_in_status_and_a_fixed_token_file_ends_it_in_process() {
    std::env::set_var(sdwand::wg::IMPLICIT_SPAWN_VAR, sdwand::wg::IMPLICIT_SPAWN_BLOCKED);
    in_netns("bt", |ifname| async move {
        let registry = registry::Registry::start("fd00:5f::/64", "fd00:5f::ffff:0/112").await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("sdwand.toml");
        let socket = dir.path().join("sdwand.sock");
        let token = dir.path().join("token");
        write_private(&token, "sdwe_not-a-token\n");
        std::fs::write(&path, registry_config(dir.path(), &ifname, &registry.url())).expect("writing the config");
        let (triggers, rx) = tokio::sync::mpsc::channel(4);
        let mut daemon = tokio::spawn(sdwand::daemon::run(path, rx));

        // The control socket answers while the registry refuses the token, and says what to fix.
        let problem = wait_for("the refusal in the status", || async {
            match control::call(&socket, &Request::Status).await {
                Ok(Response::Status(s)) => s.registry.and_then(|r| r.problem).filter(|p| p.contains("401")),
                _ => None,
            }
        })
        .await;
        assert!(problem.contains(&format!("token in {}", token.display())), "{problem}");
        assert!(problem.contains("fix: write a valid enrollment token"), "{problem}");
        match control::call(&socket, &Request::VipList).await {
            Ok(Response::Error { code, .. }) => assert_eq!(code, control::code::STARTING),
            other => panic!("a VIP list while enrolling: {other:?}"),
        }

        // Writing the right token into the file is enough: no restart.
        std::fs::write(&token, format!("{}\n", registry.enrollment)).expect("rewriting the token");
        let status = ready_status(&socket).await;
        let reg = status.registry.as_ref().expect("the registry's state");
        assert!(reg.enrolled && reg.up && reg.problem.is_none(), "{status:?}");

        triggers
            .send(Trigger::Stop("test"))
            .await
            .expect("the daemon takes triggers");
        let ended = timeout(DEADLINE, &mut daemon).await;
        let result = ended
            .expect("the daemon stops within the deadline")
            .expect("the daemon task did not panic");
        result.expect("the daemon exits cleanly");
    });
}

/// A job for a [`Netns`] thread.
type Job = Box<dyn FnOnce() + Send>;

/// A thread in a private network namespace of its own that runs the jobs it is given, in order. Other
/// threads reach the namespace through `nsenter` ([`Netns::run`]). Dropping it lets the thread end (after
/// its jobs) and joins it; the namespace goes with its last process.
struct Netns {
    tid: libc::pid_t,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    /// A new namespace with its loopback up.
    fn new() -> Netns {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (jobs, job_rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare only changes this thread's network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
            ip(&["link", "set", "lo", "up"]);
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            for job in job_rx {
                job();
            }
        });
        let tid = tid_rx.recv().expect("the namespace thread started");
        Netns {
            tid,
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// Runs `program ARGS` inside the namespace; its stdout, or None when it fails.
    fn run(&self, program: &str, args: &[&str]) -> Option<String> {
        let target = self.tid.to_string();
        let mut all = vec!["-t", &target, "-n", program];
        all.extend_from_slice(args);
        output("nsenter", &all)
    }

    /// Runs `ip ARGS` inside the namespace; panics when it fails.
    fn ip(&self, args: &[&str]) -> String {
        self.run("ip", args)
            .unwrap_or_else(|| panic!("ip {} failed in namespace {}", args.join(" "), self.tid))
    }

    /// Hands `job` to the namespace's thread.
    fn spawn(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            jobs.send(job).expect("the namespace thread takes jobs");
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One node of the VIP test: a daemon running on its namespace's thread.
struct Node {
    name: &'static str,
    ifname: String,
    socket: PathBuf,
    triggers: Option<tokio::sync::mpsc::Sender<Trigger>>,
    exited: Option<std::sync::mpsc::Receiver<Result<(), String>>>,
    /// Declared after the daemon's handles: dropped (joined) once the daemon was told to stop.
    netns: Netns,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts the daemon with the configuration `text` (written to `dir`) in `netns`. The interface is
    /// removed when the daemon's job ends, however it ends.
    fn start(name: &'static str, netns: Netns, dir: tempfile::TempDir, ifname: String, text: &str) -> Node {
        let path = dir.path().join("sdwand.toml");
        std::fs::write(&path, text).expect("writing the config");
        let (triggers, rx) = tokio::sync::mpsc::channel(4);
        let (exit_tx, exited) = std::sync::mpsc::channel();
        let link = ifname.clone();
        netns.spawn(Box::new(move || {
            let _cleanup = RemoveLink(link);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("building a tokio runtime");
            let result = runtime.block_on(sdwand::daemon::run(path, rx));
            let _ = exit_tx.send(result.map_err(|e| e.to_string()));
        }));
        Node {
            name,
            ifname,
            socket: dir.path().join("sdwand.sock"),
            triggers: Some(triggers),
            exited: Some(exited),
            netns,
            _dir: dir,
        }
    }

    /// The daemon's view of its one VIP, once it reports ready.
    async fn vip(&self) -> sdwand::control::NodeVip {
        let status = ready_status(&self.socket).await;
        status.vips.into_iter().next().expect("the daemon reports its VIP")
    }

    /// Whether `address`/128 is on the node's interface.
    fn has_address(&self, address: &str) -> bool {
        self.netns
            .run("ip", &["-6", "addr", "show", "dev", &self.ifname])
            .is_some_and(|out| out.contains(&format!("{address}/128")))
    }

    /// Asks for a graceful stop and waits until the daemon has exited.
    async fn stop(&mut self) {
        let triggers = self.triggers.take().expect("the node runs");
        triggers
            .send(Trigger::Stop("test"))
            .await
            .expect("the daemon takes triggers");
        let exited = self.exited.take().expect("the node runs");
        let result = tokio::task::spawn_blocking(move || exited.recv_timeout(DEADLINE))
            .await
            .expect("the wait did not panic");
        let result = result.unwrap_or_else(|e| panic!("{} did not exit within the deadline: {e}", self.name));
        result.unwrap_or_else(|e| panic!("{} exited with an error: {e}", self.name));
    }
}

impl Drop for Node {
    /// Stops the daemon at once if it still runs (two stop requests skip the handover).
    fn drop(&mut self) {
        if let Some(triggers) = self.triggers.take() {
            let _ = triggers.try_send(Trigger::Stop("test cleanup"));
            let _ = triggers.try_send(Trigger::Stop("test cleanup"));
        }
        if let Some(exited) = self.exited.take() {
            let _ = exited.recv_timeout(DEADLINE);
        }
    }
}

/// The VIP of the failover test.
const VIP: &str = "fd00:5d:f::1";

/// The configuration text of node `index` (1 or 2) of the failover test: both nodes are members and,
/// in that order, the candidates of [`VIP`].
fn vip_config(dir: &Path, ifname: &str, index: u8, keys: &[String; 2]) -> String {
    let addressing = format!("address = \"fd00:5d::{index}\"\noverlay_prefix = \"fd00:5d::/64\"\n");
    let mut text = base_config(dir, ifname, 51820, &addressing, &format!("{}", dir.display()));
    text.push_str(&format!(
        r#"
[failover]
interval = "50ms"
dead_after = 6

[[vip]]
address = "{VIP}"
candidates = ["a", "b"]
"#
    ));
    for (n, (name, key)) in ["a", "b"].iter().zip(keys).enumerate() {
        text.push_str(&member(name, key, n + 1));
    }
    text
}

#[test]
fn a_graceful_stop_hands_the_vip_over_in_process() {
    std::env::set_var(sdwand::wg::IMPLICIT_SPAWN_VAR, sdwand::wg::IMPLICIT_SPAWN_BLOCKED);
    if !is_root() {
        return;
    }
    // The underlay: 192.0.2.1/24 and 192.0.2.2/24 on a veth pair between the two namespaces.
    let (ns_a, ns_b) = (Netns::new(), Netns::new());
    let tid_b = ns_b.tid.to_string();
    ns_a.ip(&[
        "link", "add", "ula", "type", "veth", "peer", "name", "ulb", "netns", &tid_b,
    ]);
    for (ns, link, address) in [(&ns_a, "ula", "192.0.2.1/24"), (&ns_b, "ulb", "192.0.2.2/24")] {
        ns.ip(&["addr", "add", address, "dev", link]);
        ns.ip(&["link", "set", link, "up"]);
    }
    let dirs = [(); 2].map(|()| tempfile::tempdir().expect("a temporary directory"));
    let keys = [0, 1].map(|i| {
        let key = sdwand::keyfile::load(&dirs[i].path().join("private.key"), true).expect("a private key");
        key.get_public().to_base64()
    });
    let [dir_a, dir_b] = dirs;
    let (if_a, if_b) = (unique_ifname("va"), unique_ifname("vb"));
    let text_a = vip_config(dir_a.path(), &if_a, 1, &keys);
    let text_b = vip_config(dir_b.path(), &if_b, 2, &keys);
    let mut a = Node::start("a", ns_a, dir_a, if_a, &text_a);
    let b = Node::start("b", ns_b, dir_b, if_b, &text_b);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    runtime.block_on(async {
        // The first candidate claims the VIP: the address is on its interface; the other routes it there.
        let held = wait_for("a to hold the VIP, its claim acknowledged by b", || async {
            let vip = a.vip().await;
            let acked = vip.confirmed.as_ref().is_some_and(|c| c.acked == 1 && c.peers == 1);
            (vip.role == "holding" && acked && a.has_address(VIP)).then_some(vip)
        })
        .await;
        assert_eq!(held.epoch.as_ref().map(|e| e.rank), Some(0), "{held:?}");
        wait_for("b to route the VIP to a", || async {
            let vip = b.vip().await;
            let routed = vip.routed_to.as_ref().and_then(|to| to.name.clone());
            (vip.role == "standby" && routed.as_deref() == Some("a")).then_some(())
        })
        .await;
        assert!(!b.has_address(VIP), "b carries the VIP address while a holds it");
        let allowed = b
            .netns
            .run("wg", &["show", &b.ifname, "allowed-ips"])
            .unwrap_or_default();
        let to_a = allowed
            .lines()
            .find(|line| line.starts_with(&keys[0]))
            .unwrap_or_default();
        assert!(
            to_a.contains(&format!("{VIP}/128")),
            "b's device does not route the VIP to a: {allowed}"
        );

        // A graceful stop of the holder hands the VIP over (docs/protocol.md, "Roles": a stopping holder
        // hands over to its successor and stops when its drain ends, i.e. once the successor's claim is
        // confirmed): when a's daemon has exited, b already holds the VIP.
        a.stop().await;
        let vip = b.vip().await;
        assert_eq!(vip.role, "holding", "b after a's graceful stop: {vip:?}");
        let holder = vip.holder.as_ref().and_then(|h| h.name.as_deref());
        assert_eq!(holder, Some("b"), "{vip:?}");
        let epoch = vip.epoch.as_ref().expect("b's claim has an epoch");
        let before = held.epoch.as_ref().expect("a's claim has an epoch");
        assert!(epoch.rank == 1 && epoch.term > before.term, "{vip:?} after {held:?}");
        // a drained until b's claim was acknowledged by every peer, i.e. by a itself.
        let acked = vip.confirmed.as_ref().is_some_and(|c| c.acked == 1 && c.peers == 1);
        assert!(acked, "b's claim unconfirmed when a exited: {vip:?}");
        wait_for("the VIP address on b's interface", || async {
            b.has_address(VIP).then_some(())
        })
        .await;
        // a's interface went with its daemon (teardown_on_exit = true), and the VIP address with it.
        wait_for("a's interface to be removed", || async {
            a.netns.run("ip", &["link", "show", &a.ifname]).is_none().then_some(())
        })
        .await;
        assert!(!a.has_address(VIP));
    });
}
