//! One `wireguard-go` serving a uniquely named interface inside a network namespace made for the bench.
//!
//! The TUN device lives in that namespace, never in the host's; the UAPI socket
//! (`/var/run/wireguard/IFACE.sock`) is shared by every namespace, so sdwand and `wg` reach it from the
//! host namespace. [`WireguardGo`] is a guard: dropping it (also on error or panic) stops the process it
//! started and deletes the namespace. The process runs in its own process group (a Ctrl-C reaches the bench,
//! which cleans up between trials) and gets SIGKILL if the bench dies without cleaning up.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sdwand::wg::uapi;

use crate::error::{BenchError, Result};

/// How long a fresh `wireguard-go` may take to serve its socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long it gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Quiet time after a start, so the Go runtime's start-up work is not inside the next timed trial.
const SETTLE: Duration = Duration::from_millis(50);

/// A running `wireguard-go -f IFACE` in the namespace `netns`.
#[derive(Debug)]
pub struct WireguardGo {
    netns: String,
    iface: String,
    /// Where its stderr goes (quoted in start-up errors).
    log: PathBuf,
    /// The process this guard started; `None` between a stop and the next start.
    child: Option<Child>,
}

impl WireguardGo {
    /// Creates `netns` and starts `wireguard-go` for `iface` in it, logging to `log`. Fails if either
    /// name is already in use (another bench, or a leftover).
    pub fn start(netns: &str, iface: &str, log: &Path) -> Result<Self> {
        let in_use =
            uapi::server_pid(iface).map_err(|e| BenchError::io(format!("probing the socket of {iface}"), e))?;
        if let Some(pid) = in_use {
            return Err(BenchError::WireguardGo {
                iface: iface.to_owned(),
                message: format!("its UAPI socket is already served by PID {pid}; is another bench running?"),
            });
        }
        run(Command::new("ip").args(["netns", "add", netns]))?;
        // From here on, dropping the guard deletes the namespace.
        let mut guard = WireguardGo {
            netns: netns.to_owned(),
            iface: iface.to_owned(),
            log: log.to_owned(),
            child: None,
        };
        guard.spawn()?;
        Ok(guard)
    }

    /// Stops the process and starts a fresh one: an empty device (no key, no port, no peers).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU time the process has used so far, summed over its threads (scheduler statistics, ns
    /// resolution). Zero if it cannot be read.
    pub fn cpu_time(&self) -> Duration {
        let Some(pid) = self.pid() else {
            return Duration::ZERO;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Duration::ZERO;
        };
        let ns: u64 = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
            .sum();
        Duration::from_nanos(ns)
    }

    fn spawn(&mut self) -> Result<()> {
        let iface = self.iface.clone();
        let err = |message: String| BenchError::WireguardGo { iface, message };
        let socket = uapi::socket_path(&self.iface);
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BenchError::io(format!("removing stale socket {}", socket.display()), e)),
        }
        let log = File::create(&self.log).map_err(|e| BenchError::io(format!("creating {}", self.log.display()), e))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "wireguard-go", "-f", &self.iface])
            .env("LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent. PDEATHSIG survives the
        // exec of `ip` and its exec of wireguard-go (neither is set-uid), so the process dies with the bench.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::io("starting `ip netns exec … wireguard-go` (is iproute2 installed?)", e))?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("just set");
            if let Some(status) = child
                .try_wait()
                .map_err(|e| BenchError::io("waiting for wireguard-go", e))?
            {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(err(format!(
                    "exited at start with {status} (is wireguard-go installed, /dev/net/tun present?): {}",
                    log.trim()
                )));
            }
            if uapi::server_pid(&self.iface).ok().flatten() == Some(pid) {
                break;
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(err(format!(
                    "did not serve {} within {START_TIMEOUT:?}",
                    socket.display()
                )));
            }
            sleep(Duration::from_millis(2));
        }
        sleep(SETTLE);
        Ok(())
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; reaps the process. Only ever signals the PID this
    /// guard started and has not reaped yet.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) on our own unreaped child: its PID cannot have been reused.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        self.stop();
        if uapi::server_pid(&self.iface).ok().flatten().is_none() {
            let _ = std::fs::remove_file(uapi::socket_path(&self.iface));
        }
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.netns])) {
            eprintln!("sdwand-bench: cleaning up: {e}");
        }
    }
}

/// Runs a helper command to completion, its output going to the bench's stderr.
pub fn run(cmd: &mut Command) -> Result<()> {
    let command = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| BenchError::io(format!("running `{command}`"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Command { command, status })
    }
}

/// A command line as text (for errors).
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
