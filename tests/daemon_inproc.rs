//! In-process tests of the whole daemon: `sdwand::daemon::run` inside the test process, with a static
//! configuration and Debian's `wireguard-go` as the userspace backend.
//!
//! The test runs on its own thread, moved into a fresh network namespace with `unshare(CLONE_NEWNET)`
//! (threads and processes that thread starts inherit the namespace, so the runtime's workers and
//! `wireguard-go` live there too). The UAPI socket directory /var/run/wireguard is shared by every
//! namespace, so the interface name is unique per test process. The test needs root and is skipped,
//! with a message, without it. Every wait polls with a deadline; the interface is removed on failure.

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

/// Runs `test` with a unique interface name on a new thread inside a new, private network namespace, on
/// a multi-thread runtime (the daemon calls `block_in_place`). Returns false (skipped) without root.
fn in_netns<F, Fut>(test: F) -> bool
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the in-process daemon tests need root (CAP_NET_ADMIN in a new network namespace)");
        return false;
    }
    let ifname = format!("sdin{}", std::process::id() % 1_000_000);
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
    let dir = dir.display();
    let mut text = format!(
        r#"[interface]
name = "{ifname}"
private_key_file = "{dir}/private.key"
listen_port = 51899
mtu = 1420
address = "fd00:5d::1"
overlay_prefix = "fd00:5d::/64"
persistent_keepalive = 25

[backend]
kind = "userspace"
userspace_path = "/usr/bin/wireguard-go"

[daemon]
state_dir = "{dir}"
metrics_listen = "127.0.0.1:0"
resync_interval = "1s"
teardown_on_exit = true
control_socket = "{dir}/sdwand.sock"
"#
    );
    for (name, key, n) in members {
        text.push_str(&format!(
            "\n[[members]]\nname = \"{name}\"\npublic_key = \"{key}\"\nendpoint = \"192.0.2.{n}:51820\"\naddress = \"fd00:5d::{n}\"\n"
        ));
    }
    text
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
    in_netns(|ifname| async move {
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
